"""
End-to-end tests of the event notifier (SPEC section 6): the real server on
loopback port 0, real WebSocket clients, real webhooks (a C{twisted.web} site
on a loopback port that each test starts), a real C{redis-server}, and the
counts that C{GET /events} answers over the REST API.  Also the data
directory problems that keep the server from starting, through
L{buildService} and through the real command line.

Nothing sleeps: tests wait on L{Deferred}s, or poll a condition every 50 ms
in a bounded loop.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from wsserver.config import parseConfig
from wsserver.database import DATABASE_FILENAME, StorageError
from wsserver.tap import buildService

from .redis import RedisServer
from .support import closeClient, openClient, restRequest, startServer

log = Logger()

_TWISTD = "from twisted.scripts.twistd import run; run()"

#: Seconds that a polled condition gets before the test fails.
WAIT_LIMIT = 10.0


# webhooks


@dataclass
class Received:
    """
    One request that a L{Sink} received.
    """

    method: bytes
    headers: Headers
    body: bytes
    at: float

    def header(self, name: bytes) -> list[bytes] | None:
        return self.headers.getRawHeaders(name)


class Sink(Resource):
    """
    A webhook.  It records every request, and answers request number C{i}
    (from 0) as C{answer(i)} says: an HTTP status; C{(status, headers)};
    C{"hang"} (never answers); C{"trickle"} (200, then a body byte every
    0.1 s, never finished); or C{("delay", seconds, status)}.

    @ivar url: where it listens, once started by L{startSink}.
    @ivar requests: what it received, in order.
    @ivar answered: how many requests it has answered.
    @ivar firstAnswerAt: when it first answered (C{reactor.seconds()}).
    """

    isLeaf = True

    def __init__(self, answer: Callable[[int], Any] | None = None) -> None:
        super().__init__()
        self.answer = answer or (lambda i: 200)
        self.url = ""
        self.requests: list[Received] = []
        self.answered = 0
        self.firstAnswerAt: float | None = None
        #: requests not answered yet whose connection is open, with the
        #: delayed call that will answer them (if any)
        self.held: dict[Any, IDelayedCall | None] = {}

    def render(self, request: Any) -> bytes | int:
        index = len(self.requests)
        self.requests.append(
            Received(request.method, request.requestHeaders.copy(), request.content.read(), reactor.seconds())
        )
        plan = self.answer(index)
        if plan == "hang":
            self._hold(request, None)
            return NOT_DONE_YET
        if plan == "trickle":
            request.setResponseCode(200)
            request.setHeader(b"content-length", b"1000000")
            drip = LoopingCall(request.write, b" ")
            drip.start(0.1)
            self._hold(request, None)
            request.notifyFinish().addBoth(lambda _: drip.stop())
            return NOT_DONE_YET
        if isinstance(plan, tuple) and plan[0] == "delay":
            _, seconds, code = plan
            self._hold(request, reactor.callLater(seconds, self._answerHeld, request, code))
            return NOT_DONE_YET
        code, headers = (plan, {}) if isinstance(plan, int) else plan
        return self._respond(request, code, headers)

    def _respond(self, request: Any, code: int, headers: dict[bytes, bytes]) -> bytes:
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        self.answered += 1
        if self.firstAnswerAt is None:
            self.firstAnswerAt = reactor.seconds()
        return b"{}"

    def _hold(self, request: Any, call: IDelayedCall | None) -> None:
        self.held[request] = call

        def gone(_: Any) -> None:
            call = self.held.pop(request, None)
            if call is not None and call.active():
                call.cancel()

        request.notifyFinish().addBoth(gone)

    def _answerHeld(self, request: Any, code: int) -> None:
        if request not in self.held:
            return
        self.held[request] = None
        request.write(self._respond(request, code, {}))
        request.finish()

    def release(self) -> None:
        """
        Answer 200 at once, to the held requests and from now on.
        """
        self.answer = lambda i: 200
        for request, call in list(self.held.items()):
            if call is not None and call.active():
                call.cancel()
            self._answerHeld(request, 200)

    def cancelDelayed(self) -> None:
        """
        Cancel the delayed answers (their requests stay held).
        """
        for request, call in list(self.held.items()):
            if call is not None and call.active():
                call.cancel()
            self.held[request] = None


class _Connections(WrappingFactory):
    """
    A factory that knows its open connections, to close them at cleanup.
    """

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._lost: dict[Any, list[Deferred[None]]] = {}

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        for d in self._lost.pop(p, []):
            d.callback(None)

    def closeAll(self) -> Deferred[Any]:
        """
        Abort every open connection; fires when all are closed.
        """
        waits = []
        for p in list(self.protocols):
            d: Deferred[None] = Deferred()
            self._lost.setdefault(p, []).append(d)
            waits.append(d)
            p.transport.abortConnection()
        return DeferredList(waits)


@inlineCallbacks
def startSink(test: TestCase, answer: Callable[[int], Any] | None = None) -> Any:
    """
    Start a L{Sink} on a loopback port; at cleanup, its delayed answers are
    cancelled, its held requests aborted, its port and connections closed.
    Start it before the server, so that it is stopped after the server.
    """
    sink = Sink(answer)
    factory = _Connections(Site(sink))
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    sink.url = f"http://127.0.0.1:{port.getHost().port}/hook"

    @inlineCallbacks
    def stop() -> Any:
        sink.cancelDelayed()
        yield port.stopListening()
        yield factory.closeAll()

    test.addCleanup(stop)
    return sink


def deadPort() -> int:
    """
    A loopback port that nobody listens on: connections to it are refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hook(url: str, **fields: Any) -> dict[str, Any]:
    """
    A postback target with a short timeout.
    """
    return {"type": "postback", "url": url, "connectionTimeoutSeconds": 0.5, **fields}


