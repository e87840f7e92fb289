# -*- test-case-name: tests.test_redistarget -*-
"""
The C{redis} event target (SPEC section 6): each event payload is pushed with
C{RPUSH} onto the list C{mode.name} (C{mode.type} C{"queue"}) or sent with
C{PUBLISH} to the channel C{mode.name} (C{"channel"}).

How the connection behaves:

  - One connection, opened when the sender is made, over TCP to
    C{address}:C{port} or over the C{unixSocket}.  C{AUTH password} and
    C{SELECT database} are sent on every new connection, before any event.
  - There is no reconnect timer.  A send that finds no usable connection
    starts a connection attempt at once (sends arriving meanwhile share it)
    and waits for its outcome.  So while Redis is down every send fails fast
    (a refused connection, a wrong password), and the first send after it is
    back reconnects and succeeds.  The event notifier retries failed sends
    on its own schedule, which paces the attempts too.
  - Every send is bounded by C{connectionTimeoutSeconds}, connecting
    included; a connection whose reply is overdue is dropped, since nothing
    can be sent on it after a lost reply.  A non-positive value means no
    limit.
  - Logs: one warning when Redis becomes unusable, one line when it is
    usable again, no traceback per failed attempt.

Payloads are sent as the bytes given, unchanged.

C{txredisapi} (its protocol only: the wire format) is imported late, because
importing it installs the global reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, gatherResults, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import TargetConfig

__all__ = ["RedisLink", "RedisSender", "RedisSenderClosed"]

#: the endpoint's connect timeout when C{connectionTimeoutSeconds} sets no limit
_DEFAULT_CONNECT_TIMEOUT = 30


class RedisSenderClosed(ConnectionClosed):
    """
    The sender was closed: nothing more is sent.
    """


class _OneConnection(Factory):
    """
    Builds the one protocol given, quietly: connection attempts are not logged.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> Protocol:
        self._protocol.factory = self
        return self._protocol


