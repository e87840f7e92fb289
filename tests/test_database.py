"""
Tests for L{wsserver.database} and the stores in it (L{wsserver.queue.sqlite},
L{wsserver.events.sqlite}): the SQLite stores behave like the memory
ones (the same test mixins run against both), survive a restart (and a crash
of the process), and L{openDatabase} refuses files that are not ours without
touching them.

The SQLite stores answer from a thread, so these tests are asynchronous.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from typing import Any, Callable, Coroutine

import orjson

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from wsserver.events.store import Delivery, IEventStore, MemoryEventStore, emptyCounts, moved
from wsserver.database import (
    APPLICATION_ID,
    DATABASE_FILENAME,
    SCHEMA_VERSION,
    Database,
    StorageError,
    openDatabase,
)
from wsserver.messages import Message
from wsserver.events.sqlite import SqliteEventStore
from wsserver.queue import IUndeliveredStore
from wsserver.queue.memory import MemoryUndeliveredStore
from wsserver.queue.sqlite import SqliteUndeliveredStore

LARGEST = 2**64 - 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def asyncTest(f: Callable[[Any], Coroutine[Any, Any, None]]) -> Callable[[Any], Deferred[None]]:
    """
    Run an C{async def} test method as a L{Deferred}, which trial waits for.
    """

    @functools.wraps(f)
    def run(self: Any) -> Deferred[None]:
        return ensureDeferred(f(self))

    return run


class DatabaseMixin:
    """
    Open databases in a temporary directory and close them all at cleanup.
    """

    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]

    def databasePath(self) -> str:
        """
        A new database path, in a data directory that does not exist yet.
        """
        if not hasattr(self, "_path"):
            self._path = os.path.join(os.path.abspath(self.mktemp()), "data", DATABASE_FILENAME)
        return self._path

    def openDatabase(self) -> Database:
        """
        Open the test's database, closed at cleanup.
        """
        db = openDatabase(self.databasePath())
        self.addCleanup(db.close)
        return db


class UndeliveredStoreTestsMixin:
    """
    The behaviour of every L{IUndeliveredStore}; C{makeStore} gives one with
    C{ttlSeconds=100, maxPerUser=3}.
    """

    store: Any
    assertEqual: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertTrue: Callable[..., None]

    def makeStore(self) -> Any:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.store = self.makeStore()

    async def fetch(self, userId: int, now: float = 0) -> list[tuple[int, bytes]]:
        result: list[tuple[int, bytes]] = await self.store.fetch(userId, now)
        return result

    async def payloads(self, userId: int, now: float = 0) -> list[bytes]:
        return [payload for _, payload in await self.fetch(userId, now)]

    async def put(self, userId: int, payload: bytes, now: float = 0) -> None:
        self.assertIsNone(await self.store.put(userId, payload, now))

    def test_interface(self) -> None:
        """
        The store provides L{IUndeliveredStore}.
        """
        self.assertTrue(verifyObject(IUndeliveredStore, self.store))

    @asyncTest
    async def test_fetchEmpty(self) -> None:
        """
        A user with nothing stored gets an empty list, and nothing pending.
        """
        self.assertEqual(await self.fetch(1), [])
        self.assertEqual(await self.store.pending(1), 0)
        self.assertEqual(self.store.dropped, 0)

    @asyncTest
    async def test_stringIds(self) -> None:
        """
        String ids (C{chat.userIds: "any"}) have queues of their own: C{"-5"}
        is not 2^64-5 (stored as -5), C{"a:b"} not C{"a"}; a shared message
        is rewritten for each, its recipient written as a string.
        """
        payload = orjson.dumps(Message("X", "text", "hi", "t", 1, ["-5", LARGEST - 4, "a:b"], None).toDict())
        await self.store.putMany(["-5", LARGEST - 4, "a:b"], payload, 0)
        await self.put("a", b"only-a", 0)
        for userId in ("-5", LARGEST - 4, "a:b"):
            (got,) = await self.payloads(userId)
            self.assertEqual(orjson.loads(got)["recipients"], [userId])
            self.assertEqual(await self.store.pending(userId), 1)
        self.assertEqual(await self.payloads("a"), [b"only-a"])
        keys = [key for key, _ in await self.fetch("-5")]
        await self.store.ack("-5", keys)
        self.assertEqual((await self.store.pending("-5"), await self.store.pending(LARGEST - 4)), (0, 1))

    @asyncTest
    async def test_putFetchOrder(self) -> None:
        """
        C{fetch} answers the stored payloads oldest first, each with a
        distinct key, increasing in the order of C{put}.
        """
        await self.put(1, b"a", 1)
        await self.put(1, b"b", 2)
        await self.put(1, b"c", 3)
        fetched = await self.fetch(1, 4)
        self.assertEqual([p for _, p in fetched], [b"a", b"b", b"c"])
        keys = [k for k, _ in fetched]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual(len(keys), 3)
        self.assertTrue(all(isinstance(p, bytes) for _, p in fetched))

    @asyncTest
    async def test_putsInFlight(self) -> None:
        """
        C{put}s asked for without waiting for each other are stored in the
        order they were asked for.
        """
        await gatherResults([self.store.put(1, b"%d" % (i,), 0) for i in range(3)])
        self.assertEqual(await self.payloads(1), [b"0", b"1", b"2"])

    @asyncTest
    async def test_fetchDoesNotRemove(self) -> None:
        """
        C{fetch} leaves the messages stored: a second C{fetch} answers the
        same, and C{pending} still counts them.
        """
        await self.put(1, b"a")
        await self.put(1, b"b")
        first = await self.fetch(1)
        self.assertEqual(await self.fetch(1), first)
        self.assertEqual(await self.store.pending(1), 2)

    @asyncTest
    async def test_ackRemovesOnlyGivenKeys(self) -> None:
        """
        C{ack} forgets the messages with the given keys and keeps the others
        in their order.
        """
        await self.put(1, b"a")
        await self.put(1, b"b")
        await self.put(1, b"c")
        (ka, _), (kb, _), (kc, _) = await self.fetch(1)
        self.assertIsNone(await self.store.ack(1, [ka, kc]))
        self.assertEqual(await self.fetch(1), [(kb, b"b")])
        self.assertEqual(await self.store.pending(1), 1)
        self.assertIsNone(await self.store.ack(1, iter([kb])))
        self.assertEqual(await self.fetch(1), [])
        self.assertEqual(await self.store.pending(1), 0)
        self.assertIsNone(await self.store.ack(1, []))
        self.assertEqual(self.store.dropped, 0)

    @asyncTest
    async def test_ackKeepsMessagesPutAfterFetch(self) -> None:
        """
        A message put between C{fetch} and C{ack} stays stored.
        """
        await self.put(1, b"a")
        keys = [k for k, _ in await self.fetch(1)]
        await self.put(1, b"b")
        await self.store.ack(1, keys)
        self.assertEqual(await self.payloads(1), [b"b"])

    @asyncTest
    async def test_ackUnknown(self) -> None:
        """
        C{ack} of unknown keys, or for a user with nothing stored, changes
        nothing.
        """
        await self.put(1, b"a")
        ((key, _),) = await self.fetch(1)
        await self.store.ack(1, [key + 100])
        await self.store.ack(2, [key])
        self.assertEqual(await self.fetch(1), [(key, b"a")])
        self.assertEqual(await self.store.pending(2), 0)

    @asyncTest
    async def test_ackOtherUsersKey(self) -> None:
        """
        C{ack} for one user does not forget another user's message, even with
        its key.
        """
        await self.put(1, b"a")
        await self.put(2, b"b")
        ((key2, _),) = await self.fetch(2)
        await self.store.ack(1, [key2])
        self.assertEqual(await self.payloads(1), [b"a"])
        self.assertEqual(await self.payloads(2), [b"b"])

    @asyncTest
    async def test_perUserIsolation(self) -> None:
        """
        Each user has their own queue.
        """
        await self.put(1, b"a1")
        await self.put(2, b"b1")
        await self.put(1, b"a2")
        self.assertEqual(await self.payloads(1), [b"a1", b"a2"])
        self.assertEqual(await self.payloads(2), [b"b1"])
        self.assertEqual(await self.store.pending(1), 2)
        self.assertEqual(await self.store.pending(2), 1)
        self.assertEqual(await self.store.pending(3), 0)

    @asyncTest
    async def test_largestUserIds(self) -> None:
        """
        User ids are unsigned 64-bit: C{2**64-1}, C{2**63} and C{2**63-1} are
        three users, distinct from 0 and 1 (whose bits differ from theirs
        only in the sign, once stored).
        """
        users = [0, 1, 2**63 - 1, 2**63, LARGEST]
        for user in users:
            await self.put(user, b"for %d" % (user,))
        await self.put(LARGEST, b"again")
        for user in users[:-1]:
            self.assertEqual(await self.payloads(user), [b"for %d" % (user,)])
        self.assertEqual(await self.payloads(LARGEST), [b"for %d" % (LARGEST,), b"again"])
        self.assertEqual(await self.store.pending(LARGEST), 2)
        keys = [key for key, _ in await self.fetch(LARGEST)]
        await self.store.ack(LARGEST, keys)
        self.assertEqual(await self.store.pending(LARGEST), 0)
        self.assertEqual(await self.store.pending(0), 1)

    @asyncTest
    async def test_ttlOnFetch(self) -> None:
        """
        C{fetch} leaves out (and drops) the messages older than C{ttlSeconds};
        a message exactly C{ttlSeconds} old is kept.
        """
        await self.put(1, b"old", 0)
        await self.put(1, b"new", 50)
        self.assertEqual(await self.payloads(1, 100), [b"old", b"new"])
        self.assertEqual(self.store.dropped, 0)
        self.assertEqual(await self.payloads(1, 101), [b"new"])
        self.assertEqual(self.store.dropped, 1)
        self.assertEqual(await self.store.pending(1), 1)
        self.assertEqual(await self.payloads(1, 151), [])
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(await self.store.pending(1), 0)

    @asyncTest
    async def test_prune(self) -> None:
        """
        C{prune} drops the expired messages of every user, answers how many,
        and counts them in C{dropped}.
        """
        await self.put(1, b"a1", 0)
        await self.put(1, b"a2", 30)
        await self.put(2, b"b1", 10)
        await self.put(3, b"c1", 80)
        self.assertEqual(await self.store.prune(100), 0)
        self.assertEqual(await self.store.prune(111), 2)
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(await self.payloads(1, 111), [b"a2"])
        self.assertEqual(await self.store.pending(2), 0)
        self.assertEqual(await self.payloads(3, 111), [b"c1"])
        self.assertEqual(await self.store.prune(1000), 2)
        self.assertEqual(self.store.dropped, 4)
        total = sum([await self.store.pending(user) for user in (1, 2, 3)])
        self.assertEqual(total, 0)

    @asyncTest
    async def test_pruneFractionalTimes(self) -> None:
        """
        C{prune} uses the rule of C{fetch} with times that are not whole
        seconds: a message is dropped once it is more than C{ttlSeconds} old.
        """
        await self.put(1, b"a", 1000.25)
        await self.put(1, b"b", 1000.5)
        self.assertEqual(await self.store.prune(1100.25), 0)
        self.assertEqual(await self.store.prune(1100.3), 1)
        self.assertEqual(await self.payloads(1, 1100.5), [b"b"])
        self.assertEqual(await self.payloads(1, 1100.75), [])
        self.assertEqual(self.store.dropped, 2)

    @asyncTest
    async def test_maxPerUser(self) -> None:
        """
        Over C{maxPerUser} messages for one user, the oldest are dropped and
        counted; other users are not affected.
        """
        await self.put(2, b"other")
        for i in range(5):
            await self.put(1, b"m%d" % (i,))
        self.assertEqual(await self.payloads(1), [b"m2", b"m3", b"m4"])
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(await self.store.pending(1), 3)
        self.assertEqual(await self.payloads(2), [b"other"])

    @asyncTest
    async def test_droppedAccumulates(self) -> None:
        """
        C{dropped} counts both the messages over C{maxPerUser} and the expired
        ones.
        """
        for i in range(4):
            await self.put(1, b"m%d" % (i,), 0)
        self.assertEqual(self.store.dropped, 1)
        await self.put(2, b"x", 0)
        self.assertEqual(await self.store.prune(200), 4)
        self.assertEqual(self.store.dropped, 5)

    async def putMany(self, userIds: list[int], payload: bytes, now: float = 0) -> None:
        self.assertIsNone(await self.store.putMany(userIds, payload, now))

    @asyncTest
    async def test_putManyFetchedAsCopy(self) -> None:
        """
        Each user of a C{putMany} fetches the message, in its place among
        the others, with C{recipients} C{[user]} and nothing else changed;
        it counts as one message per user.
        """
        payload = message([3, LARGEST, 2**63, 9])
        await self.put(LARGEST, b"before", 0)
        await self.putMany([LARGEST, 2**63, 9], payload, 1)
        await self.put(LARGEST, b"after", 2)
        self.assertEqual(await self.payloads(LARGEST, 3), [b"before", copyFor(payload, LARGEST), b"after"])
        self.assertEqual(await self.payloads(2**63, 3), [copyFor(payload, 2**63)])
        self.assertEqual(await self.payloads(9, 3), [copyFor(payload, 9)])
        self.assertEqual(await self.payloads(3, 3), [])
        self.assertEqual(await self.store.pending(LARGEST), 3)
        self.assertEqual(await self.store.pending(9), 1)

    @asyncTest
    async def test_putManyAckOneUser(self) -> None:
        """
        The C{ack} of one user forgets the message for that user only: the
        others still fetch it, until they acknowledge it too.
        """
        payload = message([1, 2, 3])
        await self.putMany([1, 2, 3], payload)
        ((key1, _),) = await self.fetch(1)
        await self.store.ack(1, [key1])
        self.assertEqual(await self.fetch(1), [])
        ((key2, got2),) = await self.fetch(2)
        self.assertEqual(got2, copyFor(payload, 2))
        await self.store.ack(2, [key2])
        self.assertEqual(await self.payloads(3), [copyFor(payload, 3)])
        self.assertEqual(await self.store.pending(3), 1)

    @asyncTest
    async def test_putManyMaxPerUser(self) -> None:
        """
        A C{putMany} message counts towards each of its users'
        C{maxPerUser}: the oldest of a full queue is dropped (and counted),
        the other users keep theirs.
        """
        for i in range(3):
            await self.put(1, b"m%d" % (i,))
        payload = message([1, 2])
        await self.putMany([1, 2], payload)
        self.assertEqual(await self.payloads(1), [b"m1", b"m2", copyFor(payload, 1)])
        self.assertEqual(self.store.dropped, 1)
        for i in range(3):
            await self.put(1, b"n%d" % (i,))
        self.assertEqual(await self.payloads(1), [b"n0", b"n1", b"n2"])
        self.assertEqual(await self.payloads(2), [copyFor(payload, 2)])
        self.assertEqual(self.store.dropped, 4)

    @asyncTest
    async def test_putManyTtl(self) -> None:
        """
        A C{putMany} message expires after C{ttlSeconds} for each of its
        users, when fetched or pruned, and is counted once per user.
        """
        payload = message([1, 2, 3])
        await self.putMany([1, 2, 3], payload, 10)
        self.assertEqual(await self.payloads(1, 110), [copyFor(payload, 1)])
        self.assertEqual(await self.payloads(1, 111), [])
        self.assertEqual(self.store.dropped, 1)
        self.assertEqual(await self.store.prune(110), 0)
        self.assertEqual(await self.store.prune(111), 2)
        self.assertEqual(self.store.dropped, 3)
        self.assertEqual(await self.store.pending(2) + await self.store.pending(3), 0)

    @asyncTest
    async def test_putManyNobody(self) -> None:
        """
        C{putMany} for no user keeps nothing.
        """
        await self.putMany([], message([1]))
        self.assertEqual(await self.store.pending(1), 0)


def message(recipients: list[int], text: str = "hi") -> bytes:
    """
    A message for C{recipients}, serialized as the router does.
    """
    return Message("ID-1", "text", text, "2026-01-01T00:00:00.000000+00:00", 1, recipients, {"n": 1}).serialize()


def copyFor(payload: bytes, userId: int) -> bytes:
    """
    The copy of C{payload} for C{userId}, made by a full parse.
    """
    obj = orjson.loads(payload)
    obj["recipients"] = [userId]
    return orjson.dumps(obj)


class MemoryUndeliveredStoreTests(UndeliveredStoreTestsMixin, TestCase):
    """
    L{MemoryUndeliveredStore} passes the shared tests (the model of the
    SQLite store).
    """

    def makeStore(self) -> Any:
        return MemoryUndeliveredStore(ttlSeconds=100, maxPerUser=3)


class SqliteUndeliveredStoreTests(UndeliveredStoreTestsMixin, DatabaseMixin, TestCase):
    """
    L{SqliteUndeliveredStore} behaves like the memory store, and keeps its
    messages and its C{dropped} counter across a restart.
    """

    def makeStore(self) -> Any:
        return SqliteUndeliveredStore(self.openDatabase(), ttlSeconds=100, maxPerUser=3)

    async def reopen(self) -> Any:
        """
        Close the store's database and open it again, as a restart does.
        """
        await self.store._db.close()
        self.store = self.makeStore()
        return self.store

    @asyncTest
    async def test_survivesRestart(self) -> None:
        """
        Messages fetched but not acknowledged (a crash between store and
        delivery) are still there, in order and with the same keys, after
        the database was closed and opened again; so are the other users'.
        """
        await self.put(LARGEST, b"a", 1)
        await self.put(LARGEST, b"b", 2)
        await self.put(5, b"c", 3)
        before = await self.fetch(LARGEST, 4)
        await self.reopen()
        self.assertEqual(await self.fetch(LARGEST, 4), before)
        self.assertEqual(await self.payloads(5, 4), [b"c"])
        self.assertEqual(await self.store.pending(LARGEST), 2)

    @asyncTest
    async def test_ackSurvivesRestart(self) -> None:
        """
        Acknowledged messages stay forgotten after a restart, and keys are
        never reused: a message put after the restart has a greater key.
        """
        await self.put(1, b"a")
        await self.put(1, b"b")
        keys = [key for key, _ in await self.fetch(1)]
        await self.store.ack(1, keys)
        await self.reopen()
        self.assertEqual(await self.fetch(1), [])
        await self.put(1, b"c")
        ((key, payload),) = await self.fetch(1)
        self.assertEqual(payload, b"c")
        self.assertTrue(key > max(keys))

    @asyncTest
    async def test_droppedSurvivesRestart(self) -> None:
        """
        C{dropped} is persisted: a reopened store starts from the count it
        had, and goes on counting.
        """
        for i in range(5):
            await self.put(1, b"m%d" % (i,), 0)
        self.assertEqual(self.store.dropped, 2)
        await self.reopen()
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(await self.store.prune(500), 3)
        self.assertEqual(self.store.dropped, 5)
        await self.reopen()
        self.assertEqual(self.store.dropped, 5)

    @asyncTest
    async def test_survivesCrash(self) -> None:
        """
        What a process put is there after the process died without closing
        the database (C{os._exit} right after the C{put}s and the event
        store's C{stored} fired): a commit is durable before its
        L{Deferred} fires.
        """
        path = self.databasePath()
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", CRASHER, path], env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT
        )
        self.assertEqual((code, err), (17, b""), out)
        self.assertTrue(os.path.exists(path + "-wal"))
        db = self.openDatabase()
        store = SqliteUndeliveredStore(db, ttlSeconds=100, maxPerUser=3)
        self.assertEqual([p for _, p in await store.fetch(LARGEST, 3)], [b"a", b"b"])
        deliveries = await SqliteEventStore(db).due(10, 10, frozenset())
        self.assertEqual([(d.primary, d.payload) for d in deliveries], [("targets[0]", b"e")])

    async def rows(self) -> tuple[int, int, int]:
        """
        How many rows C{messages} and C{undelivered} hold, and the total
        length of the stored payloads.
        """

        def count(cursor: Any) -> tuple[int, int, int]:
            cursor.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages")
            messages, size = cursor.fetchone()
            cursor.execute("SELECT COUNT(*) FROM undelivered")
            return messages, cursor.fetchone()[0], size

        result: tuple[int, int, int] = await self.store._db.run(count)
        return result

    @asyncTest
    async def test_putManyStoredOnce(self) -> None:
        """
        A C{putMany} message is one row of C{messages} (its payload once)
        and one small row per user; C{put} stores its payload once too.
        """
        payload = message(list(range(1, 51)), "x" * 10_000)
        await self.putMany(list(range(1, 51)), payload)
        self.assertEqual(await self.rows(), (1, 50, len(payload)))
        await self.put(7, b"single")
        self.assertEqual(await self.rows(), (2, 51, len(payload) + len(b"single")))

    @asyncTest
    async def test_messageGoesWithItsLastUser(self) -> None:
        """
        The payload of a C{putMany} message is deleted when its last user's
        row goes, whichever way: an C{ack}, C{maxPerUser}, or its age.
        """
        shared = message([1, 2, 3])
        later = message([1, 2], "later")
        await self.putMany([1, 2, 3], shared, 0)
        await self.putMany([1, 2], later, 50)
        await self.store.ack(1, [key for key, _ in await self.fetch(1)])
        self.assertEqual(await self.rows(), (2, 3, len(shared) + len(later)))
        for i in range(3):
            await self.put(2, b"m%d" % (i,), 60)
        self.assertEqual(await self.payloads(2, 60), [b"m0", b"m1", b"m2"])
        self.assertEqual(await self.rows(), (4, 4, len(shared) + 6))
        self.assertEqual(await self.store.prune(100), 0)
        self.assertEqual(await self.store.prune(101), 1)
        self.assertEqual(await self.rows(), (3, 3, 6))
        self.assertEqual(await self.store.prune(160), 0)
        self.assertEqual(await self.store.prune(161), 3)
        self.assertEqual(await self.rows(), (0, 0, 0))

    @asyncTest
    async def test_putManySurvivesRestart(self) -> None:
        """
        A C{putMany} message is still there for each user, as a copy for
        that user, after a restart.
        """
        payload = message([1, 2])
        await self.putMany([1, 2], payload, 1)
        await self.reopen()
        self.assertEqual(await self.payloads(1, 2), [copyFor(payload, 1)])
        self.assertEqual(await self.payloads(2, 2), [copyFor(payload, 2)])


class ManyOfflineRecipientsTests(DatabaseMixin, TestCase):
    """
    A large message for many offline users, through the router, into the
    SQLite store and out again when they connect.
    """

    @asyncTest
    async def test_storedOnceDeliveredToEach(self) -> None:
        """
        One 200 KB message for 2,000 offline users (and one online) takes
        about 200 KB on disk, not 2,000 copies; each user gets it, with
        C{recipients} C{[user]}, when they connect; then it is gone.
        """
        from zoneinfo import ZoneInfo

        from twisted.internet.task import Clock

        from wsserver.config import MessageConfig
        from wsserver.messages import MessageFactory
        from wsserver.routing import Router

        from .test_routing import FakeConnection

        db = self.openDatabase()
        store = SqliteUndeliveredStore(db, ttlSeconds=3600, maxPerUser=10)
        clock = Clock()
        clock.advance(1000)
        router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC")), store)
        sender = FakeConnection(1)
        router.attach(sender)
        online = FakeConnection(5000)
        router.attach(online)
        offline = list(range(2, 2002))
        text = "x" * 200_000
        router.receive(sender, orjson.dumps({"type": "text", "text": text, "recipients": offline + [5000]}))
        await db.run(lambda cursor: None)

        def size(cursor: Any) -> tuple[int, int, int]:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages")
            (payloads,) = cursor.fetchone()
            cursor.execute("PRAGMA page_count")
            (pages,) = cursor.fetchone()
            cursor.execute("PRAGMA page_size")
            return payloads, pages, cursor.fetchone()[0]

        payloads, pages, pageSize = await db.run(size)
        (sent,) = online.sent
        self.assertTrue(len(text) < payloads < len(sent) + 100, payloads)
        self.assertTrue(pages * pageSize < 600_000, pages * pageSize)
        self.assertEqual(os.path.getsize(db.path), pages * pageSize)

        connections = [FakeConnection(user) for user in offline]
        for connection in connections:
            router.attach(connection)
        await db.run(lambda cursor: None)
        expected = orjson.loads(sent)
        for connection in connections:
            (got,) = connection.received()
            self.assertEqual(got, dict(expected, recipients=[connection.userId]))
        await db.run(lambda cursor: None)

        def left(cursor: Any) -> tuple[int, int]:
            cursor.execute("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM undelivered)")
            return cursor.fetchone()

        self.assertEqual(await db.run(left), (0, 0))


CRASHER = """
import os, sys
from twisted.internet import reactor
from wsserver.database import openDatabase
from wsserver.events.sqlite import SqliteEventStore
from wsserver.queue.sqlite import SqliteUndeliveredStore

db = openDatabase(sys.argv[1])
store = SqliteUndeliveredStore(db, 100, 3)
events = SqliteEventStore(db)

def run():
    d = store.put(2**64 - 1, b"a", 1)
    d.addCallback(lambda _: store.put(2**64 - 1, b"b", 2))
    d.addCallback(lambda _: events.add([("targets[0]", b"e")], 3))
    # the new deliveries are answered before they are written; stored()
    # fires once they are committed
    d.addCallback(lambda _: events.stored())
    d.addCallback(lambda _: os._exit(17))
    d.addErrback(lambda f: (f.printTraceback(file=sys.stderr), os._exit(1)))

reactor.callWhenRunning(run)
reactor.run()
"""


class EventStoreTestsMixin:
    """
    The behaviour of every L{IEventStore}; C{makeStore} gives an empty one.
    """

    store: Any
    assertEqual: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertTrue: Callable[..., None]

    def makeStore(self) -> Any:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.store = self.makeStore()

    async def ids(self, now: float, limit: int = 100, skip: frozenset[int] = frozenset()) -> list[int]:
        return [d.id for d in await self.store.due(now, limit, skip)]

    def test_interface(self) -> None:
        """
        The store provides L{IEventStore}.
        """
        self.assertTrue(verifyObject(IEventStore, self.store))

    @asyncTest
    async def test_empty(self) -> None:
        """
        An empty store has nothing due, no next time, and no counts; adding
        nothing adds nothing.
        """
        self.assertEqual(await self.store.due(1e12, 10, frozenset()), [])
        self.assertIsNone(await self.store.nextDue(frozenset()))
        self.assertEqual(await self.store.counts(), {})
        self.assertEqual(await self.store.add([], 1), [])
        self.assertEqual(await self.store.counts(), {})

    @asyncTest
    async def test_add(self) -> None:
        """
        C{add} answers the new deliveries, in order, with increasing ids, at
        their primary target, not tried, due at C{now}.
        """
        added = await self.store.add([("targets[0]", b"x"), ("targets[1]", b"y")], 10.5)
        self.assertEqual(
            [(d.primary, d.target, d.payload, d.attempts, d.notBefore) for d in added],
            [("targets[0]", "targets[0]", b"x", 0, 10.5), ("targets[1]", "targets[1]", b"y", 0, 10.5)],
        )
        self.assertTrue(added[0].id < added[1].id)
        more = await self.store.add([("targets[0]", b"z")], 11)
        self.assertTrue(more[0].id > added[1].id)
        self.assertEqual(await self.store.due(20, 10, frozenset()), added + more)

    @asyncTest
    async def test_dueOrderLimitSkip(self) -> None:
        """
        C{due} answers the pending deliveries due at C{now}, oldest first, at
        most C{limit}, leaving out those in C{skip}.
        """
        added = await self.store.add([("t", b"%d" % (i,)) for i in range(5)], 0)
        ids = [d.id for d in added]
        self.assertEqual(await self.ids(0), ids)
        self.assertEqual(await self.ids(0, 2), ids[:2])
        self.assertEqual(await self.ids(0, 2, frozenset(ids[:3])), ids[3:])
        self.assertEqual(await self.ids(0, 10, frozenset([ids[1], ids[3], 999])), [ids[0], ids[2], ids[4]])
        self.assertEqual(await self.ids(0, 0), [])
        self.assertEqual(await self.ids(0, 5, frozenset(ids)), [])

    @asyncTest
    async def test_dueThrough(self) -> None:
        """
        With C{through}, C{due} and C{nextDue} leave out the ids above it
        (those the notifier has in memory); L{None} bounds nothing.
        """
        added = await self.store.add([("t", b"%d" % (i,)) for i in range(5)], 0)
        ids = [d.id for d in added]
        await self.store.update(moved(added[0], attempts=1, notBefore=30.0))
        self.assertEqual([d.id for d in await self.store.due(0, 10, frozenset(), ids[2])], ids[1:3])
        self.assertEqual([d.id for d in await self.store.due(0, 10, frozenset([ids[1]]), ids[2])], ids[2:3])
        self.assertEqual([d.id for d in await self.store.due(0, 10, frozenset(), None)], ids[1:])
        self.assertEqual(await self.store.due(0, 10, frozenset(), ids[0] - 1), [])
        self.assertEqual(await self.store.nextDue(frozenset(ids[1:]), ids[4]), 30.0)
        self.assertEqual(await self.store.nextDue(frozenset(), ids[2]), 0)
        self.assertIsNone(await self.store.nextDue(frozenset(), ids[0] - 1))
        self.assertIsNone(await self.store.nextDue(frozenset(ids[:2]), ids[1]))

    @asyncTest
    async def test_dueNotBefore(self) -> None:
        """
        A delivery is due once C{now} reaches its C{notBefore}; C{nextDue}
        answers the earliest C{notBefore} of those not skipped.
        """
        a, b, c = await self.store.add([("t", b"a"), ("t", b"b"), ("t", b"c")], 0)
        await self.store.update(moved(a, attempts=1, notBefore=30.0))
        await self.store.update(moved(b, attempts=1, notBefore=20.0))
        self.assertEqual(await self.ids(19.5), [c.id])
        self.assertEqual(await self.ids(20), [b.id, c.id])
        self.assertEqual(await self.ids(30), [a.id, b.id, c.id])
        self.assertEqual(await self.store.nextDue(frozenset()), 0)
        self.assertEqual(await self.store.nextDue(frozenset([c.id])), 20.0)
        self.assertEqual(await self.store.nextDue(frozenset([c.id, b.id])), 30.0)
        self.assertIsNone(await self.store.nextDue(frozenset([a.id, b.id, c.id])))

    @asyncTest
    async def test_update(self) -> None:
        """
        C{update} keeps a delivery's new target, attempts and time; updating
        a delivery that is no longer pending changes nothing.
        """
        (d,) = await self.store.add([("targets[0]", b"p")], 5)
        changed = moved(d, target="targets[0].fallback[0]", attempts=2, notBefore=9.0)
        self.assertIsNone(await self.store.update(changed))
        self.assertEqual(await self.store.due(9, 10, frozenset()), [changed])
        await self.store.succeeded(changed)
        await self.store.update(moved(changed, attempts=3))
        self.assertEqual(await self.store.due(100, 10, frozenset()), [])
        await self.store.update(Delivery(12345, "x", "x", b"", 1, 0))
        self.assertEqual(await self.store.due(100, 10, frozenset()), [])
        self.assertEqual(
            await self.store.counts(), {"targets[0].fallback[0]": dict(emptyCounts(), succeeded=1)}
        )

    @asyncTest
    async def test_succeeded(self) -> None:
        """
        C{succeeded} forgets the delivery and counts it for the target it was
        at, once: again, or for an unknown delivery, counts nothing.
        """
        a, b = await self.store.add([("targets[0]", b"a"), ("targets[0]", b"b")], 0)
        self.assertIsNone(await self.store.succeeded(a))
        await self.store.succeeded(a)
        await self.store.succeeded(moved(b, target="targets[0].fallback[0]"))
        await self.store.succeeded(Delivery(12345, "x", "x", b"", 0, 0))
        self.assertEqual(await self.store.due(100, 10, frozenset()), [])
        self.assertEqual(
            await self.store.counts(),
            {
                "targets[0]": dict(emptyCounts(), succeeded=1),
                "targets[0].fallback[0]": dict(emptyCounts(), succeeded=1),
            },
        )

    @asyncTest
    async def test_failed(self) -> None:
        """
        C{failed} keeps the delivery as failed, counted for the target it was
        at: no longer due nor in C{nextDue}, and neither C{update} nor
        C{succeeded} changes it any more.
        """
        a, b = await self.store.add([("targets[0]", b"a"), ("targets[0]", b"b")], 0)
        last = moved(a, target="targets[0].fallback[1]", attempts=3)
        self.assertIsNone(await self.store.failed(last))
        self.assertEqual(await self.ids(100), [b.id])
        self.assertIsNone(await self.store.nextDue(frozenset([b.id])))
        await self.store.update(moved(last, target="elsewhere"))
        await self.store.succeeded(last)
        await self.store.failed(last)
        await self.store.failed(Delivery(12345, "x", "x", b"", 0, 0))
        self.assertEqual(
            await self.store.counts(),
            {
                "targets[0]": dict(emptyCounts(), pending=1),
                "targets[0].fallback[1]": dict(emptyCounts(), failed=1),
            },
        )

    @asyncTest
    async def test_settle(self) -> None:
        """
        C{settle} settles a group in one call, each delivery as
        C{succeeded}, C{update} or C{failed} would: what succeeded is
        forgotten and counted, what is kept waits with its new state, what
        failed is kept as failed; a delivery already settled counts
        nothing.
        """
        a, b, c, d = await self.store.add([("targets[0]", b"a"), ("targets[0]", b"b"), ("targets[0]", b"c"),
                                           ("targets[0]", b"d")], 0)
        unknown = Delivery(12345, "x", "x", b"", 0, 0)
        self.assertIsNone(await self.store.settle(
            [a, moved(b, target="targets[0].fallback[0]"), unknown], [moved(c, attempts=1, notBefore=50.0)],
            [moved(d, attempts=4)]))
        await self.store.settle([a], [], [d])
        self.assertEqual(await self.ids(10), [])
        self.assertEqual(await self.ids(50), [c.id])
        self.assertEqual((await self.store.due(50, 10, frozenset()))[0].attempts, 1)
        self.assertEqual(
            await self.store.counts(),
            {
                "targets[0]": dict(emptyCounts(), succeeded=1, retrying=1, failed=1),
                "targets[0].fallback[0]": dict(emptyCounts(), succeeded=1),
            },
        )

    @asyncTest
    async def test_counts(self) -> None:
        """
        C{counts} answers, per target, how many succeeded, are pending (not
        tried), retrying (tried, waiting) and failed.
        """
        a, b, c, d, e = await self.store.add(
            [("targets[0]", b"a"), ("targets[0]", b"b"), ("targets[0]", b"c"), ("targets[1]", b"d"),
             ("targets[1]", b"e")],
            0,
        )
        await self.store.update(moved(b, attempts=1, notBefore=5.0))
        await self.store.update(moved(c, target="targets[0].fallback[0]", attempts=0, notBefore=0.0))
        await self.store.succeeded(d)
        await self.store.failed(moved(e, attempts=2))
        self.assertEqual(
            await self.store.counts(),
            {
                "targets[0]": dict(emptyCounts(), pending=1, retrying=1),
                "targets[0].fallback[0]": dict(emptyCounts(), pending=1),
                "targets[1]": dict(emptyCounts(), succeeded=1, failed=1),
            },
        )

    @asyncTest
    async def test_close(self) -> None:
        """
        C{close} answers L{None}.
        """
        await self.store.add([("t", b"x")], 0)
        self.assertIsNone(await self.store.close())


class MemoryEventStoreTests(EventStoreTestsMixin, TestCase):
    """
    L{MemoryEventStore} passes the shared tests (the model of the SQLite
    store).
    """

    def makeStore(self) -> Any:
        return MemoryEventStore()


class SqliteEventStoreTests(EventStoreTestsMixin, DatabaseMixin, TestCase):
    """
    L{SqliteEventStore} behaves like the memory store, and keeps pending and
    failed deliveries and the success counters across a restart.
    """

    def makeStore(self) -> Any:
        return SqliteEventStore(self.openDatabase())

    @asyncTest
    async def test_survivesRestart(self) -> None:
        """
        After the database was closed and opened again, the pending
        deliveries (with their target, attempts and time), the failed ones
        and the success counters are all there; new ids are greater.
        """
        a, b, c, d = await self.store.add(
            [("targets[0]", b"a"), ("targets[0]", b"b"), ("targets[0]", b"c"), ("targets[0]", b"d")], 1
        )
        b = moved(b, target="targets[0].fallback[0]", attempts=2, notBefore=7.25)
        await self.store.update(b)
        await self.store.succeeded(c)
        await self.store.failed(moved(d, attempts=3))
        counts = await self.store.counts()
        await self.restart()
        self.assertEqual(await self.store.due(100, 10, frozenset()), [a, b])
        self.assertEqual(await self.store.nextDue(frozenset([a.id])), 7.25)
        self.assertEqual(await self.store.counts(), counts)
        self.assertEqual(
            counts,
            {
                "targets[0]": dict(emptyCounts(), pending=1, succeeded=1, failed=1),
                "targets[0].fallback[0]": dict(emptyCounts(), retrying=1),
            },
        )
        (e,) = await self.store.add([("targets[0]", b"e")], 2)
        self.assertTrue(e.id > d.id)

    @asyncTest
    async def test_oneTurnSettlesInOrder(self) -> None:
        """
        What one turn settles goes in one write, in order, the successes
        deleted 500 a statement: 1,200 succeeded are all counted, one
        succeeded twice counts once, one moved to a fallback and then
        accepted counts for the fallback, one failed and then succeeded
        stays failed.
        """
        items = [("targets[0]", b"%d" % i) for i in range(1203)]
        *many, a, b, c = await self.store.add(items, 0)
        # written first (else the successes would cancel their inserts)
        await self.store.stored()
        b2 = moved(b, target="targets[0].fallback[0]")
        writes = [self.store.succeeded(d) for d in many]
        writes += [self.store.succeeded(a), self.store.succeeded(a), self.store.update(b2),
                   self.store.succeeded(b2), self.store.failed(c), self.store.succeeded(c)]
        await gatherResults(writes)
        self.assertEqual(await self.store.due(100, 10, frozenset()), [])
        expected = {
            "targets[0]": dict(emptyCounts(), succeeded=1201, failed=1),
            "targets[0].fallback[0]": dict(emptyCounts(), succeeded=1),
        }
        self.assertEqual(await self.store.counts(), expected)
        await self.restart()
        self.assertEqual(await self.store.counts(), expected)

    async def restart(self) -> None:
        """
        Close the store and its database, and open them again from the file.
        """
        await self.store.close()
        await self.store._db.close()
        self.store = self.makeStore()

    async def eventRows(self) -> int:
        """
        How many rows the C{events} table holds.
        """
        rows = await self.store._db.run(lambda cursor: cursor.execute("SELECT COUNT(*) FROM events").fetchall())
        return rows[0][0]

    @asyncTest
    async def test_succeededBeforeWritten(self) -> None:
        """
        A delivery that succeeds while its row still waits in the writer's
        batch is never written, only counted (for the target that took
        it), in the same transaction as the others' rows; C{stored} fires
        once that is committed, and the count survives a restart.  Those
        kept or failed are written, and then changed, in order.
        """
        a, b, c, d = await self.store.add(
            [("targets[0]", b"a"), ("targets[0]", b"b"), ("targets[0]", b"c"), ("targets[0]", b"d")], 1)
        settled = self.store.settle([a, moved(b, target="targets[0].fallback[0]")],
                                    [moved(c, attempts=1, notBefore=9.0)], [moved(d, attempts=4)])
        await self.store.stored()
        self.assertTrue(settled.called)
        self.assertEqual(await self.eventRows(), 2)
        self.assertEqual(await self.store.due(10, 10, frozenset()), [moved(c, attempts=1, notBefore=9.0)])
        expected = {
            "targets[0]": dict(emptyCounts(), succeeded=1, retrying=1, failed=1),
            "targets[0].fallback[0]": dict(emptyCounts(), succeeded=1),
        }
        self.assertEqual(await self.store.counts(), expected)
        await self.restart()
        self.assertEqual(await self.store.counts(), expected)
        (e,) = await self.store.add([("targets[0]", b"e")], 2)
        self.assertTrue(e.id > d.id)

    @asyncTest
    async def test_succeededWhileWritten(self) -> None:
        """
        A delivery whose row was handed to the database thread already is
        deleted once written, as before: nothing is left, counted once.
        """
        (a,) = await self.store.add([("targets[0]", b"a")], 1)
        # a read hands the writer's batch over first
        self.assertEqual([d.id for d in await self.store.due(10, 10, frozenset())], [a.id])
        await self.store.settle([a], [], [])
        self.assertEqual(await self.eventRows(), 0)
        self.assertEqual(await self.store.counts(), {"targets[0]": dict(emptyCounts(), succeeded=1)})

    def test_insertTakenNotCancelled(self) -> None:
        """
        Once the database thread took an insert's rows, none is taken out
        any more; before, one is, once, and counted for the target that
        took it.
        """
        from wsserver.events.sqlite import _Insert

        a, b = Delivery(1, "t", "t", b"a"), Delivery(2, "t", "t", b"b")
        insert = _Insert({1: a, 2: b})
        self.assertTrue(insert.cancel(moved(a, target="t.fallback[0]")))
        self.assertFalse(insert.cancel(a))
        self.assertEqual(insert.take(), ([b], {"t.fallback[0]": 1}))
        self.assertFalse(insert.cancel(b))

    @asyncTest
    async def test_largeBatchAndSkip(self) -> None:
        """
        A large batch is added with its ids in order, and C{due} and
        C{nextDue} honour a large C{skip}.
        """
        added = await self.store.add([("t", b"%d" % (i,)) for i in range(2000)], 0)
        ids = [d.id for d in added]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual([d.payload for d in added[:3]], [b"0", b"1", b"2"])
        self.assertEqual(await self.ids(0, 1200), ids[:1200])
        skip = frozenset(ids[:1500])
        self.assertEqual(await self.ids(0, 3, skip), ids[1500:1503])
        self.assertEqual(await self.ids(0, 600, frozenset(ids[1:1999:2])), ids[0:1200:2])
        self.assertEqual(await self.store.nextDue(skip), 0)
        self.assertIsNone(await self.store.nextDue(frozenset(ids)))
        self.assertEqual([d.payload for d in await self.store.due(0, 1, frozenset(ids[:-1]))], [b"1999"])


class HeldSqliteEventStoreTests(SqliteEventStoreTests):
    """
    With a write delay (C{event.writeDelayMillis}) longer than any test,
    the SQLite event store passes the same tests: whatever needs the held
    rows written (a read, the counts, C{stored}, a retry or failure
    recorded, a close) writes them first.
    """

    def makeStore(self) -> Any:
        return SqliteEventStore(self.openDatabase(), writeDelay=600)


class WriteDelayTests(DatabaseMixin, TestCase):
    """
    The rows of new deliveries are held back C{writeDelay} seconds: those
    that succeed meanwhile are never written, only counted.
    """

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.db = self.openDatabase()
        self.store = SqliteEventStore(self.db, self.clock, writeDelay=0.1)

    async def rows(self) -> list[tuple[int, str, int]]:
        """
        The rows of the C{events} table: id, target, attempts.
        """
        return await self.db.run(
            lambda cursor: cursor.execute("SELECT id, target, attempts FROM events ORDER BY id").fetchall())

    async def turn(self) -> None:
        """
        Let the writer's turn come (the test's clock) and its transaction
        finish.
        """
        self.clock.advance(0)
        await self.db.run(lambda cursor: None)

    @asyncTest
    async def test_confirmedWithinTheDelayNeverWritten(self) -> None:
        """
        A delivery that succeeds within the delay is never written; the
        others are written once it is over, without any read asking for
        them; the count of the first survives a restart.
        """
        a, b, c = await self.store.add([("t", b"a"), ("t", b"b"), ("t", b"c")], 0)
        await self.store.settle([a], [], [])
        await self.turn()
        self.assertEqual(await self.rows(), [])
        self.clock.advance(0.099)
        await self.turn()
        self.assertEqual(await self.rows(), [])
        self.clock.advance(0.001)
        await self.turn()
        self.assertEqual(await self.rows(), [(b.id, "t", 0), (c.id, "t", 0)])
        settled = self.store.settle([b], [], [])
        await self.turn()
        await settled
        self.assertEqual(await self.rows(), [(c.id, "t", 0)])
        await self.store.close()
        await self.db.close()
        store = SqliteEventStore(self.openDatabase())
        self.assertEqual(await store.counts(), {"t": dict(emptyCounts(), succeeded=2, pending=1)})

    @asyncTest
    async def test_countsWithoutWriting(self) -> None:
        """
        C{counts} includes the held deliveries (pending) and those that
        succeeded while held, without writing them.
        """
        a, b = await self.store.add([("t", b"a"), ("u", b"b")], 0)
        await self.store.settle([moved(a, target="t.fallback[0]")], [], [])
        counts = self.store.counts()
        await self.turn()
        self.assertEqual(await counts, {"t.fallback[0]": dict(emptyCounts(), succeeded=1),
                                        "u": dict(emptyCounts(), pending=1)})
        self.assertEqual(await self.rows(), [])

    @asyncTest
    async def test_eachOverAfterItsOwnDelay(self) -> None:
        """
        Each turn's deliveries are held for the delay from when they came,
        with one timer for all of them.
        """
        (a,) = await self.store.add([("t", b"a")], 0)
        self.clock.advance(0.05)
        (b,) = await self.store.add([("t", b"b")], 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.05)
        await self.turn()
        self.assertEqual(await self.rows(), [(a.id, "t", 0)])
        self.clock.advance(0.05)
        await self.turn()
        self.assertEqual(await self.rows(), [(a.id, "t", 0), (b.id, "t", 0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @asyncTest
    async def test_lightLoadWrittenInClumps(self) -> None:
        """
        Under a light load (a turn, and an insert, a message) the rows due
        within a quarter of the delay are written together, in one
        transaction, not one transaction a message.
        """
        added = []
        for _ in range(4):
            added += await self.store.add([("t", b"m")], 0)
            self.clock.advance(0.01)
        transactions = []
        run = self.db.run

        def counted(work: Any, *args: Any) -> Any:
            transactions.append(work)
            return run(work, *args)

        self.db.run = counted  # type: ignore[method-assign]
        self.clock.advance(0.06)
        await self.turn()
        self.assertEqual(len(transactions), 2)  # the writer's, and turn()'s
        self.assertEqual([id for id, _, _ in await self.rows()], [d.id for d in added[:3]])
        self.clock.advance(0.03)
        await self.turn()
        self.assertEqual([id for id, _, _ in await self.rows()], [d.id for d in added])

    @asyncTest
    async def test_failedInsertWrittenAgain(self) -> None:
        """
        When the transaction that writes new rows fails (the disk), the rows
        are written again L{RETRY_SECONDS} later: a delivery that succeeds
        meanwhile is taken out, one kept for a retry then has its row
        changed, and nothing is lost.
        """
        from wsserver.events import sqlite as module

        failures = [sqlite3.OperationalError("disk I/O error")]
        insertRows = module._insertRows

        def failOnce(*args: Any) -> None:
            if failures:
                raise failures.pop()
            insertRows(*args)

        self.patch(module, "_insertRows", failOnce)
        a, b, c = await self.store.add([("t", b"a"), ("t", b"b"), ("t", b"c")], 0)
        self.clock.advance(0.1)
        await self.turn()
        self.assertEqual(await self.rows(), [])
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError, StorageError)), 1)
        await self.store.settle([a], [], [])
        self.clock.advance(module.RETRY_SECONDS)
        await self.turn()
        self.assertEqual(await self.rows(), [(b.id, "t", 0), (c.id, "t", 0)])
        settled = self.store.settle([], [moved(b, attempts=1, notBefore=3.0)], [])
        await self.turn()
        await settled
        self.assertEqual(await self.rows(), [(b.id, "t", 1), (c.id, "t", 0)])
        counts = self.store.counts()
        await self.turn()
        self.assertEqual(await counts, {"t": dict(emptyCounts(), succeeded=1, pending=1, retrying=1)})

    @asyncTest
    async def test_retryWritesFirst(self) -> None:
        """
        A delivery kept for a retry, or failed, while held: the held rows are
        written first, so that the change is not lost.
        """
        a, b = await self.store.add([("t", b"a"), ("t", b"b")], 0)
        settled = self.store.settle([], [moved(a, attempts=1, notBefore=5.0)], [moved(b, attempts=4)])
        await self.turn()
        await settled
        self.assertEqual(await self.rows(), [(a.id, "t", 1), (b.id, "t", 4)])
        self.assertEqual(await self.store.due(10, 10, frozenset()), [moved(a, attempts=1, notBefore=5.0)])

    @asyncTest
    async def test_storedWritesNow(self) -> None:
        """
        C{stored} (what an ack waits for) writes the held rows at once.
        """
        (a,) = await self.store.add([("t", b"a")], 0)
        stored = self.store.stored()
        await self.turn()
        await stored
        self.assertEqual(await self.rows(), [(a.id, "t", 0)])

    @asyncTest
    async def test_writtenWhenTheDatabaseCloses(self) -> None:
        """
        Closing the database writes the held rows: a stop loses none.
        """
        a, b = await self.store.add([("t", b"a"), ("t", b"b")], 0)
        await self.db.close()
        store = SqliteEventStore(self.openDatabase())
        self.assertEqual(await store.due(10, 10, frozenset()), [a, b])


class OpenDatabaseTests(DatabaseMixin, TestCase):
    """
    Tests for L{openDatabase} and L{Database}.
    """

    def assertUntouched(self, path: str, before: bytes, siblings: list[str]) -> None:
        """
        The file at C{path} still holds C{before}, and nothing was created
        next to it.
        """
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), siblings)

    def refused(self, path: str) -> str:
        """
        Check that L{openDatabase} refuses C{path}, leaving it untouched; the
        error message.
        """
        with open(path, "rb") as f:
            before = f.read()
        siblings = sorted(os.listdir(os.path.dirname(path)))
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertUntouched(path, before, siblings)
        return str(error)

    def test_newDatabase(self) -> None:
        """
        A new database is created with its data directory, marked as ours
        with the application id and schema version, and in WAL mode.
        """
        path = self.databasePath()
        db = self.openDatabase()
        self.assertEqual(db.path, path)
        connection = sqlite3.connect(path)
        self.addCleanup(connection.close)

        def pragma(name: str) -> Any:
            return connection.execute(f"PRAGMA {name}").fetchone()[0]

        self.assertEqual(pragma("application_id"), APPLICATION_ID)
        self.assertEqual(pragma("user_version"), SCHEMA_VERSION)
        self.assertEqual(pragma("journal_mode"), "wal")
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertTrue({"undelivered", "events", "counters"} <= tables)

    @asyncTest
    async def test_connectionSettings(self) -> None:
        """
        The queries run on a connection in WAL mode with C{synchronous=NORMAL}
        (1), in another thread than the reactor's.
        """
        import threading

        db = self.openDatabase()

        def settings(cursor: Any) -> tuple[Any, ...]:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            return mode, cursor.fetchone()[0], threading.get_ident()

        mode, synchronous, thread = await db.run(settings)
        self.assertEqual((mode, synchronous), ("wal", 1))
        self.assertTrue(thread != threading.get_ident())

    @asyncTest
    async def test_sharedFile(self) -> None:
        """
        Both stores live in the one file: what each stored is there after a
        restart, and an empty file or an existing database opens.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path))
        open(path, "wb").close()
        db = self.openDatabase()
        await SqliteUndeliveredStore(db, 10, 10).put(1, b"m", 0)
        await SqliteEventStore(db).add([("t", b"e")], 0)
        await db.close()
        self.assertEqual(os.listdir(os.path.dirname(path)), [DATABASE_FILENAME])
        db = self.openDatabase()
        self.assertEqual(await SqliteUndeliveredStore(db, 10, 10).pending(1), 1)
        self.assertEqual(await SqliteEventStore(db).counts(), {"t": dict(emptyCounts(), pending=1)})

    @asyncTest
    async def test_closed(self) -> None:
        """
        After L{Database.close}, which waits for the queries already asked
        for, the stores fail with L{StorageError}; closing again is fine.
        """
        db = self.openDatabase()
        store = SqliteUndeliveredStore(db, 10, 10)
        put = store.put(1, b"m", 0)
        closed = db.close()
        await put
        await closed
        error = await self.failUnlessFailure(store.fetch(1, 0), StorageError)
        self.assertIn("is closed", str(error))
        await self.failUnlessFailure(SqliteEventStore(db).counts(), StorageError)
        self.assertIsNone(await db.close())

    @asyncTest
    async def test_closeWaitsForWritesOfReads(self) -> None:
        """
        What a query in flight when L{Database.close} is called makes its
        caller write (the undelivered queue read for a user who left
        meanwhile, kept again; a delivered batch, acked) is written: the
        close waits for it, and for a group commit it starts, then closes.
        The order of a server's stop, reproduced: the read is asked for,
        the close starts, the read answers.
        """
        db = self.openDatabase()
        store = SqliteUndeliveredStore(db, 100, 10)
        await store.put(1, b"first", 0)
        written: list[Any] = []

        def keepAgain(stored: list[tuple[int, bytes]]) -> Deferred[None]:
            # a write asked for by a read's result, after close() started
            kept = store.put(2, b"again", 0)
            kept.addBoth(written.append)
            return store.ack(1, [key for key, _ in stored])

        fetched = store.fetch(1, 0).addCallback(keepAgain)
        closed = db.close()
        self.assertFalse(closed.called)
        await fetched
        await closed
        self.assertEqual(written, [None])
        db = openDatabase(self.databasePath())
        self.addCleanup(db.close)
        again = SqliteUndeliveredStore(db, 100, 10)
        self.assertEqual(await again.pending(1), 0)
        self.assertEqual([payload for _, payload in await again.fetch(2, 0)], [b"again"])

    @asyncTest
    async def test_closeWithCommitWaiter(self) -> None:
        """
        A C{committed} waiter of a group commit whose write is in flight
        when the database closes fires (it is not failed by a transaction
        asked for after the close); once closed, C{committed} with nothing
        pending answers at once.
        """
        db = self.openDatabase()
        store = SqliteUndeliveredStore(db, 100, 10)
        put = store.put(1, b"m", 0)
        closed = db.close()
        waiter = store._writer.committed()
        await put
        await waiter
        await closed
        self.assertIsNone(await store._writer.committed())

    def test_directoryUnderFile(self) -> None:
        """
        A data directory that cannot be created (a file is in the way) gives
        a L{StorageError} naming the database and the OS's reason.
        """
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("in the way")
        path = os.path.join(blocker, "sub", DATABASE_FILENAME)
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertEqual(str(error), f"cannot open wsserver database {path}: Not a directory")
        path = os.path.join(blocker, DATABASE_FILENAME)
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertEqual(str(error), f"cannot open wsserver database {path}: {blocker} is not a directory")
        with open(blocker) as f:
            self.assertEqual(f.read(), "in the way")

    def test_databaseIsDirectory(self) -> None:
        """
        A directory where the file should be gives a L{StorageError} with
        the OS's reason.
        """
        path = self.databasePath()
        os.makedirs(path)
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertEqual(str(error), f"cannot open wsserver database {path}: Is a directory")

    def test_textFile(self) -> None:
        """
        A file that is not SQLite (corrupted, or something else) is refused
        and left byte-identical.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.write("hello, I am a text file\n" * 100)
        message = self.refused(path)
        self.assertEqual(
            message,
            f"{path} is not a wsserver database (it is not an SQLite file: corrupted, or another"
            " kind of file); refusing to touch it",
        )

    def test_corruptedSqlite(self) -> None:
        """
        A file with an SQLite header but garbage after it is refused and
        left byte-identical.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"SQLite format 3\x00" + b"\xff" * 4000)
        message = self.refused(path)
        self.assertTrue(message.startswith(f"{path} is not a wsserver database (it is not a valid SQLite database"))
        self.assertTrue(message.endswith("; refusing to touch it"), message)

    def foreign(self, *statements: str) -> str:
        """
        Make a foreign SQLite database at the test's path with
        C{statements}.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path)
        for statement in statements:
            connection.execute(statement)
        connection.commit()
        connection.close()
        return path

    def test_foreignDatabase(self) -> None:
        """
        An SQLite database with other tables is refused and left
        byte-identical, even with a table named like ours.
        """
        path = self.foreign(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE TABLE counters (name TEXT, value INTEGER)",
            "INSERT INTO accounts (name) VALUES ('alice')",
        )
        self.assertEqual(
            self.refused(path), f"{path} is not a wsserver database (it has other tables); refusing to touch it"
        )

    def test_foreignApplicationId(self) -> None:
        """
        An SQLite database marked by another application is refused, even
        without tables.
        """
        path = self.foreign("PRAGMA application_id = 1234")
        self.assertEqual(
            self.refused(path),
            f"{path} is not a wsserver database (it belongs to another application:"
            " application_id 0x4d2); refusing to touch it",
        )

    def test_extraTableInOurs(self) -> None:
        """
        A wsserver database to which someone added a table is refused and
        left byte-identical.
        """
        path = self.foreign(f"PRAGMA application_id = {APPLICATION_ID}", "CREATE TABLE mine (x)")
        self.assertIn("(it has other tables)", self.refused(path))

    def test_newerSchema(self) -> None:
        """
        A wsserver database of a newer schema version is refused and left
        byte-identical.
        """
        path = self.foreign(f"PRAGMA application_id = {APPLICATION_ID}", f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        self.assertEqual(
            self.refused(path),
            f"wsserver database {path} has schema version {SCHEMA_VERSION + 1}, newer than this"
            f" wsserver's ({SCHEMA_VERSION}); refusing to touch it",
        )


#: The schema of version 1, verbatim as wsserver created it before a
#: message for many users was stored once (a payload per user).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS undelivered (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    user INTEGER NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS undelivered_user ON undelivered (user, key);
CREATE INDEX IF NOT EXISTS undelivered_created ON undelivered (created);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    primary_target TEXT NOT NULL,
    target TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_due ON events (state, not_before);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


class Version3MigrationTests(DatabaseMixin, TestCase):
    """
    A database of schema version 3 (C{INTEGER} user columns) is migrated to
    user columns without affinity, its rows kept; see also
    L{tests.test_ids_end_to_end.UpgradeTests}.
    """

    def test_columns(self) -> None:
        """
        After the migration, the user columns have no type affinity, the
        rows and the key sequence are kept, and the names are the current
        version's.
        """
        from wsserver import database

        from .test_ids_end_to_end import makeVersion3

        path = self.databasePath()
        makeVersion3(os.path.dirname(path), 10.0)
        connection = sqlite3.connect(path)
        connection.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'undelivered'")
        connection.commit()
        connection.close()
        self.openDatabase()
        connection = sqlite3.connect(path)
        try:
            for table in ("undelivered", "inbox", "inbox_seq"):
                types = {row[1]: row[2] for row in connection.execute(f"PRAGMA table_info({table})")}
                self.assertEqual(types["user"], "BLOB", table)
            self.assertEqual(connection.execute("SELECT key, user FROM undelivered ORDER BY key").fetchall(),
                             [(1, 5), (2, 5), (3, -1)])
            self.assertEqual(connection.execute("SELECT user, seq FROM inbox_seq").fetchall(), [(5, 2)])
            self.assertEqual(connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'undelivered'")
                             .fetchall(), [(9,)])
            names = {n for (n,) in connection.execute("SELECT name FROM sqlite_master") if not n.startswith("sqlite_")}
            fresh = sqlite3.connect(":memory:")
            for statement in database._SCHEMA:
                fresh.execute(statement)
            self.assertEqual(names, {n for (n,) in fresh.execute("SELECT name FROM sqlite_master")
                                     if not n.startswith("sqlite_")})
        finally:
            connection.close()


class Version4MigrationTests(DatabaseMixin, TestCase):
    """
    A database of schema version 4 gets the index C{events_pending} of the
    due deliveries (version 5), its pending deliveries kept.
    """

    def makeVersion4(self) -> str:
        """
        A version 4 database (the current schema less C{events_pending})
        with three pending deliveries, one of them not due before 50.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        from wsserver import database

        for statement in database._SCHEMA:
            if "events_pending" not in statement:
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 4")
        connection.executemany(
            "INSERT INTO events (primary_target, target, payload, attempts, not_before, state)"
            " VALUES ('targets[0]', 'targets[0]', ?, 0, ?, 'pending')",
            [(b"a", 10.0), (b"b", 50.0), (b"c", 10.0)])
        connection.close()
        return path

    async def test_migrated(self) -> None:
        """
        After the migration the version is 5, the names are the current
        schema's, the deliveries are read as before, and the read of the due
        ones walks C{events_pending} (no sort of the backlog).
        """
        from wsserver import database

        path = self.makeVersion4()
        db = self.openDatabase()
        store = SqliteEventStore(db)
        due = await store.due(20.0, 10, frozenset())
        self.assertEqual([d.payload for d in due], [b"a", b"c"])
        connection = sqlite3.connect(path)
        try:
            self.assertEqual(connection.execute("PRAGMA user_version").fetchone()[0], 5)
            names = {n for (n,) in connection.execute("SELECT name FROM sqlite_master") if not n.startswith("sqlite_")}
            self.assertEqual(names, database._NAMES[5])
            self.assertIn("events_pending", names)
            plan = connection.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE state = ? AND not_before <= ? ORDER BY id LIMIT ?",
                ("pending", 20.0, 10)).fetchall()
            self.assertEqual([row[-1] for row in plan], ["SEARCH events USING COVERING INDEX events_pending (state=?)"])
        finally:
            connection.close()


