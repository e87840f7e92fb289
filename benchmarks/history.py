"""
What does the per-user inbox (chat.history) cost routing?

Runs the same wsserver-bench loads -- throughput (100 clients in 50 pairs,
3.3 KB messages, as fast as the server goes) and latency (2,000 messages/s
offered) -- against wsserver with the inbox off (the baseline), in SQLite
(every message appended to its recipient's inbox in the data file, batched
per reactor turn) and in memory, side by side in one run.  Server on one
core, bench on the other; medians of --repeat runs, as ratios to the
baseline; and one cluster node (on a redis-server of its own) with the inbox
off and in Redis.

    python benchmarks/history.py [--duration 10] [--repeat 3] [--no-redis]
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import alternate, freePort, median as resultMedian, standardLoads  # noqa: E402
from cluster import startRedis, stop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-redis", action="store_true", help="leave out the cluster cases")
    args = parser.parse_args()
    loads = standardLoads(args.duration)
    cases = {
        "inbox off (baseline)": {},
        "inbox in sqlite": {"chat": {"history": {"enabled": True, "storage": "sqlite"}}},
        "inbox in memory": {"chat": {"history": {"enabled": True, "storage": "memory"}}},
    }
    redis = None
    if not args.no_redis:
        redisPort = freePort()
        redis = startRedis(redisPort)
        cluster = {"redis": f"redis://127.0.0.1:{redisPort}/0"}
        cases["cluster node, inbox off"] = {"cluster": cluster}
        cases["cluster node, inbox in redis"] = {"cluster": cluster,
                                                 "chat": {"history": {"enabled": True, "storage": "redis"}}}
    try:
        figures = alternate(cases, loads, args.repeat)
    finally:
        if redis is not None:
            stop(redis)

    def median(name: str, kind: str, path: str) -> float:
        return resultMedian(figures[(name, kind)], path)

    base = median("inbox off (baseline)", "throughput", "delivered_per_s")
    def cpu(name: str) -> float:
        # server CPU per delivered message at full load: steadier than the
        # rates on a machine shared with other work
        return statistics.median(r["server_cpu"] / r["delivered_per_s"] * 1e6 for r in figures[(name, "throughput")])

    print(f"{'case':<30} {'throughput msg/s':>16} {'ratio':>6} {'server CPU us/msg':>18} "
          f"{'p99 ms at 2,000 msg/s':>22}")
    for name in cases:
        rate = median(name, "throughput", "delivered_per_s")
        p99 = median(name, "latency", "latency_ms.p99")
        print(f"{name:<30} {rate:>16,.0f} {rate / base:>5.2f}x {cpu(name):>18.0f} {p99:>22.2f}")


if __name__ == "__main__":
    main()
