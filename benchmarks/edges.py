"""
Three of issue 15's edge cases, measured from outside -- a real server
process, real clients -- on an older build ("before") and on this tree
("after"), side by side:

  1. pre-auth bytes: a remote auth check that answers slowly (a local HTTP
     responder that waits --auth-delay seconds, then 200), default limits;
     200 clients each send one 10 MB message as soon as the handshake's 101
     is read (both builds answer the handshake at once and check auth after
     it), once whole, once as 1 MB fragments: the server's peak RSS (VmRSS
     polled every 50 ms) and how each client was closed;
  2. pongs: one client that sends 125-byte pings as fast as it can and never
     reads, for --pong-seconds: the server's RSS growth and whether (and
     when, from the server's log) it was closed;
  3. log flood: --refusals handshakes with ?id=0, reserved for the server (both builds
     complete the handshake and close with 4000): the lines the server wrote
     to its log during the burst.

    nice python benchmarks/edges.py --before-tree /work/wt/a85 \\
        --before-python /work/venv-a85/bin/python [--repeat 1] [--only preauth,pongs,logflood]

The clients write raw frames (a few lines below, L{frameHeader}): Autobahn's
client cannot ping without reading, and writing one 10 MB payload to 200
sockets must not cost 200 masked copies.  The masking key is zero, which
RFC 6455 allows (a server cannot tell a key from a random one), so the
payload is sent as it is, from one buffer.  The server is pinned to one
core (--server-core), the clients to the other.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import re
import selectors
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server  # noqa: E402

MB = 1000 * 1000
#: the zero masking key: payload bytes are sent as they are
ZERO_KEY = b"\0\0\0\0"


def frameHeader(opcode: int, length: int, fin: bool = True) -> bytes:
    """
    The header of a masked client frame (RFC 6455 section 5.2) with the zero
    masking key, so that the payload follows unchanged.
    """
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + ZERO_KEY
    if length < 1 << 16:
        return struct.pack("!BBH", first, 0x80 | 126, length) + ZERO_KEY
    return struct.pack("!BBQ", first, 0x80 | 127, length) + ZERO_KEY


def upgradeRequest(port: int, query: str, headers: dict[str, str] | None = None) -> bytes:
    """
    A WebSocket opening handshake request for C{/chat?QUERY}.
    """
    lines = [f"GET /chat?{query} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closeCode(data: bytes) -> int | None:
    """
    The code of the first close frame in C{data}, server frames (unmasked)
    read one after the other; L{None} if there is none (yet).
    """
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            if i + 2 > len(data):
                return None
            length = struct.unpack_from("!H", data, i)[0]
            i += 2
        elif length == 127:
            if i + 8 > len(data):
                return None
            length = struct.unpack_from("!Q", data, i)[0]
            i += 8
        if opcode == 8:
            if i + min(length, 2) > len(data):
                return None
            return struct.unpack_from("!H", data, i)[0] if length >= 2 else 1005
        i += length
    return None


class RSSPoller(threading.Thread):
    """
    Poll a process's VmRSS every 50 ms: its samples as (seconds, MB).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.started = time.monotonic()

    def rss(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MB
        return 0.0

    def sample(self) -> None:
        self.samples.append((time.monotonic() - self.started, self.rss()))

    def run(self) -> None:
        try:
            self.sample()
            while not self.stopped.wait(0.05):
                self.sample()
        except OSError:
            return

    def stop(self) -> list[tuple[float, float]]:
        self.stopped.set()
        self.join()
        self.sample()
        return self.samples


class SlowAuth(BaseHTTPRequestHandler):
    """
    A remote auth service that answers every check with 200 after a delay.
    """

    delay = 10.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:
            pass  # the server gave up on this check (its client is gone)

    def log_message(self, *args) -> None:
        pass


class Client:
    """
    One raw connection: the handshake, then C{frames} (header and payload
    pairs) written while whatever arrives is read, until a close frame,
    the end of the connection or a reset.
    """

    def __init__(self, port: int, query: str, headers: dict[str, str], frames: list[bytes | memoryview]) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.out = [memoryview(upgradeRequest(port, query, headers))]
        self.frames = frames
        self.upgraded = False
        self.data = b""
        self.outcome: str | None = None

    def writable(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out[0])
            except BlockingIOError:
                return
            except OSError as e:
                self.finish("reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else e.strerror)
                return
            if sent == len(self.out[0]):
                self.out.pop(0)
            else:
                self.out[0] = self.out[0][sent:]
                return

    def readable(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.finish("reset" if e.errno == errno.ECONNRESET else e.strerror)
            return
        if not chunk:
            code = closeCode(self.data) if self.upgraded else None
            self.finish(str(code) if code else "closed without a close frame")
            return
        self.data += chunk
        if not self.upgraded:
            head, sep, rest = self.data.partition(b"\r\n\r\n")
            if not sep:
                return
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status:
                self.finish("HTTP " + status.split()[1].decode())
                return
            self.upgraded = True
            self.data = rest
            self.out += [memoryview(f) for f in self.frames]
        code = closeCode(self.data)
        if code is not None:
            self.finish(str(code))

    def finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.sock.close()


def runClients(clients: list[Client], deadline: float, concurrency: int = 0, more: list | None = None) -> None:
    """
    Drive C{clients} until each is done or C{deadline} (monotonic) passes;
    those left are counted as C{"open"}.  With C{concurrency}, at most that
    many at once, the next started from C{more} (a list of functions that
    make a L{Client}) as one ends.
    """
    selector = selectors.DefaultSelector()
    live = {}

    def add(client: Client) -> None:
        live[client.sock.fileno()] = client
        selector.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    for c in clients:
        add(c)
    while live and time.monotonic() < deadline:
        for key, events in selector.select(0.1):
            client = key.data
            if events & selectors.EVENT_READ and client.outcome is None:
                client.readable()
            if client.out and client.outcome is None:
                client.writable()
            if client.outcome is None:
                # write while there is something to write (the frames come
                # once the 101 is read)
                mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
                if key.events != mask:
                    selector.modify(client.sock, mask, client)
            if client.outcome is not None:
                selector.unregister(key.fileobj)
                del live[key.fd]
                if more:
                    new = more.pop()()
                    clients.append(new)
                    add(new)
    for client in live.values():
        client.outcome = "open"
        selector.unregister(client.sock)
        client.sock.close()
    selector.close()


class Sides:
    """
    The two builds, each started as compare.py's L{Server}.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def start(self, side: str, config: dict, log: str | None = None) -> Server:
        config = {**config, "server": {**config.get("server", {}), "dataDir": tempfile.mkdtemp()}}
        if side == "before":
            return Server("wsserver", self.args.server_core, config, self.args.before_python,
                          self.args.before_tree, log=log)
        return Server("wsserver", self.args.server_core, config, log=log)


def preAuth(sides: Sides, side: str, fragmented: bool, args: argparse.Namespace) -> dict:
    """
    Case 1: 200 clients, one 10 MB message each while the auth check waits.
    """
    SlowAuth.delay = args.auth_delay
    responder = ThreadingHTTPServer(("127.0.0.1", 0), SlowAuth)
    responder.daemon_threads = True
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    config = {"server": {"auth": {"type": "remote", "url": f"http://127.0.0.1:{responder.server_port}/check",
                                  "source": {"type": "bearer"}}}}
    log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
    server = sides.start(side, config, log=log)
    payload = memoryview(b"x" * (10 * MB))
    if fragmented:
        frames: list[bytes | memoryview] = []
        for i in range(10):
            frames += [frameHeader(1 if i == 0 else 0, MB, fin=i == 9), payload[i * MB:(i + 1) * MB]]
    else:
        frames = [frameHeader(1, len(payload)), payload]
    try:
        poller = RSSPoller(server.proc.pid)
        idle = poller.rss()
        poller.start()
        started = time.monotonic()
        clients = [Client(server.port, f"id={i + 1}", {"Authorization": "Bearer t"}, frames)
                   for i in range(args.clients)]
        runClients(clients, started + args.auth_delay + 20)
        samples = poller.stop()
    finally:
        server.stop()
        responder.shutdown()
        responder.server_close()
    with open(log, "rb") as f:
        # why a check failed (one line each before; held to one a second after)
        timeouts = sum(1 for line in f if b"remote auth" in line and b"no answer within" in line)
    os.unlink(log)
    peak = max(samples, key=lambda s: s[1])
    return {"idle_mb": round(idle, 1), "peak_mb": round(peak[1], 1), "peak_at_s": round(peak[0], 1),
            "closes": dict(collections.Counter(c.outcome for c in clients).most_common()),
            "auth_timeouts_logged": timeouts}


LOGTIME = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


def pongs(sides: Sides, side: str, args: argparse.Namespace) -> dict:
    """
    Case 2: pings as fast as they go, nothing read, for C{--pong-seconds}.
    """
    log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
    server = sides.start(side, {}, log=log)
    pings = frameHeader(9, 125) + b"p" * 125
    batch = memoryview(pings * (65536 // len(pings)))
    sock = socket.socket()
    # a small receive buffer: the pongs pile up in the server, not here
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(upgradeRequest(server.port, "id=1"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    sock.settimeout(0.2)
    sent = 0
    failed = None
    stalled = 0.0
    try:
        poller = RSSPoller(server.proc.pid)
        poller.start()
        started = time.monotonic()
        wallStart = time.time()
        while time.monotonic() - started < args.pong_seconds:
            try:
                sent += sock.send(batch)
            except socket.timeout:
                stalled += 0.2
            except OSError as e:
                failed = (e.strerror, round(time.monotonic() - started, 1))
                break
        samples = poller.stop()
        # what arrived: the pongs, then the close frame if there is one
        data = b""
        sock.settimeout(2)
        try:
            while len(data) < 64 * MB:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        sock.close()
        time.sleep(0.5)
    finally:
        server.stop()
    closedAt = None
    with open(log, "rb") as f:
        for line in f:
            if b"slow consumer" in line:
                stamp = LOGTIME.match(line)
                if stamp:
                    # twistd stamps lines in local time, to the second
                    when = time.mktime(time.strptime(stamp.group(1).decode(), "%Y-%m-%dT%H:%M:%S"))
                    closedAt = round(when - wallStart)
                break
    os.unlink(log)
    start, end = samples[0][1], max(s[1] for s in samples)
    return {"pings_sent": sent // len(pings), "rss_start_mb": round(start, 1), "rss_peak_mb": round(end, 1),
            "growth_mb_per_s": round((end - start) / args.pong_seconds, 2), "send_failed": failed,
            "send_stalled_s": round(stalled, 1), "close_code_read": closeCode(data),
            "server_logged_close_after_s": closedAt}


def logFlood(sides: Sides, side: str, args: argparse.Namespace) -> dict:
    """
    Case 3: C{--refusals} handshakes with the reserved id 0, 100 at a time.
    """
    log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
    server = sides.start(side, {}, log=log)
    try:
        time.sleep(0.5)
        before = _lines(log)
        started = time.monotonic()
        makers = [lambda: Client(server.port, "id=0", {}, []) for _ in range(args.refusals)]
        clients: list[Client] = []
        initial = [makers.pop()() for _ in range(min(100, len(makers)))]
        clients += initial
        runClients(clients, started + 60, more=makers)
        took = time.monotonic() - started
        # held-back counts are written with the next line after a second
        time.sleep(1.5)
        lines = _lines(log) - before
    finally:
        server.stop()
        os.unlink(log)
    return {"handshakes": len(clients), "burst_s": round(took, 1), "log_lines": lines,
            "closes": dict(collections.Counter(c.outcome for c in clients).most_common())}


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-tree", required=True, metavar="DIR", help="the older build's source tree")
    parser.add_argument("--before-python", required=True, metavar="PY", help="the older build's interpreter")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", default="preauth,pongs,logflood")
    parser.add_argument("--clients", type=int, default=200, help="case 1's clients")
    parser.add_argument("--auth-delay", type=float, default=8.0,
                        help="seconds the auth service waits (under both builds' 10 s timeouts)")
    parser.add_argument("--pong-seconds", type=float, default=10.0)
    parser.add_argument("--refusals", type=int, default=5000)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--client-core", default="1")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(args.client_core)})
    sides = Sides(args)
    only = args.only.split(",")
    cases = []
    if "preauth" in only:
        cases += [("pre-auth, whole 10 MB", lambda side: preAuth(sides, side, False, args)),
                  ("pre-auth, 1 MB fragments", lambda side: preAuth(sides, side, True, args))]
    if "pongs" in only:
        cases.append(("pongs, never read", lambda side: pongs(sides, side, args)))
    if "logflood" in only:
        cases.append((f"log flood, {args.refusals} refused", lambda side: logFlood(sides, side, args)))
    figures: dict[str, dict[str, list[dict]]] = {}
    for _ in range(args.repeat):
        for name, run in cases:
            for side in ("before", "after"):
                result = run(side)
                figures.setdefault(name, {"before": [], "after": []})[side].append(result)
                print(f"{name} / {side}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(f"\n{'case':<28} {'figure':<26} {'before':>24} {'after':>24}")
    for name, sides_ in figures.items():
        for key in sides_["before"][0]:
            cells = []
            for side in ("before", "after"):
                values = [r[key] for r in sides_[side]]
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                    cells.append(f"{statistics.median(values):,.1f}" if len(values) > 1 else f"{values[0]:,}")
                else:
                    cells.append(" / ".join(json.dumps(v) for v in values))
            print(f"{name:<28} {key:<26} {cells[0]:>24} {cells[1]:>24}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
