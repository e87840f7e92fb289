# -*- test-case-name: tests.test_routing_acks -*-
"""
The ack ledger: messages that carry an ack token (SPEC section 10, "Acks for
senders").

A message with a token is routed once the token is claimed (in a cluster a
Redis round trip, L{IIdempotency.claim}); the sender's next messages wait
behind the claim, so that they keep the sender's order.  The claim is
I{pending} (C{p:<node>:<message id>}) until everything written for the
message is committed, then I{settled} with the message id, and the sender
gets its C{message_ack}.  A resend of a token:

  - settled: acked again with the first id, not routed;
  - pending here (written, not committed yet): acked once it is;
  - pending on another node that is alive: not acked (the client resends);
  - pending on a node that died, or whose write failed here: routed again,
    claimed anew.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..idempotency import IIdempotency
from ..ids import UserId, idBytes
from ..messages import InvalidPayload, Message
from .interfaces import IConnection, IPeers

__all__ = ["AckLedger"]

#: C{route(connection, message, writes)}: route a message that
#: C{connection} sent; C{writes}, when not L{None}, gets the L{Deferred}s of
#: everything written for it.
Route = Callable[[IConnection, Message, "list[Deferred[Any]] | None"], None]
#: C{sendAck(connection, token, messageId)}
SendAck = Callable[[IConnection, str, str], None]


class AckLedger:
    """
    Claims and settles the ack tokens of senders, and holds each sender's
    messages while one of its claims is in flight.

    @param idempotency: where tokens are claimed.
    @param seconds: how long a token is remembered
        (C{restApi.idempotencySeconds}).
    @param peers: the other nodes (this node's name; whether the node of a
        pending claim is alive).
    @param route: routes a message (see L{Route}).
    @param sendAck: answers a sender's connection with its C{message_ack}.

    @ivar waiting: user id -> the messages (C{(connection, message)}, in
        order) that wait behind the user's claim in flight; empty when no
        claim is in flight (tested on every message).
    """

    log = Logger()

    def __init__(self, idempotency: IIdempotency, seconds: float, peers: IPeers, route: Route,
                 sendAck: SendAck) -> None:
        self._idempotency = idempotency
        self._seconds = seconds
        self._peers = peers
        self._route = route
        self._sendAck = sendAck
        self.waiting: dict[int, list[tuple[IConnection, Message]]] = {}
        #: per ack key whose message is not committed yet, the acks of its
        #: resends, sent once it is
        self._uncommitted: dict[bytes, list[tuple[IConnection, str, str]]] = {}
        #: ack keys whose message could not be written: a resend is routed
        self._unwritten: set[bytes] = set()

    def submit(self, connection: IConnection, message: Message) -> None:
        """
        Route what C{connection} sent, in its user's order: behind the
        user's claim in flight, if any; after claiming its token, if it has
        one.

        @raise InvalidPayload: when a message with a token cannot be
            serialized (before anything is claimed).
        """
        waiting = self.waiting.get(connection.userId)
        if waiting is not None:
            waiting.append((connection, message))
        elif message.ack is None:
            self._route(connection, message, None)
        else:
            self._claim(connection, message)

    def _claim(self, connection: IConnection, message: Message) -> None:
        token = message.ack
        assert token is not None
        try:
            message.serialize()  # an unserializable message fails here, before any claim
        except (TypeError, orjson.JSONEncodeError) as e:
            raise InvalidPayload(f"$.data cannot be carried: {e}") from None
        userId = connection.userId
        key = b"ack:%s:%s" % (idBytes(userId), token.encode())
        # claimed as pending (with this node's name) until everything written
        # for it is committed, then settled with the message id: a resend
        # that finds the claim pending on a node that died meanwhile is
        # routed again rather than acked for a message that may be lost
        pending = b"p:%s:%s" % (self._peers.nodeId.encode(), message.id.encode())
        self.waiting[userId] = []  # the user's next messages wait for this claim
        claim = _Claim(self, connection, message, token, key, pending)
        self._idempotency.claim(key, pending, self._seconds).addCallbacks(claim.decided, claim.unclaimed).addErrback(
            lambda f: self.log.failure("could not ack message {id} of user {uid}", f, id=message.id, uid=userId)
        )

    def _claimDone(self, userId: UserId) -> None:
        """
        The claim in flight of C{userId} is decided: route what waited
        behind it, in order, up to the next message that needs a claim of
        its own.
        """
        waiting = self.waiting.pop(userId, [])
        while waiting:
            connection, message = waiting.pop(0)
            if message.ack is None:
                self._route(connection, message, None)
                continue
            self._claim(connection, message)
            if userId in self.waiting:  # its claim is in flight: the rest waits behind it
                self.waiting[userId].extend(waiting)
                return

    def _decide(self, claim: _Claim, earlier: bytes | None) -> Deferred[Any] | None:
        """
        The token of C{claim} was claimed: C{earlier} is what it held
        (L{None}: nobody had it).  Route the message, or ack a resend.
        """
        key = claim.key
        if earlier is not None and key not in self._unwritten:
            later = self._uncommitted.get(key)
            if earlier.startswith(b"p:"):
                _, node, firstId = earlier.split(b":", 2)
                if later is not None:
                    # written here, not committed yet: acked once it is
                    later.append((claim.connection, claim.token, firstId.decode()))
                    return None
                if node.decode() != self._peers.nodeId and self._peers.isAlive(node.decode()):
                    return None  # being written on another node: not acked yet, the client resends
                # its node died (or forgot it) before committing: route it again, claimed anew
                self._idempotency.settle(key, claim.pending).addErrback(claim.logFailure, "claim")
            elif later is None:
                self._sendAck(claim.connection, claim.token, earlier.decode())
                return None
            else:
                later.append((claim.connection, claim.token, earlier.decode()))
                return None
        self._unwritten.discard(key)
        self._uncommitted[key] = []
        writes: list[Deferred[Any]] = []
        self._route(claim.connection, claim.message, writes)
        return gatherResults(writes, consumeErrors=True).addCallbacks(claim.committed, claim.unwritten)

    def _committed(self, claim: _Claim) -> Deferred[None]:
        """
        Everything written for the message of C{claim} is committed: settle
        its token with the message id, then ack it and its resends.
        """
        settled = self._idempotency.settle(claim.key, claim.message.id.encode())
        settled.addErrback(claim.logFailure, "settle")
        return settled.addCallback(lambda _: self._ackAll(claim))

    def _ackAll(self, claim: _Claim) -> None:
        for connection, token, messageId in self._uncommitted.pop(claim.key, ()):
            self._sendAck(connection, token, messageId)
        self._sendAck(claim.connection, claim.token, claim.message.id)

    def _unwrittenKey(self, key: bytes) -> None:
        """
        A write for the message of C{key} failed: no ack; a resend is
        routed again.
        """
        self._uncommitted.pop(key, None)
        self._unwritten.add(key)


class _Claim:
    """
    One message with an ack token, from its claim to its ack.
    """

    __slots__ = ("ledger", "connection", "message", "token", "key", "pending")

    def __init__(self, ledger: AckLedger, connection: IConnection, message: Message, token: str, key: bytes,
                 pending: bytes) -> None:
        self.ledger = ledger
        self.connection = connection
        self.message = message
        self.token = token
        self.key = key
        self.pending = pending

    def decided(self, earlier: bytes | None) -> Deferred[Any] | None:
        try:
            return self.ledger._decide(self, earlier)
        finally:
            self.ledger._claimDone(self.connection.userId)

    def unclaimed(self, f: Failure) -> None:
        self.ledger.log.failure("could not claim the ack token of message {id} of user {uid}", f,
                                id=self.message.id, uid=self.connection.userId)
        self.ledger._claimDone(self.connection.userId)  # not routed, not acked: the client resends

    def committed(self, _: object) -> Deferred[None]:
        return self.ledger._committed(self)

    def unwritten(self, f: Failure) -> Failure:
        self.ledger._unwrittenKey(self.key)
        return f

    def logFailure(self, f: Failure, what: str) -> None:
        self.ledger.log.failure("could not {what} ack token of user {uid}", f, what=what,
                                uid=self.connection.userId)
