# -*- test-case-name: tests.test_idempotency -*-
"""
Idempotency: "has this key been seen within its time to live?", answered
once for the whole server (and, through Redis, for the whole cluster).

It serves C{Idempotency-Key} on C{POST /send-message} and the tokens of
message acks: the first caller of a key stores a value (a message id) and
routes; a later caller within the key's TTL gets that value back and routes
nothing.  The callers name their own namespaces in the keys (the REST API
uses C{rest:<key>}).
"""

from __future__ import annotations

import heapq

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from .redis.link import RedisLink

__all__ = ["IIdempotency", "MemoryIdempotency", "RedisIdempotency"]


class IIdempotency(Interface):
    """
    A store of claimed keys, each for a while.
    """

    def claim(key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        """
        Store value under key if absent, for ttlSeconds; fire with None if
        this call stored it, or with the value stored earlier (within its ttl).
        """

    def settle(key: bytes, value: bytes) -> Deferred[None]:
        "Replace the value of a claimed key (its expiry stays); nothing when the key is gone."


@implementer(IIdempotency)
class MemoryIdempotency:
    """
    Claims in this process's memory, expiring on C{clock}.

    Memory stays bounded by the keys claimed within their TTL: a heap of
    expiry times is pruned on each claim, without a timer per key.

    @param clock: the time source of the expiry.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        #: key -> (when it expires, its value)
        self._entries: dict[bytes, tuple[float, bytes]] = {}
        #: (when, key), oldest first: a key has one entry while it lives
        self._expiry: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        now = self._clock.seconds()
        expiry, entries = self._expiry, self._entries
        while expiry and expiry[0][0] <= now:
            _, old = heapq.heappop(expiry)
            del entries[old]
        held = entries.get(key)
        if held is not None:
            return succeed(held[1])
        if ttlSeconds > 0:
            until = now + ttlSeconds
            entries[key] = (until, value)
            heapq.heappush(expiry, (until, key))
        return succeed(None)

    def settle(self, key: bytes, value: bytes) -> Deferred[None]:
        held = self._entries.get(key)
        if held is not None and held[0] > self._clock.seconds():
            self._entries[key] = (held[0], value)
        return succeed(None)


#: KEYS[1] the key; ARGV the value and the TTL in milliseconds: the value
#: stored earlier, or nil once this call stored ARGV[1] (one step: two nodes
#: claiming at once cannot both store).
_CLAIM = b"""
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""


@implementer(IIdempotency)
class RedisIdempotency:
    """
    Claims shared by the nodes of a cluster: one Redis key per claim
    (C{<prefix><key>}), expiring on Redis's clock.

    @param link: the Redis connection (a cluster node's C{bulk} link).
    @param prefix: what every key starts with.
    """

    def __init__(self, link: RedisLink, prefix: bytes = b"wsserver:idem:") -> None:
        self._link = link
        self._prefix = prefix

    def claim(self, key: bytes, value: bytes, ttlSeconds: float) -> Deferred[bytes | None]:
        if ttlSeconds <= 0:
            return succeed(None)
        ms = max(1, int(ttlSeconds * 1000))
        d = self._link.execute(b"EVAL", _CLAIM, b"1", self._prefix + key, value, b"%d" % ms)
        return d.addCallback(lambda held: None if held is None else bytes(held))

    def settle(self, key: bytes, value: bytes) -> Deferred[None]:
        # XX: only a key still there; KEEPTTL: its expiry stays (Redis 6.0)
        d = self._link.execute(b"SET", self._prefix + key, value, b"XX", b"KEEPTTL")
        return d.addCallback(lambda _: None)
