"""
Tests for L{wsserver.queue.pending} and the group commit of the SQLite
undelivered queue: the bound on what waits to be written, its back-pressure
on senders, with a database thread that answers when the test says.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsserver.auth import buildAuthenticator
from wsserver.config import AuthConfig, LimitsConfig, MessageConfig
from wsserver.connection.session import Hub, Session
from wsserver.database import _creation
from wsserver.limits import Limits
from wsserver.messages import MessageFactory
from wsserver.queue.pending import PendingWrites
from wsserver.queue.sqlite import SqliteUndeliveredStore
from wsserver.routing import Router

from .test_session import FakeWire


class PendingWritesTests(SynchronousTestCase):
    """
    L{PendingWrites}: full over either limit, relieved at half of both.
    """

    def test_fullOverMessages(self) -> None:
        """
        Over C{maxMessages} it is full, and stays so until half of it is
        written; the readers waiting are then resumed, in order, once.
        """
        pending = PendingWrites(10, 0)
        resumed: list[str] = []
        pending.add(10, 100)
        self.assertFalse(pending.full)
        pending.add(1, 10)
        self.assertTrue(pending.full)
        pending.whenRelieved(lambda: resumed.append("a"))
        pending.whenRelieved(lambda: resumed.append("b"))
        pending.done(5, 50)
        self.assertEqual((pending.full, resumed), (True, []))
        pending.done(1, 10)
        self.assertEqual((pending.full, resumed, pending.waiting), (False, ["a", "b"], 0))
        pending.done(5, 50)
        self.assertEqual(resumed, ["a", "b"])
        self.assertEqual((pending.messages, pending.size, pending.pauses), (0, 0, 1))

    def test_fullOverBytes(self) -> None:
        """
        Over C{maxBytes} it is full too; relieved when both are at or below
        half (the other limit 0 is off).
        """
        pending = PendingWrites(0, 1000)
        pending.add(1, 1001)
        self.assertTrue(pending.full)
        pending.add(1, 10)
        pending.done(1, 1001)
        self.assertFalse(pending.full)
        both = PendingWrites(10, 1000)
        both.add(2, 2000)
        both.done(1, 1500)
        self.assertFalse(both.full)

    def test_offByDefault(self) -> None:
        """
        With both limits 0 it is never full, and a reader is resumed at once.
        """
        pending = PendingWrites()
        pending.add(10 ** 9, 10 ** 12)
        self.assertFalse(pending.full)
        resumed: list[bool] = []
        pending.whenRelieved(lambda: resumed.append(True))
        self.assertEqual(resumed, [True])

    def test_onceAndForget(self) -> None:
        """
        A reader that waits already is not added twice; one forgotten is
        not called.
        """
        pending = PendingWrites(1, 0)
        calls: list[str] = []

        class Reader:
            def __init__(self, name: str) -> None:
                self.name = name

            def resume(self) -> None:
                calls.append(self.name)

        a, b = Reader("a"), Reader("b")
        pending.add(2, 0)
        pending.whenRelieved(a.resume)
        pending.whenRelieved(a.resume)
        pending.whenRelieved(b.resume)
        self.assertEqual(pending.waiting, 2)
        pending.forget(b.resume)
        pending.forget(b.resume)
        pending.done(2, 0)
        self.assertEqual(calls, ["a"])


class AgeBoundTests(SynchronousTestCase):
    """
    L{PendingWrites} with C{maxSeconds}: full once a message is added while
    the oldest one waiting is that old, until what waited then is written.
    """

    def test_fullWhenOldestTooOld(self) -> None:
        """
        Messages added while the oldest waits less than C{maxSeconds} leave
        it open; the first one added once it waits C{maxSeconds} makes it
        full (and late), and a pause is counted.
        """
        pending = PendingWrites(0, 0, 0.1)
        pending.add(1, 10, 100.0)
        pending.add(1, 10, 100.05)
        pending.add(1, 10, 100.099)
        self.assertEqual((pending.full, pending.late, pending.pauses), (False, False, 0))
        pending.add(1, 10, 100.101)
        self.assertEqual((pending.full, pending.late, pending.pauses), (True, True, 1))

    def test_relievedWhenWhatWaitedIsWritten(self) -> None:
        """
        Late, it is relieved once every message added before it became late
        is written, not before; then the readers are resumed.  What was added
        after (already read) need not be.
        """
        pending = PendingWrites(0, 0, 0.1)
        resumed: list[bool] = []
        for i in range(4):
            pending.add(1, 0, 100.0 + i * 0.04)  # 100.0 .. 100.12: the last makes it late
        self.assertTrue(pending.late)
        pending.add(1, 0, 100.13)  # read before the sender was paused
        pending.whenRelieved(lambda: resumed.append(True))
        pending.done(2, 0)
        self.assertEqual((pending.full, resumed), (True, []))
        pending.done(1, 0)  # the three before the one that made it late
        self.assertEqual((pending.full, pending.late, resumed), (False, False, [True]))
        self.assertEqual(pending.messages, 2)

    def test_writtenInTimeStaysOpen(self) -> None:
        """
        A writer that keeps up (each message written within C{maxSeconds})
        never makes it full, however long the stream.
        """
        pending = PendingWrites(0, 0, 0.05)
        for i in range(10000):
            pending.add(1, 0, 100.0 + i * 0.001)
            if i % 30 == 29:  # a commit every 30 ms
                pending.done(30, 0)
        self.assertEqual((pending.full, pending.pauses), (False, 0))
        self.assertLessEqual(len(pending._marks), 3)

    def test_oldestWrittenNewerMarkCounts(self) -> None:
        """
        Once the oldest messages are written, the age is the next mark's:
        a mark is written when the next one's first message is.
        """
        pending = PendingWrites(0, 0, 0.1)
        pending.add(2, 0, 100.0)
        pending.add(1, 0, 100.03)  # a new mark (a step is 25 ms)
        pending.done(2, 0)
        pending.add(1, 0, 100.12)  # the oldest waiting is from 100.03
        self.assertFalse(pending.full)
        pending.add(1, 0, 100.131)
        self.assertTrue(pending.full)

    def test_emptyStartsAfresh(self) -> None:
        """
        Once everything is written, an old first mark is forgotten: the
        next message starts the age anew.
        """
        pending = PendingWrites(0, 0, 0.1)
        pending.add(1, 0, 100.0)
        pending.done(1, 0)
        pending.add(1, 0, 200.0)
        pending.add(1, 0, 200.05)
        self.assertFalse(pending.full)

    def test_offIgnoresTime(self) -> None:
        """
        With C{maxSeconds} 0 the time given is never looked at.
        """
        pending = PendingWrites(0, 0, 0)
        pending.add(1, 0, 0.0)
        pending.add(1, 0, 10 ** 9)
        self.assertEqual((pending.full, pending._marks), (False, type(pending._marks)()))

    def test_withCountLimit(self) -> None:
        """
        Late and over C{maxMessages}: relieved only when both are cleared.
        """
        pending = PendingWrites(4, 0, 0.1)
        pending.add(3, 0, 100.0)
        pending.add(3, 0, 100.2)
        self.assertEqual((pending.full, pending.late, pending.pauses), (True, True, 1))
        pending.done(3, 0)  # written what waited when late; 3 > 2 still wait
        self.assertEqual((pending.full, pending.late), (True, False))
        pending.done(1, 0)
        self.assertFalse(pending.full)

    def test_setLimitsKeepsAge(self) -> None:
        """
        L{PendingWrites.setLimits} (the notifier's reload of its count)
        changes the counts only: the age bound stays and still pauses.
        """
        pending = PendingWrites(4, 0, 0.1)
        pending.setLimits(1000, 0)
        self.assertEqual((pending.maxMessages, pending.maxSeconds), (1000, 0.1))
        pending.add(1, 0, 100.0)
        pending.add(1, 0, 100.2)
        self.assertEqual((pending.full, pending.late), (True, True))


class SlowDatabase:
    """
    A L{wsserver.database.Database} whose thread runs each interaction only
    when the test calls L{finish}, on an in-memory SQLite database with the
    real schema, in a transaction of its own.
    """

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        for statement in _creation():
            self.connection.execute(statement)
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.transactions = 0
        self.writers: list[Any] = []
        self.failNext = False

    def readNow(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        return self.connection.execute(query, parameters).fetchall()

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def run(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queued.append((interaction, args, d))
        return d

    def finish(self) -> None:
        """
        Run the oldest interaction handed over, and fire its result.
        """
        interaction, args, d = self.queued.pop(0)
        if self.failNext:
            self.failNext = False
            d.errback(Failure(sqlite3.OperationalError("disk I/O error")))
            return
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        try:
            result = interaction(cursor, *args)
        except BaseException:
            cursor.execute("ROLLBACK")
            d.errback()
            return
        cursor.execute("COMMIT")
        self.transactions += 1
        d.callback(result)

    def finishAll(self) -> None:
        while self.queued:
            self.finish()


class GroupCommitTests(SynchronousTestCase):
    """
    L{SqliteUndeliveredStore} writes what it is given in one turn in one
    transaction, one at a time, and counts what waits in its
    L{PendingWrites}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.db = SlowDatabase(self.clock)
        self.pending = PendingWrites(4, 0)
        self.store = SqliteUndeliveredStore(self.db, 3600, 3, self.clock, self.pending)  # type: ignore[arg-type]

    def fetched(self, userId: int) -> list[bytes]:
        d = self.store.fetch(userId, 10.0)
        self.db.finishAll()
        return [payload for _, payload in self.successResultOf(d)]

    def test_oneTransactionPerTurn(self) -> None:
        """
        The puts of one turn are one transaction, handed over at the end of
        the turn; each put's L{Deferred} fires once it is committed.
        """
        puts = [self.store.put(1, b"m%d" % i, 1.0) for i in range(3)]
        self.assertEqual(self.db.queued, [])
        self.clock.advance(0)
        self.assertEqual(len(self.db.queued), 1)
        self.assertNoResult(puts[0])
        self.db.finish()
        for d in puts:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.db.transactions, 1)
        self.assertEqual(self.fetched(1), [b"m0", b"m1", b"m2"])
        self.assertEqual(self.db.writers, [self.store._writer])

    def test_batchGrowsBehindSlowDisk(self) -> None:
        """
        While a batch is written, what is kept waits and goes in the next
        one, however many turns pass: one transaction in flight at a time.
        """
        self.store.put(1, b"a", 1.0)
        self.clock.advance(0)
        for i in range(5):
            self.store.putMany([2, 3], b"b%d" % i, 1.0)
            self.clock.advance(0)
        self.assertEqual(len(self.db.queued), 1)
        self.db.finish()
        self.assertEqual(len(self.db.queued), 1)
        self.db.finish()
        self.assertEqual(self.db.transactions, 2)

    def test_fetchSeesPendingPuts(self) -> None:
        """
        A fetch right after a put (same turn, nothing handed over yet) sees
        it: the batch goes to the database thread first.
        """
        self.store.put(1, b"a", 1.0)
        d = self.store.fetch(1, 1.0)
        self.db.finishAll()
        self.assertEqual([p for _, p in self.successResultOf(d)], [b"a"])
        pendingCount = self.store.pending(1)
        self.db.finishAll()
        self.assertEqual(self.successResultOf(pendingCount), 1)

    def test_droppedExact(self) -> None:
        """
        C{maxPerUser} (3) trims once per batch, and counts exactly what a
        trim after each put would have dropped.
        """
        for i in range(5):
            self.store.put(1, b"m%d" % i, 1.0)
        self.store.putMany([1, 2], b'{"id":"s","recipients":[1,2]}', 1.0)
        self.clock.advance(0)
        self.db.finishAll()
        self.assertEqual(self.store.dropped, 3)
        self.assertEqual(self.fetched(1), [b"m3", b"m4", b'{"id":"s","recipients":[1]}'])
        self.assertEqual(self.db.readNow("SELECT value FROM counters WHERE name = 'dropped'"), [(3,)])

    def test_pendingCounted(self) -> None:
        """
        What waits to be written is counted from the put to the commit:
        over the bound it is full, and relieved when the batch is committed.
        """
        for i in range(5):
            self.store.put(1, b"xx", 1.0)
        self.store.putMany([2, 3], b"yyy", 1.0)
        self.assertEqual((self.pending.messages, self.pending.size, self.pending.full), (7, 13, True))
        self.clock.advance(0)
        self.db.finish()
        self.assertEqual((self.pending.messages, self.pending.size, self.pending.full), (0, 0, False))

    def test_ageCounted(self) -> None:
        """
        The store hands each put's C{now} to its L{PendingWrites}: a put
        while an older one waits C{maxSeconds} makes it full; the commit of
        the older ones relieves it.
        """
        pending = PendingWrites(0, 0, 0.05)
        store = SqliteUndeliveredStore(self.db, 3600, 3, self.clock, pending)  # type: ignore[arg-type]
        store.put(1, b"a", 1.0)
        self.clock.advance(0)
        store.putMany([2, 3], b"b", 1.04)
        self.assertFalse(pending.full)
        store.put(1, b"c", 1.05)
        self.assertTrue(pending.late)
        self.db.finish()
        self.assertTrue(pending.full)  # b waited when it became late
        self.clock.advance(0)
        self.db.finish()
        self.assertEqual((pending.full, pending.messages), (False, 0))

    def test_failedWriteStopsWaiting(self) -> None:
        """
        A batch whose write failed no longer waits (the bound is relieved)
        and its puts fail.
        """
        puts = [self.store.put(1, b"x", 1.0) for _ in range(5)]
        self.assertTrue(self.pending.full)
        self.clock.advance(0)
        self.db.failNext = True
        self.db.finish()
        self.assertFalse(self.pending.full)
        for d in puts:
            self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)


