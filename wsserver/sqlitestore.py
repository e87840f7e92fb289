# -*- test-case-name: tests.test_sqlitestore -*-
"""
The persistent stores (SPEC section 6, C{storage: "sqlite"}): the undelivered
queue and the event notifier's queue, in one SQLite file in the data
directory.

L{openDatabase} checks the file once, at start-up, on the calling thread: it
creates the data directory, refuses a file that is not a wsserver database
without touching it (a newer schema version too), creates the schema in a
new one and migrates an older version in place.  From then on every
query runs in the one thread of an L{adbapi.ConnectionPool}, so that the
reactor never waits for the disk and writes are serialized; each method of
the stores is a single short transaction, committed before its L{Deferred}
fires.

Durability: the file is in WAL mode with C{synchronous=NORMAL}: a commit
survives a crash of the process (not necessarily a power cut, which may lose
the last commits but never corrupts the file).  A message is deleted only by
L{SqliteUndeliveredStore.ack}, after it was written to the user's
connections, and a delivery only when a target accepted it, so a crash
between storing and delivering loses nothing (at least once).

Schema (version L{SCHEMA_VERSION}, marked with C{PRAGMA application_id =
APPLICATION_ID} and C{PRAGMA user_version}):

    - C{messages(id, shared, payload)}: each undelivered payload, once, however
      many users it waits for; C{shared} (a message kept by C{putMany}): each
      user gets it with C{recipients} rewritten to C{[user]};
    - C{undelivered(key, user, created, message)}: one row per user waiting
      for a message; C{key} increases in the order of C{put} and is never
      reused; C{user} is the unsigned 64-bit user id stored as the signed
      64-bit integer with the same bits.  The trigger C{undelivered_release}
      deletes a message with the last row that refers to it, whichever
      statement deletes that row (C{ack}, the age, C{maxPerUser});
    - C{events(id, primary_target, target, payload, attempts, not_before,
      state)}: C{state} is C{"pending"} or C{"failed"}; a delivery that
      succeeded is deleted and counted;
    - C{counters(name, value)}: C{"dropped"} (the undelivered messages
      dropped for their age or C{maxPerUser}) and C{"succeeded:<target>"};
    - the inbox (C{chat.history}, version 3; see L{wsserver.history.sqlite}):
      C{inbox_messages(id, payload)} each payload once, C{inbox(user, seq,
      created, message)} one row per entry of a user's inbox, and
      C{inbox_seq(user, seq)} the newest seq assigned to each user, so that
      a seq is never reused, even after its entries were dropped.  The
      trigger C{inbox_release} deletes a payload with its last entry.

Version 1 (before C{messages}: C{undelivered} held a copy of the payload per
user) and version 2 (before the inbox) are migrated in place when opened,
one version after the other, in one transaction: a crash or an error during
it leaves the file as it was.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Callable, Iterable, Sequence, TypeVar
from urllib.parse import quote

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .events.store import Delivery, IEventStore, emptyCounts
from .storage import IUndeliveredStore, forRecipient

__all__ = [
    "APPLICATION_ID",
    "DATABASE_FILENAME",
    "SCHEMA_VERSION",
    "Database",
    "SqliteEventStore",
    "SqliteUndeliveredStore",
    "StorageError",
    "openDatabase",
]

log = Logger()

#: The name of the database file in the data directory.
DATABASE_FILENAME = "wsserver.sqlite3"

#: C{PRAGMA application_id} of a wsserver database: C{"wssv"} in ASCII.
APPLICATION_ID = 0x77737376

#: C{PRAGMA user_version}: the version of the schema below.
SCHEMA_VERSION = 3

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

_UNDELIVERED = [
    """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    shared INTEGER NOT NULL,
    payload BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS undelivered (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    user INTEGER NOT NULL,
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
    user INTEGER NOT NULL,
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
    user INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
)""",
]

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
    """CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)""",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)",
]

_DROPPED = "dropped"
_SUCCEEDED = "succeeded:"
_PENDING = "pending"
_FAILED = "failed"

_T = TypeVar("_T")


class StorageError(Exception):
    """
    The database cannot be opened or used; the message says which file and
    why.
    """


def _signed(userId: int) -> int:
    """
    The signed 64-bit integer with the same bits as the unsigned 64-bit
    C{userId}: SQLite's integers are signed.
    """
    return userId - (1 << 64) if userId >= (1 << 63) else userId


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
    dropped = _prepare(path, new)
    return Database(path, dropped, reactor)


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


def _prepare(path: str, new: bool) -> int:
    """
    Create the schema (a new database), migrate it (an older version) or
    check it, switch the file to WAL mode, and read the persisted
    C{dropped} counter.
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
            (dropped,) = connection.execute("SELECT value FROM counters WHERE name = ?", (_DROPPED,)).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise _cannotOpen(path, e) from e
    return int(dropped)


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


