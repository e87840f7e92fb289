# -*- test-case-name: tests.test_redis -*-
"""
Where Redis is: the address, the C{redis://} / C{unix://} URL parser, and
the one endpoint builder (TCP by IPv4, IPv6 or host name, or a UNIX socket).

Imports no Twisted networking at module level: the config parser uses it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attr

__all__ = ["RedisAddress", "parseRedisURL"]


@attr.s(auto_attribs=True, frozen=True)
class RedisAddress:
    """
    Where Redis is, and how to log in to it.

    @ivar address: a host name, IPv4 or IPv6 address (ignored with C{unixSocket}).
    @ivar port: its TCP port.
    @ivar unixSocket: a UNIX socket path, or C{""}.
    @ivar database: the database to C{SELECT} (0: none).
    @ivar password: the password to C{AUTH} with, or C{""}.
    """

    address: str = "127.0.0.1"
    port: int = 6379
    unixSocket: str = ""
    database: int = 0
    password: str = ""

    def __str__(self) -> str:
        if self.unixSocket:
            return f"unix:{self.unixSocket}"
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def endpoint(self, reactor: Any, timeout: float) -> Any:
        """
        A client endpoint that reaches this Redis, connecting within
        C{timeout} seconds.
        """
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
            UNIXClientEndpoint,
        )

        if self.unixSocket:
            return UNIXClientEndpoint(reactor, self.unixSocket, timeout=timeout)
        if isIPAddress(self.address):
            return TCP4ClientEndpoint(reactor, self.address, self.port, timeout=timeout)
        if isIPv6Address(self.address):
            return TCP6ClientEndpoint(reactor, self.address, self.port, timeout=timeout)
        return HostnameEndpoint(reactor, self.address, self.port, timeout=timeout)


def parseRedisURL(url: str) -> RedisAddress:
    """
    Parse a C{redis://[:password@]host[:port][/db]} or C{unix:///path?db=N}
    URL (C{cluster.redis}).

    @raise ValueError: for a URL that is not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = parse_qs(parts.query)
        return RedisAddress(unixSocket=unquote(parts.path), database=int(query.get("db", ["0"])[0]),
                            password=unquote(parts.password or ""))
    if parts.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    path = parts.path.strip("/")
    return RedisAddress(
        address=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        database=int(path) if path else 0,
        password=unquote(parts.password or ""),
    )
