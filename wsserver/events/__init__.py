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

This module holds what a target implements (L{ISender}, L{IBatchSender},
L{DeliveryRefused})
and imports none of the others, so that each of them may import it.
"""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = ["DeliveryRefused", "IBatchSender", "ISender"]


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


class IBatchSender(ISender):
    """
    A sender that writes deliveries in batches (one transaction, one
    confirm window) and answers once for each batch: the notifier hands it
    a group of up to C{batchSize} payloads and settles the group in one
    go, rather than keeping a L{Deferred} per delivery.
    """

    batchSize = Attribute("The most payloads handed to L{sendBatch} at once.")

    def sendBatch(payloads: Sequence[bytes]) -> Deferred[list[BaseException | None]]:
        """
        Send C{payloads}; fires once all are answered, with an outcome per
        payload in order: L{None} when the target accepted it, else the
        error that says why not (a L{wsserver.events.targets.base.TargetUnreachable}
        when it was not tried).  Failing as a whole means that outcome for
        every payload.
        """
