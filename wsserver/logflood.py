# -*- test-case-name: tests.test_logflood -*-
"""
Log lines that a remote peer can cause, held to one a second per kind.

wsserver's own refusals are counted and logged by
L{wsserver.limits.RefusalLog}.  The libraries log too, once per event: an
Autobahn warning for each refused handshake, a Twisted line for each
C{EMFILE} in C{accept}, a protocol violation.  A flood of such events would
fill the disk with lines; L{FloodGuard} sits in front of the log observers
and lets through, per kind (namespace and format, or the first words of a
legacy text), the first event of each second, saying before it how many
like it it held back.  wsserver's own events pass untouched, except those
of a L{PeerLogger}: the lines that a remote peer causes (a refused or failed
auth, a connection closed for a limit) are held like the libraries'.

L{guardPublisher} puts one guard in front of every observer of a publisher
(twistd's, once logging has begun: see L{wsserver.service.LogGuardService}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LimitedHistoryLogObserver, Logger, LogLevel, LogPublisher
from zope.interface import implementer

from ._internals import logObservers

__all__ = ["FloodGuard", "PeerLogger", "guardPublisher", "loggingBegun"]

#: The event key that marks a line a remote peer can cause (L{PeerLogger}).
BY_PEER = "log_byPeer"

#: Kinds remembered at once: the oldest is forgotten past this many.
MAX_KINDS = 1024
#: Characters of a legacy text that name its kind.
_LEGACY_KEY = 60


def _kind(event: dict[str, Any]) -> tuple[str, str]:
    namespace = event.get("log_namespace", "")
    fmt = event.get("log_format")
    if fmt is None or fmt == "{log_text}" or namespace == "log_legacy":
        # a legacy twisted.python.log line: its text is its format
        message = event.get("message") or ()
        text = " ".join(str(m) for m in message) if message else str(event.get("log_text", fmt or ""))
        return (namespace, text[:_LEGACY_KEY])
    return (namespace, fmt)


@implementer(ILogObserver)
class FloodGuard:
    """
    An observer in front of C{observer} that passes at most one event a
    second of each kind from outside C{own} namespaces (and of the
    L{PeerLogger}s inside them).

    @param observer: where events go.
    @param clock: the time.
    @param interval: seconds between two events of one kind.
    @param own: namespace prefixes that always pass (C{"wsserver"}).
    """

    def __init__(self, observer: ILogObserver, clock: IReactorTime, interval: float = 1.0,
                 own: tuple[str, ...] = ("wsserver",)) -> None:
        self._observer = observer
        self._clock = clock
        self._interval = interval
        self._own = own
        #: kind -> [when its last event passed, events held since]
        self._kinds: dict[tuple[str, str], list[float]] = {}
        #: events held back, in all
        self.held = 0

    def kinds(self) -> int:
        """
        How many kinds are remembered now (at most L{MAX_KINDS}).
        """
        return len(self._kinds)

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace", "")
        if namespace.startswith(self._own) and not event.get(BY_PEER):
            self._observer(event)
            return
        kind = _kind(event)
        now = self._clock.seconds()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self._interval:
            seen[1] += 1
            self.held += 1
            return
        if seen is None:
            if len(self._kinds) >= MAX_KINDS:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[kind] = [now, 0]
        else:
            held, since = int(seen[1]), seen[0]
            seen[0], seen[1] = now, 0
            if held:
                self._observer({
                    "log_namespace": "wsserver.logflood", "log_level": LogLevel.info,
                    "log_format": "{held} more log lines like the next were held back in the last {seconds:.0f} s",
                    "held": held, "seconds": now - since, "log_time": event.get("log_time"),
                    "log_system": event.get("log_system", "-"),
                })
        self._observer(event)


class PeerLogger(Logger):
    """
    A L{Logger} for the lines a remote peer can cause: its events are marked
    so that L{FloodGuard} holds them to one a second per kind, although they
    are wsserver's own.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        kwargs[BY_PEER] = True
        super().emit(level, format, **kwargs)


def loggingBegun(publisher: LogPublisher) -> bool:
    """
    Whether logging to C{publisher} has begun: the log beginner's buffer of
    early events (a L{LimitedHistoryLogObserver}, inside the publisher that
    is its temporary observer) no longer observes it.
    """
    for observer in logObservers(publisher):
        if isinstance(observer, LimitedHistoryLogObserver):
            return False
        if isinstance(observer, LogPublisher) and not loggingBegun(observer):
            return False
    return True


def guardPublisher(publisher: LogPublisher, clock: IReactorTime) -> Callable[[], None]:
    """
    Move every observer of C{publisher} behind one L{FloodGuard}.

    @return: what puts them back (and removes the guard).
    """
    observers = logObservers(publisher)
    behind = LogPublisher(*observers)
    for observer in observers:
        publisher.removeObserver(observer)
    guard = FloodGuard(behind, clock)
    publisher.addObserver(guard)

    def undo() -> None:
        publisher.removeObserver(guard)
        for observer in logObservers(behind):
            publisher.addObserver(observer)

    return undo
