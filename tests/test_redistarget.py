"""
Tests for L{wsserver.events.targets.redis}, against a real redis-server
(L{tests.redis.RedisServer}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from wsserver.config import TargetConfig, parseConfig
from wsserver.events.targets.redis import RedisSender, RedisSenderClosed

from .redis import RedisServer

#: JSON with non-ASCII text: it must reach Redis byte for byte
UNICODE_EVENT = '{"type":"text","sender":1,"recipient":2,"text":"h\u00e9llo \u2014 \u65e5\u672c\u8a9e \U0001f389"}'.encode(
    "utf-8"
)


def redisTarget(server: RedisServer, **fields: Any) -> TargetConfig:
    """
    The target config that reaches C{server}, parsed from the JSON layout
    with C{fields} added (C{mode}, C{database}, C{password} ...).
    """
    raw = server.targetFields()
    raw.update(fields)
    return parseConfig({"event": {"targets": [raw]}}, checkEndpoints=False).event.targets[0]


class SilentServer(Protocol):
    """
    Accepts a connection and never answers: a hung Redis.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class RedisSenderTests(TestCase):
    """
    Tests for L{RedisSender}.
    """

    timeout = 60

    def sender(self, target: TargetConfig) -> RedisSender:
        """
        A sender for C{target}, closed at cleanup.
        """
        sender = RedisSender(target, reactor)
        self.addCleanup(sender.close)
        return sender

    def warnings(self) -> list[dict[str, Any]]:
        """
        The events that L{RedisSender} logs from now on, until cleanup.
        """
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith(("wsserver.events.targets.redis", "wsserver.redis.")):
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    @inlineCallbacks
    def startedServer(self, **kwargs: Any) -> Any:
        """
        A started L{RedisServer}.
        """
        server = RedisServer(self, **kwargs)
        yield server.start()
        return server

    @inlineCallbacks
    def test_queueAppendsInOrder(self) -> Any:
        """
        In mode C{queue} (the default), each payload is appended with
        C{RPUSH} to the list C{wsserver_events_queue}, in the order sent and
        byte for byte, non-ASCII UTF-8 included.
        """
        server = yield self.startedServer()
        target = redisTarget(server)
        self.assertEqual((target.modeType, target.modeName), ("queue", "wsserver_events_queue"))
        sender = self.sender(target)
        payloads = [b'{"n":1}', UNICODE_EVENT, b'{"n":3,"text":"\\"quoted\\" \\u00e9"}']
        for payload in payloads:
            result = yield sender.send(payload)
            self.assertIsNone(result)
        stored = yield server.command("LRANGE", "wsserver_events_queue", 0, -1)
        self.assertEqual(stored, payloads)
        self.assertEqual(stored[1].decode("utf-8"), UNICODE_EVENT.decode("utf-8"))

    @inlineCallbacks
    def test_concurrentSendsKeepOrder(self) -> Any:
        """
        Sends made at once, before the connection is ready, all succeed and
        reach the list in the order they were made.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server))
        payloads = [b'{"n":%d}' % i for i in range(50)]
        yield gatherResults([sender.send(p) for p in payloads])
        stored = yield server.command("LRANGE", "wsserver_events_queue", 0, -1)
        self.assertEqual(stored, payloads)

    @inlineCallbacks
    def test_queueName(self) -> Any:
        """
        C{mode.name} names the list.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, mode={"type": "queue", "name": "events:\u00e9"}))
        yield sender.send(b"{}")
        self.assertEqual((yield server.command("LRANGE", "events:\u00e9", 0, -1)), [b"{}"])
        self.assertEqual((yield server.command("EXISTS", "wsserver_events_queue")), 0)

    @inlineCallbacks
    def test_channelPublishes(self) -> Any:
        """
        In mode C{channel}, each payload is published with C{PUBLISH} to the
        channel C{wsserver_events_channel} (the default name), byte for
        byte; nothing is stored.
        """
        server = yield self.startedServer()
        target = redisTarget(server, mode={"type": "channel"})
        self.assertEqual(target.modeName, "wsserver_events_channel")
        subscription = yield server.subscribe("wsserver_events_channel")
        sender = self.sender(target)
        yield sender.send(UNICODE_EVENT)
        yield sender.send(b'{"n":2}')
        first = yield subscription.messages.get()
        second = yield subscription.messages.get()
        self.assertEqual(first, (b"wsserver_events_channel", UNICODE_EVENT))
        self.assertEqual(second, (b"wsserver_events_channel", b'{"n":2}'))
        self.assertEqual((yield server.command("KEYS", "*")), [])

    @inlineCallbacks
    def test_channelWithoutSubscribers(self) -> Any:
        """
        Publishing to a channel nobody listens to succeeds: Redis accepted it.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, mode={"type": "channel", "name": "nobody"}))
        result = yield sender.send(b"{}")
        self.assertIsNone(result)

    @inlineCallbacks
    def test_database(self) -> Any:
        """
        C{database} is selected on the connection: the list is in that
        database, not in database 0.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, database=3))
        yield sender.send(b'{"db":3}')
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1, database=3)), [b'{"db":3}'])
        self.assertEqual((yield server.command("EXISTS", "wsserver_events_queue")), 0)

    @inlineCallbacks
    def test_databaseAfterReconnect(self) -> Any:
        """
        C{database} is selected again on every new connection.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, database=5))
        yield sender.send(b"1")
        yield server.stop()
        yield server.start()
        yield sender.send(b"2")
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1, database=5)), [b"2"])
        self.assertEqual((yield server.command("DBSIZE")), 0)

    @inlineCallbacks
    def test_unknownDatabase(self) -> Any:
        """
        A database that Redis does not have makes sends fail.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, database=99))
        failure = yield self.assertFailure(sender.send(b"{}"), Exception)
        self.assertIn("DB index is out of range", str(failure))

    @inlineCallbacks
    def test_password(self) -> Any:
        """
        With the right C{password}, sends succeed.
        """
        server = yield self.startedServer(password="s3cr\u00e9t")
        sender = self.sender(redisTarget(server))
        yield sender.send(b'{"auth":true}')
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [b'{"auth":true}'])

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        With a wrong C{password}, sends fail with Redis's answer, and keep
        failing (each one tries anew).
        """
        server = yield self.startedServer(password="right")
        sender = self.sender(redisTarget(server, password="wrong"))
        from txredisapi import ResponseError

        for _ in range(2):
            failure = yield self.assertFailure(sender.send(b"{}"), ResponseError)
            self.assertIn("WRONGPASS", str(failure))

    @inlineCallbacks
    def test_missingPassword(self) -> Any:
        """
        Without a C{password} for a Redis that requires one, sends fail.
        """
        server = yield self.startedServer(password="right")
        target = redisTarget(server, password="")
        sender = self.sender(target)
        from txredisapi import ResponseError

        failure = yield self.assertFailure(sender.send(b"{}"), ResponseError)
        self.assertIn("NOAUTH", str(failure))

    @inlineCallbacks
    def test_unixSocket(self) -> Any:
        """
        With C{unixSocket}, the sender connects over that socket.
        """
        server = yield self.startedServer(unixSocket=True)
        target = redisTarget(server, address="192.0.2.1", port=1)
        self.assertEqual(target.unixSocket, server.unixSocket)
        sender = self.sender(target)
        yield sender.send(UNICODE_EVENT)
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [UNICODE_EVENT])

    @inlineCallbacks
    def test_hostname(self) -> Any:
        """
        An C{address} that is a host name is resolved.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, address="localhost"))
        yield sender.send(b"{}")
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [b"{}"])

    @inlineCallbacks
    def test_errorReply(self) -> Any:
        """
        An error reply (here C{WRONGTYPE}) fails that send; the connection
        stays usable.
        """
        server = yield self.startedServer()
        yield server.command("SET", "wsserver_events_queue", "a string")
        sender = self.sender(redisTarget(server))
        from txredisapi import ResponseError

        failure = yield self.assertFailure(sender.send(b"{}"), ResponseError)
        self.assertIn("WRONGTYPE", str(failure))
        yield server.command("DEL", "wsserver_events_queue")
        yield sender.send(b"{}")
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [b"{}"])

    @inlineCallbacks
    def test_downAtStart(self) -> Any:
        """
        While Redis is down, sends fail at once (well within
        C{connectionTimeoutSeconds}); once it is up, a later send succeeds.
        """
        server = RedisServer(self)
        sender = self.sender(redisTarget(server, connectionTimeoutSeconds=20))
        started = reactor.seconds()
        yield self.assertFailure(sender.send(b"lost"), ConnectionRefusedError)
        yield self.assertFailure(sender.send(b"lost again"), ConnectionRefusedError)
        self.assertLess(reactor.seconds() - started, 10)
        yield server.start()
        yield sender.send(b"sent")
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [b"sent"])

    @inlineCallbacks
    def test_downMidRun(self) -> Any:
        """
        When Redis goes away, sends fail; when it is back on the same port,
        the sender reconnects and sends succeed again.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server))
        yield sender.send(b"before")
        yield server.stop()
        yield self.assertFailure(sender.send(b"during"), Exception)
        yield self.assertFailure(sender.send(b"during again"), ConnectionRefusedError)
        yield server.start()
        yield sender.send(b"after")
        # no persistence: the restarted server holds only what came after
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1)), [b"after"])

    @inlineCallbacks
    def test_killedMidRun(self) -> Any:
        """
        A Redis killed without a word (SIGKILL), then restarted on the same
        port, is handled as one that stopped.
        """
        server = yield self.startedServer(password="pw")
        sender = self.sender(redisTarget(server, database=2))
        yield sender.send(b"before")
        yield server.kill()
        yield self.assertFailure(sender.send(b"during"), Exception)
        yield server.start()
        yield sender.send(b"after")
        self.assertEqual((yield server.command("LRANGE", "wsserver_events_queue", 0, -1, database=2)), [b"after"])

    @inlineCallbacks
    def test_downMidRunChannel(self) -> Any:
        """
        In mode C{channel} too, a send fails while Redis is down and
        succeeds once it is back.
        """
        server = yield self.startedServer()
        sender = self.sender(redisTarget(server, mode={"type": "channel"}))
        yield sender.send(b"before")
        yield server.stop()
        yield self.assertFailure(sender.send(b"during"), Exception)
        yield server.start()
        subscription = yield server.subscribe("wsserver_events_channel")
        yield sender.send(b"after")
        self.assertEqual((yield subscription.messages.get()), (b"wsserver_events_channel", b"after"))

    @inlineCallbacks
    def test_oneWarningPerOutage(self) -> Any:
        """
        An outage is logged as one warning, however many sends fail in it,
        and its end as one line; no failure (traceback) is logged.
        """
        server = yield self.startedServer()
        events = self.warnings()
        sender = self.sender(redisTarget(server))
        yield sender.send(b"1")
        yield server.stop()
        for _ in range(5):
            yield self.assertFailure(sender.send(b"x"), Exception)
        yield server.start()
        yield sender.send(b"2")
        warnings = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("unusable", warnings[0]["log_format"])
        self.assertNotIn("log_failure", warnings[0])
        self.assertEqual(len([e for e in events if "usable again" in e["log_format"]]), 1)
        self.assertFalse([e for e in events if "log_failure" in e])

    @inlineCallbacks
    def silentServer(self) -> Any:
        """
        A loopback TCP server that accepts connections and never answers;
        stopped, its connections closed, at cleanup.

        @return: fires with its port number and its list of connections.
        """
        factory = Factory.forProtocol(SilentServer)
        factory.connections = []  # type: ignore[attr-defined]
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

        @inlineCallbacks
        def stop() -> Any:
            yield port.stopListening()
            for connection in factory.connections:  # type: ignore[attr-defined]
                connection.transport.loseConnection()
                yield connection.lost

        self.addCleanup(stop)
        return port.getHost().port, factory.connections  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_noAnswerTimesOut(self) -> Any:
        """
        A Redis that accepts the connection but does not answer fails the
        send after C{connectionTimeoutSeconds}, and the connection is dropped.
        """
        port, connections = yield self.silentServer()
        target = TargetConfig(type="redis", address="127.0.0.1", port=port, connectionTimeoutSeconds=0.3)
        sender = self.sender(target)
        started = reactor.seconds()
        failure = yield self.assertFailure(sender.send(b"{}"), TimeoutError)
        self.assertGreaterEqual(reactor.seconds() - started, 0.29)
        self.assertIn("within 0.3 seconds", str(failure))
        yield gatherResults([c.lost for c in connections])

    @inlineCallbacks
    def test_noAnswerToAuthTimesOut(self) -> Any:
        """
        A Redis that does not answer C{AUTH} fails the send after
        C{connectionTimeoutSeconds}, and the connection is dropped; the link
        tries a new connection by itself.
        """
        port, connections = yield self.silentServer()
        target = TargetConfig(type="redis", address="127.0.0.1", port=port, password="pw",
                              connectionTimeoutSeconds=0.2)
        sender = self.sender(target)
        yield self.assertFailure(sender.send(b"{}"), TimeoutError)
        yield self.assertFailure(sender.send(b"{}"), TimeoutError)
        yield connections[0].lost
        for _ in range(250):
            if len(connections) >= 2:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertGreaterEqual(len(connections), 2)

    @inlineCallbacks
    def test_close(self) -> Any:
        """
        L{RedisSender.close} closes the connection (the reactor is clean
        afterwards); later sends fail with L{RedisSenderClosed}.
        """
        server = yield self.startedServer()
        sender = RedisSender(redisTarget(server), reactor)
        yield sender.send(b"{}")
        self.assertEqual(len((yield server.command("CLIENT", "LIST")).splitlines()), 2)
        yield sender.close()
        yield self.assertFailure(sender.send(b"{}"), RedisSenderClosed)
        self.assertEqual(len((yield server.command("CLIENT", "LIST")).splitlines()), 1)

    @inlineCallbacks
    def test_closeWhileConnecting(self) -> Any:
        """
        Closing while a connection attempt is in progress cancels it: sends
        waiting for it fail with L{RedisSenderClosed}, and nothing is left on
        the reactor.
        """
        port, connections = yield self.silentServer()
        target = TargetConfig(type="redis", address="127.0.0.1", port=port, password="pw")
        sender = RedisSender(target, reactor)
        sending = sender.send(b"{}")
        yield sender.close()
        yield self.assertFailure(sending, RedisSenderClosed)

    @inlineCallbacks
    def test_closeWhileDown(self) -> Any:
        """
        Closing a sender whose Redis is down leaves nothing on the reactor.
        """
        server = RedisServer(self)
        sender = RedisSender(redisTarget(server), reactor)
        yield self.assertFailure(sender.send(b"{}"), ConnectionRefusedError)
        yield sender.close()

    def test_closeAtOnce(self) -> Any:
        """
        Closing a sender right after making it cancels its first connection
        attempt.
        """
        target = TargetConfig(type="redis", address="127.0.0.1", port=1)
        sender = RedisSender(target, reactor)
        return sender.close()

    def test_wrongTarget(self) -> None:
        """
        A target that is not a redis one, or has an unknown mode, is refused.
        """
        self.assertRaises(ValueError, RedisSender, TargetConfig(type="postback", url="http://x"), reactor)
        self.assertRaises(ValueError, RedisSender, TargetConfig(type="redis", modeType="stream"), reactor)
