# -*- test-case-name: tests.test_session -*-
"""
One client connection's logic, without a transport: the handshake checks,
the wait for auth, the limits and the back-pressure of a slow consumer
(SPEC sections 3, 5 and 8).

A L{Session} is told what happens on the wire by its adapter
(L{wsserver.connection.protocol}) and acts through an L{IWire}; its timers
come from an injected clock.  It is the L{IConnection} the router delivers
to and the push producer of its transport.

States: C{CONNECTING} (the HTTP handshake), C{OPEN} (frames flow; the
checks run, then the session is I{attached} to the router), C{CLOSING} (a
close frame was sent: nothing more is written), C{CLOSED}.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import Interface, implementer

from ..auth import Authenticator, Credentials, Grant
from ..ids import UserId, UserIdRule, anyRule
from ..limits import Limits, TokenBucket
from ..logflood import PeerLogger
from ..messages import InvalidPayload, InvalidSince, InvalidUserId, parseSince, parseUserId
from ..metrics import ROUTING_SAMPLE_MASK
from ..routing import IConnection, Router

__all__ = ["CLOSE_CODES", "MAX_EARLY_MESSAGES", "MAX_HANDSHAKE_BYTES", "RING_SLACK", "Hub", "IWire", "Refusal",
           "Session", "framePayload", "unackedTail"]

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

#: The most bytes a handshake request may have; more is refused with 431.
MAX_HANDSHAKE_BYTES = 16 * 1024

CONNECTING, OPEN, CLOSING, CLOSED = range(4)

#: Bytes of the frames last written that a connection keeps beyond what its
#: client has not acknowledged (the ring, see L{Session}): what the client's
#: kernel may have received and the client not read, handed back when the
#: connection dies with data pending.  Also how often (in bytes written) the
#: ring is trimmed to what the kernel still holds.
RING_SLACK = 64 * 1024


class IWire(Interface):
    """
    The network side of a L{Session}: what it asks of its adapter.  (Frames,
    pings and pongs included, are written with the transport's own
    C{write}, handed to L{Session.connected}: nothing in between on the hot
    path.)
    """

    def sendAnyClose(code: int, reason: str) -> None:
        """
        Send a close frame with C{code} (any code) and C{reason}, cut to fit
        a close frame.
        """

    def drop() -> None:
        """
        Drop the connection before its opening handshake is done.
        """

    def watchFrames(on: bool) -> None:
        """
        Tell L{Session.frameArriving} the length of each data frame as it
        begins (C{on}), or no longer; while watched, keep no frame data that
        arrives after a close frame was sent.
        """

    def readFrames(on: bool) -> None:
        """
        Read from the network again (C{on}), or stop reading (the
        transport's C{resumeProducing} / C{pauseProducing}): the
        back-pressure of the undelivered queue's writes.
        """

    def unackedBytes() -> int:
        """
        The bytes written that the client's TCP has not acknowledged yet:
        the transport's buffer and the kernel's send queue (0 where that
        cannot be known).  Asked only when frames may have to be handed
        back, and every L{RING_SLACK} bytes written.
        """

    def sendLingeringClose(code: int, reason: str) -> None:
        """
        Send a close frame as L{sendAnyClose}, then wait for the client's
        close frame however long it takes (the session times the wait), and
        half-close (FIN) once it came: never a reset while the client may
        still read.
        """

    def abort() -> None:
        """
        Abort the TCP connection (a reset): the grace of a lingering close
        is over.
        """


@dataclass(frozen=True)
class Refusal:
    """
    A handshake refused at the HTTP level: C{kind} names it for the refusal
    log and the metrics.
    """

    kind: str
    code: int
    reason: str


@dataclass
class Hub:
    """
    What every session of one listening port shares: the collaborators, and
    settings that a reload changes for the sessions made from then on.
    """

    router: Router
    limits: Limits
    authenticator: Authenticator
    clock: IReactorTime
    #: the WebSocket path (C{server.endpoint})
    path: str = "/chat"
    allowedOrigins: frozenset[str] = frozenset()
    #: the auth reads a cookie (see L{refuseAllOrigins})
    cookieAuth: bool = False
    maxConnectionsPerUser: int = 0
    sendBufferBytes: int = 0
    #: seconds a slow consumer has to read what it was sent and answer the
    #: 4011 close frame (C{closeGraceSeconds}; 0: aborted at once)
    closeGraceSeconds: float = 10
    #: how the C{?id=} query and a token's C{sub} are read (C{chat.userIds})
    ids: UserIdRule = anyRule

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


def _isUTF8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _grantedUser(grant: Grant, queried: UserId, rule: UserIdRule) -> UserId | None:
    """
    The id of a connection whose auth passed: the query's (C{0} when it had
    none), which the grant's subject (a token's C{sub}) must equal, or gives
    when the query had none.

    @return: the id, or L{None} when the subject is another user or no id.
    @raise InvalidUserId: when neither the query nor the grant gives an id.
    """
    if grant.subject is None:
        return queried or parseUserId(None, rule)
    try:
        subject = parseUserId([grant.subject], rule)
    except InvalidUserId:
        return None
    return subject if queried in (0, subject) else None


def _cancel(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} unless there is none or it has run (or was cancelled).
    """
    if call is not None and call.active():
        call.cancel()


