"""
Tests for L{wsserver.routing.delivery}: how a user's copies reach its
connections, live or held.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wsserver.routing.delivery import Resumed, User
from wsserver.stats import UserStats

from .test_routing import FakeConnection


class StoredConnection(FakeConnection):
    """
    Records which copies were written as missed ones (C{sendStored}).
    """

    def __init__(self, userId: int) -> None:
        super().__init__(userId)
        self.stored: list[Any] = []

    def sendStored(self, prepared: Any) -> None:
        self.stored.append(prepared)


def user(*connections: FakeConnection) -> User:
    u = User(UserStats(1, 0))
    for c in connections:
        u.connections.append(c)
    return u


class UserTests(SynchronousTestCase):
    """
    L{User}: live, draining, resuming.
    """

    def test_live(self) -> None:
        """
        With nothing held, a copy goes to every connection at once.
        """
        a, b = FakeConnection(1), FakeConnection(1)
        u = user(a, b)
        self.assertIsNone(u.held)
        u.write(b"p", "frame", None)
        self.assertEqual((a.sent, b.sent), (["frame"], ["frame"]))

    def test_draining(self) -> None:
        """
        While the queue is read, copies wait in order, and are handed back
        when it was; then the user is live again.
        """
        a = FakeConnection(1)
        u = user(a)
        u.startDrain()
        self.assertTrue(u.draining)
        u.write(b"p1", "f1", None)
        u.write(b"p2", "f2", 7)
        self.assertEqual(a.sent, [])
        self.assertEqual(u.endDrain(), [(b"p1", "f1", None), (b"p2", "f2", 7)])
        self.assertFalse(u.draining)
        self.assertIsNone(u.held)

    def test_resuming(self) -> None:
        """
        A resuming connection buffers live copies with their seqs until its
        replay was sent; another connection of the user gets them at once.
        """
        phone, laptop = FakeConnection(1), FakeConnection(1)
        u = user(phone, laptop)
        state = u.resume(phone)
        u.write(b"p", "f1", 1)
        self.assertEqual((phone.sent, laptop.sent), ([], ["f1"]))
        self.assertEqual(state.buffer, [(1, "f1")])
        state.buffer = None
        state.floor = 1
        u.write(b"p", "f1", 1)  # late copy of a seq it has
        u.write(b"p", "f2", 2)
        self.assertEqual(phone.sent, ["f2"])

    def test_removeSettles(self) -> None:
        """
        Removing the last resuming connection leaves the user live.
        """
        phone = FakeConnection(1)
        u = user(phone)
        u.resume(phone)
        self.assertTrue(u.remove(phone))
        self.assertFalse(u.remove(phone))
        self.assertIsNone(u.held)

    def test_writeStored(self) -> None:
        """
        Missed copies are written with C{sendStored}, not C{sendPrepared}.
        """
        a = StoredConnection(1)
        u = user(a)
        u.writeStored("f", None)
        self.assertEqual((a.stored, a.sent), (["f"], []))


class ResumedTests(SynchronousTestCase):
    """
    L{Resumed.fresh}: which seqs a resumed connection has not had.
    """

    def test_fresh(self) -> None:
        """
        Each seq is fresh once, in any order; the floor moves up over the
        seqs had above it.
        """
        state = Resumed()
        state.floor = 2
        self.assertEqual([state.fresh(s) for s in (1, 2, 4, 3, 4, 5)], [False, False, True, True, False, True])
        self.assertEqual((state.floor, state.above), (5, set()))
