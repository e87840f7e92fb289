"""
The cluster's presence as a state machine (L{wsserver.cluster.presence}) and
the node's rules of joining, batching and suspicion (L{wsserver.cluster.node}),
driven with L{Clock} and no Redis.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsserver.cluster.node import PRESENCE, ClusterNode, formatBatch, nodeChannel, parseBatch, parseHeader
from wsserver.cluster.presence import Presence, Seat, formatSeat, parseSeats
from wsserver.routing.interfaces import IInbound, IPeers, NoPeers
from wsserver.redis.address import RedisAddress
from wsserver.redis.links import IRedisLinks
from wsserver.stats import UserStats


class PresenceTests(SynchronousTestCase):
    """
    L{Presence}: who is online where, and when a node is dead.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.dead: list[tuple[str, list[int]]] = []
        self.presence = Presence(self.clock, 30.0, died=lambda node, users: self.dead.append((node, users)))

    def test_connections(self) -> None:
        """
        A connection change puts a user on a node, or takes it off at 0.
        """
        p = self.presence
        p.connections("a", 1, Seat(2, 3, 100.0))
        p.connections("b", 1, Seat(1, 1, 200.0))
        self.assertEqual(set(p.where[1]), {"a", "b"})
        self.assertEqual(p.connectionsOf(1), 3)
        p.connections("a", 1, Seat(0, 3, 100.0))
        self.assertEqual(set(p.where[1]), {"b"})
        p.connections("b", 1, Seat(0))
        self.assertNotIn(1, p.where)
        self.assertEqual(p.connectionsOf(1), 0)

    def test_beatReplaces(self) -> None:
        """
        A beat lists all of a node's users: those missing from it are
        offline there, new ones online.
        """
        p = self.presence
        p.connections("a", 1, Seat(1))
        p.connections("a", 2, Seat(1))
        p.beat("a", {2: Seat(1), 3: Seat(4)})
        self.assertEqual(sorted(p.where), [2, 3])
        self.assertEqual(p.connectionsOf(3), 4)

    def test_deadAfterTimeout(self) -> None:
        """
        A node not heard for the timeout is dead at once, by its own timer:
        its users are offline, and C{died} is told.
        """
        p = self.presence
        p.connections("a", 1, Seat(1))
        self.clock.advance(29.9)
        self.assertIn(1, p.where)
        self.clock.advance(0.1)
        self.assertNotIn(1, p.where)
        self.assertEqual(self.dead, [("a", [1])])
        self.assertEqual(p.nodes(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_signOfLifeExtends(self) -> None:
        """
        Every message from a node moves its deadline on.
        """
        p = self.presence
        p.beat("a", {1: Seat(1)})
        self.clock.advance(20)
        p.heard("a")
        self.clock.advance(29)
        self.assertEqual(self.dead, [])
        self.clock.advance(1)
        self.assertEqual(self.dead, [("a", [1])])

    def test_oneTimer(self) -> None:
        """
        However many nodes and messages, one timer is pending: for the
        earliest deadline; each node dies at its own deadline.
        """
        p = self.presence
        p.beat("a", {1: Seat(1)})
        self.clock.advance(10)
        p.beat("b", {2: Seat(1)})
        for _ in range(5):
            p.heard("b")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(20)
        self.assertEqual(self.dead, [("a", [1])])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual(self.dead, [("a", [1]), ("b", [2])])

    def test_suspect(self) -> None:
        """
        A suspect node's users stop counting as online there; its next sign
        of life brings them back.
        """
        p = self.presence
        p.beat("a", {1: Seat(1), 2: Seat(1)})
        p.connections("b", 2, Seat(1))
        p.suspect("a")
        self.assertTrue(p.isSuspect("a"))
        self.assertNotIn(1, p.where)
        self.assertEqual(set(p.where[2]), {"b"})
        p.heard("a")
        self.assertFalse(p.isSuspect("a"))
        self.assertEqual(sorted(p.where), [1, 2])
        self.assertEqual(set(p.where[2]), {"a", "b"})
        p.suspect("a")
        p.connections("a", 3, Seat(1))  # a message from it: a sign of life too
        self.assertEqual(sorted(p.where), [1, 2, 3])

    def test_suspectStillDies(self) -> None:
        """
        A suspect node that stays silent dies at its deadline.
        """
        p = self.presence
        p.beat("a", {1: Seat(1)})
        p.suspect("a")
        self.clock.advance(30)
        self.assertEqual(self.dead, [("a", [1])])

    def test_goodbye(self) -> None:
        """
        A node that says goodbye takes its users offline at once; it did
        not die.
        """
        p = self.presence
        p.beat("a", {1: Seat(1)})
        p.goodbye("a")
        self.assertEqual((p.where, p.nodes()), ({}, []))
        self.clock.advance(60)
        self.assertEqual(self.dead, [])

    def test_cutOff(self) -> None:
        """
        While this node hears nobody, nobody dies; once it hears again,
        every node gets a fresh deadline.
        """
        p = self.presence
        p.beat("a", {1: Seat(1)})
        p.cutOff()
        self.clock.advance(100)
        self.assertEqual(self.dead, [])
        self.assertIn(1, p.where)
        p.reconnected()
        self.clock.advance(29)
        self.assertEqual(self.dead, [])
        self.clock.advance(1)
        self.assertEqual(self.dead, [("a", [1])])

    def test_seats(self) -> None:
        """
        Beat entries round-trip; a malformed one raises L{ValueError}.
        """
        entries = [formatSeat(7, Seat(2, 5, 1234.0)), formatSeat(8, Seat(1, 1, 99.0))]
        self.assertEqual(parseSeats(entries), {7: Seat(2, 5, 1234.0), 8: Seat(1, 1, 99.0)})
        self.assertEqual(parseSeats([b""]), {})
        self.assertRaises(ValueError, parseSeats, [b"7:2"])
        self.assertRaises(ValueError, parseSeats, [b"x:1:1:1"])

    def test_stringSeats(self) -> None:
        """
        A string id, C{:} in it included, round-trips beside numbers.
        """
        entries = [formatSeat("a:b:c", Seat(1, 2, 3.0)), formatSeat(7, Seat(2, 5, 1234.0))]
        self.assertEqual(entries[0], b"{a:b:c}:1:2:3")
        self.assertEqual(parseSeats(entries), {"a:b:c": Seat(1, 2, 3.0), 7: Seat(2, 5, 1234.0)})


class BatchTests(SynchronousTestCase):
    """
    The body of a C{PUBLISH} to a node.
    """

    def test_roundTrip(self) -> None:
        """
        Each message comes back with its recipients, bytes as they were
        (new lines and spaces in payloads included).
        """
        entries = [([1], b'{"a":"x y\\n"}'), ([2, 3], b"\n \n"), ([4], b"")]
        self.assertEqual(parseBatch(formatBatch(entries)), entries)

    def test_stringIds(self) -> None:
        """
        String ids and numbers come back as they were.
        """
        entries = [(["alice@example.com", 7, "a:b", "-5"], b"{}"), ([2**64 - 1], b"x")]
        self.assertEqual(parseBatch(formatBatch(entries)), entries)
        self.assertTrue(formatBatch([([7, "a"], b"")]).startswith(b"7,{a} 0\n"))

    def test_malformed(self) -> None:
        """
        A batch cut short or without a header raises L{ValueError}.
        """
        body = formatBatch([([1], b"0123456789")])
        self.assertRaises(ValueError, parseBatch, body[:-1])
        self.assertRaises(ValueError, parseBatch, b"garbage")
        self.assertRaises(ValueError, parseBatch, b"x 1\nz")


class FakeLink:
    """
    Stands for a L{wsserver.redis.link.RedisLink}: records each command and
    answers it when the test says.
    """

    connected = True

    def __init__(self) -> None:
        self.commands: list[tuple[tuple[bytes, ...], Deferred[Any]]] = []

    def execute(self, *args: bytes) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.commands.append((args, d))
        return d

    def published(self, channel: bytes) -> list[tuple[bytes, Deferred[Any]]]:
        return [(args[2], d) for args, d in self.commands if args[0] == b"PUBLISH" and args[1] == channel]

    def start(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


@implementer(IRedisLinks)
class FakeLinks:
    """
    Stands for a L{wsserver.redis.links.RedisLinks}: L{FakeLink}s, the
    pub/sub one recording what it listens to.
    """

    def __init__(self) -> None:
        self.address = RedisAddress()
        self.hot = FakeLink()
        self.bulk = FakeLink()
        self.subscriber = FakeLink()
        self.channels: list[bytes] = []

    def subscribe(self, channels: list[bytes], received: Any, subscribed: Any, lost: Any) -> Any:
        self.channels = channels
        return self.subscriber


@implementer(IInbound)
class Inbound:
    """
    Records what a node hands back to its router.
    """

    def __init__(self) -> None:
        self.forwarded: list[tuple[list[int], bytes]] = []
        self.undelivered: list[tuple[list[int], bytes]] = []
        self.drained: list[int] = []
        self.local: list[int] = []

    def deliverForwarded(self, userIds: Sequence[int], payload: bytes) -> None:
        self.forwarded.append((list(userIds), payload))

    def undeliverable(self, userIds: Sequence[int], payload: bytes) -> None:
        self.undelivered.append((list(userIds), payload))

    def drainAgain(self, userId: int) -> None:
        self.drained.append(userId)

    def localUserIds(self) -> Sequence[int]:
        return self.local


class NodeCase(SynchronousTestCase):
    """
    A L{ClusterNode} whose Redis connections are L{FakeLink}s and whose
    time is a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.links = links = FakeLinks()
        self.link = links.hot
        self.node = ClusterNode(links, self.clock, heartbeatSeconds=10, nodeTimeoutSeconds=30,
                                nodeId="me", joinTimeout=2.0)
        self.inbound = Inbound()
        self.node.bind(self.inbound)
        self.node.startService()
        self.addCleanup(self.node.stopService)
        self.node._subscribedAt = -1.0  # subscribed before the other nodes spoke

    def say(self, data: bytes) -> None:
        """
        A presence message arrives.
        """
        self.node._received(PRESENCE, data)

    def answerPing(self, answer: Any = b"PONG") -> None:
        """
        Redis answers (or, with a failure, does not) the last C{PING}.
        """
        (d,) = [d for args, d in self.link.commands if args == (b"PING",) and not d.called][-1:]
        if isinstance(answer, Exception):
            d.errback(answer)
        else:
            d.callback(answer)


class NodeTests(NodeCase):
    """
    L{ClusterNode}'s rules, with its Redis connections replaced by
    L{FakeLink}s and time by a L{Clock}.
    """

    def test_interfaces(self) -> None:
        """
        The node and the one-node null object both provide L{IPeers}.
        """
        verifyObject(IPeers, self.node)
        verifyObject(IPeers, NoPeers())

    def test_listensOnItsChannels(self) -> None:
        """
        The node asks the links it was handed for the pub/sub connection,
        on the presence channel and its own; it builds no link itself.
        """
        self.assertEqual(self.links.channels, [PRESENCE, nodeChannel("me")])
        self.assertIs(self.node.link, self.links.hot)

    def test_joinWaitsForBeats(self) -> None:
        """
        Once subscribed, the node says hello; it is joined when every other
        node that heard the hello answered with its beat.
        """
        joined = self.node.whenJoined()
        self.node._subscribed()
        (hello, d), = self.link.published(PRESENCE)[:1]
        self.assertEqual(hello, b"hello me seq")
        d.callback(3)  # this node and two others listen
        self.assertNoResult(joined)
        self.say(b"beat x 5:1:1:100")
        self.assertNoResult(joined)
        self.say(b"beat y ")
        self.successResultOf(joined)
        self.assertTrue(self.node.joined)
        self.assertEqual(set(self.node.remoteUsers), {5})

    def test_joinAlone(self) -> None:
        """
        The only node is joined as soon as its hello is answered.
        """
        joined = self.node.whenJoined()
        self.node._subscribed()
        self.link.published(PRESENCE)[0][1].callback(1)
        self.successResultOf(joined)

    def test_joinTimeout(self) -> None:
        """
        A node that does not answer does not hold the join for more than
        C{joinTimeout}.
        """
        joined = self.node.whenJoined()
        self.node._subscribed()
        self.link.published(PRESENCE)[0][1].callback(2)
        self.clock.advance(1.9)
        self.assertNoResult(joined)
        self.clock.advance(0.1)
        self.successResultOf(joined)
        self.assertTrue(self.node.joined)

    def test_redisDownAtStart(self) -> None:
        """
        With Redis unreachable, the node serves after C{joinTimeout}, but
        is not joined until it is subscribed and answered.
        """
        joined = self.node.whenJoined()
        self.clock.advance(2.0)
        self.successResultOf(joined)
        self.assertFalse(self.node.joined)
        self.node._subscribed()
        self.link.published(PRESENCE)[0][1].callback(1)
        self.assertTrue(self.node.joined)

    def test_helloAnswered(self) -> None:
        """
        A hello from another node is answered with this node's beat at once.
        """
        self.node._subscribed()
        self.node.connected(4, UserStats(4, 0.0), 1)
        self.say(b"hello other")
        beats = [data for data, _ in self.link.published(PRESENCE) if data.startswith(b"beat")]
        self.assertEqual(beats[-1], b"beat me 4:1:0:0")

    def test_connectionAnnounced(self) -> None:
        """
        Each connection change is announced with the user's count and the
        two counters an online user's statistics need, while the node is
        subscribed (being heard means being able to hear).
        """
        stats = UserStats(4, 0.0)
        stats.connectedTimes, stats.lastConnection = 3, 1234.5
        self.node.connected(4, stats, 1)  # not subscribed: not announced (the beat will)
        self.node._subscribed()
        self.node.connected(4, stats, 2)
        self.node.disconnected(4, stats, 0)
        published = [data for data, _ in self.link.published(PRESENCE)]
        self.assertEqual(published, [b"hello me seq", b"beat me 4:1:3:1234", b"conn me 4 2 3 1234",
                                     b"conn me 4 0 3 1234"])

    def test_batchPerNodePerTurn(self) -> None:
        """
        The messages of one turn for one node go out as one C{PUBLISH}, in
        order; a message for several of its users crosses once.
        """
        self.say(b"beat x 1:1:1:1,2:1:1:1,3:1:1:1")
        self.say(b"beat y 3:1:1:1")
        self.node.forward([1], b"m1")
        self.node.forward([1, 2, 3], b"m2")
        self.node.forward([2], b"m3")
        self.assertEqual(self.link.published(nodeChannel("x")), [])
        self.clock.advance(0)
        (x, _), = self.link.published(nodeChannel("x"))
        (y, _), = self.link.published(nodeChannel("y"))
        self.assertEqual(parseBatch(x), [([1], b"m1"), ([1, 2, 3], b"m2"), ([2], b"m3")])
        self.assertEqual(parseBatch(y), [([3], b"m2")])

    def test_noSubscriber(self) -> None:
        """
        A batch that reached no subscriber is handed back as undeliverable,
        and its node is suspect: its users no longer count as online there.
        """
        self.say(b"beat x 1:1:1:1")
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        (_, d), = self.link.published(nodeChannel("x"))
        d.callback(0)
        self.assertEqual(self.inbound.undelivered, [([1], b"m1")])
        self.assertTrue(self.node.presence.isSuspect("x"))
        self.assertNotIn(1, self.node.remoteUsers)

    def test_noSubscriberAfterRestart(self) -> None:
        """
        A batch that reached no subscriber of a node not heard since this
        node subscribed again (Redis restarted, that node not subscribed
        yet) waits, and goes out once that node is heard.
        """
        self.say(b"beat x 1:1:1:1")
        self.clock.advance(5)
        self.node._subscribed()
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        (_, d), = self.link.published(nodeChannel("x"))
        d.callback(0)
        self.assertEqual((self.inbound.undelivered, self.node.outboxSize()), ([], 1))
        self.assertFalse(self.node.presence.isSuspect("x"))
        self.node.forward([1], b"m2")  # behind m1
        self.clock.advance(0)
        self.assertEqual(len(self.link.published(nodeChannel("x"))), 1)
        self.clock.advance(1)
        self.answerPing()
        self.assertEqual(len(self.link.published(nodeChannel("x"))), 1)  # x not heard yet
        self.say(b"beat x 1:1:1:1")
        self.clock.advance(1)
        self.answerPing()
        sent = self.link.published(nodeChannel("x"))[1:]
        self.assertEqual([parseBatch(body) for body, _ in sent], [[([1], b"m1")], [([1], b"m2")]])
        self.assertEqual(self.node.outboxSize(), 0)

    def test_deliveredBatch(self) -> None:
        """
        A batch that arrives on this node's channel is delivered message by
        message, each to its recipients.
        """
        self.node._received(nodeChannel("me"), formatBatch([([1, 2], b"a"), ([3], b"b")]))
        self.assertEqual(self.inbound.forwarded, [([1, 2], b"a"), ([3], b"b")])

    def test_malformed(self) -> None:
        """
        A malformed presence message or batch is counted and logged, and
        what follows is handled as usual.
        """
        self.say(b"beat")
        self.say(b"conn x 1 2")
        self.say(b"what x 1")
        self.say(b"beat x 1:z")
        self.node._received(nodeChannel("me"), b"1 999\nshort")
        self.assertEqual(self.node.malformed, 5)
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.say(b"conn x 1 1 1 1")
        self.assertIn(1, self.node.remoteUsers)

    def test_goodbye(self) -> None:
        """
        A node that says goodbye takes its users offline at once.
        """
        self.say(b"conn x 1 1 1 1")
        self.say(b"bye x")
        self.assertNotIn(1, self.node.remoteUsers)

    def test_queuedDrains(self) -> None:
        """
        A node that queued a message for a user online here makes this node
        read the user's queue again.
        """
        self.node.connected(4, UserStats(4, 0.0), 1)
        self.say(b"queued x 4")
        self.say(b"queued x 5")
        self.assertEqual(self.inbound.drained, [4])

    def test_deathHandsBackOutbox(self) -> None:
        """
        Messages waiting in the outbox for a node that dies are handed back
        as undeliverable, not dropped.
        """
        self.say(b"beat x 1:1:1:1")
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        (_, d), = self.link.published(nodeChannel("x"))
        d.errback(ConnectionError("Redis went away"))
        self.assertEqual(self.node.outboxSize(), 1)
        self.clock.advance(30)
        self.assertEqual(self.inbound.undelivered, [([1], b"m1")])
        self.assertEqual(self.node.outboxSize(), 0)


class SequenceTests(NodeCase):
    """
    Batches numbered per sending node (issue 15): a batch sent again after
    a timeout keeps its number and the receiving node drops a second copy;
    nothing waits for a node that can hear it once Redis answers again; a
    node of the previous version gets and sends batches without numbers.
    """

    def sequenced(self, node: bytes = b"x", users: bytes = b"1:1:1:1") -> None:
        """
        C{node} joined, reading sequenced batches, with C{users}.
        """
        self.say(b"hello %s seq" % node)
        self.say(b"beat %s %s" % (node, users))

    def sentTo(self, node: str = "x") -> list[tuple[tuple[str, bytes, int, int] | None, list[Any]]]:
        return [(parseHeader(body), parseBatch(body, (parseHeader(body) or (0, 0, 0, 0))[3]))
                for body, _ in self.link.published(nodeChannel(node))]

    def test_helloAnsweredWithNumbering(self) -> None:
        """
        A hello that says C{seq} is answered, on that node's channel, by a
        batch without messages numbered 0: this node numbers its batches
        too (a beat cannot say it to the previous version).
        """
        self.say(b"hello x seq")
        self.assertEqual(self.sentTo("x"), [(("me", self.node.epoch, 0, len(self.link.published(
            nodeChannel("x"))[0][0])), [])])

    def test_previousVersion(self) -> None:
        """
        A node whose hello does not say C{seq} (the previous version) gets
        batches without a header, and gets no numbering batch; its batches
        (without one) are delivered.
        """
        self.say(b"hello x")
        self.say(b"beat x 1:1:1:1")
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        (body, _), = self.link.published(nodeChannel("x"))
        self.assertEqual(body, formatBatch([([1], b"m1")]))
        self.node._received(nodeChannel("me"), formatBatch([([5], b"old")]))
        self.node._received(nodeChannel("me"), formatBatch([([5], b"old")]))
        self.assertEqual(self.inbound.forwarded, [([5], b"old"), ([5], b"old")])

    def test_numbered(self) -> None:
        """
        The batches for a node that reads numbers carry this node's id, its
        epoch and a number that grows with each batch.
        """
        self.sequenced()
        for text in (b"m1", b"m2"):
            self.node.forward([1], text)
            self.clock.advance(0)
        self.assertEqual([(h[2] if h else None, e) for h, e in self.sentTo()[1:]],
                         [(1, [([1], b"m1")]), (2, [([1], b"m2")])])
        self.assertEqual(self.sentTo()[1][0][:2], ("me", self.node.epoch))

    def test_secondCopyDropped(self) -> None:
        """
        A batch whose number is not above the highest delivered from its
        sender's epoch is dropped (counted, not logged); a new epoch (the
        sender restarted) starts again.
        """
        def batch(epoch: bytes, seq: int, text: bytes) -> bytes:
            return b"#x %s %d\n" % (epoch, seq) + formatBatch([([1], text)])

        for data in (batch(b"e1", 1, b"a"), batch(b"e1", 2, b"b"), batch(b"e1", 1, b"a"),
                     batch(b"e1", 2, b"b"), batch(b"e1", 4, b"d"), batch(b"e1", 3, b"c"),
                     batch(b"e2", 1, b"new"), batch(b"e1", 0, b"zero")):
            self.node._received(nodeChannel("me"), data)
        self.assertEqual([p for _, p in self.inbound.forwarded], [b"a", b"b", b"d", b"new", b"zero"])
        self.assertEqual((self.node.duplicates, self.node.malformed), (3, 0))

    def test_malformedHeader(self) -> None:
        """
        A header that is not one is a malformed batch: counted, nothing
        delivered.
        """
        for data in (b"#x e1\n", b"#x e1 z\n", b"#x e1 -1\n", b"#x e1 1", b"#x e1 1 2\n"):
            self.node._received(nodeChannel("me"), data + formatBatch([([1], b"a")]))
        self.assertEqual((self.node.malformed, self.inbound.forwarded), (5, []))
        self.assertRaises(ValueError, parseHeader, b"#x e1 -1\n")
        self.assertIsNone(parseHeader(formatBatch([([1], b"a")])))

    def test_frozenRetriedWithItsNumber(self) -> None:
        """
        A batch whose C{PUBLISH} timed out (Redis froze: it may have
        published it) waits; once Redis answers a C{PING}, it goes out
        again with the same number, without waiting to hear that node
        (this node's subscription outlived the freeze: so did that
        node's); the batches behind it follow in order.
        """
        from twisted.internet.defer import TimeoutError

        self.node._subscribed()
        self.clock.advance(5)
        self.sequenced()
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        (_, d), = self.link.published(nodeChannel("x"))[1:]
        d.errback(TimeoutError("no answer"))
        self.node.forward([1], b"m2")
        self.clock.advance(0)
        self.assertEqual((len(self.sentTo()), self.node.outboxSize()), (2, 2))
        self.clock.advance(1)
        self.answerPing(TimeoutError("still frozen"))
        self.assertEqual(len(self.sentTo()), 2)  # nothing more into a frozen Redis
        self.clock.advance(1)
        self.answerPing()
        self.assertEqual([(h[2], e) for h, e in self.sentTo()[1:]],
                         [(1, [([1], b"m1")]), (1, [([1], b"m1")]), (2, [([1], b"m2")])])
        self.assertEqual(self.node.outboxSize(), 0)

    def test_reachedNobodyRenumbered(self) -> None:
        """
        A batch that reached no subscriber (that node subscribes again
        after a Redis restart) is sent again with a new number, and so is
        every batch behind it: a batch published meanwhile may have
        reached that node, and none may fall below its number.
        """
        self.sequenced()
        self.node.forward([1], b"m1")
        self.clock.advance(0)
        self.node.forward([1], b"m2")
        self.clock.advance(0)
        self.clock.advance(1)
        self.node._subscribed()  # Redis restarted
        self.link.published(nodeChannel("x"))[1][1].callback(0)
        self.link.published(nodeChannel("x"))[2][1].callback(1)  # x subscribed meanwhile
        self.node.forward([1], b"m3")
        self.clock.advance(0)
        self.clock.advance(1)
        self.say(b"beat x 1:1:1:1")
        self.clock.advance(1)
        self.answerPing()
        self.assertEqual([(h[2], e[0][1]) for h, e in self.sentTo()[1:]],
                         [(1, b"m1"), (2, b"m2"), (4, b"m1"), (5, b"m3")])

    def test_exactlyOnceBetweenTwoNodes(self) -> None:
        """
        Between two nodes, every copy that Redis published of a batch sent
        again after a timeout is delivered once, in order.
        """
        from twisted.internet.defer import TimeoutError

        other = ClusterNode(FakeLinks(), self.clock, heartbeatSeconds=10, nodeTimeoutSeconds=30,
                            nodeId="x", joinTimeout=2.0)
        inbound = Inbound()
        other.bind(inbound)
        self.node._subscribed()
        self.clock.advance(5)
        self.sequenced()
        for i in range(3):
            self.node.forward([1], b"m%d" % i)
            self.clock.advance(0)
        sent = self.link.published(nodeChannel("x"))[1:]
        sent[0][1].callback(1)
        for _, d in sent[1:]:
            d.errback(TimeoutError("no answer"))  # both reached Redis
        self.node.forward([1], b"m3")
        self.clock.advance(1)
        self.answerPing()
        for body, _ in self.link.published(nodeChannel("x")):
            other._received(nodeChannel("x"), body)
        self.assertEqual([p for _, p in inbound.forwarded], [b"m0", b"m1", b"m2", b"m3"])
        self.assertEqual(other.duplicates, 2)

    def test_outboxBackPressure(self) -> None:
        """
        With C{maxOutbox} messages waiting, the senders are paused once;
        they resume once half of them went out.
        """
        node = ClusterNode(self.links, self.clock, heartbeatSeconds=10, nodeTimeoutSeconds=30,
                           nodeId="me2", joinTimeout=2.0, maxOutbox=4)
        node.bind(self.inbound)
        node.startService()
        self.addCleanup(node.stopService)
        calls: list[str] = []
        node.onPressure(lambda: calls.append("pause"), lambda: calls.append("resume"))
        node._received(PRESENCE, b"beat x 1:1:1:1")
        self.link.connected = False
        for i in range(6):
            node.forward([1], b"m%d" % i)
            self.clock.advance(0)
        self.assertEqual((calls, node.outboxSize(), node.paused), (["pause"], 6, True))
        self.link.connected = True
        self.clock.advance(0.5)
        node._received(PRESENCE, b"beat x 1:1:1:1")
        self.clock.advance(1)
        self.answerPing()
        self.assertEqual((calls, node.outboxSize(), node.paused), (["pause", "resume"], 0, False))
        self.assertEqual(len(self.link.published(nodeChannel("x"))), 6)

    def test_forgottenWhenGone(self) -> None:
        """
        A node that says goodbye leaves neither its numbers nor its
        numbering behind (a bound: one entry per live node).
        """
        self.sequenced()
        self.node._received(nodeChannel("me"), b"#x e1 3\n")
        self.assertEqual((self.node._marks, self.node._sequenced), ({"x": (b"e1", 3)}, {"x"}))
        self.say(b"bye x")
        self.assertEqual((self.node._marks, self.node._sequenced), ({}, set()))