def withEvents(test: TestCase, targets: list[dict[str, Any]], **event: Any) -> dict[str, Any]:
    """
    A raw config with the event notifier on for C{targets}, retries 0.2 s
    apart, and a data directory of its own.
    """
    section = {"enabled": True, "retryIntervalSeconds": 0.2, "targets": targets}
    section.update(event)
    return {"server": {"dataDir": test.mktemp()}, "event": section}


def row(target: str, type: str, destination: str, **counts: int) -> dict[str, Any]:
    """
    One expected row of C{GET /events}.
    """
    out = {"target": target, "type": type, "destination": destination,
           "succeeded": 0, "pending": 0, "retrying": 0, "failed": 0}
    out.update(counts)
    return out


def finished(rows: list[dict[str, Any]]) -> int:
    """
    How many deliveries are done for good (succeeded or failed), all targets.
    """
    return sum(r["succeeded"] + r["failed"] for r in rows)


def retrying(rows: list[dict[str, Any]]) -> int:
    return sum(r["retrying"] for r in rows)


@inlineCallbacks
def waitFor(condition: Callable[[], Any], what: str, limit: float = WAIT_LIMIT) -> Any:
    """
    Poll C{condition} (which may return a L{Deferred}) every 50 ms until it
    is true; its value.  Fails after C{limit} seconds.
    """
    deadline = reactor.seconds() + limit
    while True:
        value = yield maybeDeferred(condition)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"still waiting after {limit} s for {what}")
        yield deferLater(reactor, 0.05, lambda: None)


@inlineCallbacks
def getEvents(server: Any) -> Any:
    """
    The decoded answer of C{GET /events}.
    """
    response = yield restRequest(server, "GET", "/events")
    body = yield response.json()
    if response.code != 200:
        raise AssertionError(f"GET /events answered {response.code}: {body}")
    return body


@inlineCallbacks
def waitForEvents(server: Any, test: Callable[[list[dict[str, Any]]], bool], what: str,
                  limit: float = WAIT_LIMIT) -> Any:
    """
    Poll C{GET /events} until C{test(rows)} holds; the whole answer.
    """
    seen: list[Any] = []

    @inlineCallbacks
    def check() -> Any:
        body = yield getEvents(server)
        seen[:] = [body]
        return body if test(body["data"]) else None

    try:
        return (yield waitFor(check, what, limit))
    except AssertionError as e:
        raise AssertionError(f"{e}; last GET /events: {seen}") from None


def byId(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(messages, key=lambda m: m["id"])


def bodies(sink: Sink) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in sink.requests]


