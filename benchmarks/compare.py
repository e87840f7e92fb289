"""
Measure wsserver against the minimal Autobahn relay (benchmarks/relay.py)
with the same wsserver-bench loads, one after the other in the same run, and
print the ratios against the targets.

The server under test is pinned to one core and the bench to the other
(taskset), so that they do not fight for a core; each load runs --repeat
times, alternating relay and wsserver, and the medians are compared.  The CPU
time each side used is read from /proc, so a reader can tell which side was
the limit (a server near 100 % of its core is the bottleneck; a bench near
100 % means the figure is the bench's ceiling).

    python benchmarks/compare.py [--duration 10] [--repeat 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TWISTD = "from twisted.scripts.twistd import run; run()"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpuSeconds(pid: int) -> float:
    """
    User + system CPU seconds of a process so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """
    A server process pinned to a core; started and stopped around one load.
    """

    def __init__(self, kind: str, core: str, config: dict | None = None) -> None:
        self.kind = kind
        self.port = freePort()
        if kind == "relay":
            argv = [sys.executable, os.path.join(HERE, "relay.py"), "--port", str(self.port)]
        else:
            argv = [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "wsserver",
                    "--ws", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
                    "--rest", f"tcp:{freePort()}:interface=127.0.0.1"]
            if config:
                self.configFile = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
                json.dump(config, self.configFile)
                self.configFile.close()
                argv += ["--config", self.configFile.name]
        self.proc = subprocess.Popen(["taskset", "-c", core, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode("utf-8", "replace")
            if not line:
                break
            if re.search(r"(relay|WebSocket) listening on", line):
                break
        else:
            raise RuntimeError(f"{kind} did not start")
        # keep reading its output so that it never blocks on a full pipe
        self._drain = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)
        self.url = f"ws://127.0.0.1:{self.port}/chat"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.wait()


def bench(server: Server, core: str, load: list[str]) -> dict:
    """
    Run one wsserver-bench load against C{server}; its JSON summary with the
    CPU use of both sides added.
    """
    argv = ["taskset", "-c", core, sys.executable, "-m", "wsserver.bench", *load, "--url", server.url, "--json"]
    if load[0] == "connections":
        argv += ["--pid", str(server.proc.pid)]
    serverBefore = cpuSeconds(server.proc.pid)
    childrenBefore = _childrenCPU()
    started = time.monotonic()
    child = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise RuntimeError(f"bench failed: {child.stderr[-2000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    # shares of one core over the whole bench run (connecting included)
    result["server_cpu"] = round((cpuSeconds(server.proc.pid) - serverBefore) / wall, 2)
    result["bench_cpu"] = round((_childrenCPU() - childrenBefore) / wall, 2)
    return result


def _childrenCPU() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, load: list[str], repeat: int, config: dict | None, serverCore: str, benchCore: str) -> list[dict]:
    results = []
    for _ in range(repeat):
        server = Server(kind, serverCore, config)
        try:
            time.sleep(0.5)
            results.append(bench(server, benchCore, load))
        finally:
            server.stop()
    return results


def standardLoads(duration: str) -> dict[str, list[str]]:
    """
    The two loads the event and cluster benchmarks share: closed-loop
    throughput, and latency at 2,000 messages/s offered.
    """
    return {"throughput": ["throughput", "--clients", "100", "--duration", duration],
            "latency": ["latency", "--clients", "100", "--rate", "2000", "--duration", duration]}


def alternate(cases: dict[str, dict], loads: dict[str, list[str]], repeat: int, serverCore: str = "0",
              benchCore: str = "1") -> dict[tuple[str, str], list[dict]]:
    """
    Run every load against wsserver with every config of C{cases}, the cases
    alternating within each of C{repeat} rounds, each run with a data
    directory of its own; every result also gets C{server_us_per_msg}, the
    server's CPU per delivered message (steadier than the rates on a shared
    machine).
    """
    figures: dict[tuple[str, str], list[dict]] = {(name, kind): [] for name in cases for kind in loads}
    for _ in range(repeat):
        for name, config in cases.items():
            for kind, load in loads.items():
                config = dict(config)
                config["server"] = {**config.get("server", {}), "dataDir": tempfile.mkdtemp()}
                server = Server("wsserver", serverCore, config)
                try:
                    before = cpuSeconds(server.proc.pid)
                    result = bench(server, benchCore, load)
                    used = cpuSeconds(server.proc.pid) - before
                    result["server_us_per_msg"] = round(used / max(1, result["received"]) * 1e6, 2)
                finally:
                    server.stop()
                figures[(name, kind)].append(result)
                print(f"{name} / {kind}: {result['delivered_per_s']} msg/s p99 {result['latency_ms']['p99']} ms "
                      f"server {result['server_cpu']} bench {result['bench_cpu']} "
                      f"server us/msg {result['server_us_per_msg']}", file=sys.stderr, flush=True)
    return figures


def median(results: list[dict], path: str) -> float:
    values = []
    for r in results:
        value = r
        for part in path.split("."):
            value = value[part]
        values.append(value)
    return statistics.median(values)


FEATURES = {"server": {"watchdog": {"enabled": True, "pingIntervalSeconds": 1, "connectionLifetimeSeconds": 600}},
            "chat": {"message": {"enableDeliveryStatus": True, "enableSendBack": True}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10", help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", default="10000")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--bench-core", default="1")
    parser.add_argument("--only", help="comma-separated target names")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    d = args.duration
    loads = {
        "throughput": (["throughput", "--clients", "100", "--duration", d], None),
        "fanout": (["fanout", "--recipients", "100", "--duration", d], None),
        "latency": (["latency", "--clients", "100", "--rate", "2000", "--duration", d], None),
        "connections": (["connections", "--clients", args.connections, "--hold", "3"], None),
        "features": (["throughput", "--clients", "100", "--duration", d], FEATURES),
    }
    only = set(args.only.split(",")) if args.only else set(loads)
    figures: dict[str, dict[str, list[dict]]] = {}
    for name, (load, config) in loads.items():
        if name not in only:
            continue
        figures[name] = {"relay": [], "wsserver": []}
        for _ in range(args.repeat):
            for kind in ("relay", "wsserver"):
                r = measure(kind, load, 1, config if kind == "wsserver" else None, args.server_core, args.bench_core)
                figures[name][kind] += r
                print(f"{name:<12} {kind:<9} {json.dumps(r[0])}", file=sys.stderr, flush=True)

    rows = []

    def row(target: str, figure: str, ours: float, theirs: float | None, goal: str, ok: bool) -> None:
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        rows.append((target, figure, f"{ours:,.2f}", f"{theirs:,.2f}" if theirs is not None else "-", ratio, goal,
                     "yes" if ok else "NO"))

    f = figures
    if "throughput" in f:
        ours, theirs = median(f["throughput"]["wsserver"], "delivered_per_s"), median(f["throughput"]["relay"], "delivered_per_s")
        row("throughput, 50 pairs, 3.3 KB", "delivered msg/s", ours, theirs, ">= 1.0x", ours >= theirs)
    if "fanout" in f:
        ours, theirs = median(f["fanout"]["wsserver"], "delivered_per_s"), median(f["fanout"]["relay"], "delivered_per_s")
        row("fan-out to 100", "delivered msg/s", ours, theirs, ">= 1.0x", ours >= theirs)
    if "latency" in f:
        ours, theirs = median(f["latency"]["wsserver"], "latency_ms.p99"), median(f["latency"]["relay"], "latency_ms.p99")
        row("latency at 2,000 msg/s", "p99 ms", ours, theirs, "<= 2 ms", ours <= 2.0)
    if "connections" in f:
        ours = median(f["connections"]["wsserver"], "server_kib_per_connection")
        theirs = median(f["connections"]["relay"], "server_kib_per_connection")
        row(f"{args.connections} idle connections", "server KiB/conn", ours, theirs, "<= 10 KiB", ours <= 10)
        ours, theirs = median(f["connections"]["wsserver"], "connects_per_s"), median(f["connections"]["relay"], "connects_per_s")
        row(f"{args.connections} idle connections", "connects/s", ours, theirs, ">= 0.9x", ours >= 0.9 * theirs)
    if "features" in f:
        ours = median(f["features"]["wsserver"], "delivered_per_s")
        theirs = median(f["throughput"]["relay"], "delivered_per_s") if "throughput" in f else median(f["features"]["relay"], "delivered_per_s")
        row("watchdog+status+send-back", "delivered msg/s", ours, theirs, ">= 0.8x", ours >= 0.8 * theirs)

    headers = ("target", "figure", "wsserver", "relay", "ratio", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    for r in [headers] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"figures": figures, "table": rows}, out, indent=1)


if __name__ == "__main__":
    main()
