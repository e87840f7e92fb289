"""
Tests for L{wsserver.redis.links.RedisLinks}, the one owner of the
cluster's Redis connections, against a real redis-server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from zope.interface.verify import verifyObject

from wsserver.redis.address import parseRedisURL
from wsserver.redis.link import RedisClosed
from wsserver.redis.links import IRedisLinks, RedisLinks

from .redis import RedisTestCase


class RedisLinksTests(RedisTestCase):
    """
    The links connect when the service starts, each to the same Redis, and
    are all closed when it stops.
    """

    def makeLinks(self) -> tuple[RedisLinks, DeferredQueue[tuple[bytes, bytes]], list[str]]:
        """
        Links to the test's Redis with a subscriber on C{"c"}, not started;
        what it receives goes to a queue, its subscriptions to a list.
        """
        links = RedisLinks(parseRedisURL(self.url), reactor, 5.0)
        received: DeferredQueue[tuple[bytes, bytes]] = DeferredQueue()
        events: list[str] = []
        links.subscribe([b"c"], lambda channel, data: received.put((channel, data)),
                        lambda: events.append("subscribed"), lambda: events.append("lost"))
        self.addCleanup(links.stopService)  # closes the links, started or not
        return links, received, events

    def test_interface(self) -> None:
        """
        L{RedisLinks} provides L{IRedisLinks}.
        """
        links, _, _ = self.makeLinks()
        verifyObject(IRedisLinks, links)
        self.assertEqual(links.address, parseRedisURL(self.url))

    def test_subscribeOnce(self) -> None:
        """
        The pub/sub connection is made once: a second subscriber is an error.
        """
        links, _, _ = self.makeLinks()
        self.assertRaises(RuntimeError, links.subscribe, [b"d"], lambda c, d: None, lambda: None, lambda: None)

    @inlineCallbacks
    def test_connectWhenStarted(self) -> Any:
        """
        Nothing connects before the service starts; once it has, the hot
        and bulk links answer, and what is published on the channel reaches
        the subscriber.
        """
        links, received, events = self.makeLinks()
        self.assertFalse(links.hot.connected)
        self.assertFalse(links.bulk.connected)
        links.startService()
        yield links.bulk.execute(b"SET", b"k", b"v")
        self.assertEqual((yield links.hot.execute(b"GET", b"k")), b"v")
        while events != ["subscribed"]:
            yield self.redis.command("PING")
        self.assertEqual((yield links.hot.execute(b"PUBLISH", b"c", b"hello")), 1)
        self.assertEqual((yield received.get()), (b"c", b"hello"))

    @inlineCallbacks
    def test_stopClosesAll(self) -> Any:
        """
        Stopping the service closes every link: commands fail with
        L{RedisClosed}, and the subscriber no longer listens.
        """
        links, _, events = self.makeLinks()
        links.startService()
        yield links.hot.execute(b"PING")
        while events != ["subscribed"]:
            yield self.redis.command("PING")
        stopped = links.stopService()
        self.assertIsInstance(stopped, Deferred)
        yield stopped
        yield self.assertFailure(links.hot.execute(b"PING"), RedisClosed)
        yield self.assertFailure(links.bulk.execute(b"PING"), RedisClosed)
        # the server sees the close a moment after the client made it
        for _ in range(100):
            listening = (yield self.redis.command("PUBSUB", "NUMSUB", "c"))[1]
            if not listening:
                break
        self.assertEqual(listening, 0)
