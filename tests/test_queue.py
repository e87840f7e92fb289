"""
Tests for L{wsserver.queue} (the contract and the memory store) and
L{wsserver.prune}.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wsserver.history.memory import MemoryInbox
from wsserver.messages import Message
from wsserver.prune import IPrunable, pruneService
from wsserver.queue import IUndeliveredStore, forRecipient
from wsserver.queue.memory import MemoryUndeliveredStore


def serialized(recipients: list[int], text: str = "hi", data: Any = None) -> bytes:
    """
    A message as the router serializes it.
    """
    return Message("ID-1", "text", text, "2026-01-01T00:00:00.000000+00:00", 1, recipients, data).serialize()


def expectedCopy(payload: bytes, userId: int) -> bytes:
    """
    The copy of C{payload} for C{userId}, made the slow way (a full parse).
    """
    obj = orjson.loads(payload)
    obj["recipients"] = [userId]
    return orjson.dumps(obj)


class MemoryUndeliveredStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryUndeliveredStore}.
    """

    def setUp(self) -> None:
        self.store = MemoryUndeliveredStore(ttlSeconds=100, maxPerUser=3)

    def fetch(self, userId: int, now: float = 0) -> list[tuple[int, bytes]]:
        """
        What C{fetch} answers, synchronously.
        """
        result: list[tuple[int, bytes]] = self.successResultOf(self.store.fetch(userId, now))
        return result

    def payloads(self, userId: int, now: float = 0) -> list[bytes]:
        """
        The payloads C{fetch} answers, without their keys.
        """
        return [payload for _, payload in self.fetch(userId, now)]

    def pending(self, userId: int) -> int:
        """
        What C{pending} answers, synchronously.
        """
        result: int = self.successResultOf(self.store.pending(userId))
        return result

    def put(self, userId: int, payload: bytes, now: float = 0) -> None:
        """
        Put a payload and check that the store answered with L{None}.
        """
        self.assertIsNone(self.successResultOf(self.store.put(userId, payload, now)))

    def test_interface(self) -> None:
        """
        L{MemoryUndeliveredStore} provides L{IUndeliveredStore}.
        """
        self.assertTrue(verifyObject(IUndeliveredStore, self.store))

    def test_fetchEmpty(self) -> None:
        """
        A user with nothing stored gets an empty list, and nothing pending.
        """
        self.assertEqual(self.fetch(1), [])
        self.assertEqual(self.pending(1), 0)
        self.assertEqual(self.store.dropped, 0)

    def test_putFetchOrder(self) -> None:
        """
        C{fetch} answers the stored payloads oldest first, each with a
        distinct key, increasing in the order of C{put}.
        """
        self.put(1, b"a", 1)
        self.put(1, b"b", 2)
        self.put(1, b"c", 3)
        fetched = self.fetch(1, 4)
        self.assertEqual([p for _, p in fetched], [b"a", b"b", b"c"])
        keys = [k for k, _ in fetched]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual(len(keys), 3)

    def test_fetchDoesNotRemove(self) -> None:
        """
        C{fetch} leaves the messages stored: a second C{fetch} answers the
        same, and C{pending} still counts them.
        """
        self.put(1, b"a")
        self.put(1, b"b")
        first = self.fetch(1)
        self.assertEqual(self.fetch(1), first)
        self.assertEqual(self.pending(1), 2)

    def test_ackRemovesOnlyGivenKeys(self) -> None:
        """
        C{ack} forgets the messages with the given keys and keeps the others
        in their order.
        """
        self.put(1, b"a")
        self.put(1, b"b")
        self.put(1, b"c")
        (ka, _), (kb, _), (kc, _) = self.fetch(1)
        self.assertIsNone(self.successResultOf(self.store.ack(1, [ka, kc])))
        self.assertEqual(self.fetch(1), [(kb, b"b")])
        self.assertEqual(self.pending(1), 1)
        self.successResultOf(self.store.ack(1, [kb]))
        self.assertEqual(self.fetch(1), [])
        self.assertEqual(self.pending(1), 0)
        self.assertEqual(self.store.dropped, 0)

    def test_ackKeepsMessagesPutAfterFetch(self) -> None:
        """
        A message put between C{fetch} and C{ack} stays stored.
        """
        self.put(1, b"a")
        keys = [k for k, _ in self.fetch(1)]
        self.put(1, b"b")
        self.successResultOf(self.store.ack(1, keys))
        self.assertEqual(self.payloads(1), [b"b"])

    def test_ackUnknown(self) -> None:
        """
        C{ack} of unknown keys, or for a user with nothing stored, changes
        nothing.
        """
        self.put(1, b"a")
        (key, _), = self.fetch(1)
        self.successResultOf(self.store.ack(1, [key + 100]))
        self.successResultOf(self.store.ack(2, [key]))
        self.assertEqual(self.fetch(1), [(key, b"a")])
        self.assertEqual(self.pending(2), 0)

    def test_ackOtherUsersKey(self) -> None:
        """
        C{ack} for one user does not forget another user's message, even with
        its key.
        """
        self.put(1, b"a")
        self.put(2, b"b")
        (key2, _), = self.fetch(2)
        self.successResultOf(self.store.ack(1, [key2]))
        self.assertEqual(self.payloads(1), [b"a"])
        self.assertEqual(self.payloads(2), [b"b"])

    def test_perUserIsolation(self) -> None:
        """
        Each user has their own queue.
        """
        self.put(1, b"a1")
        self.put(2, b"b1")
        self.put(1, b"a2")
        self.assertEqual(self.payloads(1), [b"a1", b"a2"])
        self.assertEqual(self.payloads(2), [b"b1"])
        self.assertEqual(self.pending(1), 2)
        self.assertEqual(self.pending(2), 1)
        self.assertEqual(self.pending(3), 0)

    def test_ttlOnFetch(self) -> None:
        """
        C{fetch} leaves out (and drops) the messages older than C{ttlSeconds};
        a message exactly C{ttlSeconds} old is kept.
        """
        self.put(1, b"old", 0)
        self.put(1, b"new", 50)
        self.assertEqual(self.payloads(1, 100), [b"old", b"new"])
        self.assertEqual(self.store.dropped, 0)
        self.assertEqual(self.payloads(1, 101), [b"new"])
        self.assertEqual(self.store.dropped, 1)
        self.assertEqual(self.pending(1), 1)
        self.assertEqual(self.payloads(1, 151), [])
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(self.pending(1), 0)

    def test_prune(self) -> None:
        """
        C{prune} drops the expired messages of every user, answers how many,
        and counts them in C{dropped}.
        """
        self.put(1, b"a1", 0)
        self.put(1, b"a2", 30)
        self.put(2, b"b1", 10)
        self.put(3, b"c1", 80)
        self.assertEqual(self.successResultOf(self.store.prune(100)), 0)
        self.assertEqual(self.successResultOf(self.store.prune(111)), 2)
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(self.payloads(1, 111), [b"a2"])
        self.assertEqual(self.pending(2), 0)
        self.assertEqual(self.payloads(3, 111), [b"c1"])
        self.assertEqual(self.successResultOf(self.store.prune(1000)), 2)
        self.assertEqual(self.store.dropped, 4)
        self.assertEqual(self.pending(1) + self.pending(2) + self.pending(3), 0)

    def test_maxPerUser(self) -> None:
        """
        Over C{maxPerUser} messages for one user, the oldest are dropped and
        counted; other users are not affected.
        """
        self.put(2, b"other")
        for i in range(5):
            self.put(1, b"m%d" % (i,))
        self.assertEqual(self.payloads(1), [b"m2", b"m3", b"m4"])
        self.assertEqual(self.store.dropped, 2)
        self.assertEqual(self.pending(1), 3)
        self.assertEqual(self.payloads(2), [b"other"])

    def test_droppedAccumulates(self) -> None:
        """
        C{dropped} counts both the messages over C{maxPerUser} and the expired
        ones.
        """
        for i in range(4):
            self.put(1, b"m%d" % (i,), 0)
        self.assertEqual(self.store.dropped, 1)
        self.put(2, b"x", 0)
        self.assertEqual(self.successResultOf(self.store.prune(200)), 4)
        self.assertEqual(self.store.dropped, 5)


    def test_putManyStoredOnce(self) -> None:
        """
        C{putMany} keeps one L{bytes} object for all its users: every user's
        queue refers to the same one, and counts it as one message.
        """
        payload = serialized([1, 2, 3])
        self.assertIsNone(self.successResultOf(self.store.putMany([1, 2, 3], payload, 0)))
        self.assertEqual([self.pending(u) for u in (1, 2, 3, 4)], [1, 1, 1, 0])
        stored = [entry[2] for u in (1, 2, 3) for entry in self.store._queues[u]]
        self.assertEqual(len(stored), 3)
        for item in stored:
            self.assertIs(item, payload)

    def test_putManyFetchedAsCopy(self) -> None:
        """
        Each user of a C{putMany} fetches the message with C{recipients}
        C{[user]}, in order with what C{put} stored; the message itself is
        otherwise unchanged.
        """
        self.put(2, b"before")
        payload = serialized([1, 2, 5], data={"recipients": [7]})
        self.successResultOf(self.store.putMany([2, 5], payload, 0))
        self.assertEqual(self.payloads(2), [b"before", expectedCopy(payload, 2)])
        self.assertEqual(self.payloads(5), [expectedCopy(payload, 5)])
        self.assertEqual(orjson.loads(self.payloads(5)[0])["data"], {"recipients": [7]})

    def test_putManyAckOneUser(self) -> None:
        """
        The C{ack} of one user forgets the message for that user only.
        """
        payload = serialized([1, 2])
        self.successResultOf(self.store.putMany([1, 2], payload, 0))
        (key, _), = self.fetch(1)
        self.successResultOf(self.store.ack(1, [key]))
        self.assertEqual(self.pending(1), 0)
        self.assertEqual(self.payloads(2), [expectedCopy(payload, 2)])

    def test_putManyMaxPerUserAndTtl(self) -> None:
        """
        A C{putMany} message counts towards each user's C{maxPerUser} and
        expires after C{ttlSeconds}, once per user in C{dropped}.
        """
        for i in range(3):
            self.put(1, b"m%d" % (i,), 0)
        self.successResultOf(self.store.putMany([1, 2], serialized([1, 2]), 10))
        self.assertEqual(self.payloads(1), [b"m1", b"m2", expectedCopy(serialized([1, 2]), 1)])
        self.assertEqual(self.store.dropped, 1)
        self.assertEqual(self.successResultOf(self.store.prune(111)), 4)
        self.assertEqual(self.store.dropped, 5)
        self.assertEqual(self.pending(1) + self.pending(2), 0)

    def test_putManyEmpty(self) -> None:
        """
        C{putMany} for no user keeps nothing.
        """
        self.successResultOf(self.store.putMany([], serialized([1]), 0))
        self.assertEqual(self.store._queues, {})


