"""
Tests for L{wsserver.watchdog}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.config import WatchdogConfig
from wsserver.watchdog import Watchdog

DANGLING = (4010, "Dangling connection")
INACTIVE = (4010, "Inactive connection")


class FakeConnection:
    """
    A connection as the watchdog sees it: C{ping()} counts and marks a ping
    outstanding; C{close} records and takes it out of the live connections.
    """

    def __init__(self, userId: int, live: list[FakeConnection], lastActivity: float = 0.0) -> None:
        self.userId = userId
        self.pingOutstanding = False
        self.lastActivity = lastActivity
        self.pings = 0
        self.closed: list[tuple[int, str]] = []
        self._live = live
        live.append(self)

    def ping(self) -> None:
        self.pings += 1
        self.pingOutstanding = True

    def pong(self, now: float | None = None) -> None:
        """
        The client answered the ping (and, when C{now} is given, it also sent
        a message then).
        """
        self.pingOutstanding = False
        if now is not None:
            self.lastActivity = now

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))
        if self in self._live:
            self._live.remove(self)


class WatchdogTests(SynchronousTestCase):
    """
    Tests for L{Watchdog}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.live: list[FakeConnection] = []

    def start(self, lifetime: float = 600, interval: float = 60) -> Watchdog:
        """
        Start a watchdog over C{self.live}; stopped at cleanup.
        """
        config = WatchdogConfig(enabled=True, connectionLifetimeSeconds=lifetime, pingIntervalSeconds=interval)
        watchdog = Watchdog(config, lambda: self.live, self.clock)
        watchdog.startService()
        self.addCleanup(lambda: watchdog.running and watchdog.stopService())
        return watchdog

    def test_noTickBeforeInterval(self) -> None:
        """
        Nothing happens before the first C{pingIntervalSeconds} have passed.
        """
        conn = FakeConnection(1, self.live)
        self.start()
        self.clock.advance(59.9)
        self.assertEqual(conn.pings, 0)
        self.assertEqual(conn.closed, [])

    def test_tickPings(self) -> None:
        """
        After C{pingIntervalSeconds}, every connection is pinged once.
        """
        a = FakeConnection(1, self.live)
        b = FakeConnection(2, self.live)
        self.start()
        self.clock.advance(60)
        self.assertEqual((a.pings, b.pings), (1, 1))
        self.assertEqual(a.closed + b.closed, [])

    def test_danglingClosed(self) -> None:
        """
        A connection that did not answer the ping by the next tick is closed
        with 4010 C{Dangling connection} and not pinged again; one that
        answered is pinged again.
        """
        silent = FakeConnection(1, self.live)
        answering = FakeConnection(2, self.live)
        self.start()
        self.clock.advance(60)
        answering.pong()
        self.clock.advance(60)
        self.assertEqual(silent.closed, [DANGLING])
        self.assertEqual(silent.pings, 1)
        self.assertEqual(answering.closed, [])
        self.assertEqual(answering.pings, 2)
        self.assertEqual(self.live, [answering])

    def test_keepsPinging(self) -> None:
        """
        A connection that answers every ping and stays active is pinged at
        every tick and never closed.
        """
        conn = FakeConnection(1, self.live)
        self.start(lifetime=600, interval=60)
        for _ in range(20):
            self.clock.advance(60)
            conn.pong(self.clock.seconds())
        self.assertEqual(conn.pings, 20)
        self.assertEqual(conn.closed, [])

    def test_inactiveClosed(self) -> None:
        """
        A connection that answers pings but sent no message for
        C{connectionLifetimeSeconds} is closed with 4010 C{Inactive
        connection} at the first tick after that; it is not pinged then.
        """
        idle = FakeConnection(1, self.live, lastActivity=0)
        active = FakeConnection(2, self.live, lastActivity=0)
        self.start(lifetime=150, interval=60)
        self.clock.advance(60)
        idle.pong()
        active.pong(60)
        self.clock.advance(60)
        idle.pong()
        active.pong(120)
        self.assertEqual(idle.closed, [])
        self.clock.advance(60)
        self.assertEqual(idle.closed, [INACTIVE])
        self.assertEqual(idle.pings, 2)
        self.assertEqual(active.closed, [])
        self.assertEqual(active.pings, 3)

    def test_inactiveAtExactLifetime(self) -> None:
        """
        A connection idle for exactly C{connectionLifetimeSeconds} counts as
        inactive.
        """
        conn = FakeConnection(1, self.live, lastActivity=0)
        self.start(lifetime=60, interval=60)
        self.clock.advance(60)
        self.assertEqual(conn.closed, [INACTIVE])
        self.assertEqual(conn.pings, 0)

    def test_lifetimeZeroDisables(self) -> None:
        """
        With C{connectionLifetimeSeconds} 0, an idle connection that answers
        pings is never closed.
        """
        conn = FakeConnection(1, self.live, lastActivity=0)
        self.start(lifetime=0, interval=60)
        for _ in range(100):
            self.clock.advance(60)
            conn.pong()
        self.assertEqual(conn.pings, 100)
        self.assertEqual(conn.closed, [])

    def test_newConnectionsSeen(self) -> None:
        """
        Each tick asks for the live connections again: one that appeared
        since the last tick is pinged.
        """
        self.start()
        self.clock.advance(60)
        conn = FakeConnection(1, self.live, lastActivity=60)
        self.clock.advance(60)
        self.assertEqual(conn.pings, 1)

    def test_stopService(self) -> None:
        """
        After C{stopService} no tick runs any more.
        """
        conn = FakeConnection(1, self.live)
        watchdog = self.start()
        self.clock.advance(60)
        self.assertEqual(conn.pings, 1)
        watchdog.stopService()
        self.assertFalse(watchdog.running)
        self.clock.advance(600)
        self.assertEqual(conn.pings, 1)
        self.assertEqual(conn.closed, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A watchdog stopped and started again ticks again, from its restart.
        """
        conn = FakeConnection(1, self.live)
        watchdog = self.start()
        watchdog.stopService()
        self.clock.advance(100)
        watchdog.startService()
        self.clock.advance(59)
        self.assertEqual(conn.pings, 0)
        self.clock.advance(1)
        self.assertEqual(conn.pings, 1)
