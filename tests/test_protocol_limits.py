"""
Tests for C{server.limits} in L{wsserver.connection}, in memory (L{iosim},
a L{task.Clock} for every timer, Autobahn's included): each limit with its
exact code and reason, and the other users served meanwhile.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet.testing import StringTransport

from wsserver.config import AuthConfig, LimitsConfig, ServerConfig
from wsserver.queue.memory import MemoryUndeliveredStore

from .test_protocol import Harness, _ControlledAuth


def limited(**limits: Any) -> ServerConfig:
    return ServerConfig(limits=LimitsConfig(**limits))


class HandshakeLimitTests(Harness):
    """
    Limits that refuse at the HTTP level of the opening handshake.
    """

    def assertRefused(self, client: Any, status: int, reason: str) -> None:
        self.assertFalse(client.serverSide.session.attached)
        self.assertEqual(client.wasNotCleanReason, f"WebSocket connection upgrade failed [{status}]: {reason}")

    def chatWorks(self, factory: Any, sender: Any, recipient: Any, text: str = "still here") -> None:
        recipient.received.clear()
        self.send(sender, {"type": "text", "text": text, "recipients": [recipient.serverSide.session.userId]})
        self.assertEqual([m["text"] for m in recipient.received], [text])

    def test_maxConnections(self) -> None:
        """
        Over C{maxConnections} open connections, a handshake is refused with
        HTTP 503; the open ones keep chatting.
        """
        factory = self.makeFactory(server=limited(maxConnections=2))
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2", peer="10.0.0.2")
        third = self.connect(factory, "id=3", peer="10.0.0.3")
        self.flush()
        self.assertRefused(third, 503, "maximum number of connections reached")
        self.assertEqual(factory.limits.refusals["maxConnections"], 1)
        self.chatWorks(factory, alice, bob)

    def test_maxConnectionsPerIp(self) -> None:
        """
        Over C{maxConnectionsPerIp} from one address, a handshake is refused
        with HTTP 429; other addresses connect; a closed connection makes
        room again.
        """
        factory = self.makeFactory(server=limited(maxConnectionsPerIp=2))
        a1 = self.connect(factory, "id=1")
        a2 = self.connect(factory, "id=2")
        a3 = self.connect(factory, "id=3")
        other = self.connect(factory, "id=4", peer="10.0.0.9")
        self.flush()
        self.assertRefused(a3, 429, "Too many connections from your address")
        self.chatWorks(factory, other, a1)
        a2.sendClose(1000)
        self.flush()
        a4 = self.connect(factory, "id=5")
        self.flush()
        self.chatWorks(factory, a4, other)
        self.assertEqual(factory.limits.addresses.count("10.0.0.1"), 2)

    def test_authFailuresPerMinute(self) -> None:
        """
        After C{authFailuresPerMinute} failed checks from an address, its
        handshakes are refused with 429 (before any check, so a right
        password too) until the minute has passed; other addresses are
        unaffected.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(authFailuresPerMinute=2))
        for uid in (1, 2):
            client = self.connect(factory, f"id={uid}")
            self.flush()
            auth.pending.pop()[1].callback(False)
            self.flush()
            self.assertEqual(client.closedWith, (4050, "Unauthorized"))
        blocked = self.connect(factory, "id=3")
        self.flush()
        self.assertRefused(blocked, 429, "Too many failed authentications")
        self.assertEqual(auth.pending, [])
        other = self.connect(factory, "id=4", peer="10.0.0.2")
        self.flush()
        auth.pending.pop()[1].callback(True)
        self.flush()
        self.assertTrue(other.serverSide.session.attached)
        self.clock.advance(60)
        again = self.connect(factory, "id=3")
        self.flush()
        auth.pending.pop()[1].callback(True)
        self.flush()
        self.assertTrue(again.serverSide.session.attached)

    def test_requestTooLarge(self) -> None:
        """
        A handshake request over 16 KiB is refused with 431, before it is
        parsed.
        """
        factory = self.makeFactory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET /chat?id=1 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 16384)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        self.assertEqual(factory.limits.refusals["requestTooLarge"], 1)

    def test_requestAndFramesInOneRead(self) -> None:
        """
        A small handshake request followed, in the same read, by more than
        16 KiB of frames is not mistaken for a large request.
        """
        factory = self.makeFactory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        request = (
            b"GET /chat?id=2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        server.dataReceived(request + b"\x81\x80abcd" * 5000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))

    def test_handshakeTimeout(self) -> None:
        """
        A connection that has not sent its handshake request within
        C{handshakeTimeoutSeconds} is dropped.
        """
        factory = self.makeFactory(server=limited(handshakeTimeoutSeconds=5, requestTimeoutSeconds=30))
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET /chat?id=1 HTTP/1.1\r\n")
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_authTimeout(self) -> None:
        """
        An auth check that has not answered within
        C{handshakeTimeoutSeconds} of the connect closes the connection with
        1008 C{Authentication timed out}; a late answer changes nothing.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(handshakeTimeoutSeconds=10))
        alice = self.connect(factory, "id=1")
        self.flush()
        self.clock.advance(10)
        self.flush()
        self.assertEqual(alice.closedWith, (1008, "Authentication timed out"))
        auth.pending.pop()[1].callback(True)
        self.flush()
        self.assertFalse(factory.router.isOnline(1))
        self.assertEqual(factory.limits.limitCloses["handshakeTimeoutSeconds"], 1)

    def test_authInTime(self) -> None:
        """
        An auth check that answers in time leaves no timer behind.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(handshakeTimeoutSeconds=10))
        alice = self.connect(factory, "id=1")
        self.flush()
        auth.pending.pop()[1].callback(True)
        self.flush()
        self.clock.advance(20)
        self.flush()
        self.assertIsNone(alice.closedWith)
        self.assertTrue(alice.serverSide.session.attached)


