"""
The server's CPU per delivered message of several source trees or git
revisions, side by side in one run: the throughput load (100 clients in
50 pairs, 3.3 KB messages, closed loop) and the fan-out load (one sender,
100 recipients), the trees alternating in each round (benchmarks/ids.py's
mechanism), medians of --repeat rounds as ratios to the first tree.  The
server's CPU per message (/proc) is steadier than the rates on a shared
machine.

    python benchmarks/trees.py ee63dd5 . [--repeat 3] [--duration 8] [--only throughput]

A tree is a directory, or a git revision (exported to a temporary
directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ids  # noqa: E402
from compare import median  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="directories or git revisions, the baseline first")
    parser.add_argument("--duration", default="8", help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="throughput,fanout", help="comma-separated loads: throughput,fanout")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--bench-core", default="1")
    args = parser.parse_args()
    d = args.duration
    loads = {"throughput": ["throughput", "--clients", "100", "--duration", d],
             "fanout": ["fanout", "--recipients", "100", "--duration", d]}
    loads = {k: v for k, v in loads.items() if k in args.only.split(",")}
    exported = []
    cases = {}
    for tree in args.trees:
        if os.path.isdir(tree):
            cases[tree] = (os.path.abspath(tree), {}, [])
        else:
            where = ids.export(tree)
            exported.append(where)
            cases[tree] = (where, {}, [])
    try:
        figures = ids.run(cases, loads, args.repeat, args.server_core, args.bench_core)
    finally:
        for where in exported:
            shutil.rmtree(where, ignore_errors=True)
    base = args.trees[0]
    print(f"{'load':<11} {'tree':<30} {'server us/msg':>14} {'ratio':>7} {'msg/s':>9}  rounds (us/msg)")
    for kind in loads:
        baseCpu = median(figures[(base, kind)], "server_us_per_msg")
        for tree in args.trees:
            cpu = median(figures[(tree, kind)], "server_us_per_msg")
            rate = median(figures[(tree, kind)], "delivered_per_s")
            rounds = " ".join(f"{r['server_us_per_msg']:.2f}" for r in figures[(tree, kind)])
            print(f"{kind:<11} {tree:<30} {cpu:>14.2f} {cpu / baseCpu:>6.3f}x {rate:>9,.0f}  {rounds}")


if __name__ == "__main__":
    main()
