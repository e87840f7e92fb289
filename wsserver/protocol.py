# -*- test-case-name: tests.test_protocol -*-
"""
The WebSocket side (SPEC section 3): a thin Autobahn adapter to the router.

Wire protocol, as the original server's:

  - connect to C{ws(s)://HOST:PORT/chat?id=USER_ID}; another path is refused
    at the handshake with HTTP 404, an C{Origin} outside
    C{server.allowedOrigins} (when that list is set) with HTTP 403;
  - the handshake completes, then the id and the auth are checked: a bad id
    closes with 4000, failed auth with 4050 C{Unauthorized}; messages that
    arrive before the check passed wait for it, and are dropped if it fails;
  - with C{jwt} auth the token's C{sub} must equal the id, or gives it when
    the query has none; the connection closes with 4051 C{Token expired}
    when the token's C{exp} passes;
  - each message (text frame, or binary frame holding the same UTF-8 JSON) is
    a JSON object C{{"type", "text", "sender", "recipients", "data",
    "timestamp"}}; an invalid one closes with 4001 C{Invalid payload. ...},
    one over C{maxSize} with 1009;
  - recipients get C{{"id", "type", "text", "timestamp", "sender",
    "recipients", "data"}} as a text frame (with C{"seq"} when the inbox is
    on); C{?since=N} resumes: the inbox after N first (C{?since} malformed:
    4000); a message with C{"ack"} is answered C{message_ack} once committed;
  - the watchdog closes with 4010; a server shutdown with 1001;
  - a plain HTTP GET (no Upgrade) of C{/} gets the demo chat page (when
    C{server.demoPage}), of C{/wsserver.js} the client library (always),
    any other one 404;
  - C{server.limits} (see L{wsserver.limits}): refused at the handshake with
    HTTP 503 (C{maxConnections}), 429 (C{maxConnectionsPerIp},
    C{authFailuresPerMinute}), 431 (a request over 16 KiB); closed with 4008
    (C{maxConnectionsPerUser}), 4029 (C{messagesPerSecond}), 4011 (a slow
    consumer, C{sendBufferBytes}), 1008 (C{preAuthBytes}, an auth check
    that outlasts C{handshakeTimeoutSeconds}).
"""

from __future__ import annotations

import json
from collections import deque
from importlib.resources import files
from typing import Any, Mapping
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IProtocolNegotiationFactory, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .assets import CLIENT_LIBRARY_PATH, PlainResponse, clientLibrary
from .auth import Authenticator, Credentials, Grant
from .config import LimitsConfig, MessageConfig, ServerConfig
from .limits import Limits, TokenBucket
from .messages import InvalidPayload, InvalidSince, InvalidUserId, parseSince, parseUserId
from .metrics import ROUTING_SAMPLE_MASK
from .routing import IConnection, Router

__all__ = ["ChatServerFactory", "ChatServerProtocol", "PlainResponse", "prepareFrame", "CLOSE_CODES"]

#: The close codes of the wire protocol.
CLOSE_CODES = {
    "badId": 4000,
    "invalidPayload": 4001,
    "unauthorized": 4050,
    "tokenExpired": 4051,
    "watchdog": 4010,
    "shutdown": 1001,
    "tooBig": 1009,
    "badUTF8": 1007,
    "tooManyConnections": 4008,
    "rateLimit": 4029,
    "slowConsumer": 4011,
    "policy": 1008,
}

#: Messages a connection may send before its auth check passed; more closes it.
MAX_EARLY_MESSAGES = 100

#: Autobahn's refusals of a request without C{Upgrade: websocket} (another
#: method, HTTP/1.0, no upgrade): a plain HTTP request, answered by the factory
_PLAIN_REQUEST_CODES = frozenset((405, 426, 505))


NOT_FOUND = PlainResponse(404, "Not Found", "text/plain; charset=utf-8", b"Not Found\n")

#: The headers of the demo page: it runs its own inline script and the
#: client library from its own origin, connects to its own origin only, in
#: no frame.
DEMO_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

#: The most bytes a handshake request may have; more is refused with 431.
MAX_HANDSHAKE_BYTES = 16 * 1024


