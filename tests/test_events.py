"""
Tests for L{wsserver.events}: the notifier's policy (filters, retries,
fallbacks, parallelism, restart) with a L{task.Clock} and the memory store,
and the webhook sender with L{treq.testing.StubTreq}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsserver.config import parseConfig
from wsserver.database import StorageError
from wsserver.events.store import IEventStore, MemoryEventStore
from wsserver.httpbody import MAX_ANSWER_BYTES
from wsserver.logflood import FloodGuard
from wsserver.events import DeliveryRefused, IBatchSender
from wsserver.events.targets.base import TargetUnreachable
from wsserver.events import notifier as notifierModule
from wsserver.events.notifier import EventNotifier, targetKeys
from wsserver.events.targets.postback import PostbackSender
from wsserver.messages import Message


def eventConfig(**event: Any) -> Any:
    raw = {"enabled": True, "targets": [{"type": "postback", "url": "http://hook.example/a"}]}
    raw.update(event)
    return parseConfig({"event": raw}, checkEndpoints=False).event


def message(kind: str = "text", sender: int = 1, text: str = "hi") -> tuple[Message, bytes]:
    m = Message("ID", kind, text, "T", sender, [2], None)
    return m, m.serialize()


class FakeSender:
    """
    A target whose answers the test gives: by default each send waits for
    the test to fire it.
    """

    def __init__(self, answer: str = "wait") -> None:
        self.answer = answer
        self.sent: list[bytes] = []
        self.waiting: list[Deferred[None]] = []
        self.closed = False

    def send(self, payload: bytes) -> Deferred[None]:
        self.sent.append(payload)
        if self.answer == "ok":
            return succeed(None)
        if self.answer == "fail":
            return fail(DeliveryRefused("HTTP 500"))
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


class ClosingStore(MemoryEventStore):
    """
    A memory store that acts as the database under it: once C{closed}, a
    call is recorded in C{late} and fails, as L{wsserver.database.Database}
    fails after its close.  With C{holdReads}, each C{due} read waits in
    C{reads} for the test to answer it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.holdReads = False
        self.reads: list[tuple[Deferred[Any], Any]] = []
        self.late: list[str] = []
        for name in ("add", "nextDue", "update", "succeeded", "failed", "settle", "counts"):
            setattr(self, name, self._guarded(name, getattr(self, name)))

    def _guarded(self, name: str, call: Any) -> Any:
        def guarded(*args: Any) -> Any:
            if self.closed:
                self.late.append(name)
                return fail(StorageError("wsserver database test.sqlite3 is closed"))
            return call(*args)
        return guarded

    def due(self, now: float, limit: int, skip: frozenset[int], through: int | None = None) -> Deferred[Any]:
        if self.closed:
            self.late.append("due")
            return fail(StorageError("wsserver database test.sqlite3 is closed"))
        answer = super().due(now, limit, skip, through)
        if not self.holdReads:
            return answer
        held: Deferred[Any] = Deferred()
        self.reads.append((held, answer))
        return held

    def answerReads(self) -> None:
        reads, self.reads = self.reads, []
        for held, answer in reads:
            answer.chainDeferred(held)


class CountingStore(MemoryEventStore):
    """
    A memory store that records the ids each C{due} read answers (the
    deliveries read back rather than handed over from memory).
    """

    def __init__(self) -> None:
        super().__init__()
        self.readBack: list[int] = []
        self.reads = 0

    def due(self, now: float, limit: int, skip: frozenset[int], through: int | None = None) -> Deferred[Any]:
        self.reads += 1
        d = super().due(now, limit, skip, through)
        return d.addCallback(self._record)

    def _record(self, deliveries: list[Any]) -> list[Any]:
        self.readBack += [d.id for d in deliveries]
        return deliveries


@implementer(IBatchSender)
class FakeBatchSender(FakeSender):
    """
    A target that takes groups (L{IBatchSender}): each C{sendBatch} waits
    in C{batches} for the test to answer it.
    """

    def __init__(self, batchSize: int) -> None:
        super().__init__()
        self.batchSize = batchSize
        self.batches: list[tuple[list[bytes], Deferred[list[Any]]]] = []

    def sendBatch(self, payloads: Any) -> Deferred[list[Any]]:
        d: Deferred[list[Any]] = Deferred()
        self.batches.append((list(payloads), d))
        return d


