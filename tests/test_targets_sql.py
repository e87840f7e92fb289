"""
The C{postgresql} and C{mysql} event targets against real servers
(L{tests.servers}): rows, batching, the table made when missing, resends
landing once, a wrong password, and the server going away mid-flow.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from wsserver.config import parseConfig
from wsserver.events.notifier import EventNotifier
from wsserver.events.targets.senders import makeSenders
from wsserver.events.store import MemoryEventStore
from wsserver.events.targets.base import TargetUnreachable
from wsserver.events.targets.sql import SqlRefused

from .servers import PASSWORD, MariaDBServer, PostgresServer, SharedServer


def event(i: int, **fields: Any) -> bytes:
    """
    The JSON of a routed message with the id C{m<i>}.
    """
    return orjson.dumps({"id": f"m{i}", "type": "chat", "text": f"hello {i}", "timestamp": 1, "sender": 7,
                         "recipients": [8, 9], "data": None, **fields})


def eventConfig(target: dict[str, Any], **event: Any) -> Any:
    """
    The C{event} config with one target.
    """
    config = parseConfig({"event": {"enabled": True, "retryIntervalSeconds": 0.2, "targets": [target], **event}})
    return config.event


def until(predicate: Any, timeout: float = 30.0) -> Any:
    """
    Fires once C{predicate()} is true (checked every 50 ms); fails after
    C{timeout} seconds.
    """

    @inlineCallbacks
    def wait() -> Any:
        for _ in range(int(timeout / 0.05)):
            if predicate():
                return
            yield deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"not true within {timeout} s: {predicate}")

    return wait()


def targetLog(test: TestCase) -> list[dict[str, Any]]:
    """
    Everything logged from now on until cleanup.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class _SqlTargetTests:
    """
    What both SQL targets do; a subclass names the server and the type.
    """

    shared: SharedServer
    kind: str

    def setUp(self) -> None:
        self.server: Any = self.shared.get(self)
        self.table = f"ev_{self.id().rsplit('.', 1)[-1].lower()}"

    def target(self, **keys: Any) -> dict[str, Any]:
        return {"type": self.kind, "dsn": self.server.dsn(), "table": self.table, **keys}

    def sender(self, **keys: Any) -> Any:
        """
        The sender of a target on the test's table, closed at cleanup.
        """
        senders = makeSenders(eventConfig(self.target(**keys)), None, reactor)
        sender = senders["targets[0]"]
        self.addCleanup(sender.close)
        return sender

    def rows(self) -> list[tuple]:
        return self.server.query(f"SELECT id, type, sender, recipients, payload FROM {self.table} ORDER BY id")

    def count(self) -> int:
        try:
            return int(self.server.query(f"SELECT count(*) FROM {self.table}")[0][0])
        except Exception:
            return -1

    @inlineCallbacks
    def connected(self, sender: Any) -> Any:
        """
        Send until the sender is connected (it connects at start).
        """
        for _ in range(600):
            try:
                yield sender.send(event(0))
                return
            except TargetUnreachable:
                yield deferLater(reactor, 0.05, lambda: None)
        self.fail("never connected")

    @inlineCallbacks
    def test_rowsAndTable(self) -> Any:
        """
        The table is made when missing; each event is a row with its id,
        type, sender, recipients and payload.
        """
        sender = self.sender()
        yield self.connected(sender)
        yield sender.send(event(1))
        rows = self.rows()
        self.assertEqual([r[0] for r in rows], ["m0", "m1"])
        _, kind, who, recipients, payload = rows[1]
        self.assertEqual((kind, who), ("chat", "7"))
        self.assertEqual(_json(recipients), [8, 9])
        self.assertEqual(_json(payload)["text"], "hello 1")

    @inlineCallbacks
    def test_resendLandsOnce(self) -> Any:
        """
        A message sent again (at-least-once) changes nothing: one row.
        """
        sender = self.sender()
        yield self.connected(sender)
        yield sender.send(event(1))
        yield sender.send(event(1, text="changed"))
        yield gatherResults([sender.send(event(1)), sender.send(event(1))])
        self.assertEqual(self.count(), 2)
        self.assertEqual(_json(self.rows()[1][4])["text"], "hello 1")

    @inlineCallbacks
    def test_batchOfOneTurn(self) -> Any:
        """
        The events of one turn go in one transaction, at most C{batchSize}
        each: all are committed.
        """
        sender = self.sender(batchSize=7)
        yield self.connected(sender)
        yield gatherResults([sender.send(event(i)) for i in range(1, 51)])
        self.assertEqual(self.count(), 51)
        self.assertEqual(self.transactions(), self.expectedTransactions(1 + 50 // 7 + 1))

    def transactions(self) -> int | None:
        return None

    def expectedTransactions(self, n: int) -> int | None:
        return None

    @inlineCallbacks
    def test_refusedRowAlone(self) -> Any:
        """
        A row the database refuses fails alone (a refusal, spending a
        retry); the rest of its batch is committed.
        """
        sender = self.sender()
        yield self.connected(sender)
        results = yield gatherResults([
            sender.send(event(1)), sender.send(b'{"type": "no id"}').addErrback(lambda f: f.trap(SqlRefused)),
            sender.send(event(2)),
        ])
        self.assertEqual(results[1], SqlRefused)
        self.assertEqual(self.count(), 3)

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password: sends wait as unreachable (no retry spent), and
        one warning names the target; the password is in no log line.
        """
        log = targetLog(self)
        wrong = "not-the-" + PASSWORD
        sender = self.sender(dsn=self.server.dsn(password=wrong))
        for _ in range(3):
            yield self.assertFailure(sender.send(event(1)), TargetUnreachable)
            yield deferLater(reactor, 0.6, lambda: None)
        warnings = [e for e in log if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(warnings[0]["target"], "targets[0]")
        text = " ".join(str(e.get("log_format", "")) + repr({k: v for k, v in e.items()}) for e in log)
        self.assertNotIn(wrong, text)
        self.assertNotIn(PASSWORD, text)

    @inlineCallbacks
    def test_missingDatabase(self) -> Any:
        """
        A database that does not exist is the same: waiting, one warning.
        """
        log = targetLog(self)
        sender = self.sender(dsn=self.server.dsn(database="nosuchdb"))
        yield self.assertFailure(sender.send(event(1)), TargetUnreachable)
        yield deferLater(reactor, 1.0, lambda: None)
        yield self.assertFailure(sender.send(event(1)), TargetUnreachable)
        warnings = [e for e in log if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)

    @inlineCallbacks
    def test_serverStoppedMidFlow(self) -> Any:
        """
        The database stopped mid-flow and started again: through the
        notifier, every event is in the table once, none lost, no retry
        spent on the outage; /events counts hide the password.
        """
        config = eventConfig(self.target(), retryCount=0, maxParallelWorkers=32)
        store = MemoryEventStore()
        notifier = EventNotifier(config, store, makeSenders(config, None, reactor), reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        counts = yield notifier.counts()
        self.assertNotIn(PASSWORD, repr(counts))
        self.assertIn("***", counts[0]["destination"])
        from wsserver.messages import Message

        def burst(start: int, n: int) -> None:
            for i in range(start, start + n):
                notifier.notify(Message(id=f"m{i}", type="chat", text="", timestamp=1, sender=1, recipients=[2],
                                        data=None), event(i))

        burst(0, 200)
        yield until(lambda: self.count() > 0)
        burst(200, 200)
        self.server.stop()
        try:
            burst(400, 200)
            yield deferLater(reactor, 1.5, lambda: None)
            burst(600, 200)
        finally:
            self.server.start()
        yield until(lambda: self.count() == 800, 60)
        for _ in range(200):
            counts = yield notifier.counts()
            if counts[0]["succeeded"] + counts[0]["failed"] >= 800:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(counts[0]["failed"], 0)
        self.assertEqual(counts[0]["succeeded"], 800)
        rows = self.server.query(f"SELECT count(DISTINCT id), count(*) FROM {self.table}")
        self.assertEqual(tuple(int(x) for x in rows[0]), (800, 800))


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


class PostgresqlTargetTests(_SqlTargetTests, TestCase):
    """
    The C{postgresql} target against PostgreSQL 15.
    """

    kind = "postgresql"

    def transactions(self) -> int | None:
        # rows of one transaction share xmin
        return int(self.server.query(f"SELECT count(DISTINCT xmin::text) FROM {self.table}")[0][0])

    def expectedTransactions(self, n: int) -> int | None:
        return n


class MysqlTargetTests(_SqlTargetTests, TestCase):
    """
    The C{mysql} target against MariaDB.
    """

    kind = "mysql"


PostgresqlTargetTests.shared = SharedServer.of(PostgresqlTargetTests, PostgresServer)
MysqlTargetTests.shared = SharedServer.of(MysqlTargetTests, MariaDBServer)