#: For each older schema version, what brings it to the next version.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrateFrom1, 2: _migrateFrom2}


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

    def __init__(self, path: str, dropped: int, reactor: Any) -> None:
        self.path = path
        self._dropped = dropped
        self._closed = False
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_configure,
            cp_reactor=reactor,
        )

    def undelivered(self, ttlSeconds: float, maxPerUser: int) -> SqliteUndeliveredStore:
        """
        The undelivered queue in this database.

        @param ttlSeconds: messages older than this are dropped.
        @param maxPerUser: over this many for one user, the oldest are dropped.
        """
        return SqliteUndeliveredStore(self, ttlSeconds, maxPerUser)

    def events(self) -> SqliteEventStore:
        """
        The event notifier's queue in this database.
        """
        return SqliteEventStore(self)

    def inbox(self, clock: Any, ttlSeconds: float, maxPerUser: int) -> Any:
        """
        The per-user inboxes (C{chat.history}) in this database; reads the
        newest seq of every user (start-up only: blocks the calling thread).
        """
        from .history.sqlite import SqliteInbox

        return SqliteInbox(self, clock, ttlSeconds, maxPerUser)

    def run(self, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """
        Run C{interaction(cursor, *args)} in the database thread, in one
        transaction committed before the result fires (rolled back if it
        raises).
        """
        if self._closed:
            return fail(StorageError(f"wsserver database {self.path} is closed"))
        d: Deferred[_T] = self._pool.runInteraction(interaction, *args)
        return d

    def close(self) -> Deferred[None]:
        """
        Close the database once the queries already asked for are done.
        Later calls of the stores' methods fail with L{StorageError}.

        Queries (and closing) wait for the reactor to run: before it does,
        the pool has no thread, so nothing keeps a process from exiting.
        """
        if self._closed:
            return succeed(None)
        flushed = self.run(lambda cursor: None)
        self._closed = True

        def closePool(result: object) -> object:
            self._pool.close()
            return result

        return flushed.addBoth(closePool).addCallback(lambda _: None)


@implementer(IUndeliveredStore)
class SqliteUndeliveredStore:
    """
    The undelivered queue in SQLite: it survives restarts.  Behaves like
    L{wsserver.storage.MemoryUndeliveredStore}, except that a message is
    dropped for its age wherever it is in its user's queue (the memory store
    looks at the oldest ones only; the same when time does not go back).
    A message for many users is one row of C{messages}; the copies for each
    user are made when fetched, in the database thread.

    @ivar dropped: how many messages were dropped for C{maxPerUser} or their
        age, ever (persisted); updated when a method's result fires.
    """

    def __init__(self, database: Database, ttlSeconds: float, maxPerUser: int) -> None:
        self._db = database
        self._ttl = ttlSeconds
        self._max = maxPerUser
        self.dropped = database._dropped

    def _counted(self, result: tuple[_T, int | None]) -> _T:
        value, dropped = result
        if dropped is not None:
            self.dropped = self._db._dropped = dropped
        return value

    def put(self, userId: int, payload: bytes, now: float) -> Deferred[None]:
        return self._db.run(_put, [_signed(userId)], bytes(payload), False, now, self._max).addCallback(
            self._counted
        )

    def putMany(self, userIds: Sequence[int], payload: bytes, now: float) -> Deferred[None]:
        if not userIds:
            return succeed(None)
        users = [_signed(userId) for userId in userIds]
        return self._db.run(_put, users, bytes(payload), True, now, self._max).addCallback(self._counted)

    def fetch(self, userId: int, now: float) -> Deferred[list[tuple[int, bytes]]]:
        return self._db.run(_fetch, userId, now, self._ttl).addCallback(self._counted)

    def ack(self, userId: int, keys: Iterable[int]) -> Deferred[None]:
        rows = [(_signed(userId), key) for key in keys]
        if not rows:
            return succeed(None)
        return self._db.run(_ack, rows)

    def prune(self, now: float) -> Deferred[int]:
        return self._db.run(_prune, now, self._ttl).addCallback(self._counted)

    def pending(self, userId: int) -> Deferred[int]:
        return self._db.run(_pending, _signed(userId))


def _addDropped(cursor: Any, n: int) -> int | None:
    """
    Count C{n} more dropped messages; the new total, or L{None} if C{n} is 0.
    """
    if not n:
        return None
    cursor.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, _DROPPED))
    cursor.execute("SELECT value FROM counters WHERE name = ?", (_DROPPED,))
    return int(cursor.fetchone()[0])


