"""
Tests for L{wsserver.events.presence}: the debouncer on a L{task.Clock}, the
ledgers, the cluster rule with fake peers, the router's hook; then end to
end with a webhook, on one node and on two nodes of one Redis.
"""

from __future__ import annotations

import os
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from twisted.internet import reactor
from twisted.internet.defer import fail, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from wsserver.config import ConfigError, EventConfig, MessageConfig, parseConfig, startWarnings
from wsserver.events.store import MemoryEventStore
from wsserver.events.notifier import EventNotifier
from wsserver.messages import MessageFactory
from wsserver.routing.interfaces import IPresenceListener, NoPeers
from wsserver.events.presence import (IPresenceLedger, MemoryPresenceLedger, PresenceDebouncer, PresenceEvents,
                                     RedisPresenceLedger)
from wsserver.redis.address import parseRedisURL
from wsserver.redis.link import RedisLink
from wsserver.routing import Router

from .redis import RedisTestCase
from .support import JSONSink, Running, closeClient, openClient, spawnServer, startServer


class ConfigTests(SynchronousTestCase):
    """
    C{event.presence} and C{event.presenceDebounceSeconds}.
    """

    def test_defaults(self) -> None:
        """
        Off, with a debounce of 3 seconds.
        """
        event = parseConfig({}).event
        self.assertEqual((event.presence, event.presenceDebounceSeconds), (False, 3))
        event = parseConfig({"event": {"presence": True, "presenceDebounceSeconds": 0.5}}).event
        self.assertEqual((event.presence, event.presenceDebounceSeconds), (True, 0.5))

    def test_bad(self) -> None:
        """
        Wrong types and a negative debounce are refused, naming the keys.
        """
        e = self.assertRaises(ConfigError, parseConfig,
                              {"event": {"presence": 1, "presenceDebounceSeconds": -2}}, False)
        self.assertEqual(e.problems, ["event.presence: must be true or false, not number 1",
                                      "event.presenceDebounceSeconds: -2 must be at least 0"])


    def test_warnedWithoutEvents(self) -> None:
        """
        C{event.presence} without C{event.enabled} is a start warning.
        """
        self.assertEqual(startWarnings(parseConfig({"event": {"presence": True}})), [
            "event.presence: true, but event.enabled is false: no presence event is sent; "
            "set event.enabled and a target"])
        self.assertEqual(startWarnings(parseConfig({})), [])


