# -*- test-case-name: tests.test_routing -*-
"""
The router: the transport-free core of wsserver (SPEC section 3, "Routing").

It knows the live connections of every user (L{Registry}), routes each
message to all of them by one fan-out plan (L{Plan}), hands messages
for offline users to the undelivered queue and every routed message to the
event notifier, acks messages that carry a token (L{AckLedger}), delivers
what a connecting user missed (L{CatchUp}), and keeps the statistics.  It
talks to connections only through L{IConnection}, so the WebSocket protocol
and the REST API are thin adapters to it and the tests drive it with plain
objects.

Speed: a message is serialized once and framed once (by the injected
C{prepare}, Autobahn's L{PreparedMessage} in the server) for every connection
that receives it, and crosses once to each other node that has recipients;
nothing is logged per message.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import orjson
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..ids import UserId
from ..config import Config, MessageConfig
from ..history import IInbox, seqOf, withSeq
from ..idempotency import IIdempotency, MemoryIdempotency
from ..messages import BOT, InvalidPayload, Message, MessageFactory
from ..metrics import Counters
from ..stats import UserStats
from ..queue import IUndeliveredStore, forRecipient
from ..reloadable import IReloadable
from ..queue.pending import PendingBounds, PendingWrites
from .acks import AckLedger
from .catchup import CatchUp, OfflineQueue
from .delivery import User
from .interfaces import (
    IConnection,
    IInbound,
    IPeers,
    IPresenceListener,
    IStatsListener,
    IUserDirectory,
    NoPeers,
    NoPresenceListener,
    NoStatsListener,
)
from .plan import Plan, sendsBack, targetsOf
from .registry import Registry

__all__ = ["Router"]


def _identity(payload: bytes) -> Any:
    return payload


@implementer(IInbound, IUserDirectory, IReloadable)
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
    @param pendingWrites: what the undelivered queue has not written yet
        (the store counts it), with the event notifier's deliveries not
        settled when it has targets (a L{PendingBounds} of both); while it
        is full, the connections and REST requests that route messages are
        not read.  Unbounded when L{None}.

    @ivar messages: the factory of messages (the REST API is handed it
        apart).
    @ivar inbox: the per-user inboxes, or L{None}.
    @ivar counters: plain counters for the metrics (L{wsserver.metrics}).
    @ivar pendingWrites: the bound on what waits to be written (see above).
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
        pendingWrites: PendingWrites | PendingBounds | None = None,
    ) -> None:
        self._config = config
        self.pendingWrites: PendingWrites | PendingBounds = PendingWrites() if pendingWrites is None else pendingWrites
        self._clock = clock
        self.messages = messages
        self.inbox = inbox
        self.counters = Counters()
        self._notify = notify
        self._notifyCommitted = notifyCommitted
        self._prepare = prepare
        self._peers: IPeers = NoPeers() if peers is None else peers
        listener = NoStatsListener() if statsListener is None else statsListener
        self._statsListener = listener
        #: called on every change of a user's statistics (bound once: it is
        #: on every message's path; L{None} when nobody listens)
        self._changed: Callable[[UserId], None] | None = None if statsListener is None else listener.changed
        self._presence: IPresenceListener = NoPresenceListener() if presenceListener is None else presenceListener
        self._registry = Registry(maxTrackedUsers)
        #: (the registry's own dict: read on every message)
        self._users = self._registry.users
        self._queue = None if store is None else OfflineQueue(store, self.counters)
        self._catchUp = CatchUp(clock, self._queue, inbox, prepare, messages, self.counters, listener.changed,
                                replayLimit)
        self._acks = AckLedger(MemoryIdempotency(clock) if idempotency is None else idempotency, ackSeconds,
                               self._peers, self._routeFrom, self._sendAck)
        #: the users whose ack claim is in flight (the ledger's own dict)
        self._claiming = self._acks.waiting
        self._peers.bind(self)

    def stop(self) -> None:
        """
        The server stops (after its connections were closed): cancel the
        timers of the catch-up (the retries of undelivered-queue reads).
        """
        self._catchUp.stop()

    def setMessageConfig(self, config: MessageConfig) -> None:
        """
        Route what comes next with the C{chat.message} settings C{config}
        (a reload).
        """
        self._config = config

    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Apply a reload's C{chat.message} and C{server.limits.maxTrackedUsers}
        to what is routed from now on (see L{IReloadable}).
        """
        applied = []
        if new.chat.message != old.chat.message:
            self.setMessageConfig(new.chat.message)
            applied.append("chat.message")
        if new.server.limits.maxTrackedUsers != old.server.limits.maxTrackedUsers:
            self.maxTrackedUsers = new.server.limits.maxTrackedUsers
            applied.append("server.limits")
        return applied

    @property
    def maxTrackedUsers(self) -> int:
        """
        The most users with no connection whose statistics are kept (a
        reload may change it).
        """
        return self._registry.maxTrackedUsers

    @maxTrackedUsers.setter
    def maxTrackedUsers(self, value: int) -> None:
        self._registry.maxTrackedUsers = value

    @property
    def connectionCount(self) -> int:
        """
        The live connections on this node.
        """
        return self._registry.connectionCount

    # connections

    def attach(self, connection: IConnection, since: int | None = None) -> None:
        """
        A connection passed its checks: it receives the user's messages from
        now on, after what the undelivered queue kept for the user.

        @param since: the connection resumes (C{?since=N}, with the inbox
            on): it gets the replay of the user's inbox after C{since}
            first, and instead of the undelivered queue.
        """
        now = self._clock.seconds()
        userId = connection.userId
        resume = since is not None and self.inbox is not None
        if resume:
            # live delivery to it waits in its buffer from now on, before
            # the inbox is read: nothing falls between the two
            self._registry.user(userId, now).resume(connection)
        user = self._registry.add(connection, now)
        if self._changed is not None:
            self._changed(userId)
        count = len(user.connections)
        if count == 1:
            self.counters.usersOnline += 1
        self._peers.connected(userId, user.stats, count)
        if count == 1:
            self._presence.online(userId)
            # when a drain is still in flight (the user went offline and came
            # back before the store answered), it delivers to this connection
            if self._queue is not None and not user.draining:
                if resume:
                    self._catchUp.dropQueued(user)
                else:
                    self._catchUp.drain(user)
        if resume:
            assert since is not None
            self._catchUp.resume(connection, user, since)

    def detach(self, connection: IConnection) -> None:
        """
        A connection closed (cleanly or not). Safe to call for a connection
        that was never attached.
        """
        user = self._registry.remove(connection, self._clock.seconds())
        if user is None:
            return
        userId = connection.userId
        if self._changed is not None:
            self._changed(userId)
        if not user.connections:
            self.counters.usersOnline -= 1
        self._peers.disconnected(userId, user.stats, len(user.connections))
        if not user.connections:
            self._statsListener.wentOffline(userId)
            self._presence.offline(userId)

    @property
    def peers(self) -> IPeers:
        """
        The other nodes of the cluster (L{NoPeers}: none): this node's name,
        and whether a node is alive.
        """
        return self._peers

    def isOnline(self, userId: UserId) -> bool:
        """
        Whether C{userId} has a live connection (on any node of a cluster).
        """
        return self._registry.isHere(userId) or userId in self._peers.remoteUsers

    def connectionsOf(self, userId: UserId) -> int:
        """
        How many connections C{userId} has open, on every node of a cluster.
        """
        return self._registry.connectionsOf(userId) + self._peers.connectionsElsewhere(userId)

    def localUserIds(self) -> list[int]:
        """
        The users with a connection on this node.
        """
        return self._registry.localUserIds()

    def allConnections(self) -> Iterator[IConnection]:
        """
        Every live connection (a snapshot, safe to close them while iterating).
        """
        return self._registry.allConnections()

    # statistics

    def statItem(self, userId: UserId) -> dict[str, Any]:
        """
        The statistics of one user; zeros for a user never seen.
        """
        return self._registry.statItem(userId, self._clock.seconds())

    def statItems(self) -> list[dict[str, Any]]:
        """
        The statistics of every user seen, by id.
        """
        return self._registry.statItems(self._clock.seconds())

    def userStats(self, userId: UserId) -> UserStats | None:
        """
        The statistics of one user on this node, or L{None} for a user never
        seen here.
        """
        return self._registry.userStats(userId)

    def userIds(self) -> list[int]:
        """
        The ids of every user seen on this node.
        """
        return self._registry.userIds()

    # routing

    def receive(self, connection: IConnection, payload: bytes) -> Message:
        """
        Route what C{connection} sent.

        @raise messages.InvalidPayload: when it is not a valid message; nothing
            is routed then.
        """
        enforce = self._config.enforceSender
        userId = connection.userId
        message = self.messages.fromPayload(payload, userId if enforce else None, enforce)
        user = self._users[userId]
        user.stats.bytesTransferred += len(payload)
        if message.ack is None and not self._claiming:
            self.route(message, user)
        else:
            # an ack token to claim, or a claim in flight: in the sender's order
            self._acks.submit(connection, message)
        return message

    def _routeFrom(self, connection: IConnection, message: Message, writes: list[Deferred[Any]] | None) -> None:
        self.route(message, self._users.get(connection.userId), writes)

    def _sendAck(self, connection: IConnection, token: str, messageId: str) -> None:
        user = self._users.get(connection.userId)
        if user is None or connection not in user.connections:
            return  # gone: the client resends, and gets the ack then
        note = self.messages.system("message_ack", connection.userId, {"ack": token, "id": messageId})
        user.writeOne(connection, self._prepare(note.serialize()), None)

    def route(self, message: Message, senderUser: User | None = None,
              writes: list[Deferred[Any]] | None = None) -> None:
        """
        Deliver a valid message: to every connection of each recipient, to the
        undelivered queue for the offline ones, to the sender's connections
        for send-back and delivery status, and to the event notifier.

        @param senderUser: the user whose connection sent it (L{None}: the
            user of its C{sender}).
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
            senderUser = self._registry.user(sender, now)
        if senderUser is not None:
            if not senderUser.connections:
                self._registry.seen(senderUser)
            stats = senderUser.stats
            stats.sentMessages += 1
            stats.lastMessageTime = now
            if self._changed is not None:
                self._changed(sender)
        recipients = message.recipients
        if len(recipients) != 1 or recipients[0] != BOT:  # (not for the bot)
            config = self._config
            sendBack = (
                senderUser if config.enableSendBack and senderUser is not None and sendsBack(config, message) else None
            )
            if self.inbox is None:
                self._fanOut(message, payload, senderUser, sendBack, now, writes)
            else:
                self._appendToInboxes(message, payload, senderUser, sendBack, now, writes)
        if self._notify is not None:
            self._notify(message, payload)
            if writes is not None and self._notifyCommitted is not None:
                writes.append(self._notifyCommitted())

    def _fanOut(self, message: Message, payload: bytes, senderUser: User | None, sendBack: User | None,
                now: float, writes: list[Deferred[Any]] | None) -> None:
        """
        Carry out the plan of a message with one copy for every target: one
        frame for all the connections here, one crossing to each node, one
        write to the undelivered queue.
        """
        recipients = message.recipients
        if sendBack is None and len(recipients) == 1:
            # one recipient, online here only, its copies not held: the
            # plan would be local [user] and reached [r] (most messages;
            # done without a Plan, its lists and its calls)
            r = recipients[0]
            user = self._users.get(r)
            if (user is not None and user.connections and user.held is None and r != BOT
                    and r not in self._peers.remoteUsers):
                prepared = self._prepare(payload)
                stats = user.stats
                stats.receivedMessages += 1
                stats.bytesTransferred += len(payload)
                if self._changed is not None:
                    self._changed(r)
                for connection in user.connections:
                    connection.sendPrepared(prepared)
                self.counters.delivered += 1
                if self._config.enableDeliveryStatus:
                    self._deliveryStatus(message, senderUser, [r])
                return
        plan = Plan(self._users, self._peers.remoteUsers, recipients, message.sender, sendBack)
        local = plan.local
        if local:
            # (L{_deliver}, inlined: this is every message's path)
            prepared = self._prepare(payload)
            size = len(payload)
            changed = self._changed
            for user in local:
                stats = user.stats
                stats.receivedMessages += 1
                stats.bytesTransferred += size
                if changed is not None:
                    changed(user.userId)
                if user.held is None:
                    for connection in user.connections:
                        connection.sendPrepared(prepared)
                else:
                    user.write(payload, prepared, None)
            self.counters.delivered += len(local)
        offline = plan.offline
        if offline is not None:
            queue = self._queue
            if queue is None:
                self.counters.droppedOffline += len(offline)
            else:
                if len(offline) == 1 and message.recipients == offline:
                    d = queue.keep(offline[0], payload, now)  # already the copy for its only recipient
                else:
                    # stored once for all of them; each gets its copy when fetched
                    d = queue.keepMany(offline, payload, now)
                if writes is not None:
                    writes.append(d)
        if plan.remote is not None:
            self._peers.forward(plan.remote, payload)
        if plan.reached and self._config.enableDeliveryStatus:
            self._deliveryStatus(message, senderUser, plan.reached)

    def _appendToInboxes(self, message: Message, payload: bytes, senderUser: User | None, sendBack: User | None,
                         now: float, writes: list[Deferred[Any]] | None) -> None:
        """
        Route with the inbox on: append the message to the inbox of each
        target, then carry out its plan with each target's own copy (with
        its seq).  With Redis the seqs come later: delivery waits for them
        (in order: the replies come in order).
        """
        inbox = self.inbox
        assert inbox is not None
        targets = targetsOf(message.recipients, message.sender, sendBack is not None)
        seqs = inbox.append(targets, payload, now)
        if isinstance(seqs, list):
            self._fanOutCopies(message, payload, senderUser, sendBack, targets, seqs, now, writes)
            if writes is not None:
                writes.append(inbox.committed())
            return
        later: list[Deferred[Any]] | None = [] if writes is not None else None

        def assigned(seqs: list[int | None]) -> Deferred[Any] | None:
            self._fanOutCopies(message, payload, senderUser, sendBack, targets, seqs, self._clock.seconds(), later)
            return None if not later else gatherResults(later, consumeErrors=True)

        def unassigned(f: Failure) -> Failure | None:
            # the inbox cannot be reached: deliver without seqs rather than lose it
            self.log.failure("could not append message {id} to inboxes", f, id=message.id)
            assigned([None] * len(targets))
            return f if later is not None else None  # not acked: the client resends

        seqs.addCallbacks(assigned, unassigned)
        if writes is not None:
            writes.append(seqs)

    def _fanOutCopies(self, message: Message, payload: bytes, senderUser: User | None, sendBack: User | None,
                      targets: list[int], seqs: Sequence[int | None], now: float,
                      writes: list[Deferred[Any]] | None) -> None:
        """
        Carry out the plan of a message with each target's own copy, framed
        with its seq: to its connections here, to the node it is on, or to
        the undelivered queue.
        """
        copies = {r: (payload if seq is None else withSeq(payload, seq), seq) for r, seq in zip(targets, seqs)}
        sender = message.sender
        plan = Plan(self._users, self._peers.remoteUsers, message.recipients, sender, sendBack)
        for user in plan.local:
            framed, seq = copies[sender if user is sendBack else user.userId]
            self._deliver(user, framed, self._prepare(framed), seq)
        if plan.remote is not None:
            for r in plan.remote:
                self._peers.forward([r], copies[r][0])
        if plan.offline is not None:
            queue = self._queue
            for r in plan.offline:
                if queue is None:
                    # a node where the user just resumed (not known here yet)
                    # reads the inbox again (the queue announces its own puts)
                    self._peers.announceQueued(r)
                    continue
                d = queue.keep(r, forRecipient(copies[r][0], r), now)
                if writes is not None:
                    writes.append(d)
        if plan.reached:
            self._deliveryStatus(message, senderUser, plan.reached)

    def _deliveryStatus(self, message: Message, senderUser: User | None, reached: list[UserId]) -> None:
        """
        Tell the sender which recipients its message reached
        (C{enableDeliveryStatus}).
        """
        if senderUser is None or not senderUser.connections or not self._config.enableDeliveryStatus:
            return
        stamp = self.messages.timestamp()
        for r in reached:
            raw = self.messages.notification(message, r, stamp).serialize()
            self._deliver(senderUser, raw, self._prepare(raw), None)

    def _deliver(self, user: User, payload: bytes, prepared: Any, seq: int | None) -> None:
        """
        Write (or hold) one copy for C{user}, counted.
        """
        stats = user.stats
        stats.receivedMessages += 1
        stats.bytesTransferred += len(payload)
        self.counters.delivered += 1
        if self._changed is not None:
            self._changed(user.userId)
        user.write(payload, prepared, seq)

    # what other nodes hand back (IInbound)

    def deliverForwarded(self, userIds: Sequence[UserId], payload: bytes) -> None:
        """
        Deliver a message that another node routed, to this node's
        connections of C{userIds}, as it came (its bytes; with the inbox,
        each user's copy carries its seq); a user who left meanwhile is
        offline for it: it is kept in the (shared) queue rather than lost.
        """
        plan = Plan(self._users, (), userIds, BOT, None)
        if plan.local:
            prepared = self._prepare(payload)
            seq = None if self.inbox is None else seqOf(payload)
            for user in plan.local:
                self._deliver(user, payload, prepared, seq)
        if plan.offline is not None:
            self._keepFor(plan.offline, payload)

    def undeliverable(self, userIds: Sequence[UserId], payload: bytes) -> None:
        """
        A message forwarded for C{userIds} reached no node: it is a message
        for offline users, except for those online here or on another node
        (they had their copy there).
        """
        remote = self._peers.remoteUsers
        isHere = self._registry.isHere
        offline = [u for u in userIds if not isHere(u) and u not in remote]
        if offline:
            self._keepFor(offline, payload)
            if self.inbox is not None and self._queue is None:
                for userId in offline:
                    self._peers.announceQueued(userId)

    def _keepFor(self, userIds: list[UserId], payload: bytes) -> None:
        """
        Keep C{payload}, as routed, for C{userIds} (offline) when the queue
        is on: stored once, each gets its copy when fetched.
        """
        if self._queue is not None:
            self._queue.keepMany(userIds, payload, self._clock.seconds())

    def drainAgain(self, userId: UserId) -> None:
        """
        Read the (shared) undelivered queue of a user online here again: a
        node queued a message just as the user came online.
        """
        user = self._users.get(userId)
        if user is None:
            return
        if user.held is not None and user.held.resuming:
            self._catchUp.catchUp(user)
        if self._queue is not None and user.connections and not user.draining:
            self._catchUp.drain(user)

    def keepUnsent(self, userId: UserId, payloads: list[bytes], attachedAt: float | None = None) -> None:
        """
        Messages that were routed to a connection of C{userId} (attached at
        C{attachedAt}) and may not have reached it: it was closed as a slow
        consumer, or lost with data its client had not acknowledged.

        When the user has other connections on this node, those attached
        later than C{attachedAt} (all of them when it is L{None}),
        which may have missed them, are sent them (a connection that
        resumed with C{since} skips what it had); those attached before had
        them.  When the user has none on this node, they are kept in the
        undelivered queue when it is on, as for an offline user (also when
        the user's other connections are on other nodes of a cluster: they
        get them when they next connect).
        """
        user = self._registry.users.get(userId)
        if user is not None and user.connections:
            newer = [c for c in user.connections
                     if attachedAt is None or getattr(c, "attachedAt", attachedAt + 1) > attachedAt]
            if newer:
                withInbox = self.inbox is not None
                prepare = self._prepare
                for payload in payloads:
                    user.writeStored(prepare(payload), seqOf(payload) if withInbox else None, newer)
            return
        if self._queue is None:
            return
        now = self._clock.seconds()
        for payload in payloads:
            self._queue.keep(userId, forRecipient(payload, userId), now)
