"""
Tests for L{wsserver.connection}: the Autobahn adapter, driven in memory with
L{twisted.test.iosim} and a L{task.Clock} for every timer.
"""

from __future__ import annotations

from hashlib import sha256
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop

from wsserver.auth import Authenticator, Credentials
from wsserver.config import LimitsConfig, MessageConfig, ServerConfig, WatchdogConfig
from wsserver.messages import MessageFactory
from wsserver.metrics import ROUTING_BUCKETS, ROUTING_SAMPLE_MASK
from wsserver.connection import MAX_EARLY_MESSAGES, ChatServerFactory, prepareFrame
from wsserver.routing import Router
from wsserver.queue.memory import MemoryUndeliveredStore
from wsserver.watchdog import Watchdog


class _Client(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []
        self.closedWith: tuple[int | None, str | None] | None = None
        self.pongsOff = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(orjson.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closedWith = (code, reason)

    def _processFrame_ping(self) -> None:  # pragma: no cover - not used
        pass

    def onPing(self, payload: bytes) -> None:
        if not self.pongsOff:
            self.sendPong(payload)


class _ControlledAuth(Authenticator):
    """
    An authenticator whose answers the test gives, one Deferred per check.
    """

    isNoAuth = False

    def __init__(self) -> None:
        self.pending: list[tuple[Credentials, Deferred[bool]]] = []

    def _check(self, credentials: Credentials) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.pending.append((credentials, d))
        return d


class _NoAuth(Authenticator):
    isNoAuth = True

    def authenticate(self, credentials: Credentials) -> Deferred[bool]:
        return succeed(True)


class HalfClosing(iosim.FakeTransport):
    """
    iosim's transport, whose C{loseWriteConnection} does nothing: here a
    half-close ends the connection, as the peer does once it read the FIN.
    """

    def loseWriteConnection(self) -> None:
        self.loseConnection()


class Harness(SynchronousTestCase):
    """
    The server protocol against a real Autobahn client, in memory: the
    helpers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self._loop = replace_loop(self.clock)
        self._loop.__enter__()
        self.addCleanup(self._loop.__exit__, None, None, None)
        self.pumps: list[iosim.IOPump] = []

    def makeFactory(self, auth: Authenticator | None = None, store: Any = None, server: ServerConfig | None = None,
                    **message: Any) -> ChatServerFactory:
        server = server or ServerConfig()
        router = Router(
            MessageConfig(**message), self.clock,
            MessageFactory(self.clock, ZoneInfo("UTC"), maxRecipients=server.limits.maxRecipients), store=store,
            prepare=prepareFrame,
        )
        return ChatServerFactory(router, server, MessageConfig(**message), auth or _NoAuth(), self.clock)

    def connect(self, factory: ChatServerFactory, query: str, headers: dict[str, str] | None = None,
                peer: str = "10.0.0.1") -> _Client:
        clientFactory = WebSocketClientFactory(f"ws://127.0.0.1:8085/chat?{query}", headers=headers or {})
        clientFactory.protocol = _Client
        server = factory.buildProtocol(None)
        client = clientFactory.buildProtocol(None)
        pump = iosim.connect(
            server, HalfClosing(server, isServer=True, peerAddress=IPv4Address("TCP", peer, 40000)),
            client, iosim.FakeTransport(client, isServer=False),
        )
        self.pumps.append(pump)
        client.serverSide = server
        return client

    def flush(self) -> None:
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def send(self, client: _Client, obj: Any) -> None:
        client.sendMessage(orjson.dumps(obj))
        self.flush()



class ProtocolTests(Harness):
    """
    The server protocol against a real Autobahn client, in memory.
    """

    def test_chat(self) -> None:
        """
        A message goes from one connection to the recipient's connection.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        self.send(alice, {"type": "text", "text": "hi", "recipients": [2]})
        self.assertEqual([(m["text"], m["sender"]) for m in bob.received], [("hi", 1)])

    def test_authPendingHoldsMessages(self) -> None:
        """
        Messages sent before the auth check answered are routed only once it
        passed, in order.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth)
        bob = self.connect(factory, "id=2")
        self.flush()
        auth.pending.pop()[1].callback(True)
        alice = self.connect(factory, "id=1", headers={"X-Token": "t"})
        self.flush()
        self.send(alice, {"type": "text", "text": "one", "recipients": [2]})
        self.send(alice, {"type": "text", "text": "two", "recipients": [2]})
        self.assertEqual(bob.received, [])
        credentials, answer = auth.pending.pop()
        self.assertEqual(credentials.header("x-token"), "t")
        answer.callback(True)
        self.flush()
        self.assertEqual([m["text"] for m in bob.received], ["one", "two"])

    def test_authFailedDropsMessages(self) -> None:
        """
        When the check fails the connection is closed with 4050 Unauthorized
        and what it sent meanwhile is never routed.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth)
        bob = self.connect(factory, "id=2")
        self.flush()
        auth.pending.pop()[1].callback(True)
        alice = self.connect(factory, "id=1")
        self.flush()
        self.send(alice, {"type": "text", "text": "spam", "recipients": [2]})
        auth.pending.pop()[1].callback(False)
        self.flush()
        self.assertEqual(alice.closedWith, (4050, "Unauthorized"))
        self.assertEqual(bob.received, [])
        self.assertFalse(factory.router.isOnline(1))

    def test_tooManyEarlyMessages(self) -> None:
        """
        A connection that floods before its auth check answered is closed
        with 1008.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth)
        alice = self.connect(factory, "id=1")
        self.flush()
        for i in range(MAX_EARLY_MESSAGES + 1):
            alice.sendMessage(b"{}")
        self.flush()
        self.assertEqual(alice.closedWith, (1008, "Too many messages before authentication"))

    def test_earlyBytesBounded(self) -> None:
        """
        Before its auth check answered, a connection may send at most
        C{preAuthBytes} bytes in all; more closes it with 1008.
        """
        auth = _ControlledAuth()
        factory = self.makeFactory(auth, server=ServerConfig(limits=LimitsConfig(preAuthBytes=100)))
        alice = self.connect(factory, "id=1")
        self.flush()
        for _ in range(3):
            alice.sendMessage(b"x" * 60)
        self.flush()
        self.assertEqual(alice.closedWith, (1008, "Too many messages before authentication"))
        self.assertEqual(factory.limits.limitCloses["preAuthBytes"], 1)

    def test_nothingRoutedAfterInvalid(self) -> None:
        """
        Once a connection is closed for an invalid payload, what it sent
        after it (even in the same read) is not routed.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        alice.sendMessage(b'{"type": 5}')
        alice.sendMessage(orjson.dumps({"type": "text", "text": "after", "recipients": [2]}))
        self.flush()
        self.assertEqual(alice.closedWith, (4001, "Invalid payload. $.type must be a string"))
        self.assertEqual(bob.received, [])

    def test_closingConnectionNotCounted(self) -> None:
        """
        A connection the server is closing receives nothing more: a message
        for its user is kept in the queue, and the sender gets no delivery
        status for it.
        """
        store = MemoryUndeliveredStore(3600, 10)
        factory = self.makeFactory(store=store, enableDeliveryStatus=True)
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        bob.serverSide.session.close(4010, "Inactive connection")
        alice.serverSide.onMessage(orjson.dumps({"type": "text", "text": "late", "recipients": [2]}), False)
        self.flush()
        self.assertEqual(bob.received, [])
        self.assertEqual(alice.received, [])
        kept = self.successResultOf(store.fetch(2, self.clock.seconds()))
        self.assertEqual([orjson.loads(p)["text"] for _, p in kept], ["late"])

    def test_tooDeep(self) -> None:
        """
        C{data} nested deeper than the JSON writer carries is an invalid
        payload (4001), not a crash.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        self.flush()
        alice.sendMessage(b'{"type": "x", "recipients": [2], "data": ' + b"[" * 300 + b"]" * 300 + b"}")
        self.flush()
        code, reason = alice.closedWith
        self.assertEqual(code, 4001)
        self.assertTrue(reason.startswith("Invalid payload. $.data cannot be carried"), reason)
        self.assertEqual(factory.router.statItem(1)["sentMessages"], 0)

    def test_droppedConnectionIsOffline(self) -> None:
        """
        A connection lost without a close frame counts as closed at once.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        self.flush()
        self.assertTrue(factory.router.isOnline(1))
        alice.transport.abortConnection()
        self.flush()
        self.assertFalse(factory.router.isOnline(1))
        self.assertEqual(factory.live, set())

    def test_watchdog(self) -> None:
        """
        The watchdog pings through Autobahn; a client that answers stays, one
        that stops answering is closed with 4010 Dangling connection.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        watchdog = Watchdog(WatchdogConfig(True, 0, 10), factory.router.allConnections, self.clock)
        watchdog.startService()
        self.addCleanup(watchdog.stopService)
        bob.pongsOff = True
        self.clock.advance(10)
        self.flush()
        self.clock.advance(10)
        self.flush()
        self.assertIsNone(alice.closedWith)
        self.assertEqual(bob.closedWith, (4010, "Dangling connection"))

    def test_inactive(self) -> None:
        """
        A connection that sent nothing for C{connectionLifetimeSeconds} is
        closed with 4010 Inactive connection; one that sent a message is not.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.flush()
        watchdog = Watchdog(WatchdogConfig(True, 25, 10), factory.router.allConnections, self.clock)
        watchdog.startService()
        self.addCleanup(watchdog.stopService)
        self.clock.advance(10)
        self.flush()
        self.clock.advance(10)
        self.flush()
        self.send(alice, {"type": "ping", "recipients": [2]})
        self.clock.advance(10)
        self.flush()
        self.assertIsNone(alice.closedWith)
        self.assertEqual(bob.closedWith, (4010, "Inactive connection"))

    def test_pausedByTwoStores(self) -> None:
        """
        Reading paused by two stores (the undelivered queue and the
        cluster's outbox) resumes only once both resumed; a resume
        without a pause changes nothing.
        """
        factory = self.makeFactory()
        factory.resumeReading()
        self.assertFalse(factory.readingPaused)
        factory.pauseReading()
        factory.pauseReading()
        factory.resumeReading()
        self.assertTrue(factory.readingPaused)
        factory.resumeReading()
        self.assertFalse(factory.readingPaused)
        factory.pauseReading()
        self.assertTrue(factory.readingPaused)

    def test_closeAll(self) -> None:
        """
        L{ChatServerFactory.closeAll} closes every connection with the code,
        and aborts the ones that do not answer within the grace period.
        """
        factory = self.makeFactory()
        alice = self.connect(factory, "id=1")
        self.flush()
        done = factory.closeAll(1001, "Server shutdown", 5)
        self.flush()
        self.assertEqual(alice.closedWith, (1001, "Server shutdown"))
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(factory.live, set())

    def test_closeAllAbortsSilentClients(self) -> None:
        """
        A client that never answers the close frame is dropped after the
        grace period.
        """
        factory = self.makeFactory()
        self.connect(factory, "id=1")
        self.flush()
        self.pumps.clear()  # the client hears nothing more
        done = factory.closeAll(1001, "Server shutdown", 5)
        self.assertNoResult(done)
        self.clock.advance(5)
        self.assertIsNone(self.successResultOf(done))

    def test_counters(self) -> None:
        """
        The metrics' counters: a connect per attached connection, a
        disconnect by close code (the server's own codes included), a
        received message per valid one; a refused connection counts neither.
        """
        factory = self.makeFactory()
        counters = factory.router.counters
        alice = self.connect(factory, "id=1")
        bob = self.connect(factory, "id=2")
        self.connect(factory, "id=0")
        self.flush()
        self.assertEqual(counters.connects, 2)
        self.send(alice, {"type": "text", "text": "hi", "recipients": [2]})
        self.send(alice, {"type": "text", "text": "hi again", "recipients": [2]})
        self.assertEqual(counters.receivedWebsocket, 2)
        self.send(bob, {"type": 5})
        alice.sendClose(1000)
        self.flush()
        self.assertEqual(counters.receivedWebsocket, 2)
        self.assertEqual(counters.disconnects, {4001: 1, 1000: 1})

    def test_routingSampled(self) -> None:
        """
        One message in 16 is timed, from its receipt to the end of its
        routing.
        """
        factory = self.makeFactory()
        router = factory.router
        route = router.receive

        def slowly(connection: Any, payload: bytes) -> Any:
            self.clock.advance(0.003)
            return route(connection, payload)

        router.receive = slowly  # type: ignore[method-assign]
        alice = self.connect(factory, "id=1")
        self.connect(factory, "id=2")
        self.flush()
        for n in range(ROUTING_SAMPLE_MASK * 2 + 3):
            alice.sendMessage(orjson.dumps({"type": "text", "text": str(n), "recipients": [2]}))
        self.flush()
        expected = [0] * (len(ROUTING_BUCKETS) + 1)
        expected[ROUTING_BUCKETS.index(0.005)] = 2
        self.assertEqual(router.counters.routingBuckets, expected)
        self.assertAlmostEqual(router.counters.routingSum, 0.006)


class _TCPLikeTransport(StringTransport):
    """
    A string transport that, like TCP, lets a protocol unregister a
    producer it never registered (Autobahn does, as it drops a connection).
    """

    def unregisterProducer(self) -> None:
        self.producer = None


class PlainHTTPTests(SynchronousTestCase):
    """
    A plain HTTP request (no C{Upgrade}) to the WebSocket port: the demo
    page at C{/}, 404 elsewhere, and no answer that names a library.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self._loop = replace_loop(self.clock)
        self._loop.__enter__()
        self.addCleanup(self._loop.__exit__, None, None, None)

    def answer(self, target: str, requestHeaders: str = "", **server: Any) -> tuple[bytes, bool]:
        """
        The raw answer to C{GET target} (with the header lines
        C{requestHeaders} too), and whether the server closed the connection
        after it.
        """
        router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")))
        factory = ChatServerFactory(router, ServerConfig(**server), MessageConfig(), _NoAuth(), self.clock)
        protocol = factory.buildProtocol(None)
        transport = _TCPLikeTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8085\r\n{requestHeaders}\r\n".encode())
        return transport.value(), transport.disconnecting

    def test_demoPage(self) -> None:
        """
        C{GET /} (with a query too) answers the demo page, with its length,
        and closes; the page connects to the configured WebSocket path.
        """
        for target in ("/", "/?id=1&to=2"):
            raw, closed = self.answer(target, endpoint="/ws/chat")
            head, body = raw.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            self.assertEqual(lines[0], b"HTTP/1.1 200 OK")
            self.assertIn(b"Content-Type: text/html; charset=utf-8", lines)
            self.assertIn(b"Content-Length: %d" % len(body), lines)
            self.assertIn(b'var ENDPOINT = "/ws/chat";', body)
            self.assertTrue(closed)

    def test_endpointEscaped(self) -> None:
        """
        A path with C{</script>} in it cannot end the page's script.
        """
        raw, _ = self.answer("/", endpoint="/</script><b>")
        self.assertIn(b'var ENDPOINT = "/\\u003c/script>\\u003cb>";', raw)

    def test_otherPaths(self) -> None:
        """
        Any other path, the WebSocket path included (without an upgrade),
        is 404, and closed.
        """
        for target in ("/index.html", "/chat", "/chat?id=1", "/favicon.ico"):
            raw, closed = self.answer(target)
            self.assertEqual(raw, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                  b"Content-Length: 10\r\nConnection: close\r\n\r\nNot Found\n")
            self.assertTrue(closed)

    def test_noRedirect(self) -> None:
        """
        Autobahn's C{?redirect=} (a redirect to any site) is gone: 404.
        """
        raw, _ = self.answer("/x?redirect=http%3A%2F%2Fexample.com")
        self.assertTrue(raw.startswith(b"HTTP/1.1 404 Not Found\r\n"), raw)
        self.assertNotIn(b"Location", raw)

    def test_off(self) -> None:
        """
        With C{server.demoPage} off, C{/} is 404 too.
        """
        raw, _ = self.answer("/", demoPage=False)
        self.assertTrue(raw.startswith(b"HTTP/1.1 404 Not Found\r\n"), raw)

    def library(self, target: str = "/wsserver.js", requestHeaders: str = "", **server: Any) -> tuple[bytes, list[bytes], bytes]:
        """
        The status line, the header lines and the body of the answer to
        C{GET target}.
        """
        raw, closed = self.answer(target, requestHeaders, **server)
        self.assertTrue(closed)
        head, body = raw.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        return status, lines, body

    def test_clientLibrary(self) -> None:
        """
        C{GET /wsserver.js} answers the client library (the package's copy)
        as JavaScript, with its ETag, revalidated on each use, importable
        from any origin; with the demo page off too, and with a query.
        """
        expected = files("wsserver").joinpath("web", "wsserver.js").read_bytes()
        etag = b'"' + sha256(expected).hexdigest()[:32].encode() + b'"'
        for target, server in (("/wsserver.js", {}), ("/wsserver.js", {"demoPage": False}), ("/wsserver.js?v=2", {})):
            status, lines, body = self.library(target, **server)
            self.assertEqual(status, b"HTTP/1.1 200 OK")
            self.assertEqual(body, expected)
            for line in (b"Content-Type: text/javascript", b"Content-Length: %d" % len(expected), b"ETag: " + etag,
                         b"Cache-Control: no-cache", b"Access-Control-Allow-Origin: *",
                         b"X-Content-Type-Options: nosniff"):
                self.assertIn(line, lines, (target, server))

    def test_clientLibraryNotModified(self) -> None:
        """
        An C{If-None-Match} that names the library's ETag (weak or not,
        alone or in a list, or C{*}) gets 304 with no body and no length;
        another ETag gets the file.
        """
        _, lines, _ = self.library()
        etag = next(line for line in lines if line.startswith(b"ETag: "))[6:].decode()
        for given in (etag, "W/" + etag, f'"other", {etag}', "*"):
            status, lines, body = self.library(requestHeaders=f"If-None-Match: {given}\r\n")
            self.assertEqual((status, body), (b"HTTP/1.1 304 Not Modified", b""), given)
            self.assertIn(b"ETag: " + etag.encode(), lines)
            self.assertFalse([line for line in lines if line.lower().startswith(b"content-length")], lines)
        status, _, body = self.library(requestHeaders='If-None-Match: "other"\r\n')
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertTrue(body)

    def test_demoPageMayLoadTheLibrary(self) -> None:
        """
        The demo page's content security policy lets it load scripts from
        its own origin (the library), and still no other.
        """
        _, lines, _ = self.library("/")
        policy = next(line for line in lines if line.startswith(b"Content-Security-Policy: "))
        self.assertIn(b"script-src 'self' 'unsafe-inline';", policy)
        self.assertIn(b"default-src 'none';", policy)

    def test_namesNoLibrary(self) -> None:
        """
        Neither answer has a C{Server} header or names Autobahn.
        """
        for target in ("/", "/nothing"):
            raw, _ = self.answer(target)
            head = raw.split(b"\r\n\r\n", 1)[0].lower()
            self.assertNotIn(b"server:", head)
            self.assertNotIn(b"autobahn", raw.lower())


txaio.use_twisted()



class CloseTimerTests(Harness):
    """
    No timer outlives its connection.
    """

    def test_closeWaitCancelledWithConnection(self) -> None:
        """
        A connection that drops while the server waits for the answer to its
        close frame leaves no close-handshake timer behind (Autobahn's own
        clean-up forgets that one).
        """
        factory = self.makeFactory()
        client = self.connect(factory, "id=1")
        self.flush()
        server = client.serverSide
        server.session.close(4000, "bye")  # the close frame is written; no answer is read
        call = server.closeHandshakeTimeoutCall
        self.assertIsNotNone(call)
        # the network goes before the client could answer
        server.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(server.closeHandshakeTimeoutCall)
        self.clock.advance(60)  # nothing fires for the gone connection
        self.assertEqual(self.clock.getDelayedCalls(), [])
