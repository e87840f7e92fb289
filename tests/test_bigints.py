"""
Integers in C{data} beyond 64 bits arrive exactly as sent (SPEC section 8):
parsed, serialized, delivered, queued, sent through the REST API and handed
to the event notifier, byte for byte.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import orjson

from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from wsserver.config import MessageConfig
from wsserver.ids import numericRule
from wsserver.messages import InvalidPayload, MessageFactory, dumpJSON, parsePayload
from wsserver.routing import Router
from wsserver.queue.memory import MemoryUndeliveredStore

from .support import ChatClient, closeClient, openClient, restRequest, startServer
from .test_routing import FakeConnection

BIG = 123456789012345678901234567890
NEG = -(2**70)

#: C{data} as the client writes it, and as it must arrive.
DATA = b'{"big":123456789012345678901234567890,"neg":-1180591620717411303424,"f":1.5,"s":"x","n":[1,null]}'


def payload(data: bytes = DATA, recipients: bytes = b"[2]", **fields: bytes) -> bytes:
    """
    A message's JSON text with C{data} written as given.
    """
    extra = b"".join(b'"%s":%s,' % (k.encode(), v) for k, v in fields.items())
    return b'{"type":"t","text":"hi",%s"recipients":%s,"data":%s}' % (extra, recipients, data)


def dataOf(raw: bytes) -> bytes:
    """
    The C{data} part of a delivered message's text (it comes last).
    """
    start = raw.index(b'"data":') + len(b'"data":')
    assert raw.endswith(b"}")
    return raw[start:-1]


class ParseTests(SynchronousTestCase):
    """
    L{MessageFactory.fromPayload} and L{parsePayload} read big integers
    exactly; L{dumpJSON} writes them exactly.
    """

    def setUp(self) -> None:
        self.factory = MessageFactory(Clock(), ZoneInfo("UTC"), nodeTag=1, ids=numericRule)

    def roundTrip(self, data: bytes) -> bytes:
        """
        C{data} sent in a message, as it is delivered.
        """
        return dataOf(self.factory.fromPayload(payload(data), 5).serialize())

    def test_object(self) -> None:
        """
        Big integers in an object are Python integers, exact, and the
        delivered text is the sent one; other values are as usual.
        """
        message = self.factory.fromPayload(payload(), 5)
        self.assertEqual(message.data, {"big": BIG, "neg": NEG, "f": 1.5, "s": "x", "n": [1, None]})
        self.assertIs(type(message.data["big"]), int)
        self.assertEqual(dataOf(message.serialize()), DATA)

    def test_scalarAndNested(self) -> None:
        """
        A big integer as the whole C{data}, in an array, and deep in objects.
        """
        for data in (b"123456789012345678901234567890", b"-1180591620717411303424",
                     b"[1,123456789012345678901234567890]", b'{"a":{"b":[{"c":-1180591620717411303424}]}}'):
            self.assertEqual(self.roundTrip(data), data)

    def test_bounds(self) -> None:
        """
        The integers next to the 64-bit bounds (which orjson reads itself)
        and just beyond them are all exact.
        """
        for value in (2**64 - 1, -(2**63), 2**64, -(2**63) - 1, 2**63):
            data = b"[%d]" % value
            self.assertEqual(self.roundTrip(data), data, value)

    def test_beyondDouble(self) -> None:
        """
        An integer of 400 digits (beyond a double's range, which orjson
        refuses) is carried exactly too.
        """
        data = b"[-" + b"9" * 400 + b"]"
        self.assertEqual(self.roundTrip(data), data)

    def test_tooManyDigits(self) -> None:
        """
        An integer of more than 4300 digits (which Python will not convert)
        is an invalid payload saying so.
        """
        e = self.assertRaises(InvalidPayload, self.factory.fromPayload, payload(b"[" + b"1" * 5000 + b"]"), 5)
        self.assertEqual(e.reason, "Exceeds the limit (4300 digits) for integer string conversion")

    def test_otherErrorsKept(self) -> None:
        """
        Text with a long integer that is not JSON for another reason (a
        trailing comma, NaN) is refused with orjson's own error.
        """
        for data in (b"[" + b"1" * 400 + b",]", b"[" + b"1" * 400 + b",NaN]", b"[" + b"1" * 30 + b",]"):
            raw = payload(data)
            expected = self.assertRaises(orjson.JSONDecodeError, orjson.loads, raw)
            e = self.assertRaises(InvalidPayload, self.factory.fromPayload, raw, 5)
            self.assertEqual(e.reason, str(expected))

    def test_floatsStayFloats(self) -> None:
        """
        Large floats (written with a fraction or an exponent) stay floats,
        and long digits in strings stay strings.
        """
        message = self.factory.fromPayload(
            payload(b'{"x":1e300,"y":1.5e20,"z":12345678901234567890.5,"s":"123456789012345678901234567890"}'), 5
        )
        self.assertEqual(message.data, {"x": 1e300, "y": 1.5e20, "z": 12345678901234567890.5,
                                        "s": "123456789012345678901234567890"})
        self.assertEqual([type(v) for v in message.data.values()], [float, float, float, str])

    def test_idsStayUint64(self) -> None:
        """
        C{sender} and C{recipients} beyond 64 bits are still refused with the
        usual reasons, with big integers in C{data} or not, and beyond a
        double's range too.
        """
        cases = [
            (payload(sender=b"123456789012345678901234567890"), "$.sender must be uint64_t"),
            (payload(DATA, sender=b"18446744073709551616"), "$.sender must be uint64_t"),
            (payload(b"null", sender=b"9" * 400), "$.sender must be uint64_t"),
            (payload(recipients=b"[2,123456789012345678901234567890]"), "$.recipients[] must be uint64_t[]"),
            (payload(b"null", recipients=b"[" + b"9" * 400 + b"]"), "$.recipients[] must be uint64_t[]"),
        ]
        for raw, reason in cases:
            e = self.assertRaises(InvalidPayload, self.factory.fromPayload, raw, 5)
            self.assertEqual(e.reason, reason, raw)

    def test_strPayload(self) -> None:
        """
        A payload given as text reads the same.
        """
        message = self.factory.fromPayload(payload().decode(), 5)
        self.assertEqual(dataOf(message.serialize()), DATA)
        self.assertEqual(parsePayload(payload(b"[" + b"7" * 400 + b"]").decode())["data"], [int("7" * 400)])

    def test_dumpJSON(self) -> None:
        """
        L{dumpJSON} writes what orjson writes, and big integers exactly, in
        the same compact form; nesting too deep for orjson, with no big
        integer, is still a C{TypeError} (the router's "cannot be carried").
        """
        self.assertEqual(dumpJSON({"a": [1, "\u00e9"]}), '{"a":[1,"\u00e9"]}'.encode())
        self.assertEqual(dumpJSON({"a": [BIG, "\u00e9"], "b": None}), '{"a":[%d,"\u00e9"],"b":null}'.encode() % BIG)
        deep: Any = 1
        for _ in range(300):
            deep = [deep]
        self.assertRaises(TypeError, dumpJSON, {"data": deep})


class RoutingTests(SynchronousTestCase):
    """
    The router delivers, queues and notifies big integers exactly.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryUndeliveredStore(ttlSeconds=3600, maxPerUser=100)
        self.notified: list[bytes] = []
        self.router = Router(
            MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC"), nodeTag=1), self.store,
            lambda message, raw: self.notified.append(raw),
        )

    def connect(self, userId: int) -> FakeConnection:
        conn = FakeConnection(userId)
        self.router.attach(conn)
        return conn

    def test_deliveredAndNotified(self) -> None:
        """
        An online recipient gets the exact text, as does the event notifier.
        """
        alice, bob = self.connect(1), self.connect(2)
        self.router.receive(alice, payload())
        self.assertEqual([dataOf(raw) for raw in bob.sent], [DATA])
        self.assertEqual([dataOf(raw) for raw in self.notified], [DATA])

    def test_queued(self) -> None:
        """
        Offline recipients get the exact text when they connect: the one
        recipient whose payload is stored as it is, and each of several,
        whose copies are written again.
        """
        alice = self.connect(1)
        self.router.receive(alice, payload(recipients=b"[2]"))
        self.router.receive(alice, payload(recipients=b"[3,4]"))
        for userId in (2, 3, 4):
            conn = self.connect(userId)
            self.assertEqual([dataOf(raw) for raw in conn.sent], [DATA], userId)

    def test_fromOtherNode(self) -> None:
        """
        A message that another node of a cluster routed is queued exactly
        for a user who left (as a copy for several recipients), and for one
        that no node took.
        """
        raw = self.router.messages.fromPayload(payload(recipients=b"[3,4]"), 1).serialize()
        self.router.deliverForwarded([3], raw)
        self.router.undeliverable([4], raw)
        for userId in (3, 4):
            stored = self.successResultOf(self.store.fetch(userId, 0))
            self.assertEqual([dataOf(p) for _, p in stored], [DATA], userId)
            self.assertEqual(orjson.loads(stored[0][1])["recipients"], [userId])


class RawClient(ChatClient):
    """
    A test client that keeps what it receives as sent, undecoded.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(payload)


class Hook(Resource):
    """
    A webhook that keeps the bodies it receives, undecoded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: DeferredQueue[bytes] = DeferredQueue()

    def render_POST(self, request: Any) -> bytes:
        self.bodies.put(request.content.read())
        return b""


class EndToEndTests(TestCase):
    """
    Over real sockets: WebSocket, REST, the undelivered queue, a webhook.
    """

    timeout = 20

    @inlineCallbacks
    def open(self, server: Any, userId: int) -> Any:
        client = yield openClient(server, userId=userId, protocol=RawClient)
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_webSocketAndEvents(self) -> Any:
        """
        From one WebSocket client to another, and to the event webhook, the
        C{data} text arrives as sent.
        """
        hook = Hook()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(hook))
        self.addCleanup(port.stopListening)
        server = yield startServer(self, {"event": {"enabled": True, "targets": [
            {"type": "postback", "url": f"http://127.0.0.1:{port.getHost().port}/hook"}]}})
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        alice.sendMessage(payload())
        self.assertEqual(dataOf((yield bob.messages.get())), DATA)
        self.assertEqual(dataOf((yield hook.bodies.get())), DATA)

    @inlineCallbacks
    def test_restAndQueue(self) -> Any:
        """
        C{POST /send-message} to an online user and, through the undelivered
        queue, to one who connects later: the C{data} text arrives as sent.
        """
        server = yield startServer(self, {"chat": {"enableUndeliveredQueue": True}})
        bob = yield self.open(server, 2)
        for recipients in (b"[2]", b"[3]"):
            response = yield restRequest(server, "POST", "/send-message", data=payload(recipients=recipients),
                                         headers={"Content-Type": ["application/json"]})
            self.assertEqual((response.code, (yield response.content())), (202, b""))
        self.assertEqual(dataOf((yield bob.messages.get())), DATA)
        carol = yield self.open(server, 3)
        self.assertEqual(dataOf((yield carol.messages.get())), DATA)

    @inlineCallbacks
    def test_restIdsStayUint64(self) -> Any:
        """
        Through the REST API, a C{sender} beyond 64 bits is a 400 with the
        usual reason.
        """
        server = yield startServer(self, {"chat": {"userIds": "numeric"}})
        response = yield restRequest(server, "POST", "/send-message",
                                     data=payload(sender=b"123456789012345678901234567890"),
                                     headers={"Content-Type": ["application/json"]})
        self.assertEqual((response.code, (yield response.json())),
                         (400, {"success": False, "status": 400,
                                "message": "Invalid payload. $.sender must be uint64_t"}))

