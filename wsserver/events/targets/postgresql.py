# -*- test-case-name: tests.test_targets_sql -*-
"""
The C{postgresql} event target (SPEC section 12): each event a row of
C{table} (created when missing), through a pool of kept psycopg 3
connections (L{twisted.enterprise.adbapi}); a resend changes nothing
(C{ON CONFLICT DO NOTHING}).  The rows of a batch go in one C{INSERT ...
SELECT FROM jsonb_array_elements(...)} of one parameter, the events as a
JSON array handed to psycopg as bytes.  The shared machinery is
L{wsserver.events.targets.sql}.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .base import ISection
from .sql import SqlDialect, SqlOptions, SqlSender, parseSqlOptions, sqlKeys

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


def _inserter(jsonb: Callable[[bytes], Any]) -> Callable[[str, Sequence[bytes]], tuple[str, list[Any]]]:
    """
    The insert of the dialect: C{jsonb} wraps the payloads' JSON array, as
    bytes, as the statement's one parameter.
    """

    def insert(table: str, payloads: Sequence[bytes]) -> tuple[str, list[Any]]:
        # one parameter whatever the number of rows: the payloads as one
        # JSON array, which the server takes apart (jsonb_array_elements)
        # into the columns.  The statement is the same short text for every
        # batch, so psycopg parses it once and the server prepares it once;
        # five placeholders a row (VALUES) cost twice the client's CPU (a
        # statement of up to 50,000 parameters split for every batch), one
        # array a column four times (each element adapted in Python).  The
        # array goes as the bytes it is (no str to decode and encode again:
        # 3 us a row); the server checks its UTF-8 and JSON, and a batch it
        # refuses is tried row by row, where L{eventRow} names what is
        # wrong.  An event with no id is a null id, which the table refuses.
        statement = (f"INSERT INTO {table} (id, type, sender, recipients, payload) "
                     "SELECT e->>'id', e->>'type', e->>'sender', e->'recipients', e "
                     "FROM jsonb_array_elements(%s) AS e ON CONFLICT (id) DO NOTHING")
        return statement, [jsonb(b"[" + b",".join(payloads) + b"]")]

    return insert


def dialect() -> SqlDialect:
    """
    PostgreSQL through psycopg 3 (imported here: only a configured target
    needs it).
    """
    import psycopg
    from psycopg.types.json import Jsonb

    lostErrors = (psycopg.OperationalError, psycopg.InterfaceError)
    return SqlDialect("psycopg", _connect, _create, _inserter(lambda array: Jsonb(array, _asIs)),
                      lambda e: isinstance(e, lostErrors))


def _asIs(data: bytes) -> bytes:
    """
    The JSON of a L{Jsonb} that holds it already.
    """
    return data


def sender(name: str, options: SqlOptions, timeout: float, reactor: Any) -> SqlSender:
    """
    The sender of the C{postgresql} target C{name}.
    """
    return SqlSender(name, options, dialect(), timeout, reactor)
