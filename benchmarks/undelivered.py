"""
Does the SQLite undelivered queue keep up with routing, and is what waits
to be written bounded?

Two loads against one wsserver process (on one core; the clients on the
other), each run on this checkout and on a baseline source tree given with
--baseline (e.g. ``git archive main | tar -x -C /tmp/main``), in the same
run:

  - stream: one sender sends --size-character messages as fast as the
    server reads them, each to one online and one offline user, for
    --duration seconds; routed/s is what the online user received, and
    persisted/s what the offline user's queue holds (read from the data
    file) when the sending stops.  persisted/routed is the share of the
    routed messages that a kill -9 at that moment would keep.
  - flood: the sender sends --flood messages to one offline user only;
    the peak RSS of the server (sampled every 20 ms) and the time until
    every message is in the data file.

    python benchmarks/undelivered.py [--duration 10] [--flood 200000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil
from websocket import create_connection

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
TWISTD = "from twisted.scripts.twistd import run; run()"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """
    C{twistd wsserver} from C{source}, on core 0, with the sqlite queue on.
    """

    def __init__(self, source: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="wsserver-queue-bench-")
        self.port = freePort()
        config = {
            "server": {"dataDir": os.path.join(self.dir, "data"),
                       "limits": {"maxConnectionsPerIp": 0, "messagesPerSecond": 0}},
            "chat": {"enableUndeliveredQueue": True,
                     "undelivered": {"storage": "sqlite", "maxPerUser": 10_000_000}},
            "restApi": {"enabled": False},
        }
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        env = dict(os.environ, PYTHONPATH=source)
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

    def stop(self) -> None:
        # measured already: what the old code still holds would take long
        self.proc.kill()
        self.proc.wait(30)


def message(i: int, recipients: list[int], size: int) -> str:
    return json.dumps({"type": "text", "text": "x" * size, "recipients": recipients, "data": i})


def _receive(url: str, received: Any, stop: Any) -> None:
    """
    The online user, in a process of its own (not sharing the sender's GIL):
    counts the server's (unmasked) frames straight off the socket, so that
    it reads faster than the server writes.
    """
    online = create_connection(url)
    sock = online.sock
    sock.settimeout(1)
    buffer = b""
    count = 0
    while not stop.is_set():
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
            at += head + length
            count += 1
        buffer = buffer[at:]
        received.value = count


def stream(source: str, duration: float, size: int) -> dict[str, float]:
    server = Server(source)
    try:
        received = multiprocessing.Value("q", 0, lock=False)
        stop = multiprocessing.Event()
        reader = multiprocessing.Process(target=_receive, args=(server.url(2), received, stop), daemon=True)
        reader.start()
        time.sleep(1)
        sender = create_connection(server.url(1))
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < duration:
            sender.send(message(i, [2, 3], size))
            i += 1
        elapsed = time.monotonic() - start
        routed = received.value
        persisted = server.stored()
        stop.set()
        reader.join(5)
        return {"sent/s": i / elapsed, "routed/s": routed / elapsed, "persisted/s": persisted / elapsed,
                "persisted/routed": persisted / max(routed, 1)}
    finally:
        server.stop()


def flood(source: str, count: int, size: int) -> dict[str, float]:
    server = Server(source)
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
        return {"peak RSS MB": peak[0] / 1e6, "sent in s": sent, "all stored in s": stored}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--flood", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--baseline", help="a source tree to compare with (the same loads, same run)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    trees = {"this checkout": SOURCE}
    if args.baseline:
        trees = {"baseline": args.baseline, **trees}
    results = {}
    for name, source in trees.items():
        results[name] = {**stream(source, args.duration, args.size), **flood(source, args.flood, args.size)}
    keys = list(next(iter(results.values())))
    print(f"{'':28}" + "".join(f"{name:>16}" for name in results))
    for key in keys:
        print(f"{key:28}" + "".join(f"{r[key]:16.2f}" for r in results.values()))


if __name__ == "__main__":
    main()
