# -*- test-case-name: tests.test_routing_delivery -*-
"""
Per-user delivery state: how a copy routed to a user reaches the user's
connections.

Most of the time a user is I{live}: every copy is written to each of its
connections at once (L{User.held} is L{None}, one test on the hot path).
Two things hold copies back, and both are kept in one L{Held}:

  - the user's undelivered queue is being read (a connect): the copies
    routed meanwhile wait in C{backlog}, so that the stored ones go first;
  - some connections resumed with C{?since=N}: each waits in its
    L{Resumed} buffer until its inbox replay was sent, and then gets only
    the seqs it has not had.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..stats import UserStats
from .interfaces import IConnection

__all__ = ["Held", "Resumed", "User"]


class Resumed:
    """
    What a connection that resumed with C{since} has had.  While the replay
    is read, C{buffer} holds what is delivered meanwhile, as C{(seq, frame)}.
    After it, the connection has every seq up to C{floor} and the seqs in
    C{above}: it gets only the others (L{fresh}), whether they come live, or
    late from another node, or from a catch-up read of the inbox.
    """

    __slots__ = ("buffer", "floor", "above")

    def __init__(self) -> None:
        self.buffer: list[tuple[int | None, Any]] | None = []
        self.floor = 0
        self.above: set[int] = set()

    @property
    def replaying(self) -> bool:
        """
        Whether the replay of the connection is still being read.
        """
        return self.buffer is not None

    def fresh(self, seq: int) -> bool:
        """
        Whether C{seq} is new to the connection; it is counted as had.
        """
        floor = self.floor
        if seq <= floor or seq in self.above:
            return False
        if seq == floor + 1:
            above = self.above
            floor = seq
            while floor + 1 in above:
                floor += 1
                above.remove(floor)
            self.floor = floor
        else:
            self.above.add(seq)
        return True


class Held:
    """
    Why a user's copies are not simply written: C{backlog} (not L{None}
    while the undelivered queue is read: C{(payload, frame, seq)}, in order)
    and C{resuming} (the connections that resumed, and what each has had).
    """

    __slots__ = ("backlog", "resuming", "catchUp")

    def __init__(self) -> None:
        self.backlog: list[tuple[bytes, Any, int | None]] | None = None
        self.resuming: dict[IConnection, Resumed] = {}
        #: another node appended to the user's inbox while a replay was
        #: being read: read the inbox again after it
        self.catchUp = False


class User:
    """
    One user a node knows: its live connections here, its statistics, and
    what holds its copies back (L{Held}, L{None} when nothing does).
    """

    __slots__ = ("userId", "connections", "stats", "held")

    def __init__(self, stats: UserStats) -> None:
        self.userId = stats.userId
        #: replaced, never changed in place: a connection may close while the
        #: router writes to the user's connections (a slow consumer's, closed
        #: in its sendPrepared), and the loop must still reach the next ones
        self.connections: list[IConnection] = []
        self.stats = stats
        self.held: Held | None = None

    # the state

    @property
    def draining(self) -> bool:
        """
        Whether the user's undelivered queue is being read (its live copies
        wait behind it).
        """
        held = self.held
        return held is not None and held.backlog is not None

    def _hold(self) -> Held:
        held = self.held
        if held is None:
            held = self.held = Held()
        return held

    def _settle(self) -> None:
        held = self.held
        if held is not None and held.backlog is None and not held.resuming:
            self.held = None

    def startDrain(self) -> None:
        """
        The undelivered queue is read from now on: live copies wait.
        """
        self._hold().backlog = []

    def endDrain(self) -> list[tuple[bytes, Any, int | None]]:
        """
        The undelivered queue was read: what waited meanwhile, in order.
        """
        held = self.held
        if held is None or held.backlog is None:
            return []
        backlog, held.backlog = held.backlog, None
        self._settle()
        return backlog

    def resume(self, connection: IConnection) -> Resumed:
        """
        C{connection} resumes: what it is sent waits until its replay was.
        """
        state = self._hold().resuming[connection] = Resumed()
        return state

    def resumed(self, connection: IConnection) -> Resumed | None:
        """
        What C{connection} had, if it resumed.
        """
        held = self.held
        return None if held is None else held.resuming.get(connection)

    def resumingStates(self) -> list[Resumed]:
        """
        The states of the connections that resumed.
        """
        held = self.held
        return [] if held is None else list(held.resuming.values())

    def remove(self, connection: IConnection) -> bool:
        """
        Forget C{connection}; whether it was one of the user's.
        """
        if connection not in self.connections:
            return False
        self.connections = [c for c in self.connections if c is not connection]
        held = self.held
        if held is not None:
            held.resuming.pop(connection, None)
            self._settle()
        return True

    # writing

    def write(self, payload: bytes, prepared: Any, seq: int | None) -> None:
        """
        Write a live copy (C{payload}, framed as C{prepared}; C{seq}: its
        seq in the user's inbox) to every connection, or hold it.
        """
        held = self.held
        if held is None:
            for connection in self.connections:
                connection.sendPrepared(prepared)
        elif held.backlog is not None:
            held.backlog.append((payload, prepared, seq))
        else:
            self.writeEach(prepared, seq)

    def writeEach(self, prepared: Any, seq: int | None) -> None:
        """
        Write a live copy to every connection, each as L{writeOne}: a
        resuming connection buffers it until its replay was sent, and drops
        a seq it had.
        """
        for connection in self.connections:
            self.writeOne(connection, prepared, seq)

    def writeOne(self, connection: IConnection, prepared: Any, seq: int | None) -> None:
        """
        Write a live copy to one connection of the user.
        """
        state = self.resumed(connection)
        if state is None:
            connection.sendPrepared(prepared)
        elif state.buffer is not None:
            state.buffer.append((seq, prepared))
        elif seq is None or state.fresh(seq):
            connection.sendPrepared(prepared)

    def writeStored(self, prepared: Any, seq: int | None, connections: Sequence[IConnection] | None = None) -> None:
        """
        Write a copy that the user missed (from the undelivered queue) to
        every connection (or to C{connections}, some of them): as
        L{writeOne}, with L{IConnection.sendStored}.
        """
        for connection in self.connections if connections is None else connections:
            state = self.resumed(connection)
            if state is None or (state.buffer is None and (seq is None or state.fresh(seq))):
                connection.sendStored(prepared)
            elif state.buffer is not None:
                state.buffer.append((seq, prepared))
