# -*- test-case-name: tests.test_bench -*-
"""
C{wsserver-bench}: a load generator that measures what users care about.

The original server shipped an "almost stress-test" that timed only the
client's sends and printed seconds labelled as milliseconds.  This one
measures delivery: messages/s and MB/s that reached their recipients, the
end-to-end latency of each message (a send time travels in C{data}), errors,
and messages sent but never received.

Modes:

  - C{classic}: the original's run: N clients in pairs, each sends M messages
    of ~3.3 KB lorem ipsum to its partner; R runs, each timed until every
    message arrived;
  - C{throughput}: closed loop, C{--window} messages in flight per sender, for
    C{--duration} seconds;
  - C{latency}: open loop at C{--rate} messages/s offered, for C{--duration};
  - C{fanout}: one sender, C{--recipients} recipients per message, closed loop;
  - C{connections}: open N idle connections; connects/s, and the server's
    memory per connection when C{--pid} names the server process.

With C{--procs P} the clients are spread over P processes (pairs and fan-out
groups stay within one process); their results are merged exactly (latency
histograms are summed bucket by bucket).

With C{--ids uuid} every client connects and is addressed with a UUID (one
made from its number, the same in every process) instead of the number: the
cost of string ids (C{chat.userIds: "any"}) against numeric ones.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

__all__ = ["Histogram", "Results", "main", "mergeResults", "run"]

#: The original benchmark's message: ~3.3 KB of lorem ipsum.
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu "
    "fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
    "deserunt mollit anim id est laborum. "
) * 8
LOREM = LOREM[:3300]

#: Relative width of a latency histogram bucket (2 %).
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
#: Latencies are kept from 1 microsecond.
_FLOOR = 1e-6


class Histogram:
    """
    Latencies in log-scale buckets 2 % wide: small, exact to merge across
    processes, and precise enough for percentiles.
    """

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        """
        Record one latency.
        """
        index = int(math.log(max(seconds, _FLOOR) / _FLOOR) / _LOG_GROWTH)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        """
        Add C{other}'s latencies to these.
        """
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """
        The latency below which C{p} percent of the recorded ones lie (the
        upper edge of its bucket, so never optimistic).
        """
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(_FLOOR * _GROWTH ** (index + 1), self.max)
        return self.max

    def toJSON(self) -> dict[str, Any]:
        return {"buckets": {str(k): v for k, v in self.buckets.items()}, "count": self.count,
                "max": self.max, "total": self.total}

    @classmethod
    def fromJSON(cls, raw: dict[str, Any]) -> Histogram:
        h = cls()
        h.buckets = {int(k): v for k, v in raw["buckets"].items()}
        h.count, h.max, h.total = raw["count"], raw["max"], raw["total"]
        return h


@dataclass
class Results:
    """
    What one run measured.  C{expected} counts deliveries (a message to K
    recipients is K deliveries); C{received + dropped == expected}.
    """

    mode: str
    clients: int = 0
    sent: int = 0
    expected: int = 0
    received: int = 0
    dropped: int = 0
    errors: int = 0
    #: seconds of the measured window
    duration: float = 0.0
    #: bytes of delivered messages
    bytes: int = 0
    latency: Histogram = field(default_factory=Histogram)
    #: classic: seconds of each run
    runs: list[float] = field(default_factory=list)
    connectSeconds: float = 0.0
    connections: int = 0
    memoryPerConnection: float | None = None
    #: what else arrived (send-back copies, delivery notifications)
    other: int = 0
    #: deliveries and their bytes inside the measured window (rates use
    #: these; what arrives while draining afterwards is not counted in them)
    windowReceived: int = 0
    windowBytes: int = 0

    def merge(self, other: Results) -> None:
        for name in ("clients", "sent", "expected", "received", "dropped", "errors", "bytes", "connections", "other",
                     "windowReceived", "windowBytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration = max(self.duration, other.duration)
        self.connectSeconds = max(self.connectSeconds, other.connectSeconds)
        self.latency.merge(other.latency)
        if other.runs:
            self.runs = [max(a, b) for a, b in zip(self.runs, other.runs)] if self.runs else list(other.runs)
        if other.memoryPerConnection is not None:
            self.memoryPerConnection = other.memoryPerConnection

    def summary(self) -> dict[str, Any]:
        """
        The figures, in their units (messages/s, MB/s, milliseconds).
        """
        rate = self.windowReceived / self.duration if self.duration else 0.0
        out: dict[str, Any] = {
            "mode": self.mode,
            "clients": self.clients,
            "sent": self.sent,
            "expected": self.expected,
            "received": self.received,
            "dropped": self.dropped,
            "errors": self.errors,
            "other": self.other,
            "duration_s": round(self.duration, 3),
            "delivered_per_s": round(rate, 1),
            "mb_per_s": round(self.windowBytes / self.duration / 1e6, 3) if self.duration else 0.0,
            "latency_ms": {
                "mean": round(self.latency.total / self.latency.count * 1e3, 3) if self.latency.count else 0.0,
                "p50": round(self.latency.percentile(50) * 1e3, 3),
                "p90": round(self.latency.percentile(90) * 1e3, 3),
                "p99": round(self.latency.percentile(99) * 1e3, 3),
                "max": round(self.latency.max * 1e3, 3),
            },
        }
        if self.runs:
            out["runs_ms"] = [round(r * 1e3, 2) for r in self.runs]
        if self.connections:
            out["connections"] = self.connections
            out["connect_s"] = round(self.connectSeconds, 3)
            out["connects_per_s"] = round(self.connections / self.connectSeconds, 1) if self.connectSeconds else 0.0
        if self.memoryPerConnection is not None:
            out["server_kib_per_connection"] = round(self.memoryPerConnection / 1024, 2)
        return out

    def toJSON(self) -> dict[str, Any]:
        raw = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "latency"}
        raw["latency"] = self.latency.toJSON()
        return raw

    @classmethod
    def fromJSON(cls, raw: dict[str, Any]) -> Results:
        raw = dict(raw)
        latency = Histogram.fromJSON(raw.pop("latency"))
        return cls(latency=latency, **raw)


def _rss(pid: int) -> int | None:
    """
    The resident memory of process C{pid} in bytes, from /proc.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _raiseFileLimit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the load ------------------------------------------------------------------


