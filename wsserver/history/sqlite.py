# -*- test-case-name: tests.test_history -*-
"""
The inbox in the SQLite data file (C{chat.history.storage: "sqlite"}): it
survives restarts, and a seq is never reused.

Seqs are assigned in memory, at once, from a per-user counter read from
C{inbox_seq} at start; the entries of one reactor turn are written in one
transaction (with the counters), so routing never waits for the disk.  One
write is in flight at a time: what is appended meanwhile waits for it and
goes in the next transaction, so batches grow with the load (group commit,
L{wsserver.database.BatchWriter}) instead of queueing a transaction per turn
behind a slow disk.  A read first hands the pending batch to the database
thread, whose queries run in order: a read sees every append made before it.

Tables (see L{wsserver.database} for the schema): C{inbox_messages(id,
payload)} each payload once, C{inbox(user, seq, created, message)} one row
per entry of a user's inbox, and C{inbox_seq(user, seq)} the newest seq
assigned to each user, so that a seq is never reused, even after its
entries were dropped.  The trigger C{inbox_release} deletes a payload with
its last entry.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..ids import UserId
from ..database import BatchWriter, Database, signed, unsigned
from . import IInbox, Page, withSeq

__all__ = ["SqliteInbox"]

#: what L{BatchWriter} writes: C{(payload, now, [(user, seq)])}
_Entry = tuple[bytes, float, list[tuple[int, int]]]


@implementer(IInbox)
class SqliteInbox:
    """
    The per-user inboxes in the wsserver database.

    @param database: the open database (its file is read once here).
    @param clock: schedules the batch write at the end of the reactor turn.
    @param ttlSeconds: entries older than this are dropped.
    @param maxPerUser: over this many for one user, the oldest are dropped.
    """

    def __init__(self, database: Database, clock: IReactorTime, ttlSeconds: float, maxPerUser: int) -> None:
        self._db = database
        self._ttl = ttlSeconds
        self._max = maxPerUser
        self._last: dict[int, int] = {
            unsigned(user): seq for user, seq in database.readNow("SELECT user, seq FROM inbox_seq")
        }
        self._writer: BatchWriter[_Entry] = BatchWriter(database, clock, _append, "inbox entries", maxPerUser)

    def append(self, userIds: Sequence[UserId], payload: bytes, now: float) -> list[int]:
        last = self._last
        seqs = []
        rows = []
        for userId in userIds:
            seq = last[userId] = last.get(userId, 0) + 1
            seqs.append(seq)
            rows.append((signed(userId), seq))
        self._writer.add((payload, now, rows))
        return seqs

    def committed(self) -> Deferred[None]:
        return self._writer.committed()

    def read(self, userId: UserId, since: int, limit: int, now: float) -> Deferred[Page]:
        self._writer.handOver()
        last = self._last.get(userId, 0)
        return self._db.run(_read, signed(userId), since, limit, now - self._ttl, last)

    def prune(self, now: float) -> Deferred[int]:
        return self._db.run(_prune, now - self._ttl)


def _append(cursor: Any, batch: list[_Entry], maxPerUser: int) -> None:
    newest: dict[int, int] = {}
    for payload, now, rows in batch:
        cursor.execute("INSERT INTO inbox_messages (payload) VALUES (?)", (payload,))
        message = cursor.lastrowid
        cursor.executemany(
            "INSERT INTO inbox (user, seq, created, message) VALUES (?, ?, ?, ?)",
            [(user, seq, now, message) for user, seq in rows],
        )
        for user, seq in rows:
            newest[user] = seq
    cursor.executemany(
        "INSERT INTO inbox_seq (user, seq) VALUES (?, ?) ON CONFLICT (user) DO UPDATE SET seq = excluded.seq",
        list(newest.items()),
    )
    # seqs are contiguous per user: the entries over maxPerUser are those
    # at or below newest - maxPerUser
    cursor.executemany(
        "DELETE FROM inbox WHERE user = ? AND seq <= ?",
        [(user, seq - maxPerUser) for user, seq in newest.items() if seq > maxPerUser],
    )


def _read(cursor: Any, user: UserId, since: int, limit: int, oldest: float, last: int) -> Page:
    cursor.execute(
        "SELECT MIN(seq) FROM inbox WHERE user = ? AND created >= ?", (user, oldest)
    )
    (first,) = cursor.fetchone()
    cursor.execute(
        "SELECT inbox.seq, inbox_messages.payload FROM inbox JOIN inbox_messages ON inbox_messages.id = inbox.message"
        " WHERE inbox.user = ? AND inbox.seq > ? AND inbox.created >= ? ORDER BY inbox.seq LIMIT ?",
        (user, since, oldest, limit),
    )
    entries = [(seq, withSeq(bytes(payload), seq)) for seq, payload in cursor.fetchall()]
    return Page(entries, last + 1 if first is None else first, last)


def _prune(cursor: Any, oldest: float) -> int:
    cursor.execute("DELETE FROM inbox WHERE created < ?", (oldest,))
    return int(cursor.rowcount)
