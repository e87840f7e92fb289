# -*- test-case-name: tests.test_queue -*-
"""
The undelivered queue (SPEC section 6): messages kept for users who are
offline, delivered oldest first when they next connect.

This module is the contract (L{IUndeliveredStore}, L{forRecipient}); the
stores are L{wsserver.queue.memory} (RAM only), L{wsserver.queue.sqlite}
(the data file: survives restarts) and L{wsserver.queue.redis} (shared by
the nodes of a cluster).

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
from typing import Iterable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute

from ..ids import UserId
from ..prune import IPrunable

__all__ = ["IUndeliveredStore", "forRecipient"]

#: What comes before the recipients in a message serialized by
#: L{wsserver.messages.Message.serialize} (compact JSON, fixed field order).
_RECIPIENTS = b',"recipients":['


def forRecipient(payload: bytes, userId: UserId) -> bytes:
    """
    The copy of a serialized message for one of its recipients: the same
    message with C{recipients} C{[userId]}, what an offline recipient gets.

    The message is not parsed: in the server's own serialization (compact,
    the fields in their fixed order, C{data} last) the first C{,"recipients":[}
    is the field itself (a quote inside a JSON string is always escaped), and
    the first C{]} after it ends the list of ids (no id holds a C{]}).  So the rewrite costs
    a copy of the bytes, whatever C{data} holds (integers beyond 64 bits
    included).  Another layout falls back to a full parse.

    @return: C{payload} itself when its recipients already are C{[userId]}.
    """
    start = payload.find(_RECIPIENTS)
    if start >= 0:
        start += len(_RECIPIENTS) - 1
        end = payload.find(b"]", start) + 1
        if end > 0:
            own = b"[%d]" % userId if type(userId) is int else b'["%s"]' % userId.encode()  # type: ignore[union-attr]
            if payload[start:end] == own:
                return payload
            return b"".join((payload[:start], own, payload[end:]))
    # not ours: the standard library keeps integers of any size exactly
    obj = json.loads(payload)
    obj["recipients"] = [userId]
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class IUndeliveredStore(IPrunable):
    """
    Where messages for offline users wait.
    """

    dropped = Attribute("How many messages were dropped for C{maxPerUser} or their age.")

    def put(userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        """
        Keep C{payload} (a serialized message) for C{userId}, received at C{now}.
        L{fetch} answers it as it is: its C{recipients} should be C{[userId]}.
        """

    def putMany(userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        """
        Keep one message for several users, stored once: C{payload} is the
        message as routed (its C{recipients} may name others too); L{fetch}
        answers each of C{userIds} (distinct) the copy whose C{recipients} is
        C{[userId]}.  Each user's queue counts it, for C{maxPerUser} and
        L{pending}, as one message.
        """

    def fetch(userId: UserId, now: float) -> Deferred[list[tuple[int, bytes]]]:
        """
        The messages waiting for C{userId}, oldest first, as C{(key, payload)};
        expired ones are left out. They stay stored until L{ack}. Each
        payload's C{recipients} is C{[userId]} (see L{putMany}).
        """

    def ack(userId: UserId, keys: Iterable[int]) -> Deferred[None]:
        """
        Forget the messages with C{keys}: they were delivered to C{userId}
        (a message kept by L{putMany} stays for its other users).
        """

    def prune(now: float) -> Deferred[int]:
        """
        Drop every expired message; the result is how many.
        """

    def pending(userId: UserId) -> Deferred[int]:
        """
        How many messages wait for C{userId}.
        """
