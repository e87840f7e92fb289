# -*- test-case-name: tests.test_config -*-
"""
The C{cluster} section of the configuration: the Redis that the nodes share
and how they watch each other (L{ClusterConfig}), and its parser.

Its own module, since L{wsserver.cluster} imports the routing, which
imports the configuration; it imports the shared machinery
(L{wsserver.configschema}) and the Redis URL parser only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .configschema import _Section

__all__ = ["ClusterConfig", "parseCluster"]


@dataclass(frozen=True)
class ClusterConfig:
    #: a C{redis://} (or C{unix://}) URL, or L{None} for a single node
    redis: str | None = None
    #: how often a node announces its online users
    heartbeatSeconds: float = 10
    #: a node not heard for this long counts as dead (its users offline)
    nodeTimeoutSeconds: float = 30
    #: seconds a Redis command (connecting included) may take before its
    #: connection is dropped and it is tried again (a frozen Redis)
    commandTimeoutSeconds: float = 10


def parseCluster(cl: _Section) -> ClusterConfig:
    """
    Parse the C{cluster} section C{cl}, reporting its problems under their
    keys.
    """
    redis = cl._get("redis", None, lambda v: v is None or isinstance(v, str), "a redis:// URL or null")
    if redis is not None:
        from .redis.address import parseRedisURL

        try:
            parseRedisURL(redis)
        except ValueError:
            cl.error("redis", f"must be a redis:// or unix:// URL, not {json.dumps(redis)}")
    cluster = ClusterConfig(
        redis=redis,
        heartbeatSeconds=cl.number("heartbeatSeconds", 10, 0.1),
        nodeTimeoutSeconds=cl.number("nodeTimeoutSeconds", 30, 0.1),
        commandTimeoutSeconds=cl.number("commandTimeoutSeconds", 10, 0.1),
    )
    cl.finish()
    return cluster
