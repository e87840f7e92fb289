# -*- test-case-name: tests.test_targets_amqp -*-
"""
The C{amqp} event target (SPEC section 12): each event published to
C{exchange} with C{routingKey} (C{{type}} replaced by the event's type),
persistent, C{application/json}, its C{message_id} the event's id, on one
channel of one kept connection (pika's C{TwistedProtocolConnection}) in
publisher-confirms mode: a delivery succeeds when the broker confirmed it.

While the broker cannot be reached (down, or refusing our credentials)
sends fail at once with L{TargetUnreachable} and the connection is made
again with a backoff, one warning logged per outage.  A nack, or a publish
the broker returned or whose channel it closed, is a refusal.
"""

from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import SplitResult, unquote

import attr
import orjson
from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import IBatchSender

from .base import Backoff, ISection, KeyDoc, NextTurn, TargetUnreachable, parseURL, redacted

__all__ = ["KEYS", "AmqpOptions", "AmqpRefused", "AmqpSender", "parse", "sender"]

#: the keys L{parse} reads
KEYS = (
    KeyDoc("url", "string", "", "(required) the broker: C{amqp://user:password@host:5672/vhost} (C{%2F} or no "
           "path: the vhost C{/}); the password is shown as C{***}"),
    KeyDoc("exchange", "string", '""', "the exchange published to; C{\"\"}: the default exchange, which routes "
           "by queue name"),
    KeyDoc("routingKey", "string", '"wsserver.events"', "the routing key; C{{type}} is replaced by the message type"),
    KeyDoc("declareQueue", "string", '""', "a queue declared durable at start (bound to C{exchange} with "
           "C{routingKey} when C{exchange} is not C{\"\"}); C{\"\"}: none"),
    KeyDoc("batchSize", "integer", "500", "at most this many publishes in one confirm window (1 to 10,000): "
           "what one of C{maxParallelWorkers} sends at once"),
)


class AmqpRefused(Exception):
    """
    The broker did not take a publish (the delivery spends a retry).
    """


@attr.s(frozen=True, auto_attribs=True)
class AmqpOptions:
    """
    The keys of an C{amqp} target.
    """

    host: str
    port: int
    user: str
    password: str = attr.ib(repr=False)
    vhost: str
    exchange: str
    routingKey: str
    declareQueue: str
    destination: str
    batchSize: int = 500


def parse(section: ISection) -> AmqpOptions | None:
    """
    C{url} (C{amqp://user:pass@host:5672/vhost}), C{exchange} (C{""}),
    C{routingKey} (C{wsserver.events}), C{declareQueue} (C{""}: none).
    """
    url: SplitResult | None = parseURL(section, "url", ("amqp",), 5672)
    exchange = section.str("exchange", "")
    routingKey = section.str("routingKey", "wsserver.events")
    declareQueue = section.str("declareQueue", "")
    batchSize = section.int("batchSize", 500, 1, 10000)
    for name, value in (("exchange", exchange), ("routingKey", routingKey), ("declareQueue", declareQueue)):
        if len(value.encode("utf-8")) > 255:
            section.error(name, "must be at most 255 bytes")
    if url is None:
        return None
    path = url.path[1:] if url.path.startswith("/") else url.path
    vhost = unquote(path) if path else "/"
    where = f"{redacted(url)} exchange {exchange or '(default)'} key {routingKey}"
    return AmqpOptions(
        host=url.hostname or "", port=url.port or 5672, user=unquote(url.username or "guest"),
        password=unquote(url.password or "guest"), vhost=vhost, exchange=exchange, routingKey=routingKey,
        declareQueue=declareQueue, destination=where, batchSize=batchSize,
    )


