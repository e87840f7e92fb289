# -*- test-case-name: tests.test_config -*-
"""
The C{chat.undelivered} section of the configuration: where and for how
long the undelivered queue keeps messages (L{UndeliveredConfig}), and its
parser.

It imports only the shared machinery (L{wsserver.configschema}), so that
L{wsserver.config} can import it; C{chat.enableUndeliveredQueue} is read
with the rest of C{chat}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..configschema import _Section, parseSize

__all__ = ["STORAGES", "UndeliveredConfig", "parseUndelivered"]

#: the values of C{chat.undelivered.storage}: this package's stores
STORAGES = ("memory", "sqlite", "redis")


@dataclass(frozen=True)
class UndeliveredConfig:
    storage: str = "sqlite"
    ttlSeconds: float = 604800
    maxPerUser: int = 1000
    #: messages handed to the queue and not yet written (committed, or
    #: answered by Redis); over it the senders are not read until half of
    #: it is written; 0: no limit
    maxPendingWrites: int = 10000
    #: their payload bytes (a size, as C{maxSize}); over it, the same; 0: no limit
    maxPendingBytes: int = 16 * 1024 * 1024
    #: the age of the oldest message handed to the queue and not yet
    #: written, in milliseconds: a message routed while it is older stops
    #: the senders being read until what waited then is written.  What a
    #: crash (C{kill -9}) loses without acks is what waits, so at most the
    #: messages routed in about this long (plus a quarter), which are
    #: committed about a transaction later: the last ~100 ms of routing by
    #: default; 0: no limit
    maxPendingMillis: float = 50


def parseUndelivered(u: _Section) -> UndeliveredConfig:
    """
    Parse the C{chat.undelivered} section C{u}, reporting its problems under
    their keys.
    """
    storage = u.str("storage", "sqlite")
    if storage not in STORAGES:
        u.error("storage", f"unknown storage {json.dumps(storage)} (use one of: {', '.join(STORAGES)})")
        storage = "memory"
    pendingBytes = UndeliveredConfig.maxPendingBytes
    if u.has("maxPendingBytes"):
        try:
            pendingBytes = parseSize(u.raw["maxPendingBytes"])
        except ValueError as e:
            u.error("maxPendingBytes", str(e))
    undelivered = UndeliveredConfig(
        storage=storage,
        ttlSeconds=u.number("ttlSeconds", 604800, 0),
        maxPerUser=u.int("maxPerUser", 1000, 1),
        maxPendingWrites=u.int("maxPendingWrites", UndeliveredConfig.maxPendingWrites, 0),
        maxPendingBytes=pendingBytes,
        maxPendingMillis=u.number("maxPendingMillis", UndeliveredConfig.maxPendingMillis, 0),
    )
    u.finish()
    return undelivered
