# -*- test-case-name: tests.test_database -*-
"""
The event notifier's queue in the wsserver database: pending and failed
deliveries, and the per-target success counters, survive restarts.

Tables (see L{wsserver.database} for the schema): C{events(id,
primary_target, target, payload, attempts, not_before, state)}, C{state}
C{"pending"} or C{"failed"} (a delivery that succeeded is deleted and
counted); the counters C{"succeeded:<target>"} in C{counters}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..database import Database
from .store import Delivery, IEventStore, emptyCounts

__all__ = ["SqliteEventStore"]

_SUCCEEDED = "succeeded:"
_PENDING = "pending"
_FAILED = "failed"


@implementer(IEventStore)
class SqliteEventStore:
    """
    The event notifier's queue in SQLite: pending and failed deliveries and
    the per-target success counters survive restarts.  Behaves like
    L{wsserver.events.store.MemoryEventStore}.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    def add(self, items: list[tuple[str, bytes]], now: float) -> Deferred[list[Delivery]]:
        rows = [(primary, primary, bytes(payload), 0, now, _PENDING) for primary, payload in items]
        if not rows:
            return succeed([])
        return self._db.run(_add, rows)

    def due(self, now: float, limit: int, skip: frozenset[int]) -> Deferred[list[Delivery]]:
        if limit <= 0:
            return succeed([])
        return self._db.run(_due, now, limit, frozenset(skip))

    def nextDue(self, skip: frozenset[int]) -> Deferred[float | None]:
        return self._db.run(_nextDue, frozenset(skip))

    def update(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_update, delivery, _PENDING)

    def succeeded(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_succeeded, delivery)

    def failed(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_update, delivery, _FAILED)

    def counts(self) -> Deferred[dict[str, dict[str, int]]]:
        return self._db.run(_counts)

    def close(self) -> Deferred[None]:
        """
        Wait for the queries already asked for; the database itself is closed
        by L{Database.close}, as the undelivered queue may still use it.
        """
        return self._db.run(lambda cursor: None)


_DELIVERY_COLUMNS = "id, primary_target, target, payload, attempts, not_before"


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id, primary, target, payload, attempts, notBefore = row
    return Delivery(id, primary, target, bytes(payload), attempts, notBefore)


def _add(cursor: Any, rows: list[tuple[Any, ...]]) -> list[Delivery]:
    cursor.executemany(
        "INSERT INTO events (primary_target, target, payload, attempts, not_before, state)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    # the transaction holds the write lock: the newest ids are these rows'
    cursor.execute("SELECT id FROM events ORDER BY id DESC LIMIT ?", (len(rows),))
    ids = sorted(id for (id,) in cursor.fetchall())
    return [Delivery(id, primary, target, payload, attempts, notBefore)
            for id, (primary, target, payload, attempts, notBefore, _) in zip(ids, rows)]


def _due(cursor: Any, now: float, limit: int, skip: frozenset[int]) -> list[Delivery]:
    # the ids first, from the index alone: sorting whole rows would read
    # every due payload (a backlog of 80,000 events of 3 KB each made each
    # call read 250 MB); then the rows of the few chosen
    cursor.execute(
        "SELECT id FROM events WHERE state = ? AND not_before <= ? ORDER BY id LIMIT ?",
        (_PENDING, now, limit + len(skip)),
    )
    ids = [id for (id,) in cursor.fetchall() if id not in skip][:limit]
    out = []
    # in chunks: SQLite bounds the parameters of one statement
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cursor.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM events WHERE id IN ({', '.join('?' * len(chunk))}) ORDER BY id", chunk)
        out += [_delivery(row) for row in cursor.fetchall()]
    return out


def _nextDue(cursor: Any, skip: frozenset[int]) -> float | None:
    # of the len(skip) + 1 earliest, at least one is not skipped
    cursor.execute(
        "SELECT id, not_before FROM events WHERE state = ? ORDER BY not_before LIMIT ?",
        (_PENDING, len(skip) + 1),
    )
    for id, notBefore in cursor.fetchall():
        if id not in skip:
            return float(notBefore)
    return None


def _update(cursor: Any, delivery: Delivery, state: str) -> None:
    cursor.execute(
        "UPDATE events SET primary_target = ?, target = ?, payload = ?, attempts = ?, not_before = ?, state = ?"
        " WHERE id = ? AND state = ?",
        (delivery.primary, delivery.target, bytes(delivery.payload), delivery.attempts, delivery.notBefore,
         state, delivery.id, _PENDING),
    )


def _succeeded(cursor: Any, delivery: Delivery) -> None:
    cursor.execute("DELETE FROM events WHERE id = ? AND state = ?", (delivery.id, _PENDING))
    if cursor.rowcount:
        cursor.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (_SUCCEEDED + delivery.target,),
        )


def _counts(cursor: Any) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    cursor.execute("SELECT name, value FROM counters")
    for name, value in cursor.fetchall():
        if name.startswith(_SUCCEEDED):
            counts.setdefault(name[len(_SUCCEEDED):], emptyCounts())["succeeded"] += value
    cursor.execute("SELECT target, state, attempts > 0, COUNT(*) FROM events GROUP BY target, state, attempts > 0")
    for target, state, retried, n in cursor.fetchall():
        key = _FAILED if state == _FAILED else "retrying" if retried else _PENDING
        counts.setdefault(target, emptyCounts())[key] += n
    return counts
