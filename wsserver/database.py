# -*- test-case-name: tests.test_database -*-
"""
The wsserver database: one SQLite file in the data directory, under every
store that survives a restart (the undelivered queue, L{wsserver.queue.sqlite};
the event deliveries, L{wsserver.events.sqlite}; the inbox,
L{wsserver.history.sqlite}).  This module owns the file: its schema, its
versions and their migrations, and the one writer; the stores own their
queries and use nothing of each other.

L{openDatabase} checks the file once, at start-up, on the calling thread: it
creates the data directory, refuses a file that is not a wsserver database
without touching it (a newer schema version too), creates the schema in a
new one and migrates an older version in place.  From then on every
query runs in the one thread of an L{adbapi.ConnectionPool} with one
connection (L{Database.run}), so that the reactor never waits for the disk
and writes are serialized; each method of the stores is a single short
transaction, committed before its L{Deferred} fires.  L{BatchWriter} groups
the writes of one reactor turn into one transaction, one in flight at a
time (the group commit of the inbox and the undelivered queue).

Durability: the file is in WAL mode with C{synchronous=NORMAL}: a commit
survives a crash of the process (not necessarily a power cut, which may lose
the last commits but never corrupts the file).  A message is deleted only by
the undelivered queue's C{ack}, after it was written to the user's
connections, and a delivery only when a target accepted it, so a crash
between storing and delivering loses nothing (at least once).

Schema (version L{SCHEMA_VERSION}, marked with C{PRAGMA application_id =
APPLICATION_ID} and C{PRAGMA user_version}):

    - C{messages(id, shared, payload)}: each undelivered payload, once, however
      many users it waits for; C{shared} (a message kept by C{putMany}): each
      user gets it with C{recipients} rewritten to C{[user]};
    - C{undelivered(key, user, created, message)}: one row per user waiting
      for a message; C{key} increases in the order of C{put} and is never
      reused; C{user} is the user id (see L{signed}).  The trigger C{undelivered_release}
      deletes a message with the last row that refers to it, whichever
      statement deletes that row (C{ack}, the age, C{maxPerUser});
    - C{events(id, primary_target, target, payload, attempts, not_before,
      state)}: C{state} is C{"pending"} or C{"failed"}; a delivery that
      succeeded is deleted and counted; the index C{events_due} (state,
      not_before) finds the next due time, C{events_pending} (state, id,
      not_before, version 5) the due deliveries oldest first;
    - C{counters(name, value)}: C{"dropped"} (the undelivered messages
      dropped for their age or C{maxPerUser}) and C{"succeeded:<target>"};
    - the inbox (C{chat.history}, version 3; see L{wsserver.history.sqlite}):
      C{inbox_messages(id, payload)} each payload once, C{inbox(user, seq,
      created, message)} one row per entry of a user's inbox, and
      C{inbox_seq(user, seq)} the newest seq assigned to each user, so that
      a seq is never reused, even after its entries were dropped.  The
      trigger C{inbox_release} deletes a payload with its last entry.

Every C{user} column has no type affinity (C{BLOB}): a numeric user id is
the signed 64-bit integer with the bits of the unsigned id, any other
(C{chat.userIds: "any"}) is its text, which SQLite stores as it is and never
compares equal to an integer (version 3 declared them C{INTEGER}, whose
affinity would turn the text C{"-5"} into the integer -5).

Version 1 (before C{messages}: C{undelivered} held a copy of the payload per
user) version 2 (before the inbox), version 3 (C{INTEGER} user columns, numeric
ids only) and version 4 (before C{events_pending}) are migrated in place when opened,
one version after the other, in one transaction: a crash or an error during
it leaves the file as it was.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Callable, Generic, Protocol, TypeVar
from urllib.parse import quote

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .ids import UserId

__all__ = [
    "APPLICATION_ID",
    "DATABASE_FILENAME",
    "SCHEMA_VERSION",
    "BatchWriter",
    "Database",
    "HandsOver",
    "StorageError",
    "openDatabase",
    "signed",
    "unsigned",
]

log = Logger()

#: The name of the database file in the data directory.
DATABASE_FILENAME = "wsserver.sqlite3"

#: C{PRAGMA application_id} of a wsserver database: C{"wssv"} in ASCII.
APPLICATION_ID = 0x77737376

#: C{PRAGMA user_version}: the version of the schema below.
SCHEMA_VERSION = 5

_SQLITE_MAGIC = b"SQLite format 3\x00"

#: The names in C{sqlite_master} of a database of each known version.
_NAMES = {
    1: frozenset({"undelivered", "events", "counters", "undelivered_user", "undelivered_created", "events_due"}),
    2: frozenset({
        "messages", "undelivered", "events", "counters",
        "undelivered_user", "undelivered_created", "undelivered_message", "undelivered_release", "events_due",
    }),
}
_NAMES[3] = _NAMES[2] | {
    "inbox_messages", "inbox", "inbox_seq", "inbox_created", "inbox_message", "inbox_release",
}
_NAMES[4] = _NAMES[3]
_NAMES[5] = _NAMES[4] | {"events_pending"}

_UNDELIVERED = [
    """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    shared INTEGER NOT NULL,
    payload BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS undelivered (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    user BLOB NOT NULL,
    created REAL NOT NULL,
    message INTEGER NOT NULL REFERENCES messages (id)
)""",
    "CREATE INDEX IF NOT EXISTS undelivered_user ON undelivered (user, key)",
    "CREATE INDEX IF NOT EXISTS undelivered_created ON undelivered (created)",
    "CREATE INDEX IF NOT EXISTS undelivered_message ON undelivered (message)",
    """CREATE TRIGGER IF NOT EXISTS undelivered_release AFTER DELETE ON undelivered
