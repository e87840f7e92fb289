# -*- test-case-name: tests.test_database -*-
"""
The undelivered queue in the wsserver database (C{storage: "sqlite"}, the
default): it survives restarts.

Tables (see L{wsserver.database} for the schema): C{messages(id, shared,
payload)}, each undelivered payload once, however many users it waits for
(C{shared}: a message kept by C{putMany}, each user gets it with
C{recipients} rewritten to C{[user]}); C{undelivered(key, user, created,
message)}, one row per user waiting for a message, C{key} increasing in the
order of C{put} and never reused (the trigger C{undelivered_release} deletes
a message with the last row that refers to it); and the counter
C{"dropped"} in C{counters}.

Group commit (L{wsserver.database.BatchWriter}): the messages kept in one
reactor turn are written in one transaction, one in flight at a time, so
that batches grow with the load instead of a transaction per message
queueing behind the disk.  Each C{put}'s L{Deferred} fires once its batch is
committed (what an ack waits for); a read first hands the pending batch to
the database thread, whose queries run in order, so that it sees every
message kept before it.  What waits to be written is counted in a
L{PendingWrites}: over its bound the senders stop being read.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..database import BatchWriter, Database, signed
from ..ids import UserId
from . import IUndeliveredStore, forRecipient
from .pending import PendingWrites

__all__ = ["SqliteUndeliveredStore"]

_DROPPED = "dropped"

_T = TypeVar("_T")

#: what L{BatchWriter} writes: C{(users, payload, shared, now)}
_Kept = tuple[list[int], bytes, bool, float]


@implementer(IUndeliveredStore)
class SqliteUndeliveredStore:
    """
    The undelivered queue in SQLite: it survives restarts.  Behaves like
    L{wsserver.queue.memory.MemoryUndeliveredStore}, except that a message is
    dropped for its age wherever it is in its user's queue (the memory store
    looks at the oldest ones only; the same when time does not go back).
    A message for many users is one row of C{messages}; the copies for each
    user are made when fetched, in the database thread.

    @param clock: schedules the batch write at the end of the reactor turn
        (the database's reactor when L{None}).
    @param pending: counts what waits to be written (unbounded when
        L{None}).

    @ivar dropped: how many messages were dropped for C{maxPerUser} or their
        age, ever (persisted); updated when a method's result fires.
    """

    def __init__(self, database: Database, ttlSeconds: float, maxPerUser: int, clock: IReactorTime | None = None,
                 pending: PendingWrites | None = None) -> None:
        self._db = database
        self._ttl = ttlSeconds
        self._max = maxPerUser
        self._pending = PendingWrites() if pending is None else pending
        (row,) = database.readNow("SELECT value FROM counters WHERE name = ?", _DROPPED)
        self.dropped = int(row[0])
        self._writer: BatchWriter[_Kept] = BatchWriter(
            database, database.reactor if clock is None else clock, _putBatch, "undelivered messages", maxPerUser,
            settled=self._written,
        )

    def _counted(self, result: tuple[_T, int | None]) -> _T:
        value, dropped = result
        if dropped is not None:
            self.dropped = dropped
        return value

    def _written(self, batch: list[_Kept], result: int | None | Failure) -> None:
        """
        A batch was committed (C{result}: the new total of dropped messages,
        or L{None}) or failed: it no longer waits.
        """
        if isinstance(result, int):
            self.dropped = result
        self._pending.done(sum(len(users) for users, _, _, _ in batch), sum(len(p) for _, p, _, _ in batch))

    def _keep(self, users: list[int], payload: bytes, shared: bool, now: float) -> Deferred[None]:
        self._pending.add(len(users), len(payload), now)
        self._writer.add((users, payload, shared, now))
        return self._writer.committed()

    def put(self, userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        return self._keep([signed(userId)], bytes(payload), False, now)

    def putMany(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        if not userIds:
            return succeed(None)
        users = [signed(userId) for userId in userIds]
        return self._keep(users, bytes(payload), True, now)

    def fetch(self, userId: UserId, now: float) -> Deferred[list[tuple[int, bytes]]]:
        self._writer.handOver()
        return self._db.run(_fetch, userId, now, self._ttl).addCallback(self._counted)

    def ack(self, userId: UserId, keys: Iterable[int]) -> Deferred[None]:
        rows = [(signed(userId), key) for key in keys]
        if not rows:
            return succeed(None)
        self._writer.handOver()
        return self._db.run(_ack, rows)

    def prune(self, now: float) -> Deferred[int]:
        self._writer.handOver()
        return self._db.run(_prune, now, self._ttl).addCallback(self._counted)

    def pending(self, userId: UserId) -> Deferred[int]:
        self._writer.handOver()
        return self._db.run(_pending, signed(userId))


def _addDropped(cursor: Any, n: int) -> int | None:
    """
    Count C{n} more dropped messages; the new total, or L{None} if C{n} is 0.
    """
    if not n:
        return None
    cursor.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, _DROPPED))
    cursor.execute("SELECT value FROM counters WHERE name = ?", (_DROPPED,))
    return int(cursor.fetchone()[0])


def _putBatch(cursor: Any, batch: list[_Kept], maxPerUser: int) -> int | None:
    """
    Write the messages of one batch, in order; the new total of dropped
    messages, or L{None} if none was dropped.

    Each user is trimmed to C{maxPerUser} once, after the batch: the rows
    beyond a user's newest C{maxPerUser} at the end are exactly those that a
    trim after each message would have dropped, so the count is the same.
    """
    rows = []
    for users, payload, shared, now in batch:
        cursor.execute("INSERT INTO messages (shared, payload) VALUES (?, ?)", (int(shared), payload))
        message = cursor.lastrowid
        rows += [(user, now, message) for user in users]
    cursor.executemany("INSERT INTO undelivered (user, created, message) VALUES (?, ?, ?)", rows)
    # each user's rows after the newest maxPerUser (usually none)
    cursor.executemany(
        "DELETE FROM undelivered WHERE key IN"
        " (SELECT key FROM undelivered WHERE user = ? ORDER BY key DESC LIMIT -1 OFFSET ?)",
        [(user, maxPerUser) for user in dict.fromkeys(user for user, _, _ in rows)],
    )
    return _addDropped(cursor, cursor.rowcount)


def _fetch(cursor: Any, userId: UserId, now: float, ttl: float) -> tuple[list[tuple[int, bytes]], int | None]:
    user = signed(userId)
    cursor.execute("DELETE FROM undelivered WHERE user = ? AND ? - created > ?", (user, now, ttl))
    dropped = _addDropped(cursor, cursor.rowcount)
    cursor.execute(
        "SELECT undelivered.key, messages.shared, messages.payload FROM undelivered"
        " JOIN messages ON messages.id = undelivered.message WHERE undelivered.user = ? ORDER BY undelivered.key",
        (user,),
    )
    return [
        (key, forRecipient(bytes(payload), userId) if shared else bytes(payload))
        for key, shared, payload in cursor.fetchall()
    ], dropped


def _ack(cursor: Any, rows: list[tuple[int, int]]) -> None:
    cursor.executemany("DELETE FROM undelivered WHERE user = ? AND key = ?", rows)


def _prune(cursor: Any, now: float, ttl: float) -> tuple[int, int | None]:
    # the first condition lets SQLite use the index on created (the slack
    # covers rounding), the second is the exact rule of fetch
    cursor.execute(
        "DELETE FROM undelivered WHERE created < ? AND ? - created > ?",
        (now - ttl + 1.0, now, ttl),
    )
    n = cursor.rowcount
    return n, _addDropped(cursor, n)


def _pending(cursor: Any, user: UserId) -> int:
    cursor.execute("SELECT COUNT(*) FROM undelivered WHERE user = ?", (user,))
    return int(cursor.fetchone()[0])