class MigrationTests(DatabaseMixin, TestCase):
    """
    A database of schema version 1 is migrated in place, in one
    transaction, when opened.
    """

    def makeVersion1(self) -> str:
        """
        Make a version 1 database as that wsserver did (its schema, WAL, its
        C{put}s and an C{ack}): user 1 has C{a} and C{b}, user C{2**64-1}
        has C{c} (the message with the greatest key was acknowledged), one
        delivery is pending, and 4 messages were dropped.
        """
        path = self.databasePath()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        for statement in [s.strip() for s in SCHEMA_V1.split(";") if s.strip()]:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
        connection.execute("COMMIT")
        connection.execute("PRAGMA journal_mode=WAL")
        for user, created, payload in [(1, 10.0, b"a"), (-1, 11.0, b"c"), (1, 12.0, b"b"), (1, 13.0, b"acked")]:
            connection.execute("INSERT INTO undelivered (user, created, payload) VALUES (?, ?, ?)",
                               (user, created, payload))
        connection.execute("DELETE FROM undelivered WHERE key = 4")
        connection.execute("UPDATE counters SET value = 4 WHERE name = 'dropped'")
        connection.execute(
            "INSERT INTO events (primary_target, target, payload, attempts, not_before, state)"
            " VALUES ('t', 't', ?, 0, 5.0, 'pending')",
            (b"e",),
        )
        connection.close()
        return path

    def contents(self, path: str) -> tuple[Any, ...]:
        """
        The schema version, the names in the schema and every row of a
        database, read without writing.
        """
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            names = sorted(name for (name,) in connection.execute("SELECT name FROM sqlite_master"))
            rows = {
                name: connection.execute(f"SELECT * FROM {name}").fetchall()
                for name in ("undelivered", "events", "counters", "sqlite_sequence")
            }
        finally:
            connection.close()
        return version, names, rows

    @asyncTest
    async def test_migrated(self) -> None:
        """
        A version 1 database opens as the current version: its messages are
        delivered in order with their keys, to the right users, its pending
        deliveries and C{dropped} are kept, keys are still never reused, and
        it opens again afterwards.
        """
        path = self.makeVersion1()
        db = self.openDatabase()
        self.assertEqual(self.contents(path)[0], SCHEMA_VERSION)
        store = SqliteUndeliveredStore(db, ttlSeconds=100, maxPerUser=10)
        self.assertEqual(store.dropped, 4)
        self.assertEqual(await store.fetch(1, 20), [(1, b"a"), (3, b"b")])
        self.assertEqual(await store.fetch(LARGEST, 20), [(2, b"c")])
        deliveries = await SqliteEventStore(db).due(10, 10, frozenset())
        self.assertEqual([(d.primary, d.payload) for d in deliveries], [("t", b"e")])
        await store.put(1, b"new", 20)
        self.assertEqual([key for key, _ in await store.fetch(1, 20)], [1, 3, 5])
        await store.ack(1, [1, 3, 5])
        await store.ack(LARGEST, [2])
        self.assertEqual(await db.run(lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone()[0]), 0)
        await db.close()
        db = self.openDatabase()
        self.assertEqual(await SqliteUndeliveredStore(db, 100, 10).pending(1), 0)

    @asyncTest
    async def test_deliveredByRouter(self) -> None:
        """
        The messages of a version 1 database reach their user when the user
        connects to a server with the current version.
        """
        from zoneinfo import ZoneInfo

        from twisted.internet.task import Clock

        from wsserver.config import MessageConfig
        from wsserver.messages import MessageFactory
        from wsserver.routing import Router

        from .test_routing import FakeConnection

        self.makeVersion1()
        db = self.openDatabase()
        clock = Clock()
        clock.advance(20)
        router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC")),
                        SqliteUndeliveredStore(db, ttlSeconds=100, maxPerUser=10))
        connection = FakeConnection(1)
        router.attach(connection)
        await db.run(lambda cursor: None)
        self.assertEqual(connection.sent, [b"a", b"b"])

    def test_failedMigrationChangesNothing(self) -> None:
        """
        A migration that fails part way (here after its last statement) is
        rolled back: the database is still version 1 with all its rows, and
        the next start migrates it.
        """
        from wsserver import database

        path = self.makeVersion1()
        before = self.contents(path)
        migrations = database._MIGRATIONS
        migrate = migrations[1]

        def failing(connection: sqlite3.Connection) -> None:
            migrate(connection)
            raise sqlite3.OperationalError("disk full")

        self.patch(database, "_MIGRATIONS", {**migrations, 1: failing})
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertEqual(str(error), f"cannot open wsserver database {path}: disk full")
        self.assertEqual(self.contents(path), before)
        self.assertEqual(before[0], 1)
        connection = sqlite3.connect(path)
        self.assertIn("payload", [row[1] for row in connection.execute("PRAGMA table_info(undelivered)")])
        connection.close()
        self.patch(database, "_MIGRATIONS", migrations)
        self.openDatabase()
        self.assertEqual(self.contents(path)[0], SCHEMA_VERSION)

    def test_version1WithOtherTables(self) -> None:
        """
        A version 1 database with a table that is not ours (even one of the
        current version) is refused and left untouched, not migrated.
        """
        path = self.makeVersion1()
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE messages (x)")
        connection.commit()
        connection.close()
        before = self.contents(path)
        error = self.assertRaises(StorageError, openDatabase, path)
        self.assertEqual(str(error), f"{path} is not a wsserver database (it has other tables); refusing to touch it")
        self.assertEqual(self.contents(path), before)
