# -*- test-case-name: tests.test_presence,tests.test_cluster -*-
"""
The cluster's Redis connections, made and stopped in one place
(L{RedisLinks}), and handed to the node and to the stores that share Redis:

  - C{hot}: the node's batches and presence messages, where latency counts;
  - C{bulk}: everything else (the statistics, the shared undelivered queue
    and inbox, the presence ledger, the claimed keys), so that a slow
    C{/stats} scan never delays a message;
  - the pub/sub connection (L{IRedisLinks.subscribe}), which listens on the
    channels of the one that asks for it: the node.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

from .address import RedisAddress
from .link import RedisLink, RedisSubscriber

__all__ = ["COMMAND_TIMEOUT", "IRedisLinks", "RedisLinks"]

#: seconds a Redis command may take before its connection is dropped
COMMAND_TIMEOUT = 10.0


class IRedisLinks(Interface):
    """
    The Redis connections of this process in a cluster.
    """

    address = Attribute("The L{RedisAddress} they connect to.")
    hot = Attribute("The L{RedisLink} of the traffic where latency counts (the node's messages).")
    bulk = Attribute("The L{RedisLink} of everything else (statistics, shared stores).")

    def subscribe(channels: list[bytes], received: Callable[[bytes, bytes], None], subscribed: Callable[[], None],
                  lost: Callable[[], None]) -> RedisSubscriber:
        """
        The pub/sub connection, listening on C{channels} (see
        L{RedisSubscriber}); made once: a second call is an error.
        """


@implementer(IRedisLinks)
class RedisLinks(Service):
    """
    Owns the cluster's Redis connections: they start connecting when this
    service starts and are closed when it stops (the pub/sub one first, so
    nothing more arrives, then C{hot}, then C{bulk}).  Add it to the server
    before what uses them, so that it stops after them.

    @param address: where Redis is.
    @param reactor: connections and timers run on it.
    @param timeout: seconds that connecting and each command may take.
    """

    def __init__(self, address: RedisAddress, reactor: Any, timeout: float = COMMAND_TIMEOUT) -> None:
        self.address = address
        self._reactor = reactor
        self._timeout = timeout
        self.hot = RedisLink(address, reactor, timeout, "cluster Redis", start=False)
        self.bulk = RedisLink(address, reactor, timeout, "cluster Redis (bulk)", start=False)
        self._subscriber: RedisSubscriber | None = None

    def subscribe(self, channels: list[bytes], received: Callable[[bytes, bytes], None],
                  subscribed: Callable[[], None], lost: Callable[[], None]) -> RedisSubscriber:
        if self._subscriber is not None:
            raise RuntimeError("the cluster's pub/sub connection is made once")
        self._subscriber = RedisSubscriber(self.address, self._reactor, self._timeout, channels, received,
                                           subscribed, lost, name="cluster Redis pub/sub", start=self.running)
        return self._subscriber

    def reachable(self) -> bool:
        """
        Whether every one of the connections is logged in (and the pub/sub
        one subscribed) now: C{/ready} says 503 otherwise.  A Redis that
        froze counts as reachable until a command on it times out (the
        node's heartbeat sends one every C{heartbeatSeconds}).
        """
        subscriber = self._subscriber
        return self.hot.connected and self.bulk.connected and (subscriber is None or subscriber.connected)

    def startService(self) -> None:
        super().startService()
        for link in (self._subscriber, self.hot, self.bulk):
            if link is not None:
                link.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        links = [link for link in (self._subscriber, self.hot, self.bulk) if link is not None]

        async def close() -> None:
            for link in links:
                await link.close()

        return Deferred.fromCoroutine(close())
