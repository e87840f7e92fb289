# -*- test-case-name: tests.test_limits -*-
"""
The state behind C{server.limits} (SPEC section 8): transport-free state
machines that the WebSocket protocol and the REST API consult.

Each one takes the clock it runs on (an L{IReactorTime}) and knows no
transport, so that the rules have unit tests with a L{task.Clock}:

  - L{TokenBucket}: C{messagesPerSecond} and C{burst}, one per connection;
    a few float operations per message, no timer;
  - L{AddressCounter}: open connections per client address;
  - L{AuthFailures}: failed auth checks per client address and minute,
    shared by the WebSocket side and the REST API;
  - L{RefusalLog}: a log line per kind of refusal at most once a second,
    with the count since the previous line, so that a flood cannot fill the
    disk.

L{Limits} holds them for one server, with the counters that metrics read:
C{limitCloses[limit]} (connections closed for a limit) and
C{refusals[kind]} (connections and requests refused).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer


from .proxy import TrustedProxies, parseTrustedProxies
from .config import Config
from .limitsconfig import LimitsConfig
from .reloadable import IReloadable

__all__ = ["FILE_RESERVE", "AddressCounter", "AuthFailures", "ConnectionCeiling", "Limits", "RefusalLog",
           "TokenBucket", "acceptCeiling", "connectionCeiling"]

#: The window of C{authFailuresPerMinute}, in seconds.
AUTH_WINDOW = 60.0


#: Open files kept for what is not a WebSocket connection (REST connections,
#: Redis, the database, log files) when C{maxConnections} is fitted to the
#: open files limit.
FILE_RESERVE = 256


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ConnectionCeiling:
    """
    C{maxConnections} fitted to the open files limit: the value in force,
    and the start-up line that says so (a warning when an explicit value
    was lowered).
    """

    maxConnections: int
    warning: bool
    text: str


def connectionCeiling(configured: int, openFiles: int) -> ConnectionCeiling:
    """
    The C{maxConnections} in force for C{configured} under an open files
    limit of C{openFiles}: at most C{openFiles} less L{FILE_RESERVE} (half
    of a small limit), so that a connection flood meets HTTP 503, not
    C{EMFILE} in C{accept} (which would also starve the REST API, Redis and
    the database of files).  The default is lowered silently; an explicit
    value above the limit is lowered with a warning.  0 stays off.
    """
    ceiling = max(openFiles - FILE_RESERVE, openFiles // 2)
    kept = openFiles - ceiling
    key = "server.limits.maxConnections"
    if not configured:
        return ConnectionCeiling(0, False, f"{key}: 0 (off): past the open files limit ({openFiles}) the "
                                           "kernel refuses connections")
    if configured <= ceiling:
        return ConnectionCeiling(configured, False, f"{key}: {configured} (the open files limit, {openFiles}, "
                                                    f"allows {ceiling})")
    why = f"the open files limit is {openFiles} and {kept} are kept for REST, Redis and files"
    if configured == LimitsConfig().maxConnections:
        return ConnectionCeiling(ceiling, False, f"{key}: {ceiling}: {why}")
    return ConnectionCeiling(ceiling, True, f"{key}: {configured} lowered to {ceiling}: {why}; raise the limit "
                                            "(LimitNOFILE= in the systemd unit, ulimit -n) to allow more")


def acceptCeiling(openFiles: int) -> int:
    """
    The most connections the WebSocket port holds at once, opening
    handshake done or not, under an open files limit of C{openFiles}: the
    ceiling of C{maxConnections} (see L{connectionCeiling}) and a quarter of
    the files kept apart.  The first connections over C{maxConnections}
    still get their HTTP 503; past this, a connection is closed as it is
    accepted, so that a flood of connections that never send a handshake
    cannot take the files REST, Redis and the database need.
    """
    ceiling = max(openFiles - FILE_RESERVE, openFiles // 2)
    return ceiling + (openFiles - ceiling) // 4


class TokenBucket:
    """
    A token bucket: C{rate} tokens a second, at most C{burst} kept; each
    message takes one.
    """

    __slots__ = ("_rate", "_burst", "_tokens", "_last", "_clock")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock.seconds()

    def take(self) -> bool:
        """
        Take a token for one message; C{False} when none is left (the
        message is over the rate).
        """
        now = self._clock.seconds()
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 0.999999:  # (float sums of tiny steps fall short of 1.0)
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class AddressCounter:
    """
    Open connections per client address, at most C{limit} each (0: no
    limit, nothing is counted).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """
        Count a new connection from C{address}; C{False} (and nothing
        counted) when the address already has C{limit}.
        """
        if not self.limit:
            return True
        count = self._counts.get(address, 0)
        if count >= self.limit:
            return False
        self._counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """
        A connection that L{acquire} counted is gone.
        """
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        """
        The connections counted for C{address}.
        """
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        return len(self._counts)


