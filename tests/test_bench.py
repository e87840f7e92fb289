"""
Tests for C{wsserver-bench}: its arithmetic, and each mode run briefly
against the real server, with numbers that must add up.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.bench import LOREM, Histogram, Load, Results, mergeResults, parseArgs, run, runLoad, table

from .support import startServer


class HistogramTests(SynchronousTestCase):
    """
    The latency histogram.
    """

    def test_percentiles(self) -> None:
        """
        Percentiles are within a bucket (2 %) above the true value, and the
        maximum is exact.
        """
        h = Histogram()
        for ms in range(1, 101):
            h.add(ms / 1000)
        self.assertEqual(h.count, 100)
        self.assertEqual(h.max, 0.1)
        for p, true in ((50, 0.050), (90, 0.090), (99, 0.099)):
            self.assertGreaterEqual(h.percentile(p), true)
            self.assertLessEqual(h.percentile(p), true * 1.021)
        self.assertEqual(h.percentile(100), 0.1)

    def test_empty(self) -> None:
        """
        An empty histogram answers 0.
        """
        self.assertEqual(Histogram().percentile(99), 0.0)

    def test_merge(self) -> None:
        """
        Merging two histograms is the same as recording everything in one,
        also through JSON (as the processes of --procs send them).
        """
        a, b, both = Histogram(), Histogram(), Histogram()
        for i in range(1, 500):
            (a if i % 3 else b).add(i / 10000)
            both.add(i / 10000)
        merged = Histogram.fromJSON(json.loads(json.dumps(a.toJSON())))
        merged.merge(Histogram.fromJSON(json.loads(json.dumps(b.toJSON()))))
        self.assertEqual(merged.buckets, both.buckets)
        self.assertEqual((merged.count, merged.max), (both.count, both.max))
        self.assertAlmostEqual(merged.total, both.total)


class ResultsTests(SynchronousTestCase):
    """
    Results, their summary and their merge.
    """

    def test_summaryUnits(self) -> None:
        """
        Rates are per second over the measured window, sizes in MB, latency
        in milliseconds (the original printed seconds labelled as ms).
        """
        r = Results("throughput", sent=1000, expected=1000, received=1000, duration=2.0,
                    windowReceived=800, windowBytes=4_000_000)
        r.latency.add(0.0015)
        s = r.summary()
        self.assertEqual(s["delivered_per_s"], 400.0)
        self.assertEqual(s["mb_per_s"], 2.0)
        self.assertAlmostEqual(s["latency_ms"]["max"], 1.5)

    def test_mergeJSON(self) -> None:
        """
        Results survive JSON and add up when merged.
        """
        a = Results("latency", clients=2, sent=10, expected=10, received=9, dropped=1, duration=1.0)
        b = Results.fromJSON(json.loads(json.dumps(a.toJSON())))
        a.merge(b)
        self.assertEqual((a.clients, a.sent, a.received, a.dropped), (4, 20, 18, 2))

    def test_mergeMemoryOverAllProcesses(self) -> None:
        """
        The merged memory per connection is the server's growth over the
        whole run divided by the connections of every process, not the
        figure of one process (each of which saw only its own connections).
        """
        parts = [Results("connections", clients=n, connections=n) for n in (100, 200, 300)]
        parts[1].memoryPerConnection = 99999.0
        parts[2].memoryPerConnection = 12345.0
        merged = mergeResults(parts, rssBefore=10_000_000, rssAfter=10_000_000 + 600 * 4096)
        self.assertEqual((merged.clients, merged.connections), (600, 600))
        self.assertEqual(merged.memoryPerConnection, 4096.0)
        self.assertEqual(merged.summary()["server_kib_per_connection"], 4.0)

    def test_mergeMemoryUnknown(self) -> None:
        """
        Without both readings of the server's memory, or without any
        connection, there is no figure (not one process's).
        """
        for before, after, n in ((None, 5000, 10), (1000, None, 10), (1000, 5000, 0)):
            parts = [Results("connections", connections=n, memoryPerConnection=7.0),
                     Results("connections", connections=n, memoryPerConnection=8.0)]
            self.assertIsNone(mergeResults(parts, before, after).memoryPerConnection)
            self.assertNotIn("server_kib_per_connection", mergeResults(parts, before, after).summary())

    def test_table(self) -> None:
        """
        The summary table has one aligned row per figure.
        """
        text = table({"mode": "fanout", "latency_ms": {"p50": 1.0}})
        self.assertEqual(text, "mode        fanout\nlatency_ms  p50 1.0")

    def test_tableExplainsOther(self) -> None:
        """
        The C{other} row says what it counts: what arrived that is not a
        delivery.
        """
        self.assertEqual(table({"received": 2, "other": 4}),
                         "received  2\nother     4  (not deliveries: send-back copies and delivery "
                         "notifications the clients also got)")

    def test_helpHasNoMarkup(self) -> None:
        """
        C{--help}'s description (the module's docstring) shows no epytext
        markup: C{data}, not C{C{data}}.
        """
        from wsserver.bench import parser

        text = parser().format_help()
        self.assertIn("(a send time travels in data)", text)
        self.assertNotRegex(text, r"[A-Z]\{")


class ArgsTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_defaults(self) -> None:
        """
        The classic mode's defaults are the original's: 50 clients, 2
        messages, 20 runs, ~3.3 KB of lorem ipsum.
        """
        args = parseArgs(["classic"])
        self.assertEqual((args.clients, args.messages, args.runs, args.size), (50, 2, 20, 3300))
        self.assertEqual(len(LOREM), 3300)

    def test_auth(self) -> None:
        """
        Auth options become handshake headers.
        """
        args = parseArgs(["throughput", "--header", "X-Token: t", "--cookie", "a=1", "--cookie", "b=2",
                          "--basic", "u:p"])
        self.assertEqual(args.headers, {"X-Token": "t", "Cookie": "a=1; b=2", "Authorization": "Basic dTpw"})
        self.assertEqual(parseArgs(["latency", "--bearer", "tok"]).headers, {"Authorization": "Bearer tok"})

    def test_badURL(self) -> None:
        """
        Only ws:// and wss:// URLs are taken.
        """
        with self.assertRaises(SystemExit):
            with redirect_stdout(io.StringIO()):
                parseArgs(["classic", "--url", "http://x/chat"])


class ModeTests(TestCase):
    """
    Each mode, briefly, against the real server: sent = received + dropped,
    nothing dropped, latency above zero.
    """

    timeout = 60

    @inlineCallbacks
    def load(self, *argv: str, raw: dict | None = None, tls: bool = False) -> Deferred[Results]:
        server = yield startServer(self, raw, tls=tls)
        url = server.wsURL()
        args = parseArgs([*argv, "--url", url, "--json", "--drain", "20"] + (["--insecure"] if tls else []))
        results = yield Deferred.fromCoroutine(runLoad(reactor, args, list(range(10, 10 + args.clients))))
        return results

    def check(self, r: Results) -> None:
        self.assertGreater(r.sent, 0)
        self.assertEqual(r.received + r.dropped, r.expected)
        self.assertEqual((r.dropped, r.errors), (0, 0))
        self.assertGreater(r.latency.percentile(50), 0)
        self.assertGreater(r.summary()["delivered_per_s"], 0)

    @inlineCallbacks
    def test_classic(self):
        """
        classic: every run's messages all arrive; one time per run.
        """
        r = yield self.load("classic", "--clients", "6", "--messages", "3", "--runs", "4")
        self.check(r)
        self.assertEqual(r.expected, 6 * 3 * 4)
        self.assertEqual(len(r.runs), 4)

    @inlineCallbacks
    def test_throughput(self):
        """
        throughput over wss://, with the window of messages in flight.
        """
        r = yield self.load("throughput", "--clients", "4", "--duration", "0.5", "--window", "2", tls=True)
        self.check(r)

    @inlineCallbacks
    def test_latency(self):
        """
        latency: about the offered rate is sent.
        """
        r = yield self.load("latency", "--clients", "4", "--duration", "0.5", "--rate", "200")
        self.check(r)
        self.assertGreater(r.sent, 50)
        self.assertLessEqual(r.sent, 101)

    @inlineCallbacks
    def test_fanout(self):
        """
        fanout: each message counts once per recipient.
        """
        r = yield self.load("fanout", "--recipients", "5", "--duration", "0.5", "--clients", "6")
        self.check(r)
        self.assertEqual(r.expected, r.sent * 5)

    @inlineCallbacks
    def test_uuidIds(self):
        """
        C{--ids uuid}: the clients are UUIDs to the server, and fan-out and
        throughput deliver every message as with numbers.
        """
        r = yield self.load("fanout", "--recipients", "5", "--duration", "0.5", "--clients", "6", "--ids", "uuid")
        self.check(r)
        self.assertEqual(r.expected, r.sent * 5)
        r = yield self.load("throughput", "--clients", "4", "--duration", "0.5", "--ids", "uuid")
        self.check(r)

    def test_wireIds(self):
        """
        A UUID is made from the client's number, the same in every process.
        """
        load = Load(reactor, parseArgs(["throughput", "--ids", "uuid"]), [10, 11])
        self.assertEqual(load.wireId(10), str(uuid.uuid5(uuid.NAMESPACE_OID, "10")))
        self.assertEqual(Load(reactor, parseArgs(["throughput"]), [10, 11]).wireId(10), 10)

    @inlineCallbacks
    def test_sendBackCounted(self):
        """
        With send-back and delivery status on, the copies and notifications
        are counted apart, not as deliveries.
        """
        raw = {"chat": {"message": {"enableSendBack": True, "enableDeliveryStatus": True}}}
        r = yield self.load("classic", "--clients", "2", "--messages", "1", "--runs", "1", raw=raw)
        self.check(r)
        self.assertEqual((r.expected, r.other), (2, 4))

    @inlineCallbacks
    def test_connections(self):
        """
        connections: all open, with a connect rate, and the memory per
        connection of the server process (this one).
        """
        server = yield startServer(self)
        args = parseArgs(["connections", "--url", server.wsURL(), "--clients", "30", "--hold", "0.1",
                          "--pid", str(os.getpid()), "--json"])
        r = yield Deferred.fromCoroutine(runLoad(reactor, args, list(range(10, 40))))
        self.assertEqual((r.connections, r.errors), (30, 0))
        self.assertGreater(r.summary()["connects_per_s"], 0)
        self.assertIsNotNone(r.memoryPerConnection)

    @inlineCallbacks
    def test_authRefused(self):
        """
        Connections the server refuses are counted as errors.
        """
        raw = {"server": {"auth": {"type": "bearer", "value": "right"}}}
        server = yield startServer(self, raw)
        args = parseArgs(["connections", "--url", server.wsURL(), "--clients", "3", "--hold", "0.1",
                          "--bearer", "wrong", "--json"])
        r = yield Deferred.fromCoroutine(runLoad(reactor, args, [1, 2, 3]))
        self.assertEqual(r.connections, 0)
        self.assertEqual(r.errors, 3)

    @inlineCallbacks
    def test_procs(self):
        """
        --procs 2 runs half the clients in a child process and merges its
        results.
        """
        server = yield startServer(self)
        out = io.StringIO()
        with redirect_stdout(out):
            results = yield Deferred.fromCoroutine(run(reactor, [
                "classic", "--url", server.wsURL(), "--clients", "8", "--messages", "2", "--runs", "2",
                "--procs", "2", "--json"]))
        self.check(results)
        self.assertEqual((results.clients, results.expected), (8, 8 * 2 * 2))
        self.assertEqual(json.loads(out.getvalue())["received"], 32)

    @inlineCallbacks
    def test_procsConnections(self):
        """
        connections with --procs 2: the connections of both processes are
        counted, and the memory per connection is read once for all of them
        (here the server is this process).
        """
        server = yield startServer(self)
        out = io.StringIO()
        with redirect_stdout(out):
            results = yield Deferred.fromCoroutine(run(reactor, [
                "connections", "--url", server.wsURL(), "--clients", "40", "--hold", "0.2",
                "--procs", "2", "--pid", str(os.getpid()), "--json"]))
        self.assertEqual((results.connections, results.errors), (40, 0))
        self.assertIsNotNone(results.memoryPerConnection)
        self.assertIn("server_kib_per_connection", json.loads(out.getvalue()))


class ExitStatusTests(TestCase):
    """
    A run whose clients could not connect fails, not just prints it.
    """

    timeout = 30

    @inlineCallbacks
    def test_cannotConnect(self):
        """
        With nothing listening, the bench prints its figures (errors 4) and
        ends with status 1 and a line that says why.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import Factory

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        number = port.getHost().port
        yield port.stopListening()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            failure = yield self.assertFailure(Deferred.fromCoroutine(run(reactor, [
                "throughput", "--url", f"ws://127.0.0.1:{number}/chat", "--clients", "4", "--duration", "0.2",
                "--json"])), SystemExit)
        self.assertEqual(failure.code, 1)
        self.assertEqual(json.loads(out.getvalue())["errors"], 4)
        self.assertEqual(err.getvalue(),
                         "wsserver-bench: 4 of 4 clients failed (could not connect or were disconnected)\n")
