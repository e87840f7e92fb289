# -*- test-case-name: tests.test_presenceevents -*-
"""
Presence events (C{event.presence}): C{user_online} / C{user_offline} to
the event targets, once per change of the whole cluster, and only after the
change lasted C{event.presenceDebounceSeconds}, so that a page reload (a
close, then an open within the delay) sends nothing.

Three parts:

  - L{PresenceDebouncer}: a pure state machine per node.  The router tells
    it (as its L{IPresenceListener}) when a user's first connection here
    opens and the last one closes; it calls C{emit(userId, online)} once a
    change has lasted C{delay} without the opposite one, and only when the
    state differs from the one it emitted last.  A timer exists per user
    only while a change is pending.
  - L{IPresenceLedger}: the last state sent for each user, shared by the
    nodes (L{MemoryPresenceLedger} for one node, L{RedisPresenceLedger} for
    a cluster): C{settle} changes it atomically and says whether this call
    changed it.
  - L{PresenceEvents}: what a node does with a settled change.

B{The cluster rule.}  Each node debounces its own users' changes.  When a
change settles on a node: an C{offline} while the user is online on another
node is no change of the cluster, and is dropped; otherwise the node settles
the new state in the shared ledger, and sends the event only when it changed
the ledger.  So the first node where a user comes online sends
C{user_online} (a user already online elsewhere finds the ledger online),
the last node where the user goes offline sends C{user_offline}, two nodes
settling the same change at once send it once, and a reload that moves a
user from one node to another (the close on one, the open on the other,
within the delay) sends nothing.

B{A node that dies.}  When the presence declares a node dead
(L{wsserver.cluster.node.ClusterNode.onDied}), every surviving node settles
offline those of its users who are online nowhere now
(L{PresenceEvents.nodeDied}): the ledger makes that one C{user_offline} for
the cluster, whichever node settles it first.

What is not covered: a node that stops drops its pending changes and sends
no C{user_offline} for its users (the ledger keeps them online until their
next session ends; a restart of the node does not announce them online
again); in one process with the memory ledger, a restart forgets the sent
states, so users who come back are sent online again.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import orjson
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..ids import UserId, redisKey
from ..messages import BOT, MessageFactory
from ..routing.interfaces import IPeers, IPresenceListener
from ..redis.link import RedisLink

__all__ = [
    "IPresenceLedger",
    "MemoryPresenceLedger",
    "PresenceDebouncer",
    "PresenceEvents",
    "RedisPresenceLedger",
    "presenceEvent",
]

USER_ONLINE = "user_online"
USER_OFFLINE = "user_offline"
#: ledger settles of a dead node's users that wait for Redis at once, at most
SETTLES_IN_FLIGHT = 64


@implementer(IPresenceListener)
class PresenceDebouncer:
    """
    Debounces the presence changes of users (see the module docstring).

    @param clock: the timers' clock.
    @param delay: seconds a change must last before it is emitted (0: at once).
    @param emit: called with C{(userId, online)} for each settled change.
    """

    def __init__(self, clock: IReactorTime, delay: float, emit: Callable[[int, bool], Any]) -> None:
        self._clock = clock
        self._delay = delay
        self._emit = emit
        #: the users whose last emitted state is online (absent: offline)
        self._online: set[int] = set()
        #: user -> the timer of the change waiting to settle (always to the
        #: state opposite to the emitted one)
        self._pending: dict[int, IDelayedCall] = {}
        self._stopped = False

    def online(self, userId: UserId) -> None:
        self._changed(userId, True)

    def offline(self, userId: UserId) -> None:
        self._changed(userId, False)

    def pending(self) -> int:
        """
        How many changes wait to settle (as many timers).
        """
        return len(self._pending)

    def _changed(self, userId: UserId, online: bool) -> None:
        if self._stopped:
            return
        if (userId in self._online) == online:
            # back to the state emitted last: what was pending is void
            call = self._pending.pop(userId, None)
            if call is not None:
                call.cancel()
            return
        if userId in self._pending:
            return  # the same change again: it settles when the first would
        if self._delay <= 0:
            self._settle(userId, online)
        else:
            self._pending[userId] = self._clock.callLater(self._delay, self._settled, userId, online)

    def _settled(self, userId: UserId, online: bool) -> None:
        del self._pending[userId]
        self._settle(userId, online)

    def _settle(self, userId: UserId, online: bool) -> None:
        if online:
            self._online.add(userId)
        else:
            self._online.discard(userId)
        self._emit(userId, online)

    def stop(self) -> None:
        """
        Drop the pending changes (the server stops) and ignore what comes next.
        """
        self._stopped = True
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call.cancel()


class IPresenceLedger(Interface):
    """
    The last presence state sent for each user, shared by the nodes.
    """

    def settle(userId: UserId, online: bool) -> Deferred[bool]:
        """
        Make C{online} the last state sent for C{userId}; fire with whether
        this call changed it (then the caller sends the event).
        """


@implementer(IPresenceLedger)
class MemoryPresenceLedger:
    """
    The ledger of one process: the set of users sent online.
    """

    def __init__(self) -> None:
        self._online: set[int] = set()

    def settle(self, userId: UserId, online: bool) -> Deferred[bool]:
        if (userId in self._online) == online:
            return succeed(False)
        if online:
            self._online.add(userId)
        else:
            self._online.discard(userId)
        return succeed(True)


#: KEYS[1] the user's key; ARGV[1] "1" (online) or "0": 1 when this call
#: changed the state (the key exists while the user was sent online).
_SETTLE = b"""
local was = redis.call('EXISTS', KEYS[1])
if ARGV[1] == '1' then
    if was == 1 then return 0 end
    redis.call('SET', KEYS[1], '1')
