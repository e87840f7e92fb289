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

from typing import Any, Callable, Iterator

import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from .config import MessageConfig
from .messages import BOT, InvalidPayload, Message, MessageFactory
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
        cluster: Any = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self.messages = messages
        self._store = store
        self._notify = notify
        self._prepare = prepare
        #: the cluster node (L{wsserver.cluster.ClusterNode}), or None
        self._cluster = cluster
        self._users: dict[int, _User] = {}
        self.connectionCount = 0
        #: set by the cluster statistics (L{wsserver.cluster.ClusterStats}):
        #: the ids of the users whose statistics changed since they were last
        #: written to Redis; L{None}: not tracked
        self.statsDirty: set[int] | None = None
        #: set by the cluster statistics: called with a user's id when the
        #: user's last connection on this node closed
        self.statsOffline: Callable[[int], Any] | None = None

    # connections

    def _user(self, userId: int, now: float) -> _User:
        user = self._users.get(userId)
        if user is None:
            user = self._users[userId] = _User(UserStats(userId, now))
        return user

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
        if self.statsDirty is not None:
            self.statsDirty.add(connection.userId)
        self.connectionCount += 1
        user.connections.append(connection)
        if len(user.connections) == 1:
            stats.wentOnline(now)
            if self._cluster is not None:
                self._cluster.wentOnline(connection.userId)
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
        user.connections.remove(connection)
        self.connectionCount -= 1
        now = self._clock.seconds()
        user.stats.disconnectedTimes += 1
        if self.statsDirty is not None:
            self.statsDirty.add(connection.userId)
        if not user.connections:
            user.stats.wentOffline(now)
            if self._cluster is not None:
                self._cluster.wentOffline(connection.userId)
            if self.statsOffline is not None:
                self.statsOffline(connection.userId)

    def isOnline(self, userId: int) -> bool:
        """
        Whether C{userId} has a live connection (on any node of a cluster).
        """
        user = self._users.get(userId)
        if user is not None and user.connections:
            return True
        return self._cluster is not None and self._cluster.isOnlineElsewhere(userId)

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
            senderUser.stats.sentMessages += 1
            senderUser.stats.lastMessageTime = now
            if self.statsDirty is not None:
                self.statsDirty.add(senderUser.stats.userId)
        size = len(payload)
        config = self._config
        forBot = message.isForBot()
        if not forBot:
            # framed once, on the first live delivery (none when all are offline)
            prepared = None
            users = self._users
            reached = []
            seen = set()
            cluster = self._cluster
            for r in message.recipients:
                if r == BOT or r in seen:
                    continue
                seen.add(r)
                user = users.get(r)
                if cluster is not None and cluster.isOnlineElsewhere(r):
                    cluster.forward(r, payload)
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
                    if message.recipients == [r]:
                        self._keepRaw(r, payload, now)  # already the copy for r
                    else:
                        copy = message.toDict()
                        copy["recipients"] = [r]
                        self._keep(r, copy, now)
            if senderUser is not None and senderUser.connections:
                if (
                    config.enableSendBack
                    and sender not in seen
                    and message.type not in config.ignoredTypesSendBack
                ):
                    if prepared is None:
                        prepared = self._prepare(payload)
                    self._deliver(senderUser, message, prepared, size)
                    if self._cluster is not None and self._cluster.isOnlineElsewhere(sender):
                        self._cluster.forward(sender, payload)
                if config.enableDeliveryStatus and reached:
                    stamp = self.messages.timestamp()
                    for r in reached:
                        note = self.messages.notification(message, r, stamp)
                        raw = note.serialize()
                        self._deliver(senderUser, note, self._prepare(raw), len(raw))
        if self._notify is not None:
            self._notify(message, payload)

    def deliverLocal(self, userId: int, payload: bytes) -> None:
        """
        Deliver a message that another node of the cluster routed, to this
        node's connections of C{userId}; if the user left meanwhile, keep it
        in the shared queue rather than lose it.
        """
        user = self._users.get(userId)
        if user is None or (not user.connections and user.backlog is None):
            if self._store is not None:
                obj = orjson.loads(payload)
                obj["recipients"] = [userId]
                self._keep(userId, obj, self._clock.seconds())
            return
        message = Message(**orjson.loads(payload)) if user.backlog is not None else None
        self._deliver(user, message, self._prepare(payload), len(payload))  # type: ignore[arg-type]

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
        dirty = self.statsDirty
        if dirty is not None:
            dirty.add(stats.userId)
        if user.backlog is not None:
            user.backlog.append((message, prepared, size))
            return
        for connection in user.connections:
            connection.sendPrepared(prepared)

    def _keep(self, userId: int, obj: dict[str, Any], now: float) -> None:
        self._keepRaw(userId, orjson.dumps(obj), now)

    def _keepRaw(self, userId: int, payload: bytes, now: float) -> None:
        d = self._store.put(userId, payload, now)  # type: ignore[union-attr]
        d.addErrback(lambda f: self.log.failure("could not keep a message for user {uid}", f, uid=userId))

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
            if stored and self.statsDirty is not None:
                self.statsDirty.add(userId)
            for _, payload in stored:
                prepared = self._prepare(payload)
                user.stats.receivedMessages += 1
                user.stats.bytesTransferred += len(payload)
                for connection in connections:
                    connection.sendPrepared(prepared)
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
