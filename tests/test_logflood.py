"""
Tests for L{wsserver.logflood}: library log lines held to one a second per
kind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from wsserver.logflood import MAX_KINDS, FloodGuard


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
