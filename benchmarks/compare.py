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

With --baseline-tree DIR and --baseline-python PY an older build is a
third side, run the same way (DIR first on PY's path, e.g. a worktree of an
old commit and a venv it was installed into); each round runs relay,
baseline and wsserver in turn, and the table gives both ratios:

    python benchmarks/compare.py [--duration 10] [--repeat 3] [--json results.json]
    git worktree add /tmp/old a85a95f && python3 -m venv /tmp/venv-old && /tmp/venv-old/bin/pip install /tmp/old
    python benchmarks/compare.py --baseline-tree /tmp/old --baseline-python /tmp/venv-old/bin/python
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
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
TWISTD = "from twisted.scripts.twistd import run; run()"
#: the relay's script, run by C{python -c RELAY relay.py ARGS}
RELAY = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


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

    def __init__(self, kind: str, core: str, config: dict | None = None, python: str | None = None,
                 tree: str | None = None, preamble: str = "", log: str | None = None) -> None:
        """
        @param python: the interpreter of a wsserver build (this one's by
            default), and C{tree} its source tree (put first on its path).
        @param preamble: Python code run in the server's process before the
            server (benchmarks/serverprofile.py's profiler).
        @param log: a file that gets the server's output after its start line
            (benchmarks/edges.py counts the lines); by default it is dropped.
        """
        self.kind = kind
        self.port = freePort()
        env = None
        if tree is not None:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
        if kind == "relay":
            relay = [os.path.join(HERE, "relay.py"), "--port", str(self.port)]
            argv = [sys.executable, "-c", preamble + RELAY, *relay] if preamble else [sys.executable, *relay]
        else:
            argv = [python or sys.executable, "-c", preamble + TWISTD, "--nodaemon", "--pidfile=", "wsserver",
                    "--ws", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
                    "--rest", f"tcp:{freePort()}:interface=127.0.0.1"]
            if config:
                self.configFile = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
                json.dump(config, self.configFile)
                self.configFile.close()
                argv += ["--config", self.configFile.name]
        self.proc = subprocess.Popen(["taskset", "-c", core, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(), env=env)
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
        with open(log or os.devnull, "ab") as sink:
            self._drain = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=sink)
        self.url = f"ws://127.0.0.1:{self.port}/chat"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.wait()


def bench(server: Server, core: str, load: list[str], procs: int = 1) -> dict:
    """
    Run one wsserver-bench load against C{server} (its clients spread over
    C{procs} processes); its JSON summary with the CPU use of both sides
    added (the bench's summed over its processes).
    """
    argv = ["taskset", "-c", core, sys.executable, "-m", "wsserver.bench", *load, "--url", server.url, "--json"]
    if procs > 1:
        argv += ["--procs", str(procs)]
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
    serverUsed = cpuSeconds(server.proc.pid) - serverBefore
    result["server_cpu"] = round(serverUsed / wall, 2)
    result["bench_cpu"] = round((_childrenCPU() - childrenBefore) / wall, 2)
    # the server's CPU per delivered message: steadier than the rates on a
    # shared machine
    result["server_us_per_msg"] = round(serverUsed / max(1, result["received"]) * 1e6, 2)
    return result


