# -*- test-case-name: tests.test_queue -*-
"""
The one housekeeping timer of the stores: every store that keeps entries
for a time (the undelivered queue, the inbox) is pruned by one
L{TimerService}, whatever its technology.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

__all__ = ["IPrunable", "pruneService"]

log = Logger()


class IPrunable(Interface):
    """
    A store whose entries expire.
    """

    def prune(now: float) -> Deferred[int]:
        """
        Drop every entry expired at C{now}; the result is how many.
        """


def pruneService(stores: Sequence[tuple[str, IPrunable]], clock: IReactorTime, interval: float) -> TimerService:
    """
    A service that drops the expired entries of each of C{stores} (C{(what
    its entries are, store)}, for the log) every C{interval} seconds.  A
    prune that fails (the disk, Redis) is logged, the other stores are
    pruned all the same, and the next round runs on time: a L{TimerService}
    whose call fails stops for good.
    """

    def pruneOne(what: str, store: IPrunable, now: float) -> Deferred[Any]:
        d = maybeDeferred(store.prune, now)
        return d.addErrback(lambda f: log.failure("could not drop expired {what}", f, what=what))

    def prune() -> Deferred[Any]:
        now = clock.seconds()
        return gatherResults([pruneOne(what, store, now) for what, store in stores])

    service = TimerService(interval, prune)
    service.clock = clock
    return service
