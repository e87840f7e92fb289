"""
End-to-end: the server run by Twisted's other runner, C{twist wsserver},
which starts services before logging begins (twistd starts them after).
"""

from __future__ import annotations

import re
import signal
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from .support import Running, closeClient, openClient, spawnServer

#: plain HTTP requests sent to the WebSocket port: each would log a line
PLAIN_REQUESTS = 30


class TwistRunnerTests(TestCase):
    """
    C{twist wsserver} serves, guards its log against floods, and stops
    cleanly.
    """

    timeout = 60

    @inlineCallbacks
    def test_serves(self) -> Any:
        """
        Under C{twist}, the server starts (it died at start with "deque
        mutated during iteration": its log guard took the log beginner's
        buffer of early events along), routes a message, answers
        C{/health}, holds a flood of lines a remote peer causes to a few, and
        on SIGTERM closes its clients with 1001 and ends with no traceback.
        """
        process = spawnServer(self, "--ws", "tcp:0:interface=127.0.0.1", "--rest", "tcp:0:interface=127.0.0.1",
                              twist=True)
        ws = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+)")
        response = yield treq.get(f"http://127.0.0.1:{int(rest.group(1))}/health", timeout=5, persistent=False)
        self.assertEqual(response.code, 200, process.output[-3000:])
        yield response.content()
        server = Running(None, int(ws.group(1)), None, False)  # type: ignore[arg-type]
        alice = yield openClient(server, userId="alice")
        bob = yield openClient(server, userId="bob")
        self.addCleanup(closeClient, alice)
        self.addCleanup(closeClient, bob)
        alice.send({"type": "text", "text": "hello", "recipients": ["bob"]})
        self.assertEqual((yield bob.messages.get())["text"], "hello")

        class Plain(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(ws.group(1)))
        for _ in range(PLAIN_REQUESTS):
            protocol = yield connectProtocol(endpoint, Plain())
            self.addCleanup(protocol.transport.loseConnection)
        yield deferLater(reactor, 1.0, lambda: None)
        dropped = re.findall(rb"plain HTTP request", process.output)
        self.assertGreaterEqual(len(dropped), 1, process.output[-3000:])
        self.assertLess(len(dropped), 5, process.output[-3000:])

        process.transport.signalProcess("TERM")  # type: ignore[attr-defined]
        self.assertEqual((yield alice.closed), (1001, "Server shutdown"))
        ended = yield process.ended
        # (like twistd, twist ends with the signal that stopped it)
        if isinstance(ended, ProcessTerminated):
            self.assertEqual(ended.signal, signal.SIGTERM, process.output[-3000:])
        else:
            self.assertIsInstance(ended, ProcessDone)
        self.assertNotIn(b"Traceback", process.output)
