# -*- test-case-name: tests.test_queue_redis,tests.test_cluster -*-
"""
The undelivered queue shared by the nodes of a cluster, in Redis; a message
for many offline users is kept once.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from zope.interface import implementer

from ..ids import UserId, redisKey
from ..redis.link import RedisLink
from . import IUndeliveredStore, forRecipient
from .pending import PendingWrites

__all__ = ["RedisUndeliveredStore"]


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
    """

    def __init__(self, link: RedisLink, ttlSeconds: float, maxPerUser: int,
                 announce: Callable[[int], Any] | None = None, pending: PendingWrites | None = None) -> None:
        self._link = link
        self._pending = PendingWrites() if pending is None else pending
        self._ttl = int(max(1, ttlSeconds))
        self._max = maxPerUser
        self._announce = announce
        self.dropped = 0
        #: per user, the items of the last fetch: key -> the raw item, and
        #: the expired raw items to remove at the ack
        self._fetched: dict[int, tuple[dict[int, bytes], list[bytes]]] = {}

    @staticmethod
    def _key(userId: UserId) -> bytes:
        return redisKey(b"wsserver:queue:", userId)

    @staticmethod
    def _payloadKeys(ref: bytes) -> tuple[bytes, bytes]:
        return b"wsserver:queue:refs:" + ref, b"wsserver:queue:msg:" + ref

    def _counted(self, d: Deferred[None], messages: int, size: int) -> Deferred[None]:
        """
        Count C{messages} of C{size} bytes as waiting until C{d} fires.
        """
        pending = self._pending
        pending.add(messages, size)

        def done(result: Any) -> Any:
            pending.done(messages, size)
            return result

        return d.addBoth(done)

    def put(self, userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        return self._counted(self._push(userId, b"%r " % now + payload), 1, len(payload))

    def putMany(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        if len(userIds) <= 1:
            # one user: the copy for that user, in the list itself
            return self.put(userIds[0], forRecipient(payload, userIds[0]), now) if userIds else succeed(None)
        return self._counted(self._putShared(userIds, payload, now), len(userIds), len(payload))

    def _putShared(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        ref = uuid.uuid4().hex.encode()
        refs, message = self._payloadKeys(ref)
        life = b"%d" % (self._ttl + _PAYLOAD_SLACK)
        link = self._link
        waits = [
            link.execute(b"SET", message, payload, b"EX", life),
            link.execute(b"SET", refs, b"%d" % len(userIds), b"EX", life),
        ]
        item = b"%r @" % now + ref
        waits += [self._push(userId, item) for userId in userIds]
        return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _push(self, userId: UserId, item: bytes) -> Deferred[None]:
        d = self._link.execute(b"EVAL", _PUSH, b"1", self._key(userId), item, b"%d" % self._max, b"%d" % self._ttl)

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
