"""
What crossing nodes costs, with the same load and the same CPU budget, side
by side in one run:

  - one node: one wsserver process joined to Redis, every pair on it;
  - two nodes: two processes on the same Redis, every pair split across
    them (wsserver-bench with one --url per node), so every message crosses
    Redis once;
  - two nodes again with Redis replies parsed in Python (hiredis hidden
    from txredisapi), to show what the native parser buys.

Redis and the wsserver processes share core 0; the bench has core 1.  Each
case runs --repeat times, alternating, and the medians are compared.  The
loads: closed-loop throughput (delivered messages/s) and latency at 2,000
messages/s offered (p99).  The CPU that the nodes and Redis used per
delivered message is printed too: on a shared machine it is steadier than
the rates.

    python benchmarks/crossing.py [--duration 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import start, startRedis, stop  # noqa: E402
from compare import TWISTD, cpuSeconds, freePort, standardLoads  # noqa: E402

#: twistd with txredisapi's Python reply parser (hiredis made unimportable)
NO_HIREDIS = "import sys; sys.modules['hiredis'] = None; " + TWISTD

SERVER_CORE = "0"
BENCH_CORE = "1"


def node(redisPort: int, hiredis: bool = True) -> tuple[subprocess.Popen, str]:
    """
    A cluster node pinned to the server core.
    """
    port = freePort()
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"server": {"dataDir": tempfile.mkdtemp()},
               "cluster": {"redis": f"redis://127.0.0.1:{redisPort}/0"}}, config)
    config.close()
    proc = start(["taskset", "-c", SERVER_CORE, sys.executable, "-c", TWISTD if hiredis else NO_HIREDIS,
                  "--nodaemon", "--pidfile=", "wsserver", "-C", config.name,
                  "--ws", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                  "--rest", f"tcp:{freePort()}:interface=127.0.0.1"], r"cluster node \w+ joined")
    return proc, f"ws://127.0.0.1:{port}/chat"


def bench(urls: list[str], load: list[str], pids: list[int]) -> dict:
    argv = ["taskset", "-c", BENCH_CORE, sys.executable, "-m", "wsserver.bench", *load, "--json",
            "--settle", "1.5"]
    for url in urls:
        argv += ["--url", url]
    before = sum(cpuSeconds(p) for p in pids)
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    used = sum(cpuSeconds(p) for p in pids) - before
    result["server_cpu"] = round(used / wall, 2)
    # CPU of the nodes and Redis per delivered message: what a message
    # costs, whatever the other load on the machine
    result["cpu_us"] = round(used / max(1, result["received"]) * 1e6, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loads = standardLoads(args.duration)
    redisPort = freePort()
    redis = startRedis(redisPort, SERVER_CORE)
    cases = {"one node": (1, True), "two nodes, all crossing": (2, True),
             "two nodes, no hiredis": (2, False)}
    figures: dict[str, list[dict]] = {}
    try:
        for _ in range(args.repeat):
            for name, (count, hiredis) in cases.items():
                for kind, load in loads.items():
                    if not hiredis and kind == "latency":
                        continue
                    procs = [node(redisPort, hiredis) for _ in range(count)]
                    try:
                        time.sleep(0.5)
                        pids = [p.pid for p, _ in procs] + [redis.pid]
                        r = bench([url for _, url in procs], load, pids)
                    finally:
                        for p, _ in procs:
                            stop(p)
                    figures.setdefault(f"{name} / {kind}", []).append(r)
                    print(f"{name} / {kind}: {r['delivered_per_s']} msg/s p99 {r['latency_ms']['p99']} ms "
                          f"dropped {r['dropped']} errors {r['errors']} cpu {r['server_cpu']}",
                          file=sys.stderr, flush=True)
    finally:
        stop(redis)
    print(f"{'case':<38} {'delivered msg/s':>16} {'p99 ms':>8} {'dropped':>8} {'core 0':>7} {'CPU us/msg':>11}")
    for key, results in figures.items():
        rate = statistics.median(r["delivered_per_s"] for r in results)
        p99 = statistics.median(r["latency_ms"]["p99"] for r in results)
        dropped = sum(r["dropped"] + r["errors"] for r in results)
        cpu = statistics.median(r["server_cpu"] for r in results)
        perMessage = statistics.median(r["cpu_us"] for r in results)
        print(f"{key:<38} {rate:>16,.0f} {p99:>8.2f} {dropped:>8} {cpu:>7.2f} {perMessage:>11.1f}")
    one = statistics.median(r["delivered_per_s"] for r in figures["one node / throughput"])
    for name in ("two nodes, all crossing", "two nodes, no hiredis"):
        two = statistics.median(r["delivered_per_s"] for r in figures[f"{name} / throughput"])
        cost = statistics.median(r["cpu_us"] for r in figures[f"{name} / throughput"])
        local = statistics.median(r["cpu_us"] for r in figures["one node / throughput"])
        print(f"{name}: {two / one:.2f}x one node's throughput (target >= 0.5x); "
              f"{cost / local:.2f}x its CPU per message")


if __name__ == "__main__":
    main()