class AuthFailures:
    """
    Failed auth checks per client address: after C{limit} failures within
    a minute (counted from the first one), the address is blocked until
    that minute has passed, whatever it sends.  Entries of addresses whose
    minute has passed are dropped as new ones come, so that the memory stays
    bounded by the addresses that failed in the last minute.
    """

    def __init__(self, limit: int, clock: IReactorTime, window: float = AUTH_WINDOW) -> None:
        self.limit = limit
        self._clock = clock
        self._window = window
        #: address -> [start of its window, failures in it]
        self._entries: dict[str, list[float]] = {}
        self._sweepAt = 1024

    def blocked(self, address: str) -> bool:
        """
        Whether C{address} must be refused (with HTTP 429) without a check.
        """
        if not self.limit:
            return False
        entry = self._entries.get(address)
        if entry is None:
            return False
        if self._clock.seconds() - entry[0] >= self._window:
            del self._entries[address]
            return False
        return entry[1] >= self.limit

    def failed(self, address: str) -> None:
        """
        An auth check from C{address} failed.
        """
        if not self.limit:
            return
        now = self._clock.seconds()
        entry = self._entries.get(address)
        if entry is None or now - entry[0] >= self._window:
            self._entries[address] = [now, 1]
            if len(self._entries) > self._sweepAt:
                self._sweep(now)
        else:
            entry[1] += 1

    def _sweep(self, now: float) -> None:
        window = self._window
        self._entries = {a: e for a, e in self._entries.items() if now - e[0] < window}
        self._sweepAt = max(1024, 2 * len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class RefusalLog:
    """
    Logs refusals (of connections, of requests) by kind, at most one line a
    second per kind: a line says how many of that kind were refused since
    the previous one.  C{refusals[kind]} counts all of them.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval
        #: every refusal, by kind (for metrics)
        self.refusals: Counter[str] = Counter()
        self._lastLine: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def refused(self, kind: str, peer: str, reason: str) -> None:
        """
        A connection or request of C{peer} was refused for C{reason}.
        """
        self.refusals[kind] += 1
        self._since[kind] += 1
        now = self._clock.seconds()
        last = self._lastLine.get(kind)
        if last is not None and now - last < self._interval:
            return
        self._lastLine[kind] = now
        count, self._since[kind] = self._since[kind], 0
        self.log.info(
            "refused {kind} ({reason}): {count} since the last line, the latest from {peer}",
            kind=kind, reason=reason, count=count, peer=peer,
        )


@implementer(IReloadable)
class Limits:
    """
    The limits of one server and their shared state: the WebSocket factory
    and the REST API are given the same object, so that auth failures count
    for both.

    @ivar config: the C{server.limits} settings.
    @ivar addresses: open WebSocket connections per client address.
    @ivar authFailures: failed auth checks per client address.
    @ivar refusalLog: logs and counts refusals.
    @ivar limitCloses: connections closed for a limit, by limit name
        (C{maxConnectionsPerUser}, C{messagesPerSecond}, C{sendBufferBytes},
        C{preAuthBytes}, C{handshakeTimeoutSeconds}).
    @ivar proxies: the trusted proxies (C{server.trustedProxies}), whose
        forwarding headers name the client address that the limits count.
    @ivar openFiles: the open files limit that C{maxConnections} is fitted
        to, or L{None} for no fitting.
    """

    def __init__(self, config: LimitsConfig, clock: IReactorTime, proxies: TrustedProxies = TrustedProxies(),
                 openFiles: int | None = None) -> None:
        self.config = config
        self.clock = clock
        self.proxies = proxies
        self.openFiles = openFiles
        self.addresses = AddressCounter(config.maxConnectionsPerIp)
        self.authFailures = AuthFailures(config.authFailuresPerMinute, clock)
        self.refusalLog = RefusalLog(clock)
        self.limitCloses: Counter[str] = Counter()

    def reconfigure(self, config: LimitsConfig) -> None:
        """
        New settings (a reload), for what comes next; the counts so far are
        kept.
        """
        self.config = config
        self.addresses.limit = config.maxConnectionsPerIp
        self.authFailures.limit = config.authFailuresPerMinute

    def ceiling(self, config: LimitsConfig | None = None) -> ConnectionCeiling | None:
        """
        C{maxConnections} of C{config} (by default the settings in force)
        fitted to the open files limit, or L{None} when no limit was given.
        """
        if self.openFiles is None:
            return None
        return connectionCeiling((config or self.config).maxConnections, self.openFiles)

    def maxConnections(self, config: LimitsConfig | None = None) -> int:
        """
        The C{maxConnections} in force for C{config} (by default the
        settings in force; see L{connectionCeiling}).
        """
        ceiling = self.ceiling(config)
        return (config or self.config).maxConnections if ceiling is None else ceiling.maxConnections

    def clientAddress(self, peer: str, forwardedFor: Sequence[bytes | str] | None) -> str:
        """
        The client address of a connection or request from C{peer} with
        these C{X-Forwarded-For} values: the header's, from a trusted proxy
        (see L{TrustedProxies.clientOf}); C{peer} otherwise.
        """
        proxies = self.proxies
        if not proxies:
            return peer
        return proxies.clientOf(peer, forwardedFor)
    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Apply a reload's C{server.limits} (see L{IReloadable}).
        """
        applied = []
        if new.server.limits != old.server.limits:
            self.reconfigure(new.server.limits)
            applied.append("server.limits")
        if new.server.trustedProxies != old.server.trustedProxies:
            self.proxies = parseTrustedProxies(new.server.trustedProxies)
            applied.append("server.trustedProxies")
        return applied

    @property
    def refusals(self) -> Counter[str]:
        """
        Refusals by kind (C{maxConnections}, C{maxConnectionsPerIp},
        C{authFailuresPerMinute}, C{requestTimeoutSeconds}, ...).
        """
        return self.refusalLog.refusals

    def bucket(self) -> TokenBucket | None:
        """
        A new connection's token bucket, or L{None} when there is no rate
        limit.
        """
        if not self.config.messagesPerSecond:
            return None
        return TokenBucket(self.config.messagesPerSecond, self.config.burst, self.clock)

    def refused(self, kind: str, peer: str, reason: str) -> None:
        """
        Count and (rate-limited) log a refusal.
        """
        self.refusalLog.refused(kind, peer, reason)

    def closed(self, limit: str) -> None:
        """
        Count a connection closed for C{limit}.
        """
        self.limitCloses[limit] += 1