class OriginTests(Harness):
    """
    C{allowedOrigins} with cookie auth.
    """

    cookie = AuthConfig(type="cookie", name="sid", value="s3cret")

    def test_cookieNoOriginsRefusesBrowsers(self) -> None:
        """
        With cookie auth and no C{allowedOrigins}, a handshake with an
        C{Origin} header is refused with 403; one without (not a browser)
        passes.
        """
        from wsserver.auth import buildAuthenticator

        server = ServerConfig(auth=self.cookie)
        factory = self.makeFactory(buildAuthenticator(self.cookie), server=server)
        browser = self.connect(factory, "id=1", headers={"Origin": "https://evil.example", "Cookie": "sid=s3cret"})
        app = self.connect(factory, "id=2", headers={"Cookie": "sid=s3cret"})
        self.flush()
        self.assertEqual(browser.wasNotCleanReason, "WebSocket connection upgrade failed [403]: Origin not allowed")
        self.assertTrue(app.serverSide.session.attached)

    def test_starAllowsAll(self) -> None:
        """
        C{["*"]} allows every origin explicitly.
        """
        from wsserver.auth import buildAuthenticator

        server = ServerConfig(auth=self.cookie, allowedOrigins=("*",))
        factory = self.makeFactory(buildAuthenticator(self.cookie), server=server)
        browser = self.connect(factory, "id=1", headers={"Origin": "https://app.example", "Cookie": "sid=s3cret"})
        self.flush()
        self.assertTrue(browser.serverSide.session.attached)

    def test_remoteCookieSource(self) -> None:
        """
        A C{remote} auth whose C{source} is a cookie counts as cookie auth.
        """
        auth = AuthConfig(type="remote", url="http://127.0.0.1:9/", source=AuthConfig(type="cookie", name="sid"))
        factory = self.makeFactory(_ControlledAuth(), server=ServerConfig(auth=auth))
        browser = self.connect(factory, "id=1", headers={"Origin": "https://evil.example"})
        self.flush()
        self.assertEqual(browser.wasNotCleanReason, "WebSocket connection upgrade failed [403]: Origin not allowed")


