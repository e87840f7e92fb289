# -*- test-case-name: tests.test_queue -*-
"""
The undelivered queue in RAM (C{storage: "memory"}): fast, and gone at a
restart.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..ids import UserId
from . import IUndeliveredStore, forRecipient

__all__ = ["MemoryUndeliveredStore"]


@implementer(IUndeliveredStore)
class MemoryUndeliveredStore:
    """
    The undelivered queue in RAM only: fast, and gone at a restart.  A
    message kept by L{putMany} is one L{bytes} object that every user's queue
    refers to; it is freed when the last of them lets go.

    @param ttlSeconds: messages older than this are dropped.
    @param maxPerUser: over this many for one user, the oldest are dropped.
    """

    def __init__(self, ttlSeconds: float, maxPerUser: int) -> None:
        self._ttl = ttlSeconds
        self._max = maxPerUser
        #: per user, C{(key, created, payload, shared)}: C{shared} when the
        #: payload came from L{putMany} (rewritten for the user when fetched)
        self._queues: dict[int, deque[tuple[int, float, bytes, bool]]] = {}
        self._key = 0
        self.dropped = 0

    def put(self, userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        self._add(userId, payload, now, False)
        return succeed(None)

    def putMany(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        for userId in userIds:
            self._add(userId, payload, now, True)
        return succeed(None)

    def _add(self, userId: UserId, payload: bytes, now: float, shared: bool) -> None:
        queue = self._queues.get(userId)
        if queue is None:
            queue = self._queues[userId] = deque()
        self._key += 1
        queue.append((self._key, now, payload, shared))
        while len(queue) > self._max:
            queue.popleft()
            self.dropped += 1

    def fetch(self, userId: UserId, now: float) -> Deferred[list[tuple[int, bytes]]]:
        queue = self._queues.get(userId)
        if not queue:
            return succeed([])
        self._expire(userId, queue, now)
        return succeed([
            (key, forRecipient(payload, userId) if shared else payload) for key, _, payload, shared in queue
        ])

    def ack(self, userId: UserId, keys: Iterable[int]) -> Deferred[None]:
        queue = self._queues.get(userId)
        if queue:
            done = set(keys)
            kept = deque(item for item in queue if item[0] not in done)
            if kept:
                self._queues[userId] = kept
            else:
                del self._queues[userId]
        return succeed(None)

    def prune(self, now: float) -> Deferred[int]:
        before = self.dropped
        for userId, queue in list(self._queues.items()):
            self._expire(userId, queue, now)
        return succeed(self.dropped - before)

    def pending(self, userId: UserId) -> Deferred[int]:
        return succeed(len(self._queues.get(userId, ())))

    def _expire(self, userId: UserId, queue: deque[tuple[int, float, bytes, bool]], now: float) -> None:
        while queue and now - queue[0][1] > self._ttl:
            queue.popleft()
            self.dropped += 1
        if not queue:
            del self._queues[userId]
