"""
Where a server with one event target spends its CPU, thread by thread:
the reactor, the event store's SQLite thread, the target's pool threads
(C{/proc/<pid>/task/*/stat}), in microseconds per routed message, for one
wsserver-bench load (the throughput load by default) against a server with
a C{postgresql}, C{mysql} or C{amqp} target (started by L{tests.servers})
or none.  Server on core 0; bench and database on core 1, as in
C{benchmarks/events.py}.  Trees alternate within each round, so that a
change is measured against the code before it in the same minutes:

    python benchmarks/targetthreads.py postgresql --tree /tmp/before --tree . [--rounds 2]
    python benchmarks/targetthreads.py postgresql --load latency --write-delay 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from compare import Server, bench, standardLoads  # noqa: E402


def threadCPU(pid: int) -> dict[str, float]:
    """
    Each thread's CPU seconds so far, by thread id.
    """
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def once(kind: str, target: dict | None, tree: str | None, load: list[str], writeDelay: int | None,
         batchWait: int | None) -> str:
    config: dict = {"server": {"dataDir": tempfile.mkdtemp()}}
    if target is not None:
        event: dict = {"enabled": True, "retryIntervalSeconds": 10, "retryCount": 3,
                       "targets": [{"connectionTimeoutSeconds": 10, **target}]}
        if writeDelay is not None:
            event["writeDelayMillis"] = writeDelay
        if batchWait is not None:
            event["batchWaitMillis"] = batchWait
        config["event"] = event
    server = Server("wsserver", "0", config, tree=tree)
    try:
        before = threadCPU(server.proc.pid)
        result = bench(server, "1", load)
        after = threadCPU(server.proc.pid)
    finally:
        server.stop()
    n = max(1, result["received"])
    # the reactor thread is the process's own id: listed first
    tids = sorted(after, key=lambda t: (t != str(server.proc.pid), int(t)))
    used = [(after[t] - before.get(t, 0.0)) / n * 1e6 for t in tids]
    threads = " ".join(f"{u:.1f}" for u in used if u >= 0.05)
    return (f"{tree or '.'} {kind}: {result['delivered_per_s']:,.0f} msg/s, server {result['server_us_per_msg']} us/msg; "
            f"by thread (reactor first) {threads}")


def measure(args: argparse.Namespace, reactor) -> None:
    from twisted.internet.threads import blockingCallFromThread

    from tests.servers import MariaDBServer, PostgresServer, RabbitMQServer

    factory = {"postgresql": PostgresServer, "mysql": MariaDBServer, "amqp": RabbitMQServer}.get(args.target)
    server = None
    if factory is not None:
        server = factory()
        blockingCallFromThread(reactor, server.create)
        os.system(f"taskset -a -p -c 1 {server._process.pid} > /dev/null")
    try:
        target = None
        if args.target == "postgresql":
            target = {"type": "postgresql", "dsn": server.dsn()}
        elif args.target == "mysql":
            target = {"type": "mysql", "dsn": server.dsn()}
        elif args.target == "amqp":
            target = {"type": "amqp", "url": server.url(), "declareQueue": "wsserver.events"}
        load = standardLoads(args.duration)[args.load]
        for _ in range(args.rounds):
            for tree in args.tree or [None]:
                print(once(args.target, target, tree, load, args.write_delay, args.batch_wait), flush=True)
                if args.target == "amqp":
                    blockingCallFromThread(reactor, server.ctl, "purge_queue", "wsserver.events")
    finally:
        if server is not None:
            blockingCallFromThread(reactor, server.destroy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["postgresql", "mysql", "amqp", "none"])
    parser.add_argument("--tree", action="append", help="a source tree to run (several alternate); default: this one")
    parser.add_argument("--load", choices=["throughput", "latency"], default="throughput")
    parser.add_argument("--duration", default="8")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write-delay", type=int, help="event.writeDelayMillis")
    parser.add_argument("--batch-wait", type=int, help="event.batchWaitMillis")
    args = parser.parse_args()
    from twisted.internet import task, threads

    task.react(lambda reactor: threads.deferToThread(measure, args, reactor))


if __name__ == "__main__":
    main()
