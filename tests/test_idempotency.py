"""
Tests for L{wsserver.idempotency}: the memory store on a L{task.Clock}, the
Redis store against a real redis-server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wsserver.idempotency import IIdempotency, MemoryIdempotency, RedisIdempotency
from wsserver.redis.address import parseRedisURL
from wsserver.redis.link import RedisLink

from .redis import RedisTestCase


class MemoryIdempotencyTests(SynchronousTestCase):
    """
    L{MemoryIdempotency}: claims that expire on the injected clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryIdempotency(self.clock)

    def claim(self, key: bytes, value: bytes = b"v", ttl: float = 10) -> bytes | None:
        return self.successResultOf(self.store.claim(key, value, ttl))

    def test_interface(self) -> None:
        """
        It provides L{IIdempotency}.
        """
        self.assertTrue(verifyObject(IIdempotency, self.store))

    def test_firstClaimStores(self) -> None:
        """
        The first claim of a key fires with L{None}; a second one within the
        TTL fires with the first value, and does not replace it.
        """
        self.assertIsNone(self.claim(b"k", b"first"))
        self.assertEqual(self.claim(b"k", b"second"), b"first")
        self.clock.advance(9.9)
        self.assertEqual(self.claim(b"k", b"third"), b"first")

    def test_expires(self) -> None:
        """
        After its TTL, a key can be claimed again.
        """
        self.claim(b"k", b"first", 10)
        self.clock.advance(10)
        self.assertIsNone(self.claim(b"k", b"again", 10))
        self.assertEqual(self.claim(b"k"), b"again")

    def test_settle(self) -> None:
        """
        C{settle} replaces a claimed key's value and keeps its expiry; a key
        that is gone stays gone.
        """
        self.assertIsNone(self.successResultOf(self.store.claim(b"k", b"pending", 10)))
        self.clock.advance(4)
        self.successResultOf(self.store.settle(b"k", b"done"))
        self.assertEqual(self.successResultOf(self.store.claim(b"k", b"x", 10)), b"done")
        self.clock.advance(6)
        self.assertIsNone(self.successResultOf(self.store.claim(b"k", b"new", 10)))
        self.successResultOf(self.store.settle(b"gone", b"v"))
        self.assertIsNone(self.successResultOf(self.store.claim(b"gone", b"v2", 10)))

    def test_keysApart(self) -> None:
        """
        Different keys are claimed independently.
        """
        self.assertIsNone(self.claim(b"a"))
        self.assertIsNone(self.claim(b"b"))
        self.assertEqual(self.claim(b"a", b"x"), b"v")

    def test_pruned(self) -> None:
        """
        Expired keys are dropped on the next claim, whatever the order of
        their TTLs: memory holds the live keys only, and no timer runs.
        """
        for i in range(100):
            self.claim(b"short%d" % i, ttl=1)
        self.claim(b"long", ttl=100)
        self.claim(b"mid", ttl=5)
        self.assertEqual(len(self.store), 102)
        self.clock.advance(2)
        self.claim(b"new", ttl=1)
        self.assertEqual(len(self.store), 3)
        self.clock.advance(4)
        self.claim(b"other", ttl=1)
        self.assertEqual(len(self.store), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroTtl(self) -> None:
        """
        A claim for no time stores nothing.
        """
        self.assertIsNone(self.claim(b"k", ttl=0))
        self.assertIsNone(self.claim(b"k", ttl=0))
        self.assertEqual(len(self.store), 0)


class RedisIdempotencyTests(RedisTestCase):
    """
    L{RedisIdempotency} against a real redis-server.
    """

    def setUp(self) -> Any:
        d = super().setUp()

        def link(_: Any) -> None:
            self.link = RedisLink(parseRedisURL(self.url), reactor, 5.0, "test Redis")
            self.addCleanup(self.link.close)
            self.store = RedisIdempotency(self.link)

        return d.addCallback(link)

    def test_interface(self) -> None:
        """
        It provides L{IIdempotency}.
        """
        self.assertTrue(verifyObject(IIdempotency, self.store))

    @inlineCallbacks
    def test_claims(self) -> Any:
        """
        The first claim stores (L{None}); the next ones fire with the first
        value; the key in Redis has the prefix and a TTL in milliseconds.
        """
        self.assertIsNone((yield self.store.claim(b"rest:k", b"id-1", 30)))
        self.assertEqual((yield self.store.claim(b"rest:k", b"id-2", 30)), b"id-1")
        self.assertEqual((yield self.redis.command("GET", "wsserver:idem:rest:k")), b"id-1")
        ttl = int((yield self.redis.command("PTTL", "wsserver:idem:rest:k")))
        self.assertTrue(29000 < ttl <= 30000, ttl)

    @inlineCallbacks
    def test_settle(self) -> Any:
        """
        C{settle} replaces the value and keeps the TTL; it does not create a
        key that is gone.
        """
        self.assertIsNone((yield self.store.claim(b"k", b"pending", 30)))
        yield self.store.settle(b"k", b"done")
        self.assertEqual((yield self.store.claim(b"k", b"x", 30)), b"done")
        ttl = int((yield self.redis.command("PTTL", "wsserver:idem:k")))
        self.assertTrue(28000 < ttl <= 30000, ttl)
        yield self.store.settle(b"gone", b"v")
        self.assertIsNone((yield self.redis.command("GET", "wsserver:idem:gone")))

    @inlineCallbacks
    def test_expires(self) -> Any:
        """
        After its TTL (Redis's clock), a key can be claimed again.
        """
        self.assertIsNone((yield self.store.claim(b"k", b"a", 0.1)))
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertIsNone((yield self.store.claim(b"k", b"b", 0.1)))

    @inlineCallbacks
    def test_concurrent(self) -> Any:
        """
        Of two stores (two nodes) claiming one key at once, one wins and the
        other gets the winner's value.
        """
        other = RedisLink(parseRedisURL(self.url), reactor, 5.0, "test Redis 2")
        self.addCleanup(other.close)
        second = RedisIdempotency(other)
        results = yield gatherResults([self.store.claim(b"k", b"one", 30), second.claim(b"k", b"two", 30)])
        self.assertEqual(results.count(None), 1)
        winner = b"one" if results[0] is None else b"two"
        self.assertIn(winner, results)

    @inlineCallbacks
    def test_binaryKey(self) -> Any:
        """
        Keys and values are bytes, kept as they are.
        """
        key = "ключ \x00 ✓".encode()
        self.assertIsNone((yield self.store.claim(key, b"\xff\x00", 30)))
        self.assertEqual((yield self.store.claim(key, b"x", 30)), b"\xff\x00")

    def test_redisDown(self) -> Any:
        """
        While Redis is unreachable, a claim fails (the caller decides).
        """
        d = self.redis.stop()
        d.addCallback(lambda _: self.store.claim(b"k", b"v", 30))
        return self.assertFailure(d, Exception)
