"""
Tests for L{wsserver.history.redis.RedisInbox} against a real redis-server.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from wsserver.history import IInbox
from wsserver.history.redis import RedisInbox
from wsserver.redis.address import parseRedisURL
from wsserver.redis.link import RedisLink

from .redis import RedisTestCase


class RedisInboxTests(RedisTestCase):
    """
    The inbox in Redis: seqs from Redis, one script per reactor turn,
    C{maxPerUser}, the TTL, shared by two inboxes (two nodes).
    """

    def makeInbox(self, ttlSeconds: float = 100, maxPerUser: int = 3, clock=reactor) -> RedisInbox:
        link = RedisLink(parseRedisURL(self.url), reactor, 5, "inbox")
        self.addCleanup(link.close)
        return RedisInbox(link, clock, ttlSeconds, maxPerUser)

    def test_interface(self) -> None:
        """
        It provides L{IInbox}.
        """
        self.assertTrue(verifyObject(IInbox, self.makeInbox()))

    def test_seqsAndRead(self):
        """
        Seqs per user from 1, shared by two inboxes on one Redis; a read
        answers the entries after C{since}, with their seqs.
        """

        async def run() -> None:
            a, b = self.makeInbox(maxPerUser=10), self.makeInbox(maxPerUser=10)
            self.assertEqual(await a.append([1, 2], b'{"m":1}', 10.0), [1, 1])
            self.assertEqual(await b.append([2], b'{"m":2}', 10.0), [2])
            page = await a.read(2, 0, 10, 11.0)
            self.assertEqual(page.entries, [(1, b'{"m":1,"seq":1}'), (2, b'{"m":2,"seq":2}')])
            self.assertEqual((page.first, page.last), (1, 2))
            self.assertEqual((await b.read(2, 1, 10, 11.0)).entries, [(2, b'{"m":2,"seq":2}')])
            self.assertEqual([s for s, _ in (await b.read(2, 0, 1, 11.0)).entries], [1])

        return ensureDeferred(run())

    def test_batchedPerTurn(self):
        """
        The appends of one reactor turn are one command to Redis.
        """

        async def run() -> None:
            clock = Clock()
            inbox = self.makeInbox(maxPerUser=100, clock=clock)
            sent = []
            original = inbox._link.execute
            inbox._link.execute = lambda *args: (sent.append(args[0]), original(*args))[1]  # type: ignore
            waits = [inbox.append([1], b'{"m":%d}' % n, 10.0) for n in range(20)]
            self.assertEqual(sent, [])
            clock.advance(0)
            self.assertEqual(sent, [b"EVAL"])
            self.assertEqual(await gatherResults(waits), [[n] for n in range(1, 21)])

        return ensureDeferred(run())

    def test_maxPerUserAndTtl(self):
        """
        Over C{maxPerUser} the oldest go, entries older than C{ttlSeconds}
        are not read; C{first} says the oldest kept; seqs are not reused.
        """

        async def run() -> None:
            inbox = self.makeInbox()
            for n in range(5):
                await inbox.append([7], b'{"m":%d}' % n, 10.0 + n)
            page = await inbox.read(7, 0, 10, 20.0)
            self.assertEqual(([s for s, _ in page.entries], page.first, page.last), ([3, 4, 5], 3, 5))
            page = await inbox.read(7, 0, 10, 113.5)
            self.assertEqual(([s for s, _ in page.entries], page.first), ([5], 5))
            page = await inbox.read(7, 0, 10, 500.0)
            self.assertEqual((page.entries, page.first, page.last), ([], 6, 5))
            self.assertEqual(await inbox.append([7], b'{"m":5}', 500.0), [6])

        return ensureDeferred(run())

    def test_committed(self):
        """
        C{committed} fires once the appends so far are in Redis.
        """

        async def run() -> None:
            inbox = self.makeInbox()
            inbox.append([1], b'{"m":1}', 10.0)
            await inbox.committed()
            self.assertEqual(await self.redis.command("GET", "wsserver:inbox:seq:1"), b"1")
            await inbox.committed()

        return ensureDeferred(run())
