# -*- test-case-name: tests.test_events -*-
"""
The event notifier (SPEC section 6): every routed message, less the ignored
types and (unless C{sendBotMessages}) the server's own, goes to every
configured target.

Each delivery is stored (L{wsserver.events.store}) as it is tried: it is
handed to its target from memory in the turn the store gave it its id, and
its row is written by the store's next transaction (the SQLite store does
not write one the target confirmed before then, it only counts it); the
acks (L{committed}) wait until it is written or settled.  A failed
one is retried C{retryCount} times, C{retryIntervalSeconds} apart, then each
target of the target's C{fallback} list is tried in turn with the same
policy; what every target refused stays stored as failed and is counted.  At
most C{maxParallelWorkers} groups of deliveries (a group: what one target
takes in one transaction or confirm window) are in flight at once.  A restart
tries again whatever had not succeeded: at least once.

Routing never waits for any of this: C{notify} only appends to a batch that
is written to the store on the next turn of the reactor.  What is stored and
not settled is bounded by C{maxPending}: over it, the senders of messages
stop being read until the targets caught up (nothing is dropped).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import EventConfig, TargetConfig
from ..logflood import PeerLogger
from ..messages import BOT, Message
from ..queue.pending import PendingWrites
from . import IBatchSender, ISender
from .store import Delivery, IEventStore, emptyCounts, moved
from .targets.base import TargetUnreachable

__all__ = ["READY_LIMIT", "EventNotifier", "targetKeys"]

#: Seconds that in-flight deliveries get to finish at stop.
STOP_GRACE = 3.0

#: At most this many stored deliveries wait in memory to be started; more
#: are read back from the store when there is room.
READY_LIMIT = 10000

#: C{_spillTo} before the first read or delivery of a run: what a previous
#: run left may have any id
_ANY = 2 ** 63 - 1


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

    Deliveries go out in I{groups}: the deliveries to one target started in
    one turn of the reactor, at most the sender's C{batchSize} (an attribute
    of the sender; 1 when it has none), which the SQL targets write in one
    multi-row C{INSERT} and the C{amqp} target publishes in one confirm
    window.  C{maxParallelWorkers} bounds the groups in flight (the
    transactions, the publish windows, the webhook requests), not the rows.

    The deliveries this run stored are handed to the senders from memory
    (at most L{READY_LIMIT} wait there); only what does not fit, the retries
    and what a previous run left are read back from the store, and only
    while some may wait there: a read does not take what is in memory (its
    ids are skipped, and those above the newest that did not fit are left
    out), and once it has caught up, the deliveries go from memory again.

    @param config: the C{event} settings.
    @param store: where deliveries wait.
    @param senders: a sender for every target key of L{targetKeys}.
    @param clock: the clock of retries.
    @param pending: counts the deliveries stored (or about to be) and not
        settled: over C{maxPending} the connections and REST requests that
        route messages stop being read until the targets caught up (a bound
        of its own, made from C{config} when L{None}).

    @ivar pending: that bound.
    """

    log = Logger()
    #: the lines that each delivery, or each turn's batch, can cause: a
    #: dead target (or store) with a backlog of 100,000 would write as many;
    #: held to one a second per kind by the log's
    #: L{wsserver.logflood.FloodGuard}, which says how many it held
    deliveryLog = PeerLogger()

    def __init__(
        self, config: EventConfig, store: IEventStore, senders: dict[str, ISender], clock: IReactorTime,
        pending: PendingWrites | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.pending = PendingWrites(config.maxPending) if pending is None else pending
        #: the payloads queued this turn (a delivery to each primary target
        #: each, made at the end of the turn)
        self._batch: list[bytes] = []
        self._flushCall: IDelayedCall | None = None
        self._writing: list[Deferred[Any]] = []
        #: fired when the batch of this turn is stored (L{committed})
        self._commitWaiters: list[Deferred[None]] = []
        #: the ids of the deliveries in flight
        self._inflight: set[int] = set()
        #: the groups in flight (a L{Deferred} each: a stop waits for them)
        self._groups: set[Deferred[Any]] = set()
        #: groups in flight
        self._workers = 0
        #: stored by this run, due, neither in flight nor read back
        self._ready: deque[Delivery] = deque()
        #: the store may hold due deliveries up to this id that are in
        #: memory neither in C{_ready} nor in flight (they did not fit, or
        #: a previous run left them: L{_ANY} until known); 0: none
        self._spillTo = _ANY
        #: the newest id stored by this run (L{None}: none yet); every
        #: later one is handed over by L{_arrived}
        self._newest: int | None = None
        #: the store may hold due deliveries that wait for a retry or a
        #: fallback (up to C{_newest}); C{_moves} counts those kept, so
        #: that a read cannot clear one kept while it ran
        self._retrying = False
        self._moves = 0
        self._querying = False
        self._pumpAgain = False
        self._wakeCall: IDelayedCall | None = None
        #: new deliveries fewer than a batch wait for more until this fires
        self._gatherCall: IDelayedCall | None = None
        #: the reads of the store in flight (due deliveries, the next due
        #: time): a stop waits for them
        self._reads: list[Deferred[Any]] = []
        self._stopping = False
        #: the stop has fired: the store (the database) may be closed, so
        #: nothing more is written to it
        self._stopped = False
        self._use(config, senders)

    def _use(self, config: EventConfig, senders: dict[str, ISender]) -> None:
        self._config = config
        self._senders = senders
        self._chains = {primary: [key for key, _ in chain] for primary, chain in targetKeys(config).items()}
        self._primaries = list(self._chains)
        self._sizes = {key: max(1, int(getattr(sender, "batchSize", 1))) for key, sender in senders.items()}
        self._maxBatch = max(self._sizes.values(), default=1)
        self.pending.setLimits(config.maxPending, 0)

    def reconfigure(self, config: EventConfig, senders: dict[str, ISender]) -> None:
        """
        Deliver with C{config} and C{senders} from now on (a reload).  The
        deliveries that wait go to the target now at the same place
        (C{targets[0]} ...); those of a place that no longer exists end as
        failed.  The old senders are closed: a delivery in flight on one of
        them that fails is retried on the new one.
        """
        old = self._senders
        self._use(config, senders)
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
        self._queue(payload)

    def notifyServerEvent(self, kind: str, payload: bytes) -> None:
        """
        Queue a delivery of a server event (a presence change, of type
        C{kind}) for every target, unless C{ignoreTypes} has its type: like
        a message, without the C{sendBotMessages} filter.
        """
        if kind in self._config.ignoreTypes:
            return
        self._queue(payload)

    def _queue(self, payload: bytes) -> None:
        self._batch.append(payload)
        # counted against maxPending at once: the senders stop being read
        # within the turn
        self.pending.add(len(self._primaries), 0)
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
        # the store's own: every delivery added so far (its held rows are
        # written now)
        return _copy(self._store.stored())

    def _flush(self) -> None:
        self._flushCall = None
        payloads, self._batch = self._batch, []
        waiters, self._commitWaiters = self._commitWaiters, []
        primaries = self._primaries
        if len(primaries) == 1:
            (primary,) = primaries
            batch = [(primary, payload) for payload in payloads]
        else:
            batch = [(primary, payload) for payload in payloads for primary in primaries]
        if not batch:
            for waiter in waiters:
                waiter.callback(None)
            return
        added = self._store.add(batch, self._clock.seconds())
        # the deliveries are handed over as soon as their ids are known;
        # the acks wait until they are persisted (asking for that writes
        # them now: without a waiter the store writes when it will, and
        # not at all what the targets confirm before)
        if waiters:
            stored = self._store.stored()
            self._writing.append(stored)

            def written(result: Any) -> None:
                self._writing.remove(stored)
                for waiter in waiters:
                    if isinstance(result, Failure):
                        waiter.errback(result)
                    else:
                        waiter.callback(None)

            stored.addBoth(written)

        def lost(failure: Failure) -> None:
            # not stored: they will not be delivered, nor wait
            self.pending.done(len(batch), 0)
            self.deliveryLog.failure("could not store events", failure)

        added.addCallbacks(self._arrived, lost)

    def _arrived(self, deliveries: list[Delivery]) -> None:
        """
        New deliveries are stored: into memory, as many as fit, and out.
        """
        if deliveries:
            if self._spillTo == _ANY:
                # what a previous run left is older than this run's first
                self._spillTo = deliveries[0].id - 1
            self._newest = deliveries[-1].id
            room = max(0, READY_LIMIT - len(self._ready))
            if len(deliveries) > room:
                # the rest is read back from the store once there is room
                self._spillTo = deliveries[-1].id
                deliveries = deliveries[:room]
            self._ready.extend(deliveries)
        self._pump()

    def _gathering(self) -> bool:
        """
        Whether the deliveries in memory wait for more: fewer than a batch,
        the oldest (its C{notBefore}: when it was stored, or when its retry
        was due) younger than C{batchWaitMillis}.  Then a light load (a
        message a turn) goes in a transaction or confirm window every few
        milliseconds, not one a message.
        """
        wait = self._config.batchWaitMillis
        ready = self._ready
        if not wait or self._maxBatch <= 1 or len(ready) >= self._maxBatch:
            return False
        due = ready[0].notBefore + wait / 1000
        now = self._clock.seconds()
        if due <= now:
            return False
        if self._gatherCall is None:
            self._gatherCall = self._clock.callLater(due - now, self._gathered)
        return True

    def _gathered(self) -> None:
        """
        The oldest delivery in memory has waited C{batchWaitMillis}.
        """
        self._gatherCall = None
        self._pump()

    # delivery

    def _pump(self) -> None:
        """
        Start due deliveries while workers are free: those in memory first,
        then (when the store may have more) those read from it: the ids up
        to the newest that did not fit, or, when a retry may be due, up to
        the newest stored (every later one comes through L{_arrived}).
        """
        if self._stopping or not self.running:
            return
        free = self._config.maxParallelWorkers - self._workers
        if free <= 0:
            return
        ready = self._ready
        if ready and not self._gathering():
            take = [ready.popleft() for _ in range(min(len(ready), free * self._maxBatch))]
            left = self._startGroups(take, free)
            ready.extendleft(reversed(left))
            free = self._config.maxParallelWorkers - self._workers
        if free <= 0 or not (self._spillTo or self._retrying):
            return
        if self._querying:
            self._pumpAgain = True
            return
        self._querying = True
        self._pumpAgain = False
        limit = free * self._maxBatch
        through: int | None
        if self._spillTo == _ANY or (self._retrying and self._newest is None):
            through = None
        else:
            through = self._newest if self._retrying else self._spillTo
        skip = self._inMemory(through)
        moves = self._moves
        d = self._read(self._store.due(self._clock.seconds(), limit, skip, through))

        def start(deliveries: list[Delivery]) -> None:
            if len(deliveries) < limit or (through is not None and deliveries[-1].id >= through):
                # every due one up to through is read (an unbounded read
                # saw every row that _arrived has handed over: the
                # database answers in order): until a retry is due or more
                # did not fit, the new ones are all in memory
                if through is None or self._spillTo <= through:
                    self._spillTo = 0
                if self._moves == moves:
                    self._retrying = False
                self._scheduleWake()
            known = frozenset(self._inflight).union(d.id for d in self._ready)
            fresh = [d for d in deliveries if d.id not in known]
            free = self._config.maxParallelWorkers - self._workers
            self._ready.extend(self._startGroups(fresh, free) if free > 0 and not self._stopping else fresh)

        def done(result: Any) -> None:
            self._querying = False
            if isinstance(result, Failure):
                self.deliveryLog.failure("could not read due events", result)
            if self._pumpAgain:
                self._pump()

        d.addCallback(start).addBoth(done)

    def _startGroups(self, deliveries: list[Delivery], free: int) -> list[Delivery]:
        """
        Start the C{deliveries} in at most C{free} groups, each to one
        target and at most its sender's C{batchSize}; those that fit in no
        group are answered, in order.
        """
        sizes = self._sizes
        groups: list[list[Delivery]] = []
        open: dict[str, list[Delivery]] = {}
        left: list[Delivery] = []
        for delivery in deliveries:
            group = open.get(delivery.target)
            if group is None or len(group) >= sizes.get(delivery.target, 1):
                if len(groups) >= free:
                    left.append(delivery)
                    continue
                group = open[delivery.target] = []
                groups.append(group)
            group.append(delivery)
        for group in groups:
            self._startGroup(group)
        return left

    def _startGroup(self, group: list[Delivery]) -> None:
        """
        Hand one group to its sender (one transaction, one confirm window):
        one L{Deferred} for the group, answered with each delivery's
        outcome, and settled with the store in one call; its worker is busy
        until then.
        """
        self._workers += 1
        first = group[0]
        sender = self._senders.get(first.target)
        self._inflight.update([delivery.id for delivery in group])
        if sender is None or first.primary not in self._chains:
            # stored by a run whose targets were configured differently
            self.deliveryLog.warn("{n} event deliveries (the first {id}) are for {target}, which is no longer "
                                  "configured; kept as failed", n=len(group), id=first.id, target=first.target)
            d = self._store.settle((), (), group).addBoth(self._settled, len(group))
        else:
            d = _sendGroup(sender, group).addCallbacks(self._answered, self._refusedAll, callbackArgs=(group,),
                                                       errbackArgs=(group,))
        self._groups.add(d)
        d.addErrback(self._bookkeepingFailed).addBoth(self._finished, d, group)

    def _wake(self) -> None:
        """
        A waiting delivery is due: read it from the store.
        """
        self._wakeCall = None
        self._retrying = True
        self._pump()

    def _scheduleWake(self) -> None:
        """
        Read the store again when the next waiting delivery is due.
        """
        if self._stopping or not self.running:
            return
        through = None if self._spillTo == _ANY else self._newest
        d = self._read(self._store.nextDue(self._inMemory(through), through))

        def wake(when: float | None) -> None:
            if when is None or self._stopping:
                return
            delay = max(0.0, when - self._clock.seconds())
            call = self._wakeCall
            if call is not None and call.active():
                if call.getTime() <= self._clock.seconds() + delay:
                    return
                call.cancel()
            self._wakeCall = self._clock.callLater(delay, self._wake)

        d.addCallbacks(wake, lambda f: self.deliveryLog.failure("could not read due events", f))

    def _inMemory(self, through: int | None) -> frozenset[int]:
        """
        The ids in memory (in flight or in C{_ready}), up to C{through}
        (all when L{None}): what a read of the store leaves out.
        """
        ids = frozenset(self._inflight).union(d.id for d in self._ready)
        if through is None:
            return ids
        return frozenset(i for i in ids if i <= through)

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

    def _bookkeepingFailed(self, failure: Failure) -> None:
        self.deliveryLog.failure("event bookkeeping failed", failure)

    def _finished(self, _: object, d: Deferred[Any], group: list[Delivery]) -> None:
        """
        A group is settled (or kept for later): no longer in flight; its
        worker is free.
        """
        self._groups.discard(d)
        self._inflight.difference_update([delivery.id for delivery in group])
        self._workers -= 1
        self._pump()

    def _settled(self, result: object, n: int) -> object:
        """
        C{n} deliveries are settled for good (succeeded or failed): they no
        longer count against C{maxPending}, also when writing that failed
        (the failure goes on to the log): they are done here, and keeping
        them counted would stop every sender for good after a disk error.
        """
        self.pending.done(n, 0)
        return result

    def _refusedAll(self, failure: Failure, group: list[Delivery]) -> Deferred[None]:
        """
        The sender failed the whole group: each delivery had that outcome.
        """
        return self._answered([failure.value] * len(group), group)

    def _answered(self, outcomes: Sequence[BaseException | None], group: list[Delivery]) -> Deferred[None]:
        """
        The sender answered a group, an outcome per delivery (L{None}:
        accepted): settle the group in one call into the store, each
        delivery by the policy (retry, fallback, failed for good).
        """
        if self._stopped:
            # after the stop's grace period: the store may be closed; they
            # stay as they were and are sent again at the next start
            return succeed(None)
        done: list[Delivery] = []
        kept: list[Delivery] = []
        failed: list[Delivery] = []
        if not any(outcomes):
            # every one accepted (the common answer: an outcome is L{None}
            # or an exception, which is true)
            done = group
            outcomes = ()
        for delivery, outcome in zip(group, outcomes):
            if outcome is None:
                done.append(delivery)
            elif not self._stopping:
                # (one cut short by the stop is not the target's refusal:
                # it stays as it was, for the next start)
                self._refused(outcome, delivery, kept, failed)
        if not (done or kept or failed):
            return succeed(None)
        d = self._store.settle(done, kept, failed)
        if kept:
            d.addBoth(self._kept)
        return d.addBoth(self._settled, len(done) + len(failed))

    def _kept(self, result: object) -> object:
        """
        Deliveries wait (a retry, a fallback, an unreachable target): they
        are read back from the store when due (also when writing their new
        state failed: their rows are due as they were).
        """
        self._retrying = True
        self._moves += 1
        return result

    def _refused(self, error: BaseException, delivery: Delivery, kept: list[Delivery],
                 failed: list[Delivery]) -> None:
        """
        The target did not take C{delivery}: into C{kept} as it is to wait
        (not tried, a retry, the next fallback) or C{failed}.
        """
        config = self._config
        now = self._clock.seconds()
        if isinstance(error, TargetUnreachable):
            # not tried (not connected): it waits, spending no retry
            kept.append(moved(delivery, notBefore=now + error.retryAfter))
            return
        attempts = delivery.attempts + 1
        reason = str(error) or type(error).__name__
        if config.enableRetry and attempts <= config.retryCount:
            kept.append(moved(delivery, attempts=attempts, notBefore=now + config.retryIntervalSeconds))
            return
        chain = self._chains[delivery.primary]
        position = chain.index(delivery.target)
        if position + 1 < len(chain):
            self.deliveryLog.info(
                "event target {target} failed ({reason}); trying {fallback}",
                target=delivery.target, reason=reason, fallback=chain[position + 1],
            )
            kept.append(moved(delivery, target=chain[position + 1], attempts=0, notBefore=now))
            return
        self.deliveryLog.warn("event delivery {id} failed for good at {target}: {reason}",
                              id=delivery.id, target=delivery.target, reason=reason)
        failed.append(moved(delivery, attempts=attempts))

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
        # resend whatever a previous run left pending (read from the store),
        # counted against maxPending
        self._ready.clear()
        self._spillTo = _ANY
        self._newest = None
        self._retrying = False

        def count(counts: dict[str, dict[str, int]]) -> None:
            stored = (sum(c["pending"] + c["retrying"] for c in counts.values())
                      + len(self._batch) * len(self._primaries))
            change = stored - self.pending.messages
            if change > 0:
                self.pending.add(change, 0)
            elif change < 0:
                self.pending.done(-change, 0)

        self._store.counts().addCallbacks(count, lambda f: self.log.failure("could not count stored events", f))
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
        if self._gatherCall is not None and self._gatherCall.active():
            self._gatherCall.cancel()
        self._gatherCall = None
        waits = DeferredList([_copy(d) for d in [self._store.stored(), *self._writing, *self._reads, *self._groups]],
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


def _sendGroup(sender: ISender, group: list[Delivery]) -> Deferred[list[BaseException | None]]:
    """
    Send the payloads of C{group}: one L{Deferred} with an outcome per
    delivery (L{None}: accepted; else why not), through the sender's
    C{sendBatch} when it has one (L{IBatchSender}), else a C{send} each.
    """
    payloads = [delivery.payload for delivery in group]
    if IBatchSender.providedBy(sender):
        return maybeDeferred(sender.sendBatch, payloads)
    if len(payloads) == 1:
        return maybeDeferred(sender.send, payloads[0]).addCallbacks(lambda _: [None], lambda f: [f.value])
    sends = DeferredList([maybeDeferred(sender.send, p) for p in payloads], consumeErrors=True)
    return sends.addCallback(lambda results: [None if ok else value.value for ok, value in results])