else
    if was == 0 then return 0 end
    redis.call('DEL', KEYS[1])
end
return 1
"""


@implementer(IPresenceLedger)
class RedisPresenceLedger:
    """
    The ledger of a cluster: C{wsserver:presence:sent:<id>} exists while the
    user was last sent online; one script changes it, so two nodes settling
    at once cannot both change it.

    @param link: the Redis connection (a cluster node's C{bulk} link).
    """

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def settle(self, userId: UserId, online: bool) -> Deferred[bool]:
        key = redisKey(b"wsserver:presence:sent:", userId)
        d = self._link.execute(b"EVAL", _SETTLE, b"1", key, b"1" if online else b"0")
        return d.addCallback(lambda changed: int(changed) == 1)


def presenceEvent(messages: MessageFactory, userId: UserId, online: bool) -> bytes:
    """
    The event body: C{{"id", "type", "timestamp", "sender": 0, "data": {"user": N}}}.
    """
    return orjson.dumps({
        "id": messages.newId(),
        "type": USER_ONLINE if online else USER_OFFLINE,
        "timestamp": messages.timestamp(),
        "sender": BOT,
        "data": {"user": userId},
    })


class PresenceEvents:
    """
    What a node does with a settled change (the cluster rule of the module
    docstring): drop it, or settle it in the ledger and send it.

    @param ledger: the last states sent.
    @param peers: the other nodes (where else a user is online).
    @param messages: ids and timestamps of the events.
    @param send: called with C{(type, payload)} of each event (the
        notifier's L{wsserver.events.notifier.EventNotifier.notifyServerEvent}).
    """

    log = Logger()

    def __init__(self, ledger: IPresenceLedger, peers: IPeers, messages: MessageFactory,
                 send: Callable[[str, bytes], Any]) -> None:
        self._ledger = ledger
        self._peers = peers
        self._messages = messages
        self._send = send

    def settled(self, userId: UserId, online: bool) -> Deferred[None]:
        """
        A change of C{userId} settled on this node; fires once handled.
        """
        if not online and userId in self._peers.remoteUsers:
            return succeed(None)  # still online on another node

        def changed(yes: bool) -> None:
            if yes:
                payload = presenceEvent(self._messages, userId, online)
                self._send(USER_ONLINE if online else USER_OFFLINE, payload)

        def unknown(f: Failure) -> None:
            # a duplicate is better than a lost change: send it
            self.log.warn("presence of user {uid} could not be settled in the cluster ({why}): sending it",
                          uid=userId, why=f.getErrorMessage())
            changed(True)

        d = self._ledger.settle(userId, online).addCallbacks(changed, unknown)
        return d.addErrback(lambda f: self.log.failure("could not send the presence of user {uid}", f, uid=userId))

    def nodeDied(self, users: Sequence[UserId], isOnline: Callable[[UserId], bool]) -> Deferred[None]:
        """
        A node was declared dead with C{users} online there: settle offline
        each that is online nowhere now (C{isOnline}: on this node or
        another), so that the cluster sends its C{user_offline} once (the
        ledger decides which node sends it).  At most L{SETTLES_IN_FLIGHT}
        settles wait for the ledger at once; fires once all are handled.
        """
        limit = DeferredSemaphore(SETTLES_IN_FLIGHT)

        def settle(userId: UserId) -> Deferred[None]:
            if isOnline(userId):
                return succeed(None)  # back elsewhere, or on this node
            return self.settled(userId, False)

        settles = [limit.run(settle, userId) for userId in users]
        return DeferredList(settles, consumeErrors=True).addCallback(lambda _: None)
