# -*- test-case-name: tests.test_storage -*-
"""
The undelivered queue (SPEC section 6): messages kept for users who are
offline, delivered oldest first when they next connect.

A store hands messages out with L{IUndeliveredStore.fetch} and forgets them
only on L{IUndeliveredStore.ack}, after they were written to the user's
connections, so that a store that survives restarts loses nothing between the
two.  Every method returns a L{Deferred} so that a store may do its I/O off the
reactor thread; the memory store answers at once.

A message for several offline users is kept once (L{IUndeliveredStore.putMany}):
each user's queue refers to the one payload, and each user gets, when the
messages are fetched, the copy whose C{recipients} is that user only
(L{forRecipient}).  So a message to 20,000 offline users costs one payload
and 20,000 small references, not 20,000 payloads.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Iterable, Sequence

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

__all__ = ["IUndeliveredStore", "MemoryUndeliveredStore", "forRecipient", "pruneService"]

log = Logger()

#: What comes before the recipients in a message serialized by
#: L{wsserver.messages.Message.serialize} (compact JSON, fixed field order).
_RECIPIENTS = b',"recipients":['


def forRecipient(payload: bytes, userId: int) -> bytes:
    """
    The copy of a serialized message for one of its recipients: the same
    message with C{recipients} C{[userId]}, what an offline recipient gets.

    The message is not parsed: in the server's own serialization (compact,
    the fields in their fixed order, C{data} last) the first C{,"recipients":[}
    is the field itself (a quote inside a JSON string is always escaped), and
    the first C{]} after it ends the list of integers.  So the rewrite costs
    a copy of the bytes, whatever C{data} holds (integers beyond 64 bits
    included).  Another layout falls back to a full parse.

    @return: C{payload} itself when its recipients already are C{[userId]}.
    """
    start = payload.find(_RECIPIENTS)
    if start >= 0:
        start += len(_RECIPIENTS) - 1
        end = payload.find(b"]", start) + 1
        if end > 0:
            own = b"[%d]" % (userId,)
            if payload[start:end] == own:
                return payload
            return b"".join((payload[:start], own, payload[end:]))
    # not ours: the standard library keeps integers of any size exactly
    obj = json.loads(payload)
    obj["recipients"] = [userId]
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def pruneService(store: IUndeliveredStore, clock: IReactorTime, interval: float) -> TimerService:
    """
    A service that drops the expired messages of C{store} every C{interval}
    seconds.  A prune that fails (the disk, Redis) is logged and the next
    one runs on time: a L{TimerService} whose call fails stops for good.
    """

    def prune() -> Deferred[Any]:
        d = maybeDeferred(store.prune, clock.seconds())
        return d.addErrback(lambda f: log.failure("could not drop expired undelivered messages", f))

    service = TimerService(interval, prune)
    service.clock = clock
    return service


class IUndeliveredStore(Interface):
    """
    Where messages for offline users wait.
    """

    dropped = Attribute("How many messages were dropped for C{maxPerUser} or their age.")

    def put(userId: int, payload: bytes, now: float) -> Deferred[None]:
        """
        Keep C{payload} (a serialized message) for C{userId}, received at C{now}.
        L{fetch} answers it as it is: its C{recipients} should be C{[userId]}.
        """

    def putMany(userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        """
        Keep one message for several users, stored once: C{payload} is the
        message as routed (its C{recipients} may name others too); L{fetch}
        answers each of C{userIds} (distinct) the copy whose C{recipients} is
        C{[userId]}.  Each user's queue counts it, for C{maxPerUser} and
        L{pending}, as one message.
        """

    def fetch(userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        """
        The messages waiting for C{userId}, oldest first, as C{(key, payload)};
        expired ones are left out. They stay stored until L{ack}. Each
        payload's C{recipients} is C{[userId]} (see L{putMany}).
        """

    def ack(userId: int, keys: Iterable[int]) -> Deferred[None]:
        """
        Forget the messages with C{keys}: they were delivered to C{userId}
        (a message kept by L{putMany} stays for its other users).
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

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        self._add(userId, payload, now, False)
        return succeed(None)

    def putMany(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        for userId in userIds:
            self._add(userId, payload, now, True)
        return succeed(None)

    def _add(self, userId: int, payload: bytes, now: float, shared: bool) -> None:
        queue = self._queues.get(userId)
        if queue is None:
            queue = self._queues[userId] = deque()
        self._key += 1
        queue.append((self._key, now, payload, shared))
        while len(queue) > self._max:
            queue.popleft()
            self.dropped += 1

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        queue = self._queues.get(userId)
        if not queue:
            return succeed([])
        self._expire(userId, queue, now)
        return succeed([
            (key, forRecipient(payload, userId) if shared else payload) for key, _, payload, shared in queue
        ])

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

    def _expire(self, userId: int, queue: deque[tuple[int, float, bytes, bool]], now: float) -> None:
        while queue and now - queue[0][1] > self._ttl:
            queue.popleft()
            self.dropped += 1
        if not queue:
            del self._queues[userId]
