# -*- test-case-name: tests.test_watchdog -*-
"""
The watchdog (SPEC section 3): pings every connection every
C{pingIntervalSeconds}; closes with 4010 C{Dangling connection} one that did
not answer the previous ping, and with 4010 C{Inactive connection} one that
sent no message for C{connectionLifetimeSeconds} (0 turns that check off).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from .serverconfig import WatchdogConfig
from .logflood import PeerLogger

__all__ = ["Watchdog"]

WATCHDOG_CLOSE = 4010


class Watchdog(Service):
    """
    A service that checks every live connection on a timer.

    @param config: the C{server.watchdog} settings.
    @param connections: returns the connections to check; each has
        C{pingOutstanding}, C{lastActivity}, C{ping()} and C{close(code, reason)}.
    @param clock: the timer's clock.
    """

    #: a line per connection closed: held to one a second per kind
    log = PeerLogger()

    def __init__(self, config: WatchdogConfig, connections: Callable[[], Iterable[Any]], clock: IReactorTime) -> None:
        self._config = config
        self._connections = connections
        self._clock = clock
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self._config.pingIntervalSeconds, now=False).addErrback(
            lambda f: self.log.failure("watchdog stopped", f)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def tick(self) -> None:
        """
        One round: close the dangling and inactive connections, ping the rest.
        """
        now = self._clock.seconds()
        lifetime = self._config.connectionLifetimeSeconds
        for connection in list(self._connections()):
            if connection.pingOutstanding:
                self.log.info("closing dangling connection of user {uid}", uid=connection.userId)
                connection.close(WATCHDOG_CLOSE, "Dangling connection")
            elif lifetime and now - connection.lastActivity >= lifetime:
                self.log.info("closing inactive connection of user {uid}", uid=connection.userId)
                connection.close(WATCHDOG_CLOSE, "Inactive connection")
            else:
                connection.ping()