class EventsTestCase(TestCase):
    """
    Chat helpers.
    """

    timeout = 30

    @inlineCallbacks
    def open(self, server: Any, userId: int) -> Any:
        client = yield openClient(server, userId=userId)
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def chat(self, server: Any, texts: list[str]) -> Any:
        """
        User 1 sends each of C{texts} to user 2; what user 2 received.
        """
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        for text in texts:
            alice.send({"type": "text", "text": text, "recipients": [2]})
        got = []
        for _ in texts:
            got.append((yield bob.messages.get()))
        self.assertEqual([m["text"] for m in got], texts)
        return got


class WebhookTests(EventsTestCase):
    """
    Postback targets against real webhooks on loopback.
    """

    @inlineCallbacks
    def test_everyMessagePosted(self) -> Any:
        """
        Every routed message is POSTed as the body, JSON equal to what the
        WebSocket recipient received, with C{Content-Type:
        application/json} and the target's auth header; C{GET /events}
        counts them as succeeded, with nothing pending, retrying or failed.
        """
        sink = yield startSink(self)
        target = hook(sink.url, auth={"type": "header", "name": "X-Token", "value": "s3cret"})
        server = yield startServer(self, withEvents(self, [target]))
        received = yield self.chat(server, ["a", "b", "c", "d", "e"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 5, "5 deliveries")
        self.assertEqual(
            body, {"success": True, "data": [row("targets[0]", "postback", sink.url, succeeded=5)]}
        )
        self.assertEqual(len(sink.requests), 5)
        for request in sink.requests:
            self.assertEqual(request.method, b"POST")
            self.assertEqual(request.header(b"content-type"), [b"application/json"])
            self.assertEqual(request.header(b"x-token"), [b"s3cret"])
        self.assertEqual(byId(bodies(sink)), byId(received))

    @inlineCallbacks
    def test_retriedUntilAccepted(self) -> Any:
        """
        A webhook that answers 500 twice, then 200, gets the message three
        times; it is counted once, as succeeded.
        """
        sink = yield startSink(self, lambda i: 500 if i < 2 else 200)
        server = yield startServer(self, withEvents(self, [hook(sink.url)], retryCount=3))
        [received] = yield self.chat(server, ["again"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the delivery")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, succeeded=1)])
        self.assertEqual(bodies(sink), [received] * 3)
        self.assertEqual(sink.answered, 3)

    @inlineCallbacks
    def test_noAnswerTimesOut(self) -> Any:
        """
        A webhook that never answers: each attempt is given up after
        C{connectionTimeoutSeconds}, retried C{retryCount} times, then
        counted as failed.
        """
        sink = yield startSink(self, lambda i: "hang")
        server = yield startServer(self, withEvents(self, [hook(sink.url)], retryCount=1))
        [received] = yield self.chat(server, ["anyone?"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the failure")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, failed=1)])
        self.assertEqual(bodies(sink), [received] * 2)
        self.assertEqual(sink.answered, 0)
        # the retry came after the first attempt timed out
        self.assertGreaterEqual(sink.requests[1].at - sink.requests[0].at, 0.5)

    @inlineCallbacks
    def test_tricklingAnswerCut(self) -> Any:
        """
        A webhook that answers 200 and then trickles its body: each attempt
        is cut at C{connectionTimeoutSeconds} (its connection closed),
        retried, then counted as failed, never as succeeded.
        """
        sink = yield startSink(self, lambda i: "trickle")
        server = yield startServer(self, withEvents(self, [hook(sink.url)], retryCount=1))
        yield self.chat(server, ["slowly"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the failure")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, failed=1)])
        self.assertEqual(len(sink.requests), 2)
        self.assertGreaterEqual(sink.requests[1].at - sink.requests[0].at, 0.5)
        yield waitFor(lambda: not sink.held, "the cut connections to close")

    @inlineCallbacks
    def test_connectionRefused(self) -> Any:
        """
        A webhook where nobody listens: tried 1 + C{retryCount} times, then
        counted as failed.
        """
        url = f"http://127.0.0.1:{deadPort()}/hook"
        server = yield startServer(self, withEvents(self, [hook(url)], retryCount=2))
        yield self.chat(server, ["dead"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the failure")
        self.assertEqual(body["data"], [row("targets[0]", "postback", url, failed=1)])

    @inlineCallbacks
    def test_connectionRefusedFallback(self) -> Any:
        """
        When the primary refuses connections, its fallback gets the message
        once the retries are used up, and the success counts for the
        fallback.
        """
        sink = yield startSink(self)
        url = f"http://127.0.0.1:{deadPort()}/hook"
        target = hook(url, fallback=[hook(sink.url)])
        server = yield startServer(self, withEvents(self, [target], retryCount=2))
        [received] = yield self.chat(server, ["elsewhere"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the delivery")
        self.assertEqual(
            body["data"],
            [row("targets[0]", "postback", url),
             row("targets[0].fallback[0]", "postback", sink.url, succeeded=1)],
        )
        self.assertEqual(bodies(sink), [received])

    @inlineCallbacks
    def test_redirectNotFollowed(self) -> Any:
        """
        A 302 is a refusal: the redirect is not followed (the webhook it
        points to gets nothing), and the delivery fails after its retries.
        """
        elsewhere = yield startSink(self)
        sink = yield startSink(self, lambda i: (302, {b"Location": elsewhere.url.encode()}))
        server = yield startServer(self, withEvents(self, [hook(sink.url)], retryCount=1))
        [received] = yield self.chat(server, ["moved?"])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the failure")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, failed=1)])
        self.assertEqual(bodies(sink), [received] * 2)
        self.assertEqual(elsewhere.requests, [])

    @inlineCallbacks
    def sendMixed(self, server: Any) -> Any:
        """
        User 1 sends an ignored C{typing} message to user 2, the REST API
        sends a text (sender 0), then user 1 a text; each reaches user 2.
        """
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        alice.send({"type": "typing", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["type"], "typing")
        response = yield restRequest(
            server, "POST", "/send-message",
            data=json.dumps({"type": "text", "text": "from api", "recipients": [2]}).encode(),
            headers={"Content-Type": ["application/json"]},
        )
        self.assertEqual((response.code, (yield response.content())), (202, b""))
        fromApi = yield bob.messages.get()
        self.assertEqual((fromApi["sender"], fromApi["text"]), (0, "from api"))
        alice.send({"type": "text", "text": "kept", "recipients": [2]})
        kept = yield bob.messages.get()
        self.assertEqual(kept["text"], "kept")
        return fromApi, kept

    @inlineCallbacks
    def test_filters(self) -> Any:
        """
        Messages of an C{ignoreTypes} type, and the REST API's (sender 0),
        are routed but not sent to the targets.
        """
        sink = yield startSink(self)
        server = yield startServer(self, withEvents(self, [hook(sink.url)], ignoreTypes=["typing"]))
        _, kept = yield self.sendMixed(server)
        body = yield waitForEvents(server, lambda rows: finished(rows) == 1, "the delivery")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, succeeded=1)])
        self.assertEqual(bodies(sink), [kept])

    @inlineCallbacks
    def test_sendBotMessages(self) -> Any:
        """
        With C{sendBotMessages}, the REST API's messages are sent too (the
        ignored types still are not).
        """
        sink = yield startSink(self)
        raw = withEvents(self, [hook(sink.url)], ignoreTypes=["typing"], sendBotMessages=True)
        server = yield startServer(self, raw)
        fromApi, kept = yield self.sendMixed(server)
        body = yield waitForEvents(server, lambda rows: finished(rows) == 2, "the deliveries")
        self.assertEqual(body["data"], [row("targets[0]", "postback", sink.url, succeeded=2)])
        self.assertEqual(byId(bodies(sink)), byId([fromApi, kept]))

    @inlineCallbacks
    def test_slowTargetsDoNotSlowRouting(self) -> Any:
        """
        With a webhook that answers after 2 s, and one that refuses
        connections, both busy, 200 messages between two clients all
        arrive before the slow webhook has answered even once.
        """
        slow = yield startSink(self, lambda i: ("delay", 2.0, 200))
        dead = f"http://127.0.0.1:{deadPort()}/hook"
        raw = withEvents(self, [hook(slow.url, connectionTimeoutSeconds=10), hook(dead)], maxParallelWorkers=4)
        server = yield startServer(self, raw)
        # runs before the server stops: answer the held requests, so that
        # the stop does not wait for them
        self.addCleanup(slow.release)
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        for i in range(8):
            alice.send({"type": "text", "text": f"w{i}", "recipients": [2]})
        for i in range(8):
            yield bob.messages.get()
        # both webhooks are busy: the slow one holds requests, the dead one
        # was tried and waits for a retry
        yield waitFor(lambda: slow.held, "a request held by the slow webhook")
        yield waitForEvents(server, lambda rows: rows[1]["retrying"] > 0, "a retry of the dead webhook")
        self.assertEqual(slow.answered, 0)
        started = reactor.seconds()
        for i in range(200):
            alice.send({"type": "text", "text": str(i), "recipients": [2]})
        texts = []
        for i in range(200):
            texts.append((yield bob.messages.get())["text"])
        elapsed = reactor.seconds() - started
        self.assertEqual(texts, [str(i) for i in range(200)])
        self.assertEqual(slow.answered, 0, "the slow webhook answered before the 200 messages were delivered")
        firstAnswerDue = slow.requests[0].at + 2.0
        log.info(
            "200 messages routed in {elapsed:.3f} s while the webhooks were busy; first webhook answer due"
            " {margin:.3f} s after they were all delivered",
            elapsed=elapsed, margin=firstAnswerDue - reactor.seconds(),
        )


class RedisTargetTests(EventsTestCase):
    """
    The redis target (queue mode) against a real redis-server.
    """

    def redisTarget(self, redis: RedisServer) -> dict[str, Any]:
        return {**redis.targetFields(), "mode": {"type": "queue", "name": "events"},
                "connectionTimeoutSeconds": 0.5}

    @inlineCallbacks
    def queued(self, redis: RedisServer) -> Any:
        items = yield redis.command("LRANGE", "events", 0, -1)
        return [json.loads(item) for item in items]

    @inlineCallbacks
    def test_queueInOrder(self) -> Any:
        """
        Messages are RPUSHed onto the list in the order they were routed.
        """
        redis = RedisServer(self)
        yield redis.start()
        server = yield startServer(self, withEvents(self, [self.redisTarget(redis)]))
        received = yield self.chat(server, [str(i) for i in range(10)])
        body = yield waitForEvents(server, lambda rows: finished(rows) == 10, "10 deliveries")
        self.assertEqual(body, {"success": True, "data": [row("targets[0]", "redis", "queue events", succeeded=10)]})
        self.assertEqual((yield self.queued(redis)), received)

    @inlineCallbacks
    def test_downAtStart(self) -> Any:
        """
        With Redis down when the server starts, events wait (retrying) and
        are delivered once Redis is up.
        """
        redis = RedisServer(self)
        server = yield startServer(self, withEvents(self, [self.redisTarget(redis)], retryCount=50))
        received = yield self.chat(server, ["a", "b", "c"])
        yield waitForEvents(server, lambda rows: retrying(rows) == 3, "3 deliveries tried and waiting")
        yield redis.start()
        body = yield waitForEvents(server, lambda rows: finished(rows) == 3, "3 deliveries")
        self.assertEqual(body["data"], [row("targets[0]", "redis", "queue events", succeeded=3)])
        self.assertEqual(byId((yield self.queued(redis))), byId(received))

    @inlineCallbacks
    def test_restartMidRun(self) -> Any:
        """
        Redis stopped mid-run, then started again on the same port: the
        events routed meanwhile arrive after the restart; none is lost.
        """
        redis = RedisServer(self)
        yield redis.start()
        server = yield startServer(self, withEvents(self, [self.redisTarget(redis)], retryCount=50))
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        before = []
        for text in ("a", "b"):
            alice.send({"type": "text", "text": text, "recipients": [2]})
            before.append((yield bob.messages.get()))
        yield waitForEvents(server, lambda rows: finished(rows) == 2, "2 deliveries")
        self.assertEqual((yield self.queued(redis)), before)
        yield redis.stop()
        meanwhile = []
        for text in ("c", "d", "e"):
            alice.send({"type": "text", "text": text, "recipients": [2]})
            meanwhile.append((yield bob.messages.get()))
        yield waitForEvents(server, lambda rows: retrying(rows) == 3, "3 deliveries tried and waiting")
        yield redis.start()
        body = yield waitForEvents(server, lambda rows: finished(rows) == 5, "5 deliveries")
        self.assertEqual(body["data"], [row("targets[0]", "redis", "queue events", succeeded=5)])
        # the restarted redis-server (no persistence) holds what came after
        self.assertEqual(byId((yield self.queued(redis))), byId(meanwhile))


class _Output(ProcessProtocol):
    """
    Collects a process's standard output and error apart.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


class DataDirectoryTests(TestCase):
    """
    A data directory that cannot be used keeps the server from starting,
    with a clear message, and touches nothing.
    """

    timeout = 30

    def corrupted(self) -> tuple[str, str, bytes]:
        """
        A data directory whose database file holds garbage: the directory,
        the file, its content.
        """
        dataDir = os.path.abspath(self.mktemp())
        os.makedirs(dataDir)
        path = os.path.join(dataDir, DATABASE_FILENAME)
        content = b"garbage" * 100
        with open(path, "wb") as f:
            f.write(content)
        return dataDir, path, content

    def config(self, dataDir: str, **raw: Any) -> Any:
        raw["server"] = {"dataDir": dataDir, "listen": "tcp:0:interface=127.0.0.1"}
        raw["restApi"] = {"listen": "tcp:0:interface=127.0.0.1"}
        return parseConfig(raw)

    def test_underRegularFile(self) -> None:
        """
        A data directory under a regular file: L{StorageError}, naming the
        database file and why.
        """
        parent = os.path.abspath(self.mktemp())
        with open(parent, "wb") as f:
            f.write(b"not a directory")
        dataDir = os.path.join(parent, "data")
        config = self.config(dataDir, chat={"enableUndeliveredQueue": True})
        error = self.assertRaises(StorageError, buildService, config, reactor)
        self.assertEqual(
            str(error), f"cannot open wsserver database {os.path.join(dataDir, DATABASE_FILENAME)}: Not a directory"
        )
        with open(parent, "rb") as f:
            self.assertEqual(f.read(), b"not a directory")

    def test_corruptedDatabase(self) -> None:
        """
        A database file that is not SQLite (the event notifier needs it):
        L{StorageError} saying so, and the file is left byte for byte.
        """
        dataDir, path, content = self.corrupted()
        config = self.config(dataDir, event={"enabled": True, "targets": [hook("http://127.0.0.1:1/")]})
        error = self.assertRaises(StorageError, buildService, config, reactor)
        self.assertEqual(
            str(error),
            f"{path} is not a wsserver database (it is not an SQLite file: corrupted, or another kind of file);"
            " refusing to touch it",
        )
        with open(path, "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertEqual(os.listdir(dataDir), [DATABASE_FILENAME])

    @inlineCallbacks
    def test_commandLine(self) -> Any:
        """
        The real C{twistd wsserver} with a corrupted database exits 1 with
        C{wsserver: cannot start: ...} on its standard error, without
        listening, and leaves the file as it was.
        """
        dataDir, path, content = self.corrupted()
        configPath = os.path.abspath(self.mktemp())
        with open(configPath, "w") as f:
            json.dump({"chat": {"enableUndeliveredQueue": True}}, f)
        cwd = self.mktemp()
        os.makedirs(cwd)
        process = _Output()
        args = ["--nodaemon", "--pidfile=", "wsserver", "--ws", "tcp:0:interface=127.0.0.1",
                "--rest", "tcp:0:interface=127.0.0.1", "--data-dir", dataDir, "-C", configPath]
        transport = reactor.spawnProcess(
            process, sys.executable, [sys.executable, "-c", _TWISTD, *args], env=dict(os.environ), path=cwd
        )

        def kill() -> Any:
            if process.ended.called:
                return None
            transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(kill)
        ended = yield process.ended
        output = process.out + process.err
        self.assertIsInstance(ended, ProcessTerminated, output)
        self.assertEqual(ended.exitCode, 1, output)
        self.assertEqual(
            process.err.decode(),
            f"wsserver: cannot start: {path} is not a wsserver database (it is not an SQLite file: corrupted,"
            " or another kind of file); refusing to touch it\n",
        )
        self.assertNotIn(b"listening", output)
        self.assertNotIn(b"Traceback", output)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), content)