class ConnectionLimitTests(Harness):
    """
    Limits that close an open connection.
    """

    def test_maxConnectionsPerUser(self) -> None:
        """
        A user's connection beyond C{maxConnectionsPerUser} is closed with
        4008 C{Too many connections}; the user's others keep receiving.
        """
        factory = self.makeFactory(server=limited(maxConnectionsPerUser=2))
        first = self.connect(factory, "id=1")
        second = self.connect(factory, "id=1")
        third = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        self.assertEqual(third.closedWith, (4008, "Too many connections"))
        self.assertEqual(factory.router.connectionsOf(1), 2)
        self.send(bob, {"type": "text", "text": "hi", "recipients": [1]})
        self.assertEqual([[m["text"] for m in c.received] for c in (first, second, third)], [["hi"], ["hi"], []])
        self.assertEqual(factory.limits.limitCloses["maxConnectionsPerUser"], 1)

    def test_rateLimit(self) -> None:
        """
        Past its bucket (C{burst}, refilled at C{messagesPerSecond}), a
        connection is closed with 4029 C{Rate limit exceeded}; what it sent
        within the limit was routed; the others are unaffected.
        """
        factory = self.makeFactory(server=limited(messagesPerSecond=1, burst=3))
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        for i in range(3):
            self.send(bob, {"type": "text", "text": f"b{i}", "recipients": [1]})
        self.clock.advance(1)
        self.send(bob, {"type": "text", "text": "b3", "recipients": [1]})
        self.assertIsNone(bob.closedWith)
        for i in range(5):
            alice.sendMessage(orjson.dumps({"type": "text", "text": f"a{i}", "recipients": [2]}))
        self.flush()
        self.assertEqual(alice.closedWith, (4029, "Rate limit exceeded"))
        self.assertEqual([m["text"] for m in bob.received], ["a0", "a1", "a2"])
        self.assertEqual(factory.limits.limitCloses["messagesPerSecond"], 1)

    def test_maxRecipients(self) -> None:
        """
        A message with more than C{maxRecipients} recipients closes with 4001
        and the limit named.
        """
        factory = self.makeFactory(server=limited(maxRecipients=3))
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        self.send(alice, {"type": "text", "text": "ok", "recipients": [2, 3, 4]})
        self.send(alice, {"type": "text", "text": "x", "recipients": [2, 3, 4, 5]})
        self.assertEqual(alice.closedWith, (4001, "Invalid payload. $.recipients[] must contain at most 3 values"))
        self.assertEqual([m["text"] for m in bob.received], ["ok"])


