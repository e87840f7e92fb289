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
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence, TypeVar

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..database import Database, signed
from . import IUndeliveredStore, forRecipient

__all__ = ["SqliteUndeliveredStore"]

_DROPPED = "dropped"

_T = TypeVar("_T")


@implementer(IUndeliveredStore)
class SqliteUndeliveredStore:
    """
    The undelivered queue in SQLite: it survives restarts.  Behaves like
    L{wsserver.queue.memory.MemoryUndeliveredStore}, except that a message is
    dropped for its age wherever it is in its user's queue (the memory store
    looks at the oldest ones only; the same when time does not go back).
    A message for many users is one row of C{messages}; the copies for each
    user are made when fetched, in the database thread.

    @ivar dropped: how many messages were dropped for C{maxPerUser} or their
        age, ever (persisted); updated when a method's result fires.
    """

    def __init__(self, database: Database, ttlSeconds: float, maxPerUser: int) -> None:
        self._db = database
        self._ttl = ttlSeconds
        self._max = maxPerUser
        (row,) = database.readNow("SELECT value FROM counters WHERE name = ?", _DROPPED)
        self.dropped = int(row[0])

    def _counted(self, result: tuple[_T, int | None]) -> _T:
        value, dropped = result
        if dropped is not None:
            self.dropped = dropped
        return value

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        return self._db.run(_put, [signed(userId)], bytes(payload), False, now, self._max).addCallback(
            self._counted
        )

    def putMany(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        if not userIds:
            return succeed(None)
        users = [signed(userId) for userId in userIds]
        return self._db.run(_put, users, bytes(payload), True, now, self._max).addCallback(self._counted)

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        return self._db.run(_fetch, userId, now, self._ttl).addCallback(self._counted)

    def ack(self, userId: int, keys: Iterable[int]) -> Deferred[None]:
        rows = [(signed(userId), key) for key in keys]
        if not rows:
            return succeed(None)
        return self._db.run(_ack, rows)

    def prune(self, now: float) -> Deferred[int]:
        return self._db.run(_prune, now, self._ttl).addCallback(self._counted)

    def pending(self, userId: int) -> Deferred[int]:
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


def _put(
    cursor: Any, users: list[int], payload: bytes, shared: bool, now: float, maxPerUser: int
) -> tuple[None, int | None]:
    cursor.execute("INSERT INTO messages (shared, payload) VALUES (?, ?)", (int(shared), payload))
    message = cursor.lastrowid
    cursor.executemany(
        "INSERT INTO undelivered (user, created, message) VALUES (?, ?, ?)", [(user, now, message) for user in users]
    )
    # each user's rows after the newest maxPerUser (usually none)
    cursor.executemany(
        "DELETE FROM undelivered WHERE key IN"
        " (SELECT key FROM undelivered WHERE user = ? ORDER BY key DESC LIMIT -1 OFFSET ?)",
        [(user, maxPerUser) for user in users],
    )
    return None, _addDropped(cursor, cursor.rowcount)


def _fetch(cursor: Any, userId: int, now: float, ttl: float) -> tuple[list[tuple[int, bytes]], int | None]:
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


def _pending(cursor: Any, user: int) -> int:
    cursor.execute("SELECT COUNT(*) FROM undelivered WHERE user = ?", (user,))
    return int(cursor.fetchone()[0])
