"""
End-to-end: a flood of connections from one address against a server whose
open files limit is small (SPEC section 8): C{maxConnections} is fitted to
the limit less a reserve, so the REST API still answers its next request
while the WebSocket port is flooded.
"""

from __future__ import annotations

import re
import shutil
import socket
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from .support import ServerProcess, spawnServer

#: the open files limit the server runs under
OPEN_FILES = 400
#: connections the flood opens: more than the server's whole limit
FLOOD = 600


class FileDescriptorFloodTests(TestCase):
    """
    A server under C{prlimit --nofile}: a flood above its open files limit.
    """

    timeout = 60

    def spawn(self) -> ServerProcess:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise SkipTest("needs prlimit (util-linux) to start the server with a small open files limit")
        return spawnServer(self, "--ws", "tcp:0:interface=127.0.0.1:backlog=1024", "--rest",
                           "tcp:0:interface=127.0.0.1", prefix=[prlimit, f"--nofile={OPEN_FILES}:{OPEN_FILES}", "--"])

    @inlineCallbacks
    def test_restAnswersDuringFlood(self) -> Any:
        """
        With 600 connections open to the WebSocket port of a server allowed
        400 open files (none of them sending a handshake), the REST API
        answers C{/health} at once: past C{maxConnections} (200) and a
        quarter of the files kept apart, the WebSocket port closes what it
        accepts, so it never reaches C{EMFILE}; and the refusals wrote a
        handful of lines, not one each.
        """
        process = self.spawn()
        ws = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+)")
        self.assertIn(b"server.limits.maxConnections: 200: the open files limit is 400", process.output)
        sockets = []
        self.addCleanup(lambda: [s.close() for s in sockets])
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", int(ws.group(1))))
            sockets.append(s)
        # let the server's reactor take what it will of the flood
        yield deferLater(reactor, 1.0, lambda: None)
        before = process.output.count(b"\n")
        # (before the accept ceiling: EMFILE, and this request was dropped unanswered)
        response = yield treq.get(f"http://127.0.0.1:{int(rest.group(1))}/health", timeout=5, persistent=False)
        self.assertEqual(response.code, 200, process.output[-3000:])
        yield response.content()
        lines = process.output.count(b"\n")
        self.assertEqual(re.findall(rb"EMFILE|Too many open files", process.output), [])
        self.assertLess(lines - before, 20)