class ForRecipientTests(SynchronousTestCase):
    """
    Tests for L{forRecipient}.
    """

    def test_rewrites(self) -> None:
        """
        The copy has C{recipients} C{[userId]} and everything else as it was,
        in the same order, as a full parse and serialization would give.
        """
        payload = serialized([3, 2**64 - 1, 0, 3], data={"a": [1, 2], "recipients": [1, 2]})
        copy = forRecipient(payload, 2**64 - 1)
        self.assertEqual(copy, expectedCopy(payload, 2**64 - 1))
        self.assertEqual(list(orjson.loads(copy)), ["id", "type", "text", "timestamp", "sender", "recipients", "data"])

    def test_trickyText(self) -> None:
        """
        A text that looks like the recipients field (quotes, brackets) is
        carried untouched: only the field itself is rewritten.
        """
        for text in [',"recipients":[9]', '\\",\"recipients\":[9]', "]]]", '"', "\\", "é ✓ \u0000"]:
            payload = serialized([4, 5], text=text)
            copy = forRecipient(payload, 5)
            self.assertEqual(copy, expectedCopy(payload, 5), text)
            self.assertEqual(orjson.loads(copy)["text"], text)

    def test_alreadyOwn(self) -> None:
        """
        A message whose recipients already are C{[userId]} is answered as it
        is, not copied.
        """
        payload = serialized([8])
        self.assertIs(forRecipient(payload, 8), payload)

    def test_otherLayout(self) -> None:
        """
        A message in another JSON layout (spaces, another field order) is
        rewritten by a full parse, which keeps integers beyond 64 bits exactly.
        """
        payload = b'{"data": {"big": 123456789012345678901234567890}, "recipients": [1, 2], "type": "x"}'
        self.assertEqual(
            json.loads(forRecipient(payload, 2)),
            {"data": {"big": 123456789012345678901234567890}, "recipients": [2], "type": "x"},
        )

    def test_bigIntegersInData(self) -> None:
        """
        In the server's layout, integers beyond 64 bits in C{data} (which the
        fast path never parses) arrive exactly as they were.
        """
        payload = serialized([1, 2]).replace(b'"data":null', b'"data":[123456789012345678901234567890]')
        self.assertEqual(json.loads(forRecipient(payload, 1))["data"], [123456789012345678901234567890])
        self.assertEqual(json.loads(forRecipient(payload, 1))["recipients"], [1])


