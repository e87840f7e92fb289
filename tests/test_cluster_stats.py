"""
Statistics for the whole cluster: L{wsserver.stats.mergeStatRecords}, the
router's tracking of changed statistics, and L{wsserver.cluster.ClusterStats}
with two nodes in this process on a real redis-server.
"""

from __future__ import annotations

import inspect
import os

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from wsserver.cluster import StatsJournal
from wsserver.routing.interfaces import NoStatsListener
from wsserver.routing import Router
from wsserver.stats import UserStats, emptyStatItem, mergeStatRecords

from .redis import RedisTestCase
from .support import closeClient, openClient, restRequest, startServer
from .test_routing import RouterTestMixin

NOW = 10_000.0


def _record(**fields):
    """
    A record as L{UserStats.record} makes them, zeros but for C{fields}.
    """
    record = {"firstSeen": NOW - 100, "lastConnection": 0.0, "connectedTimes": 0, "disconnectedTimes": 0,
              "lastMessageTime": 0.0, "sentMessages": 0, "receivedMessages": 0, "bytesTransferred": 0,
              "timeOnline": 0.0, "timeOffline": 100.0, "online": False, "at": NOW}
    record.update(fields)
    return record


class MergeTests(SynchronousTestCase):
    """
    L{mergeStatRecords}: one item from the records of several nodes.
    """

    def test_sums(self) -> None:
        """
        Connections, disconnections, messages and bytes are summed.
        """
        item = mergeStatRecords(5, [
            _record(connectedTimes=2, disconnectedTimes=1, sentMessages=3, receivedMessages=4, bytesTransferred=50),
            _record(connectedTimes=1, disconnectedTimes=1, sentMessages=10, receivedMessages=0, bytesTransferred=7),
        ], NOW, True)
        self.assertEqual(
            {k: item[k] for k in ("id", "isOnline", "connectedTimes", "disconnectedTimes", "sentMessages",
                                  "receivedMessages", "bytesTransferred")},
            {"id": 5, "isOnline": True, "connectedTimes": 3, "disconnectedTimes": 2, "sentMessages": 13,
             "receivedMessages": 4, "bytesTransferred": 57})

    def test_latest(self) -> None:
        """
        C{lastConnection} and C{lastMessageTime} are the latest of the
        nodes'; C{timeInactivity} counts from the latest message.
        """
        item = mergeStatRecords(5, [
            _record(lastConnection=NOW - 50, lastMessageTime=NOW - 5),
            _record(lastConnection=NOW - 20, lastMessageTime=NOW - 30),
        ], NOW, False)
        self.assertEqual((item["lastConnection"], item["lastMessageTime"], item["timeInactivity"]),
                         (int(NOW - 20), int(NOW - 5), 5))

    def test_earliestFirstSeen(self) -> None:
        """
        The user's life starts at the earliest C{firstSeen}: C{timeOffline}
        is the rest of it after C{timeOnline}, and without any message
        C{timeInactivity} counts from it.
        """
        item = mergeStatRecords(5, [
            _record(firstSeen=NOW - 40, timeOnline=10.0),
            _record(firstSeen=NOW - 100, timeOnline=20.0),
        ], NOW, False)
        self.assertEqual((item["timeOnline"], item["timeOffline"], item["timeInactivity"]), (30, 70, 100))

    def test_onlineCapped(self) -> None:
        """
        Time online on several nodes at once is summed, but never beyond the
        user's life; C{timeOffline} is then 0, not negative.
        """
        item = mergeStatRecords(5, [
            _record(firstSeen=NOW - 100, timeOnline=90.0),
            _record(firstSeen=NOW - 100, timeOnline=80.0),
        ], NOW, True)
        self.assertEqual((item["timeOnline"], item["timeOffline"]), (100, 0))

    def test_onlineRecordCountsOn(self) -> None:
        """
        A record written while its user was online counts the time online on
        up to now; one written while offline does not.
        """
        online = mergeStatRecords(5, [_record(timeOnline=10.0, online=True, at=NOW - 30)], NOW, True)
        offline = mergeStatRecords(5, [_record(timeOnline=10.0, online=False, at=NOW - 30)], NOW, False)
        self.assertEqual((online["timeOnline"], offline["timeOnline"]), (40, 10))

    def test_clockSkew(self) -> None:
        """
        A record written "in the future" (another machine's clock) adds no
        negative time; a first seen in the future gives no negative times.
        """
        item = mergeStatRecords(5, [_record(firstSeen=NOW + 5, timeOnline=1.0, online=True, at=NOW + 5)], NOW, True)
        self.assertEqual((item["timeOnline"], item["timeOffline"], item["timeInactivity"]), (0, 0, 0))

    def test_none(self) -> None:
        """
        No record at all: the zeros of a user never seen, with the presence
        given.
        """
        self.assertEqual(mergeStatRecords(7, [], NOW, False), emptyStatItem(7))
        self.assertEqual(mergeStatRecords(7, [], NOW, True), {**emptyStatItem(7), "isOnline": True})

    def test_missingFields(self) -> None:
        """
        A record without some fields (written by another version) counts
        them as 0.
        """
        item = mergeStatRecords(5, [{"firstSeen": NOW - 10, "sentMessages": 2}], NOW, False)
        self.assertEqual((item["sentMessages"], item["connectedTimes"], item["timeOffline"]), (2, 0, 10))

    def test_oneRecordIsTheItem(self) -> None:
        """
        The merge of a single node's record is that node's own item.
        """
        stats = UserStats(9, NOW - 100)
        stats.connectedTimes, stats.lastConnection = 2, NOW - 90
        stats.wentOnline(NOW - 90)
        stats.sentMessages, stats.lastMessageTime, stats.bytesTransferred = 3, NOW - 60, 99
        stats.wentOffline(NOW - 50)
        stats.disconnectedTimes = 2
        self.assertEqual(mergeStatRecords(9, [stats.record(NOW)], NOW, False), stats.item(NOW, False))
        stats.wentOnline(NOW - 10)
        self.assertEqual(mergeStatRecords(9, [stats.record(NOW)], NOW, True), stats.item(NOW, True))


