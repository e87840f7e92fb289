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
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from .config import MessageConfig
from .messages import BOT, InvalidPayload, Message, MessageFactory, dumpJSON, parsePayload
from .metrics import Counters
from .peers import IInbound, IPeers, IPresenceListener, IStatsListener, NoPeers, NoPresenceListener, NoStatsListener
from .stats import UserStats, emptyStatItem
from .storage import IUndeliveredStore

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

    __slots__ = ("connections", "backlog", "stats")

    def __init__(self, stats: UserStats) -> None:
        self.connections: list[Any] = []
        self.backlog: list[tuple[Message, Any, int]] | None = None
        self.stats = stats


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
    ) -> None:
        self._config = config
        self._clock = clock
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

    def attach(self, connection: Any) -> None:
        """
        A connection passed its checks: it receives the user's messages from
        now on, after what the undelivered queue kept for the user.
        """
        now = self._clock.seconds()
        user = self._user(connection.userId, now)
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
                self._drain(connection.userId, user, now)

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
        self.route(message, user)
        return message

    def route(self, message: Message, senderUser: _User | None = None) -> None:
        """
        Deliver a valid message: to every connection of each recipient, to the
        undelivered queue for the offline ones, to the sender's connections
        for send-back and delivery status, and to the event notifier.

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
        if not forBot:
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
                    self._keepRaw(offline[0], payload, now)  # already the copy for its only recipient
                else:
                    # stored once for all of them; each gets its copy when fetched
                    self._keepMany(offline, payload, now)
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
            self._deliver(user, message, prepared, len(payload))  # type: ignore[arg-type]
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
        if self._store is not None and user is not None and user.connections and user.backlog is None:
            self._drain(userId, user, self._clock.seconds())

    def _deliver(self, user: _User, message: Message, prepared: Any, size: int) -> None:
        stats = user.stats
        stats.receivedMessages += 1
        stats.bytesTransferred += size
        self.counters.delivered += 1
        self._changed(stats.userId)
        if user.backlog is not None:
            user.backlog.append((message, prepared, size))
            return
        for connection in user.connections:
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

    def _keepRaw(self, userId: int, payload: bytes, now: float) -> None:
        self.counters.queued += 1
        d = self._store.put(userId, payload, now)  # type: ignore[union-attr]
        d.addErrback(lambda f: self.log.failure("could not keep a message for user {uid}", f, uid=userId))

    def _keepMany(self, userIds: list[int], payload: bytes, now: float) -> None:
        self.counters.queued += len(userIds)
        d = self._store.putMany(userIds, payload, now)  # type: ignore[union-attr]
        d.addErrback(lambda f: self.log.failure("could not keep a message for {n} users", f, n=len(userIds)))

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
                for message, _, _ in backlog:
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
            for _, payload in stored:
                prepared = self._prepare(payload)
                user.stats.receivedMessages += 1
                user.stats.bytesTransferred += len(payload)
                for send in senders:
                    send(prepared)
            for _, prepared, _ in backlog:
                for connection in connections:
                    connection.sendPrepared(prepared)
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
