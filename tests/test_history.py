"""
Tests for L{wsserver.history} (the per-user inbox), its use by the router
(seqs, resuming with C{since}, acks) and L{wsserver.idempotency}.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import orjson
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsserver.config import MessageConfig
from wsserver.history import IInbox, Page, seqOf, withSeq
from wsserver.history.memory import MemoryInbox
from wsserver.history.sqlite import SqliteInbox
from wsserver.idempotency import IIdempotency, MemoryIdempotency
from wsserver.messages import InvalidPayload, InvalidSince, MessageFactory, parseSince
from wsserver.routing.interfaces import IPeers, NoPeers
from wsserver.routing import Router
from wsserver.database import SCHEMA_VERSION
from wsserver.queue.memory import MemoryUndeliveredStore
from wsserver.queue.sqlite import SqliteUndeliveredStore

from .test_routing import FakeConnection
from .test_database import DatabaseMixin, asyncTest

START = 1000.0


def text(n: int, recipients: Sequence[int] = (2,), **extra: Any) -> bytes:
    return orjson.dumps({"type": "text", "text": f"m{n}", "recipients": list(recipients), **extra})


class SeqFramingTests(SynchronousTestCase):
    """
    L{withSeq} and L{seqOf}.
    """

    def test_roundTrip(self) -> None:
        """
        C{seq} is added as the last field, and read back.
        """
        framed = withSeq(b'{"id":"x","data":{"a":[1]}}', 42)
        self.assertEqual(orjson.loads(framed), {"id": "x", "data": {"a": [1]}, "seq": 42})
        self.assertEqual(seqOf(framed), 42)

    def test_noSeq(self) -> None:
        """
        A payload without a trailing seq has none, even if its data holds the
        same bytes elsewhere.
        """
        self.assertIsNone(seqOf(b'{"id":"x","data":",\\"seq\\":3}x"}'))
        self.assertIsNone(seqOf(b'{"id":"x"}'))


class ParseSinceTests(SynchronousTestCase):
    """
    L{parseSince}.
    """

    def test_values(self) -> None:
        """
        Absent: L{None}; digits: the number.
        """
        self.assertIsNone(parseSince(None))
        self.assertEqual(parseSince(["0"]), 0)
        self.assertEqual(parseSince(["17"]), 17)

    def test_malformed(self) -> None:
        """
        Negative, empty, non-numeric, repeated or huge values say so.
        """
        for values in (["-1"], [""], ["abc"], ["1", "2"], ["1.5"], ["9" * 30]):
            error = self.assertRaises(InvalidSince, parseSince, values)
            self.assertEqual(
                str(error), "Invalid since in query parameter: ?since={seq} must be a non-negative integer"
            )


class InboxTestsMixin:
    """
    The behaviour of every L{IInbox} that assigns seqs itself; C{makeInbox}
    gives one with C{ttlSeconds=100}, C{maxPerUser=3}.
    """

    def makeInbox(self) -> Any:
        raise NotImplementedError

    async def test_interface(self) -> None:
        """
        The inbox provides L{IInbox}.
        """
        self.assertTrue(verifyObject(IInbox, self.makeInbox()))  # type: ignore[attr-defined]

    async def test_seqsPerUser(self) -> None:
        """
        Each user's seqs start at 1 and grow by one; a message for two users
        gets a seq in each inbox.
        """
        inbox = self.makeInbox()
        self.assertEqual(inbox.append([1, 2], b'{"m":1}', 10.0), [1, 1])
        self.assertEqual(inbox.append([2], b'{"m":2}', 10.0), [2])
        page = await inbox.read(2, 0, 10, 11.0)
        self.assertEqual(page, Page([(1, b'{"m":1,"seq":1}'), (2, b'{"m":2,"seq":2}')], 1, 2))
        page = await inbox.read(2, 1, 10, 11.0)
        self.assertEqual(page.entries, [(2, b'{"m":2,"seq":2}')])
        self.assertEqual((await inbox.read(1, 0, 10, 11.0)).entries, [(1, b'{"m":1,"seq":1}')])

    async def test_limit(self) -> None:
        """
        C{read} answers at most C{limit} entries, the oldest after C{since}.
        """
        inbox = self.makeInbox()
        for n in range(3):
            inbox.append([1], b'{"m":%d}' % n, 10.0)
        self.assertEqual([s for s, _ in (await inbox.read(1, 0, 2, 10.0)).entries], [1, 2])
        self.assertEqual([s for s, _ in (await inbox.read(1, 2, 2, 10.0)).entries], [3])

    async def test_maxPerUser(self) -> None:
        """
        Over C{maxPerUser} the oldest go; C{first} says which is the oldest
        kept, and seqs are not reused.
        """
        inbox = self.makeInbox()
        for n in range(5):
            inbox.append([1], b'{"m":%d}' % n, 10.0)
        page = await inbox.read(1, 0, 10, 10.0)
        self.assertEqual([s for s, _ in page.entries], [3, 4, 5])
        self.assertEqual((page.first, page.last), (3, 5))
        self.assertTrue(page.gapAfter(0))
        self.assertTrue(page.gapAfter(1))
        self.assertFalse(page.gapAfter(2))
        self.assertFalse(page.gapAfter(5))

    async def test_ttl(self) -> None:
        """
        Entries older than C{ttlSeconds} are not read, and pruned; an empty
        inbox's C{first} is the next seq.
        """
        inbox = self.makeInbox()
        inbox.append([1], b'{"m":1}', 10.0)
        inbox.append([1], b'{"m":2}', 50.0)
        page = await inbox.read(1, 0, 10, 120.0)
        self.assertEqual(([s for s, _ in page.entries], page.first), ([2], 2))
        self.assertEqual(await inbox.prune(200.0), 2)
        page = await inbox.read(1, 0, 10, 200.0)
        self.assertEqual((page.entries, page.first, page.last), ([], 3, 2))

    async def test_committed(self) -> None:
        """
        C{committed} fires (once what was appended is durable).
        """
        inbox = self.makeInbox()
        inbox.append([1], b'{"m":1}', 10.0)
        self.assertIsNone(await inbox.committed())


class MemoryInboxTests(InboxTestsMixin, TestCase):
    """
    L{MemoryInbox}.
    """

    def makeInbox(self) -> MemoryInbox:
        return MemoryInbox(ttlSeconds=100, maxPerUser=3)

    for _name in [n for n in dir(InboxTestsMixin) if n.startswith("test_")]:
        locals()[_name] = asyncTest(getattr(InboxTestsMixin, _name))
    del _name


class SqliteInboxTests(DatabaseMixin, InboxTestsMixin, TestCase):
    """
    L{wsserver.history.sqlite.SqliteInbox}: the same behaviour, and it
    survives restarts.
    """

    def makeInbox(self) -> Any:
        return SqliteInbox(self.openDatabase(), reactor, ttlSeconds=100, maxPerUser=3)

    for _name in [n for n in dir(InboxTestsMixin) if n.startswith("test_")]:
        locals()[_name] = asyncTest(getattr(InboxTestsMixin, _name))
    del _name

    @asyncTest
    async def test_survivesRestart(self) -> None:
        """
        Entries and seqs survive closing and opening the database: a seq is
        never reused, even after every entry of the user was dropped.
        """
        db = self.openDatabase()
        inbox = SqliteInbox(db, reactor, ttlSeconds=100, maxPerUser=3)
        for n in range(5):
            inbox.append([1, 2**64 - 1], b'{"m":%d}' % n, 10.0)
        await inbox.committed()
        await inbox.prune(500.0)
        inbox.append([2**64 - 1], b'{"m":"x"}', 500.0)
        await inbox.committed()
        await db.close()
        inbox = SqliteInbox(self.openDatabase(), reactor, ttlSeconds=100, maxPerUser=3)
        self.assertEqual(inbox.append([1], b'{"m":5}', 600.0), [6])
        self.assertEqual(inbox.append([2**64 - 1], b'{"m":5}', 600.0), [7])
        page = await inbox.read(2**64 - 1, 0, 10, 600.0)
        self.assertEqual([s for s, _ in page.entries], [6, 7])

    @asyncTest
    async def test_batchedPerTurn(self) -> None:
        """
        The appends of one reactor turn are one transaction (the data file
        is written once for all of them), and do not wait for it.
        """
        db = self.openDatabase()
        inbox = SqliteInbox(db, reactor, ttlSeconds=100, maxPerUser=1000)
        runs = []
        original = db.run

        def counting(interaction: Any, *args: Any) -> Any:
            runs.append(interaction.__name__)
            return original(interaction, *args)

        db.run = counting  # type: ignore[method-assign]
        for n in range(50):
            inbox.append([1, 2], b'{"m":%d}' % n, 10.0)
        self.assertEqual(runs, [])
        await inbox.committed()
        self.assertEqual(runs, ["_append"])
        self.assertEqual(len((await inbox.read(2, 0, 1000, 10.0)).entries), 50)

    @asyncTest
    async def test_readSeesPendingAppends(self) -> None:
        """
        A read right after an append (same turn) sees it.
        """
        inbox = SqliteInbox(self.openDatabase(), reactor, ttlSeconds=100, maxPerUser=10)
        inbox.append([1], b'{"m":1}', 10.0)
        self.assertEqual([s for s, _ in (await inbox.read(1, 0, 10, 10.0)).entries], [1])

    @asyncTest
    async def test_migratedFromVersion2(self) -> None:
        """
        A version 2 database (before the inbox) is migrated to the current
        version, its undelivered messages kept, and the inbox works.
        """
        db = self.openDatabase()
        await SqliteUndeliveredStore(db, 100, 10).put(1, b"kept", 10.0)
        await db.close()
        connection = sqlite3.connect(self.databasePath(), isolation_level=None)
        for name in ("inbox_release", "inbox_created", "inbox_message", "events_pending"):
            connection.execute(f"DROP {'TRIGGER' if name == 'inbox_release' else 'INDEX'} {name}")
        for name in ("inbox", "inbox_messages", "inbox_seq"):
            connection.execute(f"DROP TABLE {name}")
        connection.execute("PRAGMA user_version = 2")
        connection.close()
        db = self.openDatabase()
        connection = sqlite3.connect(self.databasePath())
        self.assertEqual(connection.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        connection.close()
        self.assertEqual(SCHEMA_VERSION, 5)
        self.assertEqual(await SqliteUndeliveredStore(db, 100, 10).fetch(1, 10.0), [(1, b"kept")])
        inbox = SqliteInbox(db, reactor, 100, 10)
        self.assertEqual(inbox.append([1], b'{"m":1}', 10.0), [1])
        self.assertEqual(len((await inbox.read(1, 0, 10, 10.0)).entries), 1)


@implementer(IInbox)
class SlowInbox:
    """
    A L{MemoryInbox} that answers as Redis does: C{append} stores at once
    but answers the seqs when the test fires C{appends}; C{read} answers
    (what is stored at that moment) when the test fires it.
    """

    def __init__(self) -> None:
        self.memory = MemoryInbox(3600, 1000)
        self.appends: list[tuple[Deferred[list[int]], list[int]]] = []
        self.reads: list[tuple[Deferred[Page], tuple[Any, ...]]] = []

    def append(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[list[int]]:
        d: Deferred[list[int]] = Deferred()
        self.appends.append((d, self.memory.append(userIds, payload, now)))
        return d

    def answerAppend(self) -> None:
        d, seqs = self.appends.pop(0)
        d.callback(seqs)

    def committed(self) -> Deferred[None]:
        return succeed(None)

    def read(self, userId: int, since: int, limit: int, now: float) -> Deferred[Page]:
        d: Deferred[Page] = Deferred()
        self.reads.append((d, (userId, since, limit, now)))
        return d

    def answerRead(self) -> None:
        d, args = self.reads.pop(0)
        self.memory.read(*args).addCallback(d.callback)

    def prune(self, now: float) -> Deferred[int]:
        return succeed(0)


class RouterInboxTests(SynchronousTestCase):
    """
    The router with the inbox on: seqs, resuming, C{history_gap}, the
    undelivered queue.
    """

    def makeRouter(self, inbox: Any = None, store: Any = None, **config: Any) -> Router:
        self.clock = Clock()
        self.clock.advance(START)
        self.inbox = MemoryInbox(3600, 1000) if inbox is None else inbox
        self.router = Router(MessageConfig(**config), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             store=store, inbox=self.inbox)
        return self.router

    def connect(self, userId: int, since: int | None = None) -> FakeConnection:
        connection = FakeConnection(userId)
        self.router.attach(connection, since)
        return connection

    def seqs(self, connection: FakeConnection) -> list[Any]:
        return [m.get("seq") for m in connection.received()]

    def test_deliveredWithSeq(self) -> None:
        """
        Each recipient's copy carries that recipient's seq; the message is
        otherwise the same.
        """
        self.makeRouter()
        sender = self.connect(1)
        two, three = self.connect(2), self.connect(3)
        self.router.receive(sender, text(0, [3]))
        self.router.receive(sender, text(1, [2, 3]))
        self.assertEqual(self.seqs(two), [1])
        self.assertEqual(self.seqs(three), [1, 2])
        self.assertEqual(two.received()[0]["recipients"], [2, 3])
        self.assertEqual(list(two.received()[0]), ["id", "type", "text", "timestamp", "sender", "recipients",
                                                   "data", "seq"])

    def test_sendBackInSendersInbox(self) -> None:
        """
        With C{enableSendBack}, the sender's copy is in the sender's inbox,
        with the sender's seq.
        """
        self.makeRouter(enableSendBack=True)
        sender = self.connect(1)
        self.router.receive(sender, text(0, [2]))
        self.assertEqual(self.seqs(sender), [1])
        self.assertEqual([s for s, _ in self.successResultOf(self.inbox.read(1, 0, 10, START)).entries], [1])

    def test_phoneAndLaptop(self) -> None:
        """
        The laptop is online, the phone offline: the laptop gets the
        messages live; the phone, resuming with the last seq it saw, gets
        what it missed, in order, then the live ones, each once.
        """
        self.makeRouter()
        sender = self.connect(1)
        laptop = self.connect(2)
        phone = self.connect(2, since=0)
        self.router.receive(sender, text(0))
        self.router.detach(phone)
        for n in range(1, 4):
            self.router.receive(sender, text(n))
        phone = self.connect(2, since=1)
        self.router.receive(sender, text(4))
        self.assertEqual(laptop.texts(), ["m0", "m1", "m2", "m3", "m4"])
        self.assertEqual(self.seqs(laptop), [1, 2, 3, 4, 5])
        self.assertEqual(phone.texts(), ["m1", "m2", "m3", "m4"])
        self.assertEqual(self.seqs(phone), [2, 3, 4, 5])

    def test_sinceZeroReplaysAll(self) -> None:
        """
        C{since=0} replays the whole inbox; without C{since} nothing is
        replayed.
        """
        self.makeRouter()
        sender = self.connect(1)
        for n in range(3):
            self.router.receive(sender, text(n))
        self.assertEqual(self.connect(2).sent, [])
        self.assertEqual(self.connect(2, since=0).texts(), ["m0", "m1", "m2"])

    def test_liveDuringReplayBuffered(self) -> None:
        """
        Messages that arrive while the replay is read wait, and come after
        it, once each, in order.
        """
        inbox = SlowInbox()
        self.makeRouter(inbox)
        sender = self.connect(1)
        self.router.receive(sender, text(0))
        inbox.answerAppend()
        phone = self.connect(2, since=0)
        self.router.receive(sender, text(1))
        inbox.answerAppend()
        self.assertEqual(phone.sent, [])
        inbox.answerRead()
        self.router.receive(sender, text(2))
        inbox.answerAppend()
        self.assertEqual(phone.texts(), ["m0", "m1", "m2"])
        self.assertEqual(self.seqs(phone), [1, 2, 3])

    def test_lateCopyOfReplayedMessage(self) -> None:
        """
        A message appended before the replay was read, whose live copy
        comes after the attach (Redis answered later) or even after the
        replay (another node forwarded it late), is not delivered twice.
        """
        inbox = SlowInbox()
        self.makeRouter(inbox)
        sender = self.connect(1)
        self.router.receive(sender, text(0))
        phone = self.connect(2, since=0)
        self.router.receive(sender, text(1))
        inbox.answerRead()  # both are in the replay
        inbox.answerAppend()  # their live copies come after it
        inbox.answerAppend()
        self.router.receive(sender, text(2))
        inbox.answerAppend()
        self.assertEqual(phone.texts(), ["m0", "m1", "m2"])

    def test_manyDuringReconnect(self) -> None:
        """
        400 messages sent while a device reconnects with C{since} (before,
        during and after the replay is read) arrive all, once, in order.
        """
        inbox = SlowInbox()
        self.makeRouter(inbox)
        sender = self.connect(1)
        laptop = self.connect(2)
        for n in range(100):
            self.router.receive(sender, text(n))
        for _ in range(50):
            inbox.answerAppend()
        phone = self.connect(2, since=0)
        for n in range(100, 300):
            self.router.receive(sender, text(n))
            if n % 3 == 0:
                inbox.answerAppend()
            if n == 200:
                inbox.answerRead()
        for n in range(300, 400):
            self.router.receive(sender, text(n))
        while inbox.appends:
            inbox.answerAppend()
        expected = [f"m{n}" for n in range(400)]
        self.assertEqual(phone.texts(), expected)
        self.assertEqual(laptop.texts(), expected)
        self.assertEqual(self.seqs(phone), list(range(1, 401)))

    def test_closedDuringReplay(self) -> None:
        """
        A connection that closes while its replay is read gets nothing.
        """
        inbox = SlowInbox()
        self.makeRouter(inbox)
        sender = self.connect(1)
        self.router.receive(sender, text(0))
        inbox.answerAppend()
        phone = self.connect(2, since=0)
        self.router.detach(phone)
        inbox.answerRead()
        self.assertEqual(phone.sent, [])

    def test_historyGap(self) -> None:
        """
        When entries after C{since} were dropped, the replay starts with
        C{history_gap} naming C{since} and the oldest seq kept.
        """
        self.makeRouter(MemoryInbox(3600, 3))
        sender = self.connect(1)
        for n in range(6):
            self.router.receive(sender, text(n))
        phone = self.connect(2, since=1)
        gap, *rest = phone.received()
        self.assertEqual(
            {k: gap[k] for k in ("type", "sender", "recipients", "data")},
            {"type": "history_gap", "sender": 0, "recipients": [2], "data": {"since": 1, "first": 4}},
        )
        self.assertEqual(sorted(gap), ["data", "id", "recipients", "sender", "text", "timestamp", "type"])
        self.assertEqual([m["seq"] for m in rest], [4, 5, 6])
        self.assertEqual(self.connect(2, since=3).types(), ["text"] * 3)

    def test_resumeTakesTheQueuesPlace(self) -> None:
        """
        With the undelivered queue on, a connection that resumes gets the
        replay only, and the queue is emptied: nothing arrives twice; a
        connection without C{since} gets the queue as before.
        """
        store = MemoryUndeliveredStore(3600, 100)
        self.makeRouter(store=store)
        sender = self.connect(1)
        for n in range(3):
            self.router.receive(sender, text(n, [2, 3]))
        self.assertEqual(self.successResultOf(store.pending(2)), 3)
        phone = self.connect(2, since=1)
        self.assertEqual(phone.texts(), ["m1", "m2"])
        self.assertEqual(self.successResultOf(store.pending(2)), 0)
        other = self.connect(3)
        self.assertEqual(other.texts(), ["m0", "m1", "m2"])
        self.assertEqual(self.seqs(other), [1, 2, 3])

    def test_forBotNotInInbox(self) -> None:
        """
        A message for the bot is in nobody's inbox.
        """
        self.makeRouter()
        sender = self.connect(1)
        self.router.receive(sender, text(0, [0]))
        self.assertEqual(self.successResultOf(self.inbox.read(0, 0, 10, START)).entries, [])


class AckTests(SynchronousTestCase):
    """
    Acks after commit, and resent tokens.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.commits: list[Deferred[None]] = []
        inbox = self

        @implementer(IInbox)
        class HeldInbox(MemoryInbox):
            def committed(self) -> Deferred[None]:
                d: Deferred[None] = Deferred()
                inbox.commits.append(d)
                return d

        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             inbox=HeldInbox(3600, 100), ackSeconds=300)
        self.sender = FakeConnection(1)
        self.router.attach(self.sender)
        self.recipient = FakeConnection(2)
        self.router.attach(self.recipient)

    def acks(self) -> list[dict[str, Any]]:
        return [m for m in self.sender.received() if m["type"] == "message_ack"]

    def test_ackAfterCommit(self) -> None:
        """
        The sender gets C{message_ack} with its token and the message id only
        once the write is committed; the recipient gets the message without
        the token.
        """
        message = self.router.receive(self.sender, text(0, ack="t-1"))
        self.assertEqual(self.recipient.texts(), ["m0"])
        self.assertNotIn("ack", self.recipient.received()[0])
        self.assertEqual(self.acks(), [])
        self.commits.pop().callback(None)
        [ack] = self.acks()
        self.assertEqual(
            {k: ack[k] for k in ("type", "sender", "recipients", "data")},
            {"type": "message_ack", "sender": 0, "recipients": [1], "data": {"ack": "t-1", "id": message.id}},
        )

    def test_noAckNoWait(self) -> None:
        """
        A message without C{ack} asks for no commit and gets no ack.
        """
        self.router.receive(self.sender, text(0))
        self.assertEqual((self.commits, self.acks()), ([], []))

    def test_resentToken(self) -> None:
        """
        A token resent within the window is acked again with the first id and
        not routed again; after the window it is a new message.
        """
        first = self.router.receive(self.sender, text(0, ack="t"))
        self.commits.pop().callback(None)
        self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual(self.recipient.texts(), ["m0"])
        self.assertEqual([a["data"] for a in self.acks()], [{"ack": "t", "id": first.id}] * 2)
        self.clock.advance(301)
        self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual(self.recipient.texts(), ["m0", "m0"])

    def test_tokenPerUser(self) -> None:
        """
        The same token from another user is another message.
        """
        self.router.receive(self.sender, text(0, ack="t"))
        self.router.receive(self.recipient, text(1, [1], ack="t"))
        self.assertEqual(self.recipient.texts(), ["m0"])
        self.assertEqual(self.sender.texts(), ["m1"])

    def test_badToken(self) -> None:
        """
        An C{ack} that is not a string of at most 64 characters is invalid.
        """
        for ack in (5, "x" * 65, ["a"]):
            error = self.assertRaises(InvalidPayload, self.router.receive, self.sender, text(0, ack=ack))
            self.assertEqual(error.reason, "$.ack must be a string of at most 64 characters")
        self.router.receive(self.sender, text(0, ack="x" * 64))
        self.assertEqual(self.recipient.texts(), ["m0"])

    def test_waitsForQueueAndEvents(self) -> None:
        """
        Without the inbox, the ack waits for the undelivered queue's write
        and the event notifier's.
        """
        events: list[Deferred[None]] = []
        store = MemoryUndeliveredStore(3600, 100)
        writes: list[Deferred[None]] = []
        original = store.put

        def held(userId: int, payload: bytes, now: float) -> Deferred[None]:
            original(userId, payload, now)
            d: Deferred[None] = Deferred()
            writes.append(d)
            return d

        store.put = held  # type: ignore[method-assign]

        def committed() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            events.append(d)
            return d

        router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")), store=store,
                        notify=lambda m, p: None, notifyCommitted=committed)
        sender = FakeConnection(1)
        router.attach(sender)
        router.receive(sender, text(0, [9], ack="a"))
        writes.pop().callback(None)
        self.assertEqual(sender.sent, [])
        events.pop().callback(None)
        self.assertEqual(sender.types(), ["message_ack"])


