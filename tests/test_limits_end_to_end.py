"""
End-to-end tests of C{server.limits}: the real server on loopback, real
sockets, a client that stops reading.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from .support import closeClient, openClient, restRequest, startServer

JSON = {"Content-Type": ["application/json"]}


def handshake(server: Any, query: str = "id=1", headers: dict[str, str] | None = None) -> Deferred[Any]:
    """
    A WebSocket handshake request made with treq, to see the HTTP status
    of a refusal.
    """
    h = {
        "Upgrade": ["websocket"],
        "Connection": ["Upgrade"],
        "Sec-WebSocket-Key": [base64.b64encode(b"0123456789abcdef").decode()],
        "Sec-WebSocket-Version": ["13"],
    }
    for k, v in (headers or {}).items():
        h[k] = [v]
    return treq.get(f"http://127.0.0.1:{server.wsPort}/chat?{query}", headers=h, persistent=False)


class _Raw(Protocol):
    """
    A raw TCP client: what it received, and when the server closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


def rawConnect(port: int) -> Deferred[_Raw]:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Raw())


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class HandshakeLimitsTests(TestCase):
    """
    Refusals at the handshake, over real sockets.
    """

    timeout = 30

    @inlineCallbacks
    def test_maxConnections(self) -> None:
        """
        Past C{maxConnections} a handshake gets HTTP 503; the connected users
        keep chatting.
        """
        server = yield startServer(self, {"server": {"limits": {"maxConnections": 2}}})
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        response = yield handshake(server, "id=3")
        self.assertEqual(response.code, 503)
        yield response.content()
        alice.send({"type": "text", "text": "hi", "recipients": [2]})
        message = yield bob.messages.get()
        self.assertEqual(message["text"], "hi")
        yield closeClient(alice)
        yield closeClient(bob)

    @inlineCallbacks
    def test_maxConnectionsPerIp(self) -> None:
        """
        Past C{maxConnectionsPerIp} from one address, a handshake gets HTTP
        429.
        """
        server = yield startServer(self, {"server": {"limits": {"maxConnectionsPerIp": 1}}})
        alice = yield openClient(server, userId=1)
        response = yield handshake(server, "id=2")
        self.assertEqual(response.code, 429)
        yield response.content()
        yield closeClient(alice)
        yield sleep(0.1)
        bob = yield openClient(server, userId=2)
        yield closeClient(bob)

    @inlineCallbacks
    def test_authFailuresWebSocketAndRest(self) -> None:
        """
        Auth failures count per address on the WebSocket and the REST API
        together: past C{authFailuresPerMinute}, both answer 429, the right
        credentials included.
        """
        auth = {"type": "header", "name": "X-Token", "value": "good"}
        server = yield startServer(self, {
            "server": {"auth": auth, "limits": {"authFailuresPerMinute": 2}},
            "restApi": {"auth": auth},
        })
        client = yield openClient(server, userId=1, headers={"X-Token": "bad"})
        code, reason = yield client.closed
        self.assertEqual((code, reason), (4050, "Unauthorized"))
        response = yield restRequest(server, "GET", "/check-online?id=1", headers={"X-Token": ["bad"]})
        self.assertEqual(response.code, 401)
        yield response.content()
        response = yield restRequest(server, "GET", "/check-online?id=1", headers={"X-Token": ["good"]})
        self.assertEqual(response.code, 429)
        self.assertEqual(orjson.loads((yield response.content())),
                         {"success": False, "status": 429, "message": "Too many failed authentications"})
        response = yield handshake(server, "id=1", headers={"X-Token": "good"})
        self.assertEqual(response.code, 429)
        yield response.content()

    @inlineCallbacks
    def test_cookieAuthRefusesBrowsers(self) -> None:
        """
        Cookie auth with no C{allowedOrigins}: a handshake with an C{Origin}
        gets 403.
        """
        server = yield startServer(self, {"server": {"auth": {"type": "cookie", "name": "sid", "value": "s"}}})
        response = yield handshake(server, headers={"Cookie": "sid=s", "Origin": "https://other.example"})
        self.assertEqual(response.code, 403)
        yield response.content()
        client = yield openClient(server, userId=1, headers={"Cookie": "sid=s"})
        yield closeClient(client)

    @inlineCallbacks
    def test_requestTooLarge(self) -> None:
        """
        A handshake request over 16 KiB gets 431 and is closed.
        """
        server = yield startServer(self)
        raw = yield rawConnect(server.wsPort)
        raw.transport.write(b"GET /chat?id=1 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000)
        yield raw.lost
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 431 "), raw.received[:40])

    @inlineCallbacks
    def test_slowHandshakeDropped(self) -> None:
        """
        A connection that has not finished its handshake within
        C{handshakeTimeoutSeconds} is dropped.
        """
        server = yield startServer(self, {"server": {"limits": {"handshakeTimeoutSeconds": 0.5}}})
        raw = yield rawConnect(server.wsPort)
        raw.transport.write(b"GET /chat?id=1 HTTP/1.1\r\n")
        start = reactor.seconds()
        yield raw.lost
        self.assertLess(reactor.seconds() - start, 5)
        self.assertEqual(raw.received, b"")


class RestLimitsTests(TestCase):
    """
    The REST API's request limits, over real sockets.
    """

    timeout = 30

    @inlineCallbacks
    def test_slowRequestDropped(self) -> None:
        """
        A request that has not arrived whole within C{requestTimeoutSeconds}
        is dropped.
        """
        server = yield startServer(self, {"server": {"limits": {"requestTimeoutSeconds": 0.5}}})
        raw = yield rawConnect(server.restPort)
        raw.transport.write(b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        start = reactor.seconds()
        yield raw.lost
        self.assertLess(reactor.seconds() - start, 5)
        self.assertEqual(raw.received, b"")

    @inlineCallbacks
    def test_tooLargeClosed(self) -> None:
        """
        A body over C{maxSize} gets 413 as soon as its length is known, and
        the connection is closed without the body being sent.
        """
        server = yield startServer(self, {"chat": {"message": {"maxSize": "1K"}}})
        raw = yield rawConnect(server.restPort)
        raw.transport.write(b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100000000\r\n\r\n")
        yield raw.lost
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 413 "), raw.received[:40])


class SlowConsumerTests(TestCase):
    """
    C{sendBufferBytes} against a client that stops reading.
    """

    timeout = 120

    def buffered(self, server: Any, userId: int) -> int:
        """
        The bytes the server holds for C{userId}'s connections: its own
        kept frames and its transport's buffer.
        """
        total = 0
        for protocol in server.service.ws.factory.live:
            if protocol.session.userId == userId:
                transport = protocol.transport
                total += protocol.session._heldBytes + len(transport.dataBuffer) - transport.offset
                total += transport._tempDataLen
        return total

    @inlineCallbacks
    def test_100MBToAStalledReader(self) -> None:
        """
        100 MB sent to a client that stopped reading cost the server at most
        about C{sendBufferBytes} plus one message and the transport's own
        buffer; the client is closed with 4011 C{Slow consumer}; another
        recipient gets every message meanwhile.
        """
        limit = 1024 * 1024
        server = yield startServer(self, {"server": {"limits": {"sendBufferBytes": limit}}})
        slow = yield openClient(server, userId=1)
        fast = yield openClient(server, userId=2)
        slow.transport.pauseProducing()
        text = "x" * (1024 * 1024 - 200)
        peak = 0
        resumed = False
        for i in range(100):
            response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                         data=orjson.dumps({"type": "t", "text": text, "recipients": [1, 2]}))
            self.assertEqual(response.code, 202)
            yield response.content()
            message = yield fast.messages.get()
            self.assertEqual(len(message["text"]), len(text))
            peak = max(peak, self.buffered(server, 1))
            if not resumed and server.service.limits.limitCloses["sendBufferBytes"]:
                # closed: read what was written before the close frame
                resumed = True
                slow.transport.resumeProducing()
        self.assertTrue(resumed)
        self.assertLess(peak, limit + 1024 * 1024 + 128 * 1024)
        code, reason = yield slow.closed
        self.assertEqual((code, reason), (4011, "Slow consumer"))
        self.assertEqual(fast.messages.pending, [])
        yield closeClient(fast)
        # counted for the metrics
        response = yield restRequest(server, "GET", "/metrics")
        self.assertIn(b'wsserver_limit_closes_total{limit="sendBufferBytes"} 1.0', (yield response.content()))

    @inlineCallbacks
    def test_nothingLost(self) -> None:
        """
        With the undelivered queue on, what the slow client received before
        its close and what was kept for it add up to every message, each
        at least once, in order: what its kernel had not acknowledged when
        the close was decided is kept, and comes again.
        """
        server = yield startServer(self, {
            "server": {"limits": {"sendBufferBytes": "256K"}},
            "chat": {"enableUndeliveredQueue": True},
        })
        slow = yield openClient(server, userId=1)
        slow.transport.pauseProducing()
        text = "y" * (64 * 1024)
        # (more than the kernel's socket buffers take)
        count = 400
        resumed = False
        for i in range(count):
            response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                         data=orjson.dumps({"type": "t", "text": text, "data": i, "recipients": [1]}))
            yield response.content()
            if not resumed and server.service.limits.limitCloses["sendBufferBytes"]:
                # it reads again (in time to answer the close frame)
                resumed = True
                slow.transport.resumeProducing()
        self.assertTrue(resumed)
        code, reason = yield slow.closed
        self.assertEqual((code, reason), (4011, "Slow consumer"))
        first = []
        while slow.messages.pending:
            first.append((yield slow.messages.get())["data"])
        again = yield openClient(server, userId=1)
        later = []
        while set(range(count)) - set(first) - set(later):
            later.append((yield again.messages.get())["data"])
        self.assertEqual(first, list(range(len(first))))
        self.assertEqual(later, list(range(later[0], count)))
        self.assertLessEqual(later[0], len(first))
        self.assertGreater(len(later), 0)
        yield closeClient(again)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The server's (unmasked) frames in C{data}: (opcode, payload), up to the
    last whole one.
    """
    frames = []
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        start = i + 2
        if length == 126:
            length, start = int.from_bytes(data[start:start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start:start + 8], "big"), start + 8
        if start + length > len(data):
            break
        frames.append((opcode, data[start:start + length]))
        i = start + length
    return frames


class PingingReaderTests(TestCase):
    """
    Pongs count toward C{sendBufferBytes} like every other frame.
    """

    timeout = 120

    @inlineCallbacks
    def test_pingsNeverRead(self) -> None:
        """
        A raw client that sends pings and never reads is a slow consumer:
        once the pongs waiting for it pass C{sendBufferBytes} it is closed
        with 4011; when it reads again it finds every pong it was sent, in
        order, and then the close.
        """
        server = yield startServer(self, {"server": {"limits": {"sendBufferBytes": "64K"}}})
        client = yield rawConnect(server.wsPort)
        key = base64.b64encode(b"0123456789abcdef").decode()
        client.transport.write((f"GET /chat?id=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                                f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in client.received:
            yield sleep(0.01)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "))
        client.received = client.received.split(b"\r\n\r\n", 1)[1]
        client.transport.pauseProducing()
        # masked with a zero key: the payload as is
        pings = b"".join(b"\x89\xfd\x00\x00\x00\x00" + i.to_bytes(4, "big") + b"p" * 121 for i in range(1000))
        sent = 0
        limits = server.service.limits
        while not limits.limitCloses["sendBufferBytes"] and sent < 500:
            client.transport.write(pings)
            sent += 1
            yield sleep(0.005)
        self.assertEqual(limits.limitCloses["sendBufferBytes"], 1)
        client.transport.resumeProducing()
        while not any(opcode == 0x8 for opcode, _ in _frames(client.received)):
            yield sleep(0.01)
        frames = _frames(client.received)
        close = frames.index(next(f for f in frames if f[0] == 0x8))
        pongs = frames[:close]
        self.assertEqual({opcode for opcode, _ in pongs}, {0xA})
        self.assertEqual([int.from_bytes(payload[:4], "big") for _, payload in pongs],
                         [i % 1000 for i in range(len(pongs))])
        code = int.from_bytes(frames[close][1][:2], "big")
        self.assertEqual((code, frames[close][1][2:]), (4011, b"Slow consumer"))
        client.transport.abortConnection()
