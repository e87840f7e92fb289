"""
Profile a wsserver build under a wsserver-bench load: where the server's
time per message goes.

The server runs under cProfile (pinned to one core, the bench to the other,
as in compare.py); profiling is switched on once the clients are connected
(SIGUSR1) and off before the load ends (SIGUSR2, which writes the profile),
so that neither start-up nor the connects are in it.  The top entries are
printed by stage (the reactor, frames in, the connection, the message,
routing, frame out), by own time and by cumulative time, in microseconds
per message:
the profile's times divided by the calls of --per (Autobahn's
C{onMessageEnd} by default: once per message the server received).

    python benchmarks/serverprofile.py [--duration 10] [--top 25] [--out main.prof]
    python benchmarks/serverprofile.py --baseline-tree /tmp/old --baseline-python /tmp/venv-old/bin/python
    python benchmarks/serverprofile.py --relay

cProfile slows the server (every call is counted: about 2x), and more so
where there are many small calls; compare builds with the same tool, not
its figures with compare.py's.  With --load the bench arguments can be
changed (the default: the throughput load, 100 clients in pairs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import Server  # noqa: E402

#: the profiler, switched on by SIGUSR1 and off (written to the file named
#: by WSSERVER_PROFILE) by SIGUSR2; run before the server in its process
PROFILER = """
import cProfile, os, signal
profiler = cProfile.Profile()
def start(signum, frame):
    profiler.enable()
