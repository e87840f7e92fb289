# -*- test-case-name: tests.test_config,tests.test_limits -*-
"""
The C{server.limits} section of the configuration: L{LimitsConfig} and its
parser.

The state machines that enforce the limits are in L{wsserver.limits}, which
imports the configuration; this module imports only the shared machinery
(L{wsserver.configschema}), so that L{wsserver.config} can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configschema import _Section, parseSize

__all__ = ["LimitsConfig", "parseLimits"]


@dataclass(frozen=True)
class LimitsConfig:
    """
    C{server.limits}: bounds that keep one client (or one address) from
    taking the server down.  Each is a number; 0 turns it off.  The
    defaults are safe for a server on the open internet.
    """

    #: open connections in all; more: HTTP 503 at the handshake
    maxConnections: int = 100000
    #: open connections from one client address; more: HTTP 429
    maxConnectionsPerIp: int = 0
    #: connections of one user; more: the new one is closed with 4008
    maxConnectionsPerUser: int = 100
    #: per connection, a token bucket (rate, size); over it: 4029
    messagesPerSecond: float = 0
    burst: int = 50
    #: recipients of one message; more: 4001 / 400
    maxRecipients: int = 10000
    #: bytes kept for one connection that the network does not take; more: 4011
    sendBufferBytes: int = 4 * 1024 * 1024
    #: seconds a client closed as a slow consumer has to read its frames and
    #: the 4011 close frame and answer it; then the connection is aborted
    closeGraceSeconds: float = 10
    #: seconds for the opening handshake and the auth check
    handshakeTimeoutSeconds: float = 10
    #: statistics of users with no connection kept, least recently seen dropped first
    maxTrackedUsers: int = 1000000
    #: failed auth checks per client address and minute; more: HTTP 429
    authFailuresPerMinute: int = 30
    #: bytes a connection may send before its auth check passed; more: 1008
    preAuthBytes: int = 64 * 1024
    #: seconds for a REST request or a handshake request to arrive whole
    requestTimeoutSeconds: float = 30

    @classmethod
    def off(cls) -> LimitsConfig:
        """
        Every limit turned off (for benchmarks and tests).
        """
        return cls(**{name: 0 for name in cls.__dataclass_fields__})



def parseLimits(sect: _Section) -> LimitsConfig:
    """
    C{server.limits}: integers, seconds, and sizes (as C{maxSize}); 0 turns
    a limit off.
    """
    default = LimitsConfig()

    def size(name: str) -> int:
        value: int = getattr(default, name)
        if sect.has(name):
            try:
                value = parseSize(sect.raw[name])
            except ValueError as e:
                sect.error(name, str(e))
        return value

    burst = sect.int("burst", default.burst, 0)
    rate = sect.number("messagesPerSecond", default.messagesPerSecond, 0)
    if rate and burst < 1:
        sect.error("burst", "must be at least 1 when messagesPerSecond is set")
    limits = LimitsConfig(
        maxConnections=sect.int("maxConnections", default.maxConnections, 0),
        maxConnectionsPerIp=sect.int("maxConnectionsPerIp", default.maxConnectionsPerIp, 0),
        maxConnectionsPerUser=sect.int("maxConnectionsPerUser", default.maxConnectionsPerUser, 0),
        messagesPerSecond=rate,
        burst=burst,
        maxRecipients=sect.int("maxRecipients", default.maxRecipients, 0),
        sendBufferBytes=size("sendBufferBytes"),
        closeGraceSeconds=sect.number("closeGraceSeconds", default.closeGraceSeconds, 0),
        handshakeTimeoutSeconds=sect.number("handshakeTimeoutSeconds", default.handshakeTimeoutSeconds, 0),
        maxTrackedUsers=sect.int("maxTrackedUsers", default.maxTrackedUsers, 0),
        authFailuresPerMinute=sect.int("authFailuresPerMinute", default.authFailuresPerMinute, 0),
        preAuthBytes=size("preAuthBytes"),
        requestTimeoutSeconds=sect.number("requestTimeoutSeconds", default.requestTimeoutSeconds, 0),
    )
    sect.finish()
    return limits