class DirtyTests(RouterTestMixin, SynchronousTestCase):
    """
    The router tells its L{IStatsListener} (a L{StatsJournal} in a cluster)
    which users' statistics change.
    """

    def setUp(self) -> None:
        self.makeRouter()
        self.journal = StatsJournal()
        self.offline: list[int] = []
        self.journal.onOffline(self.offline.append)
        self.router = Router(self.router._config, self.clock, self.factory, statsListener=self.journal)

    def test_untracked(self) -> None:
        """
        By default nobody listens: a router without a listener still routes.
        """
        self.makeRouter()
        alice = self.connect(1)
        bob = self.connect(2)
        self.send(alice, [2])
        self.assertEqual(len(bob.received()), 1)
        self.assertIsInstance(self.router._statsListener, NoStatsListener)

    def test_marked(self) -> None:
        """
        Connecting, sending, receiving and disconnecting mark the user; the
        user's going offline is reported at once.
        """
        dirty = self.journal.dirty
        alice = self.connect(1)
        bob = self.connect(2)
        self.assertEqual(dirty, {1, 2})
        dirty.clear()
        self.send(alice, [2])
        self.assertEqual(dirty, {1, 2})
        dirty.clear()
        self.send(alice, [3])  # 3 was never seen: nothing of 3's changes
        self.assertEqual(dirty, {1})
        dirty.clear()
        second = self.connect(2)
        self.router.detach(bob)
        self.assertEqual((dirty, self.offline), ({2}, []))
        self.router.detach(second)
        self.assertEqual(self.offline, [2])

    def test_userStats(self) -> None:
        """
        C{userStats} and C{userIds} give the statistics kept on this node.
        """
        self.connect(4)
        self.assertIsInstance(self.router.userStats(4), UserStats)
        self.assertIsNone(self.router.userStats(5))
        self.assertEqual(self.router.userIds(), [4])


