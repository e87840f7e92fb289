"""
Tests for C{Idempotency-Key} on C{POST /send-message}: the resource with
L{treq.testing.StubTreq}, then the real server end to end, alone and as two
cluster nodes on one Redis.
"""

from __future__ import annotations

import os
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from wsserver.auth import buildAuthenticator
from wsserver.config import AuthConfig, ConfigError, parseConfig
from wsserver.idempotency import IIdempotency, MemoryIdempotency
from wsserver.config import MessageConfig
from wsserver.messages import MessageFactory
from wsserver.queue.memory import MemoryUndeliveredStore
from wsserver.rest import makeRestResource
from wsserver.routing import Router

from .redis import RedisTestCase
from .support import closeClient, openClient, restRequest, startServer
from .test_rest import BASE, JSON, RestMixin

MESSAGE = {"type": "text", "text": "hi", "recipients": [5]}


@implementer(IIdempotency)
class _Broken:
    """
    A store that cannot answer (Redis down).
    """

    def claim(self, key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        return fail(ConnectionError("Redis unreachable"))

    def settle(self, key: bytes, value: bytes) -> Deferred[None]:
        return fail(ConnectionError("Redis unreachable"))


class ConfigTests(SynchronousTestCase):
    """
    C{restApi.idempotencySeconds}.
    """

    def test_default(self) -> None:
        """
        300 by default; any number of 0 or more.
        """
        self.assertEqual(parseConfig({}).restApi.idempotencySeconds, 300)
        self.assertEqual(parseConfig({"restApi": {"idempotencySeconds": 0}}).restApi.idempotencySeconds, 0)
        self.assertEqual(parseConfig({"restApi": {"idempotencySeconds": 1.5}}).restApi.idempotencySeconds, 1.5)

    def test_bad(self) -> None:
        """
        A negative or non-number value is refused, naming the key.
        """
        e = self.assertRaises(ConfigError, parseConfig, {"restApi": {"idempotencySeconds": -1}}, False)
        self.assertEqual(e.problems, ["restApi.idempotencySeconds: -1 must be at least 0"])
        e = self.assertRaises(ConfigError, parseConfig, {"restApi": {"idempotencySeconds": "5"}}, False)
        self.assertEqual(e.problems, ['restApi.idempotencySeconds: must be a number, not string "5"'])


class IdempotencyKeyTests(RestMixin, SynchronousTestCase):
    """
    C{Idempotency-Key} on C{POST /send-message}, on the resource.
    """

    def setUp(self) -> None:
        self.setUpRest()
        self.store = MemoryIdempotency(self.clock)
        self.useStore(self.store, 300)
        self.recipient = self.connect(5)

    def useStore(self, store: Any, seconds: float) -> None:
        self.resource = makeRestResource(self.router, buildAuthenticator(AuthConfig()), "wsserver",
                                         idempotency=store, idempotencySeconds=seconds,
                                         messages=self.router.messages, clock=self.clock)
        self.client = StubTreq(self.resource)

    def post(self, key: str | None, payload: Any = MESSAGE) -> tuple[Any, bytes]:
        headers = dict(JSON)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.send(payload, headers)

    def assertAccepted(self, answer: tuple[Any, bytes], replayed: bool = False) -> None:
        response, body = answer
        self.assertEqual((response.code, body), (202, b""))
        self.assertEqual(response.headers.getRawHeaders(b"Idempotent-Replayed"), [b"true"] if replayed else None)

    def test_repeatRoutesNothing(self) -> None:
        """
        A second request with the same key answers 202 again (saying it
        was replayed) and routes nothing; another key routes.
        """
        self.assertAccepted(self.post("order-1"))
        self.assertAccepted(self.post("order-1", {**MESSAGE, "text": "changed"}), replayed=True)
        self.assertEqual([m["text"] for m in self.recipient.sent], ["hi"])
        self.assertAccepted(self.post("order-2"))
        self.assertEqual(len(self.recipient.sent), 2)

    def test_storesTheMessageId(self) -> None:
        """
        The key is claimed in the C{rest:} namespace with the id of the
        routed message.
        """
        self.post("k")
        [message] = self.recipient.sent
        self.assertEqual(self.successResultOf(self.store.claim(b"rest:k", b"", 1)), message["id"].encode())

    def test_expires(self) -> None:
        """
        After C{idempotencySeconds}, the same key routes again.
        """
        self.post("k")
        self.clock.advance(299)
        self.assertAccepted(self.post("k"), replayed=True)
        self.clock.advance(1)
        self.assertAccepted(self.post("k"))
        self.assertEqual(len(self.recipient.sent), 2)

    def test_withoutKey(self) -> None:
        """
        Requests without the header route every time.
        """
        self.post(None)
        self.post(None)
        self.assertEqual(len(self.recipient.sent), 2)

    def test_tooLong(self) -> None:
        """
        A key over 200 characters (not bytes) answers 400 and routes nothing;
        200 characters pass.
        """
        self.assertError(self.post("x" * 201), 400, "Idempotency-Key must be at most 200 characters")
        self.assertEqual(self.recipient.sent, [])
        self.assertAccepted(self.post("é" * 200))
        self.assertEqual(len(self.recipient.sent), 1)

    def test_empty(self) -> None:
        """
        An empty key answers 400.
        """
        self.assertError(self.post(""), 400, "Idempotency-Key must not be empty")
        self.assertEqual(self.recipient.sent, [])

    def test_invalidDoesNotUseTheKey(self) -> None:
        """
        A request refused for its payload does not use up its key: the
        corrected request with the same key routes.
        """
        response, body = self.post("k", {"type": "text", "recipients": []})
        self.assertEqual(response.code, 400)
        deep = b'{"type": "text", "text": "hi", "recipients": [5], "data": ' + b"[" * 300 + b"]" * 300 + b"}"
        self.assertError(self.post("k", deep), 400,
                         "Invalid payload. $.data cannot be carried: Recursion limit reached")
        self.assertAccepted(self.post("k"))
        self.assertEqual(len(self.recipient.sent), 1)

    def test_storeDown(self) -> None:
        """
        When the store cannot answer, the answer is 503 and nothing is
        routed: the caller tries again.
        """
        self.useStore(_Broken(), 300)
        self.assertError(self.post("k"), 503, "Idempotency-Key could not be checked; nothing was sent, try again")
        self.assertEqual(self.recipient.sent, [])
        self.flushLoggedErrors()

    def test_off(self) -> None:
        """
        With C{idempotencySeconds} 0 the header is ignored, however long.
        """
        self.useStore(self.store, 0)
        self.assertAccepted(self.post("k"))
        self.assertAccepted(self.post("k"))
        self.assertAccepted(self.post("x" * 500))
        self.assertEqual(len(self.recipient.sent), 3)

    def test_pendingOnDeadNode(self) -> None:
        """
        A key left pending by a node that died (or crashed) between its
        claim and its settle routes again, then is settled: the next repeat
        is replayed.
        """
        self.successResultOf(self.store.claim(b"rest:k", b"p:gone:m1", 300))
        self.assertAccepted(self.post("k"))
        [message] = self.recipient.sent
        self.assertEqual(self.successResultOf(self.store.claim(b"rest:k", b"", 1)), message["id"].encode())
        self.assertAccepted(self.post("k"), replayed=True)
        self.assertEqual(len(self.recipient.sent), 1)

    def test_pendingOnLiveNode(self) -> None:
        """
        A key pending on another node that is alive (being routed there)
        answers 409 and routes nothing.
        """
        self.router.peers.isAlive = lambda node: node in ("", "b")  # type: ignore[method-assign]
        self.successResultOf(self.store.claim(b"rest:k", b"p:b:m1", 300))
        self.assertError(self.post("k"), 409, "A request with this Idempotency-Key is in progress; try again")
        self.assertEqual(self.recipient.sent, [])

    def useHeldStore(self) -> list[Deferred[None]]:
        """
        A router whose undelivered queue's writes wait for the test: the
        list of their L{Deferred}s.
        """
        held: list[Deferred[None]] = []

        class Held(MemoryUndeliveredStore):
            def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
                d: Deferred[None] = Deferred()
                held.append(d)
                return d

            def putMany(self, userIds: Any, payload: bytes, now: float) -> Deferred[None]:
                return self.put(0, payload, now)

        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")),
                             store=Held(ttlSeconds=3600, maxPerUser=10))
        self.useStore(self.store, 300)
        return held

    def postLater(self, key: str) -> Deferred[Any]:
        d = self.client.request("POST", BASE + "/send-message", data=orjson.dumps({**MESSAGE, "recipients": [6]}),
                                headers={**JSON, "Idempotency-Key": key})
        self.client.flush()
        return d

    def test_settledAfterCommit(self) -> None:
        """
        The key stays pending until the message is stored (here in the
        undelivered queue), and the 202 waits for it; a repeat meanwhile
        waits too, and is answered as replayed.
        """
        held = self.useHeldStore()
        first = self.postLater("k")
        self.assertNoResult(first)
        [write] = held
        self.assertTrue(self.successResultOf(self.store.claim(b"rest:k", b"", 1)).startswith(b"p::"))
        repeat = self.postLater("k")
        self.assertNoResult(repeat)
        self.assertEqual(len(held), 1)
        write.callback(None)
        self.client.flush()
        self.assertEqual(self.successResultOf(first).code, 202)
        response = self.successResultOf(repeat)
        self.assertEqual(response.code, 202)
        self.assertEqual(response.headers.getRawHeaders(b"Idempotent-Replayed"), [b"true"])
        self.assertFalse(self.successResultOf(self.store.claim(b"rest:k", b"", 1)).startswith(b"p:"))

    def test_unwrittenRoutesAgain(self) -> None:
        """
        A message one of whose writes failed (an inbox, an event store)
        answers 503, and its key routes again on the repeat.
        """
        route = self.router.route
        failures = [OSError("disk full")]

        def failing(message: Any, senderUser: Any = None, writes: Any = None) -> None:
            route(message, senderUser, writes)
            if failures:
                writes.append(fail(failures.pop()))

        self.router.route = failing  # type: ignore[method-assign]
        self.assertError(self.post("k"), 503,
                         "The message could not be stored; try again with the same Idempotency-Key")
        self.assertAccepted(self.post("k"))
        self.assertEqual(len(self.recipient.sent), 2)
        self.assertAccepted(self.post("k"), replayed=True)
        self.assertEqual(len(self.recipient.sent), 2)


