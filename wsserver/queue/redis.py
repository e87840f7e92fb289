# -*- test-case-name: tests.test_queue_redis,tests.test_cluster -*-
"""
The undelivered queue shared by the nodes of a cluster, in Redis; a message
for many offline users is kept once; writes that Redis could not take wait
(bounded, with back-pressure) and go out once it is back.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any, Callable, Iterable, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ResponseError
from zope.interface import implementer

from ..ids import UserId, redisKey
from ..redis.link import RedisClosed, RedisLink
from . import IUndeliveredStore, forRecipient
from .pending import PendingWrites

__all__ = ["MAX_WAITING_WRITES", "RedisUndeliveredStore"]

#: writes that wait for Redis at most before the senders are paused
MAX_WAITING_WRITES = 10000
#: seconds between two tries of the waiting writes (a probe: one write,
#: then all of them once it passed)
RETRY_SECONDS = 0.5


#: Seconds that a shared payload outlives C{ttlSeconds} at most (clock skew
#: between the nodes and Redis): its last reference normally deletes it.
_PAYLOAD_SLACK = 3600

#: KEYS[1] a user's list; ARGV the item, C{maxPerUser}, the TTL: push the
#: item, answer the oldest items over C{maxPerUser}, removed (one step, so
#: that pushes in flight together trim exactly).
_PUSH = b"""
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local over = n - tonumber(ARGV[2])
if over <= 0 then return {} end
local dropped = redis.call('LRANGE', KEYS[1], 0, over - 1)
redis.call('LTRIM', KEYS[1], over, -1)
return dropped
"""

#: the same, for a push tried again: nothing when the item is in the list
#: already (the first try reached Redis, and only its answer was lost)
_PUSH_AGAIN = b"""
if redis.call('LPOS', KEYS[1], ARGV[1]) then return {} end
""" + _PUSH

#: KEYS[1] a user's list; ARGV items: remove one of each, answer those that
#: were there (a concurrent drain may have removed them first).
_REMOVE = b"""
local removed = {}
for _, item in ipairs(ARGV) do
    if redis.call('LREM', KEYS[1], 1, item) > 0 then removed[#removed + 1] = item end
end
return removed
"""

#: KEYS pairs of (reference count, payload) of shared payloads: one user
#: let go of each; the last one deletes both keys.
_RELEASE = b"""
for i = 1, #KEYS, 2 do
    if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i], KEYS[i + 1]) end
