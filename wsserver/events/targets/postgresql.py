# -*- test-case-name: tests.test_targets_sql -*-
"""
The C{postgresql} event target (SPEC section 12): each event a row of
C{table} (created when missing), through a pool of kept psycopg 3
connections (L{twisted.enterprise.adbapi}); a resend changes nothing
(C{ON CONFLICT DO NOTHING}).  The rows of a batch go in one C{INSERT ...
SELECT FROM unnest(...)}, one array parameter a column.  The shared machinery is L{wsserver.events.targets.sql}.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import ISection
from .sql import Row, SqlDialect, SqlOptions, SqlSender, parseSqlOptions, sqlKeys

__all__ = ["KEYS", "dialect", "parse", "sender"]

#: the keys L{parse} reads
KEYS = sqlKeys("postgresql")


def parse(section: ISection) -> SqlOptions | None:
    """
    The keys of a C{postgresql} target: C{dsn}
    (C{postgresql://user:pass@host:port/db}), C{table}, C{poolSize},
    C{batchSize}.
    """
    return parseSqlOptions(section, ("postgresql", "postgres"), 5432)


def _connect(options: SqlOptions, timeout: float) -> dict[str, Any]:
    seconds = max(1, round(timeout)) if timeout > 0 else 0
    kw: dict[str, Any] = {
        "host": options.host, "port": options.port, "user": options.user, "password": options.password,
        "dbname": options.database, "application_name": "wsserver", "keepalives": 1,
        "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    }
    if seconds:
        kw["connect_timeout"] = seconds
        kw["options"] = f"-c statement_timeout={seconds * 1000}"
    return kw


def _create(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, type text, sender text, "
            f"recipients jsonb, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")


def _insert(table: str, rows: Sequence[Row]) -> tuple[str, list[list[Any]]]:
    # one array parameter a column: the same short statement whatever the
    # number of rows, so that psycopg parses it once and the server
    # prepares it once (VALUES with five placeholders a row made a new
    # statement of up to 50,000 parameters to split and plan for every
    # batch size)
    statement = (f"INSERT INTO {table} (id, type, sender, recipients, payload) "
                 "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[]) "
                 "ON CONFLICT (id) DO NOTHING")
    return statement, [list(column) for column in zip(*rows)]


def dialect() -> SqlDialect:
    """
    PostgreSQL through psycopg 3 (imported here: only a configured target
    needs it).
    """
    import psycopg

    lostErrors = (psycopg.OperationalError, psycopg.InterfaceError)
    return SqlDialect("psycopg", _connect, _create, _insert, lambda e: isinstance(e, lostErrors))


def sender(name: str, options: SqlOptions, timeout: float, reactor: Any) -> SqlSender:
    """
    The sender of the C{postgresql} target C{name}.
    """
    return SqlSender(name, options, dialect(), timeout, reactor)