class RedisLink:
    """
    One Redis connection that commands are sent on, reconnected on demand
    (see the module docstring): the event target's, and the cluster's.

    @param address: host of Redis (ignored with C{unixSocket}).
    @param port: its port.
    @param unixSocket: a UNIX socket path, or C{""}.
    @param database: the database to C{SELECT} (0: none).
    @param password: the password to C{AUTH} with, or C{""}.
    @param timeout: seconds each command may take, connecting included
        (non-positive: no limit).
    @param reactor: provides C{IReactorTCP}, C{IReactorUNIX} and
        C{IReactorTime}: connections and timeouts run on it.
    @param name: what the logs call it.
    @param charset: how replies are decoded (L{None}: bytes as they are).
    """

    log = Logger()

    def __init__(
        self,
        address: str,
        port: int,
        unixSocket: str,
        database: int,
        password: str,
        timeout: float,
        reactor: Any,
        name: str = "Redis",
        charset: str | None = "utf-8",
    ) -> None:
        self._charset = charset
        self._address = address
        self._port = port
        self._unixSocket = unixSocket
        self._database = database
        self._password = password
        self._reactor = reactor
        self._name = name
        self._timeout: float | None = timeout if timeout > 0 else None
        self._where = f"unix:{unixSocket}" if unixSocket else f"{address}:{port}"
        self._endpoint = self._makeEndpoint()
        #: the connection that commands go to, once AUTH and SELECT are done
        self._protocol: Any = None
        #: the connection attempt in progress
        self._attempt: Deferred[Any] | None = None
        #: commands waiting for the attempt in progress
        self._waiters: list[Deferred[Any]] = []
        #: every connection not yet closed, ready or not
        self._live: set[Any] = set()
        self._down = False
        self._closed = False
        self._connect()

    def __repr__(self) -> str:
        return f"<RedisLink {self._name} at {self._where}>"

    def _makeEndpoint(self) -> IStreamClientEndpoint:
        timeout = self._timeout or _DEFAULT_CONNECT_TIMEOUT
        if self._unixSocket:
            return UNIXClientEndpoint(self._reactor, self._unixSocket, timeout=timeout)
        if isIPAddress(self._address):
            return TCP4ClientEndpoint(self._reactor, self._address, self._port, timeout=timeout)
        if isIPv6Address(self._address):
            return TCP6ClientEndpoint(self._reactor, self._address, self._port, timeout=timeout)
        return HostnameEndpoint(self._reactor, self._address, self._port, timeout=timeout)

    def execute(self, *args: bytes) -> Deferred[Any]:
        """
        Run one command.

        @return: its reply; fails when Redis cannot be reached, is refused
            (wrong password, unknown database), answers an error, or does
            not answer within the timeout; fails with L{RedisSenderClosed}
            after L{close}.
        """
        if self._closed:
            return fail(RedisSenderClosed(f"{self!r} is closed"))
        d = self._connection()
        d.addCallback(lambda protocol: self._execute(protocol, *args))
        if self._timeout is not None:
            d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=self._timedOut)
        return d

    def close(self) -> Deferred[None]:
        """
        Stop: cancel the connection attempt in progress, close every
        connection; sends still waiting fail.

        @return: fires when every connection is closed.
        """
        self._closed = True
        if self._attempt is not None:
            self._attempt.cancel()
        waits = []
        for protocol in list(self._live):
            waits.append(protocol.whenDisconnected())
            protocol.transport.abortConnection()
        return gatherResults(waits).addCallback(lambda _: None)

    def _connection(self) -> Deferred[Any]:
        """
        The connection to send on: the ready one, or the outcome of an
        attempt (started now unless one is in progress).
        """
        if self._protocol is not None and self._protocol.connected:
            return succeed(self._protocol)
        waiter: Deferred[Any] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        if self._attempt is None:
            self._connect()
        return waiter

    def _connect(self) -> None:
        """
        Start a connection attempt: connect, then C{AUTH} and C{SELECT}.
        """
        from txredisapi import RedisProtocol

        # no password or dbid for txredisapi: a failed AUTH there stops the
        # factory it expects for good; done in _prepare instead
        protocol = RedisProtocol(charset=self._charset, convertNumbers=False)
        protocol.callLater = self._reactor.callLater
        attempt: Deferred[Any] = self._endpoint.connect(_OneConnection(protocol))
        attempt.addCallback(self._prepare)
        if self._timeout is not None:
            attempt.addTimeout(self._timeout, self._reactor, onTimeoutCancel=self._timedOut)
        self._attempt = attempt
        attempt.addBoth(self._attemptDone)

    def _prepare(self, protocol: Any) -> Deferred[Any]:
        """
        Authenticate and select the database on a new connection; drop it
        if either fails.
        """
        self._live.add(protocol)
        protocol.whenDisconnected().addCallback(self._lost)
        d: Deferred[Any] = succeed(None)
        if self._password:
            d.addCallback(lambda _: self._execute(protocol, b"AUTH", self._password.encode("utf-8")))
        if self._database:
            d.addCallback(lambda _: self._execute(protocol, b"SELECT", b"%d" % self._database))

        def rejected(reason: Failure) -> Failure:
            protocol.transport.abortConnection()
            return reason

        return d.addCallbacks(lambda _: protocol, rejected)

    def _attemptDone(self, result: Any) -> None:
        """
        Hand the outcome of a connection attempt to the sends waiting for it.
        """
        self._attempt = None
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            if self._closed:
                result = Failure(RedisSenderClosed(f"{self!r} is closed"))
            elif not self._down:
                self._down = True
                self.log.warn(
                    "{name} {where} is unusable ({why}); what needs it fails until it is back",
                    name=self._name,
                    where=self._where,
                    why=result.getErrorMessage() or result.type.__name__,
                )
            for waiter in waiters:
                waiter.errback(result)
            return None
        if self._closed:
            result.transport.abortConnection()
            for waiter in waiters:
                waiter.errback(RedisSenderClosed(f"{self!r} is closed"))
            return None
        self._protocol = result
        if self._down:
            self._down = False
            self.log.info("{name} {where} is usable again", name=self._name, where=self._where)
        for waiter in waiters:
            waiter.callback(result)
        return None

    def _lost(self, protocol: Any) -> None:
        self._live.discard(protocol)
        if protocol is self._protocol:
            self._protocol = None
            if not self._closed:
                self.log.info("Connection to {name} {where} lost; reconnecting on the next command",
                              name=self._name, where=self._where)

    def _execute(self, protocol: Any, *args: bytes) -> Deferred[Any]:
        """
        Run one command on C{protocol}.

        @return: its reply; cancelling it drops the connection, whose reply
            stream is out of step from then on.
        """

        def abort(_: Deferred[Any]) -> None:
            protocol.transport.abortConnection()

        result: Deferred[Any] = Deferred(abort)
        try:
            reply = protocol.execute_command(*args)
        except Exception:  # txredisapi raises ConnectionError when the connection is gone
            return fail()

        def deliver(value: Any) -> None:
            if result.called:  # cancelled: the reply (or lost connection) comes too late
                return
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)

        reply.addBoth(deliver)
        return result

    def _timedOut(self, result: Any, timeout: float) -> Any:
        if isinstance(result, Failure) and result.check(CancelledError):
            raise TimeoutError(f"no answer from {self._name} {self._where} within {timeout:g} seconds")
        return result


class RedisSender:
    """
    Sends event payloads to Redis: C{RPUSH} to the list C{modeName} (mode
    C{queue}) or C{PUBLISH} to the channel C{modeName} (mode C{channel}).

    @param target: a target of type C{redis}.
    @param reactor: provides C{IReactorTCP}, C{IReactorUNIX} and
        C{IReactorTime}: connections and timeouts run on it.
    """

    def __init__(self, target: TargetConfig, reactor: Any) -> None:
        if target.type != "redis":
            raise ValueError(f"not a redis target: {target.type!r}")
        if target.modeType not in ("queue", "channel"):
            raise ValueError(f'mode.type must be "queue" or "channel", not {target.modeType!r}')
        self._target = target
        self._command = b"RPUSH" if target.modeType == "queue" else b"PUBLISH"
        self._key = target.modeName.encode("utf-8")
        self._link = RedisLink(
            target.address, target.port, target.unixSocket, target.database, target.password,
            target.connectionTimeoutSeconds, reactor, name="Redis event target",
        )

    def __repr__(self) -> str:
        return f"<RedisSender {self._command.decode()} {self._target.modeName} at {self._link._where}>"

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Send one event payload.

        @param payload: the event's JSON, sent byte for byte.
        @return: fires with L{None} when Redis has accepted it (the reply to
            C{RPUSH} or C{PUBLISH}); fails as L{RedisLink.execute} does.
        """
        if not isinstance(payload, bytes):
            return fail(TypeError(f"payload must be bytes, not {type(payload).__name__}"))
        return self._link.execute(self._command, self._key, payload).addCallback(lambda reply: None)

    def close(self) -> Deferred[None]:
        """
        Stop: close the connection; sends still waiting fail.
        """
        return self._link.close()
