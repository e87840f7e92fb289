# -*- test-case-name: tests.test_targets -*-
"""
What every event target type of this package shares: the outcome "not
connected", the reader a type's config parser is given, the reconnect
backoff, and hiding a password in what is shown.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Backoff", "ISection", "KeyDoc", "NextTurn", "TargetUnreachable", "parseURL", "redacted"]


class TargetUnreachable(Exception):
    """
    The target is not connected (down, or refusing our credentials): the
    delivery was not tried and waits, spending no retry, at least
    C{retryAfter} seconds.
    """

    def __init__(self, why: str, retryAfter: float) -> None:
        super().__init__(why)
        self.retryAfter = retryAfter


class ISection(Protocol):
    """
    What a target type's parser reads its keys with (the config's section
    reader): each getter marks its key as known, L{error} reports a problem
    naming the key.
    """

    def error(self, name: str, why: str) -> None: ...

    def has(self, name: str) -> bool: ...

    def bool(self, name: str, default: bool) -> bool: ...

    def str(self, name: str, default: str) -> str: ...

    def int(self, name: str, default: int, low: int | None = None, high: int | None = None) -> int: ...

    def number(self, name: str, default: float, low: float = 0) -> float: ...


@attr.s(frozen=True, auto_attribs=True)
class KeyDoc:
    """
    One key of a target type, as the configuration reference shows it.

    @ivar name: the key in the target's object (C{dsn}).
    @ivar type: its JSON type, in words (C{string}, C{integer}).
    @ivar default: the default as JSON (C{"wsserver_events"}, C{4}), C{""}
        when required.
    @ivar doc: what it means (epytext markup allowed).
    """

    name: str
    type: str
    default: str
    doc: str


@attr.s(auto_attribs=True)
class Backoff:
    """
    The delays between reconnect attempts: C{initial}, doubled each failure
    up to C{cap}; L{reset} after a success.
    """

    initial: float = 0.5
    cap: float = 5.0
    _current: float = attr.ib(default=0.0, init=False)

    def next(self) -> float:
        """
        The delay before the next attempt (and count this failure).
        """
        self._current = self.initial if not self._current else min(self.cap, self._current * 2)
        return self._current

    def reset(self) -> None:
        self._current = 0.0


class NextTurn:
    """
    Failures handed back on the next turn of the reactor, all of one turn
    by one timer: a sender that is not connected refuses at once, and a
    notifier whose store answers at once would otherwise recurse through
    its whole backlog in one call.

    @param clock: the timer's clock.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._pending: list[tuple[Deferred[None], Exception]] = []
        self._call: IDelayedCall | None = None

    def fail(self, error: Exception) -> Deferred[None]:
        """
        A L{Deferred} that fails with C{error} on the next turn.
        """
        d: Deferred[None] = Deferred()
        self._pending.append((d, error))
        if self._call is None:
            self._call = self._clock.callLater(0, self._fire)
        return d

    def _fire(self) -> None:
        self._call = None
        pending, self._pending = self._pending, []
        for d, error in pending:
            d.errback(error)

    def flush(self) -> None:
        """
        Fail what waits now (at close).
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._fire()


def redacted(url: SplitResult) -> str:
    """
    C{url} as shown in logs, C{/events}, metrics and the dashboard: its
    password replaced by C{***}.
    """
    if url.password is None:
        return url.geturl()
    user = url.username or ""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{url.port}" if url.port else ""
    return url._replace(netloc=f"{user}:***@{host}{port}").geturl()


def parseURL(section: ISection, name: str, schemes: tuple[str, ...], defaultPort: int) -> SplitResult | None:
    """
    Read the URL under C{name}: one of C{schemes}, with a host; a port that
    does not parse is an error naming the key (the value itself is not
    repeated, it may hold a password).

    @return: the parsed URL, or L{None} after reporting a problem.
    """
    raw = section.str(name, "")
    if not raw:
        section.error(name, f"required: a {schemes[0]}:// URL")
        return None
    try:
        url = urlsplit(raw)
        port: Any = url.port
    except ValueError as e:
        section.error(name, f"does not parse as a {schemes[0]}:// URL ({e})")
        return None
    if url.scheme not in schemes:
        section.error(name, f"must be a {' or '.join(s + '://' for s in schemes)} URL, not {url.scheme or 'no'} scheme")
        return None
    if not url.hostname:
        section.error(name, "has no host")
        return None
    if port is None:
        url = url._replace(netloc=f"{url.netloc}:{defaultPort}")
    return url