def _put(
    cursor: Any, users: list[int], payload: bytes, shared: bool, now: float, maxPerUser: int
) -> tuple[None, int | None]:
    cursor.execute("INSERT INTO messages (shared, payload) VALUES (?, ?)", (int(shared), payload))
    message = cursor.lastrowid
    cursor.executemany(
        "INSERT INTO undelivered (user, created, message) VALUES (?, ?, ?)", [(user, now, message) for user in users]
    )
    # each user's rows after the newest maxPerUser (usually none)
    cursor.executemany(
        "DELETE FROM undelivered WHERE key IN"
        " (SELECT key FROM undelivered WHERE user = ? ORDER BY key DESC LIMIT -1 OFFSET ?)",
        [(user, maxPerUser) for user in users],
    )
    return None, _addDropped(cursor, cursor.rowcount)


def _fetch(cursor: Any, userId: int, now: float, ttl: float) -> tuple[list[tuple[int, bytes]], int | None]:
    user = _signed(userId)
    cursor.execute("DELETE FROM undelivered WHERE user = ? AND ? - created > ?", (user, now, ttl))
    dropped = _addDropped(cursor, cursor.rowcount)
    cursor.execute(
        "SELECT undelivered.key, messages.shared, messages.payload FROM undelivered"
        " JOIN messages ON messages.id = undelivered.message WHERE undelivered.user = ? ORDER BY undelivered.key",
        (user,),
    )
    return [
        (key, forRecipient(bytes(payload), userId) if shared else bytes(payload))
        for key, shared, payload in cursor.fetchall()
    ], dropped


def _ack(cursor: Any, rows: list[tuple[int, int]]) -> None:
    cursor.executemany("DELETE FROM undelivered WHERE user = ? AND key = ?", rows)


def _prune(cursor: Any, now: float, ttl: float) -> tuple[int, int | None]:
    # the first condition lets SQLite use the index on created (the slack
    # covers rounding), the second is the exact rule of fetch
    cursor.execute(
        "DELETE FROM undelivered WHERE created < ? AND ? - created > ?",
        (now - ttl + 1.0, now, ttl),
    )
    n = cursor.rowcount
    return n, _addDropped(cursor, n)


def _pending(cursor: Any, user: int) -> int:
    cursor.execute("SELECT COUNT(*) FROM undelivered WHERE user = ?", (user,))
    return int(cursor.fetchone()[0])


