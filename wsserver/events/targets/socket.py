# -*- test-case-name: tests.test_targets -*-
"""
The C{socket} event target (SPEC section 12): each event one line of
newline-delimited JSON on a kept stream connection to C{address}, a Twisted
client endpoint string (C{tcp:host:port} or C{unix:/path}).

Success is the line written to the connected stream; with C{ack: true} the
peer must answer a line holding the bare message id within
C{connectionTimeoutSeconds} (one timer for all the acks awaited).  While
not connected, sends fail at once with L{TargetUnreachable}; the connection
is made again with a backoff (L{ClientService}), one warning per outage.
When the peer reads slower than we write, writes wait for the transport
to drain (it pauses us as a producer): the buffer stays bounded.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attr
import orjson
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from .base import ISection, KeyDoc, NextTurn, TargetUnreachable

__all__ = ["KEYS", "SocketOptions", "SocketRefused", "SocketSender", "parse", "sender"]

#: the keys L{parse} reads (C{address} also names the C{redis} target's host)
KEYS = (
    KeyDoc("address", "string", "", "(required) where to connect: C{tcp:host:port} or C{unix:/path}"),
    KeyDoc("framing", "string", '"ndjson"', "C{\"ndjson\"}: one JSON message per line (the only framing)"),
    KeyDoc("ack", "boolean", "false", "wait for the peer to answer a line holding the bare message id (within "
           "C{connectionTimeoutSeconds}) before a delivery counts as done"),
)

#: sends that may wait for a paused transport to drain
MAX_WAITING = 10000


class SocketRefused(Exception):
    """
    The peer did not ack in time (the delivery spends a retry).
    """


@attr.s(frozen=True, auto_attribs=True)
class SocketOptions:
    """
    The keys of a C{socket} target.
    """

    address: str
    framing: str
    ack: bool
    destination: str


def parse(section: ISection) -> SocketOptions | None:
    """
    C{address} (C{tcp:host:port} or C{unix:/path}), C{framing} (only
    C{"ndjson"}), C{ack} (C{false}).
    """
    address = section.str("address", "")
    framing = section.str("framing", "ndjson")
    ack = section.bool("ack", False)
    if framing != "ndjson":
        section.error("framing", f'must be "ndjson", not {orjson.dumps(framing).decode()}')
    problem = addressProblem(address)
    if problem:
        section.error("address", problem)
        return None
    return SocketOptions(address=address, framing=framing, ack=ack, destination=address)


def addressProblem(address: str) -> str | None:
    """
    What is wrong with C{address} as a C{tcp:} or C{unix:} client endpoint
    string, or L{None}.
    """
    kind = address.split(":", 1)[0]
    if kind not in ("tcp", "unix"):
        return f"must be an endpoint string tcp:host:port or unix:/path, not {orjson.dumps(address).decode()}"
    try:
        clientFromString(None, address)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        return f"does not parse as an endpoint ({e or type(e).__name__})"
    parts = address.split(":")[1:]
    positional = [p for p in parts if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts if "=" in p)
    if kind == "tcp":
        host = keywords.get("host") or (positional[0] if positional else "")
        port = keywords.get("port") or (positional[1] if len(positional) > 1 else "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "must name a host and a port (tcp:host:port)"
    elif not (keywords.get("path") or (positional[0] if positional else "")):
        return "must name a path (unix:/path)"
    return None


class _LineFactory(Factory):
    """
    Makes the connections of one sender.
    """

    def __init__(self, owner: SocketSender) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _Line:
        protocol = _Line()
        protocol.owner = self.owner
        protocol.factory = self
        return protocol


class _Line(LineOnlyReceiver):
    """
    The connection: writes lines; the lines it reads are acks.
    """

    delimiter = b"\n"
    MAX_LENGTH = 4096
    owner: SocketSender

    def connectionMade(self) -> None:
        self.owner._connected(self)

    def lineReceived(self, line: bytes) -> None:
        self.owner._acked(line.strip())

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.owner._disconnected(self, reason)


@implementer(IPushProducer)
class SocketSender:
    """
    Writes event payloads, one line each, on a kept stream connection.

    @param name: the target's key (C{"targets[0]"}), for logs.
    @param options: the target's keys.
    @param timeout: seconds for an ack (and to connect).
    @param reactor: connects and runs the timers.
    """

    log = Logger()

    def __init__(self, name: str, options: SocketOptions, timeout: float, reactor: Any) -> None:
        self._name = name
        self._options = options
        self._timeout = timeout if timeout > 0 else 10
        self._reactor = reactor
        self._protocol: _Line | None = None
        self._later = NextTurn(reactor)
        self._paused = False
        self._waiting: deque[tuple[bytes, bytes, Deferred[None]]] = deque()
        #: acks awaited: id -> (deadline, Deferreds), oldest first
        self._acks: dict[bytes, tuple[float, list[Deferred[None]]]] = {}
        self._ackCall: IDelayedCall | None = None
        self._warned = False
        self._closed = False
        endpoint = clientFromString(reactor, options.address)
        self._service = ClientService(endpoint, _LineFactory(self), retryPolicy=backoffPolicy(0.5, 5.0),
                                      clock=reactor)
        self._service.startService()
        self._service.whenConnected(failAfterFailures=1).addErrback(self._failedToConnect)

    def __repr__(self) -> str:
        return f"<SocketSender {self._name} {self._options.address}>"

    # connection

    def _failedToConnect(self, failure: Failure) -> None:
        if not self._closed:
            self._warn(failure.getErrorMessage() or failure.type.__name__)

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            self.log.warn("event target {target} ({destination}) cannot be reached: {why}; its deliveries wait",
                          target=self._name, destination=self._options.address, why=" ".join(why.split()))

    def _connected(self, protocol: _Line) -> None:
        self._protocol = protocol
        self._paused = False
        protocol.transport.registerProducer(self, True)
        if self._warned:
            self._warned = False
            self.log.info("event target {target} ({destination}) is connected again",
                          target=self._name, destination=self._options.address)

    def _disconnected(self, protocol: _Line, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        waiting, self._waiting = self._waiting, deque()
        acks, self._acks = self._acks, {}
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None
        gone = TargetUnreachable(f"{self._name} lost its connection", 0.5)
        for _, _, d in waiting:
            d.errback(gone)
        for _, ds in acks.values():
            for d in ds:
                d.errback(gone)
        if not self._closed:
            self._warn(reason.getErrorMessage() if reason is not None else "closed")
            # ClientService connects again on its own (with its backoff)
            self._service.whenConnected(failAfterFailures=1).addErrback(self._failedToConnect)

    # IPushProducer: the transport says when its buffer is full

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._waiting and not self._paused and self._protocol is not None:
            line, messageId, d = self._waiting.popleft()
            self._write(line, messageId, d)

    def stopProducing(self) -> None:
        self._paused = True

    # sending

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Write one event as a line.

        @return: fires when written (or, with C{ack}, acked); fails with
            L{TargetUnreachable} while not connected, with L{SocketRefused}
            when no ack came in time.
        """
        if self._protocol is None or self._closed:
            return self._later.fail(TargetUnreachable(f"{self._name} is not connected", 1.0))
        if b"\n" in payload:
            # JSON has no raw newline; a payload with one was not made by us
            return fail(SocketRefused("the event holds a newline"))
        messageId = b""
        if self._options.ack:
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return fail(SocketRefused("the event is not JSON"))
            if not isinstance(obj, dict) or obj.get("id") in (None, ""):
                return fail(SocketRefused("the event has no id to ack"))
            messageId = str(obj["id"]).encode("utf-8")
        d: Deferred[None] = Deferred()
        if self._paused:
            if len(self._waiting) >= MAX_WAITING:
                return fail(TargetUnreachable(f"{self._name} is not reading", 1.0))
            self._waiting.append((payload, messageId, d))
            return d
        self._write(payload, messageId, d)
        return d

    def _write(self, payload: bytes, messageId: bytes, d: Deferred[None]) -> None:
        assert self._protocol is not None
        self._protocol.transport.writeSequence((payload, b"\n"))
        if not self._options.ack:
            d.callback(None)
            return
        deadline = self._reactor.seconds() + self._timeout
        entry = self._acks.get(messageId)
        if entry is None:
            self._acks[messageId] = (deadline, [d])
        else:
            entry[1].append(d)
        if self._ackCall is None:
            self._ackCall = self._reactor.callLater(self._timeout, self._expire)

    def _acked(self, line: bytes) -> None:
        entry = self._acks.pop(line, None)
        if entry is None:
            return
        for d in entry[1]:
            d.callback(None)

    def _expire(self) -> None:
        """
        Fail the acks whose time is up; wait for the next one.
        """
        self._ackCall = None
        now = self._reactor.seconds()
        while self._acks:
            messageId, (deadline, ds) = next(iter(self._acks.items()))
            if deadline > now:
                self._ackCall = self._reactor.callLater(deadline - now, self._expire)
                return
            del self._acks[messageId]
            for d in ds:
                d.errback(SocketRefused(f"no ack within {self._timeout:g} s"))

    def close(self) -> Deferred[None]:
        """
        Stop: close the connection; no more attempts.
        """
        self._closed = True
        self._later.flush()
        d = self._service.stopService()
        return d if d is not None else succeed(None)


def sender(name: str, options: SocketOptions, timeout: float, reactor: Any) -> SocketSender:
    """
    The sender of the C{socket} target C{name}.
    """
    return SocketSender(name, options, timeout, reactor)
