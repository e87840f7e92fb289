"""
Helpers for the end-to-end tests: start the real server on loopback port 0,
and talk to it with Autobahn's client and treq.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Sequence
from urllib.parse import quote

import orjson
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from wsserver.config import Config, parseConfig
from wsserver.tap import WsServer, buildService

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(HERE), "certs")
CERT = os.path.join(CERTS, "server.crt")
KEY = os.path.join(CERTS, "server.key")


def loopbackConfig(raw: dict[str, Any] | None = None, tls: bool = False) -> Config:
    """
    A config from C{raw} (the JSON layout) that listens on free loopback ports.
    """
    raw = json.loads(json.dumps(raw or {}))
    server = raw.setdefault("server", {})
    if tls:
        server["listen"] = f"ssl:0:interface=127.0.0.1:privateKey={KEY}:certKey={CERT}"
    else:
        server["listen"] = "tcp:0:interface=127.0.0.1"
    rest = raw.setdefault("restApi", {})
    rest.setdefault("listen", f"ssl:0:interface=127.0.0.1:privateKey={KEY}:certKey={CERT}" if tls else "tcp:0:interface=127.0.0.1")
    undelivered = raw.setdefault("chat", {}).setdefault("undelivered", {})
    undelivered.setdefault("storage", "memory")
    return parseConfig(raw)


class Running:
    """
    A started server and where to reach it.
    """

    def __init__(self, service: WsServer, wsPort: int, restPort: int | None, tls: bool) -> None:
        self.service = service
        self.wsPort = wsPort
        self.restPort = restPort
        self.tls = tls

    def wsURL(self, query: str = "", path: str = "/chat") -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://127.0.0.1:{self.wsPort}{path}" + (f"?{query}" if query else "")

    def restURL(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.restPort}{path}"


@inlineCallbacks
def startServer(test: TestCase, raw: dict[str, Any] | None = None, tls: bool = False,
                logPublisher: Any = None) -> Any:
    """
    Start the real server for C{raw} config on loopback; stopped at cleanup.

    @param logPublisher: whose observers the server guards against log
        floods while it runs (see L{buildService}).
    """
    service = buildService(loopbackConfig(raw, tls), reactor, logPublisher=logPublisher)
    service.startService()
    test.addCleanup(service.stopService)
    wsPort = yield service.ws.whenListening()
    restPort = None
    if service.rest is not None:
        restPort = (yield service.rest.whenListening()).getHost().port
    return Running(service, wsPort.getHost().port, restPort, tls)


class ChatClient(WebSocketClientProtocol):
    """
    A test client: received messages go to C{messages} (decoded), the close
    code and reason to C{closed}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue[Any] = DeferredQueue()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.opened: Deferred[ChatClient] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(orjson.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"closed before open: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send(self, obj: Any, binary: bool = False) -> None:
        """
        Send C{obj} as JSON.
        """
        self.sendMessage(orjson.dumps(obj), isBinary=binary)


def _trust() -> Any:
    with open(CERT, "rb") as f:
        return optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(f.read()))


def openClient(
    server: Running, query: str = "", headers: dict[str, str] | None = None, userId: int | str | None = None,
    protocol: type[ChatClient] = ChatClient,
) -> Deferred[ChatClient]:
    """
    Connect a L{ChatClient} (or the subclass C{protocol}); fires once the
    WebSocket is open.  Close it at the test's end with L{closeClient}.
    """
    if userId is not None:
        query = f"id={userId}"
    factory = WebSocketClientFactory(server.wsURL(query), headers=headers or {})
    factory.protocol = protocol
    factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2)
    if server.tls:
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", server.wsPort, _trust())
    else:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.wsPort)
    d = endpoint.connect(factory)
    return d.addCallback(lambda client: client.opened)


def closeClient(client: ChatClient) -> Deferred[Any]:
    """
    Close C{client} (if open) and wait until it is closed.
    """
    if not client.closed.called:
        client.sendClose(1000)
    d: Deferred[Any] = Deferred()
    client.closed.addBoth(lambda r: (d.callback(r), r)[1])
    return d


def restRequest(server: Running, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
    """
    A treq request to the REST API (trusting the development certificate
    over TLS).
    """
    if server.tls:
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

        with open(CERT, "rb") as f:
            policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(f.read()))
        kwargs["agent"] = Agent(reactor, contextFactory=policy)
    return treq.request(method, server.restURL(path), persistent=False, **kwargs)


def query(**params: Any) -> str:
    """
    A query string.
    """
    return "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in params.items())


#: Runs twistd in a child process (C{python -c TWISTD args}).
TWISTD = "from twisted.scripts.twistd import run; run()"


class ServerProcess(ProcessProtocol):
    """
    A C{twistd wsserver} child process: its output, the patterns tests wait
    for in it, and its end.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[object] = Deferred()
        self._waiting: list[tuple[re.Pattern[bytes], Deferred[re.Match[bytes]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def _check(self) -> None:
        for pattern, d in list(self._waiting):
            m = pattern.search(self.output)
            if m:
                self._waiting.remove((pattern, d))
                d.callback(m)

    def waitFor(self, pattern: bytes) -> Deferred[re.Match[bytes]]:
        """
        Fires with the first match of C{pattern} in the output so far or to come.
        """
        d: Deferred[re.Match[bytes]] = Deferred()
        self._waiting.append((re.compile(pattern), d))
        self._check()
        return d

    def processEnded(self, reason: object) -> None:
        self.ended.callback(reason.value)  # type: ignore[attr-defined]


def spawnServer(test: TestCase, *args: str, prefix: Sequence[str] = (), twist: bool = False) -> ServerProcess:
    """
    Start C{twistd --nodaemon --pidfile= wsserver ARGS} in a new directory;
    killed at the test's end if still running.

    @param prefix: a command that runs the server (C{prlimit --nofile=N --}).
    @param twist: run it with Twisted's other runner, C{twist wsserver ARGS}.
    """
    process = ServerProcess()
    cwd = test.mktemp()
    os.makedirs(cwd)
    if twist:
        argv = [*prefix, sys.executable, "-m", "twisted", "--log-format=text", "wsserver", *args]
    else:
        argv = [*prefix, sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "wsserver", *args]
    transport = reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=cwd)

    def kill() -> Deferred[object] | None:
        # SIGTERM first, so that a worker pool's parent stops its workers
        # (a SIGKILL would leave them running); SIGKILL after 10 s
        if process.ended.called:
            return None
        transport.signalProcess("TERM")
        timer = reactor.callLater(10, lambda: process.ended.called or transport.signalProcess("KILL"))

        def ended(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return process.ended.addBoth(ended)

    test.addCleanup(kill)
    return process


class JSONSink(Resource):
    """
    A webhook for tests: records the JSON body of every POST, answers 200.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[Any] = []

    def render_POST(self, request: Any) -> bytes:
        self.bodies.append(json.loads(request.content.read()))
        return b""
