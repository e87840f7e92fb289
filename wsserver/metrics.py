# -*- test-case-name: tests.test_metrics -*-
"""
Operations (SPEC section 9): the counters behind C{GET /metrics}, the
Prometheus collector that reads them, the readiness of C{GET /ready}, and
the sum over the workers of C{server.workers} (L{SharedMetrics}).

The hot path only increments plain integers on one L{Counters} object (no
lock, no lookup, no timer); the collector turns them into metric families
when Prometheus scrapes, through C{prometheus_client}'s own exposition.
Each server has its own L{CollectorRegistry} (no global registry), so two
servers in one process (the tests) do not mix their figures.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .events.notifier import EventNotifier
from .queue import IUndeliveredStore

__all__ = [
    "Counters",
    "ROUTING_BUCKETS",
    "ROUTING_SAMPLE_MASK",
    "Readiness",
    "ServerCollector",
    "SharedMetrics",
    "makeRegistry",
    "summaryOf",
]

_log = Logger()

#: Upper bounds (seconds) of the buckets of C{wsserver_routing_seconds}.
ROUTING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: One WebSocket message in C{ROUTING_SAMPLE_MASK + 1} (16) is timed for
#: C{wsserver_routing_seconds}: a bit test on a counter that is kept anyway.
ROUTING_SAMPLE_MASK = 15


class Counters:
    """
    Plain integer counters, incremented where things happen: the router
    (deliveries, the undelivered queue), the WebSocket protocol (connects,
    disconnects, received messages, routing times), the REST API.

    @ivar connects: connections that passed their checks.
    @ivar disconnects: closes of such connections, by close code (L{None}: a
        close frame without a code).
    @ivar receivedWebsocket: valid messages routed from WebSocket clients.
    @ivar receivedRest: messages accepted by C{POST /send-message}.
    @ivar delivered: messages written to a user's live connections, once per
        user (notifications, send-back copies and queued ones included).
    @ivar queued: messages kept in the undelivered queue.
    @ivar droppedOffline: messages for a user with no live connection while
        the undelivered queue is off.
    @ivar usersOnline: users with at least one live connection here.
    @ivar routingBuckets: sampled routing times per bucket of
        L{ROUTING_BUCKETS} (not cumulative; the last is C{+Inf}).
    @ivar routingSum: the sum of the sampled routing times (seconds).
    """

    __slots__ = (
        "connects",
        "disconnects",
        "receivedWebsocket",
        "receivedRest",
        "delivered",
        "queued",
        "droppedOffline",
        "usersOnline",
        "routingBuckets",
        "routingSum",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.disconnects: dict[int | None, int] = {}
        self.receivedWebsocket = 0
        self.receivedRest = 0
        self.delivered = 0
        self.queued = 0
        self.droppedOffline = 0
        self.usersOnline = 0
        self.routingBuckets = [0] * (len(ROUTING_BUCKETS) + 1)
        self.routingSum = 0.0

    def disconnected(self, code: int | None) -> None:
        """
        Count a close of an attached connection with C{code}.
        """
        self.disconnects[code] = self.disconnects.get(code, 0) + 1

    def observeRouting(self, seconds: float) -> None:
        """
        Count one sampled routing time.
        """
        self.routingBuckets[bisect_left(ROUTING_BUCKETS, seconds)] += 1
        self.routingSum += seconds


def _codeLabel(code: int | None) -> str:
    # a close frame without a code is "no status received" (RFC 6455 7.4.1)
    return "1005" if code is None else str(code)


@dataclass
class Readiness:
    """
    Whether the server is ready for traffic (C{GET /ready}): listening, and
    in a cluster joined and reaching Redis, and not stopping.

    @ivar listening: set once the WebSocket port listens.
    @ivar stopping: set once the server began to stop.
    @ivar joined: says whether this node joined its cluster (always, alone).
    @ivar redis: says whether this node reaches its Redis now (always,
        without one): a load balancer sends no new users to a node cut off
        from the cluster.
    """

    listening: bool = False
    stopping: bool = False
    joined: Callable[[], bool] = field(default=lambda: True)
    redis: Callable[[], bool] = field(default=lambda: True)

    def ready(self) -> bool:
        """
        Whether C{/ready} answers 200.
        """
        return self.listening and not self.stopping and bool(self.joined()) and bool(self.redis())


class RouterFigures(Protocol):
    """
    What L{ServerCollector} reads of the router: its counters and how many
    connections it has.
    """

    counters: Counters
    connectionCount: int


class ServerCollector(Collector):
    """
    The server's metrics, read when scraped.

    @param router: the router (C{connectionCount}, C{counters}).
    @param notifier: the event notifier (C{counts()}), or L{None}.
    @param store: the undelivered queue (its C{dropped} count), or L{None}.
    @param limitCloses: closes by a limit, by the limit's name: a live
        mapping that the limits keep; L{None}: none.
    @param clusterGauges: in a cluster, answers C{(nodes, outbox messages)};
        L{None}: no cluster metrics.
    """

    def __init__(
        self,
        router: RouterFigures,
        notifier: EventNotifier | None = None,
        store: IUndeliveredStore | None = None,
        limitCloses: Mapping[str, int] | None = None,
        clusterGauges: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._router = router
        self._notifier = notifier
        self._store = store
        self._limitCloses = limitCloses
        self._clusterGauges = clusterGauges
        #: the event counts as of the last L{refresh}
        self._events: list[dict[str, Any]] = []

    def refresh(self) -> Deferred[None]:
        """
        Read what is not in memory (the event counts, from the database);
        call before each scrape.
        """
        if self._notifier is None:
            return succeed(None)

        def keep(counts: list[dict[str, Any]]) -> None:
            self._events = counts

        return self._notifier.counts().addCallback(keep)

    def summary(self) -> dict[str, Any]:
        """
        The figures of this node as plain JSON (for C{GET /overview}).
        """
        router = self._router
        c = router.counters
        out: dict[str, Any] = {
            "connections": router.connectionCount,
            "usersOnline": c.usersOnline,
            "connects": c.connects,
            "disconnects": {_codeLabel(k): v for k, v in sorted(c.disconnects.items(), key=lambda i: i[0] or 0)},
            "received": {"websocket": c.receivedWebsocket, "rest": c.receivedRest},
            "delivered": c.delivered,
            "queued": c.queued,
            "dropped": self._dropped(),
            "limitCloses": dict(self._limitCloses or {}),
        }
        if self._clusterGauges is not None:
            nodes, outbox = self._clusterGauges()
            out["cluster"] = {"nodes": nodes, "outbox": outbox}
        return out

    def _dropped(self) -> dict[str, int]:
        dropped = {"offline": self._router.counters.droppedOffline}
        if self._store is not None:
            dropped["queue"] = int(self._store.dropped)
        return dropped

    def collect(self) -> Iterator[Metric]:
        router = self._router
        c = router.counters
        yield GaugeMetricFamily("wsserver_connections", "Live WebSocket connections on this node.",
                                value=router.connectionCount)
        yield GaugeMetricFamily("wsserver_users_online", "Users with a live connection on this node.",
                                value=c.usersOnline)
        yield CounterMetricFamily("wsserver_connects_total", "Connections that passed their checks.",
                                  value=c.connects)
        family = CounterMetricFamily("wsserver_disconnects_total", "Closes of connected clients, by close code.",
                                     labels=["code"])
        for code, n in sorted(c.disconnects.items(), key=lambda i: i[0] or 0):
            family.add_metric([_codeLabel(code)], n)
        yield family
        family = CounterMetricFamily("wsserver_messages_received_total", "Valid messages received, by source.",
                                     labels=["source"])
        family.add_metric(["websocket"], c.receivedWebsocket)
        family.add_metric(["rest"], c.receivedRest)
        yield family
        yield CounterMetricFamily("wsserver_messages_delivered_total",
                                  "Messages written to a user's live connections (once per user).", value=c.delivered)
        yield CounterMetricFamily("wsserver_messages_queued_total", "Messages kept in the undelivered queue.",
                                  value=c.queued)
        family = CounterMetricFamily("wsserver_messages_dropped_total", "Messages dropped, by reason.",
                                     labels=["reason"])
        for reason, n in self._dropped().items():
            family.add_metric([reason], n)
        yield family
        family = CounterMetricFamily("wsserver_limit_closes_total", "Connections closed by a limit, by limit.",
                                     labels=["limit"])
        for name, n in sorted((self._limitCloses or {}).items()):
            family.add_metric([name], n)
        yield family
        deliveries = CounterMetricFamily("wsserver_event_deliveries_total",
                                         "Event deliveries that finished, by target (and its type) and result.",
                                         labels=["target", "type", "result"])
        pending = GaugeMetricFamily(
            "wsserver_event_pending",
            "Event deliveries waiting (not tried yet, or for a retry), by target (and its type).",
            labels=["target", "type"])
        for target in self._events:
            key, kind = target["target"], target["type"]
            deliveries.add_metric([key, kind, "succeeded"], target["succeeded"])
            deliveries.add_metric([key, kind, "failed"], target["failed"])
            pending.add_metric([key, kind], target["pending"] + target["retrying"])
        yield deliveries
        yield pending
        cumulative, buckets = 0, []
        for bound, n in zip((*ROUTING_BUCKETS, float("inf")), c.routingBuckets):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "wsserver_routing_seconds",
            f"From a WebSocket message read to its copies written to the recipients' transports; "
            f"one message in {ROUTING_SAMPLE_MASK + 1} is timed.",
            buckets=buckets, sum_value=c.routingSum,
        )
        if self._clusterGauges is not None:
            nodes, outbox = self._clusterGauges()
            yield GaugeMetricFamily("wsserver_cluster_nodes", "Live nodes of the cluster, this one included.",
                                    value=nodes)
            yield GaugeMetricFamily("wsserver_cluster_outbox_messages",
                                    "Messages for other nodes waiting for Redis to be reachable.", value=outbox)


def makeRegistry(collector: ServerCollector) -> CollectorRegistry:
    """
    A registry of this server's own: C{collector} and the library's process
    metrics (CPU, memory, open files).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


