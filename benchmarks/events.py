"""
Does the event notifier, the undelivered queue or an event target slow
routing down, and how fast does each target write?

Runs the same wsserver-bench loads -- throughput (100 clients in 50 pairs,
3.3 KB messages, as fast as the server goes) and latency (2,000 messages/s
offered) -- against wsserver with: events and queue off (the baseline),
the sqlite queue on, a webhook to a sink that answers at once (every message
is stored and POSTed), a webhook that answers after 5 seconds, a webhook
whose port refuses connections, and the C{postgresql}, C{mysql} (MariaDB)
and C{amqp} (RabbitMQ) targets against real servers that this script starts
itself (L{tests.servers}: PostgreSQL 15, MariaDB, RabbitMQ).  Server on one
core; bench, sink and database servers on the other; medians of --repeat
runs, as ratios to the baseline: of the throughput, and of the server's CPU
per message (steadier on a shared machine; the ratio is baseline/case, the
share of the baseline's capacity that is left).

For every case with a target, C{GET /events} is read once a second during
the run and for up to 20 seconds after it: the table's last columns are the
events the target wrote per second during the latency load (2,000
messages/s offered), the largest backlog seen then (deliveries stored and
not yet written), the events written per second once the throughput
load has ended and the server drains its backlog with nothing else to do,
and the events written per second during the throughput load with the
largest backlog seen then (a target that keeps up writes what is routed,
its backlog bounded).

With C{--rev REV} every case also runs against the code of the git
revision C{REV} (exported to a temporary directory), in the same round,
as C{"... @REV"}: what a change did to each case, measured side by side.

    python benchmarks/events.py [--duration 10] [--repeat 3] [--cases all|targets] [--rev REV]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from compare import Server, bench, cpuSeconds, freePort, median as resultMedian, standardLoads  # noqa: E402

BASELINE = "baseline (queue and events off)"
#: seconds the backlog gets to drain after a load (measuring the idle write rate)
DRAIN_LIMIT = 20


def sink(port: int, delay: float, core: str) -> subprocess.Popen:
    proc = subprocess.Popen(["taskset", "-c", core, sys.executable, os.path.join(HERE, "sink.py"),
                             "--port", str(port), "--delay", str(delay)], stdout=subprocess.PIPE)
    proc.stdout.readline()
    return proc


def pin(pid: int, core: str) -> None:
    """
    Every thread of process C{pid} (and the processes it forks from now on)
    on C{core}.
    """
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], stdout=subprocess.DEVNULL, check=False)


def restPort(server: Server) -> int:
    """
    The REST port the benchmark's L{Server} was started with.
    """
    argv = server.proc.args
    endpoint = argv[argv.index("--rest") + 1]
    return int(endpoint.split(":")[1])


class Poller(threading.Thread):
    """
    Reads C{GET /events} every C{interval} seconds (a read costs the server a
    scan of its event table): samples of (time,
    deliveries succeeded, backlog) summed over the targets.
    """

    def __init__(self, port: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/events"
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()

    def read(self) -> tuple[float, int, int] | None:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as answer:
                body = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        rows = body if isinstance(body, list) else body.get("data", body.get("result", []))
        succeeded = sum(r["succeeded"] for r in rows)
        backlog = sum(r["pending"] + r["retrying"] for r in rows)
        return time.monotonic(), succeeded, backlog

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            sample = self.read()
            if sample is not None:
                self.samples.append(sample)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def export(rev: str) -> str:
    """
    A snapshot of the git revision C{rev} in a temporary directory.
    """
    where = tempfile.mkdtemp(prefix="wsserver-before-")
    archive = subprocess.run(["git", "-C", os.path.dirname(HERE), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", where], input=archive.stdout, check=True)
    return where


def runOnce(name: str, config: dict, kind: str, load: list[str], polled: bool, tree: str | None = None) -> dict:
    """
    One load against a fresh server with C{config} (running the code of
    C{tree}, this checkout's when L{None}); with C{polled}, the target's
    write rate, largest backlog and drain time added.
    """
    config = dict(config)
    config["server"] = {**config.get("server", {}), "dataDir": tempfile.mkdtemp()}
    server = Server("wsserver", "0", config, tree=tree)
    try:
        poller = None
        if polled:
            poller = Poller(restPort(server))
            poller.start()
        before = cpuSeconds(server.proc.pid)
        started = time.monotonic()
        result = bench(server, "1", load)
        ended = time.monotonic()
        used = cpuSeconds(server.proc.pid) - before
        result["server_us_per_msg"] = round(used / max(1, result["received"]) * 1e6, 2)
        if poller is not None:
            # the backlog left drains with the server idle: the target's
            # own write rate
            atEnd = poller.read()
            deadline = time.monotonic() + DRAIN_LIMIT
            last = atEnd
            while last is not None and last[2] > 0 and time.monotonic() < deadline:
                time.sleep(0.2)
                last = poller.read() or last
            poller.stop()
            during = [s for s in poller.samples if started <= s[0] <= ended]
            if len(during) >= 2:
                (t0, s0, _), (t1, s1, _) = during[0], during[-1]
                result["written_per_s"] = round((s1 - s0) / max(1e-9, t1 - t0))
            else:
                result["written_per_s"] = 0
            result["backlog_max"] = max((s[2] for s in poller.samples), default=0)
            if atEnd is not None and last is not None and last[0] - atEnd[0] >= 1:
                result["drain_per_s"] = round((last[1] - atEnd[1]) / (last[0] - atEnd[0]))
            else:
                result["drain_per_s"] = None
            result["backlog_left"] = last[2] if last is not None else None
    finally:
        server.stop()
        shutil.rmtree(config["server"]["dataDir"], True)
    extra = (f" written {result['written_per_s']}/s backlog max {result['backlog_max']}, then idle "
             f"{result['drain_per_s']}/s, {result['backlog_left']} left" if polled else "")
    print(f"{name} / {kind}: {result['delivered_per_s']} msg/s p99 {result['latency_ms']['p99']} ms "
          f"server {result['server_cpu']} us/msg {result['server_us_per_msg']}{extra}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", choices=["all", "targets"], default="all",
                        help="targets: only the baseline, the instant webhook and the three database/broker targets")
    parser.add_argument("--rev", help="also run every case against this git revision, side by side")
    args = parser.parse_args()
    from twisted.internet import task, threads

    # tests.servers waits for its servers on the reactor (here in the main
    # thread, for its child processes); the runs block, in a thread
    task.react(lambda reactor: threads.deferToThread(measure, args, reactor))


def measure(args: argparse.Namespace, reactor) -> None:
    """
    Start the database servers, run every case --repeat times and print
    the table.
    """
    from twisted.internet.threads import blockingCallFromThread

    before = export(args.rev) if args.rev else None
    from tests.servers import MariaDBServer, PostgresServer, RabbitMQServer

    def onReactor(f, *args):
        return blockingCallFromThread(reactor, f, *args)

    loads = standardLoads(args.duration)
    fast, slow, dead = freePort(), freePort(), freePort()
    sinks = [sink(fast, 0, "1"), sink(slow, 5, "1")]
    servers: list = []
    try:
        print("starting PostgreSQL, MariaDB and RabbitMQ ...", file=sys.stderr, flush=True)
        for factory in (PostgresServer, MariaDBServer, RabbitMQServer):
            servers.append(factory())
            onReactor(servers[-1].create)
        pg, maria, rabbit = servers
        for s in servers:
            pin(s._process.pid, "1")

        def events(target: dict) -> dict:
            return {"event": {"enabled": True, "retryIntervalSeconds": 10, "retryCount": 3,
                              "targets": [{"connectionTimeoutSeconds": 10, **target}]}}

        def hook(port: int) -> dict:
            return events({"type": "postback", "url": f"http://127.0.0.1:{port}/hook"})

        cases = {
            BASELINE: ({}, False),
            "sqlite queue on": ({"chat": {"enableUndeliveredQueue": True}}, False),
            "queue + webhook (answers at once)": ({"chat": {"enableUndeliveredQueue": True}, **hook(fast)}, True),
            "webhook answering after 5 s": (hook(slow), False),
            "webhook refusing connections": (hook(dead), False),
            "postgresql target": (events({"type": "postgresql", "dsn": pg.dsn()}), True),
            "mysql target (MariaDB)": (events({"type": "mysql", "dsn": maria.dsn()}), True),
            "amqp target (RabbitMQ)": (events({"type": "amqp", "url": rabbit.url(),
                                               "declareQueue": "wsserver.events"}), True),
        }
        if args.cases == "targets":
            keep = {BASELINE, "queue + webhook (answers at once)", "postgresql target", "mysql target (MariaDB)",
                    "amqp target (RabbitMQ)"}
            cases = {k: v for k, v in cases.items() if k in keep}
        trees: dict[str, str | None] = {name: None for name in cases}
        if before is not None:
            # each case next to its run at REV, so that both see the same load of the machine
            both: dict = {}
            for name, case in cases.items():
                both[name] = both[f"{name} @{args.rev}"] = case
                trees[f"{name} @{args.rev}"] = before
            cases = both
        figures: dict = {(name, kind): [] for name in cases for kind in loads}
        for _ in range(args.repeat):
            for name, (config, polled) in cases.items():
                for kind, load in loads.items():
                    figures[(name, kind)].append(runOnce(name, config, kind, load, polled, trees[name]))
                    if "amqp" in name:
                        onReactor(rabbit.ctl, "purge_queue", "wsserver.events")
    finally:
        for s in sinks:
            s.terminate()
        for s in servers:
            onReactor(s.destroy)
        if before is not None:
            shutil.rmtree(before, True)

    def median(name: str, kind: str, path: str) -> float:
        return resultMedian(figures[(name, kind)], path)

    base = median(BASELINE, "throughput", "delivered_per_s")
    baseCost = median(BASELINE, "throughput", "server_us_per_msg")
    print(f"{'case':<44} {'throughput msg/s':>16} {'ratio':>6} {'server us/msg':>13} {'ratio':>6} "
          f"{'p99 ms at 2,000 msg/s':>22} {'written/s at 2,000':>18} {'backlog max':>11} {'written/s idle':>14} "
          f"{'written/s at full load':>22} {'its backlog max':>15}")
    for name, (_, polled) in cases.items():
        rate = median(name, "throughput", "delivered_per_s")
        cost = median(name, "throughput", "server_us_per_msg")
        p99 = median(name, "latency", "latency_ms.p99")
        line = f"{name:<44} {rate:>16,.0f} {rate / base:>5.2f}x {cost:>13.1f} {baseCost / cost:>5.2f}x {p99:>22.2f}"
        if polled:
            idle = [r["drain_per_s"] for r in figures[(name, "throughput")] if r["drain_per_s"] is not None]
            line += (f" {median(name, 'latency', 'written_per_s'):>18,.0f}"
                     f" {max(r['backlog_max'] for r in figures[(name, 'latency')]):>11,}"
                     f" {statistics.median(idle) if idle else 0:>14,.0f}"
                     f" {median(name, 'throughput', 'written_per_s'):>22,.0f}"
                     f" {max(r['backlog_max'] for r in figures[(name, 'throughput')]):>15,}")
        print(line)

if __name__ == "__main__":
    main()
