# -*- test-case-name: tests.test_targets_sql -*-
"""
The C{mysql} event target (SPEC section 12), for MySQL and MariaDB: each
event a row of C{table} (created when missing, C{payload} as C{JSON}),
through a pool of kept PyMySQL connections (L{twisted.enterprise.adbapi});
a resend changes nothing (C{INSERT IGNORE}).  The rows of a batch go in one
multi-row C{INSERT} whose values are hex literals (no parameters to
escape).  The shared machinery is
L{wsserver.events.targets.sql}.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import ISection
from .sql import SqlDialect, SqlOptions, SqlSender, eventRow, parseSqlOptions, sqlKeys

__all__ = ["KEYS", "dialect", "parse", "sender"]

#: the keys L{parse} reads
KEYS = sqlKeys("mysql")

#: server errors that mean we are not (or no longer) let in: access denied
#: (1044, 1045), unknown database (1049), too many connections (1040),
#: shutdown (1053), connection killed (1927, 4031)
_NOT_CONNECTED = frozenset({1040, 1044, 1045, 1049, 1053, 1927, 4031})


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
    }
    if timeout > 0:
        kw.update(connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)
    return kw


def _create(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(191) NOT NULL PRIMARY KEY, type VARCHAR(191), "
            f"sender VARCHAR(191), recipients JSON, payload JSON NOT NULL, "
            f"created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) CHARACTER SET utf8mb4")


def _literal(value: str | None) -> str:
    """
    C{value} as an SQL literal: its UTF-8 bytes in hex, read as utf8mb4
    text.  Nothing in it needs escaping, so PyMySQL escapes nothing (its
    escaping, a C{str.translate} with a table, was the dearest part of a
    write: every character of every 3 KB payload, in Python).
    """
    if value is None:
        return "NULL"
    return f"CONVERT(X'{value.encode('utf-8').hex()}' USING utf8mb4)"


def _insert(table: str, payloads: Sequence[bytes]) -> tuple[str, None]:
    values = ", ".join(f"({', '.join(map(_literal, eventRow(payload)))})" for payload in payloads)
    return f"INSERT IGNORE INTO {table} (id, type, sender, recipients, payload) VALUES {values}", None


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