#: Autobahn attributes that only the opening handshake needs.
_HANDSHAKE_LEFTOVERS = (
    "http_request_data",
    "http_headers",
    "http_response_data",
    "http_request_params",
    "http_status_line",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
    "_wskey",
)


def _noDelay(transport: Any) -> None:
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):  # not TCP (a UNIX socket, a test transport)
        pass


def _isUTF8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def demoPage(endpoint: str) -> PlainResponse:
    """
    The demo chat page (a package data file) for the WebSocket path
    C{endpoint}.
    """
    # in a <script>, JSON is JavaScript; "<" escaped so no "</script>" ends it
    literal = json.dumps(endpoint).replace("<", "\\u003c")
    page = files("wsserver").joinpath("web", "demo.html").read_text("utf-8")
    body = page.replace("__WSSERVER_ENDPOINT__", literal).encode("utf-8")
    return PlainResponse(200, "OK", "text/html; charset=utf-8", body, DEMO_PAGE_HEADERS)


def prepareFrame(payload: bytes) -> PreparedMessage:
    """
    Frame a serialized message once, as an unmasked server text frame, for
    all the connections that receive it.
    """
    return PreparedMessage(payload, False, False, False)


def _grantedUser(grant: Grant, queried: int) -> int | None:
    """
    The id of a connection whose auth passed: the query's (C{0} when it had
    none), which the grant's subject (a token's C{sub}) must equal, or gives
    when the query had none.

    @return: the id, or L{None} when the subject is another user or no id.
    @raise InvalidUserId: when neither the query nor the grant gives an id.
    """
    if grant.subject is None:
        return queried or parseUserId(None)
    try:
        subject = parseUserId([grant.subject])
    except InvalidUserId:
        return None
    return subject if queried in (0, subject) else None