def _childrenCPU() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(kind: str, load: list[str], repeat: int, config: dict | None, serverCore: str, benchCore: str,
            baselinePython: str | None = None, baselineTree: str | None = None, procs: int = 1) -> list[dict]:
    """
    Run C{load} C{repeat} times against a new server of C{kind} each time
    (C{"relay"}, C{"wsserver"}: this build, C{"baseline"}: the build of
    C{baselineTree} run by C{baselinePython}).
    """
    results = []
    for _ in range(repeat):
        if kind == "baseline":
            server = Server(kind, serverCore, config, baselinePython, baselineTree)
        else:
            server = Server(kind, serverCore, config)
        try:
            time.sleep(0.5)
            results.append(bench(server, benchCore, load, procs))
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


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def table(figures: dict[str, dict[str, list[dict]]], connections: str, baseline: bool) -> list[tuple[str, ...]]:
    """
    The rows of the summary: each figure's median for wsserver, the
    baseline build (when measured) and the relay, the ratios, the goal and
    whether it is met.
    """
    rows: list[tuple[str, ...]] = []

    def row(target: str, figure: str, path: str, load: str, goal: str,
            met: Callable[[float, float | None, float], bool], relayLoad: str | None = None) -> None:
        sides = figures[load]
        ours = median(sides["wsserver"], path)
        base = median(sides["baseline"], path) if baseline else None
        relaySides = figures.get(relayLoad or load, sides)
        theirs = median(relaySides["relay"], path)
        cells = [target, figure, f"{ours:,.2f}"]
        if baseline:
            cells += [f"{base:,.2f}", ratio(ours, base)]
        cells += [f"{theirs:,.2f}", ratio(ours, theirs), goal, "yes" if met(ours, base, theirs) else "NO"]
        rows.append(tuple(cells))

    f = figures
    if "throughput" in f:
        row("throughput, 50 pairs, 3.3 KB", "delivered msg/s", "delivered_per_s", "throughput",
            ">= 1.1x base, >= 2.2x relay" if baseline else ">= 2.2x relay",
            lambda o, b, r: o >= 2.2 * r and (b is None or o >= 1.1 * b))
        row("throughput, 50 pairs, 3.3 KB", "server CPU us/msg", "server_us_per_msg", "throughput", "-",
            lambda o, b, r: True)
    if "fanout" in f:
        row("fan-out to 100", "delivered msg/s", "delivered_per_s", "fanout",
            ">= 1.0x base" if baseline else ">= 1.0x relay", lambda o, b, r: o >= (b if b is not None else r))
    if "latency" in f:
        row("latency at 2,000 msg/s", "p99 ms", "latency_ms.p99", "latency", "<= 1 ms", lambda o, b, r: o <= 1.0)
    if "connections" in f:
        row(f"{connections} idle connections", "server KiB/conn", "server_kib_per_connection", "connections",
            "<= 7 KiB", lambda o, b, r: o <= 7.0)
        row(f"{connections} idle connections", "connects/s", "connects_per_s", "connections", ">= 0.9x relay",
            lambda o, b, r: o >= 0.9 * r)
    if "features" in f:
        row("watchdog+status+send-back", "delivered msg/s", "delivered_per_s", "features", ">= 0.8x relay",
            lambda o, b, r: o >= 0.8 * r)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10", help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", default="10000")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--bench-core", default="1", help="the bench's cores (taskset list, e.g. 1 or 0,1)")
    parser.add_argument("--procs", type=int, default=1,
                        help="wsserver-bench processes per load (its --procs), so the client is not the limit")
    parser.add_argument("--only", help="comma-separated loads: throughput,fanout,latency,connections,features")
    parser.add_argument("--baseline-tree", metavar="DIR",
                        help="the source tree of an older build, measured as a third side (first on its path)")
    parser.add_argument("--baseline-python", metavar="PY",
                        help="the interpreter of the older build (its own venv; this one's by default)")
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
    baseline = bool(args.baseline_tree or args.baseline_python)
    sides = ("relay", "baseline", "wsserver") if baseline else ("relay", "wsserver")
    only = set(args.only.split(",")) if args.only else set(loads)
    figures: dict[str, dict[str, list[dict]]] = {}
    for name, (load, config) in loads.items():
        if name not in only:
            continue
        figures[name] = {kind: [] for kind in sides}
        for _ in range(args.repeat):
            # every round runs each side once, so a change in the machine's
            # load falls on all of them
            for kind in sides:
                r = measure(kind, load, 1, None if kind == "relay" else config, args.server_core,
                            args.bench_core, args.baseline_python, args.baseline_tree, args.procs)
                figures[name][kind] += r
                print(f"{name:<12} {kind:<9} {json.dumps(r[0])}", file=sys.stderr, flush=True)

    rows = table(figures, args.connections, baseline)
    headers = ("target", "figure", "wsserver") + (("baseline", "vs base") if baseline else ()) + (
        "relay", "vs relay", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    for r in [headers] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"figures": figures, "table": rows}, out, indent=1)


if __name__ == "__main__":
    main()
