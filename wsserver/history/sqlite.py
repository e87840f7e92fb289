# -*- test-case-name: tests.test_history -*-
"""
The inbox in the SQLite data file (C{chat.history.storage: "sqlite"}): it
survives restarts, and a seq is never reused.

Seqs are assigned in memory, at once, from a per-user counter read from
C{inbox_seq} at start; the entries of one reactor turn are written in one
transaction (with the counters), so routing never waits for the disk.  One
write is in flight at a time: what is appended meanwhile waits for it and
goes in the next transaction, so batches grow with the load (group commit)
instead of queueing a transaction per turn behind a slow disk.  A read first hands the pending batch to
the database thread, whose queries run in order: a read sees every append
made before it.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..sqlitestore import Database, _signed
from . import IInbox, Page, withSeq

__all__ = ["SqliteInbox"]

_log = Logger()


def _unsigned(user: int) -> int:
    return user + (1 << 64) if user < 0 else user


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
        self._clock = clock
        self._ttl = ttlSeconds
        self._max = maxPerUser
        connection = sqlite3.connect(database.path)
        try:
            self._last: dict[int, int] = {
                _unsigned(user): seq for user, seq in connection.execute("SELECT user, seq FROM inbox_seq")
            }
        finally:
            connection.close()
        #: the appends of this turn: C{(payload, now, [(user, seq)])}
        self._batch: list[tuple[bytes, float, list[tuple[int, int]]]] = []
        self._waiters: list[Deferred[None]] = []
        self._flushCall: IDelayedCall | None = None
        #: transactions handed to the database thread and not finished
        self._inflight = 0

    def append(self, userIds: Sequence[int], payload: bytes, now: float) -> list[int]:
        last = self._last
        seqs = []
        rows = []
        for userId in userIds:
            seq = last[userId] = last.get(userId, 0) + 1
            seqs.append(seq)
            rows.append((_signed(userId), seq))
        self._batch.append((payload, now, rows))
        if self._flushCall is None and not self._inflight:
            self._flushCall = self._clock.callLater(0, self._flush)
        return seqs

    def _flush(self) -> Deferred[None]:
        """
        Hand the batch of this turn to the database thread (one transaction).
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        self._inflight += 1
        if batch:
            d = self._db.run(_append, batch, self._max)
        else:
            d = self._db.run(lambda cursor: None)

        def written(_: Any) -> None:
            for waiter in waiters:
                waiter.callback(None)

        def failed(f: Failure) -> None:
            _log.failure("could not write {n} inbox entries", f, n=len(batch))
            for waiter in waiters:
                waiter.errback(f)

        def next(_: Any) -> None:
            self._inflight -= 1
            if (self._batch or self._waiters) and not self._inflight and self._flushCall is None:
                self._flush()

        return d.addCallbacks(written, failed).addBoth(next)

    def committed(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._flushCall is None and not self._inflight:
            # nothing pending: after the writes already handed over
            self._flush()
        return waiter

    def read(self, userId: int, since: int, limit: int, now: float) -> Deferred[Page]:
        if self._batch:
            self._flush()
        last = self._last.get(userId, 0)
        return self._db.run(_read, _signed(userId), since, limit, now - self._ttl, last)

    def prune(self, now: float) -> Deferred[int]:
        return self._db.run(_prune, now - self._ttl)



def _append(cursor: Any, batch: list[tuple[bytes, float, list[tuple[int, int]]]], maxPerUser: int) -> None:
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


def _read(cursor: Any, user: int, since: int, limit: int, oldest: float, last: int) -> Page:
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
