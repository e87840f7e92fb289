# -*- test-case-name: tests.test_history -*-
"""
The inbox in RAM (C{chat.history.storage: "memory"}): fast, and gone (seqs
included) at a restart.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..ids import UserId
from . import IInbox, Page, withSeq

__all__ = ["MemoryInbox"]


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

    def append(self, userIds: Sequence[UserId], payload: bytes, now: float) -> list[int]:
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

    def read(self, userId: UserId, since: int, limit: int, now: float) -> Deferred[Page]:
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