class FlakyStore(MemoryUndeliveredStore):
    """
    A memory store whose C{prune} raises, or fails its L{Deferred}, the
    times the test says; it records when C{prune} was called.
    """

    def __init__(self, failures: list[str]) -> None:
        super().__init__(ttlSeconds=10, maxPerUser=10)
        self.failures = failures
        self.pruned: list[float] = []

    def prune(self, now: float) -> Deferred[int]:
        self.pruned.append(now)
        how = self.failures.pop(0) if self.failures else ""
        if how == "raise":
            raise OSError("disk on fire")
        if how == "fail":
            return fail(OSError("disk still on fire"))
        return super().prune(now)


class PruneServiceTests(SynchronousTestCase):
    """
    Tests for L{pruneService}.
    """

    def startPruning(self, failures: list[str]) -> tuple[FlakyStore, Clock, Any]:
        """
        Start a prune service every 60 seconds over a L{Clock}.
        """
        store = FlakyStore(failures)
        clock = Clock()
        service = pruneService([("undelivered messages", store)], clock, 60)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return store, clock, service

    def test_prunesEveryInterval(self) -> None:
        """
        The service prunes at once and then every interval, with the clock's
        time, dropping the expired messages.
        """
        store, clock, _ = self.startPruning([])
        store.put(1, b"m", 0)
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(store.pruned, [0, 60, 120])
        self.assertEqual(store.dropped, 1)

    def test_survivesFailures(self) -> None:
        """
        A prune that raises, or whose L{Deferred} fails, is logged and the
        next prune runs on time.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        store, clock, service = self.startPruning(["", "raise", "fail"])
        store.put(1, b"m", 0)
        for _ in range(3):
            clock.advance(60)
        self.assertEqual(store.pruned, [0, 60, 120, 180])
        self.assertEqual(store.dropped, 1)
        failures = [e for e in logged if "log_failure" in e]
        self.assertEqual(
            [(formatEvent(e), str(e["log_failure"].value)) for e in failures],
            [("could not drop expired undelivered messages", "disk on fire"),
             ("could not drop expired undelivered messages", "disk still on fire")],
        )
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
        self.assertTrue(service.running)
        self.assertIsNone(self.successResultOf(service.stopService()))

    def test_everyStore(self) -> None:
        """
        One service prunes every store it was given, each at the same time;
        one that fails is logged under its own name and does not keep the
        others from being pruned.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        failing, other = FlakyStore(["raise"]), FlakyStore([])
        clock = Clock()
        service = pruneService([("inbox entries", failing), ("undelivered messages", other)], clock, 60)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        other.put(1, b"m", 0)
        clock.advance(60)
        self.assertEqual((failing.pruned, other.pruned), ([0, 60], [0, 60]))
        self.assertEqual(other.dropped, 1)
        self.assertEqual([formatEvent(e) for e in logged if "log_failure" in e],
                         ["could not drop expired inbox entries"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_storesArePrunable(self) -> None:
        """
        The undelivered queue and the inbox are L{IPrunable}: the service
        takes every store whose entries expire.
        """
        verifyObject(IPrunable, MemoryUndeliveredStore(10, 10))
        verifyObject(IPrunable, MemoryInbox(10, 10))
