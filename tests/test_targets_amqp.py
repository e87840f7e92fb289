"""
The C{amqp} event target against a real RabbitMQ (L{tests.servers}):
persistent confirmed publishes with the message id, routing by type, a
wrong password, and the broker stopped mid-flow.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from wsserver.events.notifier import EventNotifier
from wsserver.events.targets.senders import makeSenders
from wsserver.events.store import MemoryEventStore
from wsserver.messages import Message
from wsserver.events.targets.base import TargetUnreachable
from wsserver.events.targets.amqp import AmqpRefused

from .servers import PASSWORD, RabbitMQServer, SharedServer
from .test_targets_sql import ThroughTheServer, WaitsWhileDown, event, eventConfig, targetLog, until


class AmqpTargetTests(ThroughTheServer, WaitsWhileDown, TestCase):
    """
    The C{amqp} target against RabbitMQ.
    """

    shared: SharedServer
    kind = "amqp"

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: Any = yield self.shared.get(self)
        self.queue = f"q_{self.id().rsplit('.', 1)[-1].lower()}"
        self.place = self.queue
        self._taken: dict[str, list[dict[str, Any]]] = {}

    def targetWith(self, place: str, **keys: Any) -> dict[str, Any]:
        return self.target(routingKey=place, declareQueue=place, **keys)

    def received(self, place: str) -> list[dict[str, Any]]:
        import orjson

        try:
            taken = self.take(place)
        except Exception:
            # not declared yet
            taken = []
        got = self._taken.setdefault(place, [])
        got += [orjson.loads(body) for _, body in taken]
        return got

    def target(self, **keys: Any) -> dict[str, Any]:
        return {"type": "amqp", "url": self.server.url(), "routingKey": self.queue, "declareQueue": self.queue,
                **keys}

    def sender(self, **keys: Any) -> Any:
        sender = makeSenders(eventConfig(self.target(**keys)), None, reactor)["targets[0]"]
        self.addCleanup(sender.close)
        return sender

    @inlineCallbacks
    def connected(self, sender: Any) -> Any:
        for _ in range(600):
            try:
                yield sender.send(event(0))
                return
            except TargetUnreachable:
                yield deferLater(reactor, 0.05, lambda: None)
        self.fail("never connected")

    def take(self, queue: str) -> list[tuple[Any, bytes]]:
        """
        Every message in C{queue}: (properties, body).
        """
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.server.url()))
        try:
            channel = connection.channel()
            out = []
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append((properties, body))
        finally:
            connection.close()

    @inlineCallbacks
    def test_confirmedPersistentPublish(self) -> Any:
        """
        Each event is a persistent C{application/json} message with its id,
        in the declared queue once the broker confirmed it.
        """
        sender = self.sender()
        yield self.connected(sender)
        yield gatherResults([sender.send(event(i)) for i in range(1, 21)])
        messages = self.take(self.queue)
        self.assertEqual(len(messages), 21)
        properties, body = messages[1]
        self.assertEqual((properties.delivery_mode, properties.content_type, properties.message_id),
                         (2, "application/json", "m1"))
        self.assertEqual(body, event(1))

    @inlineCallbacks
    def test_routingKeyByType(self) -> Any:
        """
        C{{type}} in C{routingKey} is the event's type; with an exchange,
        the declared queue is bound to it.
        """
        sender = self.sender(exchange="amq.topic", routingKey="ws.{type}")
        yield self.connected(sender)
        yield sender.send(event(1, type="alert"))
        bodies = [body for _, body in self.take(self.queue)]
        self.assertIn(event(1, type="alert"), bodies)

    @inlineCallbacks
    def test_missingExchangeRefused(self) -> Any:
        """
        A publish to an exchange that does not exist is refused (it spends
        a retry); the sender connects again by itself.
        """
        sender = self.sender(exchange="no.such.exchange", declareQueue="")
        for _ in range(600):
            try:
                yield sender.send(event(1))
            except AmqpRefused:
                break
            except TargetUnreachable:
                yield deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail("never refused")

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password: sends wait as unreachable, one warning names the
        target, no password in the log.
        """
        log = targetLog(self)
        wrong = "not-the-" + PASSWORD
        sender = self.sender(url=self.server.url(password=wrong))
        for _ in range(3):
            yield self.assertFailure(sender.send(event(1)), TargetUnreachable)
            yield deferLater(reactor, 0.7, lambda: None)
        warnings = [e for e in log if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(warnings[0]["target"], "targets[0]")
        text = repr(log)
        self.assertNotIn(wrong, text)
        self.assertNotIn(PASSWORD, text)

    @inlineCallbacks
    def test_brokerStoppedMidFlow(self) -> Any:
        """
        RabbitMQ stopped mid-flow and started again: every event reaches
        the durable queue (at least once), none failed, no retry spent.
        """
        config = eventConfig(self.target(), retryCount=0, maxParallelWorkers=32)
        notifier = EventNotifier(config, MemoryEventStore(), makeSenders(config, None, reactor), reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        counts = yield notifier.counts()
        self.assertNotIn(PASSWORD, repr(counts))

        def burst(start: int, n: int) -> None:
            for i in range(start, start + n):
                notifier.notify(Message(id=f"m{i}", type="chat", text="", timestamp="1", sender=1, recipients=[2],
                                        data=None), event(i))

        @inlineCallbacks
        def succeeded() -> Any:
            counts = yield notifier.counts()
            return counts[0]

        burst(0, 100)
        for _ in range(600):
            c = yield succeeded()
            if c["succeeded"] >= 100:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        burst(100, 100)
        yield self.server.stop()
        try:
            burst(200, 100)
            yield deferLater(reactor, 1.0, lambda: None)
        finally:
            yield self.server.start()
        burst(300, 100)
        for _ in range(1200):
            c = yield succeeded()
            if c["succeeded"] + c["failed"] >= 400:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((c["succeeded"], c["failed"], c["pending"] + c["retrying"]), (400, 0, 0))
        ids = {orjson_id(body) for _, body in self.take(self.queue)}
        self.assertEqual(ids, {f"m{i}" for i in range(400)})
        yield until(lambda: True)


def orjson_id(body: bytes) -> str:
    import orjson

    return str(orjson.loads(body)["id"])


AmqpTargetTests.shared = SharedServer.of(AmqpTargetTests, RabbitMQServer)
