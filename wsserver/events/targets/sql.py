# -*- test-case-name: tests.test_targets_sql -*-
"""
What the C{postgresql} and C{mysql} event targets share (SPEC section 12):
a pool of kept connections (L{twisted.enterprise.adbapi}), the table created
when missing, and the rows of one reactor turn written in one multi-row
C{INSERT} that ignores an id already there, so that a resend lands once.

A dialect (L{SqlDialect}) says how: the DB-API module, its connect
arguments, the statements, and which of its errors mean the connection is
gone.  While the database cannot be reached (down, or refusing our
credentials) sends fail at once with L{TargetUnreachable}: the notifier
keeps them waiting, spending no retry; the database is tried again with a
backoff, and one warning is logged per outage.  An error the database gives
for the rows (not the connection) is a refusal: the batch is tried again row
by row, and only the rows it still refuses fail.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import attr
import orjson
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import IBatchSender

from .base import Backoff, ISection, KeyDoc, NextTurn, TargetUnreachable, parseURL, redacted

__all__ = ["Row", "SqlDialect", "eventFields", "eventRow", "SqlOptions", "SqlRefused", "SqlSender", "parseSqlOptions",
           "sqlKeys"]

#: a table name: an identifier, optionally qualified by a schema
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


#: the columns of one event: id, type, sender, recipients as JSON, the payload
Row = tuple[str, "str | None", "str | None", "str | None", str]


class SqlRefused(Exception):
    """
    The database refused a row (the delivery spends a retry).
    """


@attr.s(frozen=True, auto_attribs=True)
class SqlOptions:
    """
    The keys of a SQL target.

    @ivar destination: the dsn with its password hidden (what is shown).
    """

    host: str
    port: int
    user: str
    password: str = attr.ib(repr=False)
    database: str
    table: str
    poolSize: int
    batchSize: int
    destination: str


def sqlKeys(scheme: str) -> tuple[KeyDoc, ...]:
    """
    The keys that L{parseSqlOptions} reads, for a database whose URLs start
    with C{scheme}.
    """
    return (
        KeyDoc("dsn", "string", "", f"(required) the database: C{{{scheme}://user:password@host:port/database}}; "
               "the password is shown as C{***}"),
        KeyDoc("table", "string", '"wsserver_events"', "the table (C{schema.table} allowed), created when missing"),
        KeyDoc("poolSize", "integer", "4", "connections kept open (1 to 64)"),
        KeyDoc("batchSize", "integer", "500", "at most this many rows in one C{INSERT} (1 to 10,000)"),
    )


def parseSqlOptions(section: ISection, schemes: tuple[str, ...], defaultPort: int) -> SqlOptions | None:
    """
    Read C{dsn} (C{scheme://user:password@host:port/database}), C{table}
    (C{wsserver_events}), C{poolSize} (4) and C{batchSize} (500).
    """
    from urllib.parse import unquote

    url = parseURL(section, "dsn", schemes, defaultPort)
    table = section.str("table", "wsserver_events")
    if not _TABLE.match(table):
        section.error("table", "must be a table name (letters, digits, _; optionally schema.table)")
    poolSize = section.int("poolSize", 4, 1, 64)
    batchSize = section.int("batchSize", 500, 1, 10000)
    if url is None:
        return None
    database = unquote(url.path.lstrip("/"))
    if not database or "/" in database:
        section.error("dsn", "must name the database (…/database)")
        return None
    return SqlOptions(
        host=url.hostname or "", port=url.port or defaultPort, user=unquote(url.username or ""),
        password=unquote(url.password or ""), database=database, table=table, poolSize=poolSize,
        batchSize=batchSize, destination=f"{redacted(url)} {table}",
    )


@attr.s(frozen=True, auto_attribs=True)
class SqlDialect:
    """
    How one database is spoken to.

    @ivar module: the DB-API module's name (for L{adbapi.ConnectionPool}).
    @ivar connect: the connect keywords for the options and a timeout.
    @ivar create: the C{CREATE TABLE IF NOT EXISTS} statement for a table.
    @ivar insert: the one statement (and its parameters, or L{None})
        that inserts the events of some payloads into a table, ignoring
        ids already there: the columns id, type, sender, recipients (JSON)
        and payload (JSON) of each (see L{eventRow}); it raises
        L{SqlRefused} when a payload is no event.
    @ivar lost: whether an error of the module means the connection is
        gone (rather than the rows refused).
    """

    module: str
    connect: Callable[[SqlOptions, float], dict[str, Any]]
    create: Callable[[str], str]
    insert: Callable[[str, Sequence[bytes]], tuple[str | bytes, Sequence[Any] | None]]
    lost: Callable[[BaseException], bool]


def eventFields(payload: bytes) -> tuple[str, "str | None", "str | None", "str | None"]:
    """
    The columns of one event but its payload: id, type, sender, recipients
    as JSON (the payload is valid UTF-8 then: orjson checks it).

    @raise SqlRefused: when it is no JSON object with an id.
    """
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise SqlRefused("the event is not JSON")
    if not isinstance(obj, dict) or obj.get("id") in (None, ""):
        raise SqlRefused("the event has no id")
    recipients = obj.get("recipients")
    sender = obj.get("sender")
    kind = obj.get("type")
    return (
        str(obj["id"]),
        None if kind is None else str(kind),
        None if sender is None else str(sender),
        None if recipients is None else orjson.dumps(recipients).decode(),
    )


def eventRow(payload: bytes) -> Row:
    """
    The columns of one event: id, type, sender, recipients as JSON, the
    payload as text.

    @raise SqlRefused: when it is no JSON object with an id.
    """
    return (*eventFields(payload), payload.decode("utf-8"))


class _Lost(Exception):
    """
    Raised in a pool thread: the connection failed (the original error is
    its message).
    """


@implementer(IBatchSender)
class SqlSender:
    """
    Sends event payloads to a table: every payload handed over in one turn
    of the reactor goes in one transaction (at most C{batchSize} rows each).

    @param name: the target's key (C{"targets[0]"}), for logs.
    @param options: the target's keys.
    @param dialect: the database's dialect.
    @param timeout: seconds to connect (C{connectionTimeoutSeconds}).
    @param reactor: runs the pool's threads and the timers.
    """

    log = Logger()

    def __init__(self, name: str, options: SqlOptions, dialect: SqlDialect, timeout: float, reactor: Any) -> None:
        self._name = name
        self._options = options
        self._dialect = dialect
        self._reactor = reactor
        self._backoff = Backoff()
        self._later = NextTurn(reactor)
        self._pool = adbapi.ConnectionPool(
            dialect.module, cp_min=1, cp_max=options.poolSize, cp_reconnect=True, cp_noisy=False,
            cp_reactor=reactor, **dialect.connect(options, timeout))
        self._queue: list[tuple[bytes, Deferred[None]]] = []
        self._flushCall: IDelayedCall | None = None
        self._probeCall: IDelayedCall | None = None
        #: when the next connection attempt is due, while not connected
        self._nextProbe = 0.0
        self._connected = False
        self._probing = False
        self._warned = False
        self._closed = False
        self._probe()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} {self._options.destination}>"

    @property
    def batchSize(self) -> int:
        """
        The rows the notifier hands over at once (one C{INSERT}).
        """
        return self._options.batchSize

    # connection

    def _probe(self) -> None:
        """
        Connect (create the table when missing); on failure try again after
        the backoff.
        """
        if self._closed or self._probing:
            return
        self._probing = True
        self._probeCall = None
        d = self._run(self._prepare)

        def up(_: object) -> None:
            self._probing = False
            self._backoff.reset()
            self._connected = True
            if self._warned:
                self._warned = False
                self.log.info("event target {target} ({destination}) is connected again",
                              target=self._name, destination=self._options.destination)

        def down(failure: Failure) -> None:
            self._probing = False
            if self._closed:
                return
            self._unreachable(_why(failure))

        d.addCallbacks(up, down)

    def _run(self, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run C{work(connection, *args)} in one of the pool's threads, with
        that thread's kept connection (made when it has none).
        """
        return deferToThreadPool(self._reactor, self._pool.threadpool, self._withConnection, work, *args)

    def _withConnection(self, work: Callable[..., Any], *args: Any) -> Any:
        """
        In a pool thread: C{work} with this thread's connection; one that
        failed is dropped from the pool, so the next use connects anew.

        @raise _Lost: the connection could not be made or failed.
        """
        try:
            conn = self._pool.connect()
        except Exception as e:
            raise _Lost(_text(e))
        try:
            return work(conn, *args)
        except _Lost:
            self._pool.disconnect(conn)
            raise

    def _prepare(self, conn: Any) -> None:
        """
        In a pool thread: create the table when missing.
        """
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self._dialect.create(self._options.table))
            finally:
                cursor.close()
            conn.commit()
        except Exception as e:
            # lost, or not allowed to create it: either way nothing can
            # be written until it works
            raise _Lost(_text(e))

    def _unreachable(self, why: str) -> None:
        """
        The connection is gone: warn once per outage, try again later.
        """
        self._connected = False
        if not self._warned:
            self._warned = True
            self.log.warn("event target {target} ({destination}) cannot be reached: {why}; "
                          "its deliveries wait", target=self._name, destination=self._options.destination, why=why)
        if self._probeCall is None and not self._probing and not self._closed:
            delay = self._backoff.next()
            self._nextProbe = self._reactor.seconds() + delay
            self._probeCall = self._reactor.callLater(delay, self._probe)

    def _waitFor(self) -> float:
        return max(0.5, self._nextProbe - self._reactor.seconds() + 0.1)

    # sending

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Queue one event for this turn's transaction.

        @return: fires when the row is committed (or was already there);
            fails with L{TargetUnreachable} while not connected, with
            L{SqlRefused} when the database refused the row.
        """
        if self._closed:
            return fail(TargetUnreachable("the target is closed", 1.0))
        if not self._connected:
            return self._later.fail(TargetUnreachable(f"{self._name} is not connected", self._waitFor()))
        d: Deferred[None] = Deferred()
        self._queue.append((payload, d))
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)
        return d

    def sendBatch(self, payloads: Sequence[bytes]) -> Deferred[list[BaseException | None]]:
        """
        Write C{payloads} in one transaction (C{batchSize} rows a
        statement) and answer once.

        @return: fires with an outcome per payload: L{None} when its row is
            committed (or was already there), an L{SqlRefused} when the
            database refused it; fails with L{TargetUnreachable} while not
            connected or when the connection went.
        """
        if self._closed:
            return fail(TargetUnreachable("the target is closed", 1.0))
        if not self._connected:
            return self._later.fail(TargetUnreachable(f"{self._name} is not connected", self._waitFor()))
        payloads = list(payloads)
        size = self._options.batchSize
        if len(payloads) <= size:
            return self._write(payloads)
        chunks = [self._write(payloads[start:start + size]) for start in range(0, len(payloads), size)]
        return gatherResults(chunks, consumeErrors=True).addCallbacks(
            lambda answers: [outcome for answer in answers for outcome in answer], lambda f: f.value.subFailure)

    def _flush(self) -> None:
        self._flushCall = None
        queue, self._queue = self._queue, []
        size = self._options.batchSize
        for start in range(0, len(queue), size):
            batch = queue[start:start + size]
            self._write([payload for payload, _ in batch]).addCallbacks(_answer, _failAll, callbackArgs=(batch,),
                                                                         errbackArgs=(batch,))

    def _write(self, payloads: list[bytes]) -> Deferred[list[BaseException | None]]:
        """
        Insert C{payloads} in one transaction: an outcome per payload.
        """
        def written(outcomes: list[str | None]) -> list[BaseException | None]:
            return [None if outcome is None else SqlRefused(outcome) for outcome in outcomes]

        def lost(failure: Failure) -> None:
            if not self._closed:
                self._unreachable(_why(failure))
            raise TargetUnreachable(f"{self._name} lost its connection", self._waitFor())

        return self._run(self._insert, payloads).addCallbacks(written, lost)

    def _insert(self, conn: Any, payloads: Sequence[bytes]) -> list[str | None]:
        """
        In a pool thread: insert the rows in one statement and
        transaction; when the database refuses it (or a payload is no
        event), each row in its own.

        @return: per payload, L{None} (committed) or why it was refused.
        @raise _Lost: the connection failed (nothing is known committed).
        """
        outcomes: list[str | None] = [None] * len(payloads)
        table = self._options.table
        insert = self._dialect.insert
        lost = self._dialect.lost
        try:
            statement: tuple[str | bytes, Sequence[Any] | None] | None = insert(table, payloads)
        except SqlRefused:
            statement = None
        if statement is not None:
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(*statement)
                finally:
                    cursor.close()
                conn.commit()
                return outcomes
            except Exception as e:
                if lost(e):
                    raise _Lost(_text(e))
                _rollback(conn)
        for i, payload in enumerate(payloads):
            try:
                # what is wrong with the event itself, before the database's word
                eventRow(payload)
                one = insert(table, [payload])
            except SqlRefused as e:
                outcomes[i] = str(e)
                continue
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(*one)
                finally:
                    cursor.close()
                conn.commit()
            except Exception as e:
                if lost(e):
                    raise _Lost(_text(e))
                outcomes[i] = _text(e)
                _rollback(conn)
        return outcomes

    def close(self) -> Deferred[None]:
        """
        Stop: no more connection attempts; the pool's connections closed.
        Sends not yet written fail as unreachable (they stay pending).
        """
        self._closed = True
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
            self._flushCall = None
        queue, self._queue = self._queue, []
        for _, waiter in queue:
            waiter.errback(TargetUnreachable("the target is closed", 1.0))
        self._later.flush()
        # joins the pool's threads: at once when idle (a statement under
        # way is bounded by the connect and read timeouts)
        self._pool.close()
        return succeed(None)


def _answer(outcomes: list[BaseException | None], batch: list[tuple[bytes, Deferred[None]]]) -> None:
    """
    Fire the waiter of each of C{batch}'s sends with its outcome.
    """
    for (_, waiter), outcome in zip(batch, outcomes):
        if outcome is None:
            waiter.callback(None)
        else:
            waiter.errback(outcome)


def _failAll(failure: Failure, batch: list[tuple[bytes, Deferred[None]]]) -> None:
    """
    Fail the waiter of each of C{batch}'s sends with C{failure}.
    """
    for _, waiter in batch:
        waiter.errback(failure.value)


def _rollback(conn: Any) -> None:
    """
    In a pool thread: roll back; a connection that cannot is lost.
    """
    try:
        conn.rollback()
    except Exception as e:
        raise _Lost(_text(e))


def _text(e: BaseException) -> str:
    """
    An error in one line.
    """
    return f"{type(e).__name__}: {' '.join(str(e).split())}" if str(e) else type(e).__name__


def _why(failure: Failure) -> str:
    """
    Why the connection failed, in one line (no password is in it: the
    drivers do not repeat it).
    """
    text = failure.getErrorMessage() or (failure.type.__name__ if failure.type else "error")
    return " ".join(text.split())