@implementer(IEventStore)
class SqliteEventStore:
    """
    The event notifier's queue in SQLite: pending and failed deliveries and
    the per-target success counters survive restarts.  Behaves like
    L{wsserver.events.store.MemoryEventStore}.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    def add(self, items: list[tuple[str, bytes]], now: float) -> Deferred[list[Delivery]]:
        rows = [(primary, primary, bytes(payload), 0, now, _PENDING) for primary, payload in items]
        if not rows:
            return succeed([])
        return self._db.run(_add, rows)

    def due(self, now: float, limit: int, skip: frozenset[int]) -> Deferred[list[Delivery]]:
        if limit <= 0:
            return succeed([])
        return self._db.run(_due, now, limit, frozenset(skip))

    def nextDue(self, skip: frozenset[int]) -> Deferred[float | None]:
        return self._db.run(_nextDue, frozenset(skip))

    def update(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_update, delivery, _PENDING)

    def succeeded(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_succeeded, delivery)

    def failed(self, delivery: Delivery) -> Deferred[None]:
        return self._db.run(_update, delivery, _FAILED)

    def counts(self) -> Deferred[dict[str, dict[str, int]]]:
        return self._db.run(_counts)

    def close(self) -> Deferred[None]:
        """
        Wait for the queries already asked for; the database itself is closed
        by L{Database.close}, as the undelivered queue may still use it.
        """
        return self._db.run(lambda cursor: None)


_DELIVERY_COLUMNS = "id, primary_target, target, payload, attempts, not_before"


def _delivery(row: tuple[Any, ...]) -> Delivery:
    id, primary, target, payload, attempts, notBefore = row
    return Delivery(id, primary, target, bytes(payload), attempts, notBefore)


def _add(cursor: Any, rows: list[tuple[Any, ...]]) -> list[Delivery]:
    cursor.executemany(
        "INSERT INTO events (primary_target, target, payload, attempts, not_before, state)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    # the transaction holds the write lock: the newest ids are these rows'
    cursor.execute("SELECT id FROM events ORDER BY id DESC LIMIT ?", (len(rows),))
    ids = sorted(id for (id,) in cursor.fetchall())
    return [Delivery(id, primary, target, payload, attempts, notBefore)
            for id, (primary, target, payload, attempts, notBefore, _) in zip(ids, rows)]


def _due(cursor: Any, now: float, limit: int, skip: frozenset[int]) -> list[Delivery]:
    cursor.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM events WHERE state = ? AND not_before <= ? ORDER BY id LIMIT ?",
        (_PENDING, now, limit + len(skip)),
    )
    return [_delivery(row) for row in cursor.fetchall() if row[0] not in skip][:limit]


def _nextDue(cursor: Any, skip: frozenset[int]) -> float | None:
    # of the len(skip) + 1 earliest, at least one is not skipped
    cursor.execute(
        "SELECT id, not_before FROM events WHERE state = ? ORDER BY not_before LIMIT ?",
        (_PENDING, len(skip) + 1),
    )
    for id, notBefore in cursor.fetchall():
        if id not in skip:
            return float(notBefore)
    return None


def _update(cursor: Any, delivery: Delivery, state: str) -> None:
    cursor.execute(
        "UPDATE events SET primary_target = ?, target = ?, payload = ?, attempts = ?, not_before = ?, state = ?"
        " WHERE id = ? AND state = ?",
        (delivery.primary, delivery.target, bytes(delivery.payload), delivery.attempts, delivery.notBefore,
         state, delivery.id, _PENDING),
    )


def _succeeded(cursor: Any, delivery: Delivery) -> None:
    cursor.execute("DELETE FROM events WHERE id = ? AND state = ?", (delivery.id, _PENDING))
    if cursor.rowcount:
        cursor.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (_SUCCEEDED + delivery.target,),
        )


def _counts(cursor: Any) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    cursor.execute("SELECT name, value FROM counters")
    for name, value in cursor.fetchall():
        if name.startswith(_SUCCEEDED):
            counts.setdefault(name[len(_SUCCEEDED):], emptyCounts())["succeeded"] += value
    cursor.execute("SELECT target, state, attempts > 0, COUNT(*) FROM events GROUP BY target, state, attempts > 0")
    for target, state, retried, n in cursor.fetchall():
        key = _FAILED if state == _FAILED else "retrying" if retried else _PENDING
        counts.setdefault(target, emptyCounts())[key] += n
    return counts
