"""
Tests for L{wsserver.routing} and L{wsserver.stats}.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from wsserver.config import MessageConfig
from wsserver.ids import UserIdRule, anyRule, numericRule
from wsserver.messages import InvalidPayload, Message, MessageFactory
from wsserver.connection.session import Session
from wsserver.routing import IConnection, IInbound, IUserDirectory, NoPeers, Router
from wsserver.stats import emptyStatItem
from wsserver.queue import IUndeliveredStore
from wsserver.queue.memory import MemoryUndeliveredStore

KEYS = ["id", "type", "text", "timestamp", "sender", "recipients", "data"]
NODE = 0x1234ABCD
START = 1000.0


@implementer(IConnection)
class FakeConnection:
    """
    A connection that records what the router sends it and how it was
    closed.
    """

    def __init__(self, userId: int) -> None:
        self.userId = userId
        self.sent: list[Any] = []
        self.closed: list[tuple[int, str]] = []

    def sendPrepared(self, prepared: Any) -> None:
        self.sent.append(prepared)

    def sendStored(self, prepared: Any) -> None:
        self.sent.append(prepared)

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def received(self) -> list[dict[str, Any]]:
        """
        The delivered objects, decoded.
        """
        return [orjson.loads(p) for p in self.sent]

    def texts(self) -> list[str]:
        """
        The C{text} of every delivered object.
        """
        return [m["text"] for m in self.received()]

    def types(self) -> list[str]:
        """
        The C{type} of every delivered object.
        """
        return [m["type"] for m in self.received()]


@implementer(IUndeliveredStore)
class SlowStore:
    """
    A L{MemoryUndeliveredStore} whose C{fetch} answers only when the test
    fires it (as a store doing I/O in a thread would), and that records
    C{ack}s.
    """

    def __init__(self) -> None:
        self.memory = MemoryUndeliveredStore(ttlSeconds=3600, maxPerUser=100)
        self.fetches: list[tuple[int, Deferred[list[tuple[int, bytes]]]]] = []
        self.acks: list[tuple[int, list[int]]] = []

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self.memory.dropped

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        return self.memory.put(userId, payload, now)

    def putMany(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        return self.memory.putMany(userIds, payload, now)

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        d: Deferred[list[tuple[int, bytes]]] = Deferred()
        self.fetches.append((userId, d))
        return d

    def answer(self, index: int = 0, now: float = START) -> None:
        """
        Fire the C{index}th fetch with what the memory store holds now.
        """
        userId, d = self.fetches[index]
        self.memory.fetch(userId, now).addCallback(d.callback)

    def ack(self, userId: int, keys: Iterable[int]) -> Deferred[None]:
        keys = list(keys)
        self.acks.append((userId, keys))
        return self.memory.ack(userId, keys)

    def prune(self, now: float) -> Deferred[int]:
        return self.memory.prune(now)

    def pending(self, userId: int) -> Deferred[int]:
        return self.memory.pending(userId)


class BrokenStore(SlowStore):
    """
    A store whose C{fetch} fails.
    """

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        return fail(OSError("disk on fire"))


class RouterTestMixin:
    """
    Builds a router over a L{Clock} (at L{START}) and records what it hands
    to the event notifier.
    """

    clock: Clock
    router: Router
    notified: list[tuple[Message, bytes]]

    #: C{chat.userIds}: the original's rule, whose refusals these tests know
    ids: UserIdRule = numericRule

    def makeRouter(self, store: Any = None, **config: Any) -> Router:
        if "ignoredTypesSendBack" in config:
            config["ignoredTypesSendBack"] = frozenset(config["ignoredTypesSendBack"])
        self.clock = Clock()
        self.clock.advance(START)
        self.factory = MessageFactory(self.clock, ZoneInfo("UTC"), nodeTag=NODE, ids=self.ids)
        self.notified = []
        self.router = Router(
            MessageConfig(**config),
            self.clock,
            self.factory,
            store,
            lambda message, payload: self.notified.append((message, payload)),
        )
        return self.router

    def connect(self, userId: int) -> FakeConnection:
        conn = FakeConnection(userId)
        self.router.attach(conn)
        return conn

    def send(self, conn: FakeConnection, recipients: list[int], text: str = "hi", **fields: Any) -> Message:
        """
        C{conn} sends a text message.
        """
        obj = {"type": "text", "text": text, "recipients": recipients}
        obj.update(fields)
        return self.router.receive(conn, orjson.dumps(obj))

    def pending(self, store: Any, userId: int) -> int:
        result: int = self.successResultOf(store.pending(userId))  # type: ignore[attr-defined]
        return result


class RoutingTests(RouterTestMixin, SynchronousTestCase):
    """
    Tests for the routing of L{Router}, without the undelivered queue.
    """

    def setUp(self) -> None:
        self.makeRouter()

    def test_fakeConnection(self) -> None:
        """
        The fake connection of these tests provides L{IConnection}.
        """
        self.assertTrue(verifyObject(IConnection, FakeConnection(1)))

    def test_interfaces(self) -> None:
        """
        The connection's session provides everything the router calls on a
        connection (L{IConnection}); the router is its node's L{IInbound}
        and the cluster's statistics' L{IUserDirectory}.
        """
        self.assertTrue(verifyClass(IConnection, Session))
        self.assertTrue(verifyObject(IInbound, self.router))
        self.assertTrue(verifyObject(IUserDirectory, self.router))

    def test_deliveredObject(self) -> None:
        """
        The recipient receives the object with the keys C{id, type, text,
        timestamp, sender, recipients, data} in that order, the server's id
        and timestamp, and C{data} untouched.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        message = self.send(alice, [2], "hello", data={"x": [1, None, "y"]})
        (got,) = bob.received()
        self.assertEqual(list(got), KEYS)
        self.assertEqual(
            got,
            {
                "id": "%08X-%08X-%04X-%08X" % (int(START), NODE, os.getpid() & 0xFFFF, 1),
                "type": "text",
                "text": "hello",
                "timestamp": "1970-01-01T00:16:40.000000+00:00",
                "sender": 1,
                "recipients": [2],
                "data": {"x": [1, None, "y"]},
            },
        )
        self.assertEqual(message.id, got["id"])
        self.assertEqual(alice.sent, [])

    def test_clientTimestampKept(self) -> None:
        """
        A timestamp given by the client is delivered as given.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        self.send(alice, [2], timestamp="2020-01-01T00:00:00Z")
        self.assertEqual(bob.received()[0]["timestamp"], "2020-01-01T00:00:00Z")

    def test_everyConnectionOfEveryRecipient(self) -> None:
        """
        A message reaches every connection of each recipient, exactly once.
        """
        alice = self.connect(1)
        bob1, bob2 = self.connect(2), self.connect(2)
        carol1, carol2, carol3 = self.connect(3), self.connect(3), self.connect(3)
        dave = self.connect(4)
        message = self.send(alice, [2, 3])
        for conn in (bob1, bob2, carol1, carol2, carol3):
            self.assertEqual(conn.sent, [message.serialize()])
        self.assertEqual(dave.sent, [])
        self.assertEqual(alice.sent, [])

    def test_duplicateRecipients(self) -> None:
        """
        A recipient named several times receives the message once; the
        delivered C{recipients} is what the sender gave.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        self.send(alice, [2, 2, 2])
        self.assertEqual(len(bob.sent), 1)
        self.assertEqual(bob.received()[0]["recipients"], [2, 2, 2])

    def test_orderPerSender(self) -> None:
        """
        Messages from one sender arrive in the order they were received, on
        every connection of the recipient.
        """
        alice = self.connect(1)
        bob1, bob2 = self.connect(2), self.connect(2)
        for i in range(200):
            self.send(alice, [2], str(i))
        expected = [str(i) for i in range(200)]
        self.assertEqual(bob1.texts(), expected)
        self.assertEqual(bob2.texts(), expected)

    def test_botAmongRecipientsSkipped(self) -> None:
        """
        A 0 among other recipients is skipped; the others get the message.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        message = self.send(alice, [0, 2, 0])
        self.assertEqual(bob.received()[0]["recipients"], [0, 2, 0])
        self.assertEqual(len(bob.sent), 1)
        self.assertEqual([m for m, _ in self.notified], [message])

    def test_forBot(self) -> None:
        """
        A message with C{recipients == [0]} is delivered to no connection,
        not even with send-back, and is handed to the event notifier.
        """
        self.makeRouter(enableSendBack=True, enableDeliveryStatus=True)
        alice1, alice2 = self.connect(1), self.connect(1)
        bob = self.connect(2)
        message = self.send(alice1, [0], type="command", text="")
        self.assertEqual(alice1.sent + alice2.sent + bob.sent, [])
        self.assertEqual(self.notified, [(message, message.serialize())])
        self.assertEqual(message.recipients, [0])

    def test_notify(self) -> None:
        """
        Every routed message is handed to the notifier with its serialized
        form, which is also what the recipients received.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        m1 = self.send(alice, [2], "one")
        m2 = self.send(alice, [3], "to nobody online")
        m3 = self.send(bob, [0], "for the bot")
        self.assertEqual([m for m, _ in self.notified], [m1, m2, m3])
        for message, payload in self.notified:
            self.assertIsInstance(payload, bytes)
            self.assertEqual(payload, message.serialize())
        self.assertEqual(bob.sent, [self.notified[0][1]])

    def test_offlineDroppedWithoutStore(self) -> None:
        """
        Without an undelivered queue, a message for a user with no connection
        is dropped: it does not arrive when the user connects later.
        """
        alice = self.connect(1)
        self.send(alice, [2], "lost")
        bob = self.connect(2)
        self.assertEqual(bob.sent, [])
        self.send(alice, [2], "kept")
        self.assertEqual(bob.texts(), ["kept"])

    def test_sendBackOff(self) -> None:
        """
        Without C{enableSendBack}, the sender's other connections do not get
        the message.
        """
        alice1, alice2 = self.connect(1), self.connect(1)
        self.connect(2)
        self.send(alice1, [2])
        self.assertEqual(alice1.sent + alice2.sent, [])

    def test_sendBack(self) -> None:
        """
        With C{enableSendBack}, every connection of the sender (the sending
        one included) gets the message once.
        """
        self.makeRouter(enableSendBack=True)
        alice1, alice2 = self.connect(1), self.connect(1)
        bob = self.connect(2)
        message = self.send(alice1, [2])
        self.assertEqual(alice1.sent, [message.serialize()])
        self.assertEqual(alice2.sent, [message.serialize()])
        self.assertEqual(bob.sent, [message.serialize()])

    def test_sendBackToOfflineRecipient(self) -> None:
        """
        With C{enableSendBack}, the sender gets the message even when no
        recipient is online.
        """
        self.makeRouter(enableSendBack=True)
        alice = self.connect(1)
        self.send(alice, [2], "into the void")
        self.assertEqual(alice.texts(), ["into the void"])

    def test_sendBackIgnoredType(self) -> None:
        """
        With C{enableSendBack}, a message whose type is in
        C{ignoredTypesSendBack} is not sent back; other types are.
        """
        self.makeRouter(enableSendBack=True, ignoredTypesSendBack=["typing"])
        alice = self.connect(1)
        bob = self.connect(2)
        self.send(alice, [2], type="typing", text="")
        self.send(alice, [2], type="text", text="x")
        self.assertEqual(alice.types(), ["text"])
        self.assertEqual(bob.types(), ["typing", "text"])

    def test_sendBackSenderIsRecipient(self) -> None:
        """
        With C{enableSendBack}, a sender who is also a recipient gets the
        message once on each connection, not twice.
        """
        self.makeRouter(enableSendBack=True)
        alice1, alice2 = self.connect(1), self.connect(1)
        bob = self.connect(2)
        message = self.send(alice1, [2, 1])
        self.assertEqual(alice1.sent, [message.serialize()])
        self.assertEqual(alice2.sent, [message.serialize()])
        self.assertEqual(bob.sent, [message.serialize()])

    def test_selfMessageWithoutSendBack(self) -> None:
        """
        A user who names themselves as a recipient gets the message on each of
        their connections, as any recipient.
        """
        alice1, alice2 = self.connect(1), self.connect(1)
        message = self.send(alice1, [1])
        self.assertEqual(alice1.sent, [message.serialize()])
        self.assertEqual(alice2.sent, [message.serialize()])

    def test_deliveryStatus(self) -> None:
        """
        With C{enableDeliveryStatus}, every connection of the sender receives
        a C{notification_received} for each recipient the message reached,
        once per recipient, and none for an offline recipient.
        """
        self.makeRouter(enableDeliveryStatus=True)
        alice1, alice2 = self.connect(1), self.connect(1)
        bob = self.connect(2)
        carol = self.connect(3)
        message = self.send(alice1, [2, 4, 3, 2])
        self.assertEqual(alice1.sent, alice2.sent)
        notes = alice1.received()
        self.assertEqual([n["data"] for n in notes], [{"id": message.id, "recipient": 2}, {"id": message.id, "recipient": 3}])
        for note in notes:
            self.assertEqual(list(note), KEYS)
            self.assertEqual(note["type"], "notification_received")
            self.assertEqual(note["sender"], 0)
            self.assertEqual(note["recipients"], [1])
            self.assertEqual(note["text"], "")
            self.assertEqual(note["timestamp"], "1970-01-01T00:16:40.000000+00:00")
            self.assertNotEqual(note["id"], message.id)
        self.assertNotEqual(notes[0]["id"], notes[1]["id"])
        self.assertEqual(bob.sent, [message.serialize()])
        self.assertEqual(carol.sent, [message.serialize()])
        self.assertEqual([m for m, _ in self.notified], [message])

    def test_oneRecipientEveryConnection(self) -> None:
        """
        A message to one recipient online here (the fan-out's short path)
        reaches each of its connections once, and is counted once: in the
        recipient's statistics and in the delivered counter.
        """
        alice = self.connect(1)
        bob1, bob2 = self.connect(2), self.connect(2)
        message = self.send(alice, [2])
        self.assertEqual(bob1.sent, [message.serialize()])
        self.assertEqual(bob2.sent, [message.serialize()])
        self.assertEqual(alice.sent, [])
        stats = self.router.userStats(2)
        assert stats is not None
        self.assertEqual((stats.receivedMessages, stats.bytesTransferred), (1, len(message.serialize())))
        self.assertEqual(self.router.counters.delivered, 1)
        self.assertEqual([m for m, _ in self.notified], [message])

    def test_oneRecipientDeliveryStatus(self) -> None:
        """
        With C{enableDeliveryStatus}, a message to one recipient online here
        gives the sender one C{notification_received}, for it.
        """
        self.makeRouter(enableDeliveryStatus=True)
        alice = self.connect(1)
        bob = self.connect(2)
        message = self.send(alice, [2])
        self.assertEqual(bob.sent, [message.serialize()])
        self.assertEqual([(n["type"], n["data"]) for n in alice.received()],
                         [("notification_received", {"id": message.id, "recipient": 2})])
        self.assertEqual(self.router.counters.delivered, 2)

    def test_oneRecipientAlsoElsewhere(self) -> None:
        """
        A message to one recipient online here and on another node goes to
        both: the short path is only for a user online here alone.
        """
        forwarded: list[tuple[list[int], bytes]] = []

        class Peers(NoPeers):
            def forward(self, userIds: Sequence[int], payload: bytes) -> None:
                forwarded.append((list(userIds), payload))

        peers = Peers()
        peers.remoteUsers = {2: None}
        self.router = Router(MessageConfig(), self.clock, self.factory, peers=peers)
        alice = self.connect(1)
        bob = self.connect(2)
        message = self.send(alice, [2])
        self.assertEqual(bob.sent, [message.serialize()])
        self.assertEqual(forwarded, [([2], message.serialize())])

    def test_deliveryStatusOff(self) -> None:
        """
        Without C{enableDeliveryStatus}, the sender gets no notification.
        """
        alice = self.connect(1)
        self.connect(2)
        self.send(alice, [2])
        self.assertEqual(alice.sent, [])

    def test_deliveryStatusNobodyReached(self) -> None:
        """
        With C{enableDeliveryStatus}, a message that reached nobody gives no
        notification.
        """
        self.makeRouter(enableDeliveryStatus=True)
        alice = self.connect(1)
        self.send(alice, [2, 3])
        self.assertEqual(alice.sent, [])

    def test_deliveryStatusAndSendBack(self) -> None:
        """
        With both C{enableSendBack} and C{enableDeliveryStatus}, the sender
        gets the message, then the notification.
        """
        self.makeRouter(enableSendBack=True, enableDeliveryStatus=True)
        alice = self.connect(1)
        self.connect(2)
        message = self.send(alice, [2])
        got = alice.received()
        self.assertEqual(got[0], message.toDict())
        self.assertEqual(got[1]["type"], "notification_received")
        self.assertEqual(got[1]["data"], {"id": message.id, "recipient": 2})
        self.assertEqual(len(got), 2)

    def test_enforceSender(self) -> None:
        """
        With C{enforceSender}, a payload naming another sender raises
        L{InvalidPayload}; nothing is delivered, notified or counted.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        before = self.router.statItems()
        exc = self.assertRaises(InvalidPayload, self.send, alice, [2], sender=2)
        self.assertEqual(exc.reason, "$.sender must be your own id (1)")
        self.assertEqual(bob.sent, [])
        self.assertEqual(self.notified, [])
        self.assertEqual(self.router.statItems(), before)

    def test_enforceSenderOwnId(self) -> None:
        """
        With C{enforceSender}, a payload naming the connection's own user as
        sender, or none, is routed with that sender.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        self.send(alice, [2], "a", sender=1)
        self.send(alice, [2], "b")
        self.assertEqual([m["sender"] for m in bob.received()], [1, 1])

    def test_enforceSenderOff(self) -> None:
        """
        Without C{enforceSender}, the payload must name its sender (the
        original's rule), and any sender is accepted.
        """
        self.makeRouter(enforceSender=False)
        alice = self.connect(1)
        bob = self.connect(2)
        exc = self.assertRaises(InvalidPayload, self.send, alice, [2])
        self.assertEqual(exc.reason, "$.sender must be uint64_t")
        self.send(alice, [2], sender=7)
        self.assertEqual([m["sender"] for m in bob.received()], [7])

    def test_invalidPayload(self) -> None:
        """
        A payload that is not JSON raises L{InvalidPayload}; nothing is
        routed and the statistics do not change.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        before = self.router.statItems()
        self.assertRaises(InvalidPayload, self.router.receive, alice, b"{nope")
        self.assertRaises(InvalidPayload, self.router.receive, alice, b'{"type":"text","text":"x","recipients":[]}')
        self.assertEqual(bob.sent, [])
        self.assertEqual(self.notified, [])
        self.assertEqual(self.router.statItems(), before)

    def test_routeFromServer(self) -> None:
        """
        C{route} of a message with sender 0 (the REST API) delivers it and
        keeps no statistics for user 0.
        """
        self.makeRouter(enableDeliveryStatus=True, enableSendBack=True)
        bob = self.connect(2)
        message = self.factory.fromObject({"type": "text", "text": "admin", "recipients": [2]}, 0)
        self.router.route(message)
        self.assertEqual(bob.received(), [message.toDict()])
        self.assertEqual(bob.received()[0]["sender"], 0)
        self.assertEqual([item["id"] for item in self.router.statItems()], [2])
        self.assertEqual(self.router.statItem(0), emptyStatItem(0))
        self.assertEqual(self.notified, [(message, message.serialize())])

    def test_routeForUser(self) -> None:
        """
        C{route} of a message with sender N (REST API on behalf of a user who
        is not connected) delivers it and starts N's statistics.
        """
        bob = self.connect(2)
        self.clock.advance(5)
        message = self.factory.fromObject({"type": "text", "text": "x", "sender": 9, "recipients": [2]}, 0, False)
        self.router.route(message)
        self.assertEqual(bob.received(), [message.toDict()])
        item = self.router.statItem(9)
        self.assertEqual(item["sentMessages"], 1)
        self.assertEqual(item["lastMessageTime"], int(START) + 5)
        self.assertFalse(item["isOnline"])
        self.assertEqual(item["connectedTimes"], 0)
        self.assertEqual([i["id"] for i in self.router.statItems()], [2, 9])

    def test_isOnline(self) -> None:
        """
        A user is online while at least one of their connections is attached.
        """
        self.assertFalse(self.router.isOnline(1))
        a, b = self.connect(1), self.connect(1)
        self.assertTrue(self.router.isOnline(1))
        self.assertFalse(self.router.isOnline(2))
        self.router.detach(a)
        self.assertTrue(self.router.isOnline(1))
        self.router.detach(b)
        self.assertFalse(self.router.isOnline(1))

    def test_connectionsAfterDetach(self) -> None:
        """
        A detached connection receives nothing more; the user's other
        connections still do.
        """
        alice = self.connect(1)
        bob1, bob2 = self.connect(2), self.connect(2)
        self.router.detach(bob1)
        self.send(alice, [2])
        self.assertEqual(bob1.sent, [])
        self.assertEqual(len(bob2.sent), 1)

    def test_detachUnknown(self) -> None:
        """
        Detaching a connection that was never attached, or twice, changes
        nothing.
        """
        self.router.detach(FakeConnection(5))
        self.assertEqual(self.router.statItems(), [])
        a, b = self.connect(1), self.connect(1)
        self.router.detach(a)
        self.router.detach(a)
        self.router.detach(FakeConnection(1))
        self.assertTrue(self.router.isOnline(1))
        self.assertEqual(self.router.statItem(1)["disconnectedTimes"], 1)
        self.assertEqual(self.router.connectionCount, 1)
        self.assertEqual(list(self.router.allConnections()), [b])

    def test_allConnections(self) -> None:
        """
        C{allConnections} and C{connectionCount} follow attach and detach.
        """
        a, b, c = self.connect(1), self.connect(2), self.connect(1)
        self.assertEqual(self.router.connectionCount, 3)
        self.assertEqual(sorted(map(id, self.router.allConnections())), sorted(map(id, [a, b, c])))
        for conn in self.router.allConnections():
            self.router.detach(conn)
        self.assertEqual(self.router.connectionCount, 0)
        self.assertEqual(list(self.router.allConnections()), [])


class StatisticsTests(RouterTestMixin, SynchronousTestCase):
    """
    Tests for the statistics kept by L{Router}.
    """

    def setUp(self) -> None:
        self.makeRouter()

    def test_unknownUser(self) -> None:
        """
        The stat item of a user never seen is zeros and offline.
        """
        expected = {
            "id": 42,
            "isOnline": False,
            "lastConnection": 0,
            "connectedTimes": 0,
            "disconnectedTimes": 0,
            "lastMessageTime": 0,
            "timeOnline": 0,
            "timeOffline": 0,
            "timeInactivity": 0,
            "sentMessages": 0,
            "receivedMessages": 0,
            "bytesTransferred": 0,
        }
        self.clock.advance(100)
        self.assertEqual(self.router.statItem(42), expected)
        self.assertEqual(emptyStatItem(42), expected)
        self.assertEqual(self.router.statItems(), [])

    def test_counters(self) -> None:
        """
        Connecting, sending, receiving and disconnecting update every field
        of the stat item; times advance with the clock.
        """
        alice = self.connect(1)
        self.clock.advance(10)
        bob = self.connect(2)
        self.clock.advance(5)
        raw = orjson.dumps({"type": "text", "text": "hello", "recipients": [2]})
        message = self.router.receive(alice, raw)
        delivered = len(message.serialize())
        self.clock.advance(20)
        self.router.detach(alice)
        self.clock.advance(7)
        self.assertEqual(
            self.router.statItem(1),
            {
                "id": 1,
                "isOnline": False,
                "lastConnection": 1000,
                "connectedTimes": 1,
                "disconnectedTimes": 1,
                "lastMessageTime": 1015,
                "timeOnline": 35,
                "timeOffline": 7,
                "timeInactivity": 27,
                "sentMessages": 1,
                "receivedMessages": 0,
                "bytesTransferred": len(raw),
            },
        )
        self.assertEqual(
            self.router.statItem(2),
            {
                "id": 2,
                "isOnline": True,
                "lastConnection": 1010,
                "connectedTimes": 1,
                "disconnectedTimes": 0,
                "lastMessageTime": 0,
                "timeOnline": 32,
                "timeOffline": 0,
                "timeInactivity": 32,
                "sentMessages": 0,
                "receivedMessages": 1,
                "bytesTransferred": delivered,
            },
        )
        self.assertEqual(len(bob.sent), 1)

    def test_reconnects(self) -> None:
        """
        C{connectedTimes} and C{disconnectedTimes} count connections, not
        online periods; C{timeOnline} and C{timeOffline} add up the periods;
        C{lastConnection} is the latest connect.
        """
        a = self.connect(1)
        self.clock.advance(10)
        b = self.connect(1)
        self.clock.advance(10)
        self.router.detach(a)
        self.clock.advance(10)
        self.router.detach(b)
        self.clock.advance(100)
        c = self.connect(1)
        self.clock.advance(3)
        item = self.router.statItem(1)
        self.assertEqual(
            (item["connectedTimes"], item["disconnectedTimes"], item["lastConnection"]),
            (3, 2, 1130),
        )
        self.assertEqual((item["timeOnline"], item["timeOffline"]), (33, 100))
        self.assertTrue(item["isOnline"])
        self.router.detach(c)
        self.clock.advance(4)
        item = self.router.statItem(1)
        self.assertEqual((item["timeOnline"], item["timeOffline"], item["isOnline"]), (33, 104, False))

    def test_inactivity(self) -> None:
        """
        C{timeInactivity} is the time since the user's last message (or since
        first seen, before any).
        """
        alice = self.connect(1)
        self.connect(2)
        self.clock.advance(30)
        self.assertEqual(self.router.statItem(1)["timeInactivity"], 30)
        self.send(alice, [2])
        self.clock.advance(12)
        self.assertEqual(self.router.statItem(1)["timeInactivity"], 12)
        self.assertEqual(self.router.statItem(1)["lastMessageTime"], 1030)

    def test_multiConnectionCounts(self) -> None:
        """
        A message delivered to several connections of a user counts once in
        C{receivedMessages} and C{bytesTransferred}; a message to nobody
        online still counts as sent.
        """
        alice = self.connect(1)
        self.connect(2)
        self.connect(2)
        message = self.send(alice, [2, 3])
        item = self.router.statItem(2)
        self.assertEqual(item["receivedMessages"], 1)
        self.assertEqual(item["bytesTransferred"], len(message.serialize()))
        self.send(alice, [3])
        self.assertEqual(self.router.statItem(1)["sentMessages"], 2)
        self.assertEqual(self.router.statItem(3), emptyStatItem(3))

    def test_statItemsSorted(self) -> None:
        """
        C{statItems} lists every user seen, by id.
        """
        for userId in (30, 2, 17, 5):
            self.connect(userId)
        items = self.router.statItems()
        self.assertEqual([i["id"] for i in items], [2, 5, 17, 30])
        self.assertEqual(items, [self.router.statItem(u) for u in (2, 5, 17, 30)])


class StringIdTests(RouterTestMixin, SynchronousTestCase):
    """
    With C{chat.userIds: "any"}, string ids are routed, sent back, given
    delivery status and counted as numbers are, beside numbers.
    """

    ids = anyRule

    def test_routed(self) -> None:
        """
        A message between string ids reaches each recipient once; C{"7"} is
        user 7, written back as the number.
        """
        self.makeRouter(enableDeliveryStatus=True, enableSendBack=True)
        alice = self.connect("alice@example.com")
        bob = self.connect("3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c")
        seven = self.connect(7)
        message = self.send(alice, ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", "7"])
        self.assertEqual(bob.sent, [message.serialize()])
        self.assertEqual(seven.sent, [message.serialize()])
        self.assertIn(b'"sender":"alice@example.com","recipients":["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c",7]',
                      message.serialize())
        got = alice.received()
        self.assertEqual(got[0]["id"], message.id)  # sent back
        self.assertEqual([n["data"]["recipient"] for n in got[1:]], ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", 7])
        self.assertEqual({n["recipients"][0] for n in got[1:]}, {"alice@example.com"})

    def test_statItemsSorted(self) -> None:
        """
        C{statItems} lists numbers first, by value, then strings.
        """
        self.makeRouter()
        for userId in ("bob", 30, "alice", 2):
            self.connect(userId)
        self.assertEqual([i["id"] for i in self.router.statItems()], [2, 30, "alice", "bob"])
        self.assertTrue(self.router.isOnline("alice"))
        self.assertEqual(self.router.statItem("nobody"), emptyStatItem("nobody"))


class UndeliveredTests(RouterTestMixin, SynchronousTestCase):
    """
    Tests for L{Router} with an undelivered queue.
    """

    def setUp(self) -> None:
        self.store = MemoryUndeliveredStore(ttlSeconds=3600, maxPerUser=100)
        self.makeRouter(self.store)

    def test_storedAsCopy(self) -> None:
        """
        A message for an offline recipient is stored as a copy whose
        C{recipients} is that recipient only; online recipients get it as
        usual, and the bot is not stored for.
        """
        alice = self.connect(1)
        carol = self.connect(3)
        message = self.send(alice, [2, 3, 0, 4, 2])
        self.assertEqual(carol.sent, [message.serialize()])
        expected2 = dict(message.toDict(), recipients=[2])
        expected4 = dict(message.toDict(), recipients=[4])
        self.assertEqual([orjson.loads(p) for _, p in self.successResultOf(self.store.fetch(2, START))], [expected2])
        self.assertEqual([orjson.loads(p) for _, p in self.successResultOf(self.store.fetch(4, START))], [expected4])
        self.assertEqual(self.pending(self.store, 0), 0)
        self.assertEqual(self.pending(self.store, 3), 0)
        self.assertEqual(message.recipients, [2, 3, 0, 4, 2])

    def test_manyOfflineStoredOnce(self) -> None:
        """
        A message for many offline recipients is handed to the store once,
        as it was routed, for all of them; each gets it with C{recipients}
        C{[R]} when they connect, and a recipient's ack leaves it for the
        others.
        """
        alice = self.connect(1)
        offline = list(range(2, 2002))
        message = self.send(alice, offline + [1], "x" * 1000)
        stored = {id(entry[2]) for u in offline for entry in self.store._queues[u]}
        self.assertEqual(len(stored), 1)
        bob = self.connect(2)
        self.assertEqual(bob.received(), [dict(message.toDict(), recipients=[2])])
        self.assertEqual(self.pending(self.store, 2), 0)
        self.assertEqual(self.pending(self.store, 3), 1)
        for userId in offline[1:]:
            self.assertEqual(self.connect(userId).received(), [dict(message.toDict(), recipients=[userId])])
        self.assertEqual(self.store._queues, {})

    def test_allOffline(self) -> None:
        """
        A message whose recipients are all offline reaches each of them
        with C{recipients} C{[R]}, stored once for all.
        """
        alice = self.connect(1)
        message = self.send(alice, [2, 3])
        self.assertIs(self.store._queues[2][0][2], self.store._queues[3][0][2])
        self.assertEqual(self.connect(3).received(), [dict(message.toDict(), recipients=[3])])
        self.assertEqual(self.connect(2).received(), [dict(message.toDict(), recipients=[2])])

    def test_oneOffline(self) -> None:
        """
        A message for one offline recipient is stored as it is (it already
        is the copy for that recipient).
        """
        alice = self.connect(1)
        message = self.send(alice, [2])
        self.assertEqual(self.store._queues[2][0][2:], (message.serialize(), False))

    def test_oneOfSeveralOffline(self) -> None:
        """
        A message for several recipients of whom one is offline is stored
        for that one only, and arrives with C{recipients} C{[R]}.
        """
        alice = self.connect(1)
        self.connect(3)
        message = self.send(alice, [3, 2, 2])
        self.assertEqual(self.pending(self.store, 2), 1)
        self.assertEqual(self.connect(2).received(), [dict(message.toDict(), recipients=[2])])

    def test_forwardedKeptForOffline(self) -> None:
        """
        A message that another node routed to users who left this node
        meanwhile is kept once for them, and each gets it with
        C{recipients} C{[R]}; an online one gets it at once.
        """
        carol = self.connect(4)
        message = self.factory.fromObject({"type": "text", "text": "t", "recipients": [2, 3, 4]}, 1)
        self.router.deliverForwarded([2, 3, 4], message.serialize())
        self.assertEqual(carol.sent, [message.serialize()])
        self.assertIs(self.store._queues[2][0][2], self.store._queues[3][0][2])
        self.assertEqual(self.connect(3).received(), [dict(message.toDict(), recipients=[3])])
        self.assertEqual(self.connect(2).received(), [dict(message.toDict(), recipients=[2])])

    def test_undeliverableKept(self) -> None:
        """
        A forwarded message that reached no node is kept once for its
        offline users, not for one online here.
        """
        self.connect(4)
        message = self.factory.fromObject({"type": "text", "text": "t", "recipients": [2, 3, 4]}, 1)
        self.router.undeliverable([2, 3, 4], message.serialize())
        self.assertEqual(sorted(self.store._queues), [2, 3])
        self.assertIs(self.store._queues[2][0][2], self.store._queues[3][0][2])
        self.assertEqual(self.connect(2).received(), [dict(message.toDict(), recipients=[2])])

    def test_deliveredOnAttach(self) -> None:
        """
        The stored messages are delivered when the user connects, oldest
        first, before any message routed after, and then forgotten.
        """
        alice = self.connect(1)
        for i in range(5):
            self.send(alice, [2], str(i))
        self.assertEqual(self.pending(self.store, 2), 5)
        bob = self.connect(2)
        self.send(alice, [2], "live")
        self.assertEqual(bob.texts(), ["0", "1", "2", "3", "4", "live"])
        self.assertEqual([m["recipients"] for m in bob.received()], [[2]] * 5 + [[2]])
        self.assertEqual(self.pending(self.store, 2), 0)
        item = self.router.statItem(2)
        self.assertEqual(item["receivedMessages"], 6)
        self.assertEqual(item["bytesTransferred"], sum(len(p) for p in bob.sent))

    def test_secondConnectionNoDuplicates(self) -> None:
        """
        The stored messages go to the connections attached when the store
        answers (here the first, at once); a second connection does not get
        them again; both get what is routed after.
        """
        alice = self.connect(1)
        self.send(alice, [2], "a")
        self.send(alice, [2], "b")
        bob1 = self.connect(2)
        bob2 = self.connect(2)
        self.send(alice, [2], "c")
        self.assertEqual(bob1.texts(), ["a", "b", "c"])
        self.assertEqual(bob2.texts(), ["c"])
        self.assertEqual(self.pending(self.store, 2), 0)

    def test_deliveredOnce(self) -> None:
        """
        The stored messages are delivered once: not again at the next
        connect.
        """
        alice = self.connect(1)
        self.send(alice, [2], "a")
        bob = self.connect(2)
        self.router.detach(bob)
        again = self.connect(2)
        self.assertEqual(bob.texts(), ["a"])
        self.assertEqual(again.sent, [])

    def test_storedWhileOffline(self) -> None:
        """
        After the user's last connection detaches, messages are stored again.
        """
        alice = self.connect(1)
        bob = self.connect(2)
        self.router.detach(bob)
        self.send(alice, [2], "later")
        self.assertEqual(self.pending(self.store, 2), 1)
        self.assertEqual(bob.sent, [])

    def test_deliveryStatusNotForStored(self) -> None:
        """
        With C{enableDeliveryStatus}, a message stored for an offline
        recipient gives no notification.
        """
        self.makeRouter(self.store, enableDeliveryStatus=True)
        alice = self.connect(1)
        self.connect(3)
        message = self.send(alice, [2, 3])
        self.assertEqual([n["data"] for n in alice.received()], [{"id": message.id, "recipient": 3}])
        self.assertEqual(self.pending(self.store, 2), 1)

    def test_forBotNotStored(self) -> None:
        """
        A message for the bot is not stored for anybody.
        """
        alice = self.connect(1)
        self.send(alice, [0])
        self.assertEqual(self.pending(self.store, 0), 0)
        self.assertEqual(len(self.notified), 1)

    def test_routeFromServerStored(self) -> None:
        """
        A REST message (sender 0) for an offline user is stored and arrives
        when the user connects.
        """
        message = self.factory.fromObject({"type": "news", "recipients": [2]}, 0)
        self.router.route(message)
        bob = self.connect(2)
        self.assertEqual(bob.received(), [dict(message.toDict(), recipients=[2])])


class SlowStoreTests(RouterTestMixin, SynchronousTestCase):
    """
    Tests for L{Router} with an undelivered queue that answers later.
    """

    def setUp(self) -> None:
        self.store = SlowStore()
        self.makeRouter(self.store)
        self.alice = self.connectNow(1)
        self.send(self.alice, [2], "s1")
        self.send(self.alice, [2], "s2")

    def connectNow(self, userId: int) -> FakeConnection:
        """
        Connect a user with nothing stored, and let the store answer at once.
        """
        conn = self.connect(userId)
        self.store.answer(len(self.store.fetches) - 1)
        self.store.fetches.clear()
        return conn

    def test_backlogWaits(self) -> None:
        """
        Messages routed while the store has not answered wait, and arrive
        after the stored ones, on every connection attached by then; the
        stored ones are then acknowledged.
        """
        bob1 = self.connect(2)
        self.send(self.alice, [2], "b1")
        bob2 = self.connect(2)
        self.send(self.alice, [2], "b2")
        self.assertEqual(bob1.sent + bob2.sent, [])
        self.assertEqual(len(self.store.fetches), 1)
        self.store.answer()
        self.assertEqual(bob1.texts(), ["s1", "s2", "b1", "b2"])
        self.assertEqual(bob2.texts(), ["s1", "s2", "b1", "b2"])
        self.assertEqual(len(self.store.acks), 1)
        self.assertEqual(self.pending(self.store, 2), 0)
        self.send(self.alice, [2], "after")
        self.assertEqual(bob1.texts()[-1], "after")
        self.assertEqual(len(bob2.sent), 5)

    def test_nothingStored(self) -> None:
        """
        A user with nothing stored gets the waiting messages once the store
        answers, and no C{ack} is sent.
        """
        self.successResultOf(self.store.ack(2, [k for k, _ in self.successResultOf(self.store.memory.fetch(2, START))]))
        self.store.acks.clear()
        bob = self.connect(2)
        self.send(self.alice, [2], "b1")
        self.assertEqual(bob.sent, [])
        self.store.answer()
        self.assertEqual(bob.texts(), ["b1"])
        self.assertEqual(self.store.acks, [])

    def test_deliveryStatusWhileWaiting(self) -> None:
        """
        With C{enableDeliveryStatus}, a message that waits behind the stored
        ones counts as reached (it is held for a live connection).
        """
        self.makeRouter(self.store, enableDeliveryStatus=True)
        alice = self.connectNow(1)
        bob = self.connect(2)
        message = self.send(alice, [2])
        self.assertEqual([n["data"] for n in alice.received()], [{"id": message.id, "recipient": 2}])
        self.store.answer()
        self.assertEqual(bob.texts(), ["s1", "s2", "hi"])

    def test_detachBeforeAnswer(self) -> None:
        """
        When the user's connections all detach before the store answers, the
        stored messages stay stored (no C{ack}) and the waiting ones are
        stored after them; the next connect delivers all of them in order.
        """
        bob = self.connect(2)
        self.send(self.alice, [2], "b1")
        self.router.detach(bob)
        self.send(self.alice, [2], "b2")
        self.store.answer()
        self.assertEqual(bob.sent, [])
        self.assertEqual(self.store.acks, [])
        self.assertEqual(self.pending(self.store, 2), 4)
        again = self.connect(2)
        self.assertEqual(len(self.store.fetches), 2)
        self.store.answer(1)
        self.assertEqual(again.texts(), ["s1", "s2", "b1", "b2"])
        self.assertEqual(self.pending(self.store, 2), 0)

    def test_forwardedWhileWaitingKeptAsBytes(self) -> None:
        """
        A message that another node forwarded while the user's queue is
        read, and that is stored because the user left meanwhile, is kept as
        it came (its bytes, with C{recipients} C{[R]}): never parsed back
        into a message to be rewritten.
        """
        bob = self.connect(2)
        forwarded = (b'{"id":"f","type":"t","text":"","timestamp":"x","sender":1,"recipients":[2,3],'
                     b'"data":{"big":123456789012345678901234567890},"seq":7}')
        self.router.deliverForwarded([2], forwarded)
        self.router.detach(bob)
        self.store.answer()
        stored = [p for _, p in self.successResultOf(self.store.memory.fetch(2, START))]
        self.assertEqual(stored[-1], forwarded.replace(b"[2,3]", b"[2]"))

    def test_deliveryStatusOfflineWhileWaiting(self) -> None:
        """
        With C{enableDeliveryStatus}, a message for a user who went offline
        while the store was being read did not reach them: no notification.
        """
        self.makeRouter(self.store, enableDeliveryStatus=True)
        alice = self.connectNow(1)
        bob = self.connect(2)
        self.router.detach(bob)
        self.send(alice, [2])
        self.assertEqual(alice.sent, [])

    def test_reattachBeforeAnswer(self) -> None:
        """
        When the user's connections all detach and another attaches before
        the store answered, no message is lost or delivered twice, and the
        order is kept: the stored ones, then those routed meanwhile.
        """
        bob = self.connect(2)
        self.send(self.alice, [2], "b1")
        self.router.detach(bob)
        self.send(self.alice, [2], "b2")
        again = self.connect(2)
        self.send(self.alice, [2], "b3")
        for i in range(len(self.store.fetches)):
            self.store.answer(i)
        self.send(self.alice, [2], "b4")
        self.assertEqual(bob.sent, [])
        self.assertEqual(again.texts(), ["s1", "s2", "b1", "b2", "b3", "b4"])
        self.assertEqual(self.pending(self.store, 2), 0)

    def broken(self) -> tuple[BrokenStore, FakeConnection]:
        """
        A router over a L{BrokenStore}, and user 1 connected (its reads
        failed 3 times, logged, and given up).
        """
        store = BrokenStore()
        self.makeRouter(store)
        alice = self.connect(1)
        self.clock.advance(1.5)
        self.clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 3)
        return store, alice

    def test_fetchFails(self) -> None:
        """
        When the store cannot be read, the failure is logged and the read
        tried again (1 s, then 2 s later) while newer messages wait behind
        it; after the last attempt the waiting messages are delivered, and
        the stored ones stay stored.
        """
        store, alice = self.broken()
        self.send(alice, [2], "stored")
        bob = self.connect(2)
        self.send(alice, [2], "live")
        self.assertEqual(bob.texts(), [])
        self.clock.advance(1.5)
        self.assertEqual(bob.texts(), [])
        self.clock.advance(2)
        self.assertEqual(bob.texts(), ["live"])
        self.assertEqual(self.pending(store, 2), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 3)

    def test_stopCancelsRetry(self) -> None:
        """
        L{Router.stop} cancels the retry of a failed read that waits (no
        delayed call is left) and ends the drain as when the reads gave
        up: what waited behind it is delivered; a read failing after the
        stop is not tried again.
        """
        store, alice = self.broken()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        bob = self.connect(2)
        self.send(alice, [2], "live")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.router.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(bob.texts(), ["live"])
        self.connect(3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

class KeepUnsentTests(SynchronousTestCase):
    """
    L{Router.keepUnsent}: messages that never reached a connection.
    """

    def test_keptForTheUser(self) -> None:
        """
        Each is stored for the user as a copy with C{recipients} [user].
        """
        clock = Clock()
        store = MemoryUndeliveredStore(3600, 100)
        router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC")), store=store)
        one = orjson.dumps({"id": "a", "type": "t", "text": "", "recipients": [2, 3]})
        two = orjson.dumps({"id": "b", "type": "t", "text": "", "recipients": [2]})
        router.keepUnsent(2, [one, two])
        stored = [orjson.loads(p) for _, p in self.successResultOf(store.fetch(2, 0))]
        self.assertEqual([(m["id"], m["recipients"]) for m in stored], [("a", [2]), ("b", [2])])

    def test_noQueue(self) -> None:
        """
        Without the undelivered queue they are dropped.
        """
        clock = Clock()
        router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC")))
        router.keepUnsent(2, [b"{}"])
