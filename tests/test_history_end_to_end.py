"""
The inbox end to end: the real server on loopback, real WebSocket clients,
the REST API, a real C{twistd} child killed with SIGKILL, and two cluster
nodes on a real redis-server.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from .support import Running, closeClient, openClient, query, restRequest, spawnServer, startServer
from .test_cluster import ClusterCase, _until


@inlineCallbacks
def take(client, n):
    """
    The next C{n} messages that C{client} receives.
    """
    got = []
    for _ in range(n):
        got.append((yield client.messages.get()))
    return got


def historyConfig(test: TestCase, **history) -> dict:
    raw = {"server": {"dataDir": os.path.abspath(test.mktemp())},
           "chat": {"history": {"enabled": True, "storage": "sqlite", **history}}}
    return raw


class ResumeTests(TestCase):
    """
    Resuming with C{?since} over real connections.
    """

    timeout = 30

    @inlineCallbacks
    def open(self, server, q):
        client = yield openClient(server, q)
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_badSince(self):
        """
        A malformed C{since} closes with 4000 and a reason that says so.
        """
        server = yield startServer(self, historyConfig(self))
        for since in ("-1", "x", "1.0", "9" * 21):
            client = yield openClient(server, query(id=5, since=since))
            code, reason = yield client.closed
            self.assertEqual((code, reason), (
                4000, "Invalid since in query parameter: ?since={seq} must be a non-negative integer"))

    @inlineCallbacks
    def test_phoneAndLaptop(self):
        """
        The laptop is online while the phone is away: the laptop gets every
        message live with its seq; the phone comes back with the last seq it
        saw and gets what it missed, then the live ones.
        """
        server = yield startServer(self, historyConfig(self))
        alice = yield self.open(server, query(id=1))
        laptop = yield self.open(server, query(id=2))
        phone = yield openClient(server, query(id=2, since=0))
        alice.send({"type": "text", "text": "m0", "recipients": [2]})
        first = yield phone.messages.get()
        self.assertEqual((first["text"], first["seq"]), ("m0", 1))
        yield closeClient(phone)
        for n in range(1, 4):
            alice.send({"type": "text", "text": f"m{n}", "recipients": [2]})
        live = (yield take(laptop, 4))
        self.assertEqual([(m["text"], m["seq"]) for m in live], [("m0", 1), ("m1", 2), ("m2", 3), ("m3", 4)])
        phone = yield self.open(server, query(id=2, since=first["seq"]))
        alice.send({"type": "text", "text": "m4", "recipients": [2]})
        got = (yield take(phone, 4))
        self.assertEqual([(m["text"], m["seq"]) for m in got], [("m1", 2), ("m2", 3), ("m3", 4), ("m4", 5)])

    @inlineCallbacks
    def test_manyWhileReconnecting(self):
        """
        400 messages sent while a device reconnects with C{since} arrive
        all, once, in order.
        """
        server = yield startServer(self, historyConfig(self))
        alice = yield self.open(server, query(id=1))
        for n in range(200):
            alice.send({"type": "text", "text": str(n), "recipients": [2]})
        connecting = openClient(server, query(id=2, since=0))
        for n in range(200, 400):
            alice.send({"type": "text", "text": str(n), "recipients": [2]})
            if n % 50 == 0:
                yield deferLater(reactor, 0, lambda: None)
        phone = yield connecting
        self.addCleanup(closeClient, phone)
        got = (yield take(phone, 400))
        self.assertEqual([m["text"] for m in got], [str(n) for n in range(400)])
        self.assertEqual([m["seq"] for m in got], list(range(1, 401)))
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(phone.messages.pending, [])

    @inlineCallbacks
    def test_historyGap(self):
        """
        The replay starts with C{history_gap} when entries after C{since}
        were dropped for C{maxPerUser}.
        """
        server = yield startServer(self, historyConfig(self, maxPerUser=2))
        alice = yield self.open(server, query(id=1))
        for n in range(5):
            alice.send({"type": "text", "text": str(n), "recipients": [2]})
        yield deferLater(reactor, 0.2, lambda: None)
        phone = yield self.open(server, query(id=2, since=1))
        gap = yield phone.messages.get()
        self.assertEqual((gap["type"], gap["sender"], gap["recipients"], gap["data"]),
                         ("history_gap", 0, [2], {"since": 1, "first": 4}))
        self.assertEqual([m["seq"] for m in (yield take(phone, 2))], [4, 5])

    @inlineCallbacks
    def test_acks(self):
        """
        A message with C{ack} is answered C{message_ack} with the token and
        the message's id; a resent token is acked with the same id and
        routed once; a bad token closes with 4001.
        """
        server = yield startServer(self, historyConfig(self))
        alice = yield self.open(server, query(id=1))
        bob = yield self.open(server, query(id=2))
        alice.send({"type": "text", "text": "hi", "recipients": [2], "ack": "a1"})
        ack = yield alice.messages.get()
        delivered = yield bob.messages.get()
        self.assertEqual((ack["type"], ack["sender"], ack["recipients"], ack["data"]),
                         ("message_ack", 0, [1], {"ack": "a1", "id": delivered["id"]}))
        self.assertNotIn("ack", delivered)
        alice.send({"type": "text", "text": "hi", "recipients": [2], "ack": "a1"})
        again = yield alice.messages.get()
        self.assertEqual(again["data"], {"ack": "a1", "id": delivered["id"]})
        alice.send({"type": "text", "text": "next", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "next")
        alice.send({"type": "text", "text": "x", "recipients": [2], "ack": "t" * 65})
        self.assertEqual((yield alice.closed),
                         (4001, "Invalid payload. $.ack must be a string of at most 64 characters"))


class HistoryRestTests(TestCase):
    """
    C{GET /history}.
    """

    timeout = 30

    @inlineCallbacks
    def get(self, server, path):
        response = yield restRequest(server, "GET", path)
        return response.code, (yield response.json())

    @inlineCallbacks
    def test_paging(self):
        """
        Pages of C{limit} entries after C{since}, oldest first, with their
        seqs; the default limit is 100.
        """
        server = yield startServer(self, historyConfig(self))
        alice = yield openClient(server, query(id=1))
        self.addCleanup(closeClient, alice)
        for n in range(120):
            alice.send({"type": "text", "text": str(n), "recipients": [2, 3]})
        code, body = yield self.get(server, "/history?id=2&since=0&limit=50")
        for _ in range(50):
            if len(body["data"]) == 50 and body["data"][-1]["seq"] == 50:
                break
            yield deferLater(reactor, 0.05, lambda: None)
            code, body = yield self.get(server, "/history?id=2&since=0&limit=50")
        self.assertEqual(code, 200)
        self.assertTrue(body["success"])
        self.assertEqual([m["seq"] for m in body["data"]], list(range(1, 51)))
        self.assertEqual(body["data"][0]["text"], "0")
        self.assertEqual(body["data"][0]["recipients"], [2, 3])
        code, body = yield self.get(server, "/history?id=2&since=110&limit=50")
        self.assertEqual([m["text"] for m in body["data"]], [str(n) for n in range(110, 120)])
        code, body = yield self.get(server, "/history?id=3")
        self.assertEqual(len(body["data"]), 100)

    @inlineCallbacks
    def test_errors(self):
        """
        Id errors as on the other endpoints; a bad C{since} or C{limit} is a
        400 that says which.
        """
        server = yield startServer(self, {**historyConfig(self), "chat": {"userIds": "numeric", "history": {"enabled": True, "storage": "sqlite"}}})
        cases = [
            ("/history", "Id required"),
            ("/history?id=x", "Invalid id"),
            ("/history?id=0", "Invalid id"),
            ("/history?id=1&since=-1", "Invalid since: must be a non-negative integer"),
            ("/history?id=1&since=a", "Invalid since: must be a non-negative integer"),
            ("/history?id=1&limit=0", "Invalid limit: must be from 1 to 1000"),
            ("/history?id=1&limit=1001", "Invalid limit: must be from 1 to 1000"),
            ("/history?id=1&limit=x", "Invalid limit: must be a non-negative integer"),
        ]
        for path, message in cases:
            code, body = yield self.get(server, path)
            self.assertEqual((code, body), (400, {"success": False, "status": 400, "message": message}), path)

    @inlineCallbacks
    def test_disabled(self):
        """
        Without C{chat.history}, C{/history} is a 404 that says so.
        """
        server = yield startServer(self)
        code, body = yield self.get(server, "/history?id=1")
        self.assertEqual((code, body["message"]), (404, "History is not enabled (chat.history.enabled)"))


class KillTests(TestCase):
    """
    Acked messages survive SIGKILL of the real server process.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, config):
        process = spawnServer(self, "-C", config, "--ws", "tcp:0:interface=127.0.0.1",
                              "--rest", "tcp:0:interface=127.0.0.1")
        ws = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        rest = yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:(\d+)")
        return process, Running(None, int(ws.group(1)), int(rest.group(1)), False)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_ackedSurviveKill(self):
        """
        50 messages acked, then SIGKILL at once: after a restart all 50 are
        replayed from the inbox; a token resent before the kill was routed
        once.
        """
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            json.dump({"server": {"dataDir": os.path.abspath(self.mktemp())},
                       "chat": {"history": {"enabled": True, "storage": "sqlite"}}}, f)
        process, server = yield self.start(config)
        alice = yield openClient(server, query(id=1))
        for n in range(50):
            alice.send({"type": "text", "text": str(n), "recipients": [2], "ack": f"t{n}"})
        alice.send({"type": "text", "text": "0", "recipients": [2], "ack": "t0"})
        acks = (yield take(alice, 51))
        self.assertEqual({a["type"] for a in acks}, {"message_ack"})
        self.assertEqual(sorted({a["data"]["ack"] for a in acks}), sorted(f"t{n}" for n in range(50)))
        byToken = {}
        for a in acks:
            byToken.setdefault(a["data"]["ack"], set()).add(a["data"]["id"])
        self.assertEqual({len(ids) for ids in byToken.values()}, {1})
        process.transport.signalProcess("KILL")  # type: ignore[attr-defined]
        yield process.ended
        process, server = yield self.start(config)
        phone = yield openClient(server, query(id=2, since=0))
        self.addCleanup(closeClient, phone)
        got = (yield take(phone, 50))
        self.assertEqual([m["text"] for m in got], [str(n) for n in range(50)])
        self.assertEqual([m["id"] for m in got], [byToken[f"t{n}"].pop() for n in range(50)])
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(phone.messages.pending, [])