def _noWrite(data: bytes) -> None:
    pass


def _controlFrame(opcode: int, payload: bytes) -> bytes:
    """
    An unmasked control frame (its payload at most 125 bytes, RFC 6455
    section 5.5).
    """
    return bytes((0x80 | opcode, len(payload))) + payload


_PING = _controlFrame(0x9, b"")


def unackedTail(ring: deque[bytes], unacked: int) -> list[bytes]:
    """
    Take from the end of C{ring} (the frames last written, oldest first)
    the frames that C{unacked} bytes at the end of what was written cover,
    a frame of which only a part may have reached the client included.

    @return: those frames, oldest first (they are removed from C{ring}).
    """
    tail = []
    covered = 0
    while ring and covered < unacked:
        frame = ring.pop()
        covered += len(frame)
        tail.append(frame)
    tail.reverse()
    return tail


def framePayload(frame: bytes) -> bytes | None:
    """
    The payload of a frame this server wrote (a whole message, unmasked:
    RFC 6455 section 5.2, its length in 7, 7+16 or 7+64 bits); L{None} for
    a control frame (a ping or pong), which is never handed back.  The ring
    keeps the frames' bytes only (see L{Session}); this reads a message's
    payload back from them when they are handed back.
    """
    if frame[0] & 0x08:
        # (opcodes 0x8 to 0xF are control frames)
        return None
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10:]


class _Control:
    """
    A ping or pong kept while the transport is paused, with the frames: it
    is written in its turn, and never handed back to the router.
    """

    __slots__ = ("payloadHybi",)
    payload = None

    def __init__(self, frame: bytes) -> None:
        self.payloadHybi = frame