@implementer(IConnection, IPushProducer)
class ChatServerProtocol(WebSocketServerProtocol):
    """
    One client connection. Its state: C{userId} once the query was read;
    C{attached} once the checks passed and the router delivers to it.

    With C{sendBufferBytes} it is the push producer of its transport: when
    the transport's buffer is full (the client does not read), frames wait
    in C{_held} until the transport asks for more; past C{sendBufferBytes}
    of them the connection is closed with 4011 and they are kept for the
    user as for an offline one.
    """

    _log = Logger()
    factory: ChatServerFactory

    userId: int = 0
    attached = False
    lastActivity = 0.0
    pingOutstanding = False
    _refusal: tuple[int, str] | None = None
    #: C{?since=N}: the connection resumes from seq N (see L{Router.attach})
    _since: int | None = None
    _auth: Deferred[Grant | None] | None = None
    _expiry: IDelayedCall | None = None
    _early: list[tuple[bytes, bool]] | None = None
    _earlyBytes = 0
    #: the client's address (for the per-address limits)
    _address = ""
    _counted = False
    _connectedAt = 0.0
    _bucket: TokenBucket | None = None
    _authTimer: Any = None
    _refusalKind: str | None = None
    #: frames waiting while the transport is paused (L{None}: not paused)
    _held: deque[PreparedMessage] | None = None
    _heldBytes = 0
    #: of those, bytes of a replay of the undelivered queue (see L{sendStored})
    _replayBytes = 0
    _paused = False

    # The hot path. Autobahn's own versions of the next three methods format
    # debug-log arguments on every read and write even when debug logging is
    # off, and fire a txaio "message" event (a Deferred) per message that
    # nothing here listens to; together about a fifth of the server's time
    # per message in a profile of the throughput benchmark.

    def dataReceived(self, data: bytes) -> None:
        if self.state == self.STATE_CONNECTING and len(self.data) + len(data) > MAX_HANDSHAKE_BYTES:
            # (the request and, in the same read, frames may follow it)
            head = (self.data + data)[: MAX_HANDSHAKE_BYTES + 4]
            if b"\r\n\r\n" not in head:
                self._refusalKind = "requestTooLarge"
                self.failHandshake("Request Header Fields Too Large", 431)
                return
        self._dataReceived(data)

    def onMessageEnd(self) -> None:
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    def sendPrepared(self, prepared: PreparedMessage) -> None:
        """
        Write a frame prepared once for all recipients (no compression is
        negotiated, so the framed bytes are final).
        """
        if self.state == self.STATE_OPEN:
            held = self._held
            if held is None:
                self.transport.write(prepared.payloadHybi)
            else:
                held.append(prepared)
                self._heldBytes += len(prepared.payloadHybi)
                if self._heldBytes - self._replayBytes > self.factory.sendBufferBytes:
                    self._slowConsumer()

    def sendStored(self, prepared: PreparedMessage) -> None:
        """
        Write a message from the undelivered queue: as L{sendPrepared}, but
        what of the replay waits for the network does not count toward
        C{sendBufferBytes}.  A replay is a burst bounded by the queue's
        C{maxPerUser}, already in memory; counted, a user with a long queue
        would be closed on every reconnect.
        """
        if self.state == self.STATE_OPEN:
            held = self._held
            if held is None:
                self.transport.write(prepared.payloadHybi)
            else:
                held.append(prepared)
                size = len(prepared.payloadHybi)
                self._heldBytes += size
                self._replayBytes += size

    # IPushProducer: the transport's signals (registered with
    # sendBufferBytes only)

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: keep frames from now on.
        """
        self._paused = True
        if self._held is None:
            self._held = deque()

    def resumeProducing(self) -> None:
        """
        The transport took its buffer: write the kept frames, in order, until
        it is full again.
        """
        self._paused = False
        held = self._held
        if held is None or self.state != self.STATE_OPEN:
            # (closing: what is kept is handed back when the connection is
            # lost; nothing may follow the close frame)
            return
        write = self.transport.write
        while held and not self._paused:
            prepared = held.popleft()
            self._heldBytes -= len(prepared.payloadHybi)
            write(prepared.payloadHybi)
        if not self._paused:
            self._held = None
        # the replay is written first (it was kept first)
        if self._replayBytes > self._heldBytes:
            self._replayBytes = self._heldBytes

    def stopProducing(self) -> None:
        """
        The transport is gone; L{connectionLost} hands back what is kept.
        """

    def _slowConsumer(self) -> None:
        self.factory.limits.closed("sendBufferBytes")
        self._log.info("closing user {uid}: slow consumer ({size} bytes waiting)", uid=self.userId,
                       size=self._heldBytes)
        self.close(CLOSE_CODES["slowConsumer"], "Slow consumer")

    def _handBack(self) -> None:
        """
        Give what was routed to this connection and never written to the
        router, which keeps it for the user (the undelivered queue).
        """
        held, self._held = self._held, None
        self._heldBytes = self._replayBytes = 0
        if held:
            self.factory.router.keepUnsent(self.userId, [p.payload for p in held])

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn means to turn Nagle's algorithm off here, but reads the
        # option before copying it from the factory, and its bare except
        # hides the AttributeError: without this, small frames waited for
        # delayed ACKs (~40 ms p99 latency in the fan-out benchmark).
        _noDelay(self.transport)
        factory = self.factory
        factory.live.add(self)
        peer = self.transport.getPeer()
        self._address = getattr(peer, "host", None) or str(peer)
        self._connectedAt = factory.clock.seconds()
        self._bucket = factory.limits.bucket()
        if factory.sendBufferBytes:
            self.transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        # Autobahn cancels its other timers here, but not the wait for the
        # answer to a close frame it sent: gone with the connection
        call = getattr(self, "closeHandshakeTimeoutCall", None)
        if call is not None:
            call.cancel()
            self.closeHandshakeTimeoutCall = None
        self._handBack()
        if self._authTimer is not None and self._authTimer.active():
            self._authTimer.cancel()
        if self._counted:
            self._counted = False
            self.factory.limits.addresses.release(self._address)
        self.factory.lost(self)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """
        A plain HTTP request (no WebSocket upgrade) is not a failed
        handshake: the factory answers it (404, or the page at C{/}), with
        no header that names a library.
        """
        # (none yet when the request is refused before it was parsed: 431)
        headers = getattr(self, "http_headers", None)
        if code in _PLAIN_REQUEST_CODES and headers is not None and "upgrade" not in headers:
            # 405 and 505 come before Autobahn read the path: from the request line
            method, _, rest = (self.http_status_line or "").partition(" ")
            answer = self.factory.plainResponse(method, urlsplit(rest.rpartition(" ")[0]).path, headers)
            self.wasNotCleanReason = "plain HTTP request"
            # (a 304 has no body, and no length but the 200's)
            content = [] if answer.code == 304 else [
                ("Content-Type", answer.contentType),
                ("Content-Length", str(len(answer.body))),
            ]
            self.sendHttpErrorResponse(answer.code, answer.reason, [*content, *answer.headers, ("Connection", "close")])
            self.sendData(answer.body)
            self.dropConnection(abort=False)
            return
        # refused: as Autobahn's, but logged through the refusal log (at most
        # a line a second per kind) rather than a line per refusal
        self.wasNotCleanReason = reason
        kind = self._refusalKind or ("maxConnections" if code == 503 else "badHandshake")
        self.factory.limits.refused(kind, self._address, f"{code} {reason}")
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def _deny(self, kind: str, code: int, reason: str) -> None:
        self._refusalKind = kind
        raise ConnectionDeny(code, reason)

    def onConnect(self, request: ConnectionRequest) -> None:
        """
        Refuse wrong paths and origins at the HTTP level; read the id and
        start the auth check, whose outcome is acted on once open.
        """
        factory = self.factory
        if request.path != factory.path:
            self._deny("notFound", 404, "Not Found")
        origin = request.headers.get("origin")
        if origin is not None and not factory.anyOrigin:
            if factory.refuseAllOrigins or (factory.allowedOrigins and origin not in factory.allowedOrigins):
                self._deny("origin", 403, "Origin not allowed")
        limits = factory.limits
        # (maxConnections: Autobahn's own option, HTTP 503, checked before this)
        if not limits.addresses.acquire(self._address):
            self._deny("maxConnectionsPerIp", 429, "Too many connections from your address")
        self._counted = True
        if limits.authFailures.blocked(self._address):
            self._deny("authFailuresPerMinute", 429, "Too many failed authentications")
        ids = request.params.get("id")
        # with no id in the query, a token's sub may give it (see _authDone)
        if ids is not None or not factory.authenticator.givesUserId:
            try:
                self.userId = parseUserId(ids)
            except InvalidUserId as e:
                self._refusal = (CLOSE_CODES["badId"], str(e))
                return
        try:
            self._since = parseSince(request.params.get("since"))
        except InvalidSince as e:
            self._refusal = (CLOSE_CODES["badId"], str(e))
            return
        if not factory.authenticator.isNoAuth:
            self._early = []
            self._auth = factory.authenticator.identify(Credentials.fromDict(request.headers, request.params))

    def onOpen(self) -> None:
        self._shed()
        if self._refusal is not None:
            code, reason = self._refusal
            self._log.info("refused connection from {peer}: {reason}", peer=self.peer, reason=reason)
            self.close(code, reason)
        elif self._auth is None:
            self._attach()
        else:
            timeout = self.factory.limits.config.handshakeTimeoutSeconds
            if timeout and not self._auth.called:
                clock = self.factory.clock
                left = max(0.0, timeout - (clock.seconds() - self._connectedAt))
                self._authTimer = clock.callLater(left, self._authTimedOut)
            self._auth.addCallback(self._authDone)
            self._auth.addErrback(lambda f: self._log.failure("auth check failed", f))

    def _authTimedOut(self) -> None:
        self._authTimer = None
        self._early = None
        self.factory.limits.closed("handshakeTimeoutSeconds")
        self._log.info("closing connection from {peer}: auth check not done in time", peer=self.peer)
        self.close(CLOSE_CODES["policy"], "Authentication timed out")

    def _shed(self) -> None:
        """
        Drop what Autobahn keeps of the handshake (the raw request, headers,
        the response text) and its send queue, which is used only for
        chopped or synchronous writes that this server never makes: about
        2 KB of the ~10 KB that an idle connection costs.
        """
        for name in _HANDSHAKE_LEFTOVERS:
            setattr(self, name, None)
        self.send_queue = ()

    def _authDone(self, grant: Grant | None) -> None:
        early, self._early = self._early or [], None
        if self._authTimer is not None:
            self._authTimer.cancel()
            self._authTimer = None
        if self.state != self.STATE_OPEN:
            return
        try:
            userId = None if grant is None else _grantedUser(grant, self.userId)
        except InvalidUserId as e:
            self._log.info("refused connection from {peer}: {reason}", peer=self.peer, reason=str(e))
            self.close(CLOSE_CODES["badId"], str(e))
            return
        if grant is None or userId is None:
            self.factory.limits.authFailures.failed(self._address)
            self._log.info("auth failed for user {uid} from {peer}", uid=self.userId, peer=self.peer)
            self.close(CLOSE_CODES["unauthorized"], "Unauthorized")
            return
        self.userId = userId
        if grant.expires is not None:
            clock = self.factory.clock
            self._expiry = clock.callLater(max(0.0, grant.expires - clock.seconds()), self._expired)
        self._attach()
        for payload, isBinary in early:
            if not self.attached:
                break
            self._receive(payload, isBinary)

    def _attach(self) -> None:
        factory = self.factory
        limit = factory.maxConnectionsPerUser
        if limit and factory.router.connectionsOf(self.userId) >= limit:
            factory.limits.closed("maxConnectionsPerUser")
            self._log.info("refused user {uid} from {peer}: too many connections", uid=self.userId, peer=self.peer)
            self.close(CLOSE_CODES["tooManyConnections"], "Too many connections")
            return
        self.attached = True
        self.factory.counters.connects += 1
        self.lastActivity = self.factory.clock.seconds()
        self.factory.router.attach(self, self._since)
        self._log.info("user {uid} connected from {peer}", uid=self.userId, peer=self.peer)

    def _expired(self) -> None:
        self._expiry = None
        self._log.info("closing user {uid}: token expired", uid=self.userId)
        self.close(CLOSE_CODES["tokenExpired"], "Token expired")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.attached:
            bucket = self._bucket
            if bucket is not None and not bucket.take():
                self._overRate()
                return
            self._receive(payload, isBinary)
        elif self._early is not None:
            bucket = self._bucket
            if bucket is not None and not bucket.take():
                self._overRate()
                return
            self._earlyBytes += len(payload)
            limit = self.factory.limits.config.preAuthBytes
            if len(self._early) >= MAX_EARLY_MESSAGES or (limit and self._earlyBytes > limit):
                self.factory.limits.closed("preAuthBytes")
                self.close(CLOSE_CODES["policy"], "Too many messages before authentication")
            else:
                self._early.append((payload, isBinary))

    def _overRate(self) -> None:
        self.factory.limits.closed("messagesPerSecond")
        self._log.info("closing user {uid}: over the rate limit", uid=self.userId)
        self.close(CLOSE_CODES["rateLimit"], "Rate limit exceeded")

    def _receive(self, payload: bytes, isBinary: bool) -> None:
        factory = self.factory
        received = self.lastActivity = factory.clock.seconds()
        try:
            factory.router.receive(self, payload)
        except InvalidPayload as e:
            if not isBinary and not _isUTF8(payload):
                # Autobahn's incremental validator is off: the JSON parser
                # checks UTF-8 anyway, so only the error path looks again
                self._log.info("closing user {uid}: invalid UTF-8", uid=self.userId)
                self.close(CLOSE_CODES["badUTF8"], "Invalid UTF-8 in text message")
                return
            self._log.info("closing user {uid}: invalid payload ({reason})", uid=self.userId, reason=e.reason)
            self.close(CLOSE_CODES["invalidPayload"], "Invalid payload. " + e.reason)
            return
        counters = factory.counters
        counters.receivedWebsocket += 1
        if not counters.receivedWebsocket & ROUTING_SAMPLE_MASK:
            # every copy was handed to its transport by now
            counters.observeRouting(factory.clock.seconds() - received)

    def onPong(self, payload: bytes) -> None:
        self.pingOutstanding = False

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        # the client is closing: nothing more reaches it, so the router must
        # stop counting on it now (or messages meanwhile would be lost
        # instead of kept for the user)
        self._detach(code)
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._early = None
        self._detach(code)

    def _detach(self, code: int | None) -> None:
        if self._expiry is not None:
            if self._expiry.active():
                self._expiry.cancel()
            self._expiry = None
        if self.attached:
            self.attached = False
            self.factory.counters.disconnected(code)
            self.factory.router.detach(self)
            self._log.info("user {uid} disconnected ({code})", uid=self.userId, code=code)

    # IConnection

    def close(self, code: int, reason: str) -> None:
        """
        Close with any code: Autobahn's C{sendClose} accepts only 1000 and
        3000-4999, so others (1001, 1008) send the close frame directly.
        Reasons are cut to the 123 bytes a close frame holds, on a character
        boundary.
        """
        if self.state != self.STATE_OPEN:
            if self.state == self.STATE_CONNECTING and self.transport is not None:
                self.transport.loseConnection()
            return
        # closing: route nothing more from it, and nothing more to it (what
        # comes for the user is kept or goes to the user's other connections)
        self._early = None
        self._detach(code)
        self._handBack()
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)
        else:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)

    def ping(self) -> None:
        """
        Send a WebSocket ping (the watchdog's); C{pingOutstanding} is cleared
        by the pong.
        """
        self.pingOutstanding = True
        self.sendPing()


@implementer(IProtocolNegotiationFactory)
class ChatServerFactory(WebSocketServerFactory):
    """
    Makes L{ChatServerProtocol}s wired to one router.

    @param router: the routing core.
    @param server: the C{server} settings (path, allowed origins).
    @param message: the C{chat.message} settings (C{maxSize}).
    @param authenticator: checks each connection's credentials.
    @param clock: the time source for the watchdog's activity times.
    @param limits: the state of C{server.limits}, shared with the REST API;
        by default one for C{server.limits}.
    """

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
    ) -> None:
        # no Server header: it named Autobahn and its version
        super().__init__(server=None)
        self.router = router
        self.path = server.endpoint
        self.allowedOrigins = frozenset(server.allowedOrigins)
        #: the auth reads a cookie (see L{refuseAllOrigins})
        self.cookieAuth = server.auth.usesType("cookie")
        self.limits = limits if limits is not None else Limits(server.limits, clock)
        #: the most bytes a message may have
        self.maxSize = message.maxSize
        self.authenticator = authenticator
        self.clock = clock
        #: the metrics' counters (the router's)
        self.counters = router.counters
        self.setDemoPage(server)
        #: C{GET /wsserver.js}, whether or not the demo page is on
        self.clientLibrary = clientLibrary()
        #: every open TCP connection, authenticated or not (for shutdown)
        self.live: set[ChatServerProtocol] = set()
        self._emptied: Deferred[None] | None = None
        self.setMessageConfig(message)
        self.setProtocolOptions(
            # close with a code and reason (1009 ...) rather than dropping TCP
            failByDrop=False,
            # one check of the whole message instead (see _receive)
            utf8validateIncoming=False,
            closeHandshakeTimeout=2,
            # a plain HTTP request gets plainResponse, not Autobahn's status
            # page (which names its version, and redirects anywhere with
            # ?redirect=)
            webStatus=False,
        )
        self.setLimits(self.limits.config)

    @property
    def anyOrigin(self) -> bool:
        """
        C{["*"]}: every origin is allowed, explicitly.
        """
        return "*" in self.allowedOrigins

    @property
    def refuseAllOrigins(self) -> bool:
        """
        Cookie auth and no allowed origins: a browser on any site would send
        the visitor's cookie, so every handshake with an C{Origin} is refused.
        """
        return self.cookieAuth and not self.allowedOrigins

    def setLimits(self, config: LimitsConfig) -> None:
        """
        Apply the C{server.limits} settings to the connections made from now
        on.
        """
        self.maxConnectionsPerUser = config.maxConnectionsPerUser
        self.sendBufferBytes = config.sendBufferBytes
        # the opening handshake: the request must arrive whole within
        # requestTimeoutSeconds, and be done within handshakeTimeoutSeconds
        # (Autobahn's timer: it drops the connection)
        timeouts = [t for t in (config.handshakeTimeoutSeconds, config.requestTimeoutSeconds) if t]
        self.setProtocolOptions(
            openHandshakeTimeout=min(timeouts) if timeouts else 0,
            # HTTP 503 "maximum number of connections reached" past it
            maxConnections=config.maxConnections,
        )

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
            protocol.close(code, reason)
        return emptied
