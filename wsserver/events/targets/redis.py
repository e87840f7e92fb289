# -*- test-case-name: tests.test_redistarget -*-
"""
The C{redis} event target (SPEC section 6): each event payload is pushed with
C{RPUSH} onto the list C{mode.name} (C{mode.type} C{"queue"}) or sent with
C{PUBLISH} to the channel C{mode.name} (C{"channel"}).

The connection is a L{wsserver.redis.link.RedisLink}: TCP to
C{address}:C{port} or the C{unixSocket}, C{AUTH password} and C{SELECT
database} on every new connection before any event, reconnects with a
capped backoff, every send bounded by C{connectionTimeoutSeconds}
(connecting included; non-positive: no limit); while Redis is down sends
fail fast, and one warning is logged per outage.  The event notifier
retries failed sends on its own schedule.

Payloads are sent as the bytes given, unchanged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail

from zope.interface import implementer

from ..config import TargetConfig
from ...redis.address import RedisAddress
from ...redis.link import RedisClosed, RedisLink
from .. import ISender

__all__ = ["RedisSender", "RedisSenderClosed"]

#: what a send fails with after L{RedisSender.close}
RedisSenderClosed = RedisClosed


@implementer(ISender)
class RedisSender:
    """
    Sends event payloads to Redis: C{RPUSH} to the list C{modeName} (mode
    C{queue}) or C{PUBLISH} to the channel C{modeName} (mode C{channel}).

    @param target: a target of type C{redis}.
    @param reactor: provides C{IReactorTCP}, C{IReactorUNIX} and
        C{IReactorTime}: connections and timeouts run on it.
    """

    def __init__(self, target: TargetConfig, reactor: Any) -> None:
        if target.type != "redis":
            raise ValueError(f"not a redis target: {target.type!r}")
        if target.modeType not in ("queue", "channel"):
            raise ValueError(f'mode.type must be "queue" or "channel", not {target.modeType!r}')
        self._target = target
        self._command = b"RPUSH" if target.modeType == "queue" else b"PUBLISH"
        self._key = target.modeName.encode("utf-8")
        address = RedisAddress(target.address, target.port, target.unixSocket, target.database, target.password)
        self._link = RedisLink(address, reactor, target.connectionTimeoutSeconds, name="Redis event target",
                               charset="utf-8")

    def __repr__(self) -> str:
        return f"<RedisSender {self._command.decode()} {self._target.modeName} at {self._link.address}>"

    def send(self, payload: bytes) -> Deferred[None]:
        """
        Send one event payload.

        @param payload: the event's JSON, sent byte for byte.
        @return: fires with L{None} when Redis has accepted it (the reply to
            C{RPUSH} or C{PUBLISH}); fails as L{RedisLink.execute} does.
        """
        if not isinstance(payload, bytes):
            return fail(TypeError(f"payload must be bytes, not {type(payload).__name__}"))
        return self._link.execute(self._command, self._key, payload).addCallback(lambda reply: None)

    def close(self) -> Deferred[None]:
        """
        Stop: close the connection; sends still waiting fail.
        """
        return self._link.close()