class BackPressureTests(SynchronousTestCase):
    """
    While what the undelivered queue has not written is over its bound, a
    WebSocket sender is not read; it is read again once the writer caught
    up.  Nothing is dropped.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.db = SlowDatabase(self.clock)
        self.pending = PendingWrites(2, 0)
        self.store = SqliteUndeliveredStore(self.db, 3600, 1000, self.clock, self.pending)  # type: ignore[arg-type]
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             store=self.store, pendingWrites=self.pending)
        config = LimitsConfig()
        self.hub = Hub(self.router, Limits(config, self.clock), buildAuthenticator(AuthConfig()), self.clock)

    def open(self, userId: int) -> tuple[Session, FakeWire]:
        wire = FakeWire()
        session = Session(self.hub, wire, self.clock)
        session.connected("10.0.0.1", "tcp:10.0.0.1:4000", wire.write)
        self.assertIsNone(session.handshake("/chat", None, {"id": [str(userId)]}, {}))
        session.opened()
        return session, wire

    def send(self, session: Session, text: str) -> None:
        session.received(orjson.dumps({"type": "text", "text": text, "recipients": [9]}), False)

    def test_pausedUntilCaughtUp(self) -> None:
        """
        The message that makes the bound full pauses its sender's reading
        (once); what it sends meanwhile (already read) is kept; the commit
        resumes it.
        """
        session, wire = self.open(1)
        other, otherWire = self.open(2)
        self.send(session, "a")
        self.send(session, "b")
        self.assertEqual(wire.reading, [])
        self.send(session, "c")
        self.assertEqual(wire.reading, [False])
        self.send(session, "d")
        self.send(other, "e")
        self.assertEqual((wire.reading, otherWire.reading), ([False], [False]))
        self.clock.advance(0)
        self.db.finishAll()  # (the drains of 1 and 2, then the batch)
        self.assertEqual((wire.reading, otherWire.reading), ([False, True], [False, True]))
        d = self.store.fetch(9, self.clock.seconds())
        self.db.finishAll()
        texts = [orjson.loads(p)["text"] for _, p in self.successResultOf(d)]
        self.assertEqual(texts, ["a", "b", "c", "d", "e"])

    def test_lostWhileWaiting(self) -> None:
        """
        A sender whose connection is lost while it waits is forgotten.
        """
        session, wire = self.open(1)
        for text in "abc":
            self.send(session, text)
        self.assertEqual(self.pending.waiting, 1)
        session.lost()
        self.assertEqual(self.pending.waiting, 0)
        self.clock.advance(0)
        self.db.finishAll()
        self.assertEqual(wire.reading, [False])
