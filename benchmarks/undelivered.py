"""
Does the SQLite undelivered queue keep up with routing, and is what waits
to be written bounded?

Two loads against one wsserver process (on one core; the clients on the
other), each run on this checkout and on a baseline source tree given with
--baseline (e.g. ``git archive main | tar -x -C /tmp/main``), in the same
run, and on this checkout with other C{chat.undelivered} settings given with
--variant (``"no age bound:maxPendingMillis=0"``):

  - stream: one sender sends --size-character messages as fast as the
    server reads them, each to one online and one offline user, for
    --duration seconds; routed/s is what the online user received, and
    persisted/s what the offline user's queue holds (read from the data
    file) when the sending stops.  persisted/routed is the share of the
    routed messages that a kill -9 at that moment would keep.  The sender
    runs niced, so that the receiver (on the same core) reads as soon as
    frames come: its backlog at the stop (the bytes in its socket that it
    had not read; -1: the server closed it as a slow consumer) says
    whether it kept up.  pauses: how many times the
    bound on what waits to be written stopped the senders (age: of them,
    for maxPendingMillis), read from the server process (a signal handler
    this script installs there); server CPU: its share of its core, and
    routed per CPU s the cost of a message where the box's other processes
    leave the server less than its core.
  - flood: the sender sends --flood messages to one offline user only;
    the peak RSS of the server (sampled every 20 ms) and the time until
    every message is in the data file.

    python benchmarks/undelivered.py [--duration 10] [--flood 200000] [--baseline DIR] [--variant NAME:K=V,...]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import Any

import psutil
from websocket import create_connection

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
#: twistd, after counting the pauses of every L{PendingWrites} (and those
#: for its age, where it has one) and dumping them and the messages
#: delivered to live connections to the file named by
#: C{$WSSERVER_BENCH_PAUSES} on SIGUSR2
TWISTD = """
import json, os, signal
from wsserver.queue import pending

from wsserver import metrics

made = []
counters = []
init = pending.PendingWrites.__init__
countersInit = metrics.Counters.__init__

def keepCounters(self):
    countersInit(self)
    counters.append(self)

metrics.Counters.__init__ = keepCounters

def __init__(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.agePauses = 0
    made.append(self)

pending.PendingWrites.__init__ = __init__
mark = getattr(pending.PendingWrites, "_mark", None)
if mark is not None:
    def _mark(self, now):
        late = self.late
        mark(self, now)
        if self.late and not late:
            self.agePauses += 1
    pending.PendingWrites._mark = _mark

def dump(signum, frame):
    path = os.environ["WSSERVER_BENCH_PAUSES"]
    with open(path + ".tmp", "w") as f:
        json.dump({"pauses": sum(p.pauses for p in made), "age": sum(p.agePauses for p in made),
                   "delivered": sum(c.delivered for c in counters)}, f)
    os.rename(path + ".tmp", path)

signal.signal(signal.SIGUSR2, dump)
from twisted.scripts.twistd import run
run()
"""


def cpuSeconds(pid: int) -> float:
    """
    User + system CPU seconds of a process so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """
    C{twistd wsserver} from C{source}, on core 0, with the sqlite queue on
    (and C{undelivered}'s settings).
    """

    def __init__(self, source: str, undelivered: dict[str, Any]) -> None:
        self.dir = tempfile.mkdtemp(prefix="wsserver-queue-bench-")
        self.port = freePort()
        config = {
            "server": {"dataDir": os.path.join(self.dir, "data"),
                       # a receiver that the other processes of this machine
                       # hold up a moment is not closed as a slow consumer
                       "limits": {"maxConnectionsPerIp": 0, "messagesPerSecond": 0,
                                  "sendBufferBytes": 256 * 1024 * 1024}},
            "chat": {"enableUndeliveredQueue": True,
                     "undelivered": {"storage": "sqlite", "maxPerUser": 10_000_000, **undelivered}},
            "restApi": {"enabled": False},
        }
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.pausesFile = os.path.join(self.dir, "pauses.json")
        env = dict(os.environ, PYTHONPATH=source, WSSERVER_BENCH_PAUSES=self.pausesFile)
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", "wsserver",
             "-C", path, "--ws", f"tcp:{self.port}:interface=127.0.0.1"],
            cwd=self.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b"WebSocket listening" in line:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.database = os.path.join(self.dir, "data", "wsserver.sqlite3")

    def url(self, userId: int) -> str:
        return f"ws://127.0.0.1:{self.port}/chat?id={userId}"

    def stored(self) -> int:
        for name in os.listdir(os.path.dirname(self.database)):
            if name.endswith(".sqlite3") or name.endswith(".db"):
                self.database = os.path.join(os.path.dirname(self.database), name)
                break
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM undelivered WHERE user = 3").fetchone()[0])
        finally:
            connection.close()

    def pauses(self, persisted: bool = False) -> dict[str, int]:
        """
        The pauses of the server's bounds so far, and the messages it
        delivered live; with C{persisted}, also what the data file holds for
        the offline user, read as soon as the server was signalled.
        """
        if os.path.exists(self.pausesFile):
            os.unlink(self.pausesFile)
        # os.kill: the sender's process, a fork, cannot use self.proc's
        os.kill(self.proc.pid, signal.SIGUSR2)
        stored = {"persisted": self.stored()} if persisted else {}
        deadline = time.monotonic() + 30
        while not os.path.exists(self.pausesFile) and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(self.pausesFile) as f:
            return {**json.load(f), **stored}

    def stop(self) -> None:
        # measured already: what the old code still holds would take long
        self.proc.kill()
        self.proc.wait(30)


def message(i: int, recipients: list[int], size: int) -> str:
    return json.dumps({"type": "text", "text": "x" * size, "recipients": recipients, "data": i})


