"""
Tests for L{wsserver.storage}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wsserver.storage import IUndeliveredStore, MemoryUndeliveredStore


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

