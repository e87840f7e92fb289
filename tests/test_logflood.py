"""
Tests for L{wsserver.logflood}: library log lines held to one a second per
kind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LimitedHistoryLogObserver, Logger, LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from wsserver._internals import logObservers
from wsserver.logflood import MAX_KINDS, FloodGuard, PeerLogger, guardPublisher


class FloodGuardTests(SynchronousTestCase):
    """
    L{FloodGuard} in front of a list.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.guard = FloodGuard(self.events.append, self.clock)
        self.library = Logger(namespace="autobahn.websocket.protocol", observer=self.guard)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_oneASecond(self) -> None:
        """
        Of 1,000 events of one kind within a second, one passes; the next
        one after the second says how many were held.
        """
        for i in range(1000):
            self.library.warn("dropping connection to peer {peer}", peer=f"tcp:10.0.0.{i % 250}")
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.guard.held, 999)
        self.clock.advance(1.5)
        self.library.warn("dropping connection to peer {peer}", peer="tcp:10.0.0.1")
        self.assertEqual(self.lines()[1:], [
            "999 more log lines like the next were held back in the last 2 s",
            "dropping connection to peer tcp:10.0.0.1",
        ])

    def test_kindsApart(self) -> None:
        """
        Each kind (namespace and format) has its own second.
        """
        self.library.warn("one {x}", x=1)
        self.library.warn("two {x}", x=1)
        Logger(namespace="twisted.internet.tcp.Port", observer=self.guard).error("Could not accept new connection ({e})", e="EMFILE")
        self.assertEqual(len(self.events), 3)

    def test_ownPass(self) -> None:
        """
        wsserver's own events pass untouched, however many.
        """
        ours = Logger(namespace="wsserver.protocol", observer=self.guard)
        for _ in range(10):
            ours.info("connected")
        self.assertEqual(len(self.events), 10)

    def test_legacyByText(self) -> None:
        """
        A legacy line is its own kind by its text.
        """
        for text in ["Could not accept new connection (EMFILE)"] * 5 + ["another"]:
            self.guard({"log_namespace": "log_legacy", "log_format": "{log_text}", "log_text": text,
                        "message": (text,)})
        self.assertEqual(len(self.events), 2)

    def test_boundedKinds(self) -> None:
        """
        At most L{MAX_KINDS} kinds are remembered.
        """
        for i in range(MAX_KINDS + 10):
            self.guard({"log_namespace": "x", "log_format": f"kind {i}"})
        self.assertEqual(self.guard.kinds(), MAX_KINDS)

    def test_peerLines(self) -> None:
        """
        wsserver's lines of a L{PeerLogger} (those a remote peer can cause)
        are held like the libraries'.
        """
        peer = PeerLogger(namespace="wsserver.connection.session.Session", observer=self.guard)
        for i in range(100):
            peer.info("auth failed for user {uid} from {peer}", uid=i, peer="203.0.113.7")
        self.assertEqual(len(self.events), 1)
        self.clock.advance(1)
        peer.info("auth failed for user {uid} from {peer}", uid=1, peer="203.0.113.7")
        self.assertEqual(self.lines()[1:], [
            "99 more log lines like the next were held back in the last 1 s",
            "auth failed for user 1 from 203.0.113.7",
        ])


class GuardPublisherTests(SynchronousTestCase):
    """
    L{guardPublisher}: one guard in front of a publisher's observers.
    """

    def test_guardedThenRestored(self) -> None:
        """
        While guarded, every observer sees one event of a flood; once undone,
        every event again, and the observers are the publisher's as before.
        """
        clock = Clock()
        first: list[dict[str, Any]] = []
        second: list[dict[str, Any]] = []
        publisher = LogPublisher(first.append, second.append)
        library = Logger(namespace="twisted.internet.tcp.Port", observer=publisher)
        undo = guardPublisher(publisher, clock)
        for _ in range(50):
            library.info("Could not accept new connection ({acceptError})", acceptError="EMFILE")
        self.assertEqual((len(first), len(second)), (1, 1))
        undo()
        library.info("Could not accept new connection ({acceptError})", acceptError="EMFILE")
        self.assertEqual((len(first), len(second)), (2, 2))
        self.assertEqual(logObservers(publisher), [first.append, second.append])

    def test_service(self) -> None:
        """
        L{LogGuardService} guards while it runs.
        """
        from wsserver.service import LogGuardService

        events: list[dict[str, Any]] = []
        publisher = LogPublisher(events.append)
        # (logging has begun: the guard goes in at once, the reactor running or not)
        service = LogGuardService(publisher, MemoryReactorClock())
        service.startService()
        self.assertNotEqual(logObservers(publisher), [events.append])
        service.stopService()
        self.assertEqual(logObservers(publisher), [events.append])

    def test_serviceWaitsForTheReactor(self) -> None:
        """
        Started before the reactor runs (as C{twist} starts services, before
        logging begins), L{LogGuardService} leaves the observers alone until
        the reactor runs: the log beginner must still find its buffer of
        early events on the publisher to take it off, and the observers it
        then adds must go behind the guard.
        """
        from wsserver.service import LogGuardService

        events: list[dict[str, Any]] = []
        # (the log beginner's temporary observer: its buffer and stderr)
        early = LogPublisher(LimitedHistoryLogObserver(), [].append)
        publisher = LogPublisher(early)
        reactor = MemoryReactorClock()
        service = LogGuardService(publisher, reactor)
        service.startService()
        self.assertEqual(logObservers(publisher), [early])
        # logging begins, then the reactor runs (as under twist)
        publisher.removeObserver(early)
        publisher.addObserver(events.append)
        reactor.run()
        self.assertNotEqual(logObservers(publisher), [events.append])
        service.stopService()
        self.assertEqual(logObservers(publisher), [events.append])

    def test_serviceStoppedBeforeTheReactorRuns(self) -> None:
        """
        A L{LogGuardService} stopped before the reactor ran never guards.
        """
        from wsserver.service import LogGuardService

        early = LimitedHistoryLogObserver()
        publisher = LogPublisher(early)
        reactor = MemoryReactorClock()
        service = LogGuardService(publisher, reactor)
        service.startService()
        service.stopService()
        reactor.run()
        self.assertEqual(logObservers(publisher), [early])
