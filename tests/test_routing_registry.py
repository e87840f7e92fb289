"""
Tests for L{wsserver.routing.registry}: the users of a node, their
connections, and the bound on the users kept.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.config import MessageConfig
from wsserver.messages import MessageFactory
from wsserver.routing import Router
from wsserver.routing.registry import Registry
from wsserver.stats import emptyStatItem

from .test_routing import FakeConnection


class RegistryTests(SynchronousTestCase):
    """
    L{Registry}, on its own.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.registry = Registry()

    def test_addRemove(self) -> None:
        """
        Adding and removing connections counts them and keeps the user's
        statistics; removing one that was never added changes nothing.
        """
        a, b = FakeConnection(1), FakeConnection(1)
        user = self.registry.add(a, 100)
        self.assertIs(self.registry.add(b, 101), user)
        self.assertEqual((self.registry.connectionCount, self.registry.connectionsOf(1)), (2, 2))
        self.assertTrue(self.registry.isHere(1))
        self.assertIs(self.registry.remove(a, 102), user)
        self.assertIsNone(self.registry.remove(a, 103))
        self.assertIsNone(self.registry.remove(FakeConnection(9), 103))
        self.assertIs(self.registry.remove(b, 104), user)
        self.assertFalse(self.registry.isHere(1))
        self.assertEqual((user.stats.connectedTimes, user.stats.disconnectedTimes), (2, 2))
        self.assertEqual(self.registry.connectionCount, 0)
        self.assertEqual(self.registry.userIds(), [1])
        self.assertEqual(self.registry.localUserIds(), [])

    def test_statItems(self) -> None:
        """
        The statistics of every user, by id; zeros for a user never seen.
        """
        self.registry.add(FakeConnection(5), 100)
        self.registry.user(2, 100)
        self.assertEqual([item["id"] for item in self.registry.statItems(110)], [2, 5])
        self.assertTrue(self.registry.statItem(5, 110)["isOnline"])
        self.assertEqual(self.registry.statItem(7, 110), emptyStatItem(7))
        self.assertIsNone(self.registry.userStats(7))

    def test_allConnectionsSnapshot(self) -> None:
        """
        The connections can be removed while they are iterated.
        """
        conns = [FakeConnection(uid) for uid in (1, 1, 2)]
        for c in conns:
            self.registry.add(c, 100)
        for c in self.registry.allConnections():
            self.registry.remove(c, 101)
        self.assertEqual(self.registry.connectionCount, 0)

    def test_boundKeepsDraining(self) -> None:
        """
        Beyond C{maxTrackedUsers} the least recently seen users with no
        connection are forgotten, except one whose queue is being read.
        """
        registry = Registry(maxTrackedUsers=2)
        registry.user(1, 100).startDrain()
        registry.user(2, 100)
        registry.user(3, 100)
        self.assertEqual(sorted(registry.userIds()), [1, 2, 3])
        registry.user(4, 100)
        self.assertEqual(sorted(registry.userIds()), [1, 4])

    def test_seenKeptLonger(self) -> None:
        """
        A user seen again is forgotten last.
        """
        registry = Registry(maxTrackedUsers=2)
        one = registry.user(1, 100)
        registry.user(2, 100)
        registry.seen(one)
        registry.user(3, 100)
        self.assertEqual(sorted(registry.userIds()), [1, 3])


class TrackedUsersTests(SynchronousTestCase):
    """
    C{maxTrackedUsers}: statistics of users with no connection are dropped,
    least recently seen first.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             maxTrackedUsers=500)

    def test_manyIdsBounded(self) -> None:
        """
        10,000 distinct ids that connect and leave keep at most 500 offline
        users tracked, plus the online ones; the online keep their statistics.
        """
        online = [FakeConnection(i) for i in range(1, 4)]
        for c in online:
            self.router.attach(c)
        for uid in range(100, 10100):
            c = FakeConnection(uid)
            self.router.attach(c)
            self.router.detach(c)
            self.clock.advance(1)
        self.assertLessEqual(len(self.router.userIds()), 500 + len(online))
        for c in online:
            self.assertEqual(self.router.statItem(c.userId)["connectedTimes"], 1)
        # the most recently seen are kept
        self.assertEqual(self.router.statItem(10099)["connectedTimes"], 1)
        self.assertEqual(self.router.statItem(100), emptyStatItem(100))

    def test_restSendersBounded(self) -> None:
        """
        Senders through the REST API that never connect count too.
        """
        for uid in range(1, 2001):
            self.router.route(self.router.messages.fromObject(
                {"type": "text", "text": "x", "sender": uid, "recipients": [7]}, None))
        self.assertLessEqual(len(self.router.userIds()), 500)

    def test_seenAgainKept(self) -> None:
        """
        A user seen again (a new message from it) is forgotten last.
        """
        self.router.route(self.router.messages.fromObject(
            {"type": "text", "text": "x", "sender": 1, "recipients": [7]}, None))
        for uid in range(2, 1000):
            self.router.route(self.router.messages.fromObject(
                {"type": "text", "text": "x", "sender": uid, "recipients": [7]}, None))
            if uid % 100 == 0:
                self.router.route(self.router.messages.fromObject(
                    {"type": "text", "text": "x", "sender": 1, "recipients": [7]}, None))
        self.assertIn(1, self.router.userIds())

    def test_off(self) -> None:
        """
        With 0, every user is kept.
        """
        router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")))
        for uid in range(1, 1001):
            c = FakeConnection(uid)
            router.attach(c)
            router.detach(c)
        self.assertEqual(len(router.userIds()), 1000)