class SettleCountingStore(MemoryEventStore):
    """
    A memory store that records the groups each C{settle} call was given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.settles: list[tuple[int, int, int]] = []

    def settle(self, succeeded: Any, kept: Any, failed: Any) -> Deferred[None]:
        self.settles.append((len(succeeded), len(kept), len(failed)))
        return super().settle(succeeded, kept, failed)


class NotifierTests(SynchronousTestCase):
    """
    The notifier's policy.
    """

    def make(self, senders: dict[str, FakeSender], store: MemoryEventStore | None = None, **event: Any):
        self.clock = Clock()
        self.store = store or MemoryEventStore()
        notifier = EventNotifier(eventConfig(**event), self.store, senders, self.clock)
        notifier.startService()
        return notifier

    def counts(self, notifier: EventNotifier) -> dict[str, dict[str, int]]:
        return {row["target"]: {k: row[k] for k in ("succeeded", "pending", "retrying", "failed")}
                for row in self.successResultOf(notifier.counts())}

    def test_memoryStoreInterface(self) -> None:
        """
        The memory store provides the interface.
        """
        self.assertTrue(verifyObject(IEventStore, MemoryEventStore()))

    def test_delivered(self) -> None:
        """
        A routed message reaches the target on the next turn of the
        reactor, and is counted as succeeded.
        """
        sender = FakeSender("ok")
        notifier = self.make({"targets[0]": sender})
        m, payload = message()
        notifier.notify(m, payload)
        self.assertEqual(sender.sent, [])
        self.clock.advance(0)
        self.assertEqual(sender.sent, [payload])
        self.assertEqual(self.counts(notifier)["targets[0]"], {"succeeded": 1, "pending": 0, "retrying": 0, "failed": 0})

    def test_storedOnlyForAWaiter(self) -> None:
        """
        The notifier asks the store to have its deliveries written
        (C{stored}) only for a waiter of L{EventNotifier.committed} (an
        ack): otherwise the store writes when it will, and not at all what
        the target confirmed before.
        """

        class Asked(MemoryEventStore):
            asked = 0

            def stored(self) -> Deferred[None]:
                self.asked += 1
                return super().stored()

        store = Asked()
        notifier = self.make({"targets[0]": FakeSender("ok")}, store=store)
        notifier.notify(*message())
        self.clock.advance(0)
        self.assertEqual(store.asked, 0)
        notifier.notify(*message())
        committed = notifier.committed()
        self.assertNoResult(committed)
        self.clock.advance(0)
        self.successResultOf(committed)
        self.assertEqual(store.asked, 1)
        self.successResultOf(notifier.committed())
        self.assertEqual(store.asked, 2)

    def test_everyTarget(self) -> None:
        """
        Every message goes to every target.
        """
        a, b = FakeSender("ok"), FakeSender("ok")
        targets = [{"type": "postback", "url": "http://a/"}, {"type": "postback", "url": "http://b/"}]
        notifier = self.make({"targets[0]": a, "targets[1]": b}, targets=targets)
        for i in range(3):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual([json.loads(p)["text"] for p in a.sent], ["0", "1", "2"])
        self.assertEqual([json.loads(p)["text"] for p in b.sent], ["0", "1", "2"])

    def test_filters(self) -> None:
        """
        Ignored types, and the server's own messages unless
        C{sendBotMessages}, are not sent.
        """
        sender = FakeSender("ok")
        notifier = self.make({"targets[0]": sender}, ignoreTypes=["typing"])
        notifier.notify(*message(kind="typing"))
        notifier.notify(*message(sender=0))
        notifier.notify(*message(text="kept"))
        self.clock.advance(0)
        self.assertEqual([json.loads(p)["text"] for p in sender.sent], ["kept"])
        sender = FakeSender("ok")
        notifier = self.make({"targets[0]": sender}, sendBotMessages=True)
        notifier.notify(*message(sender=0))
        self.clock.advance(0)
        self.assertEqual(len(sender.sent), 1)

    def test_retries(self) -> None:
        """
        A refused delivery is retried C{retryCount} times,
        C{retryIntervalSeconds} apart, then kept as failed and counted.
        """
        sender = FakeSender("fail")
        notifier = self.make({"targets[0]": sender}, retryCount=2, retryIntervalSeconds=10)
        notifier.notify(*message())
        self.clock.advance(0)
        self.assertEqual(len(sender.sent), 1)
        self.assertEqual(self.counts(notifier)["targets[0]"]["retrying"], 1)
        self.clock.advance(9.9)
        self.assertEqual(len(sender.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(sender.sent), 2)
        self.clock.advance(10)
        self.assertEqual(len(sender.sent), 3)
        self.clock.advance(100)
        self.assertEqual(len(sender.sent), 3)
        self.assertEqual(self.counts(notifier)["targets[0]"], {"succeeded": 0, "pending": 0, "retrying": 0, "failed": 1})

    def test_retryOff(self) -> None:
        """
        With C{enableRetry} off, one refusal is final.
        """
        sender = FakeSender("fail")
        notifier = self.make({"targets[0]": sender}, enableRetry=False, retryCount=5)
        notifier.notify(*message())
        self.clock.advance(100)
        self.assertEqual(len(sender.sent), 1)
        self.assertEqual(self.counts(notifier)["targets[0]"]["failed"], 1)

    def test_retryThenSuccess(self) -> None:
        """
        A retry that is accepted counts as succeeded.
        """
        sender = FakeSender("fail")
        notifier = self.make({"targets[0]": sender}, retryCount=3, retryIntervalSeconds=5)
        notifier.notify(*message())
        self.clock.advance(0)
        sender.answer = "ok"
        self.clock.advance(5)
        self.assertEqual(len(sender.sent), 2)
        self.assertEqual(self.counts(notifier)["targets[0]"], {"succeeded": 1, "pending": 0, "retrying": 0, "failed": 0})

    def test_fallbackChain(self) -> None:
        """
        When a target's retries are spent, each fallback is tried in turn
        with the same policy; success is counted for the one that accepted.
        """
        primary, first, second = FakeSender("fail"), FakeSender("fail"), FakeSender("ok")
        targets = [{"type": "postback", "url": "http://a/", "fallback": [
            {"type": "postback", "url": "http://b/"}, {"type": "postback", "url": "http://c/"}]}]
        notifier = self.make({"targets[0]": primary, "targets[0].fallback[0]": first,
                              "targets[0].fallback[1]": second},
                             targets=targets, retryCount=1, retryIntervalSeconds=10)
        notifier.notify(*message())
        self.clock.advance(0)
        self.clock.advance(10)
        self.assertEqual((len(primary.sent), len(first.sent), len(second.sent)), (2, 1, 0))
        self.clock.advance(10)
        self.assertEqual((len(primary.sent), len(first.sent), len(second.sent)), (2, 2, 1))
        counts = self.counts(notifier)
        self.assertEqual(counts["targets[0].fallback[1]"]["succeeded"], 1)
        self.assertEqual(sum(c["failed"] + c["pending"] + c["retrying"] for c in counts.values()), 0)

    def test_wholeChainFails(self) -> None:
        """
        When the fallbacks refuse too, the delivery is kept as failed at the
        last target.
        """
        primary, fallback = FakeSender("fail"), FakeSender("fail")
        targets = [{"type": "postback", "url": "http://a/", "fallback": [{"type": "postback", "url": "http://b/"}]}]
        notifier = self.make({"targets[0]": primary, "targets[0].fallback[0]": fallback},
                             targets=targets, retryCount=0)
        notifier.notify(*message())
        self.clock.advance(0)
        self.assertEqual((len(primary.sent), len(fallback.sent)), (1, 1))
        self.assertEqual(self.counts(notifier)["targets[0].fallback[0]"]["failed"], 1)

    def test_deliveryLogsHeld(self) -> None:
        """
        A dead target and a dead fallback with a backlog of 1,000: the
        per-delivery lines (fallback tried, failed for good) are marked as
        the log's L{FloodGuard} holds to one a second per kind, so the log
        gets one of each in the first second, then one a second, each saying
        how many like it were held back; nothing else is logged per
        delivery.
        """
        primary, fallback = FakeSender(), FakeSender()
        targets = [{"type": "postback", "url": "http://a/", "fallback": [{"type": "postback", "url": "http://b/"}]}]
        notifier = self.make({"targets[0]": primary, "targets[0].fallback[0]": fallback},
                             targets=targets, retryCount=0, maxParallelWorkers=4)

        def refuse(sender: FakeSender) -> Any:
            # each refusal on a later turn, as a webhook's
            def send(payload: bytes) -> Deferred[None]:
                d: Deferred[None] = Deferred()
                self.clock.callLater(0, d.errback, DeliveryRefused("HTTP 500"))
                return d

            return send

        primary.send = refuse(primary)  # type: ignore[method-assign]
        fallback.send = refuse(fallback)  # type: ignore[method-assign]
        raw: list[dict[str, Any]] = []
        shown: list[dict[str, Any]] = []
        guard = FloodGuard(shown.append, self.clock)
        for observer in (raw.append, guard):
            globalLogPublisher.addObserver(observer)
            self.addCleanup(globalLogPublisher.removeObserver, observer)
        for i in range(1000):
            notifier.notify(*message(text=str(i)))
        for _ in range(20):
            self.clock.advance(0.1)
        self.assertEqual(self.counts(notifier)["targets[0].fallback[0]"]["failed"], 1000)
        mine = [e for e in raw if e.get("log_namespace", "").startswith("wsserver.events")]
        self.assertEqual(len(mine), 2000)
        fallbackFormat = "event target {target} failed ({reason}); trying {fallback}"
        failedFormat = "event delivery {id} failed for good at {target}: {reason}"
        self.assertEqual({e["log_format"] for e in mine}, {fallbackFormat, failedFormat})
        formats = [e["log_format"] for e in shown]
        self.assertEqual(formats.count(fallbackFormat), 1)
        self.assertEqual(formats.count(failedFormat), 1)
        self.assertEqual(guard.held, 1998)
        self.assertEqual(len(shown), 2)
        # a second later, the next of a kind passes, after the count of those held
        self.clock.advance(1)
        notifier.notify(*message(text="late"))
        for _ in range(5):
            self.clock.advance(0.1)
        held = [formatEvent(e) for e in shown if e["log_namespace"] == "wsserver.logflood"]
        self.assertEqual(sorted(held), [
            "999 more log lines like the next were held back in the last 3 s",
            "999 more log lines like the next were held back in the last 3 s",
        ])
        self.assertEqual(len(shown), 6)

    def test_maxParallel(self) -> None:
        """
        At most C{maxParallelWorkers} deliveries are in flight; the next
        starts when one finishes.
        """
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, maxParallelWorkers=3)
        for i in range(10):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual(len(sender.waiting), 3)
        self.assertEqual(self.counts(notifier)["targets[0]"]["pending"], 10)
        sender.waiting[0].callback(None)
        self.assertEqual(len(sender.waiting), 4)
        for _ in range(20):
            open = [d for d in sender.waiting if not d.called]
            self.assertLessEqual(len(open), 3)
            if not open:
                break
            open[0].callback(None)
        self.assertEqual([json.loads(p)["text"] for p in sender.sent], [str(i) for i in range(10)])
        self.assertEqual(self.counts(notifier)["targets[0]"]["succeeded"], 10)

    def test_groupsOfBatchSize(self) -> None:
        """
        A sender with a C{batchSize} is handed the deliveries of a turn in
        groups of at most that many; C{maxParallelWorkers} bounds the groups
        in flight, not the deliveries.
        """
        sender = FakeSender("wait")
        sender.batchSize = 4  # type: ignore[attr-defined]
        notifier = self.make({"targets[0]": sender}, maxParallelWorkers=2)
        for i in range(20):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual(len(sender.waiting), 8)
        for d in sender.waiting[:3]:
            d.callback(None)
        # the first group is not finished: no new one
        self.assertEqual(len(sender.waiting), 8)
        sender.waiting[3].callback(None)
        self.assertEqual(len(sender.waiting), 12)
        while any(not d.called for d in sender.waiting):
            [d for d in sender.waiting if not d.called][0].callback(None)
        self.assertEqual([json.loads(p)["text"] for p in sender.sent], [str(i) for i in range(20)])
        self.assertEqual(self.counts(notifier)["targets[0]"]["succeeded"], 20)

    def test_lightLoadGathered(self) -> None:
        """
        New deliveries fewer than a batch wait C{batchWaitMillis} (10) for
        more before they go out, with one timer: a light load (a message a
        turn) goes in one group every 10 ms, not one a message; a batch's
        worth goes at once, with what came with it; a sender without a C{batchSize} (a webhook) is
        not kept waiting.
        """
        sender = FakeBatchSender(4)
        notifier = self.make({"targets[0]": sender}, maxParallelWorkers=8)
        for i in range(3):
            notifier.notify(*message(text=str(i)))
            self.clock.advance(0)
            self.clock.advance(0.003)
        self.assertEqual(sender.batches, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.001)
        self.assertEqual([len(p) for p, _ in sender.batches], [3])
        # a batch's worth (and what came with it) goes at once
        for i in range(3, 8):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual([len(p) for p, _ in sender.batches], [3, 4, 1])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        webhook = FakeSender("ok")
        notifier = self.make({"targets[0]": webhook})
        notifier.notify(*message())
        self.clock.advance(0)
        self.assertEqual(len(webhook.sent), 1)

    def test_batchSenderGroups(self) -> None:
        """
        A sender that takes groups (L{IBatchSender}) is handed each group in
        one C{sendBatch} and answers once for it; the notifier settles the
        group with one call into the store, each delivery by its own
        outcome (accepted; refused: a retry; not tried: waits, no retry
        spent), and a worker is a group in flight (here with no wait for
        more, C{batchWaitMillis} 0: a group starts as soon as a worker is
        free, whatever its size).
        """
        sender = FakeBatchSender(4)
        store = SettleCountingStore()
        notifier = self.make({"targets[0]": sender}, store=store, maxParallelWorkers=2, retryCount=1,
                             retryIntervalSeconds=5, batchWaitMillis=0)
        for i in range(10):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual([len(p) for p, _ in sender.batches], [4, 4])
        self.assertEqual(sender.sent, [])
        sender.batches[0][1].callback([None, DeliveryRefused("HTTP 500"), TargetUnreachable("down", 20), None])
        self.assertEqual(store.settles, [(2, 2, 0)])
        # the worker of the first group is free: the next group starts
        self.assertEqual([len(p) for p, _ in sender.batches], [4, 4, 2])
        self.assertEqual(self.counts(notifier)["targets[0]"],
                         {"succeeded": 2, "pending": 7, "retrying": 1, "failed": 0})
        sender.batches[1][1].errback(DeliveryRefused("no"))
        sender.batches[2][1].callback([None, None])
        self.assertEqual(store.settles, [(2, 2, 0), (0, 4, 0), (2, 0, 0)])
        self.assertEqual(self.counts(notifier)["targets[0]"],
                         {"succeeded": 4, "pending": 1, "retrying": 5, "failed": 0})
        self.assertEqual(notifier.pending.messages, 6)
        # the retries (5 s) and the unreachable one (20 s) come back in groups
        self.clock.advance(5)
        self.assertEqual([len(p) for p, _ in sender.batches[3:]], [4, 1])
        sender.batches[3][1].callback([DeliveryRefused("again")] * 4)
        sender.batches[4][1].callback([None])
        self.assertEqual(store.settles[3:], [(0, 0, 4), (1, 0, 0)])
        self.clock.advance(15)
        self.assertEqual([len(p) for p, _ in sender.batches[5:]], [1])
        sender.batches[5][1].callback([None])
        self.assertEqual(self.counts(notifier)["targets[0]"],
                         {"succeeded": 6, "pending": 0, "retrying": 0, "failed": 4})
        self.assertEqual(notifier.pending.messages, 0)

    def test_maxPending(self) -> None:
        """
        Over C{maxPending} deliveries stored and not settled, the bound is
        full (the senders of messages stop being read); it is relieved once
        the target caught up below half of it.
        """
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, maxPending=4, maxParallelWorkers=10)
        resumed: list[bool] = []
        for i in range(5):
            notifier.notify(*message(text=str(i)))
        self.assertTrue(notifier.pending.full)
        notifier.pending.whenRelieved(lambda: resumed.append(True))
        self.clock.advance(0)
        for d in sender.waiting[:2]:
            d.callback(None)
        self.assertEqual((notifier.pending.full, resumed), (True, []))
        sender.waiting[2].callback(None)
        self.assertEqual((notifier.pending.full, resumed), (False, [True]))

    def test_settleWriteFailed(self) -> None:
        """
        When the store cannot write what a group settled (the disk), the
        deliveries still stop counting against C{maxPending} (else a disk
        error would stop every sender for good), one kept for a retry is
        still read back when due, and the failure is logged.
        """

        class Failing(MemoryEventStore):
            # (the change is made, then its write reported failed)
            failures = 2

            def settle(self, succeeded: Any, kept: Any, failed: Any) -> Deferred[None]:
                d = super().settle(succeeded, kept, failed)
                if self.failures:
                    self.failures -= 1
                    return d.addCallback(lambda _: fail(RuntimeError("disk I/O error")))
                return d

        sender = FakeSender("fail")
        notifier = self.make({"targets[0]": sender}, store=Failing(), maxPending=4, retryIntervalSeconds=5)
        notifier.notify(*message())
        self.assertEqual(notifier.pending.messages, 1)
        self.clock.advance(0)
        # refused, kept for a retry: its write failed
        self.assertEqual((len(sender.sent), notifier.pending.messages), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        sender.answer = "ok"
        self.clock.advance(5)
        # retried and accepted: that write failed too
        self.assertEqual((len(sender.sent), notifier.pending.messages), (2, 0))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.counts(notifier)["targets[0]"]["succeeded"], 1)

    def answerAll(self, sender: FakeSender, step: Any = None) -> None:
        """
        Answer the open sends of C{sender} one at a time, oldest first,
        calling C{step} (a load: true while it has more to add) before
        each, until none is open and the load is done.
        """
        for _ in range(10000):
            more = step is not None and step()
            open = [d for d in sender.waiting if not d.called]
            if not open and not more:
                return
            if open:
                open[0].callback(None)
        self.fail("sends still open")

    def test_backlogDrainsThenFromMemory(self) -> None:
        """
        A backlog that a previous run left is read back from the store (a
        read of it comes back full) while new deliveries arrive under a
        sustained load; those are handed over from memory, never read back,
        and once the backlog is drained the store is not read again.  Each
        delivery is sent once.
        """
        store = CountingStore()
        old = self.successResultOf(store.add([("targets[0]", b'{"text":"old%d"}' % (i,)) for i in range(10)], 0))
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store, maxParallelWorkers=2)
        self.assertEqual(store.readBack, [old[0].id, old[1].id])
        steps = iter(range(60))

        def load() -> bool:
            # a new message every other answer: the target keeps up
            step = next(steps, None)
            if step is not None and step % 2 == 0:
                notifier.notify(*message(text="new%d" % (step,)))
                self.clock.advance(0)
            return step is not None

        self.answerAll(sender, load)
        texts = [json.loads(p)["text"] for p in sender.sent]
        self.assertEqual(len(texts), 40)
        self.assertEqual(len(texts), len(set(texts)))
        self.assertEqual(sorted(t for t in texts if t.startswith("old")), sorted("old%d" % (i,) for i in range(10)))
        # the backlog drained while the load went on
        self.assertLess(max(i for i, t in enumerate(texts) if t.startswith("old")), 20)
        self.assertEqual(sorted(store.readBack), [d.id for d in old])
        reads = store.reads
        for i in range(50):
            notifier.notify(*message(text="later%d" % (i,)))
            self.clock.advance(0)
            self.answerAll(sender)
        self.assertEqual(len(sender.sent), 90)
        self.assertEqual(store.reads, reads)
        self.assertEqual(sorted(store.readBack), [d.id for d in old])
        self.assertEqual(len(sender.sent), len(set(sender.sent)))
        self.assertEqual(self.counts(notifier)["targets[0]"]["pending"], 0)

    def test_overflowReadBack(self) -> None:
        """
        Deliveries stored beyond what memory holds (L{READY_LIMIT}) are read
        back from the store and delivered, once each, while those that fit
        and the later ones go from memory.
        """
        self.patch(notifierModule, "READY_LIMIT", 3)
        store = CountingStore()
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store, maxParallelWorkers=1)
        for i in range(6):
            notifier.notify(*message(text=str(i)))
        self.clock.advance(0)
        self.assertEqual(store.readBack, [])
        steps = iter(range(28))

        def load() -> bool:
            step = next(steps, None)
            if step is not None and step % 2 == 0:
                notifier.notify(*message(text=str(6 + step // 2)))
                self.clock.advance(0)
            return step is not None

        self.answerAll(sender, load)
        texts = [json.loads(p)["text"] for p in sender.sent]
        self.assertEqual(sorted(texts, key=int), [str(i) for i in range(20)])
        self.assertEqual(len(sender.sent), len(sender.waiting))
        # the three that did not fit, and nothing else, came from the store
        self.assertEqual(len(store.readBack), 3)
        self.assertEqual(self.counts(notifier)["targets[0]"]["pending"], 0)

    def test_retryReadBackBesideMemory(self) -> None:
        """
        A delivery kept for a retry is read back when due while the others
        go from memory.
        """
        store = CountingStore()
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store, retryCount=1, retryIntervalSeconds=5)
        notifier.notify(*message(text="first"))
        self.clock.advance(0)
        sender.waiting[0].errback(DeliveryRefused("HTTP 500"))
        for i in range(3):
            notifier.notify(*message(text=str(i)))
            self.clock.advance(1)
            self.answerAll(sender)
        self.assertEqual(store.readBack, [])
        self.clock.advance(2)
        self.answerAll(sender)
        self.assertEqual([json.loads(p)["text"] for p in sender.sent], ["first", "0", "1", "2", "first"])
        self.assertEqual(len(store.readBack), 1)
        self.assertEqual(self.counts(notifier)["targets[0]"]["succeeded"], 4)

    def test_restartResends(self) -> None:
        """
        What a stopped notifier had not delivered is sent by the next one
        over the same store.
        """
        store = MemoryEventStore()
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store)
        notifier.notify(*message(text="a"))
        notifier.notify(*message(text="b"))
        self.clock.advance(0)
        sender.waiting[0].callback(None)
        stopped = notifier.stopService()
        self.clock.advance(3)
        self.successResultOf(stopped)
        self.assertTrue(sender.closed)
        again = FakeSender("ok")
        self.make({"targets[0]": again}, store=store)
        self.assertEqual([json.loads(p)["text"] for p in again.sent], ["b"])

    def test_stopStoresBatch(self) -> None:
        """
        Messages notified just before the stop are stored, not lost.
        """
        store = MemoryEventStore()
        notifier = self.make({"targets[0]": FakeSender("wait")}, store=store)
        notifier.notify(*message(text="late"))
        d = notifier.stopService()
        self.clock.advance(3)
        self.successResultOf(d)
        again = FakeSender("ok")
        self.make({"targets[0]": again}, store=store)
        self.assertEqual([json.loads(p)["text"] for p in again.sent], ["late"])

    def test_unknownTarget(self) -> None:
        """
        A stored delivery for a target that is no longer configured is kept
        as failed, once, and does not hold up the others.
        """
        store = MemoryEventStore()
        self.successResultOf(store.add([("targets[5]", b'{"text":"old"}')], 0))
        sender = FakeSender("ok")
        notifier = self.make({"targets[0]": sender}, store=store)
        notifier.notify(*message(text="new"))
        self.clock.advance(0)
        self.assertEqual([json.loads(p)["text"] for p in sender.sent], ["new"])
        counts = self.successResultOf(store.counts())
        self.assertEqual(counts["targets[5]"]["failed"], 1)
        self.assertEqual(counts["targets[0]"]["succeeded"], 1)

    def test_stopLeavesInFlightPending(self) -> None:
        """
        A delivery still in flight when the stop's grace period ends stays
        pending as it was: the stop is not the target's refusal.
        """
        store = MemoryEventStore()
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store, retryCount=0)
        notifier.notify(*message())
        self.clock.advance(0)
        stopped = notifier.stopService()
        self.clock.advance(3)
        sender.waiting[0].errback(DeliveryRefused("closed"))
        self.successResultOf(stopped)
        self.assertEqual(self.successResultOf(store.counts())["targets[0]"],
                         {"succeeded": 0, "pending": 1, "retrying": 0, "failed": 0})

    def test_stopWaitsForDueRead(self) -> None:
        """
        A read of due deliveries in flight when the stop starts (a message
        just stored, at the last disconnections) holds the stop until it
        answers; what it answers is not started, stays pending for the next
        start, and nothing touches the store once the stop has fired (the
        server closes the database then).  The order of a server's stop,
        reproduced step by step.
        """
        store = ClosingStore()
        # a previous run left "last" pending (its target never answered):
        # the next start reads it back from the store
        previous = self.make({"targets[0]": FakeSender("wait")}, store=store)
        previous.notify(*message(text="last"))
        self.clock.advance(0)
        stoppedBefore = previous.stopService()
        self.clock.advance(10)
        self.successResultOf(stoppedBefore)
        store.holdReads = True
        sender = FakeSender("ok")
        notifier = self.make({"targets[0]": sender}, store=store)
        self.clock.advance(0)
        self.assertEqual(len(store.reads), 1)
        stopped = notifier.stopService()
        self.assertNoResult(stopped)
        store.answerReads()
        self.successResultOf(stopped)
        store.closed = True
        self.clock.advance(10)
        self.assertEqual(sender.sent, [])
        self.assertEqual(store.late, [])
        store.closed = store.holdReads = False
        again = FakeSender("ok")
        self.make({"targets[0]": again}, store=store)
        self.assertEqual([json.loads(p)["text"] for p in again.sent], ["last"])

    def test_noBookkeepingAfterStop(self) -> None:
        """
        A delivery that the target accepts after the stop's grace period
        (the stop has fired: the database is closed) is not written: it
        stays pending, sent again at the next start, rather than failing
        with "database is closed".
        """
        store = ClosingStore()
        sender = FakeSender("wait")
        notifier = self.make({"targets[0]": sender}, store=store)
        notifier.notify(*message(text="slow"))
        self.clock.advance(0)
        self.assertEqual(len(sender.waiting), 1)
        stopped = notifier.stopService()
        self.clock.advance(3)
        self.successResultOf(stopped)
        store.closed = True
        sender.waiting[0].callback(None)
        self.assertEqual(store.late, [])
        store.closed = False
        self.assertEqual(self.successResultOf(store.counts())["targets[0]"]["pending"], 1)

    def test_targetKeys(self) -> None:
        """
        Target keys name each target and its fallbacks, depth first.
        """
        config = eventConfig(targets=[
            {"type": "postback", "url": "http://a/", "fallback": [
                {"type": "postback", "url": "http://b/", "fallback": [{"type": "redis"}]}]},
            {"type": "redis", "mode": {"type": "channel"}}])
        keys = {p: [k for k, _ in chain] for p, chain in targetKeys(config).items()}
        self.assertEqual(keys, {
            "targets[0]": ["targets[0]", "targets[0].fallback[0]", "targets[0].fallback[0].fallback[0]"],
            "targets[1]": ["targets[1]"]})


class _Hook(Resource):
    isLeaf = True

    def __init__(self, code: int = 200, location: bytes | None = None) -> None:
        super().__init__()
        self.code = code
        self.location = location
        self.requests: list[tuple[bytes, dict[bytes, list[bytes]], bytes]] = []

    def render(self, request: Any) -> bytes:
        self.requests.append((request.method, dict(request.requestHeaders.getAllRawHeaders()),
                              request.content.read()))
        request.setResponseCode(self.code)
        if self.location:
            request.setHeader(b"Location", self.location)
        return b"ok"


class PostbackTests(SynchronousTestCase):
    """
    The webhook sender.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def sender(self, hook: Resource, **target: Any) -> PostbackSender:
        raw = {"type": "postback", "url": "http://hook.example/in"}
        raw.update(target)
        config = eventConfig(targets=[raw]).targets[0]
        self.stub = StubTreq(hook)
        return PostbackSender(config, self.stub, self.clock)

    def test_post(self) -> None:
        """
        The message JSON is POSTed with C{Content-Type: application/json} and
        the target's auth as a credential; a 2xx is success.
        """
        hook = _Hook(204)
        sender = self.sender(hook, auth={"type": "header", "name": "X-Token", "value": "t"})
        self.assertIsNone(self.successResultOf(sender.send(b'{"a":1}')))
        method, headers, body = hook.requests[0]
        self.assertEqual((method, body), (b"POST", b'{"a":1}'))
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])
        self.assertEqual(headers[b"X-Token"], [b"t"])

    def test_methodAndBasic(self) -> None:
        """
        The configured method is used, and basic auth becomes an
        Authorization header.
        """
        hook = _Hook(200)
        sender = self.sender(hook, method="PUT", auth={"type": "basic", "user": "u", "password": "p"})
        self.successResultOf(sender.send(b"{}"))
        method, headers, _ = hook.requests[0]
        self.assertEqual(method, b"PUT")
        self.assertEqual(headers[b"Authorization"], [b"Basic dTpw"])

    def test_serverError(self) -> None:
        """
        A 500 is a refusal.
        """
        f = self.failureResultOf(self.sender(_Hook(500)).send(b"{}"), DeliveryRefused)
        self.assertEqual(f.getErrorMessage(), "HTTP 500")

    def test_redirect(self) -> None:
        """
        A redirect is a refusal, and is not followed.
        """
        hook = _Hook(302, b"http://elsewhere.example/")
        f = self.failureResultOf(self.sender(hook).send(b"{}"), DeliveryRefused)
        self.assertEqual(f.getErrorMessage(), "HTTP 302")
        self.assertEqual(len(hook.requests), 1)

    def test_tricklingBodyCut(self) -> None:
        """
        A 2xx whose body is still arriving at C{connectionTimeoutSeconds}
        (counted from the request) is a refusal that says why, and the
        connection is closed.
        """
        hook = _Trickle()
        d = self.sender(hook, connectionTimeoutSeconds=5).send(b"{}")
        for _ in range(4):
            self.clock.advance(1)
            hook.request.write(b" ")
            self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(1)
        f = self.failureResultOf(d, DeliveryRefused)
        self.assertEqual(f.getErrorMessage(), "HTTP 200, but answer not complete within 5 seconds")
        self.stub.flush()
        self.assertEqual(len(hook.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hugeBodyCut(self) -> None:
        """
        A body over the cap is a refusal; the rest is not read.
        """
        hook = _Trickle(b"x" * (MAX_ANSWER_BYTES + 1))
        f = self.failureResultOf(self.sender(hook).send(b"{}"), DeliveryRefused)
        self.assertEqual(f.getErrorMessage(), f"HTTP 200, but answer body over {MAX_ANSWER_BYTES} bytes")

    def test_tricklingErrorNamesStatus(self) -> None:
        """
        A 500 whose body trickles is reported by its status.
        """
        hook = _Trickle(code=500)
        d = self.sender(hook, connectionTimeoutSeconds=2).send(b"{}")
        self.clock.advance(2)
        self.assertEqual(self.failureResultOf(d, DeliveryRefused).getErrorMessage(), "HTTP 500")

    def test_tricklingWebhookRetried(self) -> None:
        """
        Through the notifier, a delivery cut at its timeout counts as failed
        and waits for its retry, as any refusal does; the retry that gets a
        whole answer succeeds.
        """
        hook = _Trickle()
        sender = self.sender(hook, connectionTimeoutSeconds=5)
        store = MemoryEventStore()
        notifier = EventNotifier(eventConfig(retryIntervalSeconds=10), store, {"targets[0]": sender}, self.clock)
        notifier.startService()
        m, payload = message()
        notifier.notify(m, payload)
        self.clock.advance(0)
        self.assertEqual(len(hook.requests), 1)
        self.clock.advance(5)
        counts = self.successResultOf(notifier.counts())[0]
        self.assertEqual((counts["retrying"], counts["succeeded"]), (1, 0))
        hook.code, hook.finish = 204, True
        self.clock.advance(10)
        self.assertEqual(len(hook.requests), 2)
        counts = self.successResultOf(notifier.counts())[0]
        self.assertEqual((counts["retrying"], counts["succeeded"]), (0, 1))


class _Trickle(Resource):
    """
    A webhook that answers with headers and C{first}, then leaves its body
    open (unless C{finish}); the test writes the rest.
    """

    isLeaf = True

    def __init__(self, first: bytes = b"{", code: int = 200) -> None:
        super().__init__()
        self.first = first
        self.code = code
        self.finish = False
        self.request: Any = None
        self.requests: list[Any] = []
        self.lost: list[Any] = []

    def render(self, request: Any) -> Any:
        self.request = request
        self.requests.append(request)
        request.notifyFinish().addErrback(self.lost.append)
        request.setResponseCode(self.code)
        if self.finish:
            return b""
        request.write(self.first)
        return NOT_DONE_YET
