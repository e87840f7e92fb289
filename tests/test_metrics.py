"""
Tests for L{wsserver.metrics}: the router's counters, the Prometheus
collector over them (read back through C{prometheus_client}'s own parser), and
the readiness.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from wsserver.metrics import ROUTING_BUCKETS, Counters, Readiness, ServerCollector, makeRegistry
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
        failed deliveries per target; pending (and retrying) ones as a gauge.
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
            ("wsserver_event_deliveries_total", (("result", "succeeded"), ("target", "targets[0]"))): 5,
            ("wsserver_event_deliveries_total", (("result", "failed"), ("target", "targets[0]"))): 3,
        })
        self.assertEqual(families["wsserver_event_pending"],
                         {("wsserver_event_pending", (("target", "targets[0]"),)): 3})

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
