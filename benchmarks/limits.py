"""
What do the limits (server.limits) cost?

Runs the same wsserver-bench loads -- throughput (100 clients in 50 pairs,
3.3 KB messages, as fast as the server goes) and latency (2,000 messages/s
offered) -- against the same build with every limit off, with the default
limits, and with the defaults plus a rate limit high enough never to close
anyone (so that the token bucket runs on every message).  Server on one
core, bench on the other; the cases alternate within each repeat, and the
medians are compared as ratios to "all off".  On a shared machine the
rates move with the neighbours' load; the server's CPU time per delivered
message (read from /proc) moves much less, and is printed too.

    python benchmarks/limits.py [--duration 5] [--repeat 3]
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server, bench, cpuSeconds, standardLoads  # noqa: E402

OFF = {name: 0 for name in (
    "maxConnections", "maxConnectionsPerIp", "maxConnectionsPerUser", "messagesPerSecond", "burst",
    "maxRecipients", "sendBufferBytes", "handshakeTimeoutSeconds", "maxTrackedUsers",
    "authFailuresPerMinute", "preAuthBytes", "requestTimeoutSeconds",
)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="5")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loads = standardLoads(args.duration)
    cases = {
        "all limits off": OFF,
        "default limits": {},
        "defaults + messagesPerSecond": {"messagesPerSecond": 1000000, "burst": 1000000},
    }
    figures: dict[tuple[str, str], list[dict]] = {(name, kind): [] for name in cases for kind in loads}
    for _ in range(args.repeat):
        for name, limits in cases.items():
            for kind, load in loads.items():
                config = {"server": {"dataDir": tempfile.mkdtemp(), "limits": limits}}
                server = Server("wsserver", "0", config)
                try:
                    before = cpuSeconds(server.proc.pid)
                    result = bench(server, "1", load)
                    used = cpuSeconds(server.proc.pid) - before
                    result["server_us_per_msg"] = round(used / max(1, result["received"]) * 1e6, 2)
                finally:
                    server.stop()
                figures[(name, kind)].append(result)
                print(f"{name} / {kind}: {result['delivered_per_s']} msg/s p99 {result['latency_ms']['p99']} ms "
                      f"server {result['server_cpu']} bench {result['bench_cpu']} "
                      f"server us/msg {result['server_us_per_msg']}", file=sys.stderr, flush=True)

    def median(name: str, kind: str, path: str) -> float:
        values = []
        for r in figures[(name, kind)]:
            for part in path.split("."):
                r = r[part]
            values.append(r)
        return statistics.median(values)

    base = median("all limits off", "throughput", "delivered_per_s")
    baseCPU = median("all limits off", "throughput", "server_us_per_msg")
    print(f"{'case':<30} {'throughput msg/s':>16} {'ratio':>6} {'server us/msg':>14} {'ratio':>6} "
          f"{'p99 ms at 2,000 msg/s':>22}")
    for name in cases:
        rate = median(name, "throughput", "delivered_per_s")
        cpu = median(name, "throughput", "server_us_per_msg")
        p99 = median(name, "latency", "latency_ms.p99")
        print(f"{name:<30} {rate:>16,.0f} {rate / base:>5.2f}x {cpu:>14.2f} {cpu / baseCPU:>5.2f}x {p99:>22.2f}")


if __name__ == "__main__":
    main()