@implementer(IConnection, IPushProducer)
class Session:
    """
    One client connection.  Its state: C{userId} once the query was read;
    C{attached} once the checks passed and the router delivers to it.

    With C{sendBufferBytes} it is the push producer of its transport: while
    the transport's buffer is full (the client does not read), frames wait
    in C{_held} until the transport asks for more; past C{sendBufferBytes}
    of them the connection is closed with 4011 and they are kept for the
    user as for an offline one.  The frames last written wait in a ring
    (what the kernel has not acknowledged, and L{RING_SLACK} bytes more):
    on that close, or when the connection dies with bytes unacknowledged,
    those the client may not have read are handed back too.  The ring keeps
    the frames' bytes, not their L{PreparedMessage}s: those hold the
    serializer's buffer of the payload too, and kept for every connection
    they made the throughput load's CPU per message 1.3x dearer (allocator
    and cache work); the payloads are read back from the frames
    (L{framePayload}) when handed back, which is rare.
    """

    __slots__ = (
        "_hub", "_clock", "_wire", "_write", "state", "userId", "isBinary", "attached", "lastActivity",
        "pingOutstanding",
        "_refusal", "_refusalKind", "_since", "_auth", "_authTimer", "_expiry", "_early", "_earlyBytes", "_arriving",
        "_address", "_peer", "_counted", "_connectedAt", "_bucket", "_held", "_heldBytes", "_replayBytes", "_paused",
        "_unread", "attachedAt", "_ring", "_ringBytes", "_ringLimit", "_grace", "_answered",
    )

    #: every line of a session is one a remote peer can cause
    _log = PeerLogger()

    def __init__(self, hub: Hub, wire: IWire, clock: IReactorTime) -> None:
        self._hub = hub
        self._wire = wire
        self._clock = clock
        #: the transport's write (see L{connected})
        self._write: Callable[[bytes], None] = _noWrite
        self.state = CONNECTING
        self.userId = 0
        #: whether the message being routed came in a binary frame
        self.isBinary = False
        self.attached = False
        #: when the connection last sent a message (for the watchdog)
        self.lastActivity = 0.0
        #: a ping of the watchdog waits for its pong
        self.pingOutstanding = False
        #: a close, code and reason, decided at the handshake, sent once open
        self._refusal: tuple[int, str] | None = None
        self._refusalKind: str | None = None
        #: C{?since=N}: the connection resumes from seq N (see L{Router.attach})
        self._since: int | None = None
        self._auth: Deferred[Grant | None] | None = None
        self._authTimer: IDelayedCall | None = None
        self._expiry: IDelayedCall | None = None
        #: messages that arrived before the auth check passed
        self._early: list[tuple[bytes, bool]] | None = None
        self._earlyBytes = 0
        #: bytes announced by the frames of the message under way (counted
        #: while the auth check runs, see L{frameArriving})
        self._arriving = 0
        #: the client's address (for the per-address limits)
        self._address = ""
        #: the client, as logged
        self._peer = ""
        self._counted = False
        self._connectedAt = 0.0
        self._bucket: TokenBucket | None = None
        #: frames waiting while the transport is paused (L{None}: not paused)
        self._held: deque[PreparedMessage | _Control] | None = None
        self._heldBytes = 0
        #: of those, bytes of a replay of the undelivered queue (see L{sendStored})
        self._replayBytes = 0
        self._paused = False
        #: not read from the network while the undelivered queue catches up
        self._unread = False
        #: when the router began to deliver to it
        self.attachedAt = 0.0
        #: the frames last written, oldest first (with C{sendBufferBytes}):
        #: what the client may not have received when it dies or is closed as
        #: a slow consumer, handed back then
        self._ring: deque[bytes] | None = None
        self._ringBytes = 0
        #: when C{_ringBytes} passes it, the ring is trimmed
        self._ringLimit = RING_SLACK
        #: the wait for a slow consumer to read and answer its 4011 close
        self._grace: IDelayedCall | None = None
        #: the client sent a close frame: it read everything sent before
        #: the server's own close frame, if that came first
        self._answered = False

    @property
    def address(self) -> str:
        """
        The client's address.
        """
        return self._address

    @property
    def wire(self) -> IWire:
        """
        The network side of this connection (its adapter), for tests and
        tools that must cut it as a network fault would.
        """
        return self._wire

    # the handshake

    def connected(self, address: str, peer: str, write: Callable[[bytes], None]) -> bool:
        """
        The TCP connection is made, from C{address} (C{peer} in the logs);
        frames are written with C{write} (the transport's own).

        @return: whether the session is to be registered as its transport's
            streaming producer (C{sendBufferBytes} is on).
        """
        self._address = address
        self._peer = peer
        self._write = write
        self._connectedAt = self._clock.seconds()
        self._bucket = self._hub.limits.bucket()
        if self._hub.sendBufferBytes:
            self._ring = deque()
            return True
        return False

    def requestTooLarge(self, buffered: bytes, data: bytes) -> bool:
        """
        Whether the handshake request, C{buffered} and then C{data}, is over
        L{MAX_HANDSHAKE_BYTES} (then it is refused with 431, see L{refused}).
        Frames may follow the request in the same read.
        """
        if len(buffered) + len(data) <= MAX_HANDSHAKE_BYTES:
            return False
        head = (buffered + data)[: MAX_HANDSHAKE_BYTES + 4]
        if b"\r\n\r\n" in head:
            return False
        self._refusalKind = "requestTooLarge"
        return True

    def handshake(self, path: str, origin: str | None, params: Mapping[str, Sequence[str]],
                  headers: Mapping[str, str], peer: str | None = None) -> Refusal | None:
        """
        The handshake request arrived: refuse wrong paths, origins and
        addresses over their limits at the HTTP level; read the id and start
        the auth check, whose outcome is acted on once open.

        @param headers: the request's headers, by lower-case name.
        @param peer: the transport's peer address now, when a PROXY header
            may have named the client since the connection was made.
        """
        hub = self._hub
        self._forwarded(peer or self._address, headers.get("x-forwarded-for"))
        if path != hub.path:
            return self._deny("notFound", 404, "Not Found")
        if origin is not None and not hub.anyOrigin:
            if hub.refuseAllOrigins or (hub.allowedOrigins and origin not in hub.allowedOrigins):
                return self._deny("origin", 403, "Origin not allowed")
        limits = hub.limits
        # (maxConnections: Autobahn's own option, HTTP 503, checked before this)
        if not limits.addresses.acquire(self._address):
            return self._deny("maxConnectionsPerIp", 429, "Too many connections from your address")
        self._counted = True
        if limits.authFailures.blocked(self._address):
            return self._deny("authFailuresPerMinute", 429, "Too many failed authentications")
        ids = params.get("id")
        # with no id in the query, a token's sub may give it (see _authDone)
        authenticator = hub.authenticator
        if ids is not None or not authenticator.givesUserId:
            try:
                self.userId = parseUserId(ids, hub.ids)
            except InvalidUserId as e:
                self._refusal = (CLOSE_CODES["badId"], str(e))
                return None
        try:
            self._since = parseSince(params.get("since"))
        except InvalidSince as e:
            self._refusal = (CLOSE_CODES["badId"], str(e))
            return None
        if not authenticator.isNoAuth:
            self._early = []
            self._auth = authenticator.identify(Credentials.fromDict(headers, params))
        return None

    def _forwarded(self, peer: str, forwardedFor: str | None) -> None:
        """
        The client address behind a trusted proxy (C{server.trustedProxies}):
        from a PROXY header (C{peer}) and C{X-Forwarded-For}; the per-address
        limits and the logs use it from now on.
        """
        client = self._hub.limits.clientAddress(peer, [forwardedFor] if forwardedFor else None)
        if client != self._address:
            self._peer = f"{client} (via {self._peer})"
            self._address = client

    def _deny(self, kind: str, code: int, reason: str) -> Refusal:
        self._refusalKind = kind
        return Refusal(kind, code, reason)

    def refused(self, code: int, reason: str) -> None:
        """
        The handshake was refused with HTTP C{code}: logged through the
        refusal log (at most a line a second per kind).
        """
        kind = self._refusalKind or ("maxConnections" if code == 503 else "badHandshake")
        self._hub.limits.refused(kind, self._address, f"{code} {reason}")

    def opened(self) -> None:
        """
        The handshake is done: close for a refusal decided at the handshake,
        attach, or wait for the auth check (at most until
        C{handshakeTimeoutSeconds} after the TCP connection was made).
        """
        self.state = OPEN
        if self._refusal is not None:
            code, reason = self._refusal
            self._log.info("refused connection from {peer}: {reason}", peer=self._peer, reason=reason)
            self.close(code, reason)
        elif self._auth is None:
            self._attach()
        else:
            timeout = self._hub.limits.config.handshakeTimeoutSeconds
            if timeout and not self._auth.called:
                clock = self._clock
                left = max(0.0, timeout - (clock.seconds() - self._connectedAt))
                self._authTimer = clock.callLater(left, self._authTimedOut)
            if self._hub.limits.config.preAuthBytes and not self._auth.called:
                self._wire.watchFrames(True)
            self._auth.addCallback(self._authDone)
            self._auth.addErrback(lambda f: self._log.failure("auth check failed", f))

    def _authTimedOut(self) -> None:
        self._authTimer = None
        self._early = None
        self._hub.limits.closed("handshakeTimeoutSeconds")
        self._log.info("closing connection from {peer}: auth check not done in time", peer=self._peer)
        self.close(CLOSE_CODES["policy"], "Authentication timed out")

    def _authDone(self, grant: Grant | None) -> None:
        early, self._early = self._early or [], None
        self._arriving = 0
        if self._authTimer is not None:
            self._authTimer.cancel()
            self._authTimer = None
        if self.state != OPEN:
            return
        self._wire.watchFrames(False)
        try:
            userId = None if grant is None else _grantedUser(grant, self.userId, self._hub.ids)
        except InvalidUserId as e:
            self._log.info("refused connection from {peer}: {reason}", peer=self._peer, reason=str(e))
            self.close(CLOSE_CODES["badId"], str(e))
            return
        if grant is None or userId is None:
            self._hub.limits.authFailures.failed(self._address)
            self._log.info("auth failed for user {uid} from {peer}", uid=self.userId, peer=self._peer)
            self.close(CLOSE_CODES["unauthorized"], "Unauthorized")
            return
        self.userId = userId
        if grant.expires is not None:
            clock = self._clock
            self._expiry = clock.callLater(max(0.0, grant.expires - clock.seconds()), self._expired)
        self._attach()
        for payload, isBinary in early:
            if not self.attached:
                break
            self._receive(payload, isBinary)

    def _attach(self) -> None:
        hub = self._hub
        limit = hub.maxConnectionsPerUser
        if limit and hub.router.connectionsOf(self.userId) >= limit:
            hub.limits.closed("maxConnectionsPerUser")
            self._log.info("refused user {uid} from {peer}: too many connections", uid=self.userId,
                           peer=self._peer)
            self.close(CLOSE_CODES["tooManyConnections"], "Too many connections")
            return
        self.attached = True
        hub.router.counters.connects += 1
        self.lastActivity = self.attachedAt = self._clock.seconds()
        hub.router.attach(self, self._since)
        self._log.info("user {uid} connected from {peer}", uid=self.userId, peer=self._peer)

    def _expired(self) -> None:
        self._expiry = None
        self._log.info("closing user {uid}: token expired", uid=self.userId)
        self.close(CLOSE_CODES["tokenExpired"], "Token expired")

    # what the client sends

    def received(self, payload: bytes, isBinary: bool) -> None:
        """
        A whole message arrived: routed once attached, kept (bounded) while
        the auth check runs, else dropped; every one takes a token of the
        rate bucket.
        """
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
            self._arriving = 0
            limit = self._hub.limits.config.preAuthBytes
            if len(self._early) >= MAX_EARLY_MESSAGES or (limit and self._earlyBytes > limit):
                self._overPreAuth()
            else:
                self._early.append((payload, isBinary))

    def frameArriving(self, length: int) -> None:
        """
        While the auth check runs: a data frame of C{length} bytes begins.
        What it announces counts toward C{preAuthBytes} before its payload
        arrives, so a connection never holds more than the limit (a message
        in fragments included).
        """
        if self._early is None:
            return
        self._arriving += length
        limit = self._hub.limits.config.preAuthBytes
        if limit and self._earlyBytes + self._arriving > limit:
            self._overPreAuth()

    def _overPreAuth(self) -> None:
        self._hub.limits.closed("preAuthBytes")
        self.close(CLOSE_CODES["policy"], "Too many messages before authentication")

    def _overRate(self) -> None:
        self._hub.limits.closed("messagesPerSecond")
        self._log.info("closing user {uid}: over the rate limit", uid=self.userId)
        self.close(CLOSE_CODES["rateLimit"], "Rate limit exceeded")

    def _receive(self, payload: bytes, isBinary: bool) -> None:
        router = self._hub.router
        clock = self._clock
        received = self.lastActivity = clock.seconds()
        self.isBinary = isBinary
        try:
            router.receive(self, payload)
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
        counters = router.counters
        counters.receivedWebsocket += 1
        if not counters.receivedWebsocket & ROUTING_SAMPLE_MASK:
            # every copy was handed to its transport by now
            counters.observeRouting(clock.seconds() - received)
        if router.pendingWrites.full and not self._unread:
            # the undelivered queue is behind: read no more from this
            # sender until it caught up (what was read already is routed)
            self._unread = True
            self._wire.readFrames(False)
            router.pendingWrites.whenRelieved(self._readAgain)

    def _readAgain(self) -> None:
        """
        The undelivered queue caught up: read from the network again.
        """
        if self._unread:
            self._unread = False
            if self.state != CLOSED:
                self._wire.readFrames(True)

    def pinged(self, payload: bytes) -> None:
        """
        A ping arrived: the pong answers it like every other frame, kept
        while the transport is paused and counted toward
        C{sendBufferBytes} (a client that pings and never reads is a slow
        consumer).
        """
        if self.state == OPEN:
            self._sendControl(_controlFrame(0xA, payload))

    def _sendControl(self, frame: bytes) -> None:
        if self._held is None:
            self._write(frame)
            if self._ring is not None:
                self._written(frame)
        else:
            self._hold(_Control(frame), False)

    def _written(self, frame: bytes) -> None:
        """
        C{frame} was handed to the transport: keep it in the ring, trimmed
        (every L{RING_SLACK} bytes) to what the client has not acknowledged
        plus L{RING_SLACK}.  (L{sendPrepared}, the hot path, does the same
        inline.)
        """
        ring = self._ring
        assert ring is not None
        ring.append(frame)
        self._ringBytes += len(frame)
        if self._ringBytes > self._ringLimit:
            self._trimRing()

    def _trimRing(self) -> None:
        ring = self._ring
        assert ring is not None
        keep = self._wire.unackedBytes() + RING_SLACK
        size = self._ringBytes
        while ring and size - len(ring[0]) >= keep:
            size -= len(ring.popleft())
        self._ringBytes = size
        self._ringLimit = size + RING_SLACK

    def pong(self) -> None:
        """
        A pong arrived: the watchdog's ping is answered.  When nothing was
        written after that ping, the client read every frame of the ring
        (frames are read in order, the ping last): the ring is emptied, so
        that a connection that took a burst and went idle does not hold it
        (up to 2 L{RING_SLACK}) until its next write; the watchdog's next
        tick pings it.
        """
        if self.pingOutstanding:
            ring = self._ring
            if ring and ring[-1] is _PING:
                ring.clear()
                self._ringBytes = 0
                self._ringLimit = RING_SLACK
        self.pingOutstanding = False

    def peerClosing(self, code: int | None) -> None:
        """
        The client sent a close frame: nothing more reaches it, so the
        router must stop counting on it now (or messages meanwhile would be
        lost instead of kept for the user).
        """
        self._answered = True
        self._detach(code)

    def closing(self) -> None:
        """
        The wire left the open state (a close frame was sent, by this
        session or for the client or a protocol error; or the connection
        was dropped): nothing more is written.
        """
        if self.state == OPEN:
            self.state = CLOSING

    def closed(self, code: int | None) -> None:
        """
        The WebSocket connection is closed, with C{code}.
        """
        self._early = None
        self._detach(code)

    def lost(self) -> None:
        """
        The TCP connection is gone: what was kept for it goes back to the
        router; its timers and its place in the per-address count go.
        """
        self.state = CLOSED
        self._handBack()
        self._ring = None
        _cancel(self._grace)
        self._grace = None
        if self._unread:
            self._unread = False
            self._hub.router.pendingWrites.forget(self._readAgain)
        _cancel(self._authTimer)
        self._authTimer = None
        if self._counted:
            self._counted = False
            self._hub.limits.addresses.release(self._address)

    def _detach(self, code: int | None) -> None:
        _cancel(self._expiry)
        self._expiry = None
        if self.attached:
            self.attached = False
            router = self._hub.router
            router.counters.disconnected(code)
            router.detach(self)
            self._log.info("user {uid} disconnected ({code})", uid=self.userId, code=code)

    # IConnection: what the router and the watchdog ask

    def sendPrepared(self, prepared: PreparedMessage) -> None:
        """
        Write a frame prepared once for all recipients (no compression is
        negotiated, so the framed bytes are final).
        """
        if self.state == OPEN:
            if self._held is None:
                frame = prepared.payloadHybi
                self._write(frame)
                ring = self._ring
                if ring is not None:
                    # (L{_written}, inline: once per message and recipient)
                    ring.append(frame)
                    self._ringBytes += len(frame)
                    if self._ringBytes > self._ringLimit:
                        self._trimRing()
            else:
                self._hold(prepared, False)

    def sendStored(self, prepared: PreparedMessage) -> None:
        """
        Write a message from the undelivered queue: as L{sendPrepared}, but
        what of the replay waits for the network does not count toward
        C{sendBufferBytes}.  A replay is a burst bounded by the queue's
        C{maxPerUser}, already in memory; counted, a user with a long queue
        would be closed on every reconnect.
        """
        if self.state == OPEN and self._held is not None:
            self._hold(prepared, True)
        else:
            # written (and kept in the ring) as any other frame
            self.sendPrepared(prepared)

    def _hold(self, prepared: PreparedMessage | _Control, replay: bool) -> None:
        """
        Keep a frame while the transport is paused; past C{sendBufferBytes}
        (not counting a replay) close the connection as a slow consumer.
        """
        assert self._held is not None
        self._held.append(prepared)
        size = len(prepared.payloadHybi)
        self._heldBytes += size
        if replay:
            self._replayBytes += size
        elif self._heldBytes - self._replayBytes > self._hub.sendBufferBytes:
            self._slowConsumer()

    def close(self, code: int, reason: str) -> None:
        """
        Close with C{code} and C{reason}: route nothing more from it, and
        nothing more to it (what comes for the user is kept or goes to the
        user's other connections).  Before the handshake is done, drop it.
        """
        if self.state != OPEN:
            if self.state == CONNECTING:
                self._wire.drop()
            return
        self.state = CLOSING
        self._early = None
        self._detach(code)
        self._handBack()
        self._wire.sendAnyClose(code, reason)

    def ping(self) -> None:
        """
        Send a WebSocket ping (the watchdog's); C{pingOutstanding} is cleared
        by the pong.
        """
        self.pingOutstanding = True
        if self.state == OPEN:
            self._sendControl(_PING)

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
        if held is None or self.state != OPEN:
            # (closing: what is kept is handed back when the connection is
            # lost; nothing may follow the close frame)
            return
        write = self._write
        while held and not self._paused:
            frame = held.popleft().payloadHybi
            self._heldBytes -= len(frame)
            write(frame)
            self._written(frame)
        if not self._paused:
            self._held = None
        # the replay is written first (it was kept first)
        if self._replayBytes > self._heldBytes:
            self._replayBytes = self._heldBytes

    def stopProducing(self) -> None:
        """
        The TCP connection is being lost (its socket still open; L{lost}
        follows): see L{dying}.
        """
        self.dying()

    def dying(self) -> None:
        """
        The TCP connection is lost or aborted, its socket still open.  When
        the client's kernel has not acknowledged every byte written (and the
        client did not answer a close frame, which says it read everything
        before it), the client may not have read what it was sent: the ring
        (what the kernel holds, and L{RING_SLACK} bytes before it, which the
        client's kernel may have received unread) goes back to the router,
        before what was never written.  Idempotent.
        """
        ring = self._ring
        if ring and not self._answered and self._wire.unackedBytes():
            self._ring = None
            self._ringBytes = 0
            # (the router counts on it no more: an abnormal close)
            self._detach(1006)
            self._handBack(list(ring))

    def _slowConsumer(self) -> None:
        """
        Close a slow consumer (4011): what the client's kernel has not
        acknowledged (the end of the ring) goes back to the router with
        what was never written; the client has C{closeGraceSeconds} to read
        what it was sent and answer the close frame, then it is aborted.
        """
        hub = self._hub
        hub.limits.closed("sendBufferBytes")
        self._log.info("closing user {uid}: slow consumer ({size} bytes waiting)", uid=self.userId,
                       size=self._heldBytes)
        ring = self._ring
        unacked = self._wire.unackedBytes() if ring else 0
        tail = unackedTail(ring, unacked) if ring and unacked else []
        if ring is not None:
            self._ringBytes = sum(len(f) for f in ring)
        self.state = CLOSING
        self._early = None
        self._detach(CLOSE_CODES["slowConsumer"])
        self._handBack(tail)
        grace = hub.closeGraceSeconds
        if grace:
            self._grace = self._clock.callLater(grace, self._graceOver)
            self._wire.sendLingeringClose(CLOSE_CODES["slowConsumer"], "Slow consumer")
        else:
            self._wire.sendAnyClose(CLOSE_CODES["slowConsumer"], "Slow consumer")
            self._wire.abort()

    def _graceOver(self) -> None:
        """
        A slow consumer did not read its frames and answer the close frame
        in C{closeGraceSeconds}: abort (L{dying} hands back what it did not
        acknowledge).
        """
        self._grace = None
        self._log.info("aborting user {uid}: slow consumer did not read its close", uid=self.userId)
        self._wire.abort()

    def _handBack(self, written: list[bytes] | None = None) -> None:
        """
        Give what was routed to this connection and may not have reached
        the client (C{written}, frames handed to the transport, then what
        was never written) to the router, which keeps it for the user (the
        undelivered queue) or sends it to the user's other connections.
        """
        held, self._held = self._held, None
        self._heldBytes = self._replayBytes = 0
        payloads = [framePayload(f) for f in written or ()] + [p.payload for p in held or ()]
        payloads = [p for p in payloads if p is not None]
        if payloads:
            self._hub.router.keepUnsent(self.userId, payloads, self.attachedAt)
