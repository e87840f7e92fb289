# -*- test-case-name: tests.test_events -*-
"""
The event notifier (SPEC section 6): every routed message, less the ignored
types and (unless C{sendBotMessages}) the server's own, goes to every
configured target.

Each delivery is stored (L{wsserver.events.store}) before it is tried; a failed
one is retried C{retryCount} times, C{retryIntervalSeconds} apart, then each
target of the target's C{fallback} list is tried in turn with the same
policy; what every target refused stays stored as failed and is counted.  At
most C{maxParallelWorkers} deliveries are in flight at once.  A restart tries
again whatever had not succeeded: at least once.

Routing never waits for any of this: C{notify} only appends to a batch that
is written to the store on the next turn of the reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import EventConfig, TargetConfig
from ..messages import BOT, Message
from . import ISender
from .store import Delivery, IEventStore, emptyCounts, moved
from .targets.base import TargetUnreachable

__all__ = ["EventNotifier", "targetKeys"]

#: Seconds that in-flight deliveries get to finish at stop.
STOP_GRACE = 3.0


def targetKeys(config: EventConfig) -> dict[str, list[tuple[str, TargetConfig]]]:
    """
    For each configured target (C{"targets[0]"} ...), its chain: itself, then
    its fallbacks depth first (C{"targets[0].fallback[0]"} ...), with their
    configs.
    """

    def chain(key: str, target: TargetConfig) -> list[tuple[str, TargetConfig]]:
        out = [(key, target)]
        for j, fallback in enumerate(target.fallback):
            out += chain(f"{key}.fallback[{j}]", fallback)
        return out

    return {f"targets[{i}]": chain(f"targets[{i}]", t) for i, t in enumerate(config.targets)}


class EventNotifier(Service):
    """
    Hands routed messages to the event targets.

    @param config: the C{event} settings.
    @param store: where deliveries wait.
    @param senders: a sender for every target key of L{targetKeys}.
    @param clock: the clock of retries.
    """

    log = Logger()

    def __init__(
        self, config: EventConfig, store: IEventStore, senders: dict[str, ISender], clock: IReactorTime
    ) -> None:
        self._config = config
        self._store = store
        self._senders = senders
        self._clock = clock
        self._chains = {primary: [key for key, _ in chain] for primary, chain in targetKeys(config).items()}
        self._primaries = list(self._chains)
        self._batch: list[tuple[str, bytes]] = []
        self._flushCall: IDelayedCall | None = None
        self._writing: list[Deferred[Any]] = []
        #: fired when the batch of this turn is stored (L{committed})
        self._commitWaiters: list[Deferred[None]] = []
        self._inflight: dict[int, Deferred[Any]] = {}
        self._pumping = False
        self._pumpAgain = False
        self._wakeCall: IDelayedCall | None = None
        #: the reads of the store in flight (due deliveries, the next due
        #: time): a stop waits for them
        self._reads: list[Deferred[Any]] = []
        self._stopping = False
        #: the stop has fired: the store (the database) may be closed, so
        #: nothing more is written to it
        self._stopped = False

    def reconfigure(self, config: EventConfig, senders: dict[str, ISender]) -> None:
        """
        Deliver with C{config} and C{senders} from now on (a reload).  The
        deliveries that wait go to the target now at the same place
        (C{targets[0]} ...); those of a place that no longer exists end as
        failed.  The old senders are closed: a delivery in flight on one of
        them that fails is retried on the new one.
        """
        old = self._senders
        self._config = config
        self._senders = senders
        self._chains = {primary: [key for key, _ in chain] for primary, chain in targetKeys(config).items()}
        self._primaries = list(self._chains)
        for sender in old.values():
            maybeDeferred(sender.close).addErrback(
                lambda f: self.log.failure("could not close a replaced event sender", f))
        self._pump()

    # intake

    def notify(self, message: Message, payload: bytes) -> None:
        """
        A message was routed: queue a delivery for every target (the router
        calls this for every message; it never waits).
        """
        config = self._config
        if message.type in config.ignoreTypes or (message.sender == BOT and not config.sendBotMessages):
            return
        batch = self._batch
        for primary in self._primaries:
            batch.append((primary, payload))
        if self._flushCall is None:
            self._flushCall = self._clock.callLater(0, self._flush)

    def notifyServerEvent(self, kind: str, payload: bytes) -> None:
        """
        Queue a delivery of a server event (a presence change, of type
        C{kind}) for every target, unless C{ignoreTypes} has its type: like
        a message, without the C{sendBotMessages} filter.
        """
        if kind in self._config.ignoreTypes:
            return
        batch = self._batch
        for primary in self._primaries:
            batch.append((primary, payload))
        if self._flushCall is None:
            self._flushCall = self._clock.callLater(0, self._flush)
    def committed(self) -> Deferred[None]:
        """
        Fires once every delivery queued so far is stored (for acks).
        """
        if self._flushCall is not None:
            waiter: Deferred[None] = Deferred()
            self._commitWaiters.append(waiter)
            return waiter
        if not self._writing:
            return succeed(None)
        return gatherResults([_copy(d) for d in self._writing], consumeErrors=True).addCallback(lambda _: None)

    def _flush(self) -> None:
        self._flushCall = None
        batch, self._batch = self._batch, []
        waiters, self._commitWaiters = self._commitWaiters, []
        if not batch:
            for waiter in waiters:
                waiter.callback(None)
            return
        d = self._store.add(batch, self._clock.seconds())
        self._writing.append(d)

        def written(result: Any) -> Any:
            self._writing.remove(d)
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            return result

        d.addBoth(written)
        d.addCallbacks(lambda _: self._pump(), lambda f: self.log.failure("could not store events", f))

    # delivery

    def _pump(self) -> None:
        """
        Start due deliveries while workers are free.
        """
        if self._stopping or not self.running:
            return
        if self._pumping:
            self._pumpAgain = True
            return
        free = self._config.maxParallelWorkers - len(self._inflight)
        if free <= 0:
            return
        self._pumping = True
        self._pumpAgain = False
        d = self._read(self._store.due(self._clock.seconds(), free, frozenset(self._inflight)))

        def start(deliveries: list[Delivery]) -> None:
            if self._stopping:
                return  # read before the stop: they stay pending for the next start
            for delivery in deliveries:
                self._start(delivery)

        def done(result: Any) -> None:
            self._pumping = False
            if isinstance(result, Failure):
                self.log.failure("could not read due events", result)
            if self._pumpAgain:
                self._pump()
            else:
                self._scheduleWake()

        d.addCallback(start).addBoth(done)

    def _scheduleWake(self) -> None:
        """
        Pump again when the next waiting delivery is due.
        """
        if self._stopping or not self.running:
            return
        d = self._read(self._store.nextDue(frozenset(self._inflight)))

        def wake(when: float | None) -> None:
            if when is None or self._stopping:
                return
            delay = max(0.0, when - self._clock.seconds())
            call = self._wakeCall
            if call is not None and call.active():
                if call.getTime() <= self._clock.seconds() + delay:
                    return
                call.cancel()
            self._wakeCall = self._clock.callLater(delay, self._pump)

        d.addCallbacks(wake, lambda f: self.log.failure("could not read due events", f))

    def _read(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        Track the read C{d} until it answers (see L{stopService}).
        """
        reads = self._reads
        reads.append(d)

        def answered(result: Any) -> Any:
            reads.remove(d)
            return result

        return d.addBoth(answered)

    def _start(self, delivery: Delivery) -> None:
        sender = self._senders.get(delivery.target)
        if sender is None or delivery.primary not in self._chains:
            # stored by a run whose targets were configured differently
            self.log.warn("event delivery {id} is for {target}, which is no longer configured; kept as failed",
                          id=delivery.id, target=delivery.target)
            d = self._store.failed(delivery)
            self._inflight[delivery.id] = d
            d.addErrback(lambda f: self.log.failure("event bookkeeping failed", f))
            d.addBoth(lambda _: (self._inflight.pop(delivery.id, None), self._pump()))
            return
        d = maybeDeferred(sender.send, delivery.payload)
        self._inflight[delivery.id] = d
        d.addCallbacks(self._accepted, self._refused, callbackArgs=(delivery,), errbackArgs=(delivery,))
        d.addErrback(lambda f: self.log.failure("event bookkeeping failed", f))

        def finished(_: Any) -> None:
            self._inflight.pop(delivery.id, None)
            self._pump()

        d.addBoth(finished)

    def _accepted(self, _: None, delivery: Delivery) -> Deferred[None]:
        if self._stopped:
            # after the stop's grace period: the store may be closed; it
            # stays pending and is sent again at the next start
            return succeed(None)
        return self._store.succeeded(delivery)

    def _refused(self, failure: Failure, delivery: Delivery) -> Deferred[None]:
        if self._stopping:
            # cut short by the stop (its grace period ran out): not the
            # target's refusal; it stays as it was, for the next start
            return succeed(None)
        config = self._config
        now = self._clock.seconds()
        if failure.check(TargetUnreachable):
            # not tried (not connected): it waits, spending no retry
            return self._store.update(moved(delivery, notBefore=now + failure.value.retryAfter))
        attempts = delivery.attempts + 1
        reason = failure.getErrorMessage() or failure.type.__name__
        if config.enableRetry and attempts <= config.retryCount:
            return self._store.update(moved(delivery, attempts=attempts, notBefore=now + config.retryIntervalSeconds))
        chain = self._chains[delivery.primary]
        position = chain.index(delivery.target)
        if position + 1 < len(chain):
            self.log.info(
                "event target {target} failed ({reason}); trying {fallback}",
                target=delivery.target, reason=reason, fallback=chain[position + 1],
            )
            return self._store.update(moved(delivery, target=chain[position + 1], attempts=0, notBefore=now))
        self.log.warn("event delivery {id} failed for good at {target}: {reason}",
                      id=delivery.id, target=delivery.target, reason=reason)
        return self._store.failed(moved(delivery, attempts=attempts))

    # reports and life cycle

    def counts(self) -> Deferred[list[dict[str, Any]]]:
        """
        Per target, fallbacks included: its key, type, where it sends, and how
        many deliveries succeeded, are pending, wait for a retry, finally failed.
        """
        described = [
            (key, target) for chain in targetKeys(self._config).values() for key, target in chain
        ]

        def report(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
            out = []
            for key, target in described:
                if target.type == "postback":
                    where = target.url
                elif target.options is not None:
                    # its password hidden
                    where = getattr(target.options, "destination", target.type)
                else:
                    where = f"{target.modeType} {target.modeName}"
                out.append({"target": key, "type": target.type, "destination": where,
                            **counts.get(key, emptyCounts())})
            return out

        return self._store.counts().addCallback(report)

    def startService(self) -> None:
        super().startService()
        self._stopping = self._stopped = False
        # resend whatever a previous run left pending
        self._pump()

    def stopService(self) -> Deferred[None]:
        """
        Store what is batched, wait for the reads in flight (what they
        answer is not started), give in-flight deliveries a short grace
        period (what does not finish stays pending for the next start), then
        close the senders.  Once this fires the store is not used again: the
        server closes the database next.
        """
        super().stopService()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
            self._flush()
        self._stopping = True
        if self._wakeCall is not None and self._wakeCall.active():
            self._wakeCall.cancel()
        waits = DeferredList([_copy(d) for d in [*self._writing, *self._reads, *self._inflight.values()]],
                             consumeErrors=True)
        done: Deferred[None] = Deferred()
        timer = self._clock.callLater(STOP_GRACE, lambda: done.called or done.callback(None))
        waits.addBoth(lambda _: done.called or done.callback(None))

        def close(_: Any) -> Deferred[Any]:
            if timer.active():
                timer.cancel()
            self._stopped = True
            return DeferredList([maybeDeferred(s.close) for s in self._senders.values()], consumeErrors=True)

        return done.addCallback(close).addCallback(lambda _: None)


def _copy(d: Deferred[Any]) -> Deferred[None]:
    """
    A L{Deferred} that fires when C{d} does, without taking its result.
    """
    copy: Deferred[None] = Deferred()

    def fired(result: Any) -> Any:
        if isinstance(result, Failure):
            copy.errback(result)
        else:
            copy.callback(None)
        return result

    d.addBoth(fired)
    return copy