def _post(server: Any, key: str, text: str = "hi", recipient: int = 5) -> Deferred[Any]:
    return restRequest(server, "POST", "/send-message",
                       data=orjson.dumps({"type": "text", "text": text, "recipients": [recipient]}),
                       headers={"Content-Type": "application/json", "Idempotency-Key": key})


class EndToEndTests(TestCase):
    """
    The real server on loopback.
    """

    timeout = 30

    @inlineCallbacks
    def test_oneRouted(self) -> Any:
        """
        Two requests with one key: both 202, the recipient gets one message
        (the next one, sent without a key, comes right after it).
        """
        server = yield startServer(self)
        client = yield openClient(server, userId=5)
        self.addCleanup(closeClient, client)
        first = yield _post(server, "abc", "first")
        second = yield _post(server, "abc", "second")
        self.assertEqual((first.code, second.code), (202, 202))
        self.assertEqual(second.headers.getRawHeaders(b"Idempotent-Replayed"), [b"true"])
        last = yield restRequest(server, "POST", "/send-message", data=orjson.dumps(
            {"type": "text", "text": "last", "recipients": [5]}), headers={"Content-Type": "application/json"})
        self.assertEqual(last.code, 202)
        self.assertEqual((yield client.messages.get())["text"], "first")
        self.assertEqual((yield client.messages.get())["text"], "last")

    @inlineCallbacks
    def test_tooLongEndToEnd(self) -> Any:
        """
        A key over 200 characters: 400 with the reason, over HTTP.
        """
        server = yield startServer(self)
        response = yield _post(server, "k" * 201)
        self.assertEqual((response.code, (yield response.json())), (400, {
            "success": False, "status": 400, "message": "Idempotency-Key must be at most 200 characters"}))

    @inlineCallbacks
    def test_configOff(self) -> Any:
        """
        C{restApi.idempotencySeconds: 0}: every request routes.
        """
        server = yield startServer(self, {"restApi": {"idempotencySeconds": 0}})
        client = yield openClient(server, userId=5)
        self.addCleanup(closeClient, client)
        yield _post(server, "abc", "first")
        yield _post(server, "abc", "second")
        self.assertEqual((yield client.messages.get())["text"], "first")
        self.assertEqual((yield client.messages.get())["text"], "second")

    @inlineCallbacks
    def test_sharedInstance(self) -> Any:
        """
        The server exposes its store as C{idempotency}: what the REST API
        claimed is claimed there.
        """
        server = yield startServer(self)
        yield _post(server, "shared")
        self.assertIsInstance(server.service.idempotency, MemoryIdempotency)
        held = yield server.service.idempotency.claim(b"rest:shared", b"x", 10)
        self.assertIsNotNone(held)


