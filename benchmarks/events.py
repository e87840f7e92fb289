"""
Does the event notifier or the undelivered queue slow routing down?

Runs the same wsserver-bench loads -- throughput (100 clients in 50 pairs,
3.3 KB messages, as fast as the server goes) and latency (2,000 messages/s
offered) -- against wsserver with: events and queue off (the baseline),
the sqlite queue on, a webhook to a sink that answers at once (every message
is stored and POSTed), a webhook that answers after 5 seconds, and a webhook
whose port refuses connections.  Server on one core, bench and sink on the
other; medians of --repeat runs, as ratios to the baseline.

    python benchmarks/events.py [--duration 10] [--repeat 3]
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import alternate, freePort, median as resultMedian, standardLoads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def sink(port: int, delay: float, core: str) -> subprocess.Popen:
    proc = subprocess.Popen(["taskset", "-c", core, sys.executable, os.path.join(HERE, "sink.py"),
                             "--port", str(port), "--delay", str(delay)], stdout=subprocess.PIPE)
    proc.stdout.readline()
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loads = standardLoads(args.duration)
    fast, slow, dead = freePort(), freePort(), freePort()
    sinks = [sink(fast, 0, "1"), sink(slow, 5, "1")]

    def events(port: int) -> dict:
        return {"event": {"enabled": True, "retryIntervalSeconds": 10, "retryCount": 3,
                          "targets": [{"type": "postback", "url": f"http://127.0.0.1:{port}/hook",
                                       "connectionTimeoutSeconds": 10}]}}

    cases = {
        "baseline (queue and events off)": {},
        "sqlite queue on": {"chat": {"enableUndeliveredQueue": True}},
        "queue + webhook (answers at once)": {"chat": {"enableUndeliveredQueue": True}, **events(fast)},
        "webhook answering after 5 s": events(slow),
        "webhook refusing connections": events(dead),
    }
    try:
        figures = alternate(cases, loads, args.repeat)
    finally:
        for s in sinks:
            s.terminate()

    def median(name: str, kind: str, path: str) -> float:
        return resultMedian(figures[(name, kind)], path)

    base = median("baseline (queue and events off)", "throughput", "delivered_per_s")
    print(f"{'case':<36} {'throughput msg/s':>16} {'ratio':>6} {'p99 ms at 2,000 msg/s':>22}")
    for name in cases:
        rate = median(name, "throughput", "delivered_per_s")
        p99 = median(name, "latency", "latency_ms.p99")
        print(f"{name:<36} {rate:>16,.0f} {rate / base:>5.2f}x {p99:>22.2f}")


if __name__ == "__main__":
    main()
