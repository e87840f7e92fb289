"""
End-to-end tests of C{server.trustedProxies} and C{server.proxyProtocol}:
the real server on loopback, raw sockets that write C{X-Forwarded-For} and
PROXY v1 and v2 headers, from a trusted peer (127.0.0.1 listed) and from an
untrusted one (127.0.0.1 not listed).
"""

from __future__ import annotations

import base64
import socket
import struct
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from .support import closeClient, openClient, restRequest, startServer

#: the clients behind the proxy
ALICE, BOB = "203.0.113.7", "203.0.113.8"


def proxyV1(source: str) -> bytes:
    """
    A PROXY protocol v1 header for a TCP4 client at C{source}.
    """
    return f"PROXY TCP4 {source} 127.0.0.1 50000 8085\r\n".encode()


def proxyV2(source: str) -> bytes:
    """
    A PROXY protocol v2 header (PROXY command, TCP over IPv4) for a client
    at C{source}.
    """
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 50000, 8085)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes((0x21, 0x11)) + struct.pack("!H", len(addresses)) + addresses


class _Handshake(Protocol):
    """
    Writes C{head} (a PROXY header, or nothing) and a WebSocket handshake
    request in one write; C{status} fires with the HTTP status of the
    answer (0 when the connection closed without one).
    """

    def __init__(self, head: bytes, userId: int, forwardedFor: str | None) -> None:
        self.head = head
        self.userId = userId
        self.forwardedFor = forwardedFor
        self.received = b""
        self.status: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        lines = [
            f"GET /chat?id={self.userId} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(b'0123456789abcdef').decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.forwardedFor is not None:
            lines.append(f"X-Forwarded-For: {self.forwardedFor}")
        self.transport.write(self.head + ("\r\n".join(lines) + "\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n" in self.received and not self.status.called:
            self.status.callback(int(self.received.split(b" ", 2)[1]))

    def connectionLost(self, reason: Any) -> None:
        if not self.status.called:
            self.status.callback(0)


@inlineCallbacks
def handshake(test: TestCase, server: Any, userId: int, head: bytes = b"", forwardedFor: str | None = None) -> Any:
    """
    A raw handshake; the answer's HTTP status.  An open connection is
    closed at the test's end.
    """
    client = _Handshake(head, userId, forwardedFor)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.wsPort), client)
    test.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
    status = yield client.status
    return status


def addresses(server: Any) -> list[str]:
    """
    The client addresses of the server's open connections, sorted.
    """
    return sorted(p.session.address for p in server.service.ws.factory.live)


class ForwardedForTests(TestCase):
    """
    C{X-Forwarded-For} on the WebSocket and the REST API.
    """

    timeout = 30

    @inlineCallbacks
    def test_trustedPeer(self) -> None:
        """
        From a trusted proxy, each client behind it has its own
        C{maxConnectionsPerIp}.
        """
        server = yield startServer(self, {"server": {"trustedProxies": ["127.0.0.1"],
                                                     "limits": {"maxConnectionsPerIp": 1}}})
        self.assertEqual((yield handshake(self, server, 1, forwardedFor=ALICE)), 101)
        self.assertEqual((yield handshake(self, server, 2, forwardedFor=f"198.51.100.1, {BOB}")), 101)
        self.assertEqual((yield handshake(self, server, 3, forwardedFor=ALICE)), 429)
        self.assertEqual(addresses(server), [ALICE, BOB])

    @inlineCallbacks
    def test_untrustedPeer(self) -> None:
        """
        From a peer that is not a trusted proxy the header is ignored: two
        "clients" are one address.
        """
        server = yield startServer(self, {"server": {"trustedProxies": ["10.0.0.0/8"],
                                                     "limits": {"maxConnectionsPerIp": 1}}})
        self.assertEqual((yield handshake(self, server, 1, forwardedFor=ALICE)), 101)
        self.assertEqual((yield handshake(self, server, 2, forwardedFor=BOB)), 429)
        self.assertEqual(addresses(server), ["127.0.0.1"])

    @inlineCallbacks
    def test_authThrottleAndLogs(self) -> None:
        """
        The auth-failure throttle counts the client behind the proxy, on the
        WebSocket and the REST API together, and the log names it.
        """
        auth = {"type": "header", "name": "X-Token", "value": "good"}
        server = yield startServer(self, {
            "server": {"auth": auth, "trustedProxies": ["127.0.0.1"], "limits": {"authFailuresPerMinute": 1}},
            "restApi": {"auth": auth},
        })
        with capturedLogs() as events:
            client = yield openClient(server, userId=1, headers={"X-Token": "bad", "X-Forwarded-For": ALICE})
            self.assertEqual((yield client.closed), (4050, "Unauthorized"))
        self.assertIn(f"auth failed for user 1 from {ALICE} (via tcp4:127.0.0.1:",
                      "\n".join(formatEvent(e) for e in events))
        # Alice is throttled, on the REST API too, the right token included
        response = yield restRequest(server, "GET", "/check-online?id=1",
                                     headers={"X-Token": ["good"], "X-Forwarded-For": [ALICE]})
        self.assertEqual(response.code, 429)
        self.assertEqual(orjson.loads((yield response.content())),
                         {"success": False, "status": 429, "message": "Too many failed authentications"})
        # Bob, behind the same proxy, is not
        response = yield restRequest(server, "GET", "/check-online?id=1",
                                     headers={"X-Token": ["good"], "X-Forwarded-For": [BOB]})
        self.assertEqual(response.code, 200)
        yield response.content()
        bob = yield openClient(server, userId=2, headers={"X-Token": "good", "X-Forwarded-For": BOB})
        yield closeClient(bob)

    @inlineCallbacks
    def test_restUntrusted(self) -> None:
        """
        On the REST API too, the header of an untrusted peer is ignored: its
        failures count for its own address.
        """
        auth = {"type": "header", "name": "X-Token", "value": "good"}
        server = yield startServer(self, {
            "server": {"trustedProxies": ["10.0.0.0/8"], "limits": {"authFailuresPerMinute": 1}},
            "restApi": {"auth": auth},
        })
        response = yield restRequest(server, "GET", "/check-online?id=1",
                                     headers={"X-Token": ["bad"], "X-Forwarded-For": [ALICE]})
        self.assertEqual(response.code, 401)
        yield response.content()
        response = yield restRequest(server, "GET", "/check-online?id=1",
                                     headers={"X-Token": ["good"], "X-Forwarded-For": [BOB]})
        self.assertEqual(response.code, 429)
        yield response.content()


class ProxyProtocolTests(TestCase):
    """
    C{server.proxyProtocol}: PROXY v1 and v2 headers, read by Twisted's
    parser.
    """

    timeout = 30

    def start(self, trusted: list[str]) -> Deferred[Any]:
        return startServer(self, {"server": {"trustedProxies": trusted, "proxyProtocol": True,
                                             "limits": {"maxConnectionsPerIp": 1}}})

    @inlineCallbacks
    def trustedPeer(self, header: Any) -> Any:
        server = yield self.start(["127.0.0.1"])
        self.assertEqual((yield handshake(self, server, 1, header(ALICE))), 101)
        self.assertEqual((yield handshake(self, server, 2, header(BOB))), 101)
        self.assertEqual((yield handshake(self, server, 3, header(ALICE))), 429)
        self.assertEqual(addresses(server), [ALICE, BOB])
        # a trusted peer's connection without the header is dropped
        self.assertEqual((yield handshake(self, server, 4)), 0)

    def test_v1Trusted(self) -> Deferred[Any]:
        """
        From a trusted proxy, the PROXY v1 header names the client: each has
        its own C{maxConnectionsPerIp}.
        """
        return self.trustedPeer(proxyV1)

    def test_v2Trusted(self) -> Deferred[Any]:
        """
        The same with the binary PROXY v2 header.
        """
        return self.trustedPeer(proxyV2)

    @inlineCallbacks
    def untrustedPeer(self, header: Any) -> Any:
        server = yield self.start(["10.0.0.0/8"])
        # the header is not read: it is a malformed request
        self.assertEqual((yield handshake(self, server, 1, header(ALICE))), 400)
        # the peer's own connections are plain HTTP, counted for its address
        self.assertEqual((yield handshake(self, server, 2)), 101)
        self.assertEqual((yield handshake(self, server, 3)), 429)
        self.assertEqual(addresses(server), ["127.0.0.1"])

    def test_v1Untrusted(self) -> Deferred[Any]:
        """
        From a peer that is not a trusted proxy, a PROXY v1 header is not
        believed.
        """
        return self.untrustedPeer(proxyV1)

    def test_v2Untrusted(self) -> Deferred[Any]:
        """
        Nor a PROXY v2 header.
        """
        return self.untrustedPeer(proxyV2)

    @inlineCallbacks
    def test_chatThrough(self) -> None:
        """
        Behind the PROXY header the connection gets its messages as any
        other (the wrapper passes the frames on).
        """
        server = yield self.start(["127.0.0.1"])
        client = _Handshake(proxyV1(ALICE), 1, None)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.wsPort), client)
        self.assertEqual((yield client.status), 101)
        response = yield restRequest(server, "POST", "/send-message", headers={"Content-Type": ["application/json"]},
                                     data=orjson.dumps({"type": "text", "recipients": [1], "text": "hi"}))
        self.assertEqual(response.code, 202)
        yield response.content()
        while b'"hi"' not in client.received:
            yield _turn()
        client.transport.abortConnection()


def _turn() -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, 0.01, lambda: None)
