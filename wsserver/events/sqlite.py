# -*- test-case-name: tests.test_database -*-
"""
The event notifier's queue in the wsserver database: pending and failed
deliveries, and the per-target success counters, survive restarts.

Tables (see L{wsserver.database} for the schema): C{events(id,
primary_target, target, payload, attempts, not_before, state)}, C{state}
C{"pending"} or C{"failed"} (a delivery that succeeded is deleted and
counted); the counters C{"succeeded:<target>"} in C{counters}.

Group commit (L{wsserver.database.BatchWriter}): what the notifier settles
in one reactor turn (succeeded, failed, moved for a retry or a fallback) is
written in one transaction, one in flight at a time; each method's
L{Deferred} fires once its batch is committed, and a read first hands the
pending batch to the database thread, so that it sees every change made
before it.

Write-behind (C{writeDelay}, C{event.writeDelayMillis}): the rows of new
deliveries are held back that long before they go to the writer, so that
those their target confirms meanwhile (most of them, with a database or
broker target that keeps up) are never written, only counted.  Anything
that needs them written first hands them over at once: a read of the due
deliveries, L{SqliteEventStore.stored} (what an ack waits for), a retry or
a failure to record (its row is updated), the database closing.  A write
of new rows that fails is held again and tried a second later.

The per-target counts of L{SqliteEventStore.counts} (what C{GET /events}
and the metrics read) are loaded once at start and kept in memory from
then on, updated as each write commits, with what the rows not written yet
will change: reading them never scans the table, nor writes the held
rows.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..database import BatchWriter, Database
from .store import Delivery, IEventStore, emptyCounts

__all__ = ["RETRY_SECONDS", "SqliteEventStore"]

#: seconds before the rows of a failed insert are written again
RETRY_SECONDS = 1.0

_SUCCEEDED = "succeeded:"
_PENDING = "pending"
_FAILED = "failed"
#: the writer's item of new rows (an L{_Insert})
_INSERT = "insert"


class _Insert:
    """
    The rows of one L{SqliteEventStore.add}, in the writer's batch.  Until
    the database thread takes them (L{take}), a delivery that succeeded is
    taken out (L{cancel}): it is never written, and the transaction counts
    it as succeeded instead.

    @ivar rows: the deliveries to write, by id.
    @ivar cancelled: per target, the deliveries taken out.
    """

    __slots__ = ("rows", "cancelled", "_taken", "_lock")

    def __init__(self, rows: dict[int, Delivery]) -> None:
        self.rows = rows
        self.cancelled: dict[str, int] = {}
        self._taken = False
        self._lock = threading.Lock()

    def cancel(self, delivery: Delivery) -> bool:
        """
        In the reactor thread: take C{delivery} out, unless its row is
        being written already.

        @return: whether it was taken out.
        """
        return not self.cancelAll([delivery])

    def cancelAll(self, deliveries: list[Delivery]) -> list[Delivery]:
        """
        L{cancel} for each of C{deliveries} (all of this insert), under one
        hold of the lock.

        @return: those that could not be taken out (their rows are being
            written already).
        """
        with self._lock:
            if self._taken:
                return deliveries
            rows = self.rows
            cancelled = self.cancelled
            rest = []
            for delivery in deliveries:
                if rows.pop(delivery.id, None) is None:
                    rest.append(delivery)
                else:
                    cancelled[delivery.target] = cancelled.get(delivery.target, 0) + 1
            return rest

    def tally(self, counts: dict[str, dict[str, int]]) -> None:
        """
        Add to C{counts} what this insert will change once committed: its
        rows pending, those taken out succeeded.
        """
        with self._lock:
            for delivery in self.rows.values():
                counts.setdefault(delivery.target, emptyCounts())[_PENDING] += 1
            for target, n in self.cancelled.items():
                counts.setdefault(target, emptyCounts())["succeeded"] += n

    def take(self) -> tuple[list[Delivery], dict[str, int]]:
        """
        In the database thread: the rows to write and the counts of those
        taken out; nothing is taken out any more.
        """
        with self._lock:
            self._taken = True
            return list(self.rows.values()), dict(self.cancelled)

#: what L{BatchWriter} writes: C{(state, deliveries)}, the state
#: C{"succeeded"}, C{"failed"} or C{"pending"} (moved: new target, attempts
#: or time), for a group of deliveries
_Settled = tuple[str, Sequence[Delivery]]

#: count changes: C{(target, counter, change)}
_Changes = list[tuple[str, str, int]]


@implementer(IEventStore)
class SqliteEventStore:
    """
    The event notifier's queue in SQLite: pending and failed deliveries and
    the per-target success counters survive restarts.  Behaves like
    L{wsserver.events.store.MemoryEventStore}.

    @param clock: schedules the batch write at the end of the reactor turn
        (the database's reactor when L{None}).
    @param writeDelay: seconds the rows of new deliveries are held back
        before they are written (0: written by the next transaction).
    """

    def __init__(self, database: Database, clock: IReactorTime | None = None, writeDelay: float = 0.0) -> None:
        self._db = database
        self._clock = database.reactor if clock is None else clock
        self._delay = writeDelay
        #: the inserts held back, oldest first, with when each is due
        self._held: deque[tuple[float, _Insert]] = deque()
        self._holdCall: IDelayedCall | None = None
        # before the writer: at the database's close the held rows go to
        # the writer, then the writer hands everything over
        database.addWriter(self)
        self._counts: dict[str, dict[str, int]] = {}
        for name, value in database.readNow("SELECT name, value FROM counters"):
            if name.startswith(_SUCCEEDED):
                self._counts.setdefault(name[len(_SUCCEEDED):], emptyCounts())["succeeded"] += value
        for target, state, retried, n in database.readNow(
            "SELECT target, state, attempts > 0, COUNT(*) FROM events GROUP BY target, state, attempts > 0"
        ):
            self._counts.setdefault(target, emptyCounts())[_key(state, retried)] += n
        ((last,),) = database.readNow(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
            " COALESCE((SELECT MAX(id) FROM events), 0))")
        #: the last id given out: this store alone writes the table, so
        #: that the ids of new rows are known before they are written
        self._lastId = int(last)
        #: the inserts not committed yet (held, in the writer's batch or
        #: being written): what L{counts} adds to the committed counts
        self._uncommitted: set[_Insert] = set()
        #: the new deliveries whose rows wait in the writer's batch, by id:
        #: one that succeeds before its row is handed to the database is
        #: taken out of it (never written, only counted)
        self._unwritten: dict[int, _Insert] = {}
        self._writer: BatchWriter[_Settled | tuple[str, _Insert]] = BatchWriter(
            database, self._clock, _settle, "event deliveries", settled=self._settled,
        )

    def handOver(self) -> None:
        """
        Give every held insert to the writer now and hand the writer's
        batch to the database thread (the database is closing, or a read
        must see them).
        """
        self._release()
        self._writer.handOver()

    def _release(self, upTo: float | None = None) -> None:
        """
        Give the held inserts due by C{upTo} (all when L{None}) to the
        writer, in order.
        """
        held = self._held
        writer = self._writer
        while held and (upTo is None or held[0][0] <= upTo):
            writer.add((_INSERT, held.popleft()[1]))
        if not held and self._holdCall is not None:
            if self._holdCall.active():
                self._holdCall.cancel()
            self._holdCall = None

    def _due(self) -> None:
        """
        The hold of the oldest insert is over: write what is due, and what
        would be due within a quarter of the delay, in one transaction;
        wait for the next.  (One release per turn's insert would be a
        transaction per message under a light load, when each message has
        a turn of its own.)
        """
        self._holdCall = None
        now = self._clock.seconds()
        self._release(now + self._delay / 4)
        if self._held:
            self._holdCall = self._clock.callLater(max(0.0, self._held[0][0] - now), self._due)

    def _apply(self, changes: _Changes) -> None:
        counts = self._counts
        for target, counter, change in changes:
            row = counts.get(target)
            if row is None:
                row = counts[target] = emptyCounts()
            row[counter] += change

    def _settled(self, batch: list[Any], result: _Changes | Failure) -> None:
        unwritten = self._unwritten
        failed = isinstance(result, Failure)
        for state, item in batch:
            if state == _INSERT:
                self._uncommitted.discard(item)
                if failed:
                    self._again(item)
                    continue
                # written: no longer taken out
                for id in item.rows:
                    if unwritten.get(id) is item:
                        del unwritten[id]
        if not failed:
            self._apply(result)

    def _again(self, insert: _Insert) -> None:
        """
        The transaction that wrote C{insert} failed (the disk): its rows
        (and the count of those taken out) are held again, to be written
        after L{RETRY_SECONDS}, so that the retries and failures later
        recorded for them have rows to change; until then a success still
        takes one out.  They stay counted against C{maxPending} meanwhile.
        """
        again = _Insert(dict(insert.rows))
        again.cancelled.update(insert.cancelled)
        unwritten = self._unwritten
        for id in again.rows:
            unwritten[id] = again
        self._uncommitted.add(again)
        self._hold(again, RETRY_SECONDS)

    def _hold(self, insert: _Insert, seconds: float) -> None:
        """
        Hold C{insert} back for C{seconds} (one timer for every held one:
        the oldest's).
        """
        self._held.append((self._clock.seconds() + seconds, insert))
        if self._holdCall is None:
            self._holdCall = self._clock.callLater(seconds, self._due)

    def add(self, items: list[tuple[str, bytes]], now: float) -> Deferred[list[Delivery]]:
        """
        The new deliveries at once, with their ids; their rows are written
        by the writer's next transaction, in order with what is settled
        (L{stored} fires once they are), or after C{writeDelay}.
        """
        if not items:
            return succeed([])
        first = self._lastId + 1
        added = [Delivery(first + i, primary, primary, bytes(payload), 0, now)
                 for i, (primary, payload) in enumerate(items)]
        self._lastId += len(added)
        insert = _Insert({d.id: d for d in added})
        self._unwritten.update(dict.fromkeys(insert.rows, insert))
        self._uncommitted.add(insert)
        if self._delay > 0:
            self._hold(insert, self._delay)
        else:
            self._writer.add((_INSERT, insert))
        return succeed(added)

    def stored(self) -> Deferred[None]:
        """
        Fires once every delivery added so far is committed (or, having
        succeeded before its row was written, counted), and every change
        asked for before: the held rows are written now.
        """
        self._release()
        return self._writer.committed()

    def due(self, now: float, limit: int, skip: frozenset[int], through: int | None = None) -> Deferred[list[Delivery]]:
        if limit <= 0:
            return succeed([])
        self.handOver()
        return self._db.run(_due, now, limit, frozenset(skip), _NO_BOUND if through is None else through)

    def nextDue(self, skip: frozenset[int], through: int | None = None) -> Deferred[float | None]:
        self.handOver()
        return self._db.run(_nextDue, frozenset(skip), _NO_BOUND if through is None else through)

    def _settle(self, state: str, delivery: Delivery) -> Deferred[None]:
        # its row is changed: it must be written before
        self._release()
        self._writer.add((state, (delivery,)))
        return self._writer.committed()

    def settle(self, succeeded: Sequence[Delivery], kept: Sequence[Delivery],
               failed: Sequence[Delivery]) -> Deferred[None]:
        """
        One item of the writer's batch a kind, one L{Deferred} for the group.
        """
        writer = self._writer
        if succeeded and self._unwritten:
            # those whose rows are not written yet: taken out of the
            # writer's batch (the insert and its delete cancel), one lock
            # an insert (a group's deliveries mostly came in one)
            pop = self._unwritten.pop
            rest: list[Delivery] = []
            byInsert: dict[_Insert, list[Delivery]] = {}
            for delivery in succeeded:
                insert = pop(delivery.id, None)
                if insert is None:
                    rest.append(delivery)
                else:
                    group = byInsert.get(insert)
                    if group is None:
                        byInsert[insert] = [delivery]
                    else:
                        group.append(delivery)
            for insert, group in byInsert.items():
                rest += insert.cancelAll(group)
            succeeded = rest
        if succeeded:
            writer.add(("succeeded", succeeded))
        if (kept or failed) and self._held:
            # their rows are changed: they must be written before
            self._release()
        if kept:
            writer.add((_PENDING, kept))
        if failed:
            writer.add((_FAILED, failed))
        return writer.committed()

    def update(self, delivery: Delivery) -> Deferred[None]:
        return self._settle(_PENDING, delivery)

    def succeeded(self, delivery: Delivery) -> Deferred[None]:
        return self.settle((delivery,), (), ())

    def failed(self, delivery: Delivery) -> Deferred[None]:
        return self._settle(_FAILED, delivery)

    def counts(self) -> Deferred[dict[str, dict[str, int]]]:
        """
        The counts kept in memory, once every write asked for before is
        committed (so they include it), with what the inserts not committed
        yet will change (the held rows are not written for it); no query
        reads the table.
        """
        self._writer.handOver()

        def counted(_: object) -> dict[str, dict[str, int]]:
            counts = {target: dict(row) for target, row in self._counts.items()}
            for insert in self._uncommitted:
                insert.tally(counts)
            return {target: row for target, row in counts.items() if any(row.values())}

        return self._db.run(lambda cursor: None).addCallback(counted)

    def close(self) -> Deferred[None]:
        """
        Wait for the queries already asked for; the database itself is closed
        by L{Database.close}, as the undelivered queue may still use it.
        """
        self.handOver()
        return self._db.run(lambda cursor: None)


#: the C{through} of a read without one: above every id SQLite gives
_NO_BOUND = 2 ** 63 - 1

_DELIVERY_COLUMNS = "id, primary_target, target, payload, attempts, not_before"


def _key(state: str, retried: Any) -> str:
    """
    The counter of a stored row.
    """
    return _FAILED if state == _FAILED else "retrying" if retried else _PENDING


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id, primary, target, payload, attempts, notBefore = row
    return Delivery(id, primary, target, bytes(payload), attempts, notBefore)


def _insertRows(cursor: Any, insert: _Insert, changes: _Changes, succeeded: dict[str, int]) -> None:
    """
    Write the new rows of C{insert} that were not taken out; count those
    that were as succeeded.
    """
    rows, cancelled = insert.take()
    cursor.executemany(
        "INSERT INTO events (id, primary_target, target, payload, attempts, not_before, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(d.id, d.primary, d.target, d.payload, d.attempts, d.notBefore, _PENDING) for d in rows],
    )
    changes.extend((d.target, _PENDING, 1) for d in rows)
    for target, n in cancelled.items():
        changes.append((target, "succeeded", n))
        succeeded[target] = succeeded.get(target, 0) + n


def _due(cursor: Any, now: float, limit: int, skip: frozenset[int], through: int) -> list[Delivery]:
    # the ids first, from the index alone: sorting whole rows would read
    # every due payload (a backlog of 80,000 events of 3 KB each made each
    # call read 250 MB); then the rows of the few chosen
    cursor.execute(
        "SELECT id FROM events WHERE state = ? AND id <= ? AND not_before <= ? ORDER BY id LIMIT ?",
        (_PENDING, through, now, limit + len(skip)),
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


def _nextDue(cursor: Any, skip: frozenset[int], through: int) -> float | None:
    # of the len(skip) + 1 earliest, at least one is not skipped
    cursor.execute(
        "SELECT id, not_before FROM events WHERE state = ? AND id <= ? ORDER BY not_before LIMIT ?",
        (_PENDING, through, len(skip) + 1),
    )
    for id, notBefore in cursor.fetchall():
        if id not in skip:
            return float(notBefore)
    return None


def _delete(cursor: Any, run: list[Delivery], changes: _Changes, succeeded: dict[str, int]) -> None:
    """
    Delete the rows of deliveries that succeeded, 500 a statement (not two
    statements a row): those still pending leave their counter and count
    as succeeded for the target that took them.
    """
    for start in range(0, len(run), 500):
        chunk = {d.id: d for d in run[start:start + 500]}
        cursor.execute(
            f"DELETE FROM events WHERE state = ? AND id IN ({', '.join('?' * len(chunk))}) RETURNING id, target, attempts",
            (_PENDING, *chunk))
        for id, target, attempts in cursor.fetchall():
            took = chunk[id].target
            changes.append((target, _key(_PENDING, attempts), -1))
            changes.append((took, "succeeded", 1))
            succeeded[took] = succeeded.get(took, 0) + 1


def _settle(cursor: Any, batch: list[Any]) -> _Changes:
    """
    Write what one turn settled, in order: the count changes of the rows
    it changed (a row no longer pending is left alone and counts nothing).
    """
    changes: _Changes = []
    succeeded: dict[str, int] = {}
    run: list[Delivery] = []
    for state, deliveries in batch:
        if state == "succeeded":
            run.extend(deliveries)
            continue
        if run:
            _delete(cursor, run, changes, succeeded)
            run = []
        if state == _INSERT:
            _insertRows(cursor, deliveries, changes, succeeded)
            continue
        for delivery in deliveries:
            # what the row was: the counter it leaves
            cursor.execute("SELECT target, attempts FROM events WHERE id = ? AND state = ?",
                           (delivery.id, _PENDING))
            row = cursor.fetchone()
            if row is None:
                continue
            target, attempts = row
            changes.append((target, _key(_PENDING, attempts), -1))
            cursor.execute(
                "UPDATE events SET primary_target = ?, target = ?, attempts = ?, not_before = ?, state = ? "
                "WHERE id = ?",
                (delivery.primary, delivery.target, delivery.attempts, delivery.notBefore, state, delivery.id),
            )
            changes.append((delivery.target, _key(state, delivery.attempts), 1))
    if run:
        _delete(cursor, run, changes, succeeded)
    cursor.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(_SUCCEEDED + target, n) for target, n in succeeded.items()],
    )
    return changes
