# -*- test-case-name: tests.test_routing -*-
"""
The router: the transport-free core of wsserver (SPEC section 3, "Routing").

It knows the live connections of every user, routes each message to all of
them, hands messages for offline users to the undelivered store and every
routed message to the event notifier, and keeps the statistics.  It talks to
connections only through L{IConnection}, so the WebSocket protocol and the
REST API are thin adapters to it and the tests drive it with plain objects.

Speed: a message is serialized once and framed once (by the injected
C{prepare}, Autobahn's L{PreparedMessage} in the server) for every connection
that receives it; nothing is logged per message.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import orjson
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from .config import MessageConfig
from .history import IInbox, Page, seqOf, withSeq
from .idempotency import IIdempotency, MemoryIdempotency
from .messages import BOT, InvalidPayload, Message, MessageFactory, dumpJSON, parsePayload
from .metrics import Counters
from .peers import IInbound, IPeers, IPresenceListener, IStatsListener, NoPeers, NoPresenceListener, NoStatsListener
from .stats import UserStats, emptyStatItem
from .queue import IUndeliveredStore, forRecipient

__all__ = ["IConnection", "Router"]

#: Reads of a user's undelivered queue tried before newer messages go first.
FETCH_ATTEMPTS = 3
#: Seconds before the first retry of a failed read (then twice that ...).
FETCH_RETRY_SECONDS = 1.0


class IConnection(Interface):
    """
    One live client connection, as the router sees it.
    """

    userId = Attribute("The id of the user this connection belongs to.")

    def sendPrepared(prepared: Any) -> None:
        """
        Send a message framed by the router's C{prepare} function.
        """

    def close(code: int, reason: str) -> None:
        """
        Close the connection with a WebSocket close code and reason.
        """


class _User:
    """
    The live connections of one user, and the messages that wait while the
    undelivered queue is drained (so that stored ones go first).
    """

    __slots__ = ("connections", "backlog", "stats", "resuming", "catchUp", "claims")

    def __init__(self, stats: UserStats) -> None:
        self.connections: list[Any] = []
        #: C{(message, frame, size, seq)} held while the queue is read
        self.backlog: list[tuple[Message, Any, int, int | None]] | None = None
        self.stats = stats
        #: the connections that resumed with C{since} (L{None}: none)
        self.resuming: dict[Any, _Resumed] | None = None
        #: another node appended to the user's inbox while a replay was
        #: being read: read the inbox again after it (L{Router._catchUp})
        self.catchUp = False
        #: while an ack token of the user is being claimed (a Redis round
        #: trip in a cluster), the user's next messages wait here, in order:
        #: C{(connection, message)}; L{None}: no claim in flight
        self.claims: list[tuple[Any, Message]] | None = None


class _Resumed:
    """
    What a connection that resumed with C{since} has had.  While the replay
    is read, C{buffer} holds what is delivered meanwhile, as C{(seq, frame)}.
    After it, the connection has every seq up to C{floor} and the seqs in
    C{above}: it gets only the others (L{fresh}), whether they come live, or
    late from another node, or from a catch-up read of the inbox.
    """

    __slots__ = ("buffer", "floor", "above")

    def __init__(self) -> None:
        self.buffer: list[tuple[int | None, Any]] | None = []
        self.floor = 0
        self.above: set[int] = set()

    def fresh(self, seq: int) -> bool:
        """
        Whether C{seq} is new to the connection; it is counted as had.
        """
        floor = self.floor
        if seq <= floor or seq in self.above:
            return False
        if seq == floor + 1:
            above = self.above
            floor = seq
            while floor + 1 in above:
                floor += 1
                above.remove(floor)
            self.floor = floor
        else:
            self.above.add(seq)
        return True


def _identity(payload: bytes) -> Any:
    return payload


@implementer(IInbound)
class Router:
    """
    Routes messages between the connections of users.

    @param config: the C{chat.message} settings.
    @param clock: the time source for statistics and timestamps.
    @param messages: stamps ids and timestamps on new messages.
    @param store: the undelivered queue, or L{None} when it is off.
    @param notify: called with every routed message and its serialized form
        (the event notifier), or L{None}.
    @param prepare: frames a serialized message once for all the connections
        that receive it.
    @param peers: the other nodes of a cluster (L{NoPeers}: none); the
        router binds itself to them as their L{IInbound}.
    @param statsListener: told which users' statistics change.
    @param maxTrackedUsers: the most users with no connection whose
        statistics are kept; beyond it the least recently seen are
        forgotten (0: no limit).
    @param presenceListener: told when a user comes online or goes offline
        on this node.
    @param inbox: the per-user inboxes (C{chat.history}), or L{None} when off.
    @param replayLimit: the most entries a resumed connection is replayed
        (C{chat.history.maxPerUser}: the whole inbox).
    @param notifyCommitted: answers a L{Deferred} that fires once what was
        handed to C{notify} so far is persisted (for acks).
    @param idempotency: remembers the ack tokens of senders (an in-memory
        one when L{None}).
    @param ackSeconds: how long an ack token is remembered
        (C{restApi.idempotencySeconds}).
    """

    log = Logger()

    def __init__(
        self,
        config: MessageConfig,
        clock: IReactorTime,
        messages: MessageFactory,
        store: IUndeliveredStore | None = None,
        notify: Callable[[Message, bytes], None] | None = None,
        prepare: Callable[[bytes], Any] = _identity,
        peers: IPeers | None = None,
        statsListener: IStatsListener | None = None,
        maxTrackedUsers: int = 0,
        presenceListener: IPresenceListener | None = None,
        inbox: IInbox | None = None,
        replayLimit: int = 1000,
        notifyCommitted: Callable[[], Deferred[None]] | None = None,
        idempotency: IIdempotency | None = None,
        ackSeconds: float = 300,
    ) -> None:
        self._config = config
        self._clock = clock
        #: the time source (the REST API reads it too)
        self.clock = clock
        self.messages = messages
        self._store = store
        self._notify = notify
        self._prepare = prepare
        self._peers: IPeers = NoPeers() if peers is None else peers
        listener = NoStatsListener() if statsListener is None else statsListener
        self._statsListener = listener
        #: called on every change of a user's statistics (bound once: it is
        #: on every message's path)
        self._changed = listener.changed
        self._presence: IPresenceListener = NoPresenceListener() if presenceListener is None else presenceListener
        self._users: dict[int, _User] = {}
        #: the users in C{_users} with no connection, least recently seen first
        self._offline: OrderedDict[int, None] = OrderedDict()
        #: (a reload may change it)
        self.maxTrackedUsers = maxTrackedUsers
        self.connectionCount = 0
        #: plain counters for the metrics (L{wsserver.metrics})
        self.counters = Counters()
        self.inbox = inbox
        self._replayLimit = replayLimit
        self._notifyCommitted = notifyCommitted
        self._idempotency: IIdempotency = MemoryIdempotency(clock) if idempotency is None else idempotency
        self._ackSeconds = ackSeconds
        #: per ack key whose message is not committed yet, the acks of its
        #: resends, sent once it is
        self._uncommitted: dict[bytes, list[Callable[[], None]]] = {}
        #: ack keys whose message could not be written: a resend is routed
        self._unwritten: set[bytes] = set()
        self._peers.bind(self)

    def setMessageConfig(self, config: MessageConfig) -> None:
        """
        Route what comes next with the C{chat.message} settings C{config}
        (a reload).
        """
        self._config = config

    # connections

    def _user(self, userId: int, now: float) -> _User:
        user = self._users.get(userId)
        if user is None:
            user = self._users[userId] = _User(UserStats(userId, now))
            self._seenOffline(userId)
        return user

    def _seenOffline(self, userId: int) -> None:
        """
        C{userId}, who has no connection, was just seen: it is forgotten
        last; forget the least recently seen beyond C{maxTrackedUsers}.
        """
        offline = self._offline
        offline[userId] = None
        offline.move_to_end(userId)
        cap = self.maxTrackedUsers
        if cap and len(offline) > cap:
            users = self._users
            for _ in range(len(offline) - cap):
                oldest, _ = offline.popitem(last=False)
                user = users.get(oldest)
                if user is not None and user.backlog is not None:
                    offline[oldest] = None  # its undelivered queue is being read: not now
                    continue
                users.pop(oldest, None)

    def attach(self, connection: Any, since: int | None = None) -> None:
        """
        A connection passed its checks: it receives the user's messages from
        now on, after what the undelivered queue kept for the user.

        @param since: the connection resumes (C{?since=N}, with the inbox
            on): it gets the replay of the user's inbox after C{since}
            first, and instead of the undelivered queue (L{_resume}).
        """
        now = self._clock.seconds()
        user = self._user(connection.userId, now)
        resume = since is not None and self.inbox is not None
        if resume:
            # live delivery to it waits in its buffer from now on, before
            # the inbox is read: nothing falls between the two
            if user.resuming is None:
                user.resuming = {}
            user.resuming[connection] = _Resumed()
        stats = user.stats
        stats.connectedTimes += 1
        stats.lastConnection = now
        self._changed(connection.userId)
        self.connectionCount += 1
        self._offline.pop(connection.userId, None)
        user.connections.append(connection)
        if len(user.connections) == 1:
            stats.wentOnline(now)
            self.counters.usersOnline += 1
        self._peers.connected(connection.userId, stats, len(user.connections))
        if len(user.connections) == 1:
            self._presence.online(connection.userId)
            # when a drain is still in flight (the user went offline and came
            # back before the store answered), it delivers to this connection
            if self._store is not None and user.backlog is None:
                if resume:
                    self._dropQueued(connection.userId, user)
                else:
                    self._drain(connection.userId, user, now)
        if resume:
            self._resume(connection, user, since)  # type: ignore[arg-type]

    def detach(self, connection: Any) -> None:
        """
        A connection closed (cleanly or not). Safe to call for a connection
        that was never attached.
        """
        user = self._users.get(connection.userId)
        if user is None or connection not in user.connections:
            return
        # a new list, not remove(): a connection may close while the router
        # delivers to the user's connections (a slow consumer's, closed in
        # its sendPrepared), and the loop must still reach the next ones
        user.connections = [c for c in user.connections if c is not connection]
        if user.resuming is not None:
            user.resuming.pop(connection, None)
            if not user.resuming:
                user.resuming = None
        self.connectionCount -= 1
        now = self._clock.seconds()
        user.stats.disconnectedTimes += 1
        self._changed(connection.userId)
        if not user.connections:
            self._seenOffline(connection.userId)
            user.stats.wentOffline(now)
            self.counters.usersOnline -= 1
        self._peers.disconnected(connection.userId, user.stats, len(user.connections))
        if not user.connections:
            self._statsListener.wentOffline(connection.userId)
            self._presence.offline(connection.userId)

    def isOnline(self, userId: int) -> bool:
        """
        Whether C{userId} has a live connection (on any node of a cluster).
        """
        user = self._users.get(userId)
        if user is not None and user.connections:
            return True
        return userId in self._peers.remoteUsers

    def connectionsOf(self, userId: int) -> int:
        """
        How many connections C{userId} has open, on every node of a cluster.
        """
        user = self._users.get(userId)
        here = len(user.connections) if user is not None else 0
        return here + self._peers.connectionsElsewhere(userId)

    def localUserIds(self) -> list[int]:
        """
        The users with a connection on this node.
        """
        return [u for u, user in self._users.items() if user.connections]

    def allConnections(self) -> Iterator[Any]:
        """
        Every live connection (a snapshot, safe to close them while iterating).
        """
        return iter([c for user in self._users.values() for c in user.connections])

    # statistics

    def statItem(self, userId: int) -> dict[str, Any]:
        """
        The statistics of one user; zeros for a user never seen.
        """
        user = self._users.get(userId)
        if user is None:
            return emptyStatItem(userId)
        return user.stats.item(self._clock.seconds(), bool(user.connections))

    def statItems(self) -> list[dict[str, Any]]:
        """
        The statistics of every user seen, by id.
        """
        now = self._clock.seconds()
        return [self._users[u].stats.item(now, bool(self._users[u].connections)) for u in sorted(self._users)]

    def userStats(self, userId: int) -> UserStats | None:
        """
        The statistics of one user on this node, or L{None} for a user never
        seen here.
        """
        user = self._users.get(userId)
        return None if user is None else user.stats

    def userIds(self) -> list[int]:
        """
        The ids of every user seen on this node.
        """
        return list(self._users)

    # routing

    def receive(self, connection: Any, payload: bytes) -> Message:
        """
        Route what C{connection} sent.

        @raise messages.InvalidPayload: when it is not a valid message; nothing
            is routed then.
        """
        enforce = self._config.enforceSender
        message = self.messages.fromPayload(payload, connection.userId if enforce else None, enforce)
        user = self._users[connection.userId]
        user.stats.bytesTransferred += len(payload)
        if user.claims is not None:
            # behind a message whose ack token is being claimed: in order
            user.claims.append((connection, message))
        elif message.ack is None:
            self.route(message, user)
        else:
            self._routeAcked(connection, message, user)
        return message

    def _claimDone(self, user: _User) -> None:
        """
        The claim in flight of C{user} is decided: route what waited behind
        it, in order, up to the next message that needs a claim of its own.
        """
        waiting, user.claims = user.claims or [], None
        while waiting:
            connection, message = waiting.pop(0)
            if message.ack is None:
                self.route(message, user)
                continue
            self._routeAcked(connection, message, user)
            if user.claims is not None:  # its claim is in flight: the rest waits behind it
                user.claims.extend(waiting)
                return

    # acks

    def _routeAcked(self, connection: Any, message: Message, user: _User) -> None:
        """
        Route a message that carries an ack token and answer C{message_ack}
        once everything written for it is committed; a token that the user
        sent before (within C{ackSeconds}) is acked again with the first id,
        and the message is not routed again: at once when the first is
        committed, else when it is; when the first could not be written, the
        resend is routed as a new message.
        """
        token = message.ack
        assert token is not None
        try:
            message.serialize()  # an unserializable message fails here, before any claim
        except (TypeError, orjson.JSONEncodeError) as e:
            raise InvalidPayload(f"$.data cannot be carried: {e}") from None
        key = b"ack:%d:%s" % (connection.userId, token.encode())
        # claimed as pending (with this node's name) until everything written
        # for it is committed, then settled with the message id: a resend
        # that finds the claim pending on a node that died meanwhile is
        # routed again rather than acked for a message that may be lost
        pending = b"p:%s:%s" % (self._peers.nodeId.encode(), message.id.encode())
        idempotency = self._idempotency
        user.claims = []  # the user's next messages wait for this claim
        claimed = idempotency.claim(key, pending, self._ackSeconds)

        def decided(earlier: bytes | None) -> Deferred[Any] | None:
            try:
                return route(earlier)
            finally:
                self._claimDone(user)

        def route(earlier: bytes | None) -> Deferred[Any] | None:
            if earlier is not None and key not in self._unwritten:
                waiting = self._uncommitted.get(key)
                if earlier.startswith(b"p:"):
                    _, node, firstId = earlier.split(b":", 2)
                    if waiting is not None:
                        # written here, not committed yet: acked once it is
                        waiting.append(lambda: self._sendAck(connection, token, firstId.decode()))
                        return None
                    if node.decode() != self._peers.nodeId and self._peers.isAlive(node.decode()):
                        return None  # being written on another node: not acked yet, the client resends
                    # its node died (or forgot it) before committing: route it again, claimed anew
                    idempotency.settle(key, pending).addErrback(
                        lambda f: self.log.failure("could not claim ack token of user {uid}", f,
                                                   uid=connection.userId))
                elif waiting is None:
                    self._sendAck(connection, token, earlier.decode())
                    return None
                else:
                    waiting.append(lambda: self._sendAck(connection, token, earlier.decode()))
                    return None
            self._unwritten.discard(key)
            waiting = self._uncommitted[key] = []
            writes: list[Deferred[Any]] = []
            self.route(message, user, writes)

            def committed(_: Any) -> Deferred[None]:
                settled = idempotency.settle(key, message.id.encode())
                settled.addErrback(lambda f: self.log.failure("could not settle ack token of user {uid}", f,
                                                              uid=connection.userId))

                def ack(_: Any) -> None:
                    for later in self._uncommitted.pop(key, ()):
                        later()
                    self._sendAck(connection, token, message.id)

                return settled.addCallback(ack)

            def unwritten(f: Any) -> Any:
                self._uncommitted.pop(key, None)
                self._unwritten.add(key)
                return f

            return gatherResults(writes, consumeErrors=True).addCallbacks(committed, unwritten)

        def unclaimed(f: Any) -> None:
            self.log.failure("could not claim the ack token of message {id} of user {uid}", f,
                             id=message.id, uid=connection.userId)
            self._claimDone(user)  # not routed, not acked: the client resends

        claimed.addCallbacks(decided, unclaimed).addErrback(
            lambda f: self.log.failure("could not ack message {id} of user {uid}", f,
                                       id=message.id, uid=connection.userId)
        )

    def _sendAck(self, connection: Any, token: str, messageId: str) -> None:
        user = self._users.get(connection.userId)
        if user is None or connection not in user.connections:
            return  # gone: the client resends, and gets the ack then
        note = self.messages.system("message_ack", connection.userId, {"ack": token, "id": messageId})
        self._sendOne(user, connection, self._prepare(note.serialize()), None)

    def route(self, message: Message, senderUser: _User | None = None,
              writes: list[Deferred[Any]] | None = None) -> None:
        """
        Deliver a valid message: to every connection of each recipient, to the
        undelivered queue for the offline ones, to the sender's connections
        for send-back and delivery status, and to the event notifier.

        @param writes: when given, gets the L{Deferred}s of everything
            written for the message (inbox, queue, events), for an ack.

        @raise messages.InvalidPayload: when the message cannot be serialized
            (C{data} nested deeper than the JSON writer allows); nothing is
            routed or counted then.
        """
        try:
            payload = message.serialize()
        except (TypeError, orjson.JSONEncodeError) as e:
            raise InvalidPayload(f"$.data cannot be carried: {e}") from None
        now = self._clock.seconds()
        sender = message.sender
        if senderUser is None and sender != BOT:
            senderUser = self._user(sender, now)
        if senderUser is not None:
            if not senderUser.connections and sender in self._offline:
                self._offline.move_to_end(sender)
            senderUser.stats.sentMessages += 1
            senderUser.stats.lastMessageTime = now
            self._changed(sender)
        size = len(payload)
        config = self._config
        forBot = message.isForBot()
        if not forBot and self.inbox is not None:
            self._routeToInboxes(message, payload, senderUser, now, writes)
        elif not forBot:
            # framed once, on the first live delivery (none when all are offline)
            prepared = None
            users = self._users
            reached = []
            seen = set()
            remote = self._peers.remoteUsers
            #: the recipients online on other nodes (the message crosses once
            #: to each of those nodes)
            forwarded: list[int] | None = None
            offline = None
            for r in message.recipients:
                if r == BOT or r in seen:
                    continue
                seen.add(r)
                user = users.get(r)
                if r in remote:
                    if forwarded is None:
                        forwarded = [r]
                    else:
                        forwarded.append(r)
                    if user is None or not user.connections:
                        reached.append(r)
                        continue
                if user is not None and (user.connections or user.backlog is not None):
                    # (with a backlog: offline again while the store is being
                    # read; it waits behind the stored messages, and is stored
                    # after them if nobody is back when the store answers)
                    if prepared is None:
                        prepared = self._prepare(payload)
                    self._deliver(user, message, prepared, size)
                    if user.connections:
                        reached.append(r)
                elif self._store is not None:
                    if offline is None:
                        offline = [r]
                    else:
                        offline.append(r)
                else:
                    self.counters.droppedOffline += 1
            if offline is not None:
                if len(offline) == 1 and message.recipients == offline:
                    d = self._keepRaw(offline[0], payload, now)  # already the copy for its only recipient
                else:
                    # stored once for all of them; each gets its copy when fetched
                    d = self._keepMany(offline, payload, now)
                if writes is not None:
                    writes.append(d)
            if senderUser is not None and senderUser.connections:
                if (
                    config.enableSendBack
                    and sender not in seen
                    and message.type not in config.ignoredTypesSendBack
                ):
                    if prepared is None:
                        prepared = self._prepare(payload)
                    self._deliver(senderUser, message, prepared, size)
                    if sender in remote:
                        if forwarded is None:
                            forwarded = [sender]
                        else:
                            forwarded.append(sender)
                if config.enableDeliveryStatus and reached:
                    stamp = self.messages.timestamp()
                    for r in reached:
                        note = self.messages.notification(message, r, stamp)
                        raw = note.serialize()
                        self._deliver(senderUser, note, self._prepare(raw), len(raw))
            if forwarded is not None:
                self._peers.forward(forwarded, payload)
        if self._notify is not None:
            self._notify(message, payload)
            if writes is not None and self._notifyCommitted is not None:
                writes.append(self._notifyCommitted())

    def _routeToInboxes(self, message: Message, payload: bytes, senderUser: _User | None, now: float,
                        writes: list[Deferred[Any]] | None) -> None:
        """
        Route with the inbox on: append the message to the inbox of each
        recipient (and of the sender, for send-back), then deliver each
        user's copy with that user's seq.  With Redis the seqs come later:
        delivery waits for them (in order: the replies come in order).
        """
        config = self._config
        sender = message.sender
        targets = []
        seen = set()
        for r in message.recipients:
            if r != BOT and r not in seen:
                seen.add(r)
                targets.append(r)
        sendBack = (
            senderUser is not None
            and config.enableSendBack
            and sender not in seen
            and message.type not in config.ignoredTypesSendBack
        )
        if sendBack:
            targets.append(sender)
        inbox = self.inbox
        assert inbox is not None
        seqs = inbox.append(targets, payload, now)
        if isinstance(seqs, list):
            self._deliverWithSeqs(message, payload, senderUser, targets, seqs, sendBack, now, writes)
            if writes is not None:
                writes.append(inbox.committed())
            return
        later: list[Deferred[Any]] | None = [] if writes is not None else None

        def assigned(seqs: list[int | None]) -> Deferred[Any] | None:
            self._deliverWithSeqs(message, payload, senderUser, targets, seqs, sendBack,
                                  self._clock.seconds(), later)
            return None if not later else gatherResults(later, consumeErrors=True)

        def unassigned(f: Any) -> Any:
            # the inbox cannot be reached: deliver without seqs rather than lose it
            self.log.failure("could not append message {id} to inboxes", f, id=message.id)
            assigned([None] * len(targets))
            if later is not None:
                return f  # not acked: the client resends
            return None

        seqs.addCallbacks(assigned, unassigned)
        if writes is not None:
            writes.append(seqs)

    def _deliverWithSeqs(self, message: Message, payload: bytes, senderUser: _User | None, targets: list[int],
                         seqs: Sequence[int | None], sendBack: bool, now: float,
                         writes: list[Deferred[Any]] | None) -> None:
        """
        Deliver each target's copy of a message, framed with its seq: to its
        connections here, to the node it is on, or to the undelivered queue.
        """
        users = self._users
        remote = self._peers.remoteUsers
        sender = message.sender
        reached = []
        for r, seq in zip(targets, seqs):
            framed = payload if seq is None else withSeq(payload, seq)
            own = sendBack and r == sender
            user = users.get(r)
            local = user is not None and (user.connections or user.backlog is not None)
            if r in remote:
                self._peers.forward([r], framed)
                if not local:
                    if not own:
                        reached.append(r)
                    continue
            if local:
                assert user is not None
                self._deliver(user, message, self._prepare(framed), len(framed), seq)
                if user.connections and not own:
                    reached.append(r)
            elif own:
                pass
            elif self._store is not None:
                d = self._keepRaw(r, forRecipient(framed, r), now)
                if writes is not None:
                    writes.append(d)
            else:
                # a node where the user just resumed (not known here yet)
                # reads the inbox again (the queue announces its own puts)
                self._peers.announceQueued(r)
        if senderUser is not None and senderUser.connections and self._config.enableDeliveryStatus and reached:
            stamp = self.messages.timestamp()
            for r in reached:
                note = self.messages.notification(message, r, stamp)
                raw = note.serialize()
                self._deliver(senderUser, note, self._prepare(raw), len(raw))

    # resuming (?since=N)

    def _resume(self, connection: Any, user: _User, since: int) -> None:
        """
        Replay the inbox of C{connection}'s user after C{since}, then what
        came live meanwhile.

        The rule: the connection was attached to live delivery, buffering,
        before the inbox was read; the read sees every append made before
        it.  So every message is in the replay or in the buffer (or both, a
        message appended before the read but delivered after the attach, or
        later still: forwarded by another node).  After the replay up to seq
        L, the connection gets only messages whose seq is greater than L:
        first those of the buffer, then the live ones.  No gap, no
        duplicate, in order.
        """
        inbox = self.inbox
        assert inbox is not None
        userId = connection.userId

        def replay(page: Page) -> None:
            state = user.resuming.get(connection) if user.resuming is not None else None
            if state is None or state.buffer is None:
                return  # closed meanwhile
            buffer, state.buffer = state.buffer, None
            if page.gapAfter(since):
                gap = self.messages.system("history_gap", userId, {"since": since, "first": page.first})
                connection.sendPrepared(self._prepare(gap.serialize()))
            last = since
            stats = user.stats
            # (a replay is a burst bounded by maxPerUser: not counted as a
            # slow consumer's backlog, as the queue's drain)
            sendStored = getattr(connection, "sendStored", connection.sendPrepared)
            for seq, framed in page.entries:
                sendStored(self._prepare(framed))
                stats.receivedMessages += 1
                stats.bytesTransferred += len(framed)
                last = seq
            if page.entries:
                self.counters.delivered += len(page.entries)
                self._changed(userId)
            # (a since beyond the newest seq: seqs of a memory inbox
            # restarted; they count from there)
            state.floor = last if page.entries else min(since, page.last)
            for seq, prepared in buffer:
                if seq is None or state.fresh(seq):
                    connection.sendPrepared(prepared)
            if user.catchUp:
                user.catchUp = False
                self._catchUp(userId, user)

        def failed(f: Any) -> None:
            self.log.failure("could not read the inbox of user {uid}", f, uid=userId)
            state = user.resuming.get(connection) if user.resuming is not None else None
            if state is not None and state.buffer is not None:
                connection.close(1011, "History unavailable: reconnect with the same since")

        inbox.read(userId, since, self._replayLimit, self._clock.seconds()).addCallbacks(replay, failed)

    def _catchUp(self, userId: int, user: _User) -> None:
        """
        Another node appended to the inbox of a user it thought offline
        (the user had just resumed here): read the inbox again after what
        the resumed connections have, and send each what it lacks.
        """
        resuming = user.resuming
        if resuming is None or self.inbox is None:
            return
        if any(state.buffer is not None for state in resuming.values()):
            user.catchUp = True  # again after that replay
        floors = [state.floor for state in resuming.values() if state.buffer is None]
        if not floors:
            return

        def deliver(page: Page) -> None:
            for seq, framed in page.entries:
                prepared = None
                for connection in list(user.connections):
                    state = user.resuming.get(connection) if user.resuming is not None else None
                    if state is not None and state.buffer is None and state.fresh(seq):
                        if prepared is None:
                            prepared = self._prepare(framed)
                        connection.sendPrepared(prepared)

        self.inbox.read(userId, min(floors), self._replayLimit, self._clock.seconds()).addCallbacks(
            deliver, lambda f: self.log.failure("could not read the inbox of user {uid}", f, uid=userId)
        )

    def _dropQueued(self, userId: int, user: _User) -> None:
        """
        A connection resumes instead of draining the undelivered queue: what
        the queue held with a seq is in the inbox (the client has it, or the
        replay covers it) and is forgotten; what it held without one (kept
        before the inbox was on) is delivered, after the replay.
        """
        store = self._store
        assert store is not None

        def drop(stored: list[tuple[int, bytes]]) -> Any:
            for _, payload in stored:
                if seqOf(payload) is None:
                    user.stats.receivedMessages += 1
                    self._send(user, self._prepare(payload), None)
            if stored:
                return store.ack(userId, [key for key, _ in stored])
            return None

        store.fetch(userId, self._clock.seconds()).addCallback(drop).addErrback(
            lambda f: self.log.failure("could not drop the queue of resuming user {uid}", f, uid=userId)
        )

    # what other nodes hand back (IInbound)

    def deliverForwarded(self, userIds: Sequence[int], payload: bytes) -> None:
        """
        Deliver a message that another node routed, to this node's
        connections of C{userIds}; a user who left meanwhile is offline for
        it: it is kept in the (shared) queue rather than lost.
        """
        prepared = None
        message = None
        users = self._users
        offline = None
        for userId in userIds:
            user = users.get(userId)
            if user is None or (not user.connections and user.backlog is None):
                if offline is None:
                    offline = [userId]
                else:
                    offline.append(userId)
                continue
            if prepared is None:
                prepared = self._prepare(payload)
            if user.backlog is not None and message is None:
                message = Message(**parsePayload(payload))
            seq = None if self.inbox is None else seqOf(payload)
            self._deliver(user, message, prepared, len(payload), seq)  # type: ignore[arg-type]
        if offline is not None:
            self._keepFor(offline, payload)

    def undeliverable(self, userIds: Sequence[int], payload: bytes) -> None:
        """
        A message forwarded for C{userIds} reached no node: it is a message
        for offline users, except for those online here or on another node
        (they had their copy there).
        """
        remote = self._peers.remoteUsers
        offline = []
        for userId in userIds:
            user = self._users.get(userId)
            if (user is not None and user.connections) or userId in remote:
                continue
            offline.append(userId)
        if offline:
            self._keepFor(offline, payload)
            if self.inbox is not None and self._store is None:
                for userId in offline:
                    self._peers.announceQueued(userId)

    def _keepFor(self, userIds: list[int], payload: bytes) -> None:
        """
        Keep C{payload}, as routed, for C{userIds} (offline) when the queue
        is on: stored once, each gets its copy when fetched.
        """
        if self._store is not None:
            self._keepMany(userIds, payload, self._clock.seconds())

    def drainAgain(self, userId: int) -> None:
        """
        Read the (shared) undelivered queue of a user online here again: a
        node queued a message just as the user came online.
        """
        user = self._users.get(userId)
        if user is not None and user.resuming is not None:
            self._catchUp(userId, user)
        if self._store is not None and user is not None and user.connections and user.backlog is None:
            self._drain(userId, user, self._clock.seconds())

    def _deliver(self, user: _User, message: Message, prepared: Any, size: int, seq: int | None = None) -> None:
        stats = user.stats
        stats.receivedMessages += 1
        stats.bytesTransferred += size
        self.counters.delivered += 1
        self._changed(stats.userId)
        if user.backlog is not None:
            user.backlog.append((message, prepared, size, seq))
            return
        if user.resuming is None:
            for connection in user.connections:
                connection.sendPrepared(prepared)
        else:
            self._send(user, prepared, seq)

    def _send(self, user: _User, prepared: Any, seq: int | None) -> None:
        """
        Write a frame to every connection of C{user}; a resuming one buffers
        it, with its C{seq}, until its replay was sent (L{_sendOne}).
        """
        for connection in user.connections:
            self._sendOne(user, connection, prepared, seq)

    def _sendStored(self, user: _User, prepared: Any, seq: int | None) -> None:
        """
        As L{_send}, for a message from the undelivered queue.
        """
        for connection in user.connections:
            state = None if user.resuming is None else user.resuming.get(connection)
            if state is None or (state.buffer is None and (seq is None or state.fresh(seq))):
                getattr(connection, "sendStored", connection.sendPrepared)(prepared)
            elif state.buffer is not None:
                state.buffer.append((seq, prepared))

    @staticmethod
    def _sendOne(user: _User, connection: Any, prepared: Any, seq: int | None) -> None:
        """
        Write a frame to one connection of C{user}: buffered while it
        resumes, dropped when its replay had that seq already.
        """
        state = None if user.resuming is None else user.resuming.get(connection)
        if state is None:
            connection.sendPrepared(prepared)
        elif state.buffer is not None:
            state.buffer.append((seq, prepared))
        elif seq is None or state.fresh(seq):
            connection.sendPrepared(prepared)

    def keepUnsent(self, userId: int, payloads: list[bytes]) -> None:
        """
        Keep messages that were routed to a connection of C{userId} and
        never written to it (it was closed as a slow consumer, or lost), in
        the undelivered queue when it is on, as for an offline user.
        """
        if self._store is None:
            return
        now = self._clock.seconds()
        for payload in payloads:
            obj = orjson.loads(payload)
            if obj.get("recipients") != [userId]:
                obj["recipients"] = [userId]
                payload = orjson.dumps(obj)
            self._keepRaw(userId, payload, now)

    def _keep(self, userId: int, obj: dict[str, Any], now: float) -> None:
        self._keepRaw(userId, dumpJSON(obj), now)

    def _keepRaw(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        self.counters.queued += 1
        d = self._store.put(userId, payload, now)  # type: ignore[union-attr]
        d.addErrback(lambda f: self.log.failure("could not keep a message for user {uid}", f, uid=userId))
        return d

    def _keepMany(self, userIds: list[int], payload: bytes, now: float) -> Deferred[None]:
        self.counters.queued += len(userIds)
        d = self._store.putMany(userIds, payload, now)  # type: ignore[union-attr]
        d.addErrback(lambda f: self.log.failure("could not keep a message for {n} users", f, n=len(userIds)))
        return d

    def _drain(self, userId: int, user: _User, now: float) -> None:
        """
        Deliver what the undelivered queue kept for a user who just came
        online; messages routed meanwhile wait in the user's backlog, so that
        the stored ones arrive first.
        """
        user.backlog = []
        store = self._store
        assert store is not None

        def deliver(stored: list[tuple[int, bytes]]) -> None:
            backlog, user.backlog = user.backlog or [], None
            if not user.connections:
                # all gone again before the store answered: what was stored
                # stays stored, and what came meanwhile is stored after it
                for message, _, _, _ in backlog:
                    copy = message.toDict()
                    copy["recipients"] = [userId]
                    self._keep(userId, copy, self._clock.seconds())
                return
            connections = user.connections
            if stored:
                self._changed(userId)
            self.counters.delivered += len(stored)
            # (a connection may take a replay apart from live messages:
            # the protocol does not count it as a slow consumer's backlog)
            senders = [getattr(c, "sendStored", c.sendPrepared) for c in connections]
            withInbox = self.inbox is not None
            for _, payload in stored:
                prepared = self._prepare(payload)
                user.stats.receivedMessages += 1
                user.stats.bytesTransferred += len(payload)
                if user.resuming is None:
                    for send in senders:
                        send(prepared)
                else:
                    self._sendStored(user, prepared, seqOf(payload) if withInbox else None)
            for _, prepared, _, seq in backlog:
                if user.resuming is None:
                    for connection in connections:
                        connection.sendPrepared(prepared)
                else:
                    self._send(user, prepared, seq)
            if stored:
                store.ack(userId, [key for key, _ in stored]).addErrback(
                    lambda f: self.log.failure("could not forget delivered messages of user {uid}", f, uid=userId)
                )

        attempts = [0]

        def failed(f: Any) -> None:
            # the stored messages go first: hold the newer ones and try the
            # store again a few times before giving up on the order
            attempts[0] += 1
            self.log.failure("could not read undelivered messages of user {uid} (attempt {n})", f,
                             uid=userId, n=attempts[0])
            if attempts[0] < FETCH_ATTEMPTS and user.connections:
                self._clock.callLater(attempts[0] * FETCH_RETRY_SECONDS, fetch)
            else:
                deliver([])

        def fetch() -> None:
            store.fetch(userId, self._clock.seconds()).addCallbacks(deliver, failed)

        fetch()
