# -*- test-case-name: tests.test_end_to_end -*-
"""
Services that listen on an endpoint string, log where, and shut down in order.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorCore, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogPublisher

from .logflood import guardPublisher, loggingBegun

__all__ = ["ListeningService", "LogGuardService", "StartError", "cannotListen"]


class StartError(Exception):
    """
    The server cannot start: a port in use, a certificate that cannot be
    read.  Its message is one line that names the key or option and the
    cause; C{twistd wsserver} prints it instead of a traceback and exits 1.
    """


def cannotListen(key: str, error: Exception) -> StartError:
    """
    The L{StartError} for a failure to listen, in plain words:
    C{server.listen: cannot listen on 127.0.0.1:8085: address already in use}.

    @param key: the key or option that gave the address (C{--ws}).
    """
    if isinstance(error, CannotListenError):
        where = f"{error.interface}:{error.port}" if error.interface else f"port {error.port}"
        cause = getattr(error.socketError, "strerror", None) or str(error.socketError)
        return StartError(f"{key}: cannot listen on {where}: {cause.lower()}")
    cause = getattr(error, "strerror", None) or str(error)
    return StartError(f"{key}: cannot listen: {cause[:1].lower()}{cause[1:]}")


class ListeningService(StreamServerEndpointService):
    """
    Listens on C{endpoint} with C{factory}; a failure to listen stops the
    start (twistd exits with the error).  At stop it first stops listening,
    then runs C{onStop} (closing the clients) and waits for it.

    @param what: a name for the logs (C{"WebSocket"}, C{"REST API"}).
    @param holdUntil: when given, the port listens at once but accepts no
        connection until the L{Deferred} this returns fires: connections
        wait in the kernel's backlog meanwhile (a cluster node joining).
    @param key: the key or option that gave the address, to name it when
        listening fails (C{server.listen}, C{--ws}).
    """

    log = Logger()

    def __init__(
        self,
        what: str,
        endpoint: IStreamServerEndpoint,
        factory: Factory,
        onStop: Callable[[], Deferred[None]] | None = None,
        holdUntil: Callable[[], Deferred[None]] | None = None,
        key: str = "listen",
    ) -> None:
        super().__init__(endpoint, factory)
        self.key = key
        self._raiseSynchronously = True
        self.what = what
        self.port: IListeningPort | None = None
        self._onStop = onStop
        self._holdUntil = holdUntil
        self._waiters: list[Deferred[IListeningPort]] = []

    def privilegedStartService(self) -> None:
        """
        Listen now (before twistd sheds privileges).

        @raise StartError: when listening fails (a port in use, or one that
            needs privileges).
        """
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError) as e:
            raise cannotListen(self.key, e) from e
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        if self._holdUntil is not None:
            pause = getattr(port, "stopReading", None)
            if pause is not None:
                pause()
                self._holdUntil().addCallback(lambda _: self.running and port.fileno() != -1 and port.startReading())
        address = port.getHost()
        self.log.info(
            "{what} listening on {host}:{port}",
            what=self.what,
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)
        return port

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        Fires with the listening port once listening.
        """
        if self.port is not None:
            return succeed(self.port)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> Deferred[Any]:
        d = super().stopService()
        if self._onStop is not None:
            d.addCallback(lambda _: self._onStop())  # type: ignore[misc]
        return d


class LogGuardService(Service):
    """
    While running, the observers of C{publisher} sit behind one
    L{wsserver.logflood.FloodGuard}: a line that a remote peer can cause
    passes at most once a second per kind.

    twistd starts services after logging has begun, but C{twist} starts them
    before, while the global publisher still feeds the log beginner's buffer
    of early events; moved behind the guard, that buffer went on receiving
    events while it was replayed (C{twist wsserver} died with "deque mutated
    during iteration"), and the observers logging then begins with would
    not be behind the guard.  So until logging has begun the guard waits
    for the reactor to run (C{twist} begins logging just before).
    """

    def __init__(self, publisher: LogPublisher, reactor: IReactorCore) -> None:
        """
        @param reactor: its clock times the guard; it runs the guard once it
            runs when logging has not begun yet.
        """
        self._publisher = publisher
        self._reactor = reactor
        self._undo: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        if loggingBegun(self._publisher):
            self._guard()
        else:
            self._reactor.callWhenRunning(self._guard)

    def _guard(self) -> None:
        # (a service stopped before the reactor ran guards nothing)
        if self.running and self._undo is None:
            self._undo = guardPublisher(self._publisher, self._reactor)  # type: ignore[arg-type]

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
        return None
