# -*- test-case-name: tests.test_redistarget,tests.test_cluster -*-
"""
Connections to Redis, kept by one mechanism: Twisted's L{ClientService}
reconnects with a capped exponential backoff, and its C{prepareConnection}
sends C{AUTH} and C{SELECT} (or C{SUBSCRIBE}) on every new connection
before anything else goes on it.

L{RedisLink} carries commands.  A command sent while Redis is unreachable
waits for the next connection attempt only (C{whenConnected(failAfterFailures=1)}):
so while Redis is down commands fail fast with the attempt's error, and
the first command after Redis is back succeeds.  Commands are bounded by the
link's C{timeout}, connecting included, without a timer per command: a
check every quarter of the timeout fails every command older than it and
drops the connection, whose reply stream is out of step from then on.

L{RedisSubscriber} is the pub/sub side: it subscribes to its channels on
every (re)connection and hands each message to a callable.

Logs: one warning when Redis becomes unusable, one line when it is usable
again; no traceback, and no line per retry.

C{txredisapi} (its protocol only: the wire format, with C{hiredis} as the
reply parser where installed) is imported late, because importing it
installs the global reactor.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .address import RedisAddress

__all__ = ["RedisClosed", "RedisLink", "RedisSubscriber"]

#: the endpoint's connect timeout when the link sets no limit
_DEFAULT_CONNECT_TIMEOUT = 30.0
#: the longest wait between two connection attempts while Redis is down
MAX_RETRY_DELAY = 2.0


class RedisClosed(ConnectionClosed):
    """
    The link was closed: nothing more is sent.
    """


class _QuietClientService(ClientService):
    """
    A L{ClientService} that does not log every retry: the link logs the
    outage once.
    """

    _log = Logger(observer=lambda event: None)


class _Factory(Factory):
    """
    Builds protocols with C{build}, quietly: connection attempts are not logged.
    """

    noisy = False

    def __init__(self, build: Callable[[], Protocol]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress) -> Protocol:
        protocol = self._build()
        protocol.factory = self
        return protocol


class _Kept:
    """
    What L{RedisLink} and L{RedisSubscriber} share: the L{ClientService},
    the log-in on each new connection, the outage log, and the close.

    The log-in (C{AUTH}, C{SELECT}, C{SUBSCRIBE}) runs once the service
    hands over a connection rather than in its C{prepareConnection}: a
    connection rejected there and then lost trips the service's state
    machine (no transition for a disconnect while it waits to retry).  A
    failed log-in drops the connection, so the service connects again, later
    each time (the retry policy counts failed log-ins too).

    @param address: where Redis is.
    @param reactor: provides C{IReactorTCP}, C{IReactorUNIX} and
        C{IReactorTime}: connections and timers run on it.
    @param timeout: seconds that connecting (with its log-in) and each
        command may take; non-positive: no limit.
    @param name: what the logs call it.
    """

    log = Logger()

    def __init__(self, address: RedisAddress, reactor: Any, timeout: float, name: str,
                 start: bool = True) -> None:
        self.address = address
        self._reactor = reactor
        self._name = name
        self._timeout: float | None = timeout if timeout > 0 else None
        self._closed = False
        self._down = False
        #: the connection that is ready (logged in), or None
        self._ready: Any = None
        #: the connection logging in, or None
        self._preparing: Any = None
        self._rewatch: Any = None
        #: the connection that the command timeout dropped during its log-in
        self._abortedLogin: Any = None
        self._failedLogins = 0
        backoff = backoffPolicy(0.1, MAX_RETRY_DELAY)
        endpoint = address.endpoint(reactor, self._timeout or _DEFAULT_CONNECT_TIMEOUT)
        self._service = _QuietClientService(
            endpoint, _Factory(self._buildProtocol),
            retryPolicy=lambda attempt: backoff(attempt + self._failedLogins), clock=reactor,
        )
        if start:
            self.start()

    def start(self) -> None:
        """
        Start connecting (at once unless the constructor was told otherwise).
        """
        if not self._service.running:
            self._service.startService()
            self._watch()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} at {self.address}>"

    @property
    def connected(self) -> bool:
        """
        Whether a logged-in connection is there now.
        """
        return self._ready is not None

    def _buildProtocol(self) -> Protocol:
        raise NotImplementedError()

    def _prepare(self, protocol: Any) -> Deferred[Any]:
        raise NotImplementedError()

    def _isReady(self, protocol: Any) -> None:
        """
        C{protocol} is logged in and usable.
        """

    def _unusable(self, failure: Failure) -> None:
        """
        A connection attempt or a log-in failed.
        """

    def _lost(self) -> None:
        """
        The ready connection was lost.
        """

    def _login(self, protocol: Any, database: bool = True) -> Deferred[Any]:
        d: Deferred[Any] = succeed(None)
        password = self.address.password
        if password:
            d.addCallback(lambda _: protocol.execute_command(b"AUTH", password.encode("utf-8")))
        if database and self.address.database:
            d.addCallback(lambda _: protocol.execute_command(b"SELECT", b"%d" % self.address.database))
        return d

    def _watch(self) -> None:
        """
        Wait for the outcome of the next connection attempt.
        """
        self._rewatch = None
        if self._closed:
            return
        self._service.whenConnected(failAfterFailures=1).addCallbacks(self._connected, self._failed)

    def _watchSoon(self) -> None:
        # not from inside the service's own callbacks: it refuses reentrant calls
        if not self._closed and self._rewatch is None:
            self._rewatch = self._reactor.callLater(0, self._watch)

    def _connected(self, protocol: Any) -> None:
        """
        The service has a new connection: log in on it.
        """
        self._preparing = protocol
        try:
            # small commands and replies: Nagle's algorithm would hold them
            # back for a delayed ACK (tens of milliseconds each)
            protocol.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):  # a UNIX socket
            pass

        def lost(_: Any) -> None:
            if self._preparing is protocol:
                self._preparing = None
            if self._ready is protocol:
                self._ready = None
                self._lost()
            self._watchSoon()

        protocol.whenDisconnected().addBoth(lost)
        d = self._prepare(protocol)
        if self._timeout is not None:
            d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=self._timedOut)
        d.addCallbacks(lambda _: self._loggedIn(protocol), lambda f: self._rejected(protocol, f))

    def _loggedIn(self, protocol: Any) -> None:
        if self._preparing is not protocol or self._closed:
            return  # lost (or closed) meanwhile
        self._preparing = None
        self._ready = protocol
        self._failedLogins = 0
        if self._down:
            self._down = False
            self.log.info("{name} {where} is usable again", name=self._name, where=str(self.address))
        self._isReady(protocol)

    def _timedOut(self, result: Any, timeout: float) -> Any:
        if isinstance(result, Failure) and result.check(CancelledError):
            raise self._overdue()
        return result

    def _overdue(self) -> TimeoutError:
        return TimeoutError(f"no answer from {self._name} {self.address} within {self._timeout:g} seconds")

    def _rejected(self, protocol: Any, failure: Failure) -> None:
        if self._abortedLogin is protocol:
            # dropped by the command timeout: that is the cause, not the loss
            self._abortedLogin = None
            failure = Failure(self._overdue())
        if self._preparing is protocol:
            self._preparing = None
        self._failedLogins += 1
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        self._failed(failure, rewatch=False)

    def _failed(self, failure: Failure, rewatch: bool = True) -> None:
        if self._closed or failure.check(CancelledError):
            return
        if not self._down:
            self._down = True
            self.log.warn(
                "{name} {where} is unusable ({why}); what needs it fails until it is back",
                name=self._name, where=str(self.address),
                why=failure.getErrorMessage() or failure.type.__name__,
            )
        self._unusable(failure)
        if rewatch:
            self._watchSoon()

    def close(self) -> Deferred[None]:
        """
        Stop: cancel the connection attempt in progress and close the
        connection.

        @return: fires when the connection is closed.
        """
        self._closed = True
        if self._rewatch is not None and self._rewatch.active():
            self._rewatch.cancel()
        # not from inside the service's own callbacks (a command's failure
        # may lead to a close): it refuses reentrant calls
        if not self._service.running:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._reactor.callLater(0, lambda: self._service.stopService().addBoth(lambda _: done.callback(None)))
        return done


class RedisLink(_Kept):
    """
    One Redis connection that commands are sent on (see the module
    docstring), in order: replies come back in the order of the commands.

    @param charset: how replies are decoded (L{None}: bytes as they are).
    """

    def __init__(self, address: RedisAddress, reactor: Any, timeout: float, name: str = "Redis",
                 charset: str | None = None, start: bool = True) -> None:
        self._charset = charset
        #: (when sent, the result) of the commands not answered yet, oldest first
        self._pending: deque[tuple[float, Deferred[Any]]] = deque()
        self._clock: IReactorTime = reactor
        self._checker: LoopingCall | None = None
        #: commands waiting for the next connection attempt
        self._waiting: list[tuple[tuple[bytes, ...], Deferred[Any]]] = []
        super().__init__(address, reactor, timeout, name, start)
        if self._timeout is not None:
            self._checker = LoopingCall(self._checkOverdue)
            self._checker.clock = reactor
            self._checker.start(min(1.0, self._timeout / 4), now=False)

    def _buildProtocol(self) -> Protocol:
        from txredisapi import RedisProtocol

        protocol = RedisProtocol(charset=self._charset, convertNumbers=False)
        protocol.callLater = self._reactor.callLater
        return protocol

    def _prepare(self, protocol: Any) -> Deferred[Any]:
        return self._login(protocol)

    def execute(self, *args: bytes) -> Deferred[Any]:
        """
        Run one command.

        @return: its reply; fails when Redis cannot be reached, is refused
            (wrong password, unknown database), answers an error, or does
            not answer within the timeout; fails with L{RedisClosed} after
            L{close}.
        """
        if self._closed:
            return fail(RedisClosed(f"{self!r} is closed"))
        result: Deferred[Any] = Deferred()
        if self._timeout is not None:
            self._pending.append((self._clock.seconds(), result))
        protocol = self._ready
        if protocol is not None and protocol.connected:
            self._send(protocol, args, result)
        else:
            # the outcome of the next connection attempt decides
            self._waiting.append((args, result))
        return result

    def _send(self, protocol: Any, args: tuple[bytes, ...], result: Deferred[Any]) -> None:
        try:
            reply = protocol.execute_command(*args)
        except Exception:  # txredisapi raises ConnectionError when the connection is gone
            result.errback(Failure())
            return
        reply.addBoth(_fire, result)

    def _isReady(self, protocol: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for args, result in waiting:
            if not result.called:
                self._send(protocol, args, result)

    def _unusable(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for _, result in waiting:
            if not result.called:
                result.errback(failure)

    def _checkOverdue(self) -> None:
        """
        Fail the commands older than the timeout, and drop the connection
        they wait on.
        """
        pending = self._pending
        while pending and pending[0][1].called:
            pending.popleft()
        if not pending or self._clock.seconds() - pending[0][0] < self._timeout:  # type: ignore[operator]
            return
        why = self._overdue()
        overdue = list(pending)
        pending.clear()
        for _, result in overdue:
            if not result.called:
                result.errback(Failure(why))
        self._abortedLogin = self._preparing
        for protocol in (self._ready, self._preparing):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()

    def close(self) -> Deferred[None]:
        if self._checker is not None and self._checker.running:
            self._checker.stop()
        closed = RedisClosed(f"{self!r} is closed")
        d = super().close()
        pending = [result for _, result in self._pending] + [result for _, result in self._waiting]
        self._pending.clear()
        self._waiting = []
        for result in pending:
            if not result.called:
                result.errback(Failure(closed))
        return d


def _fire(value: Any, result: Deferred[Any]) -> None:
    if result.called:  # timed out: the reply (or lost connection) comes too late
        return
    if isinstance(value, Failure):
        result.errback(value)
    else:
        result.callback(value)


class RedisSubscriber(_Kept):
    """
    The pub/sub connection: subscribed to C{channels} on every
    (re)connection, it hands each message to C{received(channel, message)}.

    @param subscribed: called once the subscription is in place, after each
        (re)connection (nothing published meanwhile was heard).
    @param lost: called when the subscribed connection is lost.
    """

    def __init__(self, address: RedisAddress, reactor: Any, timeout: float, channels: list[bytes],
                 received: Callable[[bytes, bytes], None], subscribed: Callable[[], None] = lambda: None,
                 lost: Callable[[], None] = lambda: None, name: str = "Redis pub/sub",
                 start: bool = True) -> None:
        self._channels = channels
        self._received = received
        self._subscribed = subscribed
        self._onLost = lost
        super().__init__(address, reactor, timeout, name, start)

    def _buildProtocol(self) -> Protocol:
        from txredisapi import SubscriberProtocol

        received = self._received

        class Protocol(SubscriberProtocol):
            def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
                received(channel, message)

        protocol = Protocol(charset=None, convertNumbers=False)
        protocol.callLater = self._reactor.callLater
        return protocol

    def _prepare(self, protocol: Any) -> Deferred[Any]:
        d = self._login(protocol, database=False)  # channels are the same in every database
        d.addCallback(lambda _: protocol.subscribe(self._channels))
        return d

    def _isReady(self, protocol: Any) -> None:
        self._subscribed()

    def _lost(self) -> None:
        self._onLost()
