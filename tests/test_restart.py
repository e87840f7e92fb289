"""
Nothing lost: the real C{twistd wsserver} process killed with SIGKILL in the
middle of pending deliveries and undelivered messages, then started again on
the same data directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from .support import JSONSink, Running, ServerProcess, closeClient, openClient, restRequest, spawnServer


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestartTests(TestCase):
    """
    Kill the server at a bad moment; start it again; every message is
    delivered or still queued, every event delivered.
    """

    timeout = 60

    def spawn(self, config: str) -> ServerProcess:
        return spawnServer(self, "-C", config, "--ws", "tcp:0:interface=127.0.0.1",
                           "--rest", "tcp:0:interface=127.0.0.1")

    @inlineCallbacks
    def start(self, config: str):
        process = self.spawn(config)
        ws = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+)")
        return process, Running(None, int(ws.group(1)), int(rest.group(1)), False)  # type: ignore[arg-type]

    @inlineCallbacks
    def events(self, server):
        response = yield restRequest(server, "GET", "/events")
        return (yield response.json())["data"][0]

    @inlineCallbacks
    def test_killedAndRestarted(self):
        """
        Messages for an offline user and events for a webhook that is down
        survive SIGKILL: after a restart the user gets every message in
        order and the webhook gets every event.
        """
        hookPort = _freePort()
        dataDir = os.path.abspath(self.mktemp())
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            json.dump({
                "server": {"dataDir": dataDir},
                "chat": {"enableUndeliveredQueue": True},
                "event": {"enabled": True, "retryCount": 10000, "retryIntervalSeconds": 0.2,
                          "targets": [{"type": "postback", "url": f"http://127.0.0.1:{hookPort}/hook",
                                       "connectionTimeoutSeconds": 1}]},
            }, f)

        process, server = yield self.start(config)
        alice = yield openClient(server, userId=1)
        for i in range(5):
            alice.send({"type": "text", "text": f"m{i}", "recipients": [2]})
        for _ in range(100):
            counts = yield self.events(server)
            if counts["retrying"] == 5:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((counts["retrying"], counts["succeeded"]), (5, 0))
        process.transport.signalProcess("KILL")
        yield process.ended
        yield closeClient(alice)

        sink = JSONSink()
        port = yield TCP4ServerEndpoint(reactor, hookPort, interface="127.0.0.1").listen(Site(sink))
        self.addCleanup(port.stopListening)
        process, server = yield self.start(config)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, bob)
        texts = []
        for _ in range(5):
            texts.append((yield bob.messages.get())["text"])
        self.assertEqual(texts, ["m0", "m1", "m2", "m3", "m4"])
        for _ in range(200):
            if len({b["id"] for b in sink.bodies}) == 5:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(sorted(b["text"] for b in sink.bodies), ["m0", "m1", "m2", "m3", "m4"])
        counts = yield self.events(server)
        self.assertEqual((counts["succeeded"], counts["pending"], counts["retrying"], counts["failed"]), (5, 0, 0, 0))
        response = yield restRequest(server, "GET", "/stat?id=2")
        self.assertEqual((yield response.json())["data"]["receivedMessages"], 5)


class _NeverAnswers(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render_POST(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


class SlowStopTests(TestCase):
    """
    The worst case of a stop: a client that never answers the close frame
    and an event delivery that never finishes.
    """

    timeout = 60

    @inlineCallbacks
    def test_stopWithin10Seconds(self):
        """
        SIGTERM with a silent client and a hanging webhook still ends the
        process within 10 seconds, cleanly.
        """
        sink = _NeverAnswers()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(sink))
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [r.channel.transport.abortConnection() for r in sink.requests if r.channel])
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            json.dump({"server": {"dataDir": os.path.abspath(self.mktemp())},
                       "event": {"enabled": True, "targets": [
                           {"type": "postback", "url": f"http://127.0.0.1:{port.getHost().port}/hook",
                            "connectionTimeoutSeconds": 60}]}}, f)
        process = spawnServer(self, "-C", config, "--ws", "tcp:0:interface=127.0.0.1",
                              "--rest", "tcp:0:interface=127.0.0.1")
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        server = Running(None, int(m.group(1)), None, False)  # type: ignore[arg-type]
        alice = yield openClient(server, userId=1)
        alice.send({"type": "text", "text": "hang", "recipients": [2]})
        for _ in range(100):
            if sink.requests:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(sink.requests), 1)
        alice.transport.pauseProducing()  # it will not read the close frame
        started = reactor.seconds()
        process.transport.signalProcess("TERM")
        ended = yield process.ended
        elapsed = reactor.seconds() - started
        self.assertLess(elapsed, 10, process.output)
        self.assertIn(getattr(ended, "signal", None) or getattr(ended, "exitCode", None) or 0,
                      (0, signal.SIGTERM), process.output)
        alice.transport.abortConnection()
