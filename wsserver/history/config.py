# -*- test-case-name: tests.test_config,tests.test_history -*-
"""
The C{chat.history} section of the configuration: the per-user inbox
(L{HistoryConfig}) and its parser.

It imports only the shared machinery (L{wsserver.configschema}), so that
L{wsserver.config} can import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..configschema import _Section

__all__ = ["STORAGES", "HistoryConfig", "parseHistory"]

#: the values of C{chat.history.storage}: this package's stores
STORAGES = ("memory", "sqlite", "redis")


@dataclass(frozen=True)
class HistoryConfig:
    """
    C{chat.history}: the per-user inbox and resumable connections.
    """

    enabled: bool = False
    storage: str = "sqlite"
    maxPerUser: int = 1000
    ttlSeconds: float = 604800


def parseHistory(h: _Section) -> HistoryConfig:
    """
    Parse the C{chat.history} section C{h}, reporting its problems under
    their keys.
    """
    historyStorage = h.str("storage", "sqlite")
    if historyStorage not in STORAGES:
        h.error("storage", f"unknown storage {json.dumps(historyStorage)} (use one of: {', '.join(STORAGES)})")
        historyStorage = "memory"
    history = HistoryConfig(
        enabled=h.bool("enabled", False),
        storage=historyStorage,
        maxPerUser=h.int("maxPerUser", 1000, 1),
        ttlSeconds=h.number("ttlSeconds", 604800, 0),
    )
    h.finish()
    return history
