"""
Tests for L{wsserver.proxy}: which client address a request from a proxy
stands for.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wsserver.proxy import ProxyProtocolEndpoint, parseTrustedProxies


class TrustedProxiesTests(SynchronousTestCase):
    """
    L{wsserver.proxy.TrustedProxies}.
    """

    def setUp(self) -> None:
        self.trusted = parseTrustedProxies(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])

    def test_parseRefusesGarbage(self) -> None:
        """
        An entry that is neither an address nor a CIDR block is named.
        """
        with self.assertRaises(ValueError) as caught:
            parseTrustedProxies(["10.0.0.0/8", "proxy.example"])
        self.assertEqual(str(caught.exception), "not an address or CIDR block: 'proxy.example'")

    def test_trusts(self) -> None:
        """
        Addresses inside a block are trusted, others not; an IPv4 address
        mapped into IPv6 is the IPv4 address.
        """
        self.assertTrue(self.trusted.trusts("10.1.2.3"))
        self.assertTrue(self.trusted.trusts("127.0.0.1"))
        self.assertTrue(self.trusted.trusts("::ffff:10.0.0.1"))
        self.assertTrue(self.trusted.trusts("fd12::1"))
        self.assertFalse(self.trusted.trusts("127.0.0.2"))
        self.assertFalse(self.trusted.trusts("203.0.113.7"))
        self.assertFalse(self.trusted.trusts("not an address"))

    def test_noneTrustedByDefault(self) -> None:
        """
        With no trusted proxy, the header is ignored for everyone.
        """
        nobody = parseTrustedProxies([])
        self.assertFalse(nobody)
        self.assertEqual(nobody.clientOf("127.0.0.1", [b"203.0.113.7"]), "127.0.0.1")

    def test_untrustedPeerIgnored(self) -> None:
        """
        A header from an untrusted peer is ignored: the peer is the client.
        """
        self.assertEqual(self.trusted.clientOf("203.0.113.7", [b"198.51.100.1"]), "203.0.113.7")

    def test_lastUntrusted(self) -> None:
        """
        From a trusted peer, the last address that is not a trusted proxy is
        the client, whatever the client wrote before it.
        """
        header = [b"1.2.3.4, 198.51.100.9, 10.0.0.5"]
        self.assertEqual(self.trusted.clientOf("10.0.0.1", header), "198.51.100.9")

    def test_severalHeaders(self) -> None:
        """
        Several headers read as one list, in order.
        """
        self.assertEqual(self.trusted.clientOf("127.0.0.1", [b"198.51.100.9", b"10.0.0.7"]), "198.51.100.9")

    def test_allTrusted(self) -> None:
        """
        When every hop is a trusted proxy, the first of them is the client.
        """
        self.assertEqual(self.trusted.clientOf("10.0.0.1", [b"10.0.0.3, 10.0.0.2"]), "10.0.0.3")

    def test_malformedEndsTheWalk(self) -> None:
        """
        A malformed entry: the last believable address is the answer.
        """
        self.assertEqual(self.trusted.clientOf("10.0.0.1", [b"198.51.100.1, garbage, 10.0.0.2"]), "10.0.0.2")
        self.assertEqual(self.trusted.clientOf("10.0.0.1", [b"unknown"]), "10.0.0.1")

    def test_ports(self) -> None:
        """
        Addresses with a port (C{1.2.3.4:5678}, C{[2001:db8::1]:443}) are read
        without it.
        """
        self.assertEqual(self.trusted.clientOf("10.0.0.1", [b"198.51.100.1:5678"]), "198.51.100.1")
        self.assertEqual(self.trusted.clientOf("10.0.0.1", [b"[2001:db8::1]:443"]), "2001:db8::1")


class _Recorded(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ProxyProtocolEndpointTests(SynchronousTestCase):
    """
    L{ProxyProtocolEndpoint}: Twisted's PROXY wrapper for trusted peers
    only, with a L{MemoryReactor}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.trusted = parseTrustedProxies(["10.0.0.1"])
        endpoint = ProxyProtocolEndpoint(TCP4ServerEndpoint(self.reactor, 8085), lambda: self.trusted)
        endpoint.listen(Factory.forProtocol(_Recorded))
        self.factory = self.reactor.tcpServers[0][1]

    def connect(self, host: str, data: bytes) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return protocol, transport

    def test_trustedPeer(self) -> None:
        """
        A trusted peer's PROXY header names the client, and what follows it
        reaches the protocol.
        """
        wrapper, _ = self.connect("10.0.0.1", b"PROXY TCP4 203.0.113.7 10.0.0.9 5000 8085\r\nGET /")
        self.assertEqual(wrapper.getPeer().host, "203.0.113.7")
        self.assertEqual(wrapper.wrappedProtocol.data, b"GET /")

    def test_trustedPeerWithoutHeader(self) -> None:
        """
        A trusted peer's connection without the header is dropped.
        """
        _, transport = self.connect("10.0.0.1", b"GET /chat HTTP/1.1\r\n")
        self.assertTrue(transport.disconnecting)

    def test_untrustedPeer(self) -> None:
        """
        Another peer's connection is not wrapped: its PROXY header is data.
        """
        protocol, transport = self.connect("203.0.113.9", b"PROXY TCP4 203.0.113.7 10.0.0.9 5000 8085\r\n")
        self.assertIsInstance(protocol, _Recorded)
        self.assertEqual(protocol.data, b"PROXY TCP4 203.0.113.7 10.0.0.9 5000 8085\r\n")
        self.assertEqual(transport.getPeer().host, "203.0.113.9")

    def test_reloadApplies(self) -> None:
        """
        The trusted proxies are asked per connection.
        """
        self.trusted = parseTrustedProxies(["203.0.113.9"])
        wrapper, _ = self.connect("203.0.113.9", b"PROXY TCP4 203.0.113.7 10.0.0.9 5000 8085\r\n")
        self.assertEqual(wrapper.getPeer().host, "203.0.113.7")