class DebouncerTests(SynchronousTestCase):
    """
    L{PresenceDebouncer}: changes settle after the delay, without the
    opposite change meanwhile.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.emitted: list[tuple[int, bool]] = []
        self.debouncer = PresenceDebouncer(self.clock, 3.0, lambda u, online: self.emitted.append((u, online)))

    def test_interface(self) -> None:
        """
        It is the router's L{IPresenceListener}.
        """
        self.assertTrue(verifyObject(IPresenceListener, self.debouncer))

    def test_onlineAfterDelay(self) -> None:
        """
        A user who comes online is emitted online once the delay has passed,
        not before.
        """
        self.debouncer.online(1)
        self.clock.advance(2.9)
        self.assertEqual(self.emitted, [])
        self.clock.advance(0.1)
        self.assertEqual(self.emitted, [(1, True)])

    def test_reload(self) -> None:
        """
        Offline then online again within the delay (a page reload): nothing,
        and no timer is left.
        """
        self.debouncer.online(1)
        self.clock.advance(5)
        self.debouncer.offline(1)
        self.clock.advance(1)
        self.debouncer.online(1)
        self.clock.advance(10)
        self.assertEqual(self.emitted, [(1, True)])
        self.assertEqual((self.debouncer.pending(), self.clock.getDelayedCalls()), (0, []))

    def test_staysOffline(self) -> None:
        """
        A user who stays offline is emitted offline once, after the delay.
        """
        self.debouncer.online(1)
        self.clock.advance(3)
        self.debouncer.offline(1)
        self.clock.advance(2.9)
        self.assertEqual(self.emitted, [(1, True)])
        self.clock.advance(0.1)
        self.clock.advance(100)
        self.assertEqual(self.emitted, [(1, True), (1, False)])

    def test_briefVisit(self) -> None:
        """
        Online then offline within the delay: nothing at all.
        """
        self.debouncer.online(1)
        self.clock.advance(1)
        self.debouncer.offline(1)
        self.clock.advance(10)
        self.assertEqual(self.emitted, [])

    def test_flapping(self) -> None:
        """
        A user flapping every second for a minute, then settling: at most
        one event per settled change, and each emitted state differs from
        the one before.
        """
        self.debouncer.online(1)
        self.clock.advance(3)
        for i in range(60):
            if i % 2 == 0:
                self.debouncer.offline(1)
            else:
                self.debouncer.online(1)
            self.clock.advance(1)
        self.debouncer.offline(1)
        self.clock.advance(3)
        self.assertEqual(self.emitted, [(1, True), (1, False)])

    def test_alternatesAlways(self) -> None:
        """
        Whatever the sequence of changes and pauses, consecutive emitted
        states of a user differ, starting with online.
        """
        import random

        rng = random.Random(7)
        for _ in range(2000):
            (self.debouncer.online if rng.random() < 0.5 else self.debouncer.offline)(1)
            self.clock.advance(rng.choice([0.1, 0.5, 2.9, 3.0, 4.0]))
        states = [online for _, online in self.emitted]
        self.assertGreater(len(states), 10)
        self.assertTrue(states[0])
        self.assertTrue(all(a != b for a, b in zip(states, states[1:])))

    def test_repeatKeepsFirstTimer(self) -> None:
        """
        The same change told twice (two nodes' worth of first connections)
        settles when the first would have: one timer per user.
        """
        self.debouncer.online(1)
        self.clock.advance(2)
        self.debouncer.online(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)
        self.assertEqual(self.emitted, [(1, True)])

    def test_usersApart(self) -> None:
        """
        Each user has its own pending change.
        """
        self.debouncer.online(1)
        self.clock.advance(1)
        self.debouncer.online(2)
        self.clock.advance(2)
        self.assertEqual(self.emitted, [(1, True)])
        self.clock.advance(1)
        self.assertEqual(self.emitted, [(1, True), (2, True)])

    def test_noDelay(self) -> None:
        """
        With a delay of 0, changes are emitted at once, without a timer.
        """
        debouncer = PresenceDebouncer(self.clock, 0, lambda u, online: self.emitted.append((u, online)))
        debouncer.online(1)
        debouncer.offline(1)
        self.assertEqual((self.emitted, self.clock.getDelayedCalls()), ([(1, True), (1, False)], []))

    def test_stop(self) -> None:
        """
        C{stop} cancels what is pending and ignores later changes.
        """
        self.debouncer.online(1)
        self.debouncer.stop()
        self.debouncer.online(2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.emitted, [])


class FakePeers(NoPeers):
    """
    Other nodes, as a dict the test fills.
    """

    def __init__(self) -> None:
        self.remoteUsers: dict[int, Any] = {}


class PresenceEventsTests(SynchronousTestCase):
    """
    L{PresenceEvents}: the cluster rule, with a memory ledger and fake peers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.peers = FakePeers()
        self.ledger = MemoryPresenceLedger()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.events = PresenceEvents(self.ledger, self.peers, MessageFactory(self.clock, ZoneInfo("UTC")),
                                     lambda kind, payload: self.sent.append((kind, orjson.loads(payload))))

    def test_ledgerInterface(self) -> None:
        """
        The memory ledger provides L{IPresenceLedger}.
        """
        self.assertTrue(verifyObject(IPresenceLedger, self.ledger))

    def test_body(self) -> None:
        """
        The event has an id, the type, a timestamp, sender 0 and the user.
        """
        self.events.settled(7, True)
        [(kind, body)] = self.sent
        self.assertEqual(kind, "user_online")
        self.assertEqual(set(body), {"id", "type", "timestamp", "sender", "data"})
        self.assertEqual((body["type"], body["sender"], body["data"]), ("user_online", 0, {"user": 7}))
        self.assertTrue(body["timestamp"].startswith("2023-11-14T22:13:20"), body["timestamp"])
        self.events.settled(7, False)
        self.assertEqual(self.sent[1][1]["type"], "user_offline")
        self.assertNotEqual(self.sent[0][1]["id"], self.sent[1][1]["id"])

    def test_onceAcrossNodes(self) -> None:
        """
        Two nodes (one ledger) settling the same online: one event.
        """
        self.events.settled(7, True)
        self.events.settled(7, True)
        self.assertEqual([k for k, _ in self.sent], ["user_online"])

    def test_offlineWhileElsewhere(self) -> None:
        """
        An offline that settles while the user is online on another node is
        no change of the cluster: nothing is sent and the ledger stays
        online, so the other node's offline is sent later.
        """
        self.events.settled(7, True)
        self.peers.remoteUsers[7] = {"b": None}
        self.events.settled(7, False)
        self.assertEqual([k for k, _ in self.sent], ["user_online"])
        del self.peers.remoteUsers[7]
        self.events.settled(7, False)
        self.assertEqual([k for k, _ in self.sent], ["user_online", "user_offline"])

    def test_nodeDied(self) -> None:
        """
        The users of a dead node that are online nowhere now are settled
        offline: one C{user_offline} each, however many surviving nodes
        (here two, one ledger) report the death; a user online elsewhere or
        here gets none, and one never sent online gets none.
        """
        for uid in (7, 8, 9):
            self.events.settled(uid, True)
        del self.sent[:]
        here = {8}
        self.peers.remoteUsers[9] = {"c": None}
        for _ in range(2):
            d = self.events.nodeDied([7, 8, 9, 10], here.__contains__)
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.sent and [(k, b["data"]["user"]) for k, b in self.sent], [("user_offline", 7)])

    def test_nodeDiedLedgerDown(self) -> None:
        """
        A ledger that cannot answer: the offline is sent (a duplicate is
        better than a lost change), and the call still fires.
        """
        class Down:
            def settle(self, userId: int, online: bool) -> Any:
                return fail(ConnectionError("Redis unreachable"))

        events = PresenceEvents(Down(), self.peers, MessageFactory(self.clock, ZoneInfo("UTC")),
                                lambda kind, payload: self.sent.append((kind, orjson.loads(payload))))
        self.assertIsNone(self.successResultOf(events.nodeDied([7], lambda uid: False)))
        self.assertEqual([k for k, _ in self.sent], ["user_offline"])
        self.flushLoggedErrors()


