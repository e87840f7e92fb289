"""
Tests for the shared undelivered queue (L{RedisUndeliveredStore}) against a
real redis-server: a message for many users is kept once, each user gets the
copy for them, and the payload goes with its last user.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import fail, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from txredisapi import ResponseError
from zope.interface.verify import verifyObject

from wsserver.queue.redis import RedisUndeliveredStore
from wsserver.redis.address import parseRedisURL
from wsserver.redis.link import RedisLink
from wsserver.queue import IUndeliveredStore

from .redis import RedisTestCase
from .support import closeClient, openClient, startServer
from .test_database import copyFor, message

LARGEST = 2**64 - 1


class RedisUndeliveredStoreTests(RedisTestCase):
    """
    Tests for L{RedisUndeliveredStore}.
    """

    def makeStore(self, ttlSeconds: float = 100, maxPerUser: int = 3, **kwargs: Any) -> RedisUndeliveredStore:
        """
        A store on the test's redis-server, closed at cleanup.
        """
        store = RedisUndeliveredStore(RedisLink(parseRedisURL(self.url), reactor, 5, "queue"), ttlSeconds, maxPerUser,
                                      **kwargs)
        self.addCleanup(store._link.close)
        return store

    @inlineCallbacks
    def payloads(self, store: RedisUndeliveredStore, userId: int, now: float = 0) -> Any:
        """
        The payloads that C{fetch} answers, without their keys.
        """
        return [payload for _, payload in (yield store.fetch(userId, now))]

    @inlineCallbacks
    def sharedKeys(self) -> Any:
        """
        The keys of the shared payloads and of their reference counts,
        sorted (C{...:msg:...} first).
        """
        keys = yield self.redis.command("KEYS", "wsserver:queue:*:*")
        return sorted(keys)

    @inlineCallbacks
    def allocated(self) -> Any:
        """
        The bytes that redis-server has allocated.
        """
        stats = yield self.redis.command("MEMORY", "STATS")
        return int(dict(zip(stats[::2], stats[1::2]))[b"total.allocated"])

    def test_interface(self) -> None:
        """
        The store provides L{IUndeliveredStore}.
        """
        self.assertTrue(verifyObject(IUndeliveredStore, self.makeStore()))

    @inlineCallbacks
    def test_putManyStoredOnce(self) -> Any:
        """
        One 200 KB message for 2,000 users is one payload in Redis, each
        user's list holding a short reference: Redis grows by about the
        payload, not 2,000 copies.
        """
        store = self.makeStore(maxPerUser=10)
        users = list(range(1, 2001))
        payload = message(users, "x" * 200_000)
        before = yield self.allocated()
        yield store.putMany(users, payload, 1000.0)
        after = yield self.allocated()
        msg, refs = yield self.sharedKeys()
        self.assertTrue(msg.startswith(b"wsserver:queue:msg:"), msg)
        self.assertEqual(int((yield self.redis.command("STRLEN", msg))), len(payload))
        self.assertEqual(int((yield self.redis.command("GET", refs))), 2000)
        (item,) = yield self.redis.command("LRANGE", "wsserver:queue:2000", 0, -1)
        self.assertTrue(len(item) < 60, item)
        # a list per user costs a few hundred bytes in Redis; copies would
        # take 2,000 times 200 KB
        self.assertTrue(after - before < len(payload) + 2000 * 1000, after - before)
        self.assertEqual((yield self.payloads(store, 1999, 1000.0)), [copyFor(payload, 1999)])

    @inlineCallbacks
    def test_fetchedAsCopy(self) -> Any:
        """
        Each user of a C{putMany} fetches the message with C{recipients}
        C{[user]}, in its place among what C{put} stored; C{put} payloads
        are answered as they are.
        """
        store = self.makeStore()
        payload = message([3, LARGEST, 9])
        yield store.put(LARGEST, b"before", 0)
        yield store.putMany([LARGEST, 9], payload, 1)
        yield store.put(LARGEST, b"after", 2)
        self.assertEqual((yield self.payloads(store, LARGEST, 3)), [b"before", copyFor(payload, LARGEST), b"after"])
        self.assertEqual((yield self.payloads(store, 9, 3)), [copyFor(payload, 9)])
        self.assertEqual((yield self.payloads(store, 3, 3)), [])
        self.assertEqual((yield store.pending(LARGEST)), 3)

    @inlineCallbacks
    def test_putManyOneUser(self) -> Any:
        """
        A C{putMany} for one user keeps that user's copy in the list itself,
        with no shared payload; for no user it keeps nothing.
        """
        store = self.makeStore()
        payload = message([4, 5])
        yield store.putMany([5], payload, 0)
        yield store.putMany([], payload, 0)
        self.assertEqual((yield self.sharedKeys()), [])
        self.assertEqual((yield self.payloads(store, 5)), [copyFor(payload, 5)])
        self.assertEqual((yield store.pending(4)), 0)

    @inlineCallbacks
    def test_ackOneUser(self) -> Any:
        """
        The C{ack} of one user forgets the message for that user only; the
        last user's ack deletes the payload and its count.
        """
        store = self.makeStore()
        payload = message([1, 2, 3])
        yield store.putMany([1, 2, 3], payload, 0)
        for userId in (1, 2):
            yield store.ack(userId, [key for key, _ in (yield store.fetch(userId, 0))])
            self.assertEqual((yield store.pending(userId)), 0)
        _, refs = yield self.sharedKeys()
        self.assertEqual(int((yield self.redis.command("GET", refs))), 1)
        self.assertEqual((yield self.payloads(store, 3)), [copyFor(payload, 3)])
        yield store.ack(3, [key for key, _ in (yield store.fetch(3, 0))])
        self.assertEqual((yield self.sharedKeys()), [])

    @inlineCallbacks
    def test_ackInlineLikeReference(self) -> Any:
        """
        The ack of a message stored as it is, whose text holds C{" @"} and
        a reference, lets go of no shared payload (not a single C{DECR}).
        """
        store = self.makeStore()
        shared = message([1, 2])
        yield store.putMany([1, 2], shared, 0)
        msg, refs = yield self.sharedKeys()
        ref = msg.rpartition(b":")[2].decode()
        yield store.put(1, message([1], f" @{ref} @x"), 0)
        fetched = yield store.fetch(1, 0)
        yield self.redis.command("CONFIG", "RESETSTAT")
        yield store.ack(1, [fetched[1][0]])
        stats = yield self.redis.command("INFO", "commandstats")
        self.assertIn(b"cmdstat_lrem", stats)
        self.assertNotIn(b"cmdstat_decr", stats)
        self.assertEqual(int((yield self.redis.command("GET", refs))), 2)
        self.assertEqual(sorted((yield self.redis.command("KEYS", "*"))),
                         [b"wsserver:queue:1", b"wsserver:queue:2", msg, refs])

    @inlineCallbacks
    def test_concurrentDrains(self) -> Any:
        """
        Two nodes that drain one user at once both deliver the shared
        message, and let go of it once between them: the other users keep it.
        """
        a = self.makeStore()
        b = self.makeStore()
        payload = message([7, 8])
        yield a.putMany([7, 8], payload, 0)
        seenA = yield a.fetch(7, 0)
        seenB = yield b.fetch(7, 0)
        self.assertEqual(seenA, seenB)
        yield a.ack(7, [k for k, _ in seenA])
        yield b.ack(7, [k for k, _ in seenB])
        self.assertEqual((yield self.payloads(a, 8)), [copyFor(payload, 8)])
        _, refs = yield self.sharedKeys()
        self.assertEqual(int((yield self.redis.command("GET", refs))), 1)

    @inlineCallbacks
    def test_maxPerUser(self) -> Any:
        """
        A C{putMany} message counts towards each user's C{maxPerUser}; the
        trimmed ones are counted in C{dropped}, and a payload trimmed from
        its last list is deleted.
        """
        store = self.makeStore()
        payload = message([1, 2])
        yield store.putMany([1, 2], payload, 0)
        for i in range(3):
            yield store.put(1, b"m%d" % (i,), 0)
        self.assertEqual((yield self.payloads(store, 1)), [b"m0", b"m1", b"m2"])
        self.assertEqual(store.dropped, 1)
        self.assertEqual((yield self.payloads(store, 2)), [copyFor(payload, 2)])
        for i in range(3):
            yield store.put(2, b"n%d" % (i,), 0)
        self.assertEqual(store.dropped, 2)
        self.assertEqual((yield self.sharedKeys()), [])

    @inlineCallbacks
    def test_trimInFlight(self) -> Any:
        """
        C{put}s in flight together for one user (nobody waits for the
        previous one) trim exactly to C{maxPerUser}, the oldest first.
        """
        store = self.makeStore()
        yield gatherResults([store.put(1, b"m%d" % (i,), 0) for i in range(6)])
        self.assertEqual((yield self.payloads(store, 1)), [b"m3", b"m4", b"m5"])
        self.assertEqual(store.dropped, 3)

    @inlineCallbacks
    def test_ttl(self) -> Any:
        """
        A message older than C{ttlSeconds} is left out by C{fetch} and
        removed (and let go of) at the next ack; a shared payload expires on
        its own shortly after C{ttlSeconds}, and an item whose payload has
        gone is left out too.
        """
        store = self.makeStore()
        old = message([1, 2], "old")
        yield store.putMany([1, 2], old, 0)
        yield store.putMany([1, 2], message([1, 2], "gone"), 50)
        yield store.put(1, b"new", 60)
        refsOld = sorted((yield self.sharedKeys()))
        ttl = int((yield self.redis.command("TTL", refsOld[-1])))
        self.assertTrue(100 < ttl <= 100 + 3600, ttl)
        gone = [k for k in refsOld if b":msg:" in k]
        # the payload of one of them vanished (expired early, by hand)
        for key in gone:
            if b"gone" in (yield self.redis.command("GET", key)):
                yield self.redis.command("DEL", key)
        fetched = yield store.fetch(1, 101)
        self.assertEqual([p for _, p in fetched], [b"new"])
        yield store.ack(1, [k for k, _ in fetched])
        self.assertEqual((yield store.pending(1)), 0)
        self.assertEqual((yield self.payloads(store, 2, 100)), [copyFor(old, 2)])

    @inlineCallbacks
    def test_announce(self) -> Any:
        """
        Every user of a C{putMany} is announced once it is queued (so that a
        node where the user just came online reads the queue again).
        """
        announced: list[int] = []
        store = self.makeStore(announce=announced.append)
        yield store.putMany([4, 5, 6], message([4, 5, 6]), 0)
        yield store.put(7, b"x", 0)
        self.assertEqual(sorted(announced), [4, 5, 6, 7])



class _AnswerLost:
    """
    A link whose first C{EVAL} reaches Redis but whose answer is lost (as
    when the connection drops right after Redis ran it).
    """

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.lost = 1

    def execute(self, *args: bytes) -> Any:
        d = self._link.execute(*args)
        if args[0] == b"EVAL" and self.lost:
            self.lost -= 1
            return d.addCallback(lambda _: fail(ConnectionError("connection lost")))
        return d


class UnreachableTests(RedisTestCase):
    """
    L{RedisUndeliveredStore} while its Redis is down or frozen: writes
    wait, bounded, and go out once, in order, when it is back.
    """

    def makeStore(self, maxWaiting: int = 100, timeout: float = 5) -> RedisUndeliveredStore:
        link = RedisLink(parseRedisURL(self.url), reactor, timeout, "queue")
        self.addCleanup(link.close)
        store = RedisUndeliveredStore(link, 100, 100, clock=reactor, maxWaiting=maxWaiting)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def items(self, userId: int) -> Any:
        return [item.partition(b" ")[2] for item in (yield self.redis.command("LRANGE", f"wsserver:queue:{userId}",
                                                                               "0", "-1"))]

    @inlineCallbacks
    def test_downThenBack(self) -> Any:
        """
        Writes made while Redis is stopped all land once it is started
        again, in order, each once; a message for many users too.
        """
        store = self.makeStore()
        yield store.put(7, b"before", 0)  # (the test's Redis keeps nothing across a restart)
        yield self.redis.stop()
        writes = [store.put(7, b"w%d" % i, 0) for i in range(5)]
        writes.append(store.putMany([7, 8], message([7, 8]), 0))
        yield deferLater(reactor, 1.2, lambda: None)
        self.assertGreater(store.waiting(), 0)
        self.assertEqual([w.called for w in writes], [False] * 6)
        yield self.redis.start()
        yield gatherResults(writes)
        self.assertEqual(store.waiting(), 0)
        items = yield self.items(7)
        self.assertEqual(items[:5], [b"w%d" % i for i in range(5)])
        self.assertEqual(len(items), 6)
        self.assertEqual([p for _, p in (yield store.fetch(8, 1))], [copyFor(message([7, 8]), 8)])

    @inlineCallbacks
    def test_frozenPastTheTimeout(self) -> Any:
        """
        A Redis frozen (SIGSTOP) longer than the command timeout: the
        writes time out, wait, and are written once it resumes, each once.
        """
        store = self.makeStore(timeout=0.5)
        yield store.put(7, b"before", 0)
        self.redis.freeze()
        writes = [store.put(7, b"w%d" % i, 0) for i in range(5)]
        yield deferLater(reactor, 1.5, lambda: None)
        self.assertGreater(store.waiting(), 0)
        self.redis.thaw()
        yield gatherResults(writes)
        self.assertEqual((yield self.items(7)), [b"before"] + [b"w%d" % i for i in range(5)])

    @inlineCallbacks
    def test_answerLost(self) -> Any:
        """
        A push that reached Redis and whose answer was lost is tried again
        without a second copy.
        """
        store = self.makeStore()
        store._link = _AnswerLost(store._link)  # type: ignore[assignment]
        yield store.put(7, b"once", 0)
        yield store.put(7, b"next", 0)
        self.assertEqual((yield self.items(7)), [b"once", b"next"])

    @inlineCallbacks
    def test_backPressure(self) -> Any:
        """
        With C{maxWaiting} writes waiting, the senders are paused once; they
        resume once the writes went out.
        """
        store = self.makeStore(maxWaiting=4)
        calls: list[str] = []
        store.onPressure(lambda: calls.append("pause"), lambda: calls.append("resume"))
        yield self.redis.stop()
        writes = [store.put(7, b"w%d" % i, 0) for i in range(6)]
        for _ in range(100):
            if store.paused:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(calls, ["pause"])
        yield self.redis.start()
        yield gatherResults(writes)
        self.assertEqual(calls, ["pause", "resume"])
        self.assertFalse(store.paused)
        self.assertEqual(len((yield self.items(7))), 6)

    @inlineCallbacks
    def test_refused(self) -> Any:
        """
        A write that Redis refuses (an error answer) fails at once: it is
        not tried again.
        """
        store = self.makeStore()
        yield self.redis.command("SET", "wsserver:queue:7", "not a list")
        yield self.assertFailure(store.put(7, b"x", 0), ResponseError)
        self.assertEqual(store.waiting(), 0)


class SharedQueueEndToEndTests(RedisTestCase):
    """
    Two servers on one Redis share the queue of a message for several
    offline users.
    """

    @inlineCallbacks
    def test_manyOfflineAcrossNodes(self) -> Any:
        """
        A message for two offline users, queued once by one node, reaches
        each (with C{recipients} C{[R]}) on whichever node they connect to;
        then Redis holds nothing of it.
        """
        def raw() -> dict[str, Any]:
            return {
                "cluster": {"redis": self.url, "heartbeatSeconds": 0.2, "nodeTimeoutSeconds": 1.0},
                "server": {"dataDir": os.path.abspath(self.mktemp())},
                "chat": {"enableUndeliveredQueue": True, "undelivered": {"storage": "redis"}},
            }

        a = yield startServer(self, raw())
        b = yield startServer(self, raw())
        alice = yield openClient(a, userId=1)
        self.addCleanup(closeClient, alice)
        alice.send({"type": "text", "text": "for both", "recipients": [2, 3]})
        for _ in range(250):
            if (yield self.redis.command("KEYS", "wsserver:queue:msg:*")):
                if int((yield self.redis.command("LLEN", "wsserver:queue:3"))) == 1:
                    break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len((yield self.redis.command("KEYS", "wsserver:queue:*"))), 4)
        bob = yield openClient(b, userId=2)
        self.addCleanup(closeClient, bob)
        carol = yield openClient(a, userId=3)
        self.addCleanup(closeClient, carol)
        got = yield bob.messages.get()
        self.assertEqual((got["text"], got["recipients"]), ("for both", [2]))
        got = yield carol.messages.get()
        self.assertEqual((got["text"], got["recipients"]), ("for both", [3]))
        for _ in range(250):
            if not (yield self.redis.command("KEYS", "wsserver:queue:*")):
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual((yield self.redis.command("KEYS", "wsserver:queue:*")), [])