class MemoryIdempotencyTests(SynchronousTestCase):
    """
    L{MemoryIdempotency}.
    """

    def test_claim(self) -> None:
        """
        The first claim stores, the next ones answer the stored value until
        the time is up.
        """
        clock = Clock()
        store = MemoryIdempotency(clock)
        self.assertTrue(verifyObject(IIdempotency, store))
        self.assertIsNone(self.successResultOf(store.claim(b"k", b"v1", 10)))
        self.assertEqual(self.successResultOf(store.claim(b"k", b"v2", 10)), b"v1")
        clock.advance(10)
        self.assertIsNone(self.successResultOf(store.claim(b"k", b"v3", 10)))
        self.assertEqual(self.successResultOf(store.claim(b"k", b"v4", 10)), b"v3")


class ResumedStateTests(SynchronousTestCase):
    """
    What a resumed connection has had: late, out-of-order and caught-up
    copies.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.inbox = MemoryInbox(3600, 1000)
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             inbox=self.inbox)
        self.sender = FakeConnection(1)
        self.router.attach(self.sender)

    def test_outOfOrderAfterReplay(self) -> None:
        """
        After the replay, copies that come out of seq order (from several
        nodes) are all delivered, and a repeated one is not.
        """
        self.router.receive(self.sender, text(0))
        phone = FakeConnection(2)
        self.router.attach(phone, 0)
        payload = self.router.messages.fromPayload(text(9), 1).serialize()
        for seq in (3, 2, 3, 1, 4):
            self.router.deliverForwarded([2], withSeq(payload, seq))
        self.assertEqual([m["seq"] for m in phone.received()], [1, 3, 2, 4])

    def test_catchUp(self) -> None:
        """
        Another node appended to the inbox of a user it thought offline and
        announced it: the resumed connection reads the inbox again and gets
        what it lacks, once.
        """
        phone = FakeConnection(2)
        self.router.attach(phone, 0)
        self.router.receive(self.sender, text(0))
        self.inbox.append([2], self.router.messages.fromPayload(text(1), 1).serialize(), START)
        self.router.drainAgain(2)
        self.router.drainAgain(2)
        self.assertEqual(phone.texts(), ["m0", "m1"])
        self.assertEqual([m["seq"] for m in phone.received()], [1, 2])

    def test_catchUpDuringReplay(self) -> None:
        """
        An announcement while the replay is read is acted on after it.
        """
        inbox = SlowInbox()
        router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")), inbox=inbox)
        phone = FakeConnection(2)
        router.attach(phone, 0)
        router.drainAgain(2)
        inbox.memory.append([2], router.messages.fromPayload(text(1), 1).serialize(), START)
        inbox.reads.pop(0)[0].callback(Page([], 1, 0))  # the replay read before the append
        inbox.answerRead()
        self.assertEqual(phone.texts(), ["m1"])

    def test_sinceBeyondNewest(self) -> None:
        """
        A C{since} beyond the newest seq (a memory inbox restarted) replays
        nothing, and the new seqs are delivered.
        """
        phone = FakeConnection(2)
        self.router.attach(phone, 50)
        self.router.receive(self.sender, text(0))
        self.assertEqual([m["seq"] for m in phone.received()], [1])


class HistoryConfigTests(SynchronousTestCase):
    """
    C{chat.history} in the config file.
    """

    def test_defaults(self) -> None:
        """
        Off by default, sqlite, 1000 per user, a week; acks remembered 300 s.
        """
        from wsserver.config import HistoryConfig, parseConfig

        config = parseConfig({})
        self.assertEqual(config.chat.history, HistoryConfig(False, "sqlite", 1000, 604800))
        self.assertEqual(config.restApi.idempotencySeconds, 300)
        config = parseConfig({"chat": {"history": {"enabled": True, "storage": "memory", "maxPerUser": 5,
                                                   "ttlSeconds": 60}}, "restApi": {"idempotencySeconds": 10}})
        self.assertEqual(config.chat.history, HistoryConfig(True, "memory", 5, 60))
        self.assertEqual(config.restApi.idempotencySeconds, 10)

    def test_errorsNameTheKey(self) -> None:
        """
        A wrong storage, type or count is an error naming its key.
        """
        from wsserver.config import ConfigError, parseConfig

        error = self.assertRaises(ConfigError, parseConfig, {"chat": {"history": {
            "storage": "disk", "enabled": "yes", "maxPerUser": 0}}})
        text = "\n".join(error.problems)
        self.assertIn('chat.history.storage: unknown storage "disk"', text)
        self.assertIn("chat.history.enabled", text)
        self.assertIn("chat.history.maxPerUser", text)


class AckResendTests(SynchronousTestCase):
    """
    A resend while the first copy is not committed yet, or could not be.
    """

    setUp = AckTests.setUp
    acks = AckTests.acks

    def test_resendBeforeCommit(self) -> None:
        """
        A resend that comes before the first copy is committed is acked only
        once it is, with the first id, and not routed again.
        """
        first = self.router.receive(self.sender, text(0, ack="t"))
        self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual(self.acks(), [])
        self.commits.pop().callback(None)
        self.assertEqual([a["data"] for a in self.acks()], [{"ack": "t", "id": first.id}] * 2)
        self.assertEqual(self.recipient.texts(), ["m0"])

    def test_resendAfterFailedWrite(self) -> None:
        """
        When the first copy could not be written, nothing is acked, and a
        resend is routed again (and acked once written).
        """
        self.router.receive(self.sender, text(0, ack="t"))
        self.commits.pop().errback(RuntimeError("disk full"))
        self.assertEqual(self.acks(), [])
        second = self.router.receive(self.sender, text(0, ack="t"))
        self.commits.pop().callback(None)
        self.assertEqual([a["data"] for a in self.acks()], [{"ack": "t", "id": second.id}])
        self.assertEqual(self.recipient.texts(), ["m0", "m0"])
        self.flushLoggedErrors(RuntimeError, defer.FirstError)


@implementer(IPeers)
class TwoNodes(NoPeers):
    """
    This node ("a") and another ("b"), alive or dead as the test says.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodeId = "a"
        self.alive = {"a", "b"}

    def isAlive(self, nodeId: str) -> bool:
        return nodeId in self.alive