@implementer(IBatchSender)
class AmqpSender:
    """
    Publishes event payloads to a broker with publisher confirms.

    @param name: the target's key (C{"targets[0]"}), for logs.
    @param options: the target's keys.
    @param timeout: seconds to connect (C{connectionTimeoutSeconds}).
    @param reactor: connects and runs the timers.
    """

    log = Logger()

    def __init__(self, name: str, options: AmqpOptions, timeout: float, reactor: Any) -> None:
        import pika

        self._pika = pika
        self._name = name
        self._options = options
        self._timeout = timeout if timeout > 0 else 30
        self._reactor = reactor
        self._backoff = Backoff()
        self._later = NextTurn(reactor)
        self._params = pika.ConnectionParameters(
            virtual_host=options.vhost, credentials=pika.PlainCredentials(options.user, options.password),
            heartbeat=30, blocked_connection_timeout=self._timeout)
        self._connection: Any = None
        self._channel: Any = None
        self._perType = "{type}" in options.routingKey
        self._properties = pika.BasicProperties
        self._retryCall: IDelayedCall | None = None
        self._nextTry = 0.0
        self._connecting = False
        self._warned = False
        self._closed = False
        self._connect()

    def __repr__(self) -> str:
        return f"<AmqpSender {self._name} {self._options.destination}>"

    @property
    def batchSize(self) -> int:
        """
        The publishes the notifier hands over at once (one confirm window).
        """
        return self._options.batchSize

    # connection

    def _connect(self) -> None:
        if self._closed or self._connecting:
            return
        self._connecting = True
        self._retryCall = None
        self._open().addCallbacks(self._up, self._down)

    @inlineCallbacks
    def _open(self) -> Any:
        from pika.adapters.twisted_connection import TwistedProtocolConnection

        options = self._options
        endpoint = TCP4ClientEndpoint(self._reactor, options.host, options.port, timeout=self._timeout)
        protocol = TwistedProtocolConnection(self._params, custom_reactor=self._reactor)
        connection = yield connectProtocol(endpoint, protocol)
        self._connection = connection
        timer = self._reactor.callLater(self._timeout, connection.transport.loseConnection)
        try:
            yield connection.ready
            channel = yield connection.channel()
            yield channel.confirm_delivery()
            if options.declareQueue:
                yield channel.queue_declare(queue=options.declareQueue, durable=True)
                if options.exchange:
                    yield channel.queue_bind(queue=options.declareQueue, exchange=options.exchange,
                                             routing_key=options.routingKey.replace("{type}", "#"))
        except BaseException:
            connection.transport.loseConnection()
            raise
        finally:
            if timer.active():
                timer.cancel()
        return connection, channel

    def _up(self, opened: tuple[Any, Any]) -> None:
        connection, channel = opened
        self._connecting = False
        if self._closed:
            connection.close()
            return
        self._channel = channel
        self._backoff.reset()
        connection.closed.addBoth(lambda reason: self._lost(connection, reason))
        channel.on_closed.addBoth(lambda reason: self._channelClosed(connection, channel, reason))
        if self._warned:
            self._warned = False
            self.log.info("event target {target} ({destination}) is connected again",
                          target=self._name, destination=self._options.destination)

    def _down(self, failure: Failure) -> None:
        self._connecting = False
        self._connection = None
        if not self._closed:
            self._unreachable(_why(failure))

    def _channelClosed(self, connection: Any, channel: Any, reason: Any) -> None:
        # the broker closed the channel (a publish to a missing exchange):
        # start again with a fresh connection
        if self._channel is channel:
            self._channel = None
            if connection.is_open:
                connection.close()

    def _lost(self, connection: Any, reason: Any) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._channel = None
        if not self._closed:
            self._unreachable(_why(reason))

    def _unreachable(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            self.log.warn("event target {target} ({destination}) cannot be reached: {why}; its deliveries wait",
                          target=self._name, destination=self._options.destination, why=why)
        if self._retryCall is None and not self._connecting:
            delay = self._backoff.next()
            self._nextTry = self._reactor.seconds() + delay
            self._retryCall = self._reactor.callLater(delay, self._connect)

    # sending

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Publish one event.

        @return: fires when the broker confirmed it; fails with
            L{TargetUnreachable} while not connected (or when the
            connection went before the confirm), with L{AmqpRefused} when
            the broker refused it.
        """
        channel = self._channel
        if channel is None or self._closed:
            wait = max(0.5, self._nextTry - self._reactor.seconds() + 0.1)
            return self._later.fail(TargetUnreachable(f"{self._name} is not connected", wait))
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return fail(AmqpRefused("the event is not JSON"))
        messageId = obj.get("id") if isinstance(obj, dict) else None
        key = self._options.routingKey
        if self._perType:
            kind = obj.get("type") if isinstance(obj, dict) else None
            key = key.replace("{type}", str(kind) if kind is not None else "")
        properties = self._properties(content_type="application/json", delivery_mode=2,
                                      message_id=None if messageId is None else str(messageId))
        d = channel.basic_publish(self._options.exchange, key, payload, properties)
        return d.addCallbacks(lambda _: None, self._failed)

    def sendBatch(self, payloads: Sequence[bytes]) -> Deferred[list[BaseException | None]]:
        """
        Publish C{payloads} in one confirm window and answer once, when the
        broker confirmed (or refused) every one of them.

        @return: fires with an outcome per payload (L{None}: confirmed; an
            L{AmqpRefused}, or a L{TargetUnreachable} for a publish whose
            connection went before its confirm); fails with
            L{TargetUnreachable} while not connected.
        """
        if self._channel is None or self._closed:
            wait = max(0.5, self._nextTry - self._reactor.seconds() + 0.1)
            return self._later.fail(TargetUnreachable(f"{self._name} is not connected", wait))
        publishes = DeferredList([self.send(payload) for payload in payloads], consumeErrors=True)
        return publishes.addCallback(lambda results: [None if ok else value.value for ok, value in results])

    def _failed(self, failure: Failure) -> None:
        pika = self._pika
        if failure.check(pika.exceptions.NackError, pika.exceptions.UnroutableError):
            raise AmqpRefused(f"the broker did not take it ({failure.type.__name__})")
        if failure.check(pika.exceptions.ChannelClosedByBroker):
            raise AmqpRefused(f"the broker closed the channel: {_why(failure)}")
        raise TargetUnreachable(f"{self._name} lost its connection before the confirm", 0.5)

    def close(self) -> Deferred[None]:
        """
        Stop: close the connection; no more attempts.
        """
        self._closed = True
        self._later.flush()
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None or not connection.is_open:
            if connection is not None:
                connection.transport.loseConnection()
            return succeed(None)
        closed = connection.closed
        connection.close()
        if closed is None:
            return succeed(None)
        return closed.addBoth(lambda _: None)


def _why(reason: Any) -> str:
    """
    Why a connection failed or went, in one line (pika's errors do not hold
    the password).
    """
    if isinstance(reason, Failure):
        reason = reason.value
    text = str(reason) if reason is not None else ""
    name = type(reason).__name__ if reason is not None else "closed"
    return " ".join(f"{name}: {text}".split()) if text else name


def sender(name: str, options: AmqpOptions, timeout: float, reactor: Any) -> AmqpSender:
    """
    The sender of the C{amqp} target C{name}.
    """
    return AmqpSender(name, options, timeout, reactor)