WHEN NOT EXISTS (SELECT 1 FROM undelivered WHERE message = OLD.message)
BEGIN
    DELETE FROM messages WHERE id = OLD.message;
END""",
]

_INBOX = [
    """CREATE TABLE IF NOT EXISTS inbox_messages (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS inbox (
    user BLOB NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    message INTEGER NOT NULL REFERENCES inbox_messages (id),
    PRIMARY KEY (user, seq)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS inbox_created ON inbox (created)",
    "CREATE INDEX IF NOT EXISTS inbox_message ON inbox (message)",
    """CREATE TRIGGER IF NOT EXISTS inbox_release AFTER DELETE ON inbox
WHEN NOT EXISTS (SELECT 1 FROM inbox WHERE message = OLD.message)
BEGIN
    DELETE FROM inbox_messages WHERE id = OLD.message;
END""",
    """CREATE TABLE IF NOT EXISTS inbox_seq (
    user BLOB PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID""",
]

#: the due deliveries oldest first (the notifier's read of what is due)
#: walk this index in id order and stop at the limit; with C{events_due}
#: alone every due row of the backlog was sorted for each read
_EVENTS_PENDING = "CREATE INDEX IF NOT EXISTS events_pending ON events (state, id, not_before)"

_SCHEMA = _UNDELIVERED + _INBOX + [
    """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    primary_target TEXT NOT NULL,
    target TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    state TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS events_due ON events (state, not_before)",
    _EVENTS_PENDING,
    """CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)""",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)",
]

_T = TypeVar("_T")
_I = TypeVar("_I")


class StorageError(Exception):
    """
    The database cannot be opened or used; the message says which file and
    why.
    """


def signed(userId: UserId) -> int | str:
    """
    What a user column holds for C{userId}: for a numeric id, the signed
    64-bit integer with the same bits (SQLite's integers are signed); any
    other id as it is (text, which no integer equals).
    """
    if type(userId) is not int:
        return userId
    return userId - (1 << 64) if userId >= (1 << 63) else userId  # type: ignore[operator]


def unsigned(user: int | str) -> UserId:
    """
    The user id stored as C{user} (see L{signed}).
    """
    if type(user) is not int:
        return user
    return user + (1 << 64) if user < 0 else user  # type: ignore[operator]


def openDatabase(path: str, reactor: Any = None) -> Database:
    """
    Open (or create) the wsserver database at C{path}, creating its directory
    if needed.  Blocks the calling thread (once, at start-up).

    @param path: the database file, normally C{<dataDir>/}L{DATABASE_FILENAME}.
    @param reactor: an L{IReactorThreads} and L{IReactorCore} provider that
        runs the queries' thread; the global reactor when L{None}.

    @raise StorageError: the directory or the file cannot be created or
        written, or the file is not a wsserver database (nor empty): such a
        file is left untouched.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    path = os.path.abspath(path)
    _makeDirectory(path)
    new = _inspect(path)
    _prepare(path, new)
    return Database(path, reactor)


def _cannotOpen(path: str, reason: object) -> StorageError:
    return StorageError(f"cannot open wsserver database {path}: {reason}")


def _refuse(path: str, why: str) -> StorageError:
    return StorageError(f"{path} is not a wsserver database ({why}); refusing to touch it")


def _makeDirectory(path: str) -> None:
    directory = os.path.dirname(path)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise _cannotOpen(path, f"{directory} is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise _cannotOpen(path, e.strerror or e) from e


def _inspect(path: str) -> bool:
    """
    Check, without writing anything, that C{path} is absent, empty, or a
    wsserver database of a schema version this code knows.

    @return: whether the database is new (absent or empty).
    """
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return True
    except OSError as e:
        raise _cannotOpen(path, e.strerror or e) from e
    if not header:
        return True
    if not header.startswith(_SQLITE_MAGIC):
        raise _refuse(path, "it is not an SQLite file: corrupted, or another kind of file")
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)
        try:
            applicationId = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.OperationalError as e:
        raise _cannotOpen(path, e) from e
    except sqlite3.DatabaseError as e:
        raise _refuse(path, f"it is not a valid SQLite database: {e}") from e
    names = {name for name in names if not name.startswith("sqlite_")}
    if applicationId == 0:
        if names:
            raise _refuse(path, "it has other tables")
        return True
    if applicationId != APPLICATION_ID:
        raise _refuse(path, f"it belongs to another application: application_id {applicationId:#x}")
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"wsserver database {path} has schema version {version}, newer than this"
            f" wsserver's ({SCHEMA_VERSION}); refusing to touch it"
        )
    if not names <= _NAMES.get(version, _NAMES[SCHEMA_VERSION]):
        raise _refuse(path, "it has other tables")
    return False


def _prepare(path: str, new: bool) -> None:
    """
    Create the schema (a new database), migrate it (an older version) or
    check it, and switch the file to WAL mode.
    """
    try:
        # the file system's own reason (permissions, ...) rather than
        # SQLite's "unable to open database file"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as e:
        raise _cannotOpen(path, e.strerror or e) from e
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                if new:
                    for statement in _creation():
                        connection.execute(statement)
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                old = version
                while version in _MIGRATIONS:
                    # one version at a time: each migration ends by setting
                    # the next version
                    _MIGRATIONS[version](connection)
                    version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    raise StorageError(f"wsserver database {path} has unknown schema version {version}")
                if old != version:
                    log.info(
                        "wsserver database {path}: schema version {old} migrated to {new}",
                        path=path,
                        old=old,
                        new=SCHEMA_VERSION,
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                log.warn(
                    "wsserver database {path} stays in journal mode {mode}: WAL is not supported here",
                    path=path,
                    mode=mode,
                )
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise _cannotOpen(path, e) from e


def _creation() -> list[str]:
    """
    The statements that create the schema and mark the database as ours, to
    run in one transaction (C{executescript} would commit on its own).
    """
    return _SCHEMA + [f"PRAGMA application_id = {APPLICATION_ID}", f"PRAGMA user_version = {SCHEMA_VERSION}"]


def _migrateFrom1(connection: sqlite3.Connection) -> None:
    """
    Migrate a database of schema version 1, in the caller's transaction:
    each row of the old C{undelivered} (a payload per user) becomes a message
    and a row that refers to it, with the same key; keys stay never reused.
    """
    row = connection.execute("SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'undelivered'").fetchone()
    sequence = row[0] or 0
    connection.execute("DROP INDEX IF EXISTS undelivered_user")
    connection.execute("DROP INDEX IF EXISTS undelivered_created")
    connection.execute("ALTER TABLE undelivered RENAME TO undelivered_v1")
    for statement in _UNDELIVERED:
        connection.execute(statement)
    connection.execute("INSERT INTO messages (id, shared, payload) SELECT key, 0, payload FROM undelivered_v1")
    connection.execute(
        "INSERT INTO undelivered (key, user, created, message)"
        " SELECT key, user, created, key FROM undelivered_v1 ORDER BY key"
    )
    connection.execute("DROP TABLE undelivered_v1")
    (highest,) = connection.execute("SELECT COALESCE(MAX(key), 0) FROM undelivered").fetchone()
    connection.execute("DELETE FROM sqlite_sequence WHERE name IN ('undelivered', 'undelivered_v1')")
    connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('undelivered', ?)", (max(sequence, highest),))
    connection.execute("PRAGMA user_version = 2")


def _migrateFrom2(connection: sqlite3.Connection) -> None:
    """
    Migrate a database of schema version 2, in the caller's transaction:
    add the (empty) inbox tables.
    """
    for statement in _INBOX:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 3")


def _migrateFrom3(connection: sqlite3.Connection) -> None:
    """
    Migrate a database of schema version 3, in the caller's transaction:
    the user columns of C{undelivered}, C{inbox} and C{inbox_seq} lose their
    C{INTEGER} affinity (so that string ids fit); every row is copied as it
    is (numeric ids keep their values), keys and seqs stay never reused.
    """
    row = connection.execute("SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'undelivered'").fetchone()
    sequence = row[0] or 0
    for kind, name in (("TRIGGER", "undelivered_release"), ("TRIGGER", "inbox_release"),
                       ("INDEX", "undelivered_user"), ("INDEX", "undelivered_created"),
                       ("INDEX", "undelivered_message"), ("INDEX", "inbox_created"), ("INDEX", "inbox_message")):
        connection.execute(f"DROP {kind} IF EXISTS {name}")
    for table in ("undelivered", "inbox", "inbox_seq"):
        connection.execute(f"ALTER TABLE {table} RENAME TO {table}_v3")
    for statement in _UNDELIVERED + _INBOX:
        connection.execute(statement)
    connection.execute(
        "INSERT INTO undelivered (key, user, created, message)"
        " SELECT key, user, created, message FROM undelivered_v3 ORDER BY key"
    )
    connection.execute(
        "INSERT INTO inbox (user, seq, created, message) SELECT user, seq, created, message FROM inbox_v3")
    connection.execute("INSERT INTO inbox_seq (user, seq) SELECT user, seq FROM inbox_seq_v3")
    for table in ("undelivered", "inbox", "inbox_seq"):
        connection.execute(f"DROP TABLE {table}_v3")
    (highest,) = connection.execute("SELECT COALESCE(MAX(key), 0) FROM undelivered").fetchone()
    connection.execute("DELETE FROM sqlite_sequence WHERE name IN ('undelivered', 'undelivered_v3')")
    connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('undelivered', ?)", (max(sequence, highest),))
    connection.execute("PRAGMA user_version = 4")


def _migrateFrom4(connection: sqlite3.Connection) -> None:
    """
    Migrate a database of schema version 4, in the caller's transaction:
    the index C{events_pending} of the due deliveries in id order.
    """
    connection.execute(_EVENTS_PENDING)
    connection.execute("PRAGMA user_version = 5")


#: For each older schema version, what brings it to the next version.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrateFrom1, 2: _migrateFrom2, 3: _migrateFrom3, 4: _migrateFrom4,
}


def _configure(connection: sqlite3.Connection) -> None:
    """
    Set the per-connection options of a pool connection.
    """
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA busy_timeout = 10000")


class Database:
    """
    An open wsserver database: the stores in it share one connection, used
    from one thread.  Made by L{openDatabase}.

    @ivar path: the absolute path of the file.
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self.reactor = reactor
        self._closed = False
        #: transactions asked for and not finished (L{close} waits for them)
        self._running = 0
        #: fires when a L{close} that started is done
        self._closing: Deferred[None] | None = None
        #: the group commits of the stores, handed over at L{close}
        self._writers: list[HandsOver] = []
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_reactor=reactor,
        )

    def readNow(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        """
        The rows of one read-only C{query}, on the calling thread, from a
        connection of its own: for what a store loads once, at start-up (it
        blocks the reactor, so never later).
        """
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(query, parameters).fetchall()
        finally:
            connection.close()

    def run(self, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """
        Run C{interaction(cursor, *args)} in the database thread, in one
        transaction committed before the result fires (rolled back if it
        raises).  Accepted while a L{close} waits (what a finished query
        makes its caller write still gets written); refused once closed.
        """
        if self._closed:
            return fail(StorageError(f"wsserver database {self.path} is closed"))
        self._running += 1
        d: Deferred[_T] = self._pool.runInteraction(interaction, *args)
        d.addBoth(self._ran)
        return d

    def _ran(self, result: _T) -> _T:
        """
        A transaction finished: when a L{close} waits and none runs, look
        again at the end of this turn, once its caller's callbacks (and the
        writes they ask for) ran.
        """
        self._running -= 1
        if self._closing is not None and not self._running:
            self.reactor.callLater(0, self._drain)
        return result

    def close(self) -> Deferred[None]:
        """
        Close the database once it is idle: the group commits are handed
        over, then the queries already asked for, and those that their
        results make the stores ask for (a write after a read), are
        done.  Later calls of the stores' methods fail with L{StorageError}.

        Queries (and closing) wait for the reactor to run: before it does,
        the pool has no thread, so nothing keeps a process from exiting.
        """
        if self._closed:
            return succeed(None)
        if self._closing is None:
            self._closing = Deferred()
            # at least one round trip through the database thread
            self.run(lambda cursor: None).addErrback(lambda f: None)
            self._drain()
        waiter: Deferred[None] = Deferred()
        self._closing.addBoth(lambda _: waiter.callback(None))
        return waiter

    def _drain(self) -> None:
        """
        Hand the group commits over; close the pool if nothing runs then.
        """
        if self._closed or self._closing is None:
            return
        for writer in self._writers:
            writer.handOver()
        if self._running:
            return  # L{_ran} comes back
        self._closed = True
        self._pool.close()
        self._closing.callback(None)

    def addWriter(self, writer: HandsOver) -> None:
        """
        Hand what C{writer} holds to the database thread when the database
        is closed, so that a stop loses none of it (writers added first
        hand over first: a store that holds items back for its writer adds
        itself before it).
        """
        self._writers.append(writer)


class HandsOver(Protocol):
    """
    What holds writes back: handed over when the database closes.
    """

    def handOver(self) -> None:
        """
        Hand what is held to the database thread now.
        """


class BatchWriter(Generic[_I]):
    """
    Group commit for a store that must not make routing wait for the disk:
    the items added in one turn of the reactor are written in one
    transaction, C{write(cursor, items, *args)}.  One write is in flight at a time:
    what is added meanwhile waits for it and goes in the next transaction,
    so batches grow with the load instead of queueing a transaction per turn
    behind a slow disk.

    @param database: where to write.
    @param clock: schedules the write at the end of the turn.
    @param write: writes a batch, in the database thread.
    @param what: what the items are, for the log line of a failed write.
    @param args: more arguments of C{write}.
    @param settled: called in the reactor thread with each batch and what
        its C{write} answered, or the L{Failure} (already logged), before
        the waiters of L{committed} fire: a store's counters.
    """

    log = Logger()

    def __init__(self, database: Database, clock: IReactorTime, write: Callable[..., Any], what: str,
                 *args: Any, settled: Callable[[list[_I], Any], None] | None = None) -> None:
        self._db = database
        self._clock = clock
        self._write = write
        self._what = what
        self._args = args
        self._settled = settled
        database.addWriter(self)
        self._batch: list[_I] = []
        self._waiters: list[Deferred[None]] = []
        self._flushCall: IDelayedCall | None = None
        #: transactions handed to the database thread and not finished
        self._inflight = 0

    def add(self, item: _I) -> None:
        """
        Write C{item} with the others of this turn.
        """
        self._batch.append(item)
        if self._flushCall is None and not self._inflight:
            self._flushCall = self._clock.callLater(0, self._flush)

    def committed(self) -> Deferred[None]:
        """
        Fires once every item added so far is committed; fails if its write
        failed.
        """
        if self._flushCall is None and not self._inflight and not self._batch:
            # nothing pending: every item added so far was written (no
            # transaction for nothing, which a closed database would fail)
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._flushCall is None and not self._inflight:
            self._flush()
        return waiter

    def handOver(self) -> None:
        """
        Hand what waits to the database thread now: a query asked for after
        this runs after it (the thread runs them in order), so it sees every
        item added before.
        """
        if self._batch or (self._waiters and not self._inflight):
            self._flush()

    def _flush(self) -> None:
        """
        Hand the batch of this turn to the database thread (one transaction).
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        batch, self._batch = self._batch, []
        waiters, self._waiters = self._waiters, []
        self._inflight += 1
        if batch:
            d = self._db.run(self._write, batch, *self._args)
        else:
            d = self._db.run(lambda cursor: None)

        settled = self._settled

        def written(result: Any) -> None:
            if settled is not None and batch:
                settled(batch, result)
            for waiter in waiters:
                waiter.callback(None)

        def failed(f: Failure) -> None:
            self.log.failure("could not write {n} {what}", f, n=len(batch), what=self._what)
            if settled is not None and batch:
                settled(batch, f)
            for waiter in waiters:
                waiter.errback(f)

        def next(_: Any) -> None:
            self._inflight -= 1
            if (self._batch or self._waiters) and not self._inflight and self._flushCall is None:
                self._flush()

        d.addCallbacks(written, failed).addBoth(next)
