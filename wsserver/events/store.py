# -*- test-case-name: tests.test_events -*-
"""
Where event deliveries wait (SPEC section 6): the persistent queue of the
event notifier.

A delivery is one message for one target.  It is stored before it is tried,
stays stored while it is retried (and moved along its target's fallback
chain), is deleted when a target accepted it, and is kept in the C{failed}
state when every target of its chain refused it.  A restart finds every
delivery that had not succeeded and tries it again: at least once.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

__all__ = ["Delivery", "IEventStore", "MemoryEventStore", "emptyCounts"]


class Delivery(NamedTuple):
    """
    One message on its way to one target.

    A named tuple, not a frozen dataclass: one is made for every message and
    target, and a frozen dataclass's C{__init__} (an C{object.__setattr__}
    a field) cost three times as much (2.3 against 0.7 us).

    @ivar id: the store's key.
    @ivar primary: the key of the configured target (C{"targets[0]"}).
    @ivar target: the key of the target it is at now: the primary, or one of
        its fallbacks (C{"targets[0].fallback[1]"}).
    @ivar attempts: attempts made on C{target} so far.
    @ivar notBefore: when it may be tried next (unix seconds).
    """

    id: int
    primary: str
    target: str
    payload: bytes
    attempts: int = 0
    notBefore: float = 0.0


def emptyCounts() -> dict[str, int]:
    """
    The counters of a target that has seen nothing.
    """
    return {"succeeded": 0, "pending": 0, "retrying": 0, "failed": 0}


class IEventStore(Interface):
    """
    The persistent queue of event deliveries.
    """

    def add(items: list[tuple[str, bytes]], now: float) -> Deferred[list[Delivery]]:
        """
        Store new deliveries, C{(primary target key, payload)} each, in one
        transaction; they are due at C{now}.  May answer them (with their
        ids) before they are written: L{stored} says when they are.
        """

    def stored() -> Deferred[None]:
        """
        Fires once every delivery added so far is persisted (or settled for
        good, which is persisted too); fails if its write failed.
        """

    def due(now: float, limit: int, skip: frozenset[int], through: int | None = None) -> Deferred[list[Delivery]]:
        """
        Up to C{limit} pending deliveries due at C{now}, oldest first, leaving
        out the ids in C{skip} (those in flight) and, unless C{through} is
        L{None}, the ids above C{through} (those the caller has in memory).
        """

    def nextDue(skip: frozenset[int], through: int | None = None) -> Deferred[float | None]:
        """
        The earliest C{notBefore} of the pending deliveries not in C{skip}
        (and, unless C{through} is L{None}, of ids up to C{through}), or
        L{None} when there is none.
        """

    def update(delivery: Delivery) -> Deferred[None]:
        """
        Keep C{delivery}'s new C{target}, C{attempts} and C{notBefore}.
        """

    def succeeded(delivery: Delivery) -> Deferred[None]:
        """
        C{delivery.target} accepted it: forget it and count it for that target.
        """

    def failed(delivery: Delivery) -> Deferred[None]:
        """
        Every target refused it: keep it as failed, counted for C{delivery.target}.
        """

    def settle(succeeded: Sequence[Delivery], kept: Sequence[Delivery],
               failed: Sequence[Delivery]) -> Deferred[None]:
        """
        Settle a group in one call: forget and count the C{succeeded} (as
        L{succeeded} each), keep the new state of the C{kept} (as L{update})
        and keep the C{failed} (as L{failed}); fires once all is written.
        """

    def counts() -> Deferred[dict[str, dict[str, int]]]:
        """
        Per target key: C{succeeded}, C{pending} (not tried yet), C{retrying}
        (tried, waiting for another attempt), C{failed}.
        """

    def close() -> Deferred[None]:
        """
        Release the store (at stop).
        """


@implementer(IEventStore)
class MemoryEventStore:
    """
    The event queue in memory: for tests, and a model of the SQLite store's
    behaviour.
    """

    def __init__(self) -> None:
        self._pending: dict[int, Delivery] = {}
        self._failed: dict[int, Delivery] = {}
        self._succeeded: dict[str, int] = {}
        self._next = 0

    def add(self, items: list[tuple[str, bytes]], now: float) -> Deferred[list[Delivery]]:
        added = []
        for primary, payload in items:
            self._next += 1
            delivery = Delivery(self._next, primary, primary, payload, 0, now)
            self._pending[delivery.id] = delivery
            added.append(delivery)
        return succeed(added)

    def stored(self) -> Deferred[None]:
        return succeed(None)

    def due(self, now: float, limit: int, skip: frozenset[int], through: int | None = None) -> Deferred[list[Delivery]]:
        ready = [d for i, d in sorted(self._pending.items())
                 if i not in skip and d.notBefore <= now and (through is None or i <= through)]
        return succeed(ready[:limit])

    def nextDue(self, skip: frozenset[int], through: int | None = None) -> Deferred[float | None]:
        times = [d.notBefore for i, d in self._pending.items() if i not in skip and (through is None or i <= through)]
        return succeed(min(times) if times else None)

    def update(self, delivery: Delivery) -> Deferred[None]:
        if delivery.id in self._pending:
            self._pending[delivery.id] = delivery
        return succeed(None)

    def succeeded(self, delivery: Delivery) -> Deferred[None]:
        return self.settle((delivery,), (), ())

    def failed(self, delivery: Delivery) -> Deferred[None]:
        return self.settle((), (), (delivery,))

    def settle(self, succeeded: Sequence[Delivery], kept: Sequence[Delivery],
               failed: Sequence[Delivery]) -> Deferred[None]:
        pending = self._pending
        for delivery in succeeded:
            if pending.pop(delivery.id, None) is not None:
                self._succeeded[delivery.target] = self._succeeded.get(delivery.target, 0) + 1
        for delivery in kept:
            if delivery.id in pending:
                pending[delivery.id] = delivery
        for delivery in failed:
            if pending.pop(delivery.id, None) is not None:
                self._failed[delivery.id] = delivery
        return succeed(None)

    def counts(self) -> Deferred[dict[str, dict[str, int]]]:
        return succeed(tally(self._succeeded, self._pending.values(), self._failed.values()))

    def close(self) -> Deferred[None]:
        return succeed(None)


def tally(
    succeeded: dict[str, int], pending: Iterable[Delivery], failed: Iterable[Delivery]
) -> dict[str, dict[str, int]]:
    """
    The per-target counters of L{IEventStore.counts}.
    """
    counts: dict[str, dict[str, int]] = {}
    for target, n in succeeded.items():
        counts.setdefault(target, emptyCounts())["succeeded"] += n
    for d in pending:
        counts.setdefault(d.target, emptyCounts())["retrying" if d.attempts else "pending"] += 1
    for d in failed:
        counts.setdefault(d.target, emptyCounts())["failed"] += 1
    return counts


def moved(delivery: Delivery, **changes: object) -> Delivery:
    """
    A copy of C{delivery} with C{changes}.
    """
    return delivery._replace(**changes)
