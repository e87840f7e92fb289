# -*- test-case-name: tests.test_cluster -*-
"""
Cluster mode (SPEC section 7), first part: nodes joined through one Redis
route messages to each other, know who is online where, and share the
undelivered queue.

Channel design: one channel per node (C{wsserver:node:<id>}) for the
messages it must deliver, and one presence channel (C{wsserver:presence})
where every node announces its users going online and offline, and every
C{heartbeatSeconds} the full list of its online users.  Presence is soft
state kept in each node's memory: a node not heard for C{nodeTimeoutSeconds}
(SIGKILL, network loss) stops counting, and a node that joins learns
everything within one heartbeat.  So routing a message never waits for a
Redis round trip: the recipient's nodes are known locally, and a message
for a user on another node is one C{PUBLISH} to that node's channel, sent
on one connection so that a sender's messages keep their order.

The shared undelivered queue is a Redis list per user (L{RedisUndeliveredStore}).

Statistics for the whole cluster (L{ClusterStats}): each node writes the
counters of its users to a Redis hash per user, one field per node, and
C{/stat} and C{/stats} merge them with the node's own, fresh from memory.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import orjson
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .redistarget import RedisLink
from .stats import mergeStatRecords
from .storage import IUndeliveredStore

__all__ = ["ClusterNode", "ClusterStats", "RedisAddress", "RedisUndeliveredStore", "parseRedisURL"]

PRESENCE = b"wsserver:presence"


def _nodeChannel(node: str) -> bytes:
    return b"wsserver:node:" + node.encode()


class RedisAddress:
    """
    Where Redis is: from a C{redis://[:password@]host[:port][/db]} or
    C{unix:///path?db=N} URL.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 6379, unixSocket: str = "",
                 database: int = 0, password: str = "") -> None:
        self.address = address
        self.port = port
        self.unixSocket = unixSocket
        self.database = database
        self.password = password

    def link(self, reactor: Any, timeout: float, name: str) -> RedisLink:
        """
        A command connection to this Redis.
        """
        return RedisLink(self.address, self.port, self.unixSocket, self.database, self.password,
                         timeout, reactor, name=name, charset=None)

    def endpoint(self, reactor: Any) -> Any:
        if self.unixSocket:
            return UNIXClientEndpoint(reactor, self.unixSocket, timeout=10)
        return TCP4ClientEndpoint(reactor, self.address, self.port, timeout=10)


def parseRedisURL(url: str) -> RedisAddress:
    """
    Parse C{cluster.redis}.

    @raise ValueError: for a URL that is not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = parse_qs(parts.query)
        return RedisAddress(unixSocket=unquote(parts.path), database=int(query.get("db", ["0"])[0]),
                            password=unquote(parts.password or ""))
    if parts.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    path = parts.path.strip("/")
    return RedisAddress(
        address=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        database=int(path) if path else 0,
        password=unquote(parts.password or ""),
    )


@implementer(IUndeliveredStore)
class RedisUndeliveredStore:
    """
    The undelivered queue shared by the nodes: a Redis list per user
    (C{wsserver:queue:<id>}), trimmed to C{maxPerUser}, expiring
    C{ttlSeconds} after its last message.  Each item is the payload after the
    time it was stored.

    L{fetch} reads without removing and L{ack} removes exactly the items
    delivered (C{LREM} of each): a node that dies between the two loses
    nothing, and two nodes draining one user at the same moment (the user
    connecting to both at once) each deliver the stored messages to their
    own connections, the second ack finding them gone, without touching the
    newer ones.  Expired items go with the next ack.
    """

    def __init__(self, link: RedisLink, ttlSeconds: float, maxPerUser: int,
                 announce: Callable[[int], Any] | None = None) -> None:
        self._link = link
        self._ttl = int(max(1, ttlSeconds))
        self._max = maxPerUser
        self._announce = announce
        self.dropped = 0
        #: per user, the items of the last fetch: key -> the raw item, and
        #: the expired raw items to remove at the ack
        self._fetched: dict[int, tuple[dict[int, bytes], list[bytes]]] = {}

    @staticmethod
    def _key(userId: int) -> bytes:
        return b"wsserver:queue:%d" % userId

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        key = self._key(userId)
        link = self._link
        item = b"%r " % now + payload
        d = link.execute(b"RPUSH", key, item)

        def trim(length: Any) -> Deferred[Any]:
            over = int(length) - self._max
            if over > 0:
                self.dropped += over
                return link.execute(b"LTRIM", key, b"%d" % over, b"-1")
            return succeed(None)

        d.addCallback(trim)
        d.addCallback(lambda _: link.execute(b"EXPIRE", key, b"%d" % self._ttl))
        if self._announce is not None:
            d.addCallback(lambda _: self._announce(userId))
        return d.addCallback(lambda _: None)

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        def parse(items: Any) -> list[tuple[int, bytes]]:
            out = []
            raw: dict[int, bytes] = {}
            expired: list[bytes] = []
            for index, item in enumerate(items or ()):
                stamp, _, payload = item.partition(b" ")
                if now - float(stamp) <= self._ttl:
                    out.append((index, payload))
                    raw[index] = item
                else:
                    expired.append(item)
            self._fetched[userId] = (raw, expired)
            return out

        return self._link.execute(b"LRANGE", self._key(userId), b"0", b"-1").addCallback(parse)

    def ack(self, userId: int, keys: Iterable[int]) -> Deferred[None]:
        raw, expired = self._fetched.pop(userId, ({}, []))
        items = [raw[k] for k in keys if k in raw] + expired
        key = self._key(userId)
        d: Deferred[Any] = succeed(None)
        for item in items:
            d.addCallback(lambda _, item=item: self._link.execute(b"LREM", key, b"1", item))
        return d.addCallback(lambda _: None)

    def prune(self, now: float) -> Deferred[int]:
        # Redis expires whole lists by EXPIRE; old items inside a list are
        # skipped when fetched
        return succeed(0)

    def pending(self, userId: int) -> Deferred[int]:
        return self._link.execute(b"LLEN", self._key(userId)).addCallback(int)


class _Subscriber:
    """
    The pub/sub connection: its protocol subscribes to the node's channels
    on every (re)connection; C{ClientService} reconnects it.
    """

    @staticmethod
    def factory(password: str, channels: list[bytes], received: Callable[[bytes, bytes], None],
                node: ClusterNode) -> Factory:
        from txredisapi import SubscriberProtocol

        class Protocol(SubscriberProtocol):
            def connectionMade(self) -> Any:
                d = SubscriberProtocol.connectionMade(self)
                if password:
                    d.addCallback(lambda _: self.execute_command(b"AUTH", password.encode()))
                d.addCallback(lambda _: self.subscribe(channels))
                d.addCallback(lambda _: node._subscribedAgain())
                d.addErrback(lambda f: self.transport.loseConnection())
                return d

            def connectionLost(self, why: Any) -> None:
                node.subscribed = False
                SubscriberProtocol.connectionLost(self, why)

            def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
                received(channel, message)

        class QuietFactory(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> Any:
                protocol = Protocol(charset=None, convertNumbers=False)
                protocol.factory = self
                return protocol

        return QuietFactory()


class ClusterNode(Service):
    """
    This process's membership of the cluster.

    @param address: where Redis is.
    @param reactor: the reactor (connections and the heartbeat clock).
    @param heartbeatSeconds: how often this node announces its users.
    @param nodeTimeoutSeconds: a node not heard for this long is dead.
    @param nodeId: this node's name (a random one by default).
    """

    log = Logger()

    def __init__(self, address: RedisAddress, reactor: Any, heartbeatSeconds: float = 10,
                 nodeTimeoutSeconds: float = 30, nodeId: str | None = None) -> None:
        self.nodeId = nodeId or os.urandom(6).hex()
        self._address = address
        self._reactor = reactor
        self._heartbeat = self.heartbeatSeconds = heartbeatSeconds
        self._timeout = nodeTimeoutSeconds
        self.link = address.link(reactor, 10, "cluster Redis")
        self._channel = _nodeChannel(self.nodeId)
        #: user id -> the other nodes where the user is online
        self._where: dict[int, set[str]] = {}
        #: node -> (when its timeout started, its online users)
        self._nodes: dict[str, tuple[float, set[int]]] = {}
        #: node -> when a message from it last arrived
        self._heard: dict[str, float] = {}
        #: users online on this node
        self._local: set[int] = set()
        #: set by the wiring: deliver a forwarded message to local connections
        self.deliverLocal: Callable[[int, bytes], None] = lambda uid, payload: None
        #: set by the wiring: drain the shared queue of a local user again
        self.drainAgain: Callable[[int], None] = lambda uid: None
        self._service: ClientService | None = None
        self._loop: LoopingCall | None = None
        #: when publishing to Redis last started failing, or None
        self._outageAt: float | None = None
        #: node -> messages waiting for Redis (and for that node) to be back
        self._outbox: dict[str, list[bytes]] = {}
        self._retry = min(1.0, heartbeatSeconds)
        #: whether the pub/sub connection is subscribed (only then does this
        #: node announce itself: being heard means being able to hear)
        self.subscribed = False

    # presence

    def isOnlineElsewhere(self, userId: int) -> bool:
        """
        Whether C{userId} has a connection on another live node.
        """
        return bool(self._where.get(userId))

    def otherNodes(self, userId: int) -> set[str]:
        return self._where.get(userId, set())

    def localUsers(self) -> set[int]:
        """
        The users online on this node (a copy).
        """
        return set(self._local)

    def wentOnline(self, userId: int) -> None:
        """
        A user's first connection on this node opened.
        """
        self._local.add(userId)
        self._publish(PRESENCE, b"on %s %d" % (self.nodeId.encode(), userId))

    def wentOffline(self, userId: int) -> Deferred[Any]:
        """
        A user's last connection on this node closed.
        """
        self._local.discard(userId)
        return self._publish(PRESENCE, b"off %s %d" % (self.nodeId.encode(), userId))

    def announceQueued(self, userId: int) -> None:
        """
        A message was queued for C{userId}: a node where the user just came
        online drains again (it may have read the queue just before).
        """
        self._publish(PRESENCE, b"queued %s %d" % (self.nodeId.encode(), userId))

    # messages

    def forward(self, userId: int, payload: bytes) -> None:
        """
        Send a message for C{userId} to the other nodes where the user is.

        While Redis is unreachable, messages wait in an outbox per node, in
        order, and go out once that node was heard again after the outage
        (so that it has subscribed again: pub/sub keeps nothing for absent
        subscribers).
        """
        for node in self._where.get(userId, ()):
            data = b"%d " % userId + payload
            if self._outageAt is not None:
                self._outbox.setdefault(node, []).append(data)
                continue
            self.link.execute(b"PUBLISH", _nodeChannel(node), data).addErrback(self._undelivered, node, data)

    def _undelivered(self, failure: Any, node: str, data: bytes) -> None:
        if self._outageAt is None:
            self._outageAt = self._reactor.seconds()
            self.log.warn("cluster Redis unreachable ({why}); messages for other nodes wait",
                          why=failure.getErrorMessage())
            self._reactor.callLater(self._retry, self._flush)
        self._outbox.setdefault(node, []).append(data)

    def _flush(self) -> None:
        """
        Send what waits for each node heard since the outage began, in order.
        """
        outageAt = self._outageAt
        if outageAt is None or not self.running:
            return
        for node, items in list(self._outbox.items()):
            if self._heard.get(node, 0.0) <= outageAt and node in self._nodes:
                continue
            if node not in self._nodes:
                # the node died meanwhile: its users are offline now
                del self._outbox[node]
                self.log.warn("dropping {n} messages for dead cluster node {node}", n=len(items), node=node)
                continue
            del self._outbox[node]
            for data in items:
                self.link.execute(b"PUBLISH", _nodeChannel(node), data).addErrback(
                    lambda f, node=node, data=data: self._outbox.setdefault(node, []).append(data))
        if self._outbox:
            self._reactor.callLater(self._retry, self._flush)
        else:
            self._outageAt = None
            self.log.info("cluster Redis reachable again; waiting messages sent")

    def _publish(self, channel: bytes, data: bytes) -> Deferred[Any]:
        return self.link.execute(b"PUBLISH", channel, data).addErrback(
            lambda f: self.log.debug("cluster publish failed: {why}", why=f.getErrorMessage()))

    def _received(self, channel: bytes, data: bytes) -> None:
        if channel == self._channel:
            uid, _, payload = data.partition(b" ")
            self.deliverLocal(int(uid), payload)
            return
        kind, node, rest = data.split(b" ", 2)
        nodeId = node.decode()
        if nodeId == self.nodeId:
            return
        now = self._reactor.seconds()
        if kind == b"queued":
            uid = int(rest)
            if uid in self._local:
                self.drainAgain(uid)
            return
        _, users = self._nodes.get(nodeId, (now, set()))
        if kind == b"on":
            users.add(int(rest))
            self._where.setdefault(int(rest), set()).add(nodeId)
        elif kind == b"off":
            users.discard(int(rest))
            self._forget(nodeId, int(rest))
        elif kind == b"beat":
            fresh = {int(u) for u in rest.split(b",") if u}
            for gone in users - fresh:
                self._forget(nodeId, gone)
            for uid in fresh - users:
                self._where.setdefault(uid, set()).add(nodeId)
            users = fresh
        self._nodes[nodeId] = (now, users)
        self._heard[nodeId] = now

    def _subscribedAgain(self) -> None:
        """
        The pub/sub connection is (again) subscribed: announce this node now
        rather than at the next heartbeat.
        """
        self.subscribed = True
        # nobody could be heard while this node was cut off: give every node
        # a fresh timeout rather than declaring them all dead
        now = self._reactor.seconds()
        self._nodes = {node: (now, users) for node, (_, users) in self._nodes.items()}
        self._beat()

    def _forget(self, nodeId: str, userId: int) -> None:
        nodes = self._where.get(userId)
        if nodes is not None:
            nodes.discard(nodeId)
            if not nodes:
                del self._where[userId]

    def _beat(self) -> None:
        """
        Announce this node's users, and forget nodes not heard for too long.
        """
        if self.subscribed:
            users = b",".join(b"%d" % u for u in sorted(self._local))
            self._publish(PRESENCE, b"beat %s %s" % (self.nodeId.encode(), users))
        if not self.subscribed:
            return  # cut off from Redis: silence says nothing about the others
        now = self._reactor.seconds()
        for nodeId, (seen, users) in list(self._nodes.items()):
            if now - seen > self._timeout:
                self.log.info("cluster node {node} not heard for {s:.0f} s: its users are offline",
                              node=nodeId, s=now - seen)
                for uid in users:
                    self._forget(nodeId, uid)
                del self._nodes[nodeId]
                self._heard.pop(nodeId, None)

    # life cycle

    def startService(self) -> None:
        super().startService()
        factory = _Subscriber.factory(self._address.password, [PRESENCE, self._channel], self._received, self)
        self._service = ClientService(self._address.endpoint(self._reactor), factory,
                                      retryPolicy=backoffPolicy(0.2, 5.0), clock=self._reactor)
        self._service.startService()
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self._reactor
        self._loop.start(self._heartbeat, now=True).addErrback(
            lambda f: self.log.failure("cluster heartbeat stopped", f))
        self.log.info("cluster node {node} joining through Redis", node=self.nodeId)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        waits = [self.wentOffline(uid) for uid in sorted(self._local)]
        if self._service is not None:
            waits.append(self._service.stopService())
        d = Deferred.fromCoroutine(_all(waits))
        return d.addCallback(lambda _: self.link.close())


async def _all(waits: list[Deferred[Any]]) -> None:
    for d in waits:
        await d


#: the hash of a user's statistics: C{wsserver:stats:<id>}, a field per node
STATS_PREFIX = b"wsserver:stats:"


def _hash(reply: Any) -> dict[bytes, bytes]:
    """
    An C{HGETALL} reply (a flat list, or a dict) as a dict.
    """
    if not reply:
        return {}
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))


class ClusterStats(Service):
    """
    C{/stat} and C{/stats} for the whole cluster (SPEC section 7).

    Each node writes the counters of its users to Redis: a hash per user,
    C{wsserver:stats:<id>}, whose field C{<node id>} holds the JSON of that
    node's L{UserStats.record<wsserver.stats.UserStats.record>}.  The router
    marks the users whose counters change (L{Router.statsDirty}: a set, no
    Redis work per message); every C{heartbeatSeconds} this service writes
    theirs (C{HSET} and C{EXPIRE}), and a user's at once when the user's last
    connection on this node closes.  The hash expires C{ttlSeconds} (30 days)
    after its last write; the records of users online here are rewritten
    every C{refreshSeconds} (a day) so that a long session keeps them.

    An answer merges (L{mergeStatRecords}) this node's figures, fresh from
    memory, with the other nodes' records from Redis, which are up to one
    heartbeat old.  A record written while its user was online counts the
    online time on up to now as long as the presence says the user is still
    online on that node; after the node died it stops at its last write.
    The record of a node that stopped or died stays (until the hash
    expires): its users' counts survive it.  C{isOnline} is the live
    presence (L{Router.isOnline}).

    When Redis cannot be reached the answers hold this node's figures only
    (and a warning is logged).

    @param node: this node's membership of the cluster (its C{link} carries
        the commands).
    @param router: the router whose statistics are this node's.
    @param clock: the time source (the router's).
    """

    log = Logger()

    def __init__(self, node: ClusterNode, router: Any, clock: Any, ttlSeconds: float = 30 * 86400,
                 refreshSeconds: float = 86400) -> None:
        self._node = node
        self._router = router
        self._clock = clock
        self._ttl = b"%d" % int(max(1, ttlSeconds))
        self._refresh = refreshSeconds
        self._refreshedAt = clock.seconds()
        self._field = node.nodeId.encode()
        self._dirty: set[int] = set(router.userIds())
        router.statsDirty = self._dirty
        router.statsOffline = self.writeNow
        self._loop: LoopingCall | None = None
        #: the writes not answered yet
        self._inflight: set[Deferred[None]] = set()
        #: the last heartbeat's writes, while not all answered
        self._beating: Deferred[Any] | None = None
        self._failing = False

    # writing

    def writeNow(self, userId: int) -> Deferred[None]:
        """
        Write the record of C{userId} now (the user went offline here).
        """
        self._dirty.discard(userId)
        return self._write(userId)

    def _write(self, userId: int) -> Deferred[None]:
        stats = self._router.userStats(userId)
        if stats is None:
            return succeed(None)
        key = STATS_PREFIX + b"%d" % userId
        link = self._node.link
        # both go out at once on the one connection, in this order
        hset = link.execute(b"HSET", key, self._field, orjson.dumps(stats.record(self._clock.seconds())))
        expire = link.execute(b"EXPIRE", key, self._ttl)
        d = DeferredList([hset, expire], fireOnOneErrback=True, consumeErrors=True)

        def written(_: Any) -> None:
            if self._failing:
                self._failing = False
                self.log.info("cluster statistics written to Redis again")

        def failed(f: Any) -> None:
            self._dirty.add(userId)  # again at the next heartbeat
            if not self._failing:
                self._failing = True
                self.log.warn("cannot write cluster statistics to Redis ({why}); retrying every heartbeat",
                              why=getattr(f.value, "subFailure", f).getErrorMessage())

        d.addCallbacks(written, failed)
        self._inflight.add(d)
        d.addBoth(lambda _: self._inflight.discard(d))
        return d

    def _beat(self) -> None:
        """
        Write the records of the users whose statistics changed.
        """
        if self._beating is not None:
            return  # the last heartbeat's writes are still waiting for Redis
        now = self._clock.seconds()
        if now - self._refreshedAt >= self._refresh:
            self._refreshedAt = now
            self._dirty.update(self._node.localUsers())
        if not self._dirty:
            return
        users = sorted(self._dirty)
        self._dirty.clear()
        beating = self._beating = DeferredList([self._write(uid) for uid in users])

        def done(_: Any) -> None:
            self._beating = None

        beating.addCallback(done)

    # reading

    def _merge(self, userId: int, remote: dict[bytes, bytes], now: float) -> dict[str, Any]:
        router = self._router
        stats = router.userStats(userId)
        live = self._node.otherNodes(userId)
        records = []
        for field, value in remote.items():
            if field == self._field and stats is not None:
                continue  # this node's own figures come from memory
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            record["online"] = bool(record.get("online")) and field.decode("utf-8", "replace") in live
            records.append(record)
        if stats is not None:
            records.append(stats.record(now))
        return mergeStatRecords(userId, records, now, router.isOnline(userId))

    def _unreachable(self, f: Any) -> None:
        self.log.warn("cannot read cluster statistics from Redis ({why}): answering with this node's only",
                      why=f.getErrorMessage())

    def statItem(self, userId: int) -> Deferred[dict[str, Any]]:
        """
        The statistics of one user in the whole cluster; zeros for a user
        never seen.
        """
        d = self._node.link.execute(b"HGETALL", STATS_PREFIX + b"%d" % userId)
        d.addCallback(_hash)

        def failed(f: Any) -> dict[bytes, bytes]:
            self._unreachable(f)
            return {}

        d.addErrback(failed)
        return d.addCallback(lambda remote: self._merge(userId, remote, self._clock.seconds()))

    def statItems(self) -> Deferred[list[dict[str, Any]]]:
        """
        The statistics of every user seen in the cluster (whose hash has not
        expired), by id.
        """
        return Deferred.fromCoroutine(self._items())

    async def _items(self) -> list[dict[str, Any]]:
        link = self._node.link
        pattern = STATS_PREFIX + b"*"
        reads: dict[int, Deferred[Any]] = {}
        remote: dict[int, dict[bytes, bytes]] = {}
        try:
            cursor = b"0"
            while True:
                cursor, keys = await link.execute(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000")
                for key in keys:
                    try:
                        uid = int(key[len(STATS_PREFIX):])
                    except ValueError:
                        continue
                    if uid not in reads:  # SCAN may return a key twice
                        reads[uid] = link.execute(b"HGETALL", key)
                if int(cursor) == 0:
                    break
            for uid, d in reads.items():
                remote[uid] = _hash(await d)
        except Exception:
            self._unreachable(Failure())
            for d in reads.values():
                d.addErrback(lambda f: None)
            remote = {}
        now = self._clock.seconds()
        for uid in self._router.userIds():
            remote.setdefault(uid, {})
        return [self._merge(uid, remote[uid], now) for uid in sorted(remote)]

    # life cycle

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self._clock
        self._loop.start(self._node.heartbeatSeconds, now=False).addErrback(
            lambda f: self.log.failure("cluster statistics heartbeat stopped", f))

    def stopService(self, wait: float = 2.0) -> Deferred[None]:
        """
        Write what changed since the last heartbeat, and wait for the writes
        (at most C{wait} seconds: a stop must not hang on Redis).  Added to
        the server after the cluster node and before the WebSocket service,
        this runs once every client is gone and while the node's link is
        still open.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for uid in sorted(self._dirty):
            self._write(uid)
        self._dirty.clear()
        if self._router.statsDirty is self._dirty:
            self._router.statsDirty = None
            self._router.statsOffline = None
        done: Deferred[None] = Deferred()
        timer = self._clock.callLater(wait, lambda: done.called or done.callback(None))

        def written(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        DeferredList(list(self._inflight)).addCallback(written)
        return done
