# -*- test-case-name: tests.test_cluster -*-
"""
The undelivered queue shared by the nodes of a cluster, in Redis.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..redis.link import RedisLink
from ..storage import IUndeliveredStore

__all__ = ["RedisUndeliveredStore"]


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