def _receive(url: str, received: Any, backlog: Any, snap: Any, stop: Any) -> None:
    """
    The online user, in a process of its own (not sharing the sender's GIL):
    counts the server's (unmasked) frames straight off the socket, so that
    it reads faster than the server writes.  Once C{snap} is set, the bytes
    it had not read yet go to C{backlog}; a close frame (the server closing
    a slow consumer: it did not keep up) makes it -1.
    """
    # a large receive buffer: room for what comes while it is held up
    online = create_connection(url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20),))
    sock = online.sock
    sock.settimeout(1)
    buffer = b""
    count = 0
    snapped = False
    while not stop.is_set():
        if not snapped and snap.is_set() and backlog.value >= 0:
            snapped = True
            backlog.value = len(buffer) + int.from_bytes(
                fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        try:
            data = sock.recv(1 << 20)
        except OSError:
            continue
        if not data:
            return
        buffer += data
        at = 0
        while len(buffer) - at >= 2:
            length = buffer[at + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                length = int.from_bytes(buffer[at + 2:at + 4], "big")
                head = 4
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                length = int.from_bytes(buffer[at + 2:at + 10], "big")
                head = 10
            if len(buffer) - at < head + length:
                break
            if buffer[at] & 0x0F == 8:
                backlog.value = -1
                return
            at += head + length
            count += 1
        buffer = buffer[at:]
        received.value = count


def _send(url: str, duration: float, size: int, server: Server, received: Any, snap: Any, out: Any) -> None:
    """
    The sender, niced below the receiver: streams to users 2 and 3 for
    C{duration} seconds, then asks the server at once what it routed, and
    reads what is persisted.
    """
    os.nice(10)
    sender = create_connection(url)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < duration:
        sender.send(message(i, [2, 3], size))
        i += 1
    elapsed = time.monotonic() - start
    snap.set()
    out.put({"sent": i, "elapsed": elapsed, "received": received.value, **server.pauses(persisted=True)})


def stream(source: str, duration: float, size: int, undelivered: dict[str, Any]) -> dict[str, float]:
    server = Server(source, undelivered)
    try:
        received = multiprocessing.Value("q", 0, lock=False)
        backlog = multiprocessing.Value("q", 0, lock=False)
        snap = multiprocessing.Event()
        stop = multiprocessing.Event()
        reader = multiprocessing.Process(target=_receive, args=(server.url(2), received, backlog, snap, stop),
                                         daemon=True)
        reader.start()
        time.sleep(1)
        out: Any = multiprocessing.Queue()
        before = cpuSeconds(server.proc.pid)
        sender = multiprocessing.Process(target=_send, args=(server.url(1), duration, size, server, received, snap,
                                                             out))
        sender.start()
        r = out.get(timeout=duration + 60)
        sender.join()
        elapsed = r["elapsed"]
        cpu = (cpuSeconds(server.proc.pid) - before) / elapsed
        time.sleep(0.2)
        stop.set()
        reader.join(5)
        return {"sent/s": r["sent"] / elapsed, "routed/s": r["delivered"] / elapsed,
                "received/s": r["received"] / elapsed, "persisted/s": r["persisted"] / elapsed,
                "persisted/routed": r["persisted"] / max(r["delivered"], 1),
                "receiver backlog KB": backlog.value / 1024 if backlog.value >= 0 else -1,
                "server CPU %": 100 * cpu, "routed per CPU s": r["delivered"] / max(cpu * elapsed, 1e-9),
                "pauses": r["pauses"], "age pauses": r["age"]}
    finally:
        server.stop()


def flood(source: str, count: int, size: int, undelivered: dict[str, Any]) -> dict[str, float]:
    server = Server(source, undelivered)
    try:
        process = psutil.Process(server.proc.pid)
        peak = [process.memory_info().rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], process.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sender = create_connection(server.url(1))
        start = time.monotonic()
        text = message(0, [3], size)
        for _ in range(count):
            sender.send(text)
        sent = time.monotonic() - start
        while server.stored() < count and time.monotonic() - start < 600:
            time.sleep(0.1)
        stored = time.monotonic() - start
        stop.set()
        sampler.join()
        pauses = server.pauses()
        return {"peak RSS MB": peak[0] / 1e6, "sent in s": sent, "all stored in s": stored,
                "flood pauses": pauses["pauses"], "flood age pauses": pauses["age"]}
    finally:
        server.stop()


def variant(text: str) -> tuple[str, dict[str, Any]]:
    """
    C{"NAME:key=value,..."}: a name and C{chat.undelivered} settings (JSON
    values).
    """
    name, _, pairs = text.partition(":")
    settings = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        settings[key] = json.loads(value)
    return name, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--flood", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--baseline", help="a source tree to compare with (the same loads, same run)")
    parser.add_argument("--variant", action="append", default=[], type=variant,
                        help='this checkout with other chat.undelivered settings: "NAME:key=value,key=value"')
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    trees: dict[str, tuple[str, dict[str, Any]]] = {"this checkout": (SOURCE, {})}
    if args.baseline:
        trees = {"baseline": (args.baseline, {}), **trees}
    for name, settings in args.variant:
        # the same code as "this checkout": the figures compare settings
        trees[name] = (SOURCE, settings)
    results = {}
    for name, (source, settings) in trees.items():
        results[name] = {**stream(source, args.duration, args.size, settings),
                         **flood(source, args.flood, args.size, settings)}
    keys = list(next(iter(results.values())))
    print(f"{'':28}" + "".join(f"{name[:15]:>16}" for name in results))
    for key in keys:
        print(f"{key:28}" + "".join(f"{r[key]:16.2f}" for r in results.values()))


if __name__ == "__main__":
    main()