def _protocolClass() -> type:
    from autobahn.twisted.websocket import WebSocketClientProtocol

    class BenchProtocol(WebSocketClientProtocol):
        """
        One bench client; everything it hears goes to the load.
        """

        userId = 0
        load: Load

        # Autobahn formats debug-log arguments on every read and fires a
        # txaio event per message; the bench needs neither, and must not be
        # the bottleneck.
        def dataReceived(self, data: bytes) -> None:
            self._dataReceived(data)

        def onMessageEnd(self) -> None:
            if not self.failedByMe:
                self.load.received(self, b"".join(self.message_data))
            self.message_data = None

        def connectionMade(self) -> None:
            super().connectionMade()
            # Autobahn's own attempt fails silently (see wsserver.connection.protocol)
            self.transport.setTcpNoDelay(True)

        def onOpen(self) -> None:
            self.load.opened(self)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.load.received(self, payload)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            self.load.closed(self, code, reason)

    return BenchProtocol


class Load:
    """
    Drives one process's share of a run.

    @param reactor: the reactor.
    @param args: the parsed command line.
    @param ids: the user ids of this process's clients.
    """

    def __init__(self, reactor: Any, args: argparse.Namespace, ids: list[int]) -> None:
        self.reactor = reactor
        self.args = args
        self.ids = ids
        self.results = Results(args.mode, clients=len(ids))
        self.clients: dict[int, Any] = {}
        self.sending = False
        self.measuring = False
        self._waiters: dict[int, Any] = {}
        self._closing = False
        self._protocol = _protocolClass()
        self._payloadText = (
            LOREM[: args.size] if args.size < len(LOREM) else (LOREM * (args.size // len(LOREM) + 1))[: args.size]
        )
        #: closed loop: messages in flight per sender index
        self.inflight: dict[int, int] = {}
        #: deliveries still missing, per (sender, seq)
        self.pending: dict[tuple[int, int], int] = {}
        #: a progress bar on stderr (not with --json, nor in a child process)
        self.showProgress = not args.json and args.child is None
        self._seq = 0
        self._heads: dict[int, bytes] = {}
        self.onDelivery: Callable[[int, int], None] | None = None
        self._allDelivered: Any = None
        #: the server's memory before connecting (connections mode)
        self.rssBefore: int | None = None

    # connections

    def wireId(self, userId: int) -> int | str:
        """
        What the server knows client C{userId} as: the number, or with
        C{--ids uuid} a UUID made from it.
        """
        if self.args.ids == "uuid":
            return str(uuid.uuid5(uuid.NAMESPACE_OID, str(userId)))
        return userId

    def _url(self, userId: int) -> str:
        """
        The server of C{userId}'s client: with several C{--url}, clients take
        them in turn, so the two clients of a pair are on different servers.
        """
        urls = self.args.urls
        return urls[userId % len(urls)]

    def _factory(self, userId: int) -> Any:
        from autobahn.twisted.websocket import WebSocketClientFactory

        base = self._url(userId)
        url = base + ("&" if "?" in base else "?") + f"id={self.wireId(userId)}"
        factory = WebSocketClientFactory(url, headers=self.args.headers)
        factory.protocol = self._protocol
        factory.setProtocolOptions(utf8validateIncoming=False, openHandshakeTimeout=30, closeHandshakeTimeout=5,
                                   tcpNoDelay=True)
        return factory

    def _endpoint(self, url: str) -> Any:
        from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint

        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "wss":
            from twisted.internet.ssl import CertificateOptions, optionsForClientTLS

            tls = CertificateOptions() if self.args.insecure else optionsForClientTLS(host)
            return SSL4ClientEndpoint(self.reactor, host, parts.port or 443, tls, timeout=30)
        return TCP4ClientEndpoint(self.reactor, host, parts.port or 80, timeout=30)

    async def connect(self, ids: list[int] | None = None) -> float:
        """
        Connect a client for each id, C{--concurrency} at a time; the
        seconds it took.
        """
        from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

        endpoints = {url: self._endpoint(url) for url in self.args.urls}
        limit = DeferredSemaphore(self.args.concurrency)
        start = time.monotonic()

        def one(userId: int) -> Deferred[Any]:
            factory = self._factory(userId)
            waiter: Deferred[Any] = Deferred()
            self._waiters[userId] = waiter

            def connected(protocol: Any) -> Deferred[Any]:
                protocol.userId = userId
                protocol.load = self
                return waiter

            def failed(f: Any) -> None:
                self.results.errors += 1
                self._waiters.pop(userId, None)
                return None

            return endpoints[self._url(userId)].connect(factory).addCallback(connected).addErrback(failed)

        await gatherResults([limit.run(one, uid) for uid in (ids if ids is not None else self.ids)])
        return time.monotonic() - start

    def opened(self, protocol: Any) -> None:
        self.clients[protocol.userId] = protocol
        waiter = self._waiters.pop(protocol.userId, None)
        if waiter is not None:
            waiter.callback(protocol)

    def closed(self, protocol: Any, code: int | None, reason: str | None) -> None:
        if self.clients.get(protocol.userId) is protocol:
            del self.clients[protocol.userId]
        waiter = self._waiters.pop(protocol.userId, None)
        if waiter is not None:
            self.results.errors += 1
            waiter.callback(None)
        elif not self._closing:
            self.results.errors += 1
            if self.results.errors <= 5:
                print(f"connection of user {protocol.userId} closed: {code} {reason}", file=sys.stderr)

    async def closeAll(self) -> None:
        from twisted.internet.defer import gatherResults

        self._closing = True
        waits = []
        for protocol in list(self.clients.values()):
            waits.append(protocol.is_closed)
            protocol.sendClose(1000)
        if waits:
            await gatherResults(waits)

    # messages

    def send(self, senderId: int, recipients: list[int]) -> None:
        """
        Send one message from C{senderId}'s client, stamped for latency.
        """
        self._seq += 1
        seq = self._seq
        self.pending[(senderId, seq)] = len(recipients)
        head = self._heads.get(senderId)
        if head is None:
            head = self._heads[senderId] = orjson.dumps(
                {"type": "text", "text": self._payloadText, "recipients": [self.wireId(r) for r in recipients]}
            )[:-1] + b',"data":{"f":%d,"s":' % senderId
        # the stamp goes last and the JSON is built by hand: the same bytes
        # as orjson would give, at a fraction of the cost
        payload = head + b'%d,"t":%r}}' % (seq, time.monotonic())
        self.clients[senderId].sendMessage(payload)
        self.results.sent += 1
        self.results.expected += len(recipients)

    def received(self, protocol: Any, payload: bytes) -> None:
        now = time.monotonic()
        # only the stamp matters: parse the "data" object, not the 3 KB around it
        start = payload.rfind(b'"data":{"f":')
        end = payload.find(b"}", start)
        try:
            data = orjson.loads(payload[start + 7 : end + 1]) if start >= 0 and end > 0 else None
        except orjson.JSONDecodeError:
            data = None
        if type(data) is not dict or "t" not in data or data.get("f") == protocol.userId:
            self.results.other += 1
            return
        key = (data["f"], data["s"])
        left = self.pending.get(key)
        if left is None:
            self.results.other += 1
            return
        if left == 1:
            del self.pending[key]
        else:
            self.pending[key] = left - 1
        self.results.received += 1
        self.results.bytes += len(payload)
        self.results.latency.add(now - data["t"])
        if self.onDelivery is not None:
            self.onDelivery(data["f"], left - 1)
        if not self.pending and self._allDelivered is not None:
            d, self._allDelivered = self._allDelivered, None
            d.callback(None)

    async def drain(self, timeout: float) -> None:
        """
        Wait until every sent message arrived, or C{timeout} seconds.
        """
        from twisted.internet.defer import Deferred

        if not self.pending:
            return
        d: Deferred[None] = Deferred()
        self._allDelivered = d
        timer = self.reactor.callLater(timeout, lambda: d.called or d.callback(None))
        await d
        if timer.active():
            timer.cancel()
        self._allDelivered = None

    def endWindow(self) -> None:
        """
        The measured window ends: what arrives later is only drained.
        """
        self.results.windowReceived = self.results.received
        self.results.windowBytes = self.results.bytes

    def finish(self) -> None:
        self.results.dropped = self.results.expected - self.results.received

    # modes

    def pairs(self) -> list[tuple[int, int]]:
        ids = [i for i in self.ids if i in self.clients]
        return [(ids[i], ids[i + 1]) for i in range(0, len(ids) - 1, 2)]

    async def classic(self) -> None:
        args = self.args
        pairs = self.pairs()
        for run in range(args.runs):
            start = time.monotonic()
            for a, b in pairs:
                for _ in range(args.messages):
                    self.send(a, [b])
                    self.send(b, [a])
            await self.drain(args.drain)
            self.results.runs.append(time.monotonic() - start)
            self.results.duration += self.results.runs[-1]
            progress(run + 1, args.runs, self.results, self.showProgress)
        self.endWindow()

    async def closedLoop(self, senders: list[tuple[int, list[int]]]) -> None:
        """
        Each sender keeps C{--window} messages in flight to its recipients
        for C{--duration} seconds.
        """
        args = self.args
        window = args.window
        byId = {s: r for s, r in senders}
        inflight = {s: 0 for s, _ in senders}

        def delivered(sender: int, left: int) -> None:
            if left:
                return
            inflight[sender] -= 1
            if self.sending:
                self.send(sender, byId[sender])
                inflight[sender] += 1

        self.onDelivery = delivered
        self.sending = True
        start = time.monotonic()
        for s, r in senders:
            for _ in range(window):
                self.send(s, r)
                inflight[s] += 1
        await self._tick(start, args.duration)
        self.sending = False
        self.results.duration = time.monotonic() - start
        self.endWindow()
        await self.drain(args.drain)

    async def _tick(self, start: float, duration: float) -> None:
        from twisted.internet.task import deferLater

        while True:
            elapsed = time.monotonic() - start
            progress(elapsed, duration, self.results, self.showProgress)
            if elapsed >= duration:
                return
            await deferLater(self.reactor, min(0.5, duration - elapsed), lambda: None)

    async def throughput(self) -> None:
        senders = []
        for a, b in self.pairs():
            senders += [(a, [b]), (b, [a])]
        await self.closedLoop(senders)

    async def fanout(self) -> None:
        ids = [i for i in self.ids if i in self.clients]
        if len(ids) < 2:
            return
        await self.closedLoop([(ids[0], ids[1:])])

    async def latency(self) -> None:
        """
        Open loop: send at C{--rate} messages/s (this process's share),
        whatever the answers, round-robin over the senders.
        """
        from twisted.internet.task import LoopingCall

        args = self.args
        senders = []
        for a, b in self.pairs():
            senders += [(a, [b]), (b, [a])]
        if not senders:
            return
        rate = args.rate / args.procs
        start = time.monotonic()
        state = {"n": 0}

        def tick() -> None:
            due = int((time.monotonic() - start) * rate) - state["n"]
            for _ in range(due):
                s, r = senders[state["n"] % len(senders)]
                state["n"] += 1
                if s in self.clients:
                    self.send(s, r)

        loop = LoopingCall(tick)
        loop.clock = self.reactor
        loop.start(0.001)
        await self._tick(start, args.duration)
        loop.stop()
        self.results.duration = time.monotonic() - start
        self.endWindow()
        await self.drain(args.drain)

    async def connections(self) -> None:
        """
        Hold the connections (made by L{runLoad}) open for C{--hold}
        seconds, then read the server's memory.
        """
        from twisted.internet.task import deferLater

        await deferLater(self.reactor, self.args.hold, lambda: None)
        self.results.connections = len(self.clients)
        after = _rss(self.args.pid) if self.args.pid else None
        if self.rssBefore is not None and after is not None and self.results.connections:
            self.results.memoryPerConnection = (after - self.rssBefore) / self.results.connections


def progress(done: float, total: float, results: Results, enabled: bool = True) -> None:
    """
    A progress bar on a terminal, plain lines otherwise.
    """
    if not enabled:
        return
    fraction = min(1.0, done / total) if total else 1.0
    line = f"{fraction * 100:5.1f}%  delivered {results.received}  errors {results.errors}"
    if sys.stderr.isatty():
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r[{bar:<30}] {line}")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()
    else:
        print(line, file=sys.stderr, flush=True)


def mergeResults(parts: list[Results], rssBefore: int | None = None, rssAfter: int | None = None) -> Results:
    """
    The results of every process of a C{--procs} run as one.

    The memory per connection is the server's growth over the whole run
    (C{rssBefore}: read before any process connected, C{rssAfter}: once all
    of them had connected) divided by the connections of all processes; what
    each process measured on its own is dropped, as it saw only part of the
    connections against a growth that others' connections also caused.
    """
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    merged.memoryPerConnection = None
    if rssBefore is not None and rssAfter is not None and merged.connections:
        merged.memoryPerConnection = (rssAfter - rssBefore) / merged.connections
    return merged


async def runLoad(
    reactor: Any, args: argparse.Namespace, ids: list[int], ready: Callable[[], Any] | None = None,
    held: Callable[[], Any] | None = None,
) -> Results:
    """
    Connect this process's clients, wait for C{ready} (the start signal of a
    multi-process run), run the mode, wait for C{held} (connections mode:
    the other processes' memory reading), close, and return the results.
    """
    load = Load(reactor, args, ids)
    load.rssBefore = _rss(args.pid) if args.pid else None
    connectSeconds = await load.connect()
    load.results.connectSeconds = connectSeconds
    # keep the cyclic collector's full passes (tens of ms) out of the
    # latencies: what exists now lives for the whole run
    gc.freeze()
    if args.settle:
        # a cluster's nodes learn of each other's users within a heartbeat
        from twisted.internet.task import deferLater

        await deferLater(reactor, args.settle, lambda: None)
    if ready is not None:
        await ready()
    mode = args.mode
    if mode == "classic":
        await load.classic()
    elif mode == "throughput":
        await load.throughput()
    elif mode == "latency":
        await load.latency()
    elif mode == "fanout":
        await load.fanout()
    elif mode == "connections":
        await load.connections()
        if held is not None:
            await held()
    load.finish()
    await load.closeAll()
    return load.results


# --- processes -----------------------------------------------------------------


def _share(args: argparse.Namespace, index: int) -> list[int]:
    """
    The user ids of process C{index}: pairs and fan-out groups stay whole.
    """
    if args.mode == "fanout":
        n = args.recipients + 1
        base = args.id_base + index * n
        return list(range(base, base + n))
    total = args.clients
    per = total // args.procs
    per -= per % 2 if args.mode != "connections" else 0
    base = args.id_base + index * per
    return list(range(base, base + per))


async def _parent(reactor: Any, args: argparse.Namespace) -> Results:
    """
    Run the load in this process and C{--procs - 1} children started at once.

    In connections mode the server's memory is read here, before any child
    is started and once every process has connected (the children hold
    their connections until told to close), and divided by all of them.
    """
    import copy

    from twisted.internet.defer import Deferred, gatherResults
    from twisted.internet.protocol import ProcessProtocol

    children: list[Any] = []

    class Child(ProcessProtocol):
        def __init__(self) -> None:
            self.out = b""
            self.ready: Deferred[None] = Deferred()
            self.done: Deferred[Results] = Deferred()

        def outReceived(self, data: bytes) -> None:
            self.out += data
            if not self.ready.called and b"READY\n" in self.out:
                self.ready.callback(None)

        def errReceived(self, data: bytes) -> None:
            sys.stderr.write(data.decode("utf-8", "replace"))

        def processEnded(self, reason: Any) -> None:
            if not self.ready.called:
                self.ready.callback(None)
            lines = [l for l in self.out.splitlines() if l.startswith(b"{")]
            if lines:
                self.done.callback(Results.fromJSON(orjson.loads(lines[-1])))
            else:
                r = Results(args.mode, errors=1)
                self.done.callback(r)

    memory = args.mode == "connections" and args.pid is not None
    rss: dict[str, int | None] = {"before": _rss(args.pid) if memory else None, "after": None}
    argv = list(args.argv)
    for index in range(1, args.procs):
        child = Child()
        reactor.spawnProcess(
            child, sys.executable,
            [sys.executable, "-m", "wsserver.bench", *argv, "--child", str(index)],
            env=dict(os.environ),
        )
        children.append(child)

    async def ready() -> None:
        await gatherResults([c.ready for c in children])
        for c in children:
            c.transport.write(b"GO\n")

    async def held() -> None:
        # every process connected before it said READY, and the children
        # hold until CLOSE: all the connections are open now
        if memory:
            rss["after"] = _rss(args.pid)
        for c in children:
            c.transport.write(b"CLOSE\n")

    local = copy.copy(args)
    local.pid = None
    mine = await runLoad(reactor, local, _share(args, 0), ready, held if args.mode == "connections" else None)
    theirs = await gatherResults([c.done for c in children])
    return mergeResults([mine, *theirs], rss["before"], rss["after"])


async def _child(reactor: Any, args: argparse.Namespace) -> None:
    from twisted.internet import stdio
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    go: Deferred[None] = Deferred()
    close: Deferred[None] = Deferred()

    class Control(Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            lines = self.buffer.split(b"\n")
            if b"GO" in lines[:-1] and not go.called:
                go.callback(None)
            if b"CLOSE" in lines[:-1] and not close.called:
                close.callback(None)

        def connectionLost(self, reason: Any = None) -> None:
            # the parent is gone: nothing to wait for
            for d in (go, close):
                if not d.called:
                    d.callback(None)

    stdio.StandardIO(Control(), reactor=reactor)

    async def ready() -> None:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await go

    async def held() -> None:
        await close

    # the parent reads the server's memory for all processes
    args.pid = None
    results = await runLoad(reactor, args, _share(args, args.child), ready,
                            held if args.mode == "connections" else None)
    sys.stdout.write(orjson.dumps(results.toJSON()).decode() + "\n")
    sys.stdout.flush()


# --- command line ---------------------------------------------------------------


def _plain(text: str) -> str:
    """
    C{text} without its epytext markup (C{C{data}} is C{data}): the module's
    docstring is also C{--help}'s description.
    """
    return re.sub(r"\b[BCILMU]\{([^{}]*)\}", r"\1", text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsserver-bench", description=_plain(__doc__.split("\n\n")[1].strip()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["classic", "throughput", "latency", "fanout", "connections"])
    p.add_argument("--url", action="append", default=[], metavar="URL",
                   help="ws:// or wss:// URL of the chat endpoint (default ws://127.0.0.1:8085/chat); give it "
                        "again for more servers (cluster nodes): clients take them in turn, a pair split across")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    p.add_argument("--clients", type=int, help="clients (classic 50, throughput/latency 100, connections 1000)")
    p.add_argument("--messages", type=int, default=2, help="classic: messages per client per run")
    p.add_argument("--runs", type=int, default=20, help="classic: runs")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending (throughput, latency, fanout)")
    p.add_argument("--window", type=int, default=8, help="closed loop: messages in flight per sender")
    p.add_argument("--rate", type=float, default=2000.0, help="latency: messages/s offered in all")
    p.add_argument("--recipients", type=int, default=100, help="fanout: recipients per message")
    p.add_argument("--size", type=int, default=len(LOREM), help="characters of text per message")
    p.add_argument("--hold", type=float, default=2.0, help="connections: seconds to hold them open")
    p.add_argument("--pid", type=int, help="connections: the server's PID, to read its memory")
    p.add_argument("--concurrency", type=int, default=200, help="connection attempts at once")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds to wait between connecting and sending (cluster presence to spread)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds to wait for messages still in flight")
    p.add_argument("--procs", type=int, default=1, help="spread the clients over this many processes")
    p.add_argument("--id-base", type=int, default=1_000_000, help="first user id")
    p.add_argument("--ids", choices=["numeric", "uuid"], default="numeric",
                   help="user ids: numbers, or UUIDs (a server with chat.userIds \"any\")")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="send this handshake header")
    p.add_argument("--cookie", action="append", default=[], metavar="NAME=VALUE", help="send this cookie")
    p.add_argument("--basic", metavar="USER:PASSWORD", help="HTTP basic auth")
    p.add_argument("--bearer", metavar="TOKEN", help="bearer token")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    return p


def parseArgs(argv: list[str]) -> argparse.Namespace:
    """
    Parse and complete the command line.
    """
    import base64

    p = parser()
    args = p.parse_args(argv)
    if args.clients is None:
        args.clients = {"classic": 50, "connections": 1000}.get(args.mode, 100)
    if args.mode != "connections" and args.mode != "fanout" and args.clients // args.procs < 2:
        p.error("need at least 2 clients per process")
    args.urls = args.url or ["ws://127.0.0.1:8085/chat"]
    args.url = args.urls[0]
    for url in args.urls:
        if not url.startswith(("ws://", "wss://")):
            p.error("--url must start with ws:// or wss://")
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            p.error(f"--header {h!r}: use NAME:VALUE")
        headers[name.strip()] = value.strip()
    if args.cookie:
        headers["Cookie"] = "; ".join(args.cookie)
    if args.basic:
        headers["Authorization"] = "Basic " + base64.b64encode(args.basic.encode()).decode()
    if args.bearer:
        headers["Authorization"] = "Bearer " + args.bearer
    args.headers = headers
    args.argv = list(argv)
    return args


#: what a row of the table means, where its name does not say it
ROW_NOTES = {
    "other": "(not deliveries: send-back copies and delivery notifications the clients also got)",
}


def table(summary: dict[str, Any]) -> str:
    """
    The summary as an aligned two-column table, a row's meaning beside it
    where its name does not say it (L{ROW_NOTES}).
    """
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value[:10]) + (" ..." if len(value) > 10 else "")
        value = f"{value}  {ROW_NOTES[key]}" if key in ROW_NOTES else value
        rows.append((key, str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


async def run(reactor: Any, argv: list[str]) -> Results | None:
    """
    Run the bench for C{argv}; prints the summary (or JSON) and returns the
    merged results.
    """
    from ._internals import makeDebugArgumentsLazy

    args = parseArgs(argv)
    makeDebugArgumentsLazy()
    _raiseFileLimit()
    if args.child is not None:
        await _child(reactor, args)
        return None
    results = await _parent(reactor, args) if args.procs > 1 else await runLoad(reactor, args, _share(args, 0))
    summary = results.summary()
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(table(summary))
    if results.errors:
        # a run where clients could not connect (or were cut off) measured
        # something else than it says: make it fail, not just print it
        print(f"wsserver-bench: {results.errors} of {args.clients} clients failed "
              f"(could not connect or were disconnected)", file=sys.stderr)
        raise SystemExit(1)
    return results


def main(argv: list[str] | None = None) -> None:
    """
    The C{wsserver-bench} console script.
    """
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    react(lambda reactor: ensureDeferred(run(reactor, sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