#: how the workers' values of a gauge add up (prometheus_client's
#: multiprocess modes; C{live}: only the workers alive count): summed
#: unless named here
_GAUGE_MODES = {
    "wsserver_cluster_nodes": "livemax",  # every worker sees the same cluster
    "process_start_time_seconds": "livemin",
    "process_max_fds": "livemax",
}


class SharedMetrics(Service):
    """
    The metrics of the workers of C{server.workers} > 1, summed: each worker
    writes its own (its registry's samples: L{ServerCollector} and the
    process metrics) to prometheus_client's multiprocess directory every
    C{interval} seconds and before it answers a scrape; C{/metrics} on any
    worker exposes the directory through the library's
    L{MultiProcessCollector}, which adds up the workers' files.  Counters
    of a worker that ended stay in the sum (its files stay: a total never
    goes back); its gauges leave it (the pool's parent removes its C{live}
    files, L{prometheus_client.multiprocess.mark_process_dead}).

    The writes go to memory-mapped files: no system call per value, and
    nothing on any message's path.

    @param registry: this worker's own registry (L{makeRegistry}).
    @param directory: the multiprocess directory (C{PROMETHEUS_MULTIPROC_DIR}).
    @param clock: the timer of the periodic writes.
    @param refresh: read what the registry's collector does not hold in
        memory, before each periodic write (L{ServerCollector.refresh}).
    @param pid: the process id in the file names (this process's by default).
    """

    def __init__(self, registry: CollectorRegistry, directory: str, clock: IReactorTime,
                 refresh: Callable[[], Deferred[None]] = lambda: succeed(None), interval: float = 1.0,
                 pid: int | None = None) -> None:
        self._registry = registry
        self._refresh = refresh
        self._directory = directory
        self._pid = os.getpid() if pid is None else pid
        self._files: dict[str, MmapedDict] = {}
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None
        #: what C{/metrics} exposes: the sum of every worker's files
        self.registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self.registry, path=directory)

    def _file(self, prefix: str) -> MmapedDict:
        f = self._files.get(prefix)
        if f is None:
            f = self._files[prefix] = MmapedDict(os.path.join(self._directory, f"{prefix}_{self._pid}.db"))
        return f

    def write(self) -> None:
        """
        Write this worker's values now.
        """
        for family in self._registry.collect():
            if family.type == "gauge":
                f = self._file("gauge_" + _GAUGE_MODES.get(family.name, "livesum"))
            elif family.type in ("counter", "histogram"):
                f = self._file(family.type)
            else:
                continue
            for name, labels, value in _fileSamples(family):
                key = mmap_key(family.name, name, list(labels), list(labels.values()), family.documentation)
                f.write_value(key, value, 0.0)

    def _periodic(self) -> Deferred[None]:
        return self._refresh().addCallback(lambda _: self.write())

    def startService(self) -> None:
        """
        Write every C{interval} seconds from now on.
        """
        super().startService()
        self._loop = LoopingCall(self._periodic)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: _log.failure("writing the metrics for the other workers stopped", f))

    def stopService(self) -> None:
        """
        Write a last time (the counters' final values), and close the files.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.write()
        for f in self._files.values():
            f.close()
        self._files = {}


def _fileSamples(family: Metric) -> Iterator[tuple[str, dict[str, str], float]]:
    """
    The samples of C{family} as a multiprocess file holds them: a
    histogram's buckets each on its own (the collector accumulates them
    again), no C{_count} (it is the sum of the buckets) and no C{_created}.
    """
    if family.type != "histogram":
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                yield sample.name, sample.labels, sample.value
        return
    below: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            yield sample.name, sample.labels, sample.value - below.get(rest, 0.0)
            below[rest] = sample.value
        elif sample.name.endswith("_sum"):
            yield sample.name, sample.labels, sample.value


def summaryOf(families: Iterable[Metric]) -> dict[str, Any]:
    """
    The figures of C{GET /overview}'s C{node} (L{ServerCollector.summary})
    from metric families: with workers, the sum of all of them.
    """
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in families:
        for sample in family.samples:
            values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value

    def one(name: str) -> int:
        return int(sum(values.get(name, {}).values()))

    def by(name: str, label: str) -> dict[str, int]:
        return {dict(k)[label]: int(v) for k, v in sorted(values.get(name, {}).items()) if label in dict(k)}

    received = by("wsserver_messages_received_total", "source")
    out: dict[str, Any] = {
        "connections": one("wsserver_connections"),
        "usersOnline": one("wsserver_users_online"),
        "connects": one("wsserver_connects_total"),
        "disconnects": by("wsserver_disconnects_total", "code"),
        "received": {"websocket": received.get("websocket", 0), "rest": received.get("rest", 0)},
        "delivered": one("wsserver_messages_delivered_total"),
        "queued": one("wsserver_messages_queued_total"),
        "dropped": by("wsserver_messages_dropped_total", "reason"),
        "limitCloses": by("wsserver_limit_closes_total", "limit"),
    }
    if "wsserver_cluster_nodes" in values:
        out["cluster"] = {"nodes": one("wsserver_cluster_nodes"),
                          "outbox": one("wsserver_cluster_outbox_messages")}
    return out
