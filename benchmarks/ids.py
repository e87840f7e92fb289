"""
What do string user ids (chat.userIds) cost routing?

Runs the same wsserver-bench loads -- throughput (100 clients in 50 pairs,
3.3 KB messages, as fast as the server goes) and fan-out (one sender, 100
recipients per message) -- side by side in one run, the cases alternating
in each round:

  - "before": numeric ids against the code of another checkout (--before),
    or of a git revision (--rev, by default ``main``; the version before
    string ids is the first parent of their merge) exported to a temporary
    directory, the baseline;
  - "numeric ids": the same load against this checkout (``chat.userIds``
    "any", the default);
  - "numeric rule": this checkout with ``chat.userIds: "numeric"``;
  - "uuid ids": this checkout, every client a UUID (``--ids uuid``).

Server on one core, bench on the other; medians of --repeat runs, as ratios
to the baseline (numbers before and after) and to numeric ids (UUIDs), of
the delivered messages/s and of the server's CPU per delivered message
(steadier than the rates on a shared machine).

    python benchmarks/ids.py [--duration 10] [--repeat 3] [--before DIR | --rev REV]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402
from compare import median  # noqa: E402


def export(rev: str) -> str:
    """
    A snapshot of the git revision C{rev} in a temporary directory (removed
    at exit).
    """
    where = tempfile.mkdtemp(prefix="wsserver-before-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", where], input=archive.stdout, check=True)
    return where


def run(cases: dict[str, tuple[str, dict, list[str]]], loads: dict[str, list[str]], repeat: int,
        serverCore: str, benchCore: str) -> dict[tuple[str, str], list[dict]]:
    """
    Each case is C{(code, config, extra bench arguments)}: the server runs
    the code of the checkout C{code} (its C{PYTHONPATH}); the bench always
    this checkout's.
    """
    figures: dict[tuple[str, str], list[dict]] = {(name, kind): [] for name in cases for kind in loads}
    saved = os.environ.get("PYTHONPATH")
    try:
        for _ in range(repeat):
            for name, (code, config, extra) in cases.items():
                for kind, load in loads.items():
                    config = {**config, "server": {**config.get("server", {}), "dataDir": tempfile.mkdtemp()}}
                    os.environ["PYTHONPATH"] = code
                    server = compare.Server("wsserver", serverCore, config)
                    os.environ["PYTHONPATH"] = ROOT
                    try:
                        before = compare.cpuSeconds(server.proc.pid)
                        result = compare.bench(server, benchCore, load + extra)
                        used = compare.cpuSeconds(server.proc.pid) - before
                        result["server_us_per_msg"] = round(used / max(1, result["received"]) * 1e6, 2)
                    finally:
                        server.stop()
                        shutil.rmtree(config["server"]["dataDir"], ignore_errors=True)
                    figures[(name, kind)].append(result)
                    print(f"{name} / {kind}: {result['delivered_per_s']} msg/s server {result['server_cpu']} "
                          f"bench {result['bench_cpu']} server us/msg {result['server_us_per_msg']}",
                          file=sys.stderr, flush=True)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="10", help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", help="the checkout to compare with (default: --rev, exported)")
    parser.add_argument("--rev", default="main", help="the git revision to compare with (default: main)")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--bench-core", default="1")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    before = args.before or export(args.rev)
    d = args.duration
    loads = {"throughput": ["throughput", "--clients", "100", "--duration", d],
             "fanout": ["fanout", "--recipients", "100", "--duration", d]}
    cases = {
        "before": (before, {}, []),
        "numeric ids": (ROOT, {}, []),
        "numeric rule": (ROOT, {"chat": {"userIds": "numeric"}}, []),
        "uuid ids": (ROOT, {}, ["--ids", "uuid"]),
    }
    try:
        figures = run(cases, loads, args.repeat, args.server_core, args.bench_core)
    finally:
        if not args.before:
            shutil.rmtree(before, ignore_errors=True)
    rows = []
    for kind in loads:
        for name, baseline in (("numeric ids", "before"), ("numeric rule", "before"), ("uuid ids", "numeric ids")):
            rate, base = median(figures[(name, kind)], "delivered_per_s"), median(figures[(baseline, kind)], "delivered_per_s")
            cpu = median(figures[(name, kind)], "server_us_per_msg")
            baseCpu = median(figures[(baseline, kind)], "server_us_per_msg")
            rows.append((kind, name, baseline, f"{rate:,.0f}", f"{base:,.0f}", f"{rate / base:.3f}x",
                         f"{cpu:.2f}", f"{baseCpu:.2f}", f"{cpu / baseCpu:.3f}x"))
    headers = ("load", "case", "against", "msg/s", "baseline msg/s", "ratio", "server us/msg", "baseline us/msg",
               "ratio")
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    for r in [headers] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"figures": {f"{n} / {k}": v for (n, k), v in figures.items()}, "table": rows}, out, indent=1)


if __name__ == "__main__":
    main()
