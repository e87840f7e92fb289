# -*- test-case-name: tests.test_targets -*-
"""
The event target types beside C{postback} and C{redis}: C{postgresql},
C{mysql}, C{amqp}, C{socket} and C{udp}.

Each type owns its keys: its module's C{parse} reads them from the target's
config section (reporting problems under the key's name) into an options
object, and its C{sender} makes the target's sender from them.  A sender
fails a delivery it could not even try (not connected) with
L{TargetUnreachable}, which the notifier keeps waiting without spending a
retry; any other failure is a refusal.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

import attr

from . import amqp, mysql, postgresql, socket, udp
from .base import ISection, KeyDoc, TargetUnreachable

__all__ = ["TARGET_TYPES", "TargetType", "TargetUnreachable"]


@attr.s(frozen=True, auto_attribs=True)
class TargetType:
    """
    One target type.

    @ivar parse: reads the type's keys; its options (with a C{destination},
        the password hidden), or L{None} when a problem was reported.
    @ivar sender: C{(name, options, connectionTimeoutSeconds, reactor)} to
        the target's sender (C{send(payload)}, C{close()}).
    @ivar keys: the keys C{parse} reads, for the configuration reference.
    """

    parse: Callable[[ISection], Any]
    sender: Callable[[str, Any, float, Any], Any]
    keys: tuple[KeyDoc, ...]


#: the types by name (read only)
TARGET_TYPES: Mapping[str, TargetType] = MappingProxyType({
    "postgresql": TargetType(postgresql.parse, postgresql.sender, postgresql.KEYS),
    "mysql": TargetType(mysql.parse, mysql.sender, mysql.KEYS),
    "amqp": TargetType(amqp.parse, amqp.sender, amqp.KEYS),
    "socket": TargetType(socket.parse, socket.sender, socket.KEYS),
    "udp": TargetType(udp.parse, udp.sender, udp.KEYS),
})