class RouterHookTests(SynchronousTestCase):
    """
    The router tells its L{IPresenceListener} about first and last
    connections only.
    """

    def test_firstAndLast(self) -> None:
        """
        Two connections of one user: online at the first, offline after the
        last, nothing for the others or for a detach of an unknown one.
        """
        calls: list[tuple[str, int]] = []

        class Listener:
            def online(self, userId: int) -> None:
                calls.append(("online", userId))

            def offline(self, userId: int) -> None:
                calls.append(("offline", userId))

        clock = Clock()
        router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC")), presenceListener=Listener())

        class Connection:
            def __init__(self, userId: int) -> None:
                self.userId = userId

            def sendPrepared(self, prepared: Any) -> None:
                pass

        a, b = Connection(1), Connection(1)
        router.attach(a)
        router.attach(b)
        router.detach(a)
        router.detach(a)
        self.assertEqual(calls, [("online", 1)])
        router.detach(b)
        self.assertEqual(calls, [("online", 1), ("offline", 1)])


class NotifierTests(SynchronousTestCase):
    """
    L{EventNotifier.notifyServerEvent}: queued like a message.
    """

    def test_queued(self) -> None:
        """
        A server event is stored for every target, whatever
        C{sendBotMessages}; C{ignoreTypes} still applies.
        """
        from wsserver.config import TargetConfig

        clock = Clock()
        store = MemoryEventStore()
        config = EventConfig(enabled=True, ignoreTypes=frozenset({"user_offline"}),
                             targets=(TargetConfig("postback", url="http://a"),
                                      TargetConfig("postback", url="http://b")))
        notifier = EventNotifier(config, store, {}, clock)
        notifier.notifyServerEvent("user_online", b"{}")
        notifier.notifyServerEvent("user_offline", b"{}")
        clock.advance(0)
        counts = self.successResultOf(store.counts())
        self.assertEqual({k: v["pending"] for k, v in counts.items()}, {"targets[0]": 1, "targets[1]": 1})


class RedisLedgerTests(RedisTestCase):
    """
    L{RedisPresenceLedger} against a real redis-server.
    """

    def setUp(self) -> Any:
        d = super().setUp()

        def link(_: Any) -> None:
            self.links = [RedisLink(parseRedisURL(self.url), reactor, 5.0, f"test Redis {i}") for i in range(2)]
            for link in self.links:
                self.addCleanup(link.close)

        return d.addCallback(link)

    @inlineCallbacks
    def test_settle(self) -> Any:
        """
        Settling changes the state once: of two nodes at once, one changed it.
        """
        a, b = (RedisPresenceLedger(link) for link in self.links)
        self.assertTrue(verifyObject(IPresenceLedger, a))
        results = yield gatherResults([a.settle(3, True), b.settle(3, True)])
        self.assertEqual(sorted(results), [False, True])
        self.assertEqual((yield self.redis.command("EXISTS", "wsserver:presence:sent:3")), 1)
        results = yield gatherResults([a.settle(3, False), b.settle(3, False)])
        self.assertEqual(sorted(results), [False, True])
        self.assertEqual((yield self.redis.command("EXISTS", "wsserver:presence:sent:3")), 0)
        self.assertFalse((yield a.settle(3, False)))


