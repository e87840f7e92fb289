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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import alternate, median as resultMedian, standardLoads  # noqa: E402

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
    figures = alternate({name: {"server": {"limits": limits}} for name, limits in cases.items()}, loads,
                        args.repeat)

    def median(name: str, kind: str, path: str) -> float:
        return resultMedian(figures[(name, kind)], path)

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
