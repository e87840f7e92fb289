# -*- test-case-name: tests.test_presence -*-
"""
Who is online on which node: the cluster's presence as a pure state
machine.  It knows no Redis and no transport; L{wsserver.cluster.node}
feeds it what the presence channel carries, and tests drive it with
L{twisted.internet.task.Clock}.

The rules:

  - B{Signs of life.}  Every message from a node (a connection change, a
    beat, a hello) counts as a sign of life, and so does its being heard at
    all.  A node not heard for C{timeout} seconds is dead: its users are
    offline at once.  This is a timer of its own, set for the earliest
    deadline, not the heartbeat: a node killed just after its beat is
    declared dead C{timeout} seconds after that beat, not a heartbeat later.
  - B{Beats} carry the whole list of a node's users, so what a lost
    connection change missed is corrected at the next beat.
  - B{Suspect.}  A node that did not take a message (a C{PUBLISH} that
    reached no subscriber) is suspect: its users stop counting as online
    there, so that messages for them go to the undelivered queue rather
    than to a node that is not listening.  The next sign of life of the
    node clears the suspicion and brings its users back.
  - B{Goodbye.}  A node that stops says so, and its users are offline at once.
  - B{Cut off.}  While this node cannot hear anybody (its pub/sub connection
    is down), silence says nothing about the others: no node is declared
    dead then, and every node gets a fresh deadline once this node hears
    again.

The state the router reads on every recipient is L{Presence.where}: a dict
from user id to the nodes where the user is online (suspect and dead ones
left out), with what each node announced of the user.
"""

from __future__ import annotations

from typing import Callable, Iterable

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..ids import UserId, idBytes, parseIdBytes, sortKey

__all__ = ["Presence", "Seat"]


@attr.s(auto_attribs=True, slots=True)
class Seat:
    """
    What a node announced of one of its users.

    @ivar connections: the user's open connections on that node.
    @ivar connectedTimes: the user's C{connectedTimes} on that node.
    @ivar lastConnection: the user's C{lastConnection} there (unix seconds).
    """

    connections: int
    connectedTimes: int = 0
    lastConnection: float = 0.0


@attr.s(auto_attribs=True, slots=True)
class _Node:
    heard: float
    users: dict[UserId, Seat] = attr.ib(factory=dict)
    suspect: bool = False


class Presence:
    """
    The presence of the other nodes, as this node knows it.

    @param clock: the time source, and the timer for deaths.
    @param timeout: seconds of silence after which a node is dead.
    @param died: called with a node's id and the ids of its users when it is
        declared dead (not when it said goodbye).
    """

    def __init__(self, clock: IReactorTime, timeout: float,
                 died: Callable[[str, list[int]], None] = lambda node, users: None) -> None:
        self._clock = clock
        #: seconds of silence after which a node is dead
        self.timeout = timeout
        self._died = died
        self._nodes: dict[str, _Node] = {}
        #: user id -> {node id: Seat}, for the nodes where the user counts as online
        self.where: dict[int, dict[str, Seat]] = {}
        self._timer: IDelayedCall | None = None
        self._cutOff = False

    # reading

    def nodes(self) -> list[str]:
        """
        The ids of the nodes alive (suspect ones included), sorted.
        """
        return sorted(self._nodes)

    def isSuspect(self, node: str) -> bool:
        """
        Whether C{node} is suspect.
        """
        n = self._nodes.get(node)
        return n is not None and n.suspect

    def connectionsOf(self, userId: UserId) -> int:
        """
        How many connections C{userId} has on the nodes where it counts as
        online.
        """
        seats = self.where.get(userId)
        return sum(s.connections for s in seats.values()) if seats else 0

    # what the nodes say

    def connections(self, node: str, userId: UserId, seat: Seat) -> None:
        """
        C{node} says how many connections C{userId} has there now (0: the
        user went offline there).
        """
        n = self._heard(node)
        if seat.connections > 0:
            n.users[userId] = seat
            if not n.suspect:
                self.where.setdefault(userId, {})[node] = seat
        else:
            n.users.pop(userId, None)
            self._unseat(node, userId)

    def beat(self, node: str, users: dict[UserId, Seat]) -> None:
        """
        C{node} says these are all its users.
        """
        n = self._heard(node)
        for userId in set(n.users) - set(users):
            self._unseat(node, userId)
        n.users = dict(users)
        for userId, seat in users.items():
            self.where.setdefault(userId, {})[node] = seat

    def heard(self, node: str) -> None:
        """
        A sign of life from C{node} that says nothing of its users.
        """
        self._heard(node)

    def goodbye(self, node: str) -> None:
        """
        C{node} stopped: its users are offline.
        """
        n = self._nodes.pop(node, None)
        if n is not None:
            for userId in n.users:
                self._unseat(node, userId)

    def suspect(self, node: str) -> None:
        """
        C{node} did not take a message: its users stop counting as online
        there until it is heard again.
        """
        n = self._nodes.get(node)
        if n is None or n.suspect:
            return
        n.suspect = True
        for userId in n.users:
            self._unseat(node, userId)

    # this node's own state

    def cutOff(self) -> None:
        """
        This node cannot hear the others: nobody is declared dead meanwhile.
        """
        self._cutOff = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def reconnected(self) -> None:
        """
        This node hears again: every node gets a fresh deadline.
        """
        self._cutOff = False
        now = self._clock.seconds()
        for n in self._nodes.values():
            n.heard = now
        self._schedule()

    def stop(self) -> None:
        """
        Cancel the timer (this node stops).
        """
        self.cutOff()

    # the rules

    def _heard(self, node: str) -> _Node:
        now = self._clock.seconds()
        n = self._nodes.get(node)
        if n is None:
            n = self._nodes[node] = _Node(now)
        else:
            n.heard = now
            if n.suspect:
                n.suspect = False
                for userId, seat in n.users.items():
                    self.where.setdefault(userId, {})[node] = seat
        if self._timer is None:
            self._schedule()
        return n

    def _unseat(self, node: str, userId: UserId) -> None:
        seats = self.where.get(userId)
        if seats is not None:
            seats.pop(node, None)
            if not seats:
                del self.where[userId]

    def _schedule(self) -> None:
        """
        Set the timer for the earliest deadline.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._cutOff or not self._nodes:
            return
        earliest = min(n.heard for n in self._nodes.values())
        delay = max(0.0, earliest + self.timeout - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        """
        Declare dead every node not heard for the timeout; set the timer for
        the next deadline.
        """
        self._timer = None
        now = self._clock.seconds()
        dead = [node for node, n in self._nodes.items() if now - n.heard >= self.timeout]
        for node in dead:
            n = self._nodes.pop(node)
            for userId in n.users:
                self._unseat(node, userId)
            self._died(node, sorted(n.users, key=sortKey))
        self._schedule()


def parseSeats(entries: Iterable[bytes]) -> dict[UserId, Seat]:
    """
    The users of a beat: C{uid:connections:connectedTimes:lastConnection}
    entries.

    @raise ValueError: for an entry that is not such an entry.
    """
    users: dict[UserId, Seat] = {}
    for entry in entries:
        if not entry:
            continue
        # (a string id may hold ":": the fields are the last three)
        uid, count, times, last = entry.rsplit(b":", 3)
        users[parseIdBytes(uid)] = Seat(int(count), int(times), float(last))
    return users


def formatSeat(userId: UserId, seat: Seat) -> bytes:
    """
    One entry of a beat (see L{parseSeats}).
    """
    return b"%s:%d:%d:%d" % (idBytes(userId), seat.connections, seat.connectedTimes, int(seat.lastConnection))
