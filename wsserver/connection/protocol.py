# -*- test-case-name: tests.test_protocol -*-
"""
The thin Autobahn adapter: Autobahn's callbacks become calls of the
connection's L{Session}, and the session's decisions Autobahn calls.  What
the adapter needs of Autobahn beyond its public API comes from
L{wsserver._internals.AutobahnServerProtocol}.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory, IReactorTime, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._internals import AutobahnServerProtocol, UnackedGauge
from ..auth import Authenticator, buildAuthenticator
from ..config import AuthConfig, Config, LimitsConfig, MessageConfig, ServerConfig
from ..limits import Limits, acceptCeiling
from ..reloadable import IReloadable
from ..routing import Router
from .pages import CLIENT_LIBRARY_PATH, NOT_FOUND, PlainResponse, clientLibrary, demoPage
from .session import Hub, IWire, Session

__all__ = ["ChatServerFactory", "ChatServerProtocol", "prepareFrame"]

#: Autobahn's refusals of a request without C{Upgrade: websocket} (another
#: method, HTTP/1.0, no upgrade): a plain HTTP request, answered by the factory
_PLAIN_REQUEST_CODES = frozenset((405, 426, 505))


def _noDelay(transport: ITransport) -> None:
    try:
        transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # not TCP (a UNIX socket, a test transport)
        pass


def plusKept(params: Mapping[str, Any], uri: str) -> dict[str, Any]:
    """
    C{params} with the C{id} read again from the request's C{uri}, a C{+} in
    it kept as a plus (the query's C{application/x-www-form-urlencoded}
    reading, Autobahn's, makes it a space; with C{chat.userIds: "any"} it is
    one of an id's characters, as in C{a+b@example.com}).
    """
    query = urlsplit(uri).query
    ids = parse_qs(query.replace("+", "%2B")).get("id")
    out = dict(params)
    if ids is not None:
        out["id"] = ids
    return out


def prepareFrame(payload: bytes) -> PreparedMessage:
    """
    Frame a serialized message once, as an unmasked server text frame, for
    all the connections that receive it.
    """
    return PreparedMessage(payload, False, False, False)


@implementer(IWire)
class ChatServerProtocol(AutobahnServerProtocol):
    """
    One client connection on the wire; its logic is its L{session}.
    """

    factory: ChatServerFactory
    session: Session

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn means to turn Nagle's algorithm off here, but reads the
        # option before copying it from the factory, and its bare except
        # hides the AttributeError: without this, small frames waited for
        # delayed ACKs (~40 ms p99 latency in the fan-out benchmark).
        transport = self.transport
        _noDelay(transport)
        self.factory.live.add(self)
        if self.factory.readingPaused:
            transport.pauseProducing()
        peer: IAddress = transport.getPeer()
        if self.session.connected(getattr(peer, "host", None) or str(peer), self.peer, transport.write):
            transport.registerProducer(self.session, True)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.session.lost()
        self.factory.lost(self)

    def readFrames(self, on: bool) -> None:
        if on:
            self.transport.resumeProducing()
        else:
            self.transport.pauseProducing()

    def onRequestBytes(self, buffered: bytes, data: bytes) -> bool:
        if self.session.requestTooLarge(buffered, data):
            self.failHandshake("Request Header Fields Too Large", 431)
            return True
        return False

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """
        A plain HTTP request (no WebSocket upgrade) is not a failed
        handshake: the factory answers it (404, or the page at C{/}), with
        no header that names a library.
        """
        plain = self.plainRequest() if code in _PLAIN_REQUEST_CODES else None
        if plain is not None:
            method, target = plain
            answer = self.factory.plainResponse(method, urlsplit(target).path, self.http_headers)
            self.sendPlainResponse(answer.code, answer.reason, answer.allHeaders(), answer.body)
            return
        self.session.refused(code, reason)
        self.refuseHandshake(code, reason, responseHeaders)

    def onConnect(self, request: ConnectionRequest) -> None:
        # (behind a PROXY header the peer is known only once it was read)
        peer: IAddress = self.transport.getPeer()
        params = request.params
        if "+" in self.http_request_uri and not self.factory.hub.ids.numeric:
            params = plusKept(params, self.http_request_uri)
        refusal = self.session.handshake(request.path, request.headers.get("origin"), params,
                                         request.headers, getattr(peer, "host", None) or str(peer))
        if refusal is not None:
            raise ConnectionDeny(refusal.code, refusal.reason)

    def onFrameLength(self, length: int) -> None:
        self.session.frameArriving(length)

    def onOpen(self) -> None:
        self.shedHandshake()
        self.session.opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.received(payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        self.session.pinged(payload)

    def onPong(self, payload: bytes) -> None:
        self.session.pong()

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        self.session.peerClosing(code)
        return super().onCloseFrame(code, reasonRaw)

    def onClosing(self) -> None:
        self.session.closing()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.closed(code)

    # IWire (sendAnyClose, watchFrames: AutobahnServerProtocol's)

    def dropConnection(self, abort: bool = False) -> None:
        """
        Autobahn drops the connection: before an abort (its close handshake
        timed out, or a protocol error) the session hands back what the
        client did not acknowledge, as when the connection is lost (Autobahn
        unregisters the session as producer first: no C{stopProducing}
        follows).
        """
        if abort:
            self.session.dying()
        super().dropConnection(abort)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    #: L{unackedBytes}' gauge, made when first asked (only connections
    #: with a ring ask: none is kept for the others)
    _unackedGauge: UnackedGauge | None = None

    def unackedBytes(self) -> int:
        gauge = self._unackedGauge
        if gauge is None:
            transport = self.transport
            if transport is None:
                return 0
            gauge = self._unackedGauge = UnackedGauge(transport)
        return gauge()

    def sendLingeringClose(self, code: int, reason: str) -> None:
        self.lingerOnClose()
        self.sendAnyClose(code, reason)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()


@implementer(IProtocolNegotiationFactory, IReloadable)
class ChatServerFactory(WebSocketServerFactory):
    """
    Makes L{ChatServerProtocol}s and their L{Session}s, wired to one router.

    @param router: the routing core.
    @param server: the C{server} settings (path, allowed origins).
    @param message: the C{chat.message} settings (C{maxSize}).
    @param authenticator: checks each connection's credentials.
    @param clock: the time source for the sessions' timers.
    @param limits: the state of C{server.limits}, shared with the REST API;
        by default one for C{server.limits}.
    @param buildAuth: makes the authenticator of a new C{server.auth} (a
        reload); by default L{buildAuthenticator} on C{clock}, with the
        C{treq} module's HTTP client, a token's C{sub} required.
    """

    #: no "Starting factory <... at 0x...>" in the log (L{wsserver.quietlog})
    noisy = False

    protocol = ChatServerProtocol
    _log = Logger()

    def __init__(
        self,
        router: Router,
        server: ServerConfig,
        message: MessageConfig,
        authenticator: Authenticator,
        clock: IReactorTime,
        limits: Limits | None = None,
        buildAuth: Callable[[AuthConfig], Authenticator] | None = None,
    ) -> None:
        self.router = router
        self._buildAuth = buildAuth or (lambda auth: buildAuthenticator(auth, None, clock, subjectRequired=True))
        self.limits = limits if limits is not None else Limits(server.limits, clock)
        #: what the sessions share
        self.hub = Hub(router, self.limits, authenticator, clock, cookieAuth=server.auth.usesType("cookie"),
                       ids=router.messages.ids)
        # no Server header: it named Autobahn and its version
        super().__init__(server=None)
        # (after Autobahn's, which sets both: its URL's path, its own
        # allowedOrigins option)
        self.path = server.endpoint
        self.allowedOrigins = frozenset(server.allowedOrigins)
        #: the most bytes a message may have
        self.maxSize = message.maxSize
        self.clock = clock
        #: the metrics' counters (the router's)
        self.counters = router.counters
        self.setDemoPage(server)
        #: C{GET /wsserver.js}, whether or not the demo page is on
        self.clientLibrary = clientLibrary()
        #: every open TCP connection, authenticated or not (for shutdown)
        self.live: set[ChatServerProtocol] = set()
        #: whether reading from the connections is paused (L{pauseReading})
        self.readingPaused = False
        #: how many of the stores that pause the senders want them paused
        self._pauses = 0
        self._emptied: Deferred[None] | None = None
        self.setMessageConfig(message)
        self.setProtocolOptions(
            # close with a code and reason (1009 ...) rather than dropping TCP
            failByDrop=False,
            # one check of the whole message instead (see Session._receive)
            utf8validateIncoming=False,
            closeHandshakeTimeout=2,
            # a plain HTTP request gets plainResponse, not Autobahn's status
            # page (which names its version, and redirects anywhere with
            # ?redirect=)
            webStatus=False,
        )
        #: connections past which one is closed as it is accepted (see
        #: L{acceptCeiling}); 0: no open files limit known
        self._acceptCeiling = 0 if self.limits.openFiles is None else acceptCeiling(self.limits.openFiles)
        self.setLimits(self.limits.config)

    def buildProtocol(self, addr: Any) -> ChatServerProtocol | None:  # type: ignore[override]
        if self._acceptCeiling and len(self.live) >= self._acceptCeiling:
            # (Twisted closes the socket it accepted: no file held)
            self.limits.refused("maxConnections", getattr(addr, "host", None) or str(addr),
                                f"{len(self.live)} connections open, the most the open files limit allows")
            return None
        protocol: ChatServerProtocol = super().buildProtocol(addr)
        session = protocol.session = Session(self.hub, protocol, self.clock)
        # the hot path: a message goes from Autobahn to the session directly
        protocol.onWholeMessage = session.received
        return protocol

    # the settings a reload changes (see reloadConfig)

    @property
    def authenticator(self) -> Authenticator:
        """
        Checks each new connection's credentials.
        """
        return self.hub.authenticator

    @authenticator.setter
    def authenticator(self, value: Authenticator) -> None:
        self.hub.authenticator = value

    @property
    def path(self) -> str:
        """
        The WebSocket path (C{server.endpoint}).
        """
        return self.hub.path

    @path.setter
    def path(self, value: str) -> None:
        self.hub.path = value

    @property
    def allowedOrigins(self) -> frozenset[str]:
        """
        C{server.allowedOrigins}.
        """
        return self.hub.allowedOrigins

    @allowedOrigins.setter
    def allowedOrigins(self, value: frozenset[str]) -> None:
        self.hub.allowedOrigins = value

    @property
    def cookieAuth(self) -> bool:
        """
        The auth reads a cookie (see L{Hub.refuseAllOrigins}).
        """
        return self.hub.cookieAuth

    @cookieAuth.setter
    def cookieAuth(self, value: bool) -> None:
        self.hub.cookieAuth = value

    @property
    def anyOrigin(self) -> bool:
        """
        C{["*"]}: every origin is allowed, explicitly.
        """
        return self.hub.anyOrigin

    @property
    def refuseAllOrigins(self) -> bool:
        """
        Cookie auth and no allowed origins (see L{Hub.refuseAllOrigins}).
        """
        return self.hub.refuseAllOrigins

    @property
    def maxConnectionsPerUser(self) -> int:
        """
        C{server.limits.maxConnectionsPerUser}.
        """
        return self.hub.maxConnectionsPerUser

    @property
    def sendBufferBytes(self) -> int:
        """
        C{server.limits.sendBufferBytes}.
        """
        return self.hub.sendBufferBytes

    def setLimits(self, config: LimitsConfig) -> None:
        """
        Apply the C{server.limits} settings to the connections made from now
        on.
        """
        self.hub.maxConnectionsPerUser = config.maxConnectionsPerUser
        self.hub.sendBufferBytes = config.sendBufferBytes
        self.hub.closeGraceSeconds = config.closeGraceSeconds
        # the opening handshake: the request must arrive whole within
        # requestTimeoutSeconds, and be done within handshakeTimeoutSeconds
        # (Autobahn's timer: it drops the connection)
        timeouts = [t for t in (config.handshakeTimeoutSeconds, config.requestTimeoutSeconds) if t]
        self.setProtocolOptions(
            openHandshakeTimeout=min(timeouts) if timeouts else 0,
            # HTTP 503 "maximum number of connections reached" past it,
            # never more than the open files limit allows
            maxConnections=self.limits.maxConnections(config),
        )

    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Apply a reload's C{server.auth}, C{server.allowedOrigins},
        C{server.endpoint}, C{server.demoPage}, C{chat.message} and
        C{server.limits} to the connections made from now on (see
        L{IReloadable}); the open ones keep theirs.
        """
        applied = []
        server, before = new.server, old.server
        if server.auth != before.auth:
            self.authenticator = self._buildAuth(server.auth)
            self.cookieAuth = server.auth.usesType("cookie")
            applied.append("server.auth")
        if server.allowedOrigins != before.allowedOrigins:
            self.allowedOrigins = frozenset(server.allowedOrigins)
            applied.append("server.allowedOrigins")
        if server.endpoint != before.endpoint:
            self.path = server.endpoint
            applied.append("server.endpoint")
        if server.demoPage != before.demoPage:
            applied.append("server.demoPage")
        if server.endpoint != before.endpoint or server.demoPage != before.demoPage:
            # the page names the WebSocket path
            self.setDemoPage(server)
        if new.chat.message != old.chat.message:
            self.setMessageConfig(new.chat.message)
            applied.append("chat.message")
        if server.limits != before.limits:
            self.setLimits(server.limits)
            applied.append("server.limits")
        return applied

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocol over TLS: the handshake is HTTP/1.1.  Without one,
        Twisted's ALPN callback finds no overlap with what a browser offers
        and answers an empty name, which OpenSSL turns into an "internal
        error" alert: browsers could not open C{wss://} at all.
        """
        return [b"http/1.1"]

    def setMessageConfig(self, message: MessageConfig) -> None:
        """
        Apply the C{chat.message} settings (C{maxSize}) to the connections
        made from now on.
        """
        self.maxSize = message.maxSize
        self.setProtocolOptions(maxMessagePayloadSize=message.maxSize, maxFramePayloadSize=message.maxSize)

    def setDemoPage(self, server: ServerConfig) -> None:
        """
        Serve the demo page for C{server.endpoint} at C{/} when
        C{server.demoPage} is on.
        """
        #: the demo page, or None when it is off
        self.demoPage = demoPage(server.endpoint) if server.demoPage else None

    def plainResponse(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> PlainResponse:
        """
        The answer to a plain HTTP request (no WebSocket upgrade) on the
        WebSocket port: L{rootPage} for C{GET /}, the client library for
        C{GET /wsserver.js} (304 when C{headers}' C{if-none-match} names
        it), 404 for everything else.
        """
        if method == "GET" and path == "/":
            return self.rootPage()
        if method == "GET" and path == CLIENT_LIBRARY_PATH:
            return self.clientLibrary.answer((headers or {}).get("if-none-match"))
        return NOT_FOUND

    def rootPage(self) -> PlainResponse:
        """
        C{GET /}: the demo chat page when C{server.demoPage} is on, else 404.
        """
        return self.demoPage or NOT_FOUND

    def pauseReading(self) -> None:
        """
        Stop reading from every connection, and from each new one, until
        L{resumeReading}: the back-pressure of a store that cannot take
        more (the senders' messages wait in their sockets, and TCP slows
        the senders down).  Several stores may pause: reading resumes
        when every one of them resumed.
        """
        self._pauses += 1
        if self._pauses > 1:
            return
        self.readingPaused = True
        for protocol in self.live:
            if protocol.transport is not None:
                protocol.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read from every connection again (once each L{pauseReading} has
        had its resume).
        """
        if self._pauses == 0:
            return
        self._pauses -= 1
        if self._pauses:
            return
        self.readingPaused = False
        for protocol in self.live:
            if protocol.transport is not None:
                protocol.transport.resumeProducing()

    def lost(self, protocol: ChatServerProtocol) -> None:
        """
        C{protocol}'s TCP connection is gone.
        """
        self.live.discard(protocol)
        if not self.live and self._emptied is not None:
            emptied, self._emptied = self._emptied, None
            emptied.callback(None)

    def closeAll(self, code: int, reason: str, grace: float) -> Deferred[None]:
        """
        Close every connection with C{code} and C{reason}; the result fires
        when all are gone, or after C{grace} seconds, when the rest are
        aborted.
        """
        if not self.live:
            return succeed(None)
        emptied = self._emptied = Deferred()

        def abort() -> None:
            for protocol in list(self.live):
                if protocol.transport is not None:
                    protocol.transport.abortConnection()
            # do not wait for the aborted ones: the grace period is over
            if self._emptied is emptied:
                self._emptied = None
                emptied.callback(None)

        timer = self.clock.callLater(grace, abort)

        def cancelTimer(result: None) -> None:
            if timer.active():
                timer.cancel()

        emptied.addCallback(cancelTimer)
        for protocol in list(self.live):
            protocol.session.close(code, reason)
        return emptied
