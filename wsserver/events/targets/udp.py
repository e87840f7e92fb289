# -*- test-case-name: tests.test_targets -*-
"""
The C{udp} event target (SPEC section 12): each event one datagram holding
its JSON, sent to C{address} (C{host:port}, the host an IP address) from
one port kept for the purpose.  Fire and forget: success is the datagram
handed to the kernel; an event over 65,000 bytes is refused (and counted).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import DatagramProtocol

from .base import ISection, KeyDoc

__all__ = ["KEYS", "MAX_DATAGRAM", "UdpOptions", "UdpRefused", "UdpSender", "parse", "sender"]

#: the largest event sent
MAX_DATAGRAM = 65000

#: the keys L{parse} reads
KEYS = (
    KeyDoc("address", "string", "", "(required) C{host:port} (C{[v6]:port}), the host an IP address; one "
           "datagram per message, over 65,000 bytes refused"),
)


class UdpRefused(Exception):
    """
    The datagram could not be sent (the delivery spends a retry).
    """


@attr.s(frozen=True, auto_attribs=True)
class UdpOptions:
    """
    The keys of a C{udp} target.
    """

    host: str
    port: int
    destination: str


def parse(section: ISection) -> UdpOptions | None:
    """
    C{address}: C{host:port} (C{[v6]:port} for IPv6), the host an IP
    address.
    """
    address = section.str("address", "")
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        ok = port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        section.error("address", "must be host:port with an IP address as the host (such as 127.0.0.1:9999)")
        return None
    return UdpOptions(host=host, port=int(port), destination=address)


class UdpSender:
    """
    Sends each event payload as one datagram.

    @param name: the target's key, for C{repr}.
    @param options: the target's keys.
    @param reactor: provides C{IReactorUDP}.
    """

    def __init__(self, name: str, options: UdpOptions, reactor: Any) -> None:
        self._name = name
        self._options = options
        self._address = (options.host, options.port)
        self._protocol = DatagramProtocol()
        interface = "::" if ":" in options.host else "0.0.0.0"
        self._port = reactor.listenUDP(0, self._protocol, interface=interface)

    def __repr__(self) -> str:
        return f"<UdpSender {self._name} {self._options.destination}>"

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Send one event.

        @return: fires once the datagram is sent; fails with L{UdpRefused}
            when it is too big or the kernel would not take it.
        """
        if len(payload) > MAX_DATAGRAM:
            return fail(UdpRefused(f"the event is {len(payload)} bytes, over {MAX_DATAGRAM}"))
        try:
            self._port.write(payload, self._address)
        except OSError as e:
            return fail(UdpRefused(f"not sent: {e.strerror or e}"))
        return succeed(None)

    def close(self) -> Deferred[None]:
        """
        Release the port.
        """
        d = self._port.stopListening()
        return d if isinstance(d, Deferred) else succeed(None)


def sender(name: str, options: UdpOptions, timeout: float, reactor: Any) -> UdpSender:
    """
    The sender of the C{udp} target C{name}.
    """
    return UdpSender(name, options, reactor)