def stop(signum, frame):
    profiler.disable()
    profiler.dump_stats(os.environ["WSSERVER_PROFILE"])
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
"""


def profile(server: Server, load: list[str], core: str, warmup: float, duration: float) -> dict:
    """
    Run C{load} against C{server}, profiling it from C{warmup} seconds in
    for C{duration} seconds; the bench's JSON summary.
    """
    argv = ["taskset", "-c", core, sys.executable, "-m", "wsserver.bench", *load, "--url", server.url, "--json"]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup)
        server.proc.send_signal(signal.SIGUSR1)
        time.sleep(duration)
        server.proc.send_signal(signal.SIGUSR2)
        out, err = bench.communicate(timeout=600)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    if bench.returncode != 0:
        raise RuntimeError(f"bench failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def messagesIn(stats: pstats.Stats, per: str) -> int:
    """
    The calls of the functions named C{per} in C{stats}: the messages the
    profile covers.
    """
    return sum(nc for (_, _, name), (_, nc, _, _, _) in stats.stats.items() if name == per)  # type: ignore[attr-defined]


#: the stages of a message through the server, as L{stage} names them
STAGES = {
    "reactor": "reactor: epoll wait, reads, dispatch",
    "in": "frames in: Autobahn parsing, unmasking",
    "session": "connection: session, limits, back-pressure",
    "message": "message: parse, check, id, timestamp, JSON",
    "routing": "routing: plan, fan-out, status",
    "out": "frame out: framing, transport write, send",
    "other": "other",
}


def stage(file: str, line: int, name: str) -> str:
    """
    The stage (a key of L{STAGES}) of the function C{name} at C{file}:C{line}
    of a profile; the builtins are charged to their callers (L{stages}).
    """
    base = os.path.basename(file)
    if "autobahn" in file:
        if base == "protocol.py" and (name in ("sendPreparedMessage", "sendMessage", "sendData")
                                      or (name == "__init__" and line > 2700)):  # PreparedMessage
            return "out"
        return "in"
    if "twisted" in file:
        if base == "abstract.py" or name in ("writeSomeData", "doWrite", "startWriting", "stopWriting"):
            return "out"
        return "reactor"
    if "wsserver" in file:
        if "messages" in file:
            return "message"
        if "routing" in file:
            return "routing"
        if name == "prepareFrame":
            return "out"
        return "session"
    return "other"


def stages(stats: pstats.Stats) -> dict[str, float]:
    """
    The profile's own time by stage (L{STAGES}) in seconds; a builtin's
    time goes to its callers' stages in proportion to what each spent in
    it (epoll's wait is the reactor's, a socket send the frame out's).
    """
    out = dict.fromkeys(STAGES, 0.0)
    for (file, line, name), (_, _, tt, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if file != "~":
            out[stage(file, line, name)] += tt
        elif "select.epoll" in name:
            out["reactor"] += tt
        elif "_socket.socket" in name and "send" in name:
            out["out"] += tt
        else:
            total = sum(edge[2] for edge in callers.values()) or 1.0
            for caller, edge in callers.items():
                out[stage(*caller)] += tt * edge[2] / total
    return out


def report(path: str, per: str, top: int) -> str:
    """
    The top C{top} entries of the profile at C{path} by own and by
    cumulative time, in microseconds per message.
    """
    stats = pstats.Stats(path)
    messages = messagesIn(stats, per)
    total = stats.total_tt  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"{messages} messages ({per} calls) in {total:.2f} s profiled: "
              f"{total / max(1, messages) * 1e6:.2f} us per message\n")
    rows = []
    for (file, line, name), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{os.path.basename(file)}:{line}({name})" if line else name
        rows.append((tt, ct, nc, where))
    n = max(1, messages)
    out.write(f"\nby stage:\n{'us/msg':>7} {'share':>6}  stage\n")
    for key, seconds in stages(stats).items():
        out.write(f"{seconds / n * 1e6:7.1f} {seconds / max(total, 1e-9) * 100:5.0f}%  {STAGES[key]}\n")
    for title, key in (("own time", 0), ("cumulative time", 1)):
        out.write(f"\nby {title}:\n{'us/msg own':>11} {'us/msg cum':>11} {'calls/msg':>10}  function\n")
        for tt, ct, nc, where in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            n = max(1, messages)
            out.write(f"{tt / n * 1e6:11.2f} {ct / n * 1e6:11.2f} {nc / n:10.2f}  {where}\n")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds profiled")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of load before profiling starts")
    parser.add_argument("--load", help="wsserver-bench arguments (default: the throughput load)")
    parser.add_argument("--top", type=int, default=25, help="entries in each list")
    parser.add_argument("--per", default="onMessageEnd", help="the function called once per message")
    parser.add_argument("--out", help="keep the profile in this file (pstats format)")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--bench-core", default="1")
    parser.add_argument("--baseline-tree", metavar="DIR", help="profile the build of this source tree instead")
    parser.add_argument("--baseline-python", metavar="PY", help="the interpreter of that build")
    parser.add_argument("--relay", action="store_true", help="profile benchmarks/relay.py instead")
    parser.add_argument("--config", help="a wsserver config file (JSON) for the server")
    args = parser.parse_args()
    seconds = args.warmup + args.duration + 2
    load = args.load.split() if args.load else ["throughput", "--clients", "100"]
    load += ["--duration", str(seconds)]
    out = args.out or tempfile.NamedTemporaryFile(suffix=".prof", delete=False).name
    os.environ["WSSERVER_PROFILE"] = os.path.abspath(out)
    config = None
    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    if args.relay:
        server = Server("relay", args.server_core, preamble=PROFILER)
    elif args.baseline_tree or args.baseline_python:
        server = Server("baseline", args.server_core, config, args.baseline_python, args.baseline_tree, PROFILER)
    else:
        server = Server("wsserver", args.server_core, config, preamble=PROFILER)
    try:
        time.sleep(0.5)
        result = profile(server, load, args.bench_core, args.warmup, args.duration)
    finally:
        server.stop()
    print(f"bench: {result['delivered_per_s']:,.0f} msg/s delivered (under the profiler), "
          f"p99 {result['latency_ms']['p99']} ms")
    print(report(out, args.per, args.top))
    if not args.out:
        os.unlink(out)


if __name__ == "__main__":
    main()
