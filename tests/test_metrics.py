"""
Tests for L{wsserver.metrics}: the router's counters, the Prometheus
collector over them (read back through C{prometheus_client}'s own parser), and
the readiness.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.multiprocess import mark_process_dead
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.metrics import (ROUTING_BUCKETS, Counters, Readiness, ServerCollector, SharedMetrics, makeRegistry,
                              summaryOf)
from wsserver.queue.memory import MemoryUndeliveredStore

from .test_routing import RouterTestMixin

#: Every metric name of SPEC section 9 but the cluster's, as parsed (a
#: counter's family name has no C{_total}).
NAMES = {
    "wsserver_connections",
    "wsserver_users_online",
    "wsserver_connects",
    "wsserver_disconnects",
    "wsserver_messages_received",
    "wsserver_messages_delivered",
    "wsserver_messages_queued",
    "wsserver_messages_dropped",
    "wsserver_limit_closes",
    "wsserver_event_deliveries",
    "wsserver_event_pending",
    "wsserver_routing_seconds",
}


class FakeNotifier:
    """
    Answers C{counts()} with the test's figures, counting the calls.
    """

    def __init__(self, counts: list[dict[str, Any]]) -> None:
        self._counts = counts
        self.calls = 0

    def counts(self) -> Deferred[list[dict[str, Any]]]:
        self.calls += 1
        return succeed(self._counts)


def scrape(collector: ServerCollector) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """
    The exposition of a registry holding C{collector}, parsed: per family,
    C{(sample name, labels) -> value}.
    """
    text = generate_latest(makeRegistry(collector)).decode("utf-8")
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return out


class CountersTests(SynchronousTestCase):
    """
    L{Counters}: plain numbers.
    """

    def test_observeRouting(self) -> None:
        """
        A routing time lands in the first bucket whose bound it does not
        exceed; past the last bound, in C{+Inf}.
        """
        counters = Counters()
        counters.observeRouting(0.00005)
        counters.observeRouting(0.003)
        counters.observeRouting(5.0)
        expected = [0] * (len(ROUTING_BUCKETS) + 1)
        expected[0] = 1
        expected[ROUTING_BUCKETS.index(0.005)] = 1
        expected[-1] = 1
        self.assertEqual(counters.routingBuckets, expected)
        self.assertAlmostEqual(counters.routingSum, 5.00305)

    def test_disconnected(self) -> None:
        """
        Disconnects are counted by close code.
        """
        counters = Counters()
        for code in (1000, 1000, 4001, None):
            counters.disconnected(code)
        self.assertEqual(counters.disconnects, {1000: 2, 4001: 1, None: 1})


class CollectorTests(RouterTestMixin, SynchronousTestCase):
    """
    L{ServerCollector} reads the router's counters when scraped.
    """

    def test_names(self) -> None:
        """
        Every metric of the contract is exposed, with the process metrics of
        the library; no cluster metric without a cluster.
        """
        self.makeRouter()
        families = scrape(ServerCollector(self.router))
        self.assertEqual(NAMES - set(families), set())
        self.assertIn("process_cpu_seconds", families)
        self.assertNotIn("wsserver_cluster_nodes", families)

    def test_connectionsAndUsers(self) -> None:
        """
        Connections and users online follow attach and detach: two
        connections of one user are one user online.
        """
        self.makeRouter()
        a1, a2, b = self.connect(1), self.connect(1), self.connect(2)
        collector = ServerCollector(self.router)
        families = scrape(collector)
        self.assertEqual(families["wsserver_connections"], {("wsserver_connections", ()): 3})
        self.assertEqual(families["wsserver_users_online"], {("wsserver_users_online", ()): 2})
        self.router.detach(a1)
        self.router.detach(b)
        families = scrape(collector)
        self.assertEqual(families["wsserver_connections"], {("wsserver_connections", ()): 1})
        self.assertEqual(families["wsserver_users_online"], {("wsserver_users_online", ()): 1})
        self.router.detach(a2)
        self.router.detach(a2)  # twice: counted once
        self.assertEqual(scrape(collector)["wsserver_users_online"], {("wsserver_users_online", ()): 0})

    def test_deliveredAndDropped(self) -> None:
        """
        A message to one online and one offline user (queue off) is one
        delivery and one drop for C{offline}.
        """
        self.makeRouter()
        sender, recipient = self.connect(1), self.connect(2)
        self.send(sender, [2, 3])
        families = scrape(ServerCollector(self.router))
        self.assertEqual(families["wsserver_messages_delivered"],
                         {("wsserver_messages_delivered_total", ()): 1})
        self.assertEqual(families["wsserver_messages_dropped"],
                         {("wsserver_messages_dropped_total", (("reason", "offline"),)): 1})
        self.assertEqual(len(recipient.sent), 1)

    def test_queued(self) -> None:
        """
        With the queue on, a message for an offline user is queued (not
        dropped), and delivered when the user comes; what the store dropped
        counts as dropped for C{queue}.
        """
        store = MemoryUndeliveredStore(ttlSeconds=60, maxPerUser=1)
        self.makeRouter(store)
        sender = self.connect(1)
        self.send(sender, [3], "one")
        self.send(sender, [3], "two")  # over maxPerUser: "one" is dropped
        collector = ServerCollector(self.router, store=store)
        families = scrape(collector)
        self.assertEqual(families["wsserver_messages_queued"], {("wsserver_messages_queued_total", ()): 2})
        self.assertEqual(families["wsserver_messages_dropped"], {
            ("wsserver_messages_dropped_total", (("reason", "offline"),)): 0,
            ("wsserver_messages_dropped_total", (("reason", "queue"),)): 1,
        })
        self.assertEqual(self.connect(3).texts(), ["two"])
        self.assertEqual(scrape(collector)["wsserver_messages_delivered"],
                         {("wsserver_messages_delivered_total", ()): 1})

    def test_notificationsAndSendBackCount(self) -> None:
        """
        Send-back copies and delivery-status notifications are deliveries too.
        """
        self.makeRouter(enableSendBack=True, enableDeliveryStatus=True)
        sender = self.connect(1)
        self.connect(2)
        self.send(sender, [2])
        self.assertEqual(self.router.counters.delivered, 3)
        self.assertEqual(len(sender.sent), 2)

    def test_received(self) -> None:
        """
        Received messages are exposed by source.
        """
        self.makeRouter()
        self.router.counters.receivedWebsocket = 7
        self.router.counters.receivedRest = 2
        self.assertEqual(scrape(ServerCollector(self.router))["wsserver_messages_received"], {
            ("wsserver_messages_received_total", (("source", "websocket"),)): 7,
            ("wsserver_messages_received_total", (("source", "rest"),)): 2,
        })

    def test_connectsAndDisconnects(self) -> None:
        """
        Connects are one number; disconnects one per close code, a close
        without a code as 1005.
        """
        self.makeRouter()
        counters = self.router.counters
        counters.connects = 4
        for code in (1000, 4001, None, 1000):
            counters.disconnected(code)
        families = scrape(ServerCollector(self.router))
        self.assertEqual(families["wsserver_connects"], {("wsserver_connects_total", ()): 4})
        self.assertEqual(families["wsserver_disconnects"], {
            ("wsserver_disconnects_total", (("code", "1000"),)): 2,
            ("wsserver_disconnects_total", (("code", "1005"),)): 1,
            ("wsserver_disconnects_total", (("code", "4001"),)): 1,
        })

    def test_limitCloses(self) -> None:
        """
        The limits' live mapping is read at each scrape.
        """
        self.makeRouter()
        closes = {"rate": 2}
        collector = ServerCollector(self.router, limitCloses=closes)
        self.assertEqual(scrape(collector)["wsserver_limit_closes"],
                         {("wsserver_limit_closes_total", (("limit", "rate"),)): 2})
        closes["connections"] = 1
        closes["rate"] = 3
        self.assertEqual(scrape(collector)["wsserver_limit_closes"], {
            ("wsserver_limit_closes_total", (("limit", "connections"),)): 1,
            ("wsserver_limit_closes_total", (("limit", "rate"),)): 3,
        })

    def test_events(self) -> None:
        """
        The event counts, read by L{ServerCollector.refresh}: succeeded and
        failed deliveries per target, labelled with its type; pending (and
        retrying) ones as a gauge.
        """
        self.makeRouter()
        notifier = FakeNotifier([
            {"target": "targets[0]", "type": "postback", "destination": "http://h/",
             "succeeded": 5, "pending": 2, "retrying": 1, "failed": 3},
        ])
        collector = ServerCollector(self.router, notifier)
        self.assertEqual(scrape(collector)["wsserver_event_pending"], {})
        self.successResultOf(collector.refresh())
        self.assertEqual(notifier.calls, 1)
        families = scrape(collector)
        self.assertEqual(families["wsserver_event_deliveries"], {
            ("wsserver_event_deliveries_total",
             (("result", "succeeded"), ("target", "targets[0]"), ("type", "postback"))): 5,
            ("wsserver_event_deliveries_total",
             (("result", "failed"), ("target", "targets[0]"), ("type", "postback"))): 3,
        })
        self.assertEqual(families["wsserver_event_pending"],
                         {("wsserver_event_pending", (("target", "targets[0]"), ("type", "postback"))): 3})

    def test_routingHistogram(self) -> None:
        """
        The routing times become a cumulative histogram with C{+Inf}, a
        count and a sum.
        """
        self.makeRouter()
        self.router.counters.observeRouting(0.0002)
        self.router.counters.observeRouting(0.003)
        samples = scrape(ServerCollector(self.router))["wsserver_routing_seconds"]
        bucket = "wsserver_routing_seconds_bucket"
        self.assertEqual(samples[(bucket, (("le", "0.0001"),))], 0)
        self.assertEqual(samples[(bucket, (("le", "0.00025"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "0.0025"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "0.005"),))], 2)
        self.assertEqual(samples[(bucket, (("le", "+Inf"),))], 2)
        self.assertEqual(samples[("wsserver_routing_seconds_count", ())], 2)
        self.assertAlmostEqual(samples[("wsserver_routing_seconds_sum", ())], 0.0032)

    def test_cluster(self) -> None:
        """
        In a cluster, the nodes and the outbox, as the given callable says.
        """
        self.makeRouter()
        families = scrape(ServerCollector(self.router, clusterGauges=lambda: (3, 17)))
        self.assertEqual(families["wsserver_cluster_nodes"], {("wsserver_cluster_nodes", ()): 3})
        self.assertEqual(families["wsserver_cluster_outbox_messages"],
                         {("wsserver_cluster_outbox_messages", ()): 17})

    def test_summary(self) -> None:
        """
        L{ServerCollector.summary} gives the same figures as plain JSON.
        """
        self.makeRouter()
        sender = self.connect(1)
        self.send(sender, [1, 9])
        self.router.counters.disconnected(None)
        self.assertEqual(ServerCollector(self.router, limitCloses={"rate": 1},
                                         clusterGauges=lambda: (2, 0)).summary(), {
            "connections": 1,
            "usersOnline": 1,
            "connects": 0,
            "disconnects": {"1005": 1},
            "received": {"websocket": 0, "rest": 0},
            "delivered": 1,
            "queued": 0,
            "dropped": {"offline": 1},
            "limitCloses": {"rate": 1},
            "cluster": {"nodes": 2, "outbox": 0},
        })

    def test_ownRegistry(self) -> None:
        """
        Each registry holds its own server's figures: two servers in one
        process do not mix.
        """
        self.makeRouter()
        first = self.router
        self.connect(1)
        self.makeRouter()
        self.assertEqual(scrape(ServerCollector(first))["wsserver_connections"],
                         {("wsserver_connections", ()): 1})
        self.assertEqual(scrape(ServerCollector(self.router))["wsserver_connections"],
                         {("wsserver_connections", ()): 0})


class ReadinessTests(SynchronousTestCase):
    """
    L{Readiness}: listening, joined, not stopping.
    """

    def test_states(self) -> None:
        """
        Ready only once listening, while joined, and until stopping.
        """
        joined = [False]
        readiness = Readiness(joined=lambda: joined[0])
        self.assertFalse(readiness.ready())
        readiness.listening = True
        self.assertFalse(readiness.ready())
        joined[0] = True
        self.assertTrue(readiness.ready())
        readiness.stopping = True
        self.assertFalse(readiness.ready())

    def test_redis(self) -> None:
        """
        Not ready while Redis cannot be reached, ready again when it can.
        """
        reachable = [True]
        readiness = Readiness(listening=True, redis=lambda: reachable[0])
        self.assertTrue(readiness.ready())
        reachable[0] = False
        self.assertFalse(readiness.ready())
        reachable[0] = True
        self.assertTrue(readiness.ready())

    def test_aloneIsJoined(self) -> None:
        """
        By default (no cluster) the node counts as joined.
        """
        self.assertTrue(Readiness(listening=True).ready())


class _Worker:
    """
    What L{ServerCollector} reads of a router: a worker's figures.
    """

    def __init__(self, connections: int) -> None:
        self.connectionCount = connections
        self.counters = Counters()


def _parse(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class SharedMetricsTests(SynchronousTestCase):
    """
    L{SharedMetrics}: the workers of C{server.workers} > 1 write their
    figures to one directory, and any of them exposes the sum.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.clock = Clock()
        self.routers = [_Worker(3), _Worker(4)]
        self.shared = []
        for pid, router in enumerate(self.routers, 101):
            collector = ServerCollector(router, clusterGauges=lambda: (2, 1), limitCloses={"maxConnections": pid})
            shared = SharedMetrics(makeRegistry(collector), self.directory, self.clock, pid=pid)
            self.shared.append(shared)
            shared.startService()
            self.addCleanup(shared.stopService)

    def test_summed(self) -> None:
        """
        Counters and gauges are the sums of the workers' figures (the
        cluster's node count is the same for all: its maximum), whichever
        worker answers, and the same at each read.
        """
        self.routers[0].counters.connects = 5
        self.routers[1].counters.connects = 7
        self.routers[0].counters.disconnected(1000)
        self.routers[1].counters.disconnected(1000)
        self.routers[1].counters.disconnected(4008)
        for shared in self.shared:
            shared.write()
        for shared in (*self.shared, self.shared[0]):
            values = _parse(shared.registry)
            self.assertEqual(values[("wsserver_connections", ())], 7)
            self.assertEqual(values[("wsserver_connects_total", ())], 12)
            self.assertEqual(values[("wsserver_disconnects_total", (("code", "1000"),))], 2)
            self.assertEqual(values[("wsserver_disconnects_total", (("code", "4008"),))], 1)
            self.assertEqual(values[("wsserver_limit_closes_total", (("limit", "maxConnections"),))], 203)
            self.assertEqual(values[("wsserver_cluster_nodes", ())], 2)
            self.assertEqual(values[("wsserver_cluster_outbox_messages", ())], 2)
            self.assertIn(("process_cpu_seconds_total", ()), values)

    def test_histogram(self) -> None:
        """
        The routing histogram is the sum of the workers': cumulative
        buckets, count and sum.
        """
        self.routers[0].counters.observeRouting(0.00001)
        self.routers[1].counters.observeRouting(0.00001)
        self.routers[1].counters.observeRouting(0.5)
        for shared in self.shared:
            shared.write()
        values = _parse(self.shared[0].registry)
        self.assertEqual(values[("wsserver_routing_seconds_bucket", (("le", "5e-05"),))], 2)
        self.assertEqual(values[("wsserver_routing_seconds_bucket", (("le", "1.0"),))], 3)
        self.assertEqual(values[("wsserver_routing_seconds_bucket", (("le", "+Inf"),))], 3)
        self.assertEqual(values[("wsserver_routing_seconds_count", ())], 3)
        self.assertAlmostEqual(values[("wsserver_routing_seconds_sum", ())], 0.50002)

    def test_periodic(self) -> None:
        """
        Each worker writes its figures every second: another's change shows
        after at most a second.
        """
        self.routers[1].connectionCount = 10
        self.assertEqual(_parse(self.shared[0].registry)[("wsserver_connections", ())], 7)
        self.clock.advance(1)
        self.assertEqual(_parse(self.shared[0].registry)[("wsserver_connections", ())], 13)

    def test_workerEnded(self) -> None:
        """
        A worker that ended (its gauges removed by the pool's parent) leaves
        the gauges; its counters stay in the totals.
        """
        self.routers[1].counters.connects = 7
        self.shared[1].stopService()
        mark_process_dead(102, self.directory)
        values = _parse(self.shared[0].registry)
        self.assertEqual(values[("wsserver_connections", ())], 3)
        self.assertEqual(values[("wsserver_connects_total", ())], 7)

    def test_summary(self) -> None:
        """
        C{/overview}'s figures from the summed families: as
        L{ServerCollector.summary} gives them for one process.
        """
        self.routers[0].counters.connects = 5
        self.routers[0].counters.receivedRest = 2
        self.routers[0].counters.disconnected(1000)
        self.shared[0].write()
        mine = ServerCollector(self.routers[0], clusterGauges=lambda: (2, 1), limitCloses={"maxConnections": 101})
        self.shared[1].stopService()
        mark_process_dead(102, self.directory)
        expected = mine.summary()
        expected["limitCloses"] = {"maxConnections": 101 + 102}  # the ended worker's counters stay
        self.assertEqual(summaryOf(self.shared[0].registry.collect()), expected)
