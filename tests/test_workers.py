"""
C{server.workers: 2}: one command, two worker processes sharing the
listening sockets, joined through a real redis-server.
"""

from __future__ import annotations

import json
import os
import re
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.workers import parseAdopt

from .redis import RedisServer
from .support import Running, closeClient, openClient, restRequest, spawnServer


class AdoptTests(SynchronousTestCase):
    """
    The internal C{--adopt} option.
    """

    def test_parse(self) -> None:
        """
        C{ws=FD,rest=FD} gives the descriptors by name; other forms are
        refused.
        """
        self.assertEqual(parseAdopt("ws=5,rest=6"), {"ws": 5, "rest": 6})
        self.assertEqual(parseAdopt("ws=5"), {"ws": 5})
        for bad in ("rest=6", "ws=x", "ws", "db=3,ws=5"):
            self.assertRaises(ValueError, parseAdopt, bad)


class StartErrorTests(TestCase):
    """
    The worker pool's parent listens: a failure is a one-line start error.
    """

    def test_portInUse(self) -> None:
        """
        A port in use stops the start with a L{StartError} naming the key
        and the cause.
        """
        from twisted.internet.protocol import Factory

        from wsserver.config import parseConfig
        from wsserver.service import StartError
        from wsserver.workers import WorkerPool

        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        config = parseConfig({"server": {"workers": 2, "listen": f"tcp:{port}:interface=127.0.0.1"},
                              "restApi": {"enabled": False}, "cluster": {"redis": "redis://127.0.0.1:1"}})
        e = self.assertRaises(StartError, WorkerPool(config, [], reactor).privilegedStartService)
        self.assertEqual(str(e), f"server.listen: cannot listen on 127.0.0.1:{port}: address already in use")


@inlineCallbacks
def startWorkers(test: TestCase, heartbeat: float, timeout: float):
    """
    C{server.workers: 2} on a redis-server of its own, as a twistd child:
    the process, and the match of its line saying where it listens.
    """
    redis = RedisServer(test)
    yield redis.start()
    config = os.path.abspath(test.mktemp())
    with open(config, "w") as f:
        json.dump({"server": {"workers": 2, "dataDir": os.path.abspath(test.mktemp())},
                   "cluster": {"redis": f"redis://127.0.0.1:{redis.port}/0",
                               "heartbeatSeconds": heartbeat, "nodeTimeoutSeconds": timeout}}, f)
    process = spawnServer(test, "-C", config, "--ws", "tcp:0:interface=127.0.0.1",
                          "--rest", "tcp:0:interface=127.0.0.1")
    ws = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+) for 2 workers")
    return process, ws


class WorkersTests(TestCase):
    """
    The real process tree.
    """

    timeout = 60

    @inlineCallbacks
    def test_twoWorkers(self):
        """
        Two workers serve 50 clients through one port: every message between
        them arrives (across the workers through Redis), both workers take
        connections, a killed worker is restarted, and SIGTERM stops all.
        """
        process, ws = yield startWorkers(self, 0.2, 2)
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+) for 2 workers")
        yield process.waitFor(rb"\[worker 0\].*REST API listening")
        yield process.waitFor(rb"\[worker 1\].*REST API listening")
        server = Running(None, int(ws.group(1)), int(rest.group(1)), False)  # type: ignore[arg-type]

        clients = {}
        for uid in range(1, 51):
            clients[uid] = yield openClient(server, userId=uid)
        for uid in range(1, 51):
            for _ in range(100):
                response = yield restRequest(server, "GET", f"/check-online?id={uid}")
                if (yield response.json())["data"]["isOnline"]:
                    break
                yield deferLater(reactor, 0.05, lambda: None)
            else:
                self.fail(f"user {uid} never seen online")
        # every worker may not have heard of every user yet: one more beat
        yield deferLater(reactor, 0.5, lambda: None)
        for uid in range(1, 51, 2):
            for i in range(4):
                clients[uid].send({"type": "text", "text": f"{uid}-{i}", "recipients": [uid + 1]})
                clients[uid + 1].send({"type": "text", "text": f"{uid + 1}-{i}", "recipients": [uid]})
        for uid in range(1, 51):
            peer = uid + 1 if uid % 2 else uid - 1
            texts = []
            for _ in range(4):
                texts.append((yield clients[uid].messages.get())["text"])
            self.assertEqual(texts, [f"{peer}-{i}" for i in range(4)])
        for client in clients.values():
            yield closeClient(client)

        output = process.output.decode("utf-8", "replace")
        for index in (0, 1):
            self.assertRegex(output, rf"\[worker {index}\].*user \d+ connected")

        pid = int(re.search(r"worker 0 started \(pid (\d+)\)", output).group(1))
        os.kill(pid, signal.SIGKILL)
        yield process.waitFor(rb"worker 0 started \(pid (?!%d\))\d+\)" % pid)
        yield process.waitFor(rb"\[worker 0\](?:(?!\n).)*REST API listening(?:.|\n)*\[worker 0\].*REST API listening")

        process.transport.signalProcess("TERM")
        ended = yield process.ended
        self.assertIn(getattr(ended, "exitCode", 0) or 0, (0, None))
        self.assertEqual(len(re.findall(r"worker \d ended", process.output.decode())), 1)