class AckClusterTests(SynchronousTestCase):
    """
    Ack tokens claimed in a store that another node shares: the claim is
    pending until the first copy is committed, and a resend acts on whose
    claim it finds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.claims = MemoryIdempotency(self.clock)
        self.peers = TwoNodes()
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             inbox=MemoryInbox(3600, 100), ackSeconds=300, idempotency=self.claims,
                             peers=self.peers)
        self.sender = FakeConnection(1)
        self.router.attach(self.sender)
        self.recipient = FakeConnection(2)
        self.router.attach(self.recipient)

    acks = AckTests.acks

    def claimedElsewhere(self, messageId: bytes) -> None:
        """
        Node "b" claimed token C{t} of user 1 and did not commit it (yet).
        """
        self.successResultOf(self.claims.claim(b"ack:1:t", b"p:b:" + messageId, 300))

    def test_settledAfterCommit(self) -> None:
        """
        The claim names this node while pending, and the message id once
        committed: a resend on any node is then acked with it.
        """
        first = self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual(self.successResultOf(self.claims.claim(b"ack:1:t", b"x", 300)), first.id.encode())

    def test_pendingOnLiveNode(self) -> None:
        """
        A resend whose first copy is still being written on another live
        node is neither acked nor routed: the client resends later.
        """
        self.claimedElsewhere(b"first")
        self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual((self.acks(), self.recipient.texts()), ([], []))

    def test_pendingOnDeadNode(self) -> None:
        """
        A resend whose first copy was claimed by a node that died before
        committing it is routed again and acked with its own id: an acked
        message is never one that may be lost.
        """
        self.claimedElsewhere(b"first")
        self.peers.alive.discard("b")
        second = self.router.receive(self.sender, text(0, ack="t"))
        self.assertEqual(self.recipient.texts(), ["m0"])
        self.assertEqual([a["data"] for a in self.acks()], [{"ack": "t", "id": second.id}])
        self.assertEqual(self.successResultOf(self.claims.claim(b"ack:1:t", b"x", 300)), second.id.encode())


@implementer(IIdempotency)
class SlowClaims(MemoryIdempotency):
    """
    Claims answered when the test says (a Redis round trip).
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.answers: list[tuple[Deferred[bytes | None], bytes | None]] = []

    def claim(self, key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        d: Deferred[bytes | None] = Deferred()
        self.answers.append((d, self.successResultOf(super().claim(key, value, ttlSeconds))))
        return d

    def successResultOf(self, d: Deferred[Any]) -> Any:
        result: list[Any] = []
        d.addCallback(result.append)
        return result[0]

    def answer(self) -> None:
        d, value = self.answers.pop(0)
        d.callback(value)


class AckOrderTests(SynchronousTestCase):
    """
    A sender's messages keep their order while an ack token is claimed.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.claims = SlowClaims(self.clock)
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             inbox=MemoryInbox(3600, 100), ackSeconds=300, idempotency=self.claims)
        self.sender = FakeConnection(1)
        self.router.attach(self.sender)
        self.recipient = FakeConnection(2)
        self.router.attach(self.recipient)

    def test_orderKept(self) -> None:
        """
        Messages sent after one with an ack token wait for its claim, and
        then go in the order sent, acked or not.
        """
        self.router.receive(self.sender, text(0, ack="a"))
        self.router.receive(self.sender, text(1))
        self.router.receive(self.sender, text(2, ack="b"))
        self.router.receive(self.sender, text(3))
        self.assertEqual(self.recipient.texts(), [])
        self.claims.answer()
        self.assertEqual(self.recipient.texts(), ["m0", "m1"])
        self.claims.answer()
        self.assertEqual(self.recipient.texts(), ["m0", "m1", "m2", "m3"])
        self.router.receive(self.sender, text(4))
        self.assertEqual(self.recipient.texts()[-1], "m4")

    def test_failedClaim(self) -> None:
        """
        A claim that fails (Redis down) routes nothing for it, and lets the
        messages behind it go.
        """
        self.router.receive(self.sender, text(0, ack="a"))
        self.router.receive(self.sender, text(1))
        d, _ = self.claims.answers.pop(0)
        d.errback(ConnectionError("Redis unreachable"))
        self.assertEqual(self.recipient.texts(), ["m1"])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