class ClusterTests(RedisTestCase):
    """
    Two nodes on one Redis share the keys.
    """

    def raw(self) -> dict[str, Any]:
        return {"cluster": {"redis": self.url, "heartbeatSeconds": 0.2, "nodeTimeoutSeconds": 1.0},
                "server": {"dataDir": os.path.abspath(self.mktemp())}}

    @inlineCallbacks
    def test_oneRoutedAcrossNodes(self) -> Any:
        """
        The same key through node A and then node B: one message routed;
        the key lives in Redis with the configured TTL.
        """
        a = yield startServer(self, self.raw())
        b = yield startServer(self, self.raw())
        client = yield openClient(a, userId=5)
        self.addCleanup(closeClient, client)
        for _ in range(100):
            if b.service.router.isOnline(5):
                break
            yield deferLater(reactor, 0.02, lambda: None)
        first = yield _post(a, "k1", "first")
        second = yield _post(b, "k1", "second")
        third = yield _post(b, "k2", "third")
        self.assertEqual((first.code, second.code, third.code), (202, 202, 202))
        self.assertEqual((yield client.messages.get())["text"], "first")
        self.assertEqual((yield client.messages.get())["text"], "third")
        ttl = int((yield self.redis.command("PTTL", "wsserver:idem:rest:k1")))
        self.assertTrue(299000 < ttl <= 300000, ttl)

    @inlineCallbacks
    def test_crashBeforeSettleRoutesAgain(self) -> Any:
        """
        A key left pending in Redis by a node that crashed after its claim
        and before its settle (here written as such a node leaves it) routes
        again on another node; a key pending on a live node answers 409.
        """
        a = yield startServer(self, self.raw())
        b = yield startServer(self, self.raw())
        client = yield openClient(a, userId=5)
        self.addCleanup(closeClient, client)
        for _ in range(100):
            if b.service.router.isOnline(5):
                break
            yield deferLater(reactor, 0.02, lambda: None)
        yield self.redis.command("SET", "wsserver:idem:rest:k1", "p:crashed:m1", "PX", "300000")
        first = yield _post(b, "k1", "again")
        self.assertEqual((first.code, first.headers.getRawHeaders(b"Idempotent-Replayed")), (202, None))
        got = yield client.messages.get()
        self.assertEqual(got["text"], "again")
        self.assertEqual((yield self.redis.command("GET", "wsserver:idem:rest:k1")), got["id"].encode())
        repeat = yield _post(a, "k1", "again")
        self.assertEqual((repeat.code, repeat.headers.getRawHeaders(b"Idempotent-Replayed")), (202, [b"true"]))
        live = a.service.cluster.nodeId
        yield self.redis.command("SET", "wsserver:idem:rest:k2", f"p:{live}:m2", "PX", "300000")
        busy = yield _post(b, "k2", "busy")
        self.assertEqual((busy.code, (yield busy.json())["message"]),
                         (409, "A request with this Idempotency-Key is in progress; try again"))
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(client.messages.pending, [])