def _until(condition, seconds: float = 5.0) -> Deferred[bool]:
    """
    Poll C{condition} (a function, or an async one) every 20 ms until it
    holds, for at most C{seconds}: whether it held.
    """

    async def poll() -> bool:
        for _ in range(int(seconds / 0.02)):
            held = condition()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return True
            await deferLater(reactor, 0.02, lambda: None)
        return False

    return Deferred.fromCoroutine(poll())


FIELDS = ("connectedTimes", "disconnectedTimes", "sentMessages", "receivedMessages", "isOnline")


def _counts(item):
    return {k: item[k] for k in FIELDS}


class ClusterStatsTests(RedisTestCase):
    """
    L{ClusterStats} of two nodes on one Redis, wired as C{buildService}
    wires it; C{/stat} and C{/stats} on either node answer for both.
    """

    @inlineCallbacks
    def node(self):
        """
        A started server in cluster mode with its L{ClusterStats}: in the
        service tree after the cluster node and before the WebSocket
        service (so it stops after the clients are closed and before the
        node's Redis links), and behind the REST API.
        """
        raw = {"cluster": {"redis": self.url, "heartbeatSeconds": 0.2, "nodeTimeoutSeconds": 1.0},
               "server": {"dataDir": os.path.abspath(self.mktemp())}}
        server = yield startServer(self, raw)
        top = server.service
        self.assertLess(top.services.index(top.cluster), top.services.index(top.clusterStats))
        self.assertLess(top.services.index(top.clusterStats), top.services.index(top.ws))
        self.assertIs(top.rest.factory.resource._api.clusterStats, top.clusterStats)
        server.stats = top.clusterStats
        return server

    @inlineCallbacks
    def open(self, server, userId):
        client = yield openClient(server, userId=userId)
        self.addCleanup(closeClient, client)
        return client

    def itemIs(self, server, userId, expected):
        """
        A condition for L{_until}: the cluster item of C{userId} on
        C{server} has the C{expected} counts.
        """
        async def condition():
            self.last = await server.stats.statItem(userId)
            return _counts(self.last) == expected
        return condition

    @inlineCallbacks
    def test_userOnBothNodes(self):
        """
        A user with a connection on each node has the counts of both:
        messages sent on each summed, two connections.
        """
        a = yield self.node()
        b = yield self.node()
        alice = yield self.open(a, 1)
        bobA = yield self.open(a, 2)
        bobB = yield self.open(b, 2)
        self.assertTrue((yield _until(lambda: a.service.router.isOnline(1) and b.service.router.isOnline(1))))
        bobA.send({"type": "text", "text": "from a", "recipients": [1]})
        for i in range(2):
            bobB.send({"type": "text", "text": f"from b {i}", "recipients": [1]})
        for _ in range(3):
            yield alice.messages.get()
        expected = {"connectedTimes": 2, "disconnectedTimes": 0, "sentMessages": 3, "receivedMessages": 0,
                    "isOnline": True}
        for server in (a, b):
            self.assertTrue((yield _until(self.itemIs(server, 2, expected))),
                            self.last)
        self.assertGreater(self.last["lastMessageTime"], 0)

    @inlineCallbacks
    def test_userOnOtherNode(self):
        """
        A user known only to node B has B's counts on node A.
        """
        a = yield self.node()
        b = yield self.node()
        carol = yield self.open(b, 3)
        carol.send({"type": "text", "text": "to nobody", "recipients": [9]})
        expected = {"connectedTimes": 1, "disconnectedTimes": 0, "sentMessages": 1, "receivedMessages": 0,
                    "isOnline": True}
        self.assertTrue((yield _until(self.itemIs(a, 3, expected))), self.last)
        self.assertIsNone(a.service.router.userStats(3))
        self.assertEqual(a.service.router.statItem(3), emptyStatItem(3))

    @inlineCallbacks
    def test_onlineTimeCountsOn(self):
        """
        While a user stays online and idle on node B (so B writes nothing
        new), node A counts the user's time online on up to now.
        """
        a = yield self.node()
        b = yield self.node()
        yield self.open(b, 4)
        expected = {"connectedTimes": 1, "disconnectedTimes": 0, "sentMessages": 0, "receivedMessages": 0,
                    "isOnline": True}
        self.assertTrue((yield _until(self.itemIs(a, 4, expected))), self.last)

        async def recorded():
            self.raw = await self.redis.command("HGET", "wsserver:stats:4", b.service.cluster.nodeId)
            return self.raw is not None

        self.assertTrue((yield _until(recorded)))
        written = orjson.loads(self.raw)

        async def grown():
            item = await a.stats.statItem(4)
            return item["timeOnline"] >= 1

        self.assertTrue((yield _until(grown, 5)))
        # B did not write again: A counted on from B's record
        self.assertEqual(orjson.loads((yield self.redis.command("HGET", "wsserver:stats:4",
                                                                b.service.cluster.nodeId))), written)

    @inlineCallbacks
    def test_deadNodeRecord(self):
        """
        The record of a node that is not alive (killed while its user was
        online) counts the time online up to its last write only.
        """
        a = yield self.node()
        now = reactor.seconds()
        record = _record(firstSeen=now - 100, timeOnline=20.0, online=True, at=now - 50, connectedTimes=1)
        yield self.redis.command("HSET", "wsserver:stats:6", "deadbeef0000", orjson.dumps(record))
        item = yield a.stats.statItem(6)
        self.assertEqual((item["timeOnline"], item["connectedTimes"], item["isOnline"]), (20, 1, False))
        self.assertIn(item["timeOffline"], (79, 80))

    @inlineCallbacks
    def test_items(self):
        """
        The C{/stats} of either node lists the users of both, once each, by
        id.
        """
        a = yield self.node()
        b = yield self.node()
        yield self.open(a, 5)
        yield self.open(b, 5)
        yield self.open(b, 2)
        yield self.open(a, 1)
        expected = [(1, 1), (2, 1), (5, 2)]

        def listed(server):
            async def condition():
                items = await server.stats.statItems()
                self.last = items
                return [(i["id"], i["connectedTimes"]) for i in items] == expected
            return condition

        for server in (a, b):
            self.assertTrue((yield _until(listed(server))), self.last)

    @inlineCallbacks
    def test_unknown(self):
        """
        A user never seen anywhere has the zeros, offline.
        """
        a = yield self.node()
        yield self.node()
        self.assertEqual((yield a.stats.statItem(77)), emptyStatItem(77))

    @inlineCallbacks
    def test_rest(self):
        """
        C{/stat} and C{/stats} on node A answer for node B's users too; an
        unknown user has zeros; id errors are as before.
        """
        a = yield self.node()
        b = yield self.node()
        carol = yield self.open(b, 3)
        carol.send({"type": "text", "text": "x", "recipients": [9]})
        expected = {"connectedTimes": 1, "disconnectedTimes": 0, "sentMessages": 1, "receivedMessages": 0,
                    "isOnline": True}
        self.assertTrue((yield _until(self.itemIs(a, 3, expected))), self.last)
        body = yield (yield restRequest(a, "GET", "/stat?id=3")).json()
        self.assertEqual((body["success"], _counts(body["data"])), (True, expected))
        body = yield (yield restRequest(a, "GET", "/stats")).json()
        self.assertEqual([(i["id"], i["sentMessages"]) for i in body["data"]], [(3, 1)])
        body = yield (yield restRequest(a, "GET", "/stat?id=77")).json()
        self.assertEqual(body["data"], emptyStatItem(77))
        response = yield restRequest(a, "GET", "/stat?id=a%20b")
        self.assertEqual((response.code, (yield response.json())["message"]),
                         (400, 'Invalid id "a b": only letters, digits and _-.:@|+='))

    @inlineCallbacks
    def test_nodeGone(self):
        """
        The counts of a node's users survive the node: its last records stay
        in Redis, written as it stopped (the user offline there since).
        """
        a = yield self.node()
        b = yield self.node()
        dave = yield self.open(b, 8)
        for i in range(2):
            dave.send({"type": "text", "text": str(i), "recipients": [9]})
        expected = {"connectedTimes": 1, "disconnectedTimes": 0, "sentMessages": 2, "receivedMessages": 0,
                    "isOnline": True}
        self.assertTrue((yield _until(self.itemIs(a, 8, expected))), self.last)
        dave.send({"type": "text", "text": "last", "recipients": [9]})
        self.assertTrue((yield _until(lambda: b.service.router.userStats(8).sentMessages == 3)))
        # stopped within the heartbeat: the last message is written at stop
        yield b.service.stopService()
        expected = {"connectedTimes": 1, "disconnectedTimes": 1, "sentMessages": 3, "receivedMessages": 0,
                    "isOnline": False}
        self.assertTrue((yield _until(self.itemIs(a, 8, expected))), self.last)
        raw = yield self.redis.command("HGET", "wsserver:stats:8", b.service.cluster.nodeId)
        self.assertEqual(orjson.loads(raw)["online"], False)
        ttl = yield self.redis.command("TTL", "wsserver:stats:8")
        self.assertGreater(int(ttl), 29 * 86400)

    @inlineCallbacks
    def test_offlineWrittenAtOnce(self):
        """
        A user's going offline is written at once, not at the next
        heartbeat.
        """
        a = yield self.node()
        a.stats._loop.stop()  # no heartbeat from here on
        erin = yield self.open(a, 11)
        yield closeClient(erin)

        async def written():
            return bool(await self.redis.command("HGET", "wsserver:stats:11", a.service.cluster.nodeId))

        self.assertTrue((yield _until(written)))
        record = orjson.loads((yield self.redis.command("HGET", "wsserver:stats:11", a.service.cluster.nodeId)))
        self.assertEqual((record["connectedTimes"], record["disconnectedTimes"], record["online"]), (1, 1, False))

    @inlineCallbacks
    def test_redisDown(self):
        """
        Without Redis the answers hold this node's figures; what could not
        be written is written once Redis is back.
        """
        a = yield self.node()
        yield self.redis.stop()
        frank = yield self.open(a, 12)
        frank.send({"type": "text", "text": "x", "recipients": [9]})
        self.assertTrue((yield _until(lambda: a.service.router.statItem(12)["sentMessages"] == 1)))
        item = yield a.stats.statItem(12)
        self.assertEqual((item["sentMessages"], item["isOnline"]), (1, True))
        items = yield a.stats.statItems()
        self.assertEqual([i["id"] for i in items], [12])
        yield self.redis.start()

        async def written():
            try:
                raw = await self.redis.command("HGET", "wsserver:stats:12", a.service.cluster.nodeId)
            except Exception:
                return False
            return bool(raw) and orjson.loads(raw)["sentMessages"] == 1

        self.assertTrue((yield _until(written, 10)))



class ClusterStatisticsInterfaceTests(SynchronousTestCase):
    """
    L{wsserver.cluster.stats.ClusterStats} is what the REST API takes as the
    cluster's statistics.
    """

    def test_provides(self) -> None:
        """
        L{ClusterStats} implements L{IClusterStatistics}, every method with
        the interface's signature.
        """
        from zope.interface.verify import verifyClass

        from wsserver.cluster.stats import ClusterStats
        from wsserver.routing.interfaces import IClusterStatistics

        self.assertTrue(verifyClass(IClusterStatistics, ClusterStats))
