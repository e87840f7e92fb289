# -*- test-case-name: tests.test_targets_sql -*-
"""
The C{mysql} event target (SPEC section 12), for MySQL and MariaDB: each
event a row of C{table} (created when missing, C{payload} as C{JSON}),
through a pool of kept PyMySQL connections (L{twisted.enterprise.adbapi});
a resend changes nothing (C{INSERT IGNORE}).  The rows of a batch go in one
multi-row C{INSERT}, built as bytes: the payloads as string literals with
their backslashes and quotes escaped, the short columns as hex literals
(no parameters for PyMySQL to escape).  The shared machinery is
L{wsserver.events.targets.sql}.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import ISection
from .sql import SqlDialect, SqlOptions, SqlSender, eventFields, parseSqlOptions, sqlKeys

__all__ = ["KEYS", "dialect", "parse", "sender"]

#: the keys L{parse} reads
KEYS = sqlKeys("mysql")

#: server errors that mean we are not (or no longer) let in: access denied
#: (1044, 1045), unknown database (1049), too many connections (1040),
#: shutdown (1053), connection killed (1927, 4031)
_NOT_CONNECTED = frozenset({1040, 1044, 1045, 1049, 1053, 1927, 4031})


#: run at each connect: the session's sql_mode without NO_BACKSLASH_ESCAPES
_BACKSLASH_ESCAPES = ("SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), "
                      "',NO_BACKSLASH_ESCAPES,', ','))")


def parse(section: ISection) -> SqlOptions | None:
    """
    The keys of a C{mysql} target: C{dsn}
    (C{mysql://user:pass@host:port/db}), C{table}, C{poolSize}, C{batchSize}.
    """
    return parseSqlOptions(section, ("mysql", "mariadb"), 3306)


def _connect(options: SqlOptions, timeout: float) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "host": options.host, "port": options.port, "user": options.user, "password": options.password,
        "database": options.database, "charset": "utf8mb4", "autocommit": False,
        # a backslash escapes in our literals (L{_quoted}), whatever the
        # server's default sql_mode says
        "init_command": _BACKSLASH_ESCAPES,
    }
    if timeout > 0:
        kw.update(connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)
    return kw


def _create(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(191) NOT NULL PRIMARY KEY, type VARCHAR(191), "
            f"sender VARCHAR(191), recipients JSON, payload JSON NOT NULL, "
            f"created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4")


def _literal(value: str | None) -> bytes:
    """
    A short C{value} (an id, a type) as an SQL literal: its UTF-8 bytes in
    hex, read as utf8mb4 text; nothing in it needs escaping.
    """
    if value is None:
        return b"NULL"
    return b"CONVERT(X'%s' USING utf8mb4)" % (value.encode("utf-8").hex().encode("ascii"),)


def _quoted(payload: bytes) -> bytes:
    """
    An event's JSON as a quoted string literal in the connection's
    character set (utf8mb4).  A payload L{eventFields} took is valid UTF-8
    JSON, which holds no raw control character (JSON escapes them), so only
    the backslash and the quote need escaping: two C{bytes.replace}, against
    PyMySQL's escaping of every character in Python (61 us for a 3 KB
    payload) or its hex (6 us, twice the bytes to send).  The session runs
    without C{NO_BACKSLASH_ESCAPES} (L{_connect}'s C{init_command}).
    """
    return b"'" + payload.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"


def _insert(table: str, payloads: Sequence[bytes]) -> tuple[bytes, None]:
    # the statement as bytes, which PyMySQL sends as is: no str of the
    # payloads to build, encode and escape
    rows = []
    for payload in payloads:
        id, kind, sender, recipients = eventFields(payload)
        rows.append(b"(%s, %s, %s, %s, %s)" % (_literal(id), _literal(kind), _literal(sender), _literal(recipients),
                                               _quoted(payload)))
    return (b"INSERT IGNORE INTO %s (id, type, sender, recipients, payload) VALUES " % (table.encode("ascii"),)
            + b", ".join(rows), None)


def dialect() -> SqlDialect:
    """
    MySQL and MariaDB through PyMySQL (imported here: only a configured
    target needs it).  A client-side error (2000-2999: the link) or one
    of L{_NOT_CONNECTED} means not connected; other server errors refuse
    the rows.
    """
    import pymysql

    def lost(e: BaseException) -> bool:
        if isinstance(e, pymysql.err.InterfaceError):
            return True
        if isinstance(e, pymysql.err.OperationalError):
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 2000
            return 2000 <= code < 3000 or code in _NOT_CONNECTED
        return False

    return SqlDialect("pymysql", _connect, _create, _insert, lost)


def sender(name: str, options: SqlOptions, timeout: float, reactor: Any) -> SqlSender:
    """
    The sender of the C{mysql} target C{name}.
    """
    return SqlSender(name, options, dialect(), timeout, reactor)