#: a short debounce for the end-to-end tests
DEBOUNCE = 0.3


@inlineCallbacks
def _sink(test: TestCase) -> Any:
    sink = JSONSink()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(sink))
    test.addCleanup(port.stopListening)
    return sink, f"http://127.0.0.1:{port.getHost().port}/hook"


def _events(url: str) -> dict[str, Any]:
    return {"enabled": True, "presence": True, "presenceDebounceSeconds": DEBOUNCE, "retryIntervalSeconds": 0.1,
            "targets": [{"type": "postback", "url": url}]}


def _presence(sink: JSONSink) -> list[tuple[str, int]]:
    return [(b["type"], b["data"]["user"]) for b in sink.bodies if b["type"].startswith("user_")]


async def _until(condition: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await deferLater(reactor, 0.02, lambda: None)
    return False


def _pause(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


class EndToEndTests(TestCase):
    """
    One server, a webhook.
    """

    timeout = 30

    @inlineCallbacks
    def test_onlineOffline(self) -> Any:
        """
        A connection then its close: one C{user_online}, one C{user_offline},
        with the body of the contract; chat messages still go out too.
        """
        sink, url = yield _sink(self)
        server = yield startServer(self, {"event": _events(url), "server": {"dataDir": os.path.abspath(self.mktemp())}})
        client = yield openClient(server, userId=4)
        self.assertTrue((yield _until(lambda: _presence(sink) == [("user_online", 4)])))
        yield closeClient(client)
        self.assertTrue((yield _until(lambda: len(_presence(sink)) == 2)))
        yield _pause(DEBOUNCE * 2)
        self.assertEqual(_presence(sink), [("user_online", 4), ("user_offline", 4)])
        online = sink.bodies[0]
        self.assertEqual(set(online), {"id", "type", "timestamp", "sender", "data"})
        self.assertEqual(online["sender"], 0)

    @inlineCallbacks
    def test_reloadSendsNothing(self) -> Any:
        """
        A close and a new connection within the debounce (a page reload):
        no offline, no second online.
        """
        sink, url = yield _sink(self)
        server = yield startServer(self, {"event": _events(url), "server": {"dataDir": os.path.abspath(self.mktemp())}})
        client = yield openClient(server, userId=4)
        self.assertTrue((yield _until(lambda: _presence(sink) == [("user_online", 4)])))
        yield closeClient(client)
        client = yield openClient(server, userId=4)
        self.addCleanup(closeClient, client)
        yield _pause(DEBOUNCE * 4)
        self.assertEqual(_presence(sink), [("user_online", 4)])

    @inlineCallbacks
    def test_retriedThenFallback(self) -> Any:
        """
        A presence event that its target refuses is retried, then handed to
        the target's fallback, and counted by C{GET /events} as a message is.
        """
        sink, url = yield _sink(self)
        closed = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(JSONSink()))
        deadPort = closed.getHost().port
        yield closed.stopListening()
        events = _events(url)
        events["retryCount"] = 1
        events["targets"] = [{"type": "postback", "url": f"http://127.0.0.1:{deadPort}/hook",
                              "fallback": [{"type": "postback", "url": url}]}]
        server = yield startServer(self, {"event": events, "server": {"dataDir": os.path.abspath(self.mktemp())}})
        client = yield openClient(server, userId=4)
        self.addCleanup(closeClient, client)
        self.assertTrue((yield _until(lambda: _presence(sink) == [("user_online", 4)])))
        # the sink answered; the success is written to the store just after
        for _ in range(250):
            counts = yield server.service.notifier.counts()
            byTarget = {c["target"]: c for c in counts}
            if byTarget["targets[0].fallback[0]"]["succeeded"]:
                break
            yield _pause(0.02)
        self.assertEqual(byTarget["targets[0].fallback[0]"]["succeeded"], 1)

    @inlineCallbacks
    def test_offByDefault(self) -> Any:
        """
        Without C{event.presence}, the targets get no presence event.
        """
        sink, url = yield _sink(self)
        events = _events(url)
        del events["presence"]
        server = yield startServer(self, {"event": events, "server": {"dataDir": os.path.abspath(self.mktemp())}})
        self.assertIsNone(server.service.presence)
        client = yield openClient(server, userId=4)
        yield _pause(DEBOUNCE * 2)
        yield closeClient(client)
        yield _pause(DEBOUNCE * 2)
        self.assertEqual(_presence(sink), [])


class ClusterEndToEndTests(RedisTestCase):
    """
    Two nodes on one Redis, a webhook for both.
    """

    def raw(self, url: str) -> dict[str, Any]:
        return {"cluster": {"redis": self.url, "heartbeatSeconds": 0.2, "nodeTimeoutSeconds": 1.0},
                "server": {"dataDir": os.path.abspath(self.mktemp())}, "event": _events(url)}

    @inlineCallbacks
    def test_oncePerCluster(self) -> Any:
        """
        A user on both nodes: one C{user_online} when the first connection
        opens, nothing when the second opens or the first closes, one
        C{user_offline} when the last closes.
        """
        sink, url = yield _sink(self)
        a = yield startServer(self, self.raw(url))
        b = yield startServer(self, self.raw(url))
        onA = yield openClient(a, userId=9)
        self.assertTrue((yield _until(lambda: _presence(sink) == [("user_online", 9)])))
        onB = yield openClient(b, userId=9)
        yield _pause(DEBOUNCE * 3)
        yield closeClient(onA)
        yield _pause(DEBOUNCE * 3)
        self.assertEqual(_presence(sink), [("user_online", 9)])
        yield closeClient(onB)
        self.assertTrue((yield _until(lambda: len(_presence(sink)) == 2)))
        yield _pause(DEBOUNCE * 3)
        self.assertEqual(_presence(sink), [("user_online", 9), ("user_offline", 9)])

    @inlineCallbacks
    def test_bothAtOnce(self) -> Any:
        """
        A user connecting to both nodes at the same moment (neither knows of
        the other yet): one C{user_online}; both closing at once: one
        C{user_offline}.
        """
        sink, url = yield _sink(self)
        a = yield startServer(self, self.raw(url))
        b = yield startServer(self, self.raw(url))
        onA, onB = yield gatherResults([openClient(a, userId=9), openClient(b, userId=9)])
        yield _pause(DEBOUNCE * 4)
        self.assertEqual(_presence(sink), [("user_online", 9)])
        yield gatherResults([closeClient(onA), closeClient(onB)])
        yield _pause(DEBOUNCE * 4)
        self.assertEqual(_presence(sink), [("user_online", 9), ("user_offline", 9)])

    @inlineCallbacks
    def test_reloadOnOtherNode(self) -> Any:
        """
        A reload that lands on the other node (close on A, open on B within
        the debounce): no event.
        """
        sink, url = yield _sink(self)
        a = yield startServer(self, self.raw(url))
        b = yield startServer(self, self.raw(url))
        onA = yield openClient(a, userId=9)
        self.assertTrue((yield _until(lambda: _presence(sink) == [("user_online", 9)])))
        yield closeClient(onA)
        onB = yield openClient(b, userId=9)
        self.addCleanup(closeClient, onB)
        yield _pause(DEBOUNCE * 4)
        self.assertEqual(_presence(sink), [("user_online", 9)])

    @inlineCallbacks
    def test_deadNodeOfflineOnce(self) -> Any:
        """
        A node killed with SIGKILL: its user gets one C{user_offline} for
        the cluster when the two surviving nodes declare it dead (not one
        per surviving node); its user online on a surviving node too gets
        none.
        """
        sink, url = yield _sink(self)
        a = yield startServer(self, self.raw(url))
        b = yield startServer(self, self.raw(url))
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write(orjson.dumps(self.raw(url)).decode())
        process = spawnServer(self, "-C", config, "--ws", "tcp:0:interface=127.0.0.1",
                              "--rest", "tcp:0:interface=127.0.0.1")
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        c = Running(None, int(m.group(1)), None, False)  # type: ignore[arg-type]
        onC = yield openClient(c, userId=9)
        alsoC = yield openClient(c, userId=4)
        onA = yield openClient(a, userId=4)
        self.addCleanup(closeClient, onA)
        self.assertTrue((yield _until(lambda: sorted(_presence(sink)) == [("user_online", 4), ("user_online", 9)])))
        self.assertTrue((yield _until(lambda: a.service.router.isOnline(9) and b.service.router.isOnline(9))))
        process.transport.signalProcess("KILL")
        yield process.ended
        self.assertTrue((yield _until(lambda: not a.service.router.isOnline(9) and not b.service.router.isOnline(9))))
        self.assertTrue((yield _until(lambda: len(_presence(sink)) == 3)))
        yield _pause(DEBOUNCE * 3)
        self.assertEqual(sorted(_presence(sink)), [("user_offline", 9), ("user_online", 4), ("user_online", 9)])
        for client in (onC, alsoC):
            yield client.closed
