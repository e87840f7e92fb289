# -*- test-case-name: tests.test_history -*-
"""
The per-user inbox (C{chat.history}): every message routed to a user is
appended to the user's inbox with a C{seq} that only grows for that user and
is never reused, so that a device that was away can resume with C{?since=N}
and get exactly what it missed.

This module is the contract (L{IInbox}, L{Page}, L{withSeq}); three stores
implement it: L{wsserver.history.memory.MemoryInbox} (RAM only),
L{wsserver.history.sqlite.SqliteInbox}
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
from dataclasses import dataclass
from typing import Sequence

from twisted.internet.defer import Deferred

from ..ids import UserId
from ..prune import IPrunable

__all__ = ["IInbox", "Page", "seqOf", "withSeq"]

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


class IInbox(IPrunable):
    """
    The per-user inboxes.
    """

    def append(userIds: Sequence[UserId], payload: bytes, now: float) -> list[int] | Deferred[list[int]]:
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

    def read(userId: UserId, since: int, limit: int, now: float) -> Deferred[Page]:
        """
        Up to C{limit} entries of C{userId} with seq > C{since}, oldest first,
        seeing every append made before this call; expired ones left out.
        """

    def prune(now: float) -> Deferred[int]:
        """
        Drop the entries older than C{ttlSeconds}; the result is how many.
        """