class ClusterInboxTests(ClusterCase):
    """
    The inbox shared by two nodes on one Redis.
    """

    def history(self):
        return self.raw(chat={"history": {"enabled": True, "storage": "redis"}})

    @inlineCallbacks
    def test_resumeOnOtherNode(self):
        """
        Messages sent on node A while the user was away are replayed when
        the user resumes on node B; seqs from both nodes only grow.
        """
        a = yield startServer(self, self.history())
        b = yield startServer(self, self.history())
        alice = yield self.open(a, 1)
        carol = yield self.open(b, 3)
        for n in range(5):
            alice.send({"type": "text", "text": f"a{n}", "recipients": [2]})
        for n in range(5):
            carol.send({"type": "text", "text": f"c{n}", "recipients": [2]})
        phone = yield openClient(b, query(id=2, since=0))
        self.addCleanup(closeClient, phone)
        got = (yield take(phone, 10))
        self.assertEqual(sorted(m["text"] for m in got), sorted([f"a{n}" for n in range(5)] + [f"c{n}" for n in range(5)]))
        self.assertEqual([m["seq"] for m in got], list(range(1, 11)))
        self.assertEqual([m["text"] for m in got if m["text"][0] == "a"], [f"a{n}" for n in range(5)])
        self.assertTrue((yield _until(self.seen(a, 2))))
        alice.send({"type": "text", "text": "live", "recipients": [2]})
        live = yield phone.messages.get()
        self.assertEqual((live["text"], live["seq"]), ("live", 11))

    @inlineCallbacks
    def test_liveAcrossNodesDuringResume(self):
        """
        A device that resumes on node B while node A keeps sending gets
        every message once, in order.
        """
        a = yield startServer(self, self.history())
        b = yield startServer(self, self.history())
        alice = yield self.open(a, 1)
        laptop = yield self.open(b, 2)
        self.assertTrue((yield _until(self.seen(a, 2))))
        for n in range(100):
            alice.send({"type": "text", "text": str(n), "recipients": [2]})
        connecting = openClient(b, query(id=2, since=0))
        for n in range(100, 200):
            alice.send({"type": "text", "text": str(n), "recipients": [2]})
            if n % 20 == 0:
                yield deferLater(reactor, 0, lambda: None)
        phone = yield connecting
        self.addCleanup(closeClient, phone)
        got = [m["text"] for m in (yield take(phone, 200))]
        self.assertEqual(got, [str(n) for n in range(200)])
        live = [m["seq"] for m in (yield take(laptop, 200))]
        self.assertEqual(live, list(range(1, 201)))
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(phone.messages.pending, [])

    def test_configNeedsRedis(self):
        """
        In a cluster the inbox must be in Redis; redis needs a cluster.
        """
        from wsserver.config import ConfigError, parseConfig

        error = self.assertRaises(ConfigError, parseConfig, self.raw(chat={"history": {"enabled": True}}))
        self.assertIn('chat.history.storage: with cluster.redis the inbox is shared by the nodes: use "redis"',
                      error.problems)
        error = self.assertRaises(ConfigError, parseConfig,
                                  {"chat": {"history": {"enabled": True, "storage": "redis"}}})
        self.assertIn('chat.history.storage: "redis" needs cluster.redis; use "sqlite" or "memory"', error.problems)
