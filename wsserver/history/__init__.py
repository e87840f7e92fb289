# -*- test-case-name: tests.test_history -*-
"""
The per-user inbox (C{chat.history}): every message routed to a user is
appended to the user's inbox with a C{seq} that only grows for that user and
is never reused, so that a device that was away can resume with C{?since=N}
and get exactly what it missed.

Three stores: L{MemoryInbox} (RAM only), L{wsserver.history.sqlite.SqliteInbox}
(the data file: survives restarts), L{wsserver.history.redis.RedisInbox}
(shared by the nodes of a cluster).  The memory and SQLite stores assign the
seqs themselves, at once (C{append} answers a list): a per-user counter in
memory, loaded at start and persisted with the entries.  Redis assigns them
(C{INCR} per user, in one script per batch), so C{append} answers a
L{Deferred}: live delivery waits for that reply.

Writes never block routing: the entries of one reactor turn are written in
one transaction (one script), and L{IInbox.committed} says when everything
appended so far is durable (for acks).

An entry is stored as the message was routed (its C{recipients} as sent);
it is delivered, live or replayed, with C{"seq"} added as its last field
(L{withSeq}).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

__all__ = ["IInbox", "MemoryInbox", "Page", "inboxPruneService", "seqOf", "withSeq"]

log = Logger()

_SEQ_TAIL = re.compile(rb',"seq":([0-9]+)\}\s*$')


def withSeq(payload: bytes, seq: int) -> bytes:
    """
    The serialized message C{payload} (a JSON object) with C{"seq": seq} as
    its last field: one copy of the bytes, no parse.
    """
    return b'%s,"seq":%d}' % (payload[: payload.rindex(b"}")], seq)


def seqOf(payload: bytes) -> int | None:
    """
    The C{seq} that L{withSeq} put at the end of C{payload}, or L{None}.
    """
    match = _SEQ_TAIL.search(payload[-32:])
    return None if match is None else int(match.group(1))


@dataclass(frozen=True)
class Page:
    """
    An answer of L{IInbox.read}.

    @ivar entries: C{(seq, payload with seq)}, oldest first.
    @ivar first: the oldest seq still kept for the user (the next seq to be
        assigned when none is kept): when C{since + 1 < first}, entries after
        C{since} were dropped (TTL, C{maxPerUser}).
    @ivar last: the newest seq assigned to the user (0: none yet).
    """

    entries: list[tuple[int, bytes]]
    first: int
    last: int

    def gapAfter(self, since: int) -> bool:
        """
        Whether entries after C{since} were dropped before this read.
        """
        return since + 1 < self.first


class IInbox(Interface):
    """
    The per-user inboxes.
    """

    def append(userIds: Sequence[int], payload: bytes, now: float) -> list[int] | Deferred[list[int]]:
        """
        Append C{payload} (a message as routed) to the inbox of each of
        C{userIds} (distinct), received at C{now}; the seqs, one per user in
        that order: a list when the store assigns them itself, a L{Deferred}
        when they come from elsewhere (Redis).  The write is batched per
        reactor turn; see L{committed}.
        """

    def committed() -> Deferred[None]:
        """
        Fires once everything appended so far is durable (on disk, in Redis).
        """

    def read(userId: int, since: int, limit: int, now: float) -> Deferred[Page]:
        """
        Up to C{limit} entries of C{userId} with seq > C{since}, oldest first,
        seeing every append made before this call; expired ones left out.
        """

    def prune(now: float) -> Deferred[int]:
        """
        Drop the entries older than C{ttlSeconds}; the result is how many.
        """


def inboxPruneService(inbox: IInbox, clock: IReactorTime, interval: float) -> TimerService:
    """
    A service that drops the inbox entries older than C{ttlSeconds} every
    C{interval} seconds (a failure is logged, the next one runs on time).
    """

    def prune() -> Deferred[Any]:
        d = maybeDeferred(inbox.prune, clock.seconds())
        return d.addErrback(lambda f: log.failure("could not drop expired inbox entries", f))

    service = TimerService(interval, prune)
    service.clock = clock
    return service


@implementer(IInbox)
class MemoryInbox:
    """
    The inboxes in RAM only: fast, and gone (seqs included) at a restart.

    @param ttlSeconds: entries older than this are dropped.
    @param maxPerUser: over this many for one user, the oldest are dropped.
    """

    def __init__(self, ttlSeconds: float, maxPerUser: int) -> None:
        self._ttl = ttlSeconds
        self._max = maxPerUser
        #: per user, the newest seq assigned
        self._last: dict[int, int] = {}
        #: per user, C{(seq, created, payload)} oldest first
        self._entries: dict[int, deque[tuple[int, float, bytes]]] = {}

    def append(self, userIds: Sequence[int], payload: bytes, now: float) -> list[int]:
        last = self._last
        entries = self._entries
        seqs = []
        for userId in userIds:
            seq = last.get(userId, 0) + 1
            last[userId] = seq
            kept = entries.get(userId)
            if kept is None:
                kept = entries[userId] = deque(maxlen=self._max)
            kept.append((seq, now, payload))
            seqs.append(seq)
        return seqs

    def committed(self) -> Deferred[None]:
        return succeed(None)

    def read(self, userId: int, since: int, limit: int, now: float) -> Deferred[Page]:
        last = self._last.get(userId, 0)
        oldest = now - self._ttl
        live = [entry for entry in self._entries.get(userId, ()) if entry[1] >= oldest]
        first = live[0][0] if live else last + 1
        entries = [(seq, withSeq(payload, seq)) for seq, _, payload in live if seq > since][:limit]
        return succeed(Page(entries, first, last))

    def prune(self, now: float) -> Deferred[int]:
        n = 0
        for kept in self._entries.values():
            n += self._expire(kept, now)
        return succeed(n)

    def _expire(self, kept: deque[tuple[int, float, bytes]], now: float) -> int:
        n = 0
        while kept and now - kept[0][1] > self._ttl:
            kept.popleft()
            n += 1
        return n
