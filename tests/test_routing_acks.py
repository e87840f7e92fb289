"""
Tests for L{wsserver.routing.acks}: the ack ledger on its own, with a route
function that records and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, FirstError, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.idempotency import MemoryIdempotency
from wsserver.messages import InvalidPayload, Message
from wsserver.routing.acks import AckLedger
from wsserver.routing.interfaces import IConnection, NoPeers

from .test_routing import FakeConnection


class Peers(NoPeers):
    """
    This node is C{"a"}; the nodes in C{alive} are alive too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodeId = "a"
        self.alive = {"a"}

    def isAlive(self, nodeId: str) -> bool:
        return nodeId in self.alive


class SlowClaims(MemoryIdempotency):
    """
    Claims answered when the test says.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.answers: list[Deferred[bytes | None]] = []

    def claim(self, key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        earlier: list[Any] = []
        super().claim(key, value, ttlSeconds).addCallback(earlier.append)
        d: Deferred[bytes | None] = Deferred()
        d.addCallback(lambda _: earlier[0])
        self.answers.append(d)
        return d


def message(n: int, ack: str | None = None) -> Message:
    return Message(f"id{n}", "text", f"m{n}", "t", 1, [2], None, ack)


class AckLedgerTests(SynchronousTestCase):
    """
    L{AckLedger}: claims, commits and acks.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.claims = MemoryIdempotency(self.clock)
        self.peers = Peers()
        self.routed: list[str] = []
        self.acks: list[tuple[str, str]] = []
        #: what the next routed message's writes answer
        self.writes: list[Deferred[Any]] = []
        self.ledger = self.makeLedger()
        self.conn = FakeConnection(1)

    def makeLedger(self) -> AckLedger:
        return AckLedger(self.claims, 300, self.peers, self.route, self.sendAck)

    def route(self, connection: IConnection, message: Message, writes: list[Deferred[Any]] | None) -> None:
        self.routed.append(message.text)
        if writes is not None:
            writes.extend(self.writes)

    def sendAck(self, connection: IConnection, token: str, messageId: str) -> None:
        self.acks.append((token, messageId))

    def test_withoutToken(self) -> None:
        """
        A message with no token is routed at once, and not acked.
        """
        self.ledger.submit(self.conn, message(0))
        self.assertEqual((self.routed, self.acks), (["m0"], []))

    def test_ackedOnceCommitted(self) -> None:
        """
        A message with a token is routed, and acked once what was written
        for it is committed.
        """
        written: Deferred[None] = Deferred()
        self.writes = [written]
        self.ledger.submit(self.conn, message(0, "t"))
        self.assertEqual((self.routed, self.acks), (["m0"], []))
        written.callback(None)
        self.assertEqual(self.acks, [("t", "id0")])
        self.assertEqual(self.successResultOf(self.claims.claim(b"ack:1:t", b"x", 300)), b"id0")

    def test_resendAckedWithFirstId(self) -> None:
        """
        A resend of a settled token is acked with the first id and not
        routed again.
        """
        self.ledger.submit(self.conn, message(0, "t"))
        self.ledger.submit(self.conn, message(1, "t"))
        self.assertEqual(self.routed, ["m0"])
        self.assertEqual(self.acks, [("t", "id0"), ("t", "id0")])

    def test_resendBeforeCommit(self) -> None:
        """
        A resend while the first copy is not committed is acked when it is.
        """
        written: Deferred[None] = Deferred()
        self.writes = [written]
        self.ledger.submit(self.conn, message(0, "t"))
        self.ledger.submit(self.conn, message(1, "t"))
        self.assertEqual((self.routed, self.acks), (["m0"], []))
        written.callback(None)
        self.assertEqual(self.acks, [("t", "id0"), ("t", "id0")])

    def test_resendAfterFailedWrite(self) -> None:
        """
        When a write failed, nothing is acked, and a resend is routed again.
        """
        self.writes = [fail(OSError("disk full"))]
        self.ledger.submit(self.conn, message(0, "t"))
        self.writes = []
        self.ledger.submit(self.conn, message(1, "t"))
        self.assertEqual(self.routed, ["m0", "m1"])
        self.assertEqual(self.acks, [("t", "id1")])
        self.assertEqual(len(self.flushLoggedErrors(FirstError)), 1)

    def test_pendingOnLiveNode(self) -> None:
        """
        A token pending on another node that is alive is neither routed nor
        acked here (the client resends).
        """
        self.peers.alive.add("b")
        self.successResultOf(self.claims.claim(b"ack:1:t", b"p:b:idB", 300))
        self.ledger.submit(self.conn, message(0, "t"))
        self.assertEqual((self.routed, self.acks), ([], []))

    def test_pendingOnDeadNode(self) -> None:
        """
        A token pending on a node that died is routed again here.
        """
        self.successResultOf(self.claims.claim(b"ack:1:t", b"p:b:idB", 300))
        self.ledger.submit(self.conn, message(0, "t"))
        self.assertEqual((self.routed, self.acks), (["m0"], [("t", "id0")]))

    def test_orderBehindClaim(self) -> None:
        """
        While a claim is in flight, the user's next messages wait and then
        go in order, up to the next message with a token of its own.
        """
        self.claims = SlowClaims(self.clock)
        self.ledger = self.makeLedger()
        self.ledger.submit(self.conn, message(0, "a"))
        self.ledger.submit(self.conn, message(1))
        self.ledger.submit(self.conn, message(2, "b"))
        self.ledger.submit(self.conn, message(3))
        self.assertEqual(self.routed, [])
        self.assertIn(1, self.ledger.waiting)
        self.claims.answers.pop(0).callback(None)
        self.assertEqual(self.routed, ["m0", "m1"])
        self.claims.answers.pop(0).callback(None)
        self.assertEqual(self.routed, ["m0", "m1", "m2", "m3"])
        self.assertEqual(self.ledger.waiting, {})

    def test_failedClaim(self) -> None:
        """
        A claim that fails routes nothing for its message and lets the ones
        behind it go.
        """
        self.claims = SlowClaims(self.clock)
        self.ledger = self.makeLedger()
        self.ledger.submit(self.conn, message(0, "a"))
        self.ledger.submit(self.conn, message(1))
        self.claims.answers.pop(0).errback(ConnectionError("Redis unreachable"))
        self.assertEqual(self.routed, ["m1"])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_unserializable(self) -> None:
        """
        A message with a token that cannot be serialized raises
        L{InvalidPayload} before anything is claimed.
        """
        deep: Any = []
        for _ in range(1000):
            deep = [deep]
        bad = Message("x", "text", "", "t", 1, [2], deep, "t")
        self.assertRaises(InvalidPayload, self.ledger.submit, self.conn, bad)
        self.assertEqual(self.ledger.waiting, {})
        self.assertIsNone(self.successResultOf(self.claims.claim(b"ack:1:t", b"x", 300)))
        self.assertEqual(self.routed, [])

    def test_otherUsersNotHeld(self) -> None:
        """
        A claim in flight holds only its own user's messages.
        """
        self.claims = SlowClaims(self.clock)
        self.ledger = self.makeLedger()
        self.ledger.submit(self.conn, message(0, "a"))
        self.ledger.submit(FakeConnection(7), message(1))
        self.assertEqual(self.routed, ["m1"])
