"""
The event target types of L{wsserver.events.targets}: their config keys (errors
naming the key, passwords hidden), the notifier's "not connected" outcome,
and the C{socket} and C{udp} targets against real Twisted listeners.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import Clock, deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.config import ConfigError, parseConfig
from wsserver.events.notifier import EventNotifier
from wsserver.events.targets.senders import makeSenders
from wsserver.events.store import MemoryEventStore
from wsserver.messages import Message
from wsserver.events.targets.base import TargetUnreachable
from wsserver.events.targets.base import NextTurn
from wsserver.events.targets.socket import SocketRefused
from wsserver.events.targets.types import TARGET_TYPES
from wsserver.events.targets.udp import MAX_DATAGRAM, UdpRefused

from .test_targets_sql import ThroughTheServer, WaitsWhileDown, event, eventConfig, until


def problems(target: dict[str, Any]) -> str:
    """
    The config error for an C{event} section with C{target}.
    """
    try:
        parseConfig({"event": {"enabled": True, "targets": [target]}})
    except ConfigError as e:
        return str(e)
    return ""


class ConfigTests(SynchronousTestCase):
    """
    Each type reads its own keys; a bad one is an error naming the key.
    """

    def test_defaults(self) -> None:
        """
        The keys have the defaults SPEC section 12 gives.
        """
        pg = eventConfig({"type": "postgresql", "dsn": "postgresql://u:pw@db/events"}).targets[0].options
        self.assertEqual((pg.host, pg.port, pg.user, pg.password, pg.database, pg.table, pg.poolSize, pg.batchSize),
                         ("db", 5432, "u", "pw", "events", "wsserver_events", 4, 500))
        my = eventConfig({"type": "mysql", "dsn": "mysql://u:pw@db/events"}).targets[0].options
        self.assertEqual((my.port, my.table), (3306, "wsserver_events"))
        amqp = eventConfig({"type": "amqp", "url": "amqp://u:pw@mq/"}).targets[0].options
        self.assertEqual((amqp.port, amqp.vhost, amqp.exchange, amqp.routingKey, amqp.declareQueue),
                         (5672, "/", "", "wsserver.events", ""))
        sock = eventConfig({"type": "socket", "address": "unix:/tmp/s"}).targets[0].options
        self.assertEqual((sock.framing, sock.ack), ("ndjson", False))

    def test_badAddressesNameTheKey(self) -> None:
        """
        A dsn, url or address that does not parse is an error naming the
        key, which does not repeat the password.
        """
        cases = [
            ({"type": "postgresql", "dsn": "mysql://u:secretpw@h/db"}, "dsn"),
            ({"type": "postgresql", "dsn": "postgresql://u:secretpw@h:99999/db"}, "dsn"),
            ({"type": "postgresql", "dsn": "postgresql://u:secretpw@h"}, "dsn"),
            ({"type": "mysql", "dsn": "nonsense"}, "dsn"),
            ({"type": "mysql", "dsn": "mysql://h/db", "table": "x; DROP"}, "table"),
            ({"type": "amqp", "url": "http://u:secretpw@h/"}, "url"),
            ({"type": "socket", "address": "udp:1.2.3.4:5"}, "address"),
            ({"type": "socket", "address": "tcp:host"}, "address"),
            ({"type": "socket", "address": "unix:/x", "framing": "csv"}, "framing"),
            ({"type": "udp", "address": "localhost"}, "address"),
            ({"type": "udp", "address": "example.com:53"}, "address"),
        ]
        for target, key in cases:
            text = problems(target)
            self.assertIn(f"event.targets[0].{key}", text, target)
            self.assertNotIn("secretpw", text)

    def test_unknownKey(self) -> None:
        """
        A key the type does not know is warned about as in any section.
        """
        config = parseConfig({"event": {"targets": [{"type": "postgresql", "dsn": "postgresql://h/d", "url": "x"}]}})
        self.assertIn("event.targets[0].url: unknown key, ignored", config.warnings)

    def test_unknownType(self) -> None:
        """
        An unknown type lists every known one; MongoDB is not one.
        """
        text = problems({"type": "mongodb"})
        for kind in ("postback", "redis", "postgresql", "mysql", "amqp", "socket", "udp"):
            self.assertIn(kind, text)

    def test_destinationHidesThePassword(self) -> None:
        """
        What C{/events}, the metrics and the dashboard show hides the
        password.
        """
        for target in ({"type": "postgresql", "dsn": "postgresql://u:secretpw@h/db"},
                       {"type": "amqp", "url": "amqp://u:secretpw@h/"}):
            config = eventConfig(target)
            self.assertNotIn("secretpw", config.targets[0].options.destination)
            self.assertNotIn("secretpw", repr(config))
            self.assertIn("u:***@h", config.targets[0].options.destination)


class CheckTests(SynchronousTestCase):
    """
    C{-T} checks the target types' keys without connecting.
    """

    def check(self, raw: dict[str, Any]) -> tuple[int, str]:
        import io
        import json
        from contextlib import redirect_stdout

        from wsserver.tap import Options

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            json.dump(raw, f)
        out = io.StringIO()
        with redirect_stdout(out):
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(["-C", path, "-T"])
        return caught.exception.code, out.getvalue()

    def test_noConnection(self) -> None:
        """
        Targets of every type at a listening port: C{config OK}, and nothing
        connected to the port.
        """
        import socket

        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        targets = [
            {"type": "postgresql", "dsn": f"postgresql://u:secretpw@127.0.0.1:{port}/db"},
            {"type": "mysql", "dsn": f"mysql://u:secretpw@127.0.0.1:{port}/db"},
            {"type": "amqp", "url": f"amqp://u:secretpw@127.0.0.1:{port}/"},
            {"type": "socket", "address": f"tcp:127.0.0.1:{port}"},
        ]
        self.assertEqual(self.check({"event": {"enabled": True, "targets": targets}}), (0, "config OK\n"))
        self.assertRaises(BlockingIOError, listener.accept)

    def test_badDsn(self) -> None:
        """
        A C{dsn} that does not parse fails the check naming the key, not
        repeating the password.
        """
        code, out = self.check({"event": {"enabled": True, "targets": [
            {"type": "postgresql", "dsn": "postgresql://u:secretpw@h:99999/db"}]}})
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith("error: event.targets[0].dsn: "), out)
        self.assertNotIn("secretpw", out)


class _Recorder:
    """
    A config section that answers every key with its default and records
    the keys read, with the defaults given.
    """

    def __init__(self) -> None:
        self.read: dict[str, Any] = {}

    def error(self, name: str, why: str) -> None:
        pass

    def has(self, name: str) -> bool:
        return False

    def _get(self, name: str, default: Any) -> Any:
        self.read[name] = default
        return default

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, default)

    def str(self, name: str, default: str) -> str:
        return self._get(name, default)

    def int(self, name: str, default: int, low: int | None = None, high: int | None = None) -> int:
        return self._get(name, default)

    def number(self, name: str, default: float, low: float = 0) -> float:
        return self._get(name, default)


class KeyDocTests(SynchronousTestCase):
    """
    The keys each type documents (the configuration reference shows them)
    are the keys its parser reads, with the same defaults.
    """

    def test_documentedKeysAreRead(self) -> None:
        for kind, targetType in TARGET_TYPES.items():
            section = _Recorder()
            targetType.parse(section)
            documented = {k.name: orjson.loads(k.default) if k.default else "" for k in targetType.keys}
            self.assertEqual(section.read, documented, kind)
            for key in targetType.keys:
                self.assertTrue(key.doc and key.type, (kind, key))


class _Unreachable:
    """
    A sender that is not connected: every send waits as unreachable.
    """

    def __init__(self, clock: Clock) -> None:
        self.later = NextTurn(clock)
        self.sent = 0

    def send(self, payload: bytes) -> Deferred[None]:
        self.sent += 1
        return self.later.fail(TargetUnreachable("not connected", 2.0))

    def close(self) -> Deferred[None]:
        return Deferred()


class UnreachableTests(SynchronousTestCase):
    """
    The notifier keeps a delivery the target could not try waiting: pending,
    no retry spent, tried again after C{retryAfter}.
    """

    def test_waitsWithoutSpendingRetries(self) -> None:
        """
        However often the target is unreachable, the delivery stays pending
        with no attempt counted, and is tried every C{retryAfter} seconds.
        """
        clock = Clock()
        config = eventConfig({"type": "udp", "address": "127.0.0.1:9"}, retryCount=1)
        store = MemoryEventStore()
        sender = _Unreachable(clock)
        notifier = EventNotifier(config, store, {"targets[0]": sender}, clock)
        notifier.startService()
        notifier.notify(Message(id="m1", type="chat", text="", timestamp="1", sender=1, recipients=[2], data=None),
                        event(1))
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(sender.sent, 1)
        for _ in range(5):
            clock.advance(2.0)
            clock.advance(0)
        self.assertEqual(sender.sent, 6)
        counts = self.successResultOf(notifier.counts())[0]
        self.assertEqual((counts["pending"], counts["retrying"], counts["failed"]), (1, 0, 0))

    def test_refusalSpendsRetries(self) -> None:
        """
        Any other failure is a refusal: counted as a retry, then failed.
        """
        from twisted.internet.defer import fail

        class Refusing:
            def send(self, payload: bytes) -> Deferred[None]:
                return fail(UdpRefused("too big"))

            def close(self) -> Deferred[None]:
                return Deferred()

        clock = Clock()
        config = eventConfig({"type": "udp", "address": "127.0.0.1:9"}, retryCount=1, retryIntervalSeconds=1)
        store = MemoryEventStore()
        notifier = EventNotifier(config, store, {"targets[0]": Refusing()}, clock)
        notifier.startService()
        notifier.notify(Message(id="m1", type="chat", text="", timestamp="1", sender=1, recipients=[2], data=None),
                        event(1))
        clock.advance(0)
        self.assertEqual(self.successResultOf(notifier.counts())[0]["retrying"], 1)
        clock.advance(1)
        self.assertEqual(self.successResultOf(notifier.counts())[0]["failed"], 1)


class _Peer(LineOnlyReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.factory.peers.append(self)

    def lineReceived(self, line: bytes) -> None:
        self.factory.lines.append(line)
        if self.factory.ack:
            self.sendLine(str(orjson.loads(line)["id"]).encode())


class _PeerFactory(Factory):
    protocol = _Peer

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.lines: list[bytes] = []
        self.peers: list[_Peer] = []


class SocketTargetTests(TestCase):
    """
    The C{socket} target against a real Twisted listener.
    """

    @inlineCallbacks
    def listen(self, ack: bool = False, unix: bool = False) -> Any:
        factory = _PeerFactory(ack)
        if unix:
            directory = tempfile.mkdtemp(prefix="wssock-")
            path = os.path.join(directory, "s")
            port = yield UNIXServerEndpoint(reactor, path).listen(factory)
            address = f"unix:{path}"
        else:
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
            address = f"tcp:127.0.0.1:{port.getHost().port}"
        self.addCleanup(port.stopListening)
        return factory, address

    def sender(self, address: str, **keys: Any) -> Any:
        config = eventConfig({"type": "socket", "address": address, **keys})
        sender = makeSenders(config, None, reactor)["targets[0]"]
        self.addCleanup(sender.close)
        return sender

    @inlineCallbacks
    def connected(self, sender: Any) -> Any:
        for _ in range(200):
            try:
                yield sender.send(event(0))
                return
            except TargetUnreachable:
                yield deferLater(reactor, 0.02, lambda: None)
        self.fail("never connected")

    @inlineCallbacks
    def test_tcpLines(self) -> Any:
        """
        Each event is one line on the kept TCP connection.
        """
        factory, address = yield self.listen()
        sender = self.sender(address)
        yield self.connected(sender)
        yield sender.send(event(1))
        yield sender.send(event(2))
        for _ in range(100):
            if len(factory.lines) == 3:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(factory.lines, [event(0), event(1), event(2)])
        self.assertEqual(len(factory.peers), 1)

    @inlineCallbacks
    def test_unixAck(self) -> Any:
        """
        Over a unix socket with C{ack}, a send succeeds once the peer
        answered the message id.
        """
        factory, address = yield self.listen(ack=True, unix=True)
        sender = self.sender(address, ack=True)
        yield self.connected(sender)
        yield sender.send(event(5))
        self.assertEqual(factory.lines[-1], event(5))

    @inlineCallbacks
    def test_noAckInTime(self) -> Any:
        """
        Without the peer's ack within C{connectionTimeoutSeconds}, the send
        is refused.
        """
        factory, address = yield self.listen(ack=False)
        sender = self.sender(address, ack=True, connectionTimeoutSeconds=0.2)
        for _ in range(200):
            d = sender.send(event(1))
            try:
                yield d
            except TargetUnreachable:
                yield deferLater(reactor, 0.02, lambda: None)
                continue
            except SocketRefused:
                break
            self.fail("acked without an ack")

    @inlineCallbacks
    def test_peerGoneAndBack(self) -> Any:
        """
        The peer closes the connection: sends wait as unreachable until the
        sender has connected again by itself.
        """
        factory, address = yield self.listen()
        sender = self.sender(address)
        yield self.connected(sender)
        factory.peers[0].transport.loseConnection()
        yield deferLater(reactor, 0.05, lambda: None)
        yield self.assertFailure(sender.send(event(1)), TargetUnreachable)
        yield self.connected(sender)
        self.assertEqual(len(factory.peers), 2)

    @inlineCallbacks
    def test_downAtStart(self) -> Any:
        """
        A target that is down fails sends as unreachable.
        """
        sender = self.sender("tcp:127.0.0.1:1")
        yield self.assertFailure(sender.send(event(1)), TargetUnreachable)


class _Datagrams(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


class UdpTargetTests(TestCase):
    """
    The C{udp} target against a real Twisted UDP port.
    """

    @inlineCallbacks
    def test_datagrams(self) -> Any:
        """
        Each event is one datagram holding its JSON; one over 65,000 bytes
        is refused.
        """
        listener = _Datagrams()
        port = reactor.listenUDP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        config = eventConfig({"type": "udp", "address": f"127.0.0.1:{port.getHost().port}"})
        sender = makeSenders(config, None, reactor)["targets[0]"]
        self.addCleanup(sender.close)
        yield sender.send(event(1))
        yield sender.send(event(2))
        yield self.assertFailure(sender.send(b"x" * (MAX_DATAGRAM + 1)), UdpRefused)
        for _ in range(100):
            if len(listener.received) == 2:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(listener.received, [event(1), event(2)])


class _Listener:
    """
    A line peer on a loopback TCP port that can be stopped (its connections
    dropped) and started again on the same port; it acks every line.
    """

    def __init__(self) -> None:
        self.factory = _PeerFactory(ack=True)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.number}"

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.factory.lines]

    @inlineCallbacks
    def stop(self) -> Any:
        port, self.port = self.port, None
        if port is not None:
            yield port.stopListening()
        for peer in self.factory.peers:
            peer.transport.abortConnection()

    def start(self) -> None:
        self.port = reactor.listenTCP(self.number, self.factory, interface="127.0.0.1")


class SocketThroughTheServerTests(ThroughTheServer, WaitsWhileDown, TestCase):
    """
    The C{socket} target (with C{ack}) in the real server, like C{postback}.
    """

    kind = "socket"
    hasPassword = False

    def setUp(self) -> None:
        self.listeners: dict[str, _Listener] = {}
        self.place = "main"
        self.server = self.listener(self.place)

    def listener(self, place: str) -> _Listener:
        if place not in self.listeners:
            self.listeners[place] = listener = _Listener()
            self.addCleanup(listener.stop)
        return self.listeners[place]

    def targetWith(self, place: str, **keys: Any) -> dict[str, Any]:
        return {"type": "socket", "address": self.listener(place).address, "ack": True,
                "connectionTimeoutSeconds": 2, **keys}

    def received(self, place: str) -> list[dict[str, Any]]:
        return self.listener(place).events()

    @inlineCallbacks
    def test_peerStoppedMidFlow(self) -> Any:
        """
        The peer stopped mid-flow and started again on its port: through
        the notifier, every event reaches it (at least once: a line the peer
        read but did not ack in time is sent again), none failed, no retry
        spent.
        """
        listener = self.server
        config = eventConfig(self.targetWith(self.place), retryCount=0, maxParallelWorkers=32)
        notifier = EventNotifier(config, MemoryEventStore(), makeSenders(config, None, reactor), reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)

        def burst(start: int, n: int) -> None:
            for i in range(start, start + n):
                notifier.notify(Message(id=f"m{i}", type="chat", text="", timestamp="1", sender=1, recipients=[2],
                                        data=None), event(i))

        @inlineCallbacks
        def counts() -> Any:
            return (yield notifier.counts())[0]

        burst(0, 100)
        yield until(lambda: len(listener.factory.lines) > 0)
        yield listener.stop()
        burst(100, 100)
        yield deferLater(reactor, 0.5, lambda: None)
        listener.start()
        burst(200, 100)
        for _ in range(600):
            c = yield counts()
            if c["succeeded"] + c["failed"] >= 300:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((c["succeeded"], c["failed"], c["pending"] + c["retrying"]), (300, 0, 0))
        self.assertEqual({e["id"] for e in listener.events()}, {f"m{i}" for i in range(300)})


class UdpThroughTheServerTests(ThroughTheServer, TestCase):
    """
    The C{udp} target in the real server, like C{postback} (fire and
    forget: nothing waits while the peer is down).
    """

    kind = "udp"
    hasPassword = False

    def setUp(self) -> None:
        self.place = "main"
        self.ports: dict[str, Any] = {}

    def listener(self, place: str) -> Any:
        if place not in self.ports:
            protocol = _Datagrams()
            port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[place] = (protocol, port.getHost().port)
        return self.ports[place]

    def targetWith(self, place: str, **keys: Any) -> dict[str, Any]:
        return {"type": "udp", "address": f"127.0.0.1:{self.listener(place)[1]}", **keys}

    def received(self, place: str) -> list[dict[str, Any]]:
        return [orjson.loads(data) for data in self.listener(place)[0].received]
