"""
One connection's logic as a state machine (L{wsserver.connection.session}):
the handshake checks, the wait for auth, the limits and the back-pressure,
driven with a L{Clock}, the real router, and no socket or Autobahn.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsserver.auth import Authenticator, Credentials, Grant, buildAuthenticator
from wsserver.config import AuthConfig, LimitsConfig, MessageConfig
from wsserver.connection import prepareFrame
from wsserver.connection.session import (
    CLOSE_CODES,
    MAX_EARLY_MESSAGES,
    MAX_HANDSHAKE_BYTES,
    RING_SLACK,
    Hub,
    IWire,
    Refusal,
    Session,
    framePayload,
    unackedTail,
)
from wsserver.limits import Limits
from wsserver.messages import MessageFactory
from wsserver.routing import IConnection, Router
from wsserver.queue.memory import MemoryUndeliveredStore


@implementer(IWire)
class FakeWire:
    """
    The network side, recorded: frames written, close frames, pings, drops.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.watched: list[bool] = []
        self.reading: list[bool] = []
        self.dropped = False
        #: what L{unackedBytes} answers
        self.unacked = 0
        self.lingering = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def sendAnyClose(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def sendLingeringClose(self, code: int, reason: str) -> None:
        self.lingering = True
        self.closes.append((code, reason))

    def unackedBytes(self) -> int:
        return self.unacked

    def abort(self) -> None:
        self.aborted = True

    def watchFrames(self, on: bool) -> None:
        self.watched.append(on)

    def drop(self) -> None:
        self.dropped = True

    def readFrames(self, on: bool) -> None:
        self.reading.append(on)

    def texts(self) -> list[str]:
        # an unmasked server text frame of < 64 KiB: 2 or 4 bytes of header
        out = []
        for frame in self.written:
            size = frame[1] & 0x7F
            out.append(orjson.loads(frame[4:] if size == 126 else frame[2:])["text"])
        return out


class _Answers(Authenticator):
    """
    An authenticator whose answers (grants) the test gives, one Deferred per
    check.
    """

    isNoAuth = False

    def __init__(self) -> None:
        self.pending: list[Deferred[Grant | None]] = []

    def identify(self, credentials: Credentials) -> Deferred[Grant | None]:
        d: Deferred[Grant | None] = Deferred()
        self.pending.append(d)
        return d


class SessionTests(SynchronousTestCase):
    """
    L{Session} against a L{FakeWire}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemoryUndeliveredStore(3600, 1000)
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             store=self.store, prepare=prepareFrame)

    def makeHub(self, auth: Authenticator | None = None, **limits: Any) -> Hub:
        config = LimitsConfig(**limits)
        hub = Hub(self.router, Limits(config, self.clock), auth or buildAuthenticator(AuthConfig()), self.clock,
                  maxConnectionsPerUser=config.maxConnectionsPerUser, sendBufferBytes=config.sendBufferBytes,
                  closeGraceSeconds=config.closeGraceSeconds)
        return hub

    def open(self, hub: Hub, query: str = "1", address: str = "10.0.0.1", **handshake: Any
             ) -> tuple[Session, FakeWire]:
        """
        A session through its handshake, opened.
        """
        wire = FakeWire()
        session = Session(hub, wire, self.clock)
        session.connected(address, f"tcp:{address}:4000", wire.write)
        params = {"id": [query]} if query is not None else {}
        refusal = session.handshake(handshake.get("path", "/chat"), handshake.get("origin"), params,
                                    handshake.get("headers", {}))
        self.assertIsNone(refusal)
        session.opened()
        return session, wire

    def message(self, text: str, *recipients: int) -> bytes:
        return orjson.dumps({"type": "text", "text": text, "recipients": list(recipients)})

    def test_interfaces(self) -> None:
        """
        A session is the router's L{IConnection} and its transport's push
        producer.
        """
        session, _ = self.open(self.makeHub())
        self.assertTrue(verifyObject(IConnection, session))
        self.assertTrue(verifyObject(IPushProducer, session))

    def test_chat(self) -> None:
        """
        Without auth a session is attached once open; a message it receives
        is routed and written to the recipient's wire.
        """
        hub = self.makeHub()
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        self.assertTrue(alice.attached and bob.attached)
        alice.received(self.message("hi", 2), False)
        self.assertEqual(bobWire.texts(), ["hi"])
        self.assertEqual(alice.lastActivity, self.clock.seconds())

    # the handshake

    def handshake(self, hub: Hub, path: str = "/chat", origin: str | None = None, address: str = "10.0.0.1",
                  params: dict[str, list[str]] | None = None) -> tuple[Session, Refusal | None]:
        wire = FakeWire()
        session = Session(hub, wire, self.clock)
        session.connected(address, address, wire.write)
        return session, session.handshake(path, origin, {"id": ["1"]} if params is None else params, {})

    def test_path(self) -> None:
        """
        Another path is refused with 404.
        """
        _, refusal = self.handshake(self.makeHub(), path="/other")
        self.assertEqual(refusal, Refusal("notFound", 404, "Not Found"))

    def test_origin(self) -> None:
        """
        An C{Origin} outside C{allowedOrigins} is refused with 403; with
        cookie auth and no list, any C{Origin} is; C{*} allows all.
        """
        hub = self.makeHub()
        hub.allowedOrigins = frozenset({"https://app.example"})
        self.assertIsNone(self.handshake(hub, origin="https://app.example")[1])
        self.assertEqual(self.handshake(hub, origin="https://evil.example")[1],
                         Refusal("origin", 403, "Origin not allowed"))
        hub.allowedOrigins = frozenset()
        hub.cookieAuth = True
        self.assertEqual(self.handshake(hub, origin="https://app.example")[1].code, 403)
        self.assertIsNone(self.handshake(hub)[1])
        hub.allowedOrigins = frozenset({"*"})
        self.assertIsNone(self.handshake(hub, origin="https://evil.example")[1])

    def test_perAddress(self) -> None:
        """
        Past C{maxConnectionsPerIp} a handshake is refused with 429; a lost
        connection gives its place back.
        """
        hub = self.makeHub(maxConnectionsPerIp=1)
        first, refusal = self.handshake(hub)
        self.assertIsNone(refusal)
        self.assertEqual(self.handshake(hub)[1],
                         Refusal("maxConnectionsPerIp", 429, "Too many connections from your address"))
        self.assertIsNone(self.handshake(hub, address="10.0.0.2")[1])
        first.lost()
        self.assertIsNone(self.handshake(hub)[1])

    def test_authFailuresBlock(self) -> None:
        """
        An address over C{authFailuresPerMinute} is refused with 429 until
        the minute has passed.
        """
        hub = self.makeHub(authFailuresPerMinute=1)
        hub.limits.authFailures.failed("10.0.0.1")
        self.assertEqual(self.handshake(hub)[1].code, 429)
        self.clock.advance(61)
        self.assertIsNone(self.handshake(hub)[1])

    def test_refusedLogged(self) -> None:
        """
        A refused handshake is counted by its kind: the session's own
        refusal, or C{maxConnections} for Autobahn's 503.
        """
        hub = self.makeHub()
        session, refusal = self.handshake(hub, path="/other")
        session.refused(refusal.code, refusal.reason)
        other, _ = self.handshake(hub)
        other.refused(503, "Service Unavailable")
        self.assertEqual(hub.limits.refusals["notFound"], 1)
        self.assertEqual(hub.limits.refusals["maxConnections"], 1)

    def test_requestTooLarge(self) -> None:
        """
        A request over 16 KiB without its end is too large; one that ends
        within it, followed by frames in the same read, is not.
        """
        session = Session(self.makeHub(), FakeWire(), self.clock)
        self.assertFalse(session.requestTooLarge(b"GET / HTTP/1.1\r\n", b"X: y\r\n"))
        self.assertFalse(session.requestTooLarge(b"GET / HTTP/1.1\r\n\r\n", b"x" * MAX_HANDSHAKE_BYTES))
        self.assertTrue(session.requestTooLarge(b"GET / HTTP/1.1\r\n", b"X: " + b"y" * MAX_HANDSHAKE_BYTES))
        session.refused(431, "Request Header Fields Too Large")
        self.assertEqual(session._hub.limits.refusals["requestTooLarge"], 1)

    def test_badId(self) -> None:
        """
        A bad id or C{since} passes the HTTP handshake, then closes with 4000
        once open, never attached.
        """
        for params in ({}, {"id": ["0"]}, {"id": ["1"], "since": ["x"]}):
            session, refusal = self.handshake(self.makeHub(), params=params)
            self.assertIsNone(refusal)
            wire = session._wire
            session.opened()
            self.assertFalse(session.attached)
            self.assertEqual([code for code, _ in wire.closes], [CLOSE_CODES["badId"]])

    def test_closeWhileConnecting(self) -> None:
        """
        Closed before its handshake is done, a session drops the connection.
        """
        wire = FakeWire()
        session = Session(self.makeHub(), wire, self.clock)
        session.close(1001, "Server shutdown")
        self.assertTrue(wire.dropped)
        self.assertEqual(wire.closes, [])

    # the wait for auth

    def test_authHoldsMessages(self) -> None:
        """
        Messages before the auth check passed wait for it, then are routed
        in order; nothing is routed before.
        """
        auth = _Answers()
        hub = self.makeHub()
        _, bobWire = self.open(hub, "2")
        hub.authenticator = auth
        alice, _ = self.open(hub, "1")
        alice.received(self.message("one", 2), False)
        alice.received(self.message("two", 2), False)
        self.assertEqual((alice.attached, bobWire.written), (False, []))
        auth.pending.pop().callback(Grant())
        self.assertTrue(alice.attached)
        self.assertEqual(bobWire.texts(), ["one", "two"])

    def test_authFailed(self) -> None:
        """
        A failed check closes with 4050, drops what waited and counts a
        failure for the address.
        """
        auth = _Answers()
        hub = self.makeHub()
        _, bobWire = self.open(hub, "2")
        hub.authenticator = auth
        alice, wire = self.open(hub, "1")
        alice.received(self.message("spam", 2), False)
        auth.pending.pop().callback(None)
        self.assertEqual(wire.closes, [(4050, "Unauthorized")])
        self.assertEqual(bobWire.written, [])
        self.assertEqual(len(hub.limits.authFailures), 1)

    def test_earlyMessagesBounded(self) -> None:
        """
        More than L{MAX_EARLY_MESSAGES} messages, or C{preAuthBytes} bytes,
        before the check passed close with 1008.
        """
        for count, size, limits in ((MAX_EARLY_MESSAGES + 1, 2, {}), (3, 600, {"preAuthBytes": 1000})):
            auth = _Answers()
            session, wire = self.open(self.makeHub(auth, **limits))
            for _ in range(count):
                session.received(b"x" * size, False)
            self.assertEqual(wire.closes, [(1008, "Too many messages before authentication")])
            self.assertEqual(session._hub.limits.limitCloses["preAuthBytes"], 1)

    def test_authTimeout(self) -> None:
        """
        An auth check not done C{handshakeTimeoutSeconds} after the TCP
        connection was made closes with 1008; its answer later does nothing.
        """
        auth = _Answers()
        hub = self.makeHub(auth, handshakeTimeoutSeconds=10)
        wire = FakeWire()
        session = Session(hub, wire, self.clock)
        session.connected("10.0.0.1", "peer", wire.write)
        self.clock.advance(4)
        self.assertIsNone(session.handshake("/chat", None, {"id": ["1"]}, {}))
        session.opened()
        self.clock.advance(5.9)
        self.assertEqual(wire.closes, [])
        self.clock.advance(0.1)
        self.assertEqual(wire.closes, [(1008, "Authentication timed out")])
        auth.pending.pop().callback(Grant())
        self.assertFalse(session.attached)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_authInTimeCancelsTimer(self) -> None:
        """
        An answer in time leaves no timer.
        """
        auth = _Answers()
        session, _ = self.open(self.makeHub(auth, handshakeTimeoutSeconds=10))
        auth.pending.pop().callback(Grant())
        self.assertTrue(session.attached)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_subjectGivesId(self) -> None:
        """
        A grant's subject must equal the query's id (4050 otherwise), and
        gives the id when the query has none.
        """
        auth = _Answers()
        auth.givesUserId = True
        session, _ = self.open(self.makeHub(auth), query=None)
        auth.pending.pop().callback(Grant(subject="42"))
        self.assertEqual((session.attached, session.userId), (True, 42))
        other, wire = self.open(self.makeHub(auth), "7")
        auth.pending.pop().callback(Grant(subject="42"))
        self.assertEqual(wire.closes, [(4050, "Unauthorized")])

    def test_tokenExpiry(self) -> None:
        """
        A grant that expires closes the session with 4051 then; a session
        closed before leaves no timer.
        """
        auth = _Answers()
        hub = self.makeHub(auth)
        session, wire = self.open(hub)
        auth.pending.pop().callback(Grant(expires=self.clock.seconds() + 30))
        self.clock.advance(29)
        self.assertEqual(wire.closes, [])
        self.clock.advance(1)
        self.assertEqual(wire.closes, [(4051, "Token expired")])
        other, _ = self.open(hub)
        auth.pending.pop().callback(Grant(expires=self.clock.seconds() + 30))
        other.peerClosing(1000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # limits

    def test_rateLimit(self) -> None:
        """
        Past the token bucket a session is closed with 4029.
        """
        hub = self.makeHub(messagesPerSecond=1, burst=2)
        alice, wire = self.open(hub, "1")
        _, bobWire = self.open(hub, "2")
        for i in range(3):
            alice.received(self.message(f"m{i}", 2), False)
        self.assertEqual(bobWire.texts(), ["m0", "m1"])
        self.assertEqual(wire.closes, [(4029, "Rate limit exceeded")])

    def test_maxConnectionsPerUser(self) -> None:
        """
        A user's connection past C{maxConnectionsPerUser} is closed with
        4008, not attached.
        """
        hub = self.makeHub(maxConnectionsPerUser=1)
        first, _ = self.open(hub)
        second, wire = self.open(hub)
        self.assertEqual((first.attached, second.attached), (True, False))
        self.assertEqual(wire.closes, [(4008, "Too many connections")])

    def test_invalidPayload(self) -> None:
        """
        An invalid message closes with 4001 and its reason; a text one that
        is not UTF-8 with 1007.
        """
        session, wire = self.open(self.makeHub())
        session.received(b'{"type": 1}', False)
        self.assertEqual(wire.closes[0][0], 4001)
        other, wire = self.open(self.makeHub())
        other.received(b"\xff", False)
        self.assertEqual(wire.closes, [(1007, "Invalid UTF-8 in text message")])

    def test_watchdog(self) -> None:
        """
        A ping (an empty ping frame) is outstanding until the pong.
        """
        session, wire = self.open(self.makeHub())
        session.ping()
        self.assertEqual((wire.written, session.pingOutstanding), ([b"\x89\x00"], True))
        session.pong()
        self.assertFalse(session.pingOutstanding)

    def test_pongs(self) -> None:
        """
        A ping is answered with a pong of its payload at once; while the
        transport is paused the pongs wait with the frames, in order, count
        toward C{sendBufferBytes} (past it: 4011), and are never kept for
        the user.
        """
        hub = self.makeHub(sendBufferBytes=1000)
        session, wire = self.open(hub)
        session.pinged(b"abc")
        self.assertEqual(wire.written, [b"\x8a\x03abc"])
        del wire.written[:]
        session.pauseProducing()
        session.sendPrepared(prepareFrame(self.message("m", 1)))
        session.pinged(b"x")
        session.ping()
        session.resumeProducing()
        self.assertEqual(wire.written[1:], [b"\x8a\x01x", b"\x89\x00"])
        session.pauseProducing()
        for _ in range(7):
            session.pinged(b"p" * 125)
        self.assertEqual(wire.closes, [])
        session.pinged(b"p" * 125)
        self.assertEqual(wire.closes, [(4011, "Slow consumer")])
        self.assertEqual(self.successResultOf(self.store.fetch(1, self.clock.seconds())), [])

    def test_preAuthBytesWhileArriving(self) -> None:
        """
        While the auth check runs, frames are watched: what their headers
        announce counts toward C{preAuthBytes} before the payload arrives
        (fragments of one message too); past it, 1008.  The watch ends when
        the check passed.
        """
        auth = _Answers()
        hub = self.makeHub(auth, preAuthBytes=1000)
        session, wire = self.open(hub)
        self.assertEqual(wire.watched, [True])
        session.frameArriving(600)
        session.received(b"x" * 600, False)
        session.frameArriving(300)
        session.frameArriving(100)
        self.assertEqual(wire.closes, [])
        session.frameArriving(1)
        self.assertEqual(wire.closes, [(1008, "Too many messages before authentication")])
        self.assertEqual(hub.limits.limitCloses["preAuthBytes"], 1)
        other, wire = self.open(hub)
        session.frameArriving(10**9)  # (closed: nothing more counted)
        auth.pending.pop().callback(Grant())
        self.assertEqual(wire.watched, [True, False])
        other.frameArriving(10**9)
        self.assertEqual(wire.closes, [])
        self.assertTrue(other.attached)

    # back-pressure

    def test_heldAndResumed(self) -> None:
        """
        While paused frames wait; resumed, they are written in order until
        the transport is full again.
        """
        hub = self.makeHub(sendBufferBytes=100_000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        bob.pauseProducing()
        for i in range(4):
            alice.received(self.message(f"m{i}", 2), False)
        self.assertEqual(bobWire.written, [])

        def full(data: bytes) -> None:
            bobWire.write(data)
            if len(bobWire.written) == 2:
                bob.pauseProducing()

        bob._write = full
        bob.resumeProducing()
        self.assertEqual(bobWire.texts(), ["m0", "m1"])
        bob.resumeProducing()
        self.assertEqual(bobWire.texts(), ["m0", "m1", "m2", "m3"])
        self.assertIsNone(bob._held)

    def test_slowConsumer(self) -> None:
        """
        Past C{sendBufferBytes} waiting, a session is closed with 4011 and
        what waited is kept for the user; nothing is written after.
        """
        hub = self.makeHub(sendBufferBytes=1000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        bob.pauseProducing()
        for i in range(8):
            alice.received(self.message(f"m{i}" + "x" * 200, 2), False)
        self.assertEqual(bobWire.closes, [(4011, "Slow consumer")])
        bob.resumeProducing()
        self.assertEqual(bobWire.written, [])
        stored = self.successResultOf(self.store.fetch(2, self.clock.seconds()))
        self.assertEqual([orjson.loads(p)["text"][:2] for _, p in stored], [f"m{i}" for i in range(8)])
        self.assertEqual(hub.limits.limitCloses["sendBufferBytes"], 1)

    def stored(self, userId: int) -> list[str]:
        """
        The texts kept for C{userId}, up to their first C{x}.
        """
        stored = self.successResultOf(self.store.fetch(userId, self.clock.seconds()))
        return [orjson.loads(p)["text"].partition("x")[0] for _, p in stored]

    def stall(self, unacked: bool, grace: float = 10) -> tuple[Hub, Session, Session, FakeWire]:
        """
        Bob (user 2) takes m0 to m3 (written), then stalls (m4 and on wait)
        until closed as a slow consumer; his kernel has not acknowledged
        (when C{unacked}) the last frame written and one byte before it.
        """
        hub = self.makeHub(sendBufferBytes=1000, closeGraceSeconds=grace)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        for i in range(4):
            alice.received(self.message(f"m{i}" + "x" * 200, 2), False)
        self.assertEqual(len(bobWire.written), 4)
        bobWire.unacked = len(bobWire.written[-1]) + 1 if unacked else 0
        bob.pauseProducing()
        for i in range(4, 12):
            alice.received(self.message(f"m{i}" + "x" * 200, 2), False)
        self.assertEqual(bobWire.closes, [(4011, "Slow consumer")])
        return hub, alice, bob, bobWire

    def test_slowConsumerUnackedKept(self) -> None:
        """
        Closed as a slow consumer, what its kernel has not acknowledged
        (here the last frame written and a part of the one before) goes
        back with what waited, in order, before what came after.
        """
        hub, alice, bob, bobWire = self.stall(True)
        self.assertEqual(self.stored(2), [f"m{i}" for i in range(2, 12)])

    def test_slowConsumerAllAcked(self) -> None:
        """
        When the kernel has every written byte acknowledged, only what
        waited goes back.
        """
        self.stall(False)
        self.assertEqual(self.stored(2), [f"m{i}" for i in range(4, 12)])

    def test_lingeringClose(self) -> None:
        """
        The 4011 close waits for the client (a lingering close); a client
        that answered it in C{closeGraceSeconds} is not aborted, and hands
        back nothing more when its connection ends.
        """
        hub, alice, bob, bobWire = self.stall(False)
        self.assertTrue(bobWire.lingering)
        self.clock.advance(9)
        bob.peerClosing(4011)
        bob.closing()
        bob.closed(4011)
        bob.stopProducing()
        bob.lost()
        self.clock.advance(60)
        self.assertFalse(bobWire.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.stored(2)), 8)

    def test_graceOver(self) -> None:
        """
        A slow consumer that does not answer in C{closeGraceSeconds} is
        aborted; when it dies with bytes unacknowledged, the rest of its
        ring (what its kernel may have received unread) goes back too.
        """
        hub, alice, bob, bobWire = self.stall(True, grace=5)
        self.clock.advance(4.9)
        self.assertFalse(bobWire.aborted)
        self.clock.advance(0.1)
        self.assertTrue(bobWire.aborted)
        bob.stopProducing()
        bob.closed(None)
        bob.lost()
        self.assertEqual(self.stored(2), [f"m{i}" for i in range(2, 12)] + ["m0", "m1"])

    def test_noGrace(self) -> None:
        """
        With C{closeGraceSeconds} 0, the 4011 frame is sent and the
        connection aborted at once.
        """
        hub, alice, bob, bobWire = self.stall(False, grace=0)
        self.assertFalse(bobWire.lingering)
        self.assertTrue(bobWire.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_diesWithUnacked(self) -> None:
        """
        A connection lost with bytes its client's kernel did not
        acknowledge hands back its ring, then what waited, as for an
        offline user; with everything acknowledged, only what waited.
        """
        hub = self.makeHub(sendBufferBytes=100_000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        for i in range(3):
            alice.received(self.message(f"m{i}", 2), False)
        bob.pauseProducing()
        alice.received(self.message("m3", 2), False)
        bobWire.unacked = 10
        bob.stopProducing()
        self.assertFalse(bob.attached)
        bob.closed(None)
        bob.lost()
        self.assertEqual(self.stored(2), ["m0", "m1", "m2", "m3"])
        carol, carolWire = self.open(hub, "3")
        alice.received(self.message("c0", 3), False)
        carol.stopProducing()
        carol.lost()
        self.assertEqual(self.stored(3), [])

    def test_pongReleasesRing(self) -> None:
        """
        The pong of a ping written after the ring's last frame says the
        client read them all: the ring is emptied, and a connection that
        dies then hands nothing back.
        """
        hub = self.makeHub(sendBufferBytes=100_000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        for i in range(3):
            alice.received(self.message(f"m{i}", 2), False)
        bob.ping()
        self.assertGreater(bob._ringBytes, 0)
        bob.pong()
        self.assertEqual((len(bob._ring), bob._ringBytes, bob._ringLimit), (0, 0, RING_SLACK))
        alice.received(self.message("m3", 2), False)
        bobWire.unacked = 10
        bob.stopProducing()
        bob.lost()
        self.assertEqual(self.stored(2), ["m3"])

    def test_pongAfterWritesKeepsRing(self) -> None:
        """
        A frame written after the ping may not have been read when the pong
        came (nor may anything, for a pong the server did not ask for): the
        ring stays, and a connection that dies hands it all back.
        """
        hub = self.makeHub(sendBufferBytes=100_000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        alice.received(self.message("m0", 2), False)
        bob.ping()
        alice.received(self.message("m1", 2), False)
        bob.pong()
        bob.pong()
        self.assertEqual(len(bob._ring), 3)
        carol, carolWire = self.open(hub, "3")
        alice.received(self.message("c0", 3), False)
        carol.pong()
        self.assertEqual(len(carol._ring), 1)
        bobWire.unacked = carolWire.unacked = 10
        for session in (bob, carol):
            session.stopProducing()
            session.lost()
        self.assertEqual((self.stored(2), self.stored(3)), (["m0", "m1"], ["c0"]))

    def test_ringBounded(self) -> None:
        """
        The ring keeps what the kernel has not acknowledged plus
        L{RING_SLACK} bytes, trimmed every L{RING_SLACK} bytes written.
        """
        hub = self.makeHub()
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        frame = prepareFrame(self.message("x" * 1000, 2))
        for _ in range(1000):
            bob.sendPrepared(frame)
        self.assertLessEqual(bob._ringBytes, 2 * RING_SLACK + len(frame.payloadHybi))
        bobWire.unacked = 500_000
        for _ in range(1000):
            bob.sendPrepared(frame)
        self.assertGreaterEqual(bob._ringBytes, 500_000 + RING_SLACK)
        self.assertLessEqual(bob._ringBytes, 500_000 + 2 * RING_SLACK + 2 * len(frame.payloadHybi))

    def test_handedBackToNewerConnection(self) -> None:
        """
        What a slow consumer hands back goes to the user's connections
        attached after it (they may not have had it), not to those attached
        before (they had it), and not to the queue while the user has one.
        """
        hub = self.makeHub(sendBufferBytes=1000)
        alice, _ = self.open(hub, "1")
        older, olderWire = self.open(hub, "2")
        self.clock.advance(1)
        bob, bobWire = self.open(hub, "2")
        bob.pauseProducing()
        self.clock.advance(1)
        newer, newerWire = self.open(hub, "2")
        for i in range(8):
            alice.received(self.message(f"m{i}" + "x" * 200, 2), False)
        self.assertEqual(bobWire.closes, [(4011, "Slow consumer")])
        self.assertEqual([t.partition("x")[0] for t in olderWire.texts()], [f"m{i}" for i in range(8)])
        # every message, and what bob held (m0 to m2, the last passed the limit) twice
        texts = [t.partition("x")[0] for t in newerWire.texts()]
        self.assertEqual(sorted(set(texts)), [f"m{i}" for i in range(8)])
        self.assertEqual(sorted(texts), sorted([f"m{i}" for i in range(8)] + ["m0", "m1", "m2"]))
        self.assertEqual(self.stored(2), [])

    def test_unackedTail(self) -> None:
        """
        L{unackedTail} takes the frames that the last C{unacked} bytes
        cover, one only partly covered included, oldest first.
        """
        frames = [prepareFrame(b"a" * n).payloadHybi for n in (10, 20, 30)]
        sizes = [len(f) for f in frames]
        ring = deque(frames)
        self.assertEqual(unackedTail(ring, 0), [])
        self.assertEqual(unackedTail(ring, sizes[2]), frames[2:])
        self.assertEqual(list(ring), frames[:2])
        ring = deque(frames)
        self.assertEqual(unackedTail(ring, sizes[2] + 1), frames[1:])
        ring = deque(frames)
        self.assertEqual(unackedTail(ring, 10_000), frames)
        self.assertEqual(list(ring), [])

    def test_framePayload(self) -> None:
        """
        L{framePayload} reads a message's payload back from its frame, for
        each length encoding (7, 7+16 and 7+64 bits); a ping or pong has
        none.
        """
        for size in (0, 125, 126, 65535, 65536):
            payload = bytes(range(256)) * (size // 256) + b"p" * (size % 256)
            self.assertEqual(framePayload(prepareFrame(payload).payloadHybi), payload)
        binary = PreparedMessage(b"\x00\x01", True, False, False).payloadHybi
        self.assertEqual(framePayload(binary), b"\x00\x01")
        self.assertIsNone(framePayload(b"\x89\x00"))
        self.assertIsNone(framePayload(b"\x8a\x03abc"))

    def test_replayNotCounted(self) -> None:
        """
        Frames of a replay (L{Session.sendStored}) wait without counting
        toward C{sendBufferBytes}.
        """
        hub = self.makeHub(sendBufferBytes=100)
        session, wire = self.open(hub)
        session.pauseProducing()
        for _ in range(5):
            session.sendStored(prepareFrame(self.message("x" * 100, 1)))
        self.assertEqual(wire.closes, [])
        session.sendPrepared(prepareFrame(self.message("x" * 150, 1)))
        self.assertEqual(wire.closes, [(4011, "Slow consumer")])

    def test_storedInRing(self) -> None:
        """
        A frame of a replay written (L{Session.sendStored}) is kept in the
        ring as any other: unacknowledged, a slow consumer hands it back.
        """
        hub = self.makeHub(sendBufferBytes=1000)
        alice, _ = self.open(hub, "1")
        bob, bobWire = self.open(hub, "2")
        bob.sendStored(prepareFrame(self.message("s0" + "x" * 200, 2)))
        self.assertEqual(len(bobWire.written), 1)
        bobWire.unacked = len(bobWire.written[-1])
        bob.pauseProducing()
        for i in range(8):
            alice.received(self.message(f"m{i}" + "x" * 200, 2), False)
        self.assertEqual(bobWire.closes, [(4011, "Slow consumer")])
        self.assertEqual(self.stored(2), ["s0"] + [f"m{i}" for i in range(8)])

    def test_nothingAfterClosing(self) -> None:
        """
        Once the wire left the open state (a close frame sent for the
        client), nothing more is written; a lost session hands back what
        waited.
        """
        session, wire = self.open(self.makeHub(sendBufferBytes=100_000))
        session.pauseProducing()
        session.sendPrepared(prepareFrame(self.message("kept", 1)))
        session.closing()
        session.sendPrepared(prepareFrame(self.message("late", 1)))
        session.resumeProducing()
        self.assertEqual(wire.written, [])
        session.closed(1000)
        session.lost()
        stored = self.successResultOf(self.store.fetch(1, self.clock.seconds()))
        self.assertEqual([orjson.loads(p)["text"] for _, p in stored], ["kept"])