class SlowConsumerTests(Harness):
    """
    C{sendBufferBytes}: frames wait while the transport is paused; past the
    limit the connection is closed with 4011 and they are kept for the user.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = MemoryUndeliveredStore(3600, 1000)
        self.factory = self.makeFactory(store=self.store, server=limited(sendBufferBytes=1000))
        self.alice = self.connect(self.factory, "id=1")
        self.bob = self.connect(self.factory, "id=2")
        self.carol = self.connect(self.factory, "id=3")
        self.flush()

    def stored(self, userId: int) -> list[Any]:
        return [orjson.loads(p) for _, p in self.successResultOf(self.store.fetch(userId, self.clock.seconds()))]

    def test_heldAndResumed(self) -> None:
        """
        While paused, frames wait; on resume they are written in order, then
        the fast path is back.
        """
        self.bob.serverSide.session.pauseProducing()
        for i in range(3):
            self.send(self.alice, {"type": "text", "text": f"m{i}", "recipients": [2]})
        self.assertEqual(self.bob.received, [])
        self.bob.serverSide.session.resumeProducing()
        self.flush()
        self.send(self.alice, {"type": "text", "text": "m3", "recipients": [2]})
        self.assertEqual([m["text"] for m in self.bob.received], ["m0", "m1", "m2", "m3"])
        self.assertIsNone(self.bob.serverSide.session._held)

    def test_pausedAgainWhileResuming(self) -> None:
        """
        When the transport is full again while the kept frames are written,
        the rest wait, in order.
        """
        server = self.bob.serverSide.session
        server.pauseProducing()
        for i in range(4):
            self.send(self.alice, {"type": "text", "text": f"m{i}", "recipients": [2]})
        write = server._write
        writes = []

        def full(data: bytes) -> None:
            write(data)
            writes.append(data)
            if len(writes) == 2:
                server.pauseProducing()

        server._write = full
        server.resumeProducing()
        self.assertEqual(len(writes), 2)
        self.assertEqual(len(server._held), 2)
        server._write = write
        server.resumeProducing()
        self.flush()
        self.assertEqual([m["text"] for m in self.bob.received], ["m0", "m1", "m2", "m3"])

    def test_slowConsumerClosed(self) -> None:
        """
        Past C{sendBufferBytes} of waiting frames, the connection is closed
        with 4011 C{Slow consumer} and what it was not sent is kept for the
        user (one copy per message, for that user); the other recipient got
        everything.
        """
        self.bob.serverSide.session.pauseProducing()
        for i in range(10):
            self.send(self.alice, {"type": "text", "text": f"m{i}" + "x" * 200, "recipients": [2, 3]})
        self.assertEqual(self.bob.closedWith, (4011, "Slow consumer"))
        self.assertEqual(len(self.carol.received), 10)
        # what waited, then what came after the close (as for an offline
        # user), in order
        stored = self.stored(2)
        self.assertEqual([m["text"][:2] for m in stored], [f"m{i}" for i in range(10)])
        self.assertEqual({tuple(m["recipients"]) for m in stored}, {(2,)})
        self.assertEqual(self.factory.limits.limitCloses["sendBufferBytes"], 1)

    def test_closeHandshakeThenHalfClose(self) -> None:
        """
        The 4011 close waits for the client's answer with no Autobahn
        timer, and the answer ends the connection with a half-close (no
        abort); the grace timer goes with the connection.
        """
        self.bob.serverSide.session.pauseProducing()
        for i in range(10):
            self.send(self.alice, {"type": "text", "text": f"m{i}" + "x" * 200, "recipients": [2]})
        self.assertEqual(self.bob.closedWith, (4011, "Slow consumer"))
        server = self.bob.serverSide
        self.assertIsNone(server.closeHandshakeTimeoutCall)
        self.assertTrue(server.wasClean)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_graceFromLimits(self) -> None:
        """
        C{closeGraceSeconds} is the sessions' grace, changed by a reload
        for the sessions from then on.
        """
        factory = self.makeFactory(server=limited(sendBufferBytes=1000, closeGraceSeconds=3))
        self.assertEqual(factory.hub.closeGraceSeconds, 3)
        factory.setLimits(LimitsConfig(sendBufferBytes=1000, closeGraceSeconds=7))
        self.assertEqual(factory.hub.closeGraceSeconds, 7)
        slow = self.connect(factory, "id=5")
        sender = self.connect(factory, "id=6")
        self.flush()
        slow.serverSide.session.pauseProducing()
        # the client reads nothing from now on
        slow.serverSide.transport.write = lambda data: None
        for i in range(10):
            self.send(sender, {"type": "text", "text": f"m{i}" + "x" * 200, "recipients": [5]})
        self.assertEqual(factory.limits.limitCloses["sendBufferBytes"], 1)
        self.clock.advance(6.9)
        self.assertFalse(slow.serverSide.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(slow.serverSide.transport.disconnecting)

    def test_closeTimedOutWithUnacked(self) -> None:
        """
        A close that Autobahn times out (a client that does not answer 4010)
        aborts the connection: what the client had not acknowledged goes
        back, as when a connection dies with bytes pending.
        """
        server = self.bob.serverSide
        for i in range(3):
            self.send(self.alice, {"type": "text", "text": f"m{i}", "recipients": [2]})
        self.assertEqual(len(self.bob.received), 3)
        server.unackedBytes = lambda: 10
        server.transport.write = lambda data: None
        server.session.close(4010, "Dangling connection")
        self.assertEqual(self.stored(2), [])
        self.clock.advance(2)
        self.assertEqual([m["text"] for m in self.stored(2)], ["m0", "m1", "m2"])

    def test_lostWhilePaused(self) -> None:
        """
        A connection lost while frames wait (a stalled client that then
        drops) hands them to the undelivered queue.
        """
        self.bob.serverSide.session.pauseProducing()
        for i in range(3):
            self.send(self.alice, {"type": "text", "text": f"m{i}", "recipients": [2]})
        self.bob.serverSide.transport.abortConnection()
        self.flush()
        self.assertEqual([m["text"] for m in self.stored(2)], ["m0", "m1", "m2"])

    def test_clientClosesWhilePaused(self) -> None:
        """
        Nothing is written after the close frame: frames kept when the
        client closes are handed to the queue, not sent.
        """
        self.bob.serverSide.session.pauseProducing()
        self.send(self.alice, {"type": "text", "text": "m0", "recipients": [2]})
        self.bob.sendClose(1000)
        self.flush()
        self.bob.serverSide.session.resumeProducing()
        self.flush()
        self.assertEqual(self.bob.received, [])
        self.assertEqual([m["text"] for m in self.stored(2)], ["m0"])

    def test_replayNotCounted(self) -> None:
        """
        A reconnecting user's undelivered queue, replayed in one burst, is
        not taken for a slow consumer's backlog; live messages past the
        limit still are.
        """
        self.bob.sendClose(1000)
        self.flush()
        for i in range(20):
            self.send(self.alice, {"type": "text", "text": f"m{i}" + "x" * 200, "recipients": [2]})
        self.assertEqual(len(self.stored(2)), 20)
        server = self.factory.buildProtocol(None)
        server.session.pauseProducing()
        original = server.connectionMade

        def madePaused() -> None:
            original()
            server.session.pauseProducing()

        server.connectionMade = madePaused
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.test import iosim

        from .test_protocol import HalfClosing, _Client

        clientFactory = WebSocketClientFactory("ws://127.0.0.1:8085/chat?id=2")
        clientFactory.protocol = _Client
        bob = clientFactory.buildProtocol(None)
        self.pumps.append(iosim.connect(server, HalfClosing(server, isServer=True), bob,
                                        iosim.FakeTransport(bob, isServer=False)))
        self.flush()
        self.assertTrue(server.session.attached)
        self.assertGreater(server.session._heldBytes, 1000)
        server.session.resumeProducing()
        self.flush()
        self.assertEqual([m["text"].rstrip("x") for m in bob.received], [f"m{i}" for i in range(20)])
        self.assertIsNone(bob.closedWith)
        server.session.pauseProducing()
        for i in range(10):
            self.send(self.alice, {"type": "text", "text": "live" + "x" * 200, "recipients": [2]})
        self.assertEqual(bob.closedWith, (4011, "Slow consumer"))

    def test_userOtherConnectionServed(self) -> None:
        """
        When one of a user's connections is closed as a slow consumer while
        a message is being delivered to the user, the user's next connection
        still gets that message.
        """
        bob2 = self.connect(self.factory, "id=2")
        self.flush()
        self.bob.serverSide.session.pauseProducing()
        for i in range(10):
            self.send(self.alice, {"type": "text", "text": f"m{i}" + "x" * 200, "recipients": [2]})
        self.assertEqual(self.bob.closedWith, (4011, "Slow consumer"))
        self.assertEqual([m["text"].rstrip("x") for m in bob2.received], [f"m{i}" for i in range(10)])


class WhileArrivingTests(Harness):
    """
    C{preAuthBytes} and C{maxSize} are enforced as frames arrive, before
    their payload: a connection never holds more than the limit.
    """

    def held(self, client: Any) -> int:
        """
        The bytes of the message under way that the server keeps.
        """
        server = client.serverSide
        frames = sum(len(f) for f in server.frame_data or ())
        return frames + sum(len(f) for f in server.message_data or ())

    def test_preAuthFrameAnnounced(self) -> None:
        """
        Before the auth check answered, a frame that announces more than
        C{preAuthBytes} closes the connection with 1008 at its header; what
        arrives after is not kept.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(preAuthBytes=64 * 1024))
        alice = self.connect(factory, "id=1")
        self.flush()
        alice.beginMessage()
        alice.beginMessageFrame(10 * 1024 * 1024)
        alice.sendMessageFrameData(b"x" * 1000)
        self.flush()
        self.assertEqual(factory.limits.limitCloses["preAuthBytes"], 1)
        for _ in range(100):
            alice.sendMessageFrameData(b"x" * 1000)
        self.flush()
        self.assertLess(self.held(alice), 2000)
        # (the client, mid-frame, cannot answer the close frame: dropped)
        self.clock.advance(3)
        self.flush()
        self.assertEqual(alice.closedWith, (1008, "Too many messages before authentication"))

    def test_preAuthFragments(self) -> None:
        """
        A message sent in fragments that never ends is closed once its
        fragments pass C{preAuthBytes}.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(preAuthBytes=64 * 1024))
        alice = self.connect(factory, "id=1")
        self.flush()
        alice.beginMessage()
        for _ in range(6):
            alice.sendMessageFrame(b"x" * 10000)
        self.flush()
        self.assertIsNone(alice.closedWith)
        alice.sendMessageFrame(b"x" * 10000)
        self.flush()
        self.assertEqual(alice.closedWith, (1008, "Too many messages before authentication"))

    def test_authPassedNotWatched(self) -> None:
        """
        Once the check passed, big messages (up to C{maxSize}) are routed.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=limited(preAuthBytes=1000))
        bob = self.connect(factory, "id=2")
        self.flush()
        auth.pending.pop()[1].callback(True)
        alice = self.connect(factory, "id=1")
        self.flush()
        auth.pending.pop()[1].callback(True)
        self.flush()
        self.send(alice, {"type": "text", "text": "x" * 5000, "recipients": [2]})
        self.assertEqual([len(m["text"]) for m in bob.received], [5000])

    def test_maxSizeAnnounced(self) -> None:
        """
        A frame that announces more than C{maxSize} closes with 1009 at its
        header; its payload is not kept.
        """
        factory = self.makeFactory(maxSize=1000)
        alice = self.connect(factory, "id=1")
        self.flush()
        alice.beginMessage()
        alice.beginMessageFrame(10 * 1024 * 1024)
        for _ in range(100):
            alice.sendMessageFrameData(b"x" * 1000)
        self.flush()
        self.assertEqual(self.held(alice), 0)
        self.clock.advance(3)
        self.flush()
        self.assertEqual(alice.closedWith[0], 1009)


class PingTests(Harness):
    """
    Pings and pongs count toward C{sendBufferBytes} like every other frame.
    """

    def test_pongsWhilePaused(self) -> None:
        """
        A client that pings and does not read is closed as a slow consumer
        once the pongs kept for it pass C{sendBufferBytes}; before, its
        pings are answered.
        """
        factory = self.makeFactory(server=limited(sendBufferBytes=1000))
        alice = self.connect(factory, "id=1")
        self.flush()
        pongs = []
        alice.onPong = pongs.append
        alice.sendPing(b"a")
        self.flush()
        self.assertEqual(pongs, [b"a"])
        alice.serverSide.session.pauseProducing()
        for _ in range(7):
            alice.sendPing(b"p" * 125)
        self.flush()
        self.assertIsNone(alice.closedWith)
        alice.sendPing(b"p" * 125)
        self.flush()
        self.assertEqual(alice.closedWith, (4011, "Slow consumer"))
        self.assertEqual(pongs, [b"a"])
