# -*- test-case-name: tests.test_history_cluster -*-
"""
The inbox shared by the nodes of a cluster (C{chat.history.storage:
"redis"}): a device resumes on any node.

Per user, the seq counter C{wsserver:inbox:seq:<id>} (C{INCR}: the seq comes
from Redis itself, so two nodes never hand out the same one; it never
expires) and a sorted set C{wsserver:inbox:<id>} scored by seq, whose
members are C{"<seq> <created> <payload>"}, trimmed to C{maxPerUser} and
expiring C{ttlSeconds} after its last entry; entries older than that are
dropped from the front when read.

The appends of one reactor turn are one script call: live delivery waits
for its reply (one round trip per turn, not per message).
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ..ids import UserId, idBytes
from ..redis.link import RedisLink
from . import IInbox, Page, withSeq

__all__ = ["RedisInbox"]

#: ARGV: now, maxPerUser, ttl, then per message: n, payload, n user ids
#: (L{idBytes}: a numeric id's key is the previous version's).
#: Answers the seqs, in that order.
_APPEND = b"""
local now, max, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local payload = ARGV[i + 1]
  for j = 1, n do
    local uid = ARGV[i + 1 + j]
    local seq = redis.call('INCR', 'wsserver:inbox:seq:' .. uid)
    local key = 'wsserver:inbox:' .. uid
    redis.call('ZADD', key, seq, seq .. ' ' .. now .. ' ' .. payload)
    if seq > max then redis.call('ZREMRANGEBYSCORE', key, '-inf', seq - max) end
    redis.call('EXPIRE', key, ttl)
    out[#out + 1] = seq
  end
  i = i + 2 + n
end
return out
"""

#: ARGV: user id, oldest creation time kept, since, limit.  Drops the
#: expired entries from the front; answers {last, first, entries...}.
_READ = b"""
local uid = ARGV[1]
local key = 'wsserver:inbox:' .. uid
local oldest = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', 'wsserver:inbox:seq:' .. uid) or '0')
local first = last + 1
while true do
  local head = redis.call('ZRANGE', key, 0, 0)
  if #head == 0 then break end
  local seq, created = string.match(head[1], '^(%d+) (%S+) ')
  if tonumber(created) >= oldest then first = tonumber(seq); break end
  redis.call('ZREMRANGEBYRANK', key, 0, 0)
end
local out = {last, first}
local entries = redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[3], '+inf', 'LIMIT', 0, tonumber(ARGV[4]))
for _, e in ipairs(entries) do out[#out + 1] = e end
return out
"""


@implementer(IInbox)
class RedisInbox:
    """
    The per-user inboxes in Redis, shared by the nodes.

    @param link: the Redis connection (the node's bulk link).
    @param clock: schedules the batch at the end of the reactor turn.
    """

    def __init__(self, link: RedisLink, clock: IReactorTime, ttlSeconds: float, maxPerUser: int) -> None:
        self._link = link
        self._clock = clock
        self._ttl = ttlSeconds
        self._max = maxPerUser
        self._batch: list[tuple[Sequence[int], bytes, Deferred[list[int]]]] = []
        self._waiters: list[Deferred[None]] = []
        self._flushCall: IDelayedCall | None = None
        self._now = 0.0

    def append(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[list[int]]:
        d: Deferred[list[int]] = Deferred()
        self._batch.append((userIds, payload, d))
        self._now = now
        if self._flushCall is None:
            self._flushCall = self._clock.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._flushCall = None
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        args = [b"EVAL", _APPEND, b"0", b"%r" % self._now, b"%d" % self._max, b"%d" % max(1, int(self._ttl))]
        for userIds, payload, _ in batch:
            args.append(b"%d" % len(userIds))
            args.append(payload)
            args.extend(idBytes(u) for u in userIds)

        def assigned(seqs: list[Any]) -> None:
            i = 0
            for userIds, _, d in batch:
                n = len(userIds)
                d.callback([int(s) for s in seqs[i : i + n]])
                i += n
            for waiter in waiters:
                waiter.callback(None)

        def failed(f: Failure) -> None:
            for _, _, d in batch:
                d.errback(f)
            for waiter in waiters:
                waiter.errback(f)

        self._link.execute(*args).addCallbacks(assigned, failed)

    def committed(self) -> Deferred[None]:
        if self._flushCall is not None:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            return waiter
        # the link answers in order: after every append already sent
        return self._link.execute(b"PING").addCallback(lambda _: None)

    def read(self, userId: UserId, since: int, limit: int, now: float) -> Deferred[Page]:
        if self._flushCall is not None:
            self._flushCall.cancel()
            self._flush()
        oldest = now - self._ttl
        d = self._link.execute(b"EVAL", _READ, b"0", idBytes(userId), b"%r" % oldest, b"%d" % since, b"%d" % limit)

        def parse(reply: list[Any]) -> Page:
            last, first = int(reply[0]), int(reply[1])
            entries = []
            for raw in reply[2:]:
                seq, _, rest = bytes(raw).partition(b" ")
                _, _, payload = rest.partition(b" ")
                entries.append((int(seq), withSeq(payload, int(seq))))
            return Page(entries, first, last)

        return d.addCallback(parse)

    def prune(self, now: float) -> Deferred[int]:
        # inboxes expire as a whole, and old entries go when read
        return succeed(0)
