"""
The C{postgresql} and C{mysql} event targets against real servers
(L{tests.servers}): rows, batching, the table made when missing, resends
landing once, a wrong password, and the server going away mid-flow.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import reactor
from twisted.python.failure import Failure
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from wsserver.config import parseConfig
from wsserver.tap import buildService
from wsserver.events.notifier import EventNotifier
from wsserver.events.targets.senders import makeSenders
from wsserver.events.store import MemoryEventStore
from wsserver.events.targets.base import TargetUnreachable
from wsserver.events.targets.sql import SqlRefused

from .servers import PASSWORD, MariaDBServer, PostgresServer, SharedServer
from .support import Running, closeClient, loopbackConfig, openClient, restRequest, startServer


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


@inlineCallbacks
def restBody(server: Any, path: str) -> Any:
    """
    The status and body of C{GET path} on the server's REST API.
    """
    response = yield restRequest(server, "GET", path)
    body = yield response.content()
    return response.code, body.decode("utf-8", "replace")


@inlineCallbacks
def eventRows(server: Any) -> Any:
    """
    The rows of C{GET /events}.
    """
    code, body = yield restBody(server, "/events")
    if code != 200:
        raise AssertionError(f"GET /events answered {code}: {body}")
    return orjson.loads(body)["data"]


@inlineCallbacks
def waitForRows(server: Any, test: Any, what: str, timeout: float = 30.0) -> Any:
    """
    Poll C{GET /events} every 50 ms until C{test(rows)} holds; the rows.
    """
    rows: Any = None
    for _ in range(int(timeout / 0.05)):
        rows = yield eventRows(server)
        if test(rows):
            return rows
        yield deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"no {what} within {timeout} s; last GET /events: {rows}")


def serverEvents(test: Any, target: dict[str, Any], dataDir: str | None = None, **event: Any) -> dict[str, Any]:
    """
    The raw config of a server whose one event target is C{target}.
    """
    section = {"enabled": True, "retryIntervalSeconds": 0.2, "targets": [target], **event}
    return {"server": {"dataDir": dataDir or test.mktemp()}, "event": section}


class ThroughTheServer:
    """
    What every target type does inside the real server, like C{postback}
    (SPEC sections 6 and 12): C{ignoreTypes}, presence events, C{GET
    /events}, the metrics and the dashboard with the password hidden, and
    a SIGHUP reload.  A subclass says how to reach its target and read what
    it received.
    """

    kind: str
    server: Any
    #: whether the target's address holds a password (to be hidden)
    hasPassword = True

    def targetWith(self, place: str, **keys: Any) -> dict[str, Any]:
        """
        The target's keys, writing to C{place} (a table or queue name).
        """
        raise NotImplementedError()

    def received(self, place: str) -> list[dict[str, Any]]:
        """
        The events that reached C{place}, decoded.
        """
        raise NotImplementedError()

    @inlineCallbacks
    def chat(self, server: Any, texts: list[str], typing: bool = False) -> Any:
        """
        User 1 sends C{texts} to user 2 (first an ignored C{typing} when
        C{typing}); the messages user 2 got.
        """
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, bob)
        if typing:
            alice.send({"type": "typing", "recipients": [2]})
            self.assertEqual((yield bob.messages.get())["type"], "typing")
        got = []
        for text in texts:
            alice.send({"type": "text", "text": text, "recipients": [2]})
            got.append((yield bob.messages.get()))
        return got

    @inlineCallbacks
    def test_throughTheServer(self) -> Any:
        """
        In the real server, with a password in the target's address: the
        messages (less C{ignoreTypes}) and the presence events reach the
        target; C{/events} and the metrics count them under the target's
        type; no password in C{/events}, C{/metrics}, C{/overview}, the
        dashboard or any log line; after a reload to another table or
        queue, the next messages go there.
        """
        log = targetLog(self)
        first, second = f"{self.place}_a", f"{self.place}_b"
        raw = serverEvents(self, self.targetWith(first), ignoreTypes=["typing"], presence=True,
                           presenceDebounceSeconds=0)
        server = yield startServer(self, raw)
        got = yield self.chat(server, ["one", "two", "three"], typing=True)
        rows = yield waitForRows(server, lambda rows: rows[0]["succeeded"] >= 5, "5 deliveries")
        self.assertEqual(len(rows), 1)
        self.assertEqual({k: rows[0][k] for k in ("target", "type", "succeeded", "pending", "retrying", "failed")},
                         {"target": "targets[0]", "type": self.kind, "succeeded": 5, "pending": 0, "retrying": 0,
                          "failed": 0})
        if self.hasPassword:
            self.assertIn(":***@", rows[0]["destination"])
        yield until(lambda: len(self.received(first)) >= 5)
        events = self.received(first)
        self.assertEqual(sorted(e["id"] for e in events if e["type"] == "text"), sorted(m["id"] for m in got))
        self.assertEqual(sorted(e["data"]["user"] for e in events if e["type"] == "user_online"), [1, 2])
        self.assertEqual(len(events), 5)
        for path in ("/events", "/metrics", "/overview", "/dashboard"):
            code, body = yield restBody(server, path)
            self.assertEqual(code, 200, path)
            self.assertNotIn(PASSWORD, body, path)
        _, metrics = yield restBody(server, "/metrics")
        sample = f'wsserver_event_deliveries_total{{result="succeeded",target="targets[0]",type="{self.kind}"}} 5.0'
        self.assertIn(sample, metrics)
        _, overview = yield restBody(server, "/overview")
        self.assertEqual(orjson.loads(overview)["data"]["events"][0]["type"], self.kind)
        raw2 = serverEvents(self, self.targetWith(second), raw["server"]["dataDir"], ignoreTypes=["typing"])
        config = loopbackConfig(raw2)
        server.service.reload(lambda: config, reactor)
        yield self.chat(server, ["after"])
        yield until(lambda: len(self.received(second)) >= 1)
        self.assertEqual([e["text"] for e in self.received(second)], ["after"])
        self.assertEqual(len(self.received(first)), 5)
        self.assertNotIn(PASSWORD, repr(log))


class WaitsWhileDown:
    """
    A target down when the server starts (SPEC section 12): its
    deliveries wait, persisted, and arrive once it is up, across a restart
    of the server.  With L{ThroughTheServer}'s helpers; C{self.server}'s
    C{stop} and C{start} take the target down and up.
    """

    @inlineCallbacks
    def test_downAtStartAndServerRestart(self) -> Any:
        """
        With the target down when the server starts, its deliveries wait
        (pending, no retry spent) in the data directory and C{/ready} stays
        200; the server is stopped and started again, then the target:
        every message arrives once.
        """
        dataDir = self.mktemp()
        raw = serverEvents(self, self.targetWith(self.place), dataDir, retryCount=0)
        yield self.server.stop()
        try:
            service = buildService(loopbackConfig(raw), reactor)
            service.startService()
            try:
                ws = (yield service.ws.whenListening()).getHost().port
                rest = (yield service.rest.whenListening()).getHost().port
                server = Running(service, ws, rest, False)
                got = yield self.chat(server, ["a", "b", "c"])
                yield waitForRows(server, lambda rows: rows[0]["pending"] == 3, "3 deliveries waiting")
                yield deferLater(reactor, 1.0, lambda: None)
                rows = yield eventRows(server)
                self.assertEqual((rows[0]["pending"], rows[0]["retrying"], rows[0]["failed"]), (3, 0, 0))
                code, _ = yield restBody(server, "/ready")
                self.assertEqual(code, 200)
            finally:
                yield service.stopService()
        finally:
            yield self.server.start()
        server = yield startServer(self, raw)
        yield waitForRows(server, lambda rows: rows[0]["succeeded"] == 3, "3 deliveries after the restart")
        events = self.received(self.place)
        self.assertEqual(sorted(e["id"] for e in events), sorted(m["id"] for m in got))


class _SqlTargetTests(ThroughTheServer, WaitsWhileDown):
    """
    What both SQL targets do; a subclass names the server and the type.
    """

    shared: SharedServer
    kind: str

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: Any = yield self.shared.get(self)
        self.table = f"ev_{self.id().rsplit('.', 1)[-1].lower()}"
        self.place = self.table

    def targetWith(self, place: str, **keys: Any) -> dict[str, Any]:
        return self.target(table=place, **keys)

    def received(self, place: str) -> list[dict[str, Any]]:
        try:
            rows = self.server.query(f"SELECT payload FROM {place} ORDER BY id")
        except Exception:
            return []
        return [_json(payload) for (payload,) in rows]

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
    def test_textKeptExactly(self) -> Any:
        """
        Quotes, backslashes, a percent sign, non-ASCII letters and an emoji
        (four UTF-8 bytes), in the payload and in the id, sender and
        recipients, land as they were sent, in a batch of several rows.
        """
        sender = self.sender()
        yield self.connected(sender)
        text = "it's \\ \"quoted\" 100% caf\u00e9 \U0001f600 '); DROP TABLE x; --"
        yield gatherResults([
            sender.send(event(1, text=text, sender="o'neil\\", recipients=["b\u00e9", "\U0001f600"])),
            sender.send(event(2, text=text)),
            sender.send(orjson.dumps({"id": "m'3%s", "type": None, "text": text})),
        ])
        rows = {r[0]: r for r in self.rows()}
        self.assertEqual(sorted(rows), ["m'3%s", "m0", "m1", "m2"])
        _, kind, who, recipients, payload = rows["m1"]
        self.assertEqual((kind, who, _json(recipients)), ("chat", "o'neil\\", ["b\u00e9", "\U0001f600"]))
        self.assertEqual(_json(payload)["text"], text)
        self.assertEqual(_json(rows["m2"][4])["text"], text)
        self.assertEqual(rows["m'3%s"][1:4], (None, None, None))

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
        self.assertEqual(len(self.batches()), 1 + 50 // 7 + 1)

    def batches(self) -> list[int]:
        """
        How many rows each transaction wrote to the test's table.
        """
        raise NotImplementedError()

    @inlineCallbacks
    def test_maxParallelWorkers(self) -> Any:
        """
        Through the notifier, C{maxParallelWorkers} bounds the transactions
        in flight, not the rows: the rows of one turn go in multi-row
        transactions of at most C{batchSize} rows each, never more.
        """
        config = eventConfig(self.target(batchSize=7), maxParallelWorkers=4)
        notifier = EventNotifier(config, MemoryEventStore(), makeSenders(config, None, reactor), reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        from wsserver.messages import Message

        for i in range(20):
            notifier.notify(Message(id=f"m{i}", type="chat", text="", timestamp=1, sender=1, recipients=[2],
                                    data=None), event(i))
        yield until(lambda: self.count() == 20)
        batches = self.batches()
        self.assertEqual(sum(batches), 20)
        self.assertLessEqual(max(batches), 7)
        self.assertGreater(max(batches), 4)

    def connectionIds(self) -> set[int]:
        """
        The server's ids of the connections the target holds.
        """
        raise NotImplementedError()

    @inlineCallbacks
    def test_poolKept(self) -> Any:
        """
        The connections are made once and kept: batch after batch goes
        over the same ones, never more than C{poolSize}.
        """
        sender = self.sender(poolSize=2)
        yield self.connected(sender)
        seen = []
        for round in range(5):
            yield gatherResults([sender.send(event(100 * round + i)) for i in range(1, 21)])
            seen.append(self.connectionIds())
        self.assertEqual(self.count(), 101)
        self.assertTrue(1 <= len(seen[0]) <= 2, seen)
        everyone = set().union(*seen)
        self.assertTrue(len(everyone) <= 2, seen)

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
    def test_notUtf8RefusedAlone(self) -> Any:
        """
        An event that is not UTF-8 is refused alone, named as such; the rest
        of its batch is committed.
        """
        sender = self.sender()
        yield self.connected(sender)
        refused: list[str] = []

        def why(failure: Failure) -> None:
            failure.trap(SqlRefused)
            refused.append(str(failure.value))

        yield gatherResults([
            sender.send(event(1)), sender.send(b'{"id": "bad", "text": "\xff"}').addErrback(why), sender.send(event(2)),
        ])
        self.assertEqual(refused, ["the event is not JSON"])
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
        yield self.server.stop()
        try:
            burst(400, 200)
            yield deferLater(reactor, 1.5, lambda: None)
            burst(600, 200)
        finally:
            yield self.server.start()
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

    def batches(self) -> list[int]:
        # rows of one transaction share xmin
        return [int(n) for (n,) in self.server.query(f"SELECT count(*) FROM {self.table} GROUP BY xmin::text")]

    def connectionIds(self) -> set[int]:
        return {pid for (pid,) in self.server.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'wsserver'")}

    @inlineCallbacks
    def test_oneInsertPerTurnThroughTheServer(self) -> Any:
        """
        In the real server, the 50 messages a client's one write carries
        (one read, one turn of the reactor) are stored by the event store,
        handed to the target as one group and reach PostgreSQL in one
        C{INSERT} of 50 rows: PostgreSQL's own count of the statements
        (C{pg_stat_statements}) says so.
        """
        self.server.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        server = yield startServer(self, serverEvents(self, self.target()))
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, bob)
        alice.send({"type": "text", "text": "first", "recipients": [2]})
        yield until(lambda: self.count() == 1)
        self.server.query("SELECT pg_stat_statements_reset()")
        for i in range(50):
            alice.send({"type": "text", "text": f"m{i}", "recipients": [2]})
        yield until(lambda: self.count() == 51)
        inserts = self.server.query(
            "SELECT calls, rows FROM pg_stat_statements WHERE query LIKE 'INSERT INTO %' "
            f"AND query LIKE '%{self.table} %'")
        self.assertEqual(inserts, [(1, 50)])


class MysqlTargetTests(_SqlTargetTests, TestCase):
    """
    The C{mysql} target against MariaDB.
    """

    kind = "mysql"

    def batches(self) -> list[int]:
        # rows of one statement share created_at, CURRENT_TIMESTAMP(6) at
        # the statement's start
        return [int(n) for (n,) in self.server.query(f"SELECT count(*) FROM {self.table} GROUP BY created_at")]

    def connectionIds(self) -> set[int]:
        return {id for (id,) in self.server.query(
            "SELECT id FROM information_schema.processlist WHERE user = 'wsserver' AND id <> CONNECTION_ID()")}


    @inlineCallbacks
    def test_backslashesWhateverTheSqlMode(self) -> Any:
        """
        With the server's C{sql_mode} holding C{NO_BACKSLASH_ESCAPES} (a
        backslash in a literal is then itself), backslashes and quotes still
        land as they were sent: the target's sessions turn the mode off.
        """
        ((mode,),) = self.server.query("SELECT @@GLOBAL.sql_mode")
        yield self.server._root("SET GLOBAL sql_mode = CONCAT_WS(',', NULLIF(@@GLOBAL.sql_mode, ''), "
                                "'NO_BACKSLASH_ESCAPES')")
        self.addCleanup(self.server._root, f"SET GLOBAL sql_mode = '{mode}'")
        self.assertIn("NO_BACKSLASH_ESCAPES", self.server.query("SELECT @@GLOBAL.sql_mode")[0][0])
        sender = self.sender()
        yield self.connected(sender)
        text = "a \\ b \\\\ c ' d \\' e \\n"
        yield gatherResults([sender.send(event(1, text=text)), sender.send(event(2, text=text))])
        rows = self.server.query(f"SELECT payload FROM {self.table} ORDER BY id")
        # (after the event that connected(sender) waited for)
        self.assertEqual([_json(payload)["text"] for (payload,) in rows][-2:], [text, text])


PostgresqlTargetTests.shared = SharedServer.of(PostgresqlTargetTests, PostgresServer)
MysqlTargetTests.shared = SharedServer.of(MysqlTargetTests, MariaDBServer)
