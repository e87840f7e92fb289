# -*- test-case-name: tests.test_cluster_stats -*-
"""
C{/stat} and C{/stats} for the whole cluster (SPEC section 7): each node
writes the counters of its users to Redis at its heartbeat, and the node
that answers merges them with its own, fresh from memory.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..routing.interfaces import IClusterStatistics, IStatsListener, IUserDirectory
from ..redis.link import RedisLink
from ..ids import UserId, parseIdBytes, redisKey, sortKey
from ..stats import mergeStatRecords
from .node import ClusterNode
from .presence import Seat

__all__ = ["ClusterStats", "StatsJournal"]

#: HGETALLs of a /stats answer that wait for Redis at once, at most
READS_IN_FLIGHT = 64


@implementer(IStatsListener)
class StatsJournal:
    """
    Which users' statistics changed since they were last written to Redis
    (the router's L{IStatsListener} in a cluster): a set, so that a message
    costs one C{set.add} and no Redis work.
    """

    def __init__(self) -> None:
        #: the ids of the users whose statistics changed
        self.dirty: set[int] = set()
        #: L{IStatsListener.changed}: the set's own C{add}
        self.changed: Callable[[int], None] = self.dirty.add
        self._offline: list[Callable[[int], Any]] = []

    def onOffline(self, observer: Callable[[int], Any]) -> None:
        """
        Call C{observer} with a user's id when the user's last connection on
        this node closes.
        """
        self._offline.append(observer)

    def wentOffline(self, userId: UserId) -> None:
        for observer in self._offline:
            observer(userId)


def _atLeast(record: dict[str, Any], seat: Seat, now: float) -> None:
    """
    Raise a node's record of a user online there to what the node announced.
    """
    record["online"] = True
    record["connectedTimes"] = max(int(record.get("connectedTimes", 0)), seat.connectedTimes)
    record["lastConnection"] = max(float(record.get("lastConnection", 0)), seat.lastConnection)
    record.setdefault("at", now)


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


@implementer(IClusterStatistics)
class ClusterStats(Service):
    """
    C{/stat} and C{/stats} for the whole cluster (SPEC section 7).

    Each node writes the counters of its users to Redis: a hash per user,
    C{wsserver:stats:<id>}, whose field C{<node id>} holds the JSON of that
    node's L{UserStats.record<wsserver.stats.UserStats.record>}.  The router
    marks the users whose counters change (through its L{IStatsListener}, this journal: a set, no
    Redis work per message); every C{heartbeatSeconds} this service writes
    theirs (C{HSET} and C{EXPIRE}), and a user's at once when the user's last
    connection on this node closes.  The hash expires C{ttlSeconds} (30 days)
    after its last write; the records of users online here are rewritten
    every C{refreshSeconds} (a day) so that a long session keeps them.

    C{/stats} lists every user seen (a hash in Redis), every user of this
    node, and every user the presence shows online on another node, at once
    (not at that node's next heartbeat).

    An answer merges (L{mergeStatRecords}) this node's figures, fresh from
    memory, with the other nodes' records from Redis, which are up to one
    heartbeat old.  A record written while its user was online counts the
    online time on up to now as long as the presence says the user is still
    online on that node; after the node died it stops at its last write.
    The record of a node that stopped or died stays (until the hash
    expires): its users' counts survive it.  C{isOnline} is the live
    presence (L{IUserDirectory.isOnline}).

    When Redis cannot be reached the answers hold this node's figures only
    (and a warning is logged).

    A user that the presence shows online on another node counts there
    with at least the C{connectedTimes} and C{lastConnection} that node
    announced with the connection (L{wsserver.cluster.presence.Seat}): so a
    user shown online always has C{connectedTimes} >= 1 and
    C{lastConnection} set, even before that node's next heartbeat wrote
    its record.

    @param node: this node's membership of the cluster (its presence says
        who is online where).
    @param link: the Redis connection of the commands (the bulk one of
        L{wsserver.redis.links.RedisLinks}).
    @param router: the users of this node and their statistics (the router).
    @param journal: the router's L{IStatsListener}: which users changed.
    @param clock: the time source (the router's).
    """

    log = Logger()

    def __init__(self, node: ClusterNode, link: RedisLink, router: IUserDirectory, journal: StatsJournal,
                 clock: IReactorTime, ttlSeconds: float = 30 * 86400, refreshSeconds: float = 86400) -> None:
        self._node = node
        self._link = link
        self._router = router
        self._clock = clock
        self._ttl = b"%d" % int(max(1, ttlSeconds))
        self._refresh = refreshSeconds
        self._refreshedAt = clock.seconds()
        self._field = node.nodeId.encode()
        self._dirty = journal.dirty
        self._dirty.update(router.userIds())
        journal.onOffline(self.writeNow)
        self._loop: LoopingCall | None = None
        #: the writes not answered yet
        self._inflight: set[Deferred[None]] = set()
        #: the last heartbeat's writes, while not all answered
        self._beating: Deferred[Any] | None = None
        self._failing = False

    # writing

    def writeNow(self, userId: UserId) -> Deferred[None]:
        """
        Write the record of C{userId} now (the user went offline here).
        """
        self._dirty.discard(userId)
        return self._write(userId)

    def _write(self, userId: UserId) -> Deferred[None]:
        stats = self._router.userStats(userId)
        if stats is None:
            return succeed(None)
        key = redisKey(STATS_PREFIX, userId)
        link = self._link
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
            self._dirty.update(self._router.localUserIds())
        if not self._dirty:
            return
        users = sorted(self._dirty, key=sortKey)
        self._dirty.clear()
        beating = self._beating = DeferredList([self._write(uid) for uid in users])

        def done(_: Any) -> None:
            self._beating = None

        beating.addCallback(done)

    # reading

    def _merge(self, userId: UserId, remote: dict[bytes, bytes], now: float) -> dict[str, Any]:
        router = self._router
        stats = router.userStats(userId)
        live = dict(self._node.remoteUsers.get(userId, {}))
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
            node = field.decode("utf-8", "replace")
            seat = live.pop(node, None)
            record["online"] = bool(record.get("online")) and seat is not None
            if seat is not None:
                _atLeast(record, seat, now)
            records.append(record)
        for seat in live.values():
            # online there, and no record written yet: what the node announced
            record = {"firstSeen": seat.lastConnection or now}
            _atLeast(record, seat, now)
            records.append(record)
        if stats is not None:
            records.append(stats.record(now))
        return mergeStatRecords(userId, records, now, router.isOnline(userId))

    def _unreachable(self, f: Any) -> None:
        self.log.warn("cannot read cluster statistics from Redis ({why}): answering with this node's only",
                      why=f.getErrorMessage())

    def statItem(self, userId: UserId) -> Deferred[dict[str, Any]]:
        """
        The statistics of one user in the whole cluster; zeros for a user
        never seen.
        """
        d = self._link.execute(b"HGETALL", redisKey(STATS_PREFIX, userId))
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
        link = self._link
        # at most READS_IN_FLIGHT reads wait for Redis at once: a /stats of
        # many users neither floods the connection nor holds all replies
        limit = DeferredSemaphore(READS_IN_FLIGHT)
        pattern = STATS_PREFIX + b"*"
        reads: dict[UserId, Deferred[Any]] = {}
        remote: dict[UserId, dict[bytes, bytes]] = {}
        try:
            cursor = b"0"
            while True:
                cursor, keys = await link.execute(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000")
                for key in keys:
                    try:
                        uid = parseIdBytes(key[len(STATS_PREFIX):])
                    except ValueError:
                        continue
                    if uid not in reads:  # SCAN may return a key twice
                        reads[uid] = limit.run(link.execute, b"HGETALL", key)
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
        # online on another node and not written there yet (its heartbeat
        # has not come): listed at once, from what that node announced
        for uid in self._node.remoteUsers:
            remote.setdefault(uid, {})
        return [self._merge(uid, remote[uid], now) for uid in sorted(remote, key=sortKey)]

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
        for uid in sorted(self._dirty, key=sortKey):
            self._write(uid)
        self._dirty.clear()
        done: Deferred[None] = Deferred()
        timer = self._clock.callLater(wait, lambda: done.called or done.callback(None))

        def written(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        DeferredList(list(self._inflight)).addCallback(written)
        return done
