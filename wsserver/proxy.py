# -*- test-case-name: tests.test_proxy -*-
"""
The client's address behind a load balancer (C{server.trustedProxies},
C{server.proxyProtocol}).

Behind a proxy every connection comes from the proxy's address, so every
per-IP limit and the auth-failure throttle would count all clients as one.
A connection or REST request from a I{trusted} proxy takes its client
address from the last untrusted address of C{X-Forwarded-For} (the one the
trusted chain received the request from), or, with the PROXY protocol, from
the header the proxy sent before the first byte of the client's data
(Twisted's own parser, L{twisted.protocols.haproxy.proxyEndpoint}).  From an
untrusted peer both are ignored: anybody can write such a header.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Sequence

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.haproxy import proxyEndpoint
from zope.interface import implementer

__all__ = ["ProxyProtocolEndpoint", "TrustedProxies", "TrustedProxyFactory", "parseTrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        # "[::1]:443", as some proxies write IPv6 with a port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        # "203.0.113.7:51000": an IPv4 address with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parseTrustedProxies(entries: Iterable[str]) -> TrustedProxies:
    """
    The trusted proxies from addresses and CIDR blocks
    (C{"10.0.0.0/8"}, C{"127.0.0.1"}, C{"::1"}).

    @raise ValueError: naming the first entry that is neither.
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR block: {entry!r}") from None
    return TrustedProxies(tuple(networks))


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TrustedProxies:
    """
    The peers whose forwarding headers are believed.
    """

    networks: tuple[_Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        """
        Whether the peer C{host} (an IP address as text) is a trusted proxy.
        """
        if not self.networks:
            return False
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def clientOf(self, peer: str, forwardedFor: Sequence[bytes | str] | None) -> str:
        """
        The client address of a request that came from C{peer} with these
        C{X-Forwarded-For} header values (each may list several addresses,
        comma-separated; several headers read as one list in order).

        From an untrusted peer, or without the header, the answer is
        C{peer}.  From a trusted one, the list is read from its end: each
        trusted proxy appended the address it received the request from, so
        the first address that is not a trusted proxy is the client's.  A
        malformed entry ends the walk: what stands before it cannot be
        believed, and the last believable address is the answer.
        """
        if not forwardedFor or not self.trusts(peer):
            return peer
        hops: list[str] = []
        for value in forwardedFor:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            hops.extend(part.strip() for part in text.split(","))
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return client
            client = str(address)
            if not any(address in network for network in self.networks):
                return client
        return client



class TrustedProxyFactory(Factory):
    """
    Builds a connection of a trusted proxy with C{proxy} (Twisted's PROXY
    protocol wrapper of C{plain}: the connection must begin with a PROXY v1
    or v2 header, which Twisted's parser reads, and the transport's
    C{getPeer} is the client it names; one without is dropped), and any
    other peer's with C{plain}, so that a PROXY header it sends is not
    believed (it reads as a malformed HTTP request).

    @param proxies: the trusted proxies in force (asked per connection, so
        that a reload applies).
    """

    def __init__(self, proxy: Factory, plain: Factory, proxies: Callable[[], TrustedProxies]) -> None:
        self._proxy = proxy
        self._plain = plain
        self._proxies = proxies

    def doStart(self) -> None:
        # (the wrapper starts the plain factory)
        self._proxy.doStart()

    def doStop(self) -> None:
        self._proxy.doStop()

    def logPrefix(self) -> str:
        return self._proxy.logPrefix()  # type: ignore[attr-defined,no-any-return]

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        host = getattr(addr, "host", None)
        if host is not None and self._proxies().trusts(host):
            return self._proxy.buildProtocol(addr)
        return self._plain.buildProtocol(addr)


@implementer(IStreamServerEndpoint)
class _Split:
    """
    The endpoint that L{proxyEndpoint} wraps: it is handed Twisted's PROXY
    wrapper of C{plain} and listens on C{endpoint} with a
    L{TrustedProxyFactory} of both.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, plain: Factory,
                 proxies: Callable[[], TrustedProxies]) -> None:
        self._endpoint = endpoint
        self._plain = plain
        self._proxies = proxies

    def listen(self, proxy: Factory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(TrustedProxyFactory(proxy, self._plain, self._proxies))


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """
    C{endpoint}, where the connections of trusted proxies begin with a
    PROXY header (C{server.proxyProtocol}): Twisted's
    L{twisted.protocols.haproxy.proxyEndpoint}, for trusted peers only
    (see L{TrustedProxyFactory}).
    """

    def __init__(self, endpoint: IStreamServerEndpoint, proxies: Callable[[], TrustedProxies]) -> None:
        self._endpoint = endpoint
        self._proxies = proxies

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint with C{factory}, behind Twisted's
        PROXY protocol wrapper for trusted peers.
        """
        split: Any = _Split(self._endpoint, factory, self._proxies)
        return proxyEndpoint(split).listen(factory)  # type: ignore[no-any-return]