end
return 0
"""


@implementer(IUndeliveredStore)
class RedisUndeliveredStore:
    """
    The undelivered queue shared by the nodes: a Redis list per user
    (C{wsserver:queue:<id>}), trimmed to C{maxPerUser}, expiring
    C{ttlSeconds} after its last message.  Each item is the time it was
    stored, a space, and either the payload (L{put}) or C{@} and the
    reference of a payload kept once for all the users of a L{putMany}:
    C{wsserver:queue:msg:<ref>}, with the count of the lists that refer to
    it in C{wsserver:queue:refs:<ref>}; the last user to let go of it (an
    ack, C{maxPerUser}) deletes both, and both expire on their own a little
    after C{ttlSeconds} (a list that expired as a whole lets go of nothing).

    L{fetch} reads without removing and L{ack} removes exactly the items
    delivered (C{LREM} of each): a node that dies between the two loses
    nothing, and two nodes draining one user at the same moment (the user
    connecting to both at once) each deliver the stored messages to their
    own connections, the second ack finding them gone, without touching the
    newer ones.  Expired items go with the next ack.

    Writes are pipelined on the link: each message is counted in C{pending}
    from its C{put} until Redis answered its push (or it failed), so that
    what waits in memory for Redis is bounded like the SQLite store's
    batches (over the bound, the senders stop being read).

    B{Redis unreachable.}  With a C{clock}, a write that fails because Redis
    cannot be reached (down, restarting, or frozen past the command
    timeout) is not lost: it waits, in order, with every write that comes
    after it, and every C{RETRY_SECONDS} one of them is tried again; once
    one passes, all go out.  A push tried again is skipped when its item is
    in the list already (the first try reached Redis, its answer did not
    come back), so a message is queued once.  At most C{maxWaiting} writes
    wait before the senders are paused (L{onPressure}); they resume once
    half of that is written.  A write that Redis refuses (an error answer)
    fails as before, and so does every write once the link is closed.

    @param clock: the timer of the tries again; L{None}: a failed write
        fails at once.
    @param maxWaiting: the writes that wait for Redis before the senders
        are paused.
    """

    log = Logger()

    def __init__(self, link: RedisLink, ttlSeconds: float, maxPerUser: int,
                 announce: Callable[[UserId], Any] | None = None, pending: PendingWrites | None = None,
                 clock: IReactorTime | None = None, maxWaiting: int = MAX_WAITING_WRITES) -> None:
        self._link = link
        self._pending = PendingWrites() if pending is None else pending
        self._ttl = int(max(1, ttlSeconds))
        self._max = maxPerUser
        self._announce = announce
        self.dropped = 0
        self._clock = clock
        self._maxWaiting = max(1, maxWaiting)
        #: the writes waiting for Redis, oldest first: (the write, given
        #: whether it is tried again; its caller's result)
        self._waiting: deque[tuple[Callable[[bool], Deferred[Any]], Deferred[Any]]] = deque()
        self._retryCall: Any = None
        self._probing = False
        #: whether the senders are paused (too many writes wait)
        self.paused = False
        self._pressure: list[tuple[Callable[[], Any], Callable[[], Any]]] = []
        #: per user, the items of the last fetch: key -> the raw item, and
        #: the expired raw items to remove at the ack
        self._fetched: dict[int, tuple[dict[int, bytes], list[bytes]]] = {}

    @staticmethod
    def _key(userId: UserId) -> bytes:
        return redisKey(b"wsserver:queue:", userId)

    @staticmethod
    def _payloadKeys(ref: bytes) -> tuple[bytes, bytes]:
        return b"wsserver:queue:refs:" + ref, b"wsserver:queue:msg:" + ref

    # writes that wait for Redis

    def onPressure(self, pause: Callable[[], Any], resume: Callable[[], Any]) -> None:
        """
        Call C{pause} when C{maxWaiting} writes wait for Redis (the senders
        should stop sending), C{resume} when half of them are written.
        """
        self._pressure.append((pause, resume))

    def waiting(self) -> int:
        """
        How many writes wait for Redis.
        """
        return len(self._waiting)

    def _write(self, run: Callable[[bool], Deferred[Any]]) -> Deferred[Any]:
        """
        Run one write (C{run(again)}), now or, while others wait, behind them.
        """
        result: Deferred[Any] = Deferred()
        if self._waiting or self._probing:
            self._wait(run, result)
        else:
            self._attempt(run, result, False)
        return result

    def _attempt(self, run: Callable[[bool], Deferred[Any]], result: Deferred[Any], again: bool) -> None:
        def failed(f: Failure) -> None:
            if self._clock is None or not _unreachable(f):
                result.errback(f)
            else:
                self._wait(run, result)

        run(again).addCallbacks(result.callback, failed)

    def _wait(self, run: Callable[[bool], Deferred[Any]], result: Deferred[Any]) -> None:
        if not self._waiting and not self._probing:
            self.log.warn("cannot write the undelivered queue to Redis: the messages wait for it")
        self._waiting.append((run, result))
        if len(self._waiting) >= self._maxWaiting and not self.paused:
            self.paused = True
            self.log.warn("{n} undelivered messages wait for Redis: the senders are paused", n=len(self._waiting))
            for pause, _ in self._pressure:
                pause()
        self._schedule()

    def _schedule(self) -> None:
        if self._retryCall is None and not self._probing and self._waiting and self._clock is not None:
            self._retryCall = self._clock.callLater(RETRY_SECONDS, self._retry)

    def _retry(self) -> None:
        """
        Try the oldest waiting write again; once it passes, all the others.
        """
        self._retryCall = None
        if not self._waiting:
            return
        run, result = self._waiting.popleft()
        self._probing = True

        def passed(value: Any) -> None:
            self._probing = False
            result.callback(value)
            waiting, self._waiting = self._waiting, deque()
            for run, later in waiting:
                self._attempt(run, later, True)
            if not self._waiting:
                self.log.info("the undelivered messages that waited for Redis are written")
            self._relieve()

        def failed(f: Failure) -> None:
            self._probing = False
            if _unreachable(f):
                self._waiting.appendleft((run, result))
            else:
                result.errback(f)
            self._schedule()

        run(True).addCallbacks(passed, failed)

    def _relieve(self) -> None:
        if self.paused and len(self._waiting) <= self._maxWaiting // 2:
            self.paused = False
            for _, resume in self._pressure:
                resume()

    def close(self) -> None:
        """
        Stop trying again: what still waits fails (the server stops).
        """
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        waiting, self._waiting = self._waiting, deque()
        if waiting:
            self.log.warn("{n} undelivered messages waited for Redis when the server stopped: lost", n=len(waiting))
        for _, result in waiting:
            result.errback(Failure(RedisClosed("the undelivered queue is closed")))
        self._relieve()

    # the store

    def _counted(self, d: Deferred[None], messages: int, size: int, now: float) -> Deferred[None]:
        """
        Count C{messages} of C{size} bytes, handed over at C{now}, as
        waiting until C{d} fires.
        """
        pending = self._pending
        pending.add(messages, size, now)

        def done(result: Any) -> Any:
            pending.done(messages, size)
            return result

        return d.addBoth(done)

    def put(self, userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        return self._counted(self._push(userId, b"%r " % now + payload), 1, len(payload), now)

    def putMany(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        if len(userIds) <= 1:
            # one user: the copy for that user, in the list itself
            return self.put(userIds[0], forRecipient(payload, userIds[0]), now) if userIds else succeed(None)
        return self._counted(self._putShared(userIds, payload, now), len(userIds), len(payload), now)

    def _putShared(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        ref = uuid.uuid4().hex.encode()
        refs, message = self._payloadKeys(ref)
        life = b"%d" % (self._ttl + _PAYLOAD_SLACK)
        link = self._link
        count = b"%d" % len(userIds)
        waits = [
            self._write(lambda again: link.execute(b"SET", message, payload, b"EX", life)),
            # tried again: only if the first try did not set it (users may
            # have let go of it since)
            self._write(lambda again: link.execute(b"SET", refs, count, b"EX", life, *((b"NX",) if again else ()))),
        ]
        item = b"%r @" % now + ref
        waits += [self._push(userId, item) for userId in userIds]
        return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _push(self, userId: UserId, item: bytes) -> Deferred[None]:
        key, limit, ttl = self._key(userId), b"%d" % self._max, b"%d" % self._ttl
        d = self._write(lambda again: self._link.execute(b"EVAL", _PUSH_AGAIN if again else _PUSH, b"1", key, item,
                                                          limit, ttl))

        def trimmed(dropped: Any) -> Deferred[None] | None:
            if not dropped:
                return None
            self.dropped += len(dropped)
            return self._release(dropped)

        d.addCallback(trimmed)
        if self._announce is not None:
            d.addCallback(lambda _: self._announce(userId))
        return d.addCallback(lambda _: None)

    def _release(self, items: Iterable[bytes]) -> Deferred[None] | None:
        """
        Let go of the shared payloads that C{items}, removed from a list,
        referred to.
        """
        keys = []
        for item in items:
            rest = item.partition(b" ")[2]
            if rest[:1] == b"@":
                keys += self._payloadKeys(rest[1:])
        if not keys:
            return None
        return self._link.execute(b"EVAL", _RELEASE, b"%d" % len(keys), *keys).addCallback(lambda _: None)

    def fetch(self, userId: UserId, now: float) -> Deferred[list[tuple[int, bytes]]]:
        raw: dict[int, bytes] = {}
        expired: list[bytes] = []
        live: list[tuple[int, bytes, bytes]] = []

        def parse(items: Any) -> Deferred[Any]:
            for index, item in enumerate(items or ()):
                stamp, _, rest = item.partition(b" ")
                if now - float(stamp) <= self._ttl:
                    live.append((index, item, rest))
                else:
                    expired.append(item)
            refs = [rest[1:] for _, _, rest in live if rest[:1] == b"@"]
            if not refs:
                return succeed([])
            return self._link.execute(b"MGET", *[self._payloadKeys(ref)[1] for ref in refs]).addCallback(
                lambda payloads: dict(zip(refs, payloads))
            )

        def resolve(shared: Any) -> list[tuple[int, bytes]]:
            out = []
            for index, item, rest in live:
                if rest[:1] == b"@":
                    payload = shared.get(rest[1:])
                    if payload is None:
                        # its payload expired: so has the message
                        expired.append(item)
                        continue
                    payload = forRecipient(payload, userId)
                else:
                    payload = rest
                out.append((index, payload))
                raw[index] = item
            self._fetched[userId] = (raw, expired)
            return out

        d = self._link.execute(b"LRANGE", self._key(userId), b"0", b"-1")
        return d.addCallback(parse).addCallback(resolve)

    def ack(self, userId: UserId, keys: Iterable[int]) -> Deferred[None]:
        raw, expired = self._fetched.pop(userId, ({}, []))
        items = [raw[k] for k in keys if k in raw] + expired
        if not items:
            return succeed(None)
        d = self._link.execute(b"EVAL", _REMOVE, b"1", self._key(userId), *items)
        return d.addCallback(self._release).addCallback(lambda _: None)

    def prune(self, now: float) -> Deferred[int]:
        # Redis expires whole lists by EXPIRE; old items inside a list are
        # skipped when fetched
        return succeed(0)

    def pending(self, userId: UserId) -> Deferred[int]:
        return self._link.execute(b"LLEN", self._key(userId)).addCallback(int)


def _unreachable(f: Failure) -> bool:
    """
    Whether C{f} says Redis could not be reached (not that it refused the
    command, nor that the link is closed): the write may be tried again.
    """
    return f.check(ResponseError, RedisClosed) is None
