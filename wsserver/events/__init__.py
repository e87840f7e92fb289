"""
The event notifier (SPEC section 6): every routed message, and the presence
changes, delivered to the configured targets, at least once.

  - L{wsserver.events.notifier}: the L{EventNotifier} (batching, retries,
    fallbacks, the parallel workers);
  - L{wsserver.events.store}: where deliveries wait (L{IEventStore}) and its
    memory store; L{wsserver.events.sqlite}: the one in the data file;
  - L{wsserver.events.targets}: the senders, one per target type, and
    L{makeSenders}, the one place that turns target configs into senders;
  - L{wsserver.events.presence}: C{user_online} / C{user_offline} events.

This module holds what a target implements (L{ISender}, L{DeliveryRefused})
and imports none of the others, so that each of them may import it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

__all__ = ["DeliveryRefused", "ISender"]


class DeliveryRefused(Exception):
    """
    A target did not accept a delivery; the message says why.
    """


class ISender(Interface):
    """
    Sends event payloads to one target.
    """

    def send(payload: bytes) -> Deferred[None]:
        """
        Fires when the target accepted C{payload}; fails when it did not.
        """

    def close() -> Deferred[None]:
        """
        Release connections and timers.
        """