class WorkersJoinTests(TestCase):
    """
    Workers that start together learn each other's users before they
    serve, without waiting for a heartbeat.
    """

    timeout = 60

    @inlineCallbacks
    def test_spreadUsersReachedAtOnce(self):
        """
        With heartbeats 10 s apart, 20 users connected while only the first
        worker serves, then senders spread over both workers: each sender's
        message to all twenty reaches all twenty at once.  The second worker
        did not serve before it knew who is online on the first.
        """
        process, ws = yield startWorkers(self, 10, 30)
        server = Running(None, int(ws.group(1)), None, False)  # type: ignore[arg-type]

        @inlineCallbacks
        def connect(uid):
            client = yield openClient(server, userId=uid)
            self.addCleanup(closeClient, client)
            return client

        users = {}
        for uid in range(1, 21):
            users[uid] = yield connect(uid)
        yield process.waitFor(rb"\[worker 0\].*cluster node \w+ joined")
        yield process.waitFor(rb"\[worker 1\].*cluster node \w+ joined")
        # a second after the users' connect lines (held to one a second per
        # kind), so that each worker's first sender has its line
        yield deferLater(reactor, 1.1, lambda: None)
        senders = {}
        for uid in range(100, 120):
            senders[uid] = yield connect(uid)
        for uid, sender in senders.items():
            sender.send({"type": "text", "text": f"from {uid}", "recipients": list(users)})
        expected = sorted(f"from {uid}" for uid in range(100, 120))
        for uid, client in users.items():
            texts = []
            for _ in expected:
                texts.append((yield client.messages.get())["text"])
            self.assertEqual(sorted(texts), expected)
        output = process.output.decode("utf-8", "replace")
        for index in (0, 1):
            self.assertRegex(output, rf"\[worker {index}\].*user 1\d\d connected")
        process.transport.signalProcess("TERM")
        yield process.ended


class WorkersMetricsTests(TestCase):
    """
    C{/metrics} and C{/overview} answer for all the workers, whichever
    takes the request.
    """

    timeout = 60

    @inlineCallbacks
    def test_summedOverWorkers(self):
        """
        With connections on both workers, every read of C{/metrics} (each
        taken by either worker) gives the same totals, the sum of both; so
        does the dashboard's C{/overview}.
        """
        from prometheus_client.parser import text_string_to_metric_families

        process, ws = yield startWorkers(self, 0.2, 2)
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+) for 2 workers")
        yield process.waitFor(rb"\[worker 0\].*REST API listening")
        yield process.waitFor(rb"\[worker 1\].*REST API listening")
        server = Running(None, int(ws.group(1)), int(rest.group(1)), False)  # type: ignore[arg-type]
        clients = []
        for uid in range(1, 21):
            client = yield openClient(server, userId=uid)
            self.addCleanup(closeClient, client)
            clients.append(client)
        output = process.output.decode("utf-8", "replace")
        for index in (0, 1):
            self.assertRegex(output, rf"\[worker {index}\].*user \d+ connected")
        yield deferLater(reactor, 1.5, lambda: None)  # every worker wrote its figures since

        def values(text):
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples}

        for _ in range(8):
            response = yield restRequest(server, "GET", "/metrics")
            metrics = values((yield response.text()))
            self.assertEqual((metrics[("wsserver_connections", ())], metrics[("wsserver_connects_total", ())]),
                             (20, 20))
            response = yield restRequest(server, "GET", "/overview")
            node = (yield response.json())["data"]["node"]
            self.assertEqual((node["connections"], node["connects"]), (20, 20))
        process.transport.signalProcess("TERM")
        yield process.ended
