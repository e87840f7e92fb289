# -*- test-case-name: tests.test_storage -*-
"""
The undelivered queue (SPEC section 6): messages kept for users who are
offline, delivered oldest first when they next connect.

A store hands messages out with L{IUndeliveredStore.fetch} and forgets them
only on L{IUndeliveredStore.ack}, after they were written to the user's
connections, so that a store that survives restarts loses nothing between the
two.  Every method returns a L{Deferred} so that a store may do its I/O off the
reactor thread; the memory store answers at once.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer

__all__ = ["IUndeliveredStore", "MemoryUndeliveredStore"]


class IUndeliveredStore(Interface):
    """
    Where messages for offline users wait.
    """

    dropped = Attribute("How many messages were dropped for C{maxPerUser} or their age.")

    def put(userId: int, payload: bytes, now: float) -> Deferred[None]:
        """
        Keep C{payload} (a serialized message) for C{userId}, received at C{now}.
        """

    def fetch(userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        """
        The messages waiting for C{userId}, oldest first, as C{(key, payload)};
        expired ones are left out. They stay stored until L{ack}.
        """

    def ack(userId: int, keys: Iterable[int]) -> Deferred[None]:
        """
        Forget the messages with C{keys}: they were delivered.
        """

    def prune(now: float) -> Deferred[int]:
        """
        Drop every expired message; the result is how many.
        """

    def pending(userId: int) -> Deferred[int]:
        """
        How many messages wait for C{userId}.
        """


@implementer(IUndeliveredStore)
class MemoryUndeliveredStore:
    """
    The undelivered queue in RAM only: fast, and gone at a restart.

    @param ttlSeconds: messages older than this are dropped.
    @param maxPerUser: over this many for one user, the oldest are dropped.
    """

    def __init__(self, ttlSeconds: float, maxPerUser: int) -> None:
        self._ttl = ttlSeconds
        self._max = maxPerUser
        self._queues: dict[int, deque[tuple[int, float, bytes]]] = {}
        self._key = 0
        self.dropped = 0

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        queue = self._queues.get(userId)
        if queue is None:
            queue = self._queues[userId] = deque()
        self._key += 1
        queue.append((self._key, now, payload))
        while len(queue) > self._max:
            queue.popleft()
            self.dropped += 1
        return succeed(None)

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        queue = self._queues.get(userId)
        if not queue:
            return succeed([])
        self._expire(userId, queue, now)
        return succeed([(key, payload) for key, _, payload in queue])

    def ack(self, userId: int, keys: Iterable[int]) -> Deferred[None]:
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

    def pending(self, userId: int) -> Deferred[int]:
        return succeed(len(self._queues.get(userId, ())))

    def _expire(self, userId: int, queue: deque[tuple[int, float, bytes]], now: float) -> None:
        while queue and now - queue[0][1] > self._ttl:
            queue.popleft()
            self.dropped += 1
        if not queue:
            del self._queues[userId]
