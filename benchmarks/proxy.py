"""
What does reading the client's address from a trusted proxy cost?

Opens the same idle connections (wsserver-bench C{connections}) against the
same build with no proxy settings, with C{server.trustedProxies} naming the
loopback and every handshake carrying an C{X-Forwarded-For} header, and the
same with C{maxConnectionsPerIp} on (so that the forwarded address is
counted too).  The cases alternate within each repeat; the medians of
connects/s and of the server's CPU per connection are compared as ratios
to the first case.  The address is resolved once per connection, so the
messages that follow do not pay for it; only connecting is measured.

    python benchmarks/proxy.py [--clients 2000] [--repeat 5]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server, bench, cpuSeconds  # noqa: E402

FORWARDED = ["--header", "X-Forwarded-For:203.0.113.7, 127.0.0.1"]


def cases() -> dict[str, tuple[dict, list[str]]]:
    """
    Each case's server config and the extra arguments of its load.
    """
    proxied = {"trustedProxies": ["127.0.0.1"]}
    return {
        "no proxy settings": ({}, []),
        "trustedProxies + X-Forwarded-For": (proxied, FORWARDED),
        "the same + maxConnectionsPerIp": ({**proxied, "limits": {"maxConnectionsPerIp": 1_000_000}}, FORWARDED),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="2000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load = ["connections", "--clients", args.clients, "--hold", "0.5", "--concurrency", "200"]
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases()}
    for _ in range(args.repeat):
        for name, (server, extra) in cases().items():
            config = {"server": {**server, "dataDir": tempfile.mkdtemp()}}
            process = Server("wsserver", "0", config)
            try:
                time.sleep(0.5)
                before = cpuSeconds(process.proc.pid)
                result = bench(process, "1", load + extra)
                used = cpuSeconds(process.proc.pid) - before
            finally:
                process.stop()
            if result["connections"] != int(args.clients) or result["errors"]:
                raise RuntimeError(f"{name}: {result['connections']} connections, {result['errors']} errors")
            perConnection = used / result["connections"] * 1e6
            figures[name].append((result["connects_per_s"], perConnection))
            print(f"{name}: {result['connects_per_s']} connects/s, server {perConnection:.0f} us/connection",
                  file=sys.stderr, flush=True)
    first = next(iter(figures))
    baseRate = statistics.median(r for r, _ in figures[first])
    baseCPU = statistics.median(c for _, c in figures[first])
    print(f"{'case':<36} {'connects/s':>10} {'ratio':>6} {'server us/conn':>15} {'ratio':>6}")
    for name, runs in figures.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<36} {rate:>10,.0f} {rate / baseRate:>5.2f}x {cpu:>15.0f} {cpu / baseCPU:>5.2f}x")


if __name__ == "__main__":
    main()
