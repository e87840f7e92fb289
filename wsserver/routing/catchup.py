# -*- test-case-name: tests.test_routing -*-
"""
What a user missed, delivered when it connects: the undelivered queue
(L{OfflineQueue}: copies kept for a user online nowhere; drained on the
user's first connection) and the inbox replay of a connection that resumes
with C{?since=N} (SPEC section 10).

Both keep the order: the live copies that come meanwhile wait in the user's
L{Held<wsserver.routing.delivery.Held>} state until what was missed is
written.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..ids import UserId
from ..history import IInbox, Page, seqOf
from ..messages import MessageFactory
from ..metrics import Counters
from ..queue import IUndeliveredStore, forRecipient
from .delivery import User
from .interfaces import IConnection

__all__ = ["CatchUp", "FETCH_ATTEMPTS", "FETCH_RETRY_SECONDS", "OfflineQueue"]

#: Reads of a user's undelivered queue tried before newer messages go first.
FETCH_ATTEMPTS = 3
#: Seconds before the first retry of a failed read (then twice that ...).
FETCH_RETRY_SECONDS = 1.0


class OfflineQueue:
    """
    The undelivered queue as the router writes it: counted, and a failed
    write is logged.
    """

    log = Logger()

    def __init__(self, store: IUndeliveredStore, counters: Counters) -> None:
        self.store = store
        self._counters = counters

    def keep(self, userId: UserId, payload: bytes, now: float) -> Deferred[None]:
        """
        Keep C{payload} (already the copy for C{userId}) for C{userId}.
        """
        self._counters.queued += 1
        d = self.store.put(userId, payload, now)
        d.addErrback(lambda f: self.log.failure("could not keep a message for user {uid}", f, uid=userId))
        return d

    def keepMany(self, userIds: Sequence[UserId], payload: bytes, now: float) -> Deferred[None]:
        """
        Keep C{payload} once for C{userIds}: each gets its copy when fetched.
        """
        self._counters.queued += len(userIds)
        d = self.store.putMany(userIds, payload, now)
        d.addErrback(lambda f: self.log.failure("could not keep a message for {n} users", f, n=len(userIds)))
        return d


class CatchUp:
    """
    Delivers to a user what it missed: its undelivered queue (L{drain},
    L{dropQueued}) and the inbox replays of its resuming connections
    (L{resume}, L{catchUp}).

    @param queue: the undelivered queue, or L{None} when it is off.
    @param inbox: the per-user inboxes, or L{None} when off.
    @param replayLimit: the most entries a resumed connection is replayed.
    @param changed: told that a user's statistics changed.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, queue: OfflineQueue | None, inbox: IInbox | None,
                 prepare: Callable[[bytes], Any], messages: MessageFactory, counters: Counters,
                 changed: Callable[[UserId], None], replayLimit: int) -> None:
        self._clock = clock
        self._queue = queue
        self._inbox = inbox
        self._prepare = prepare
        self._messages = messages
        self._counters = counters
        self._changed = changed
        self._replayLimit = replayLimit
        #: the retries of failed reads waiting, with the user of each
        self._retries: dict[IDelayedCall, User] = {}
        self._stopped = False

    def stop(self) -> None:
        """
        The server stops: cancel the retries of undelivered-queue reads that
        wait (no timer outlives the server), and end those drains as when
        their reads gave up; a read in flight that fails from now on is
        not tried again.
        """
        self._stopped = True
        retries, self._retries = self._retries, {}
        for call, user in retries.items():
            call.cancel()
            self._drained(user, [])

    # the undelivered queue

    def drain(self, user: User) -> None:
        """
        Deliver what the undelivered queue kept for a user who just came
        online; copies routed meanwhile wait in the user's backlog, so that
        the stored ones arrive first.
        """
        queue = self._queue
        assert queue is not None
        store = queue.store
        userId = user.userId
        user.startDrain()
        attempts = [0]
        #: the retry waiting (one at a time)
        calls: list[IDelayedCall] = []

        def failed(f: Failure) -> None:
            # the stored messages go first: hold the newer ones and try the
            # store again a few times before giving up on the order
            attempts[0] += 1
            self.log.failure("could not read undelivered messages of user {uid} (attempt {n})", f,
                             uid=userId, n=attempts[0])
            if attempts[0] < FETCH_ATTEMPTS and user.connections and not self._stopped:
                call = self._clock.callLater(attempts[0] * FETCH_RETRY_SECONDS, retry)
                self._retries[call] = user
                calls.append(call)
            else:
                self._drained(user, [])

        def retry() -> None:
            del self._retries[calls.pop()]
            fetch()

        def fetch() -> None:
            store.fetch(userId, self._clock.seconds()).addCallbacks(lambda stored: self._drained(user, stored), failed)

        fetch()

    def _drained(self, user: User, stored: list[tuple[int, bytes]]) -> None:
        """
        The undelivered queue of C{user} answered C{stored}: write it, then
        what waited behind it.
        """
        queue = self._queue
        assert queue is not None
        userId = user.userId
        backlog = user.endDrain()
        if not user.connections:
            # all gone again before the store answered: what was stored
            # stays stored, and what came meanwhile is stored after it
            now = self._clock.seconds()
            for payload, _, _ in backlog:
                queue.keep(userId, forRecipient(payload, userId), now)
            return
        if stored:
            self._changed(userId)
        self._counters.delivered += len(stored)
        withInbox = self._inbox is not None
        stats = user.stats
        for _, payload in stored:
            stats.receivedMessages += 1
            stats.bytesTransferred += len(payload)
            user.writeStored(self._prepare(payload), seqOf(payload) if withInbox else None)
        for _, prepared, seq in backlog:
            user.writeEach(prepared, seq)
        if stored:
            queue.store.ack(userId, [key for key, _ in stored]).addErrback(
                lambda f: self.log.failure("could not forget delivered messages of user {uid}", f, uid=userId)
            )

    def dropQueued(self, user: User) -> None:
        """
        A connection resumes instead of draining the undelivered queue: what
        the queue held with a seq is in the inbox (the client has it, or the
        replay covers it) and is forgotten; what it held without one (kept
        before the inbox was on) is delivered, after the replay.
        """
        queue = self._queue
        assert queue is not None
        store = queue.store
        userId = user.userId

        def drop(stored: list[tuple[int, bytes]]) -> Deferred[None] | None:
            for _, payload in stored:
                if seqOf(payload) is None:
                    user.stats.receivedMessages += 1
                    user.writeEach(self._prepare(payload), None)
            if stored:
                return store.ack(userId, [key for key, _ in stored])
            return None

        store.fetch(userId, self._clock.seconds()).addCallback(drop).addErrback(
            lambda f: self.log.failure("could not drop the queue of resuming user {uid}", f, uid=userId)
        )

    # resuming (?since=N)

    def resume(self, connection: IConnection, user: User, since: int) -> None:
        """
        Replay the inbox of C{connection}'s user after C{since}, then what
        came live meanwhile (C{connection} resumed in C{user}'s state
        already).

        The rule: the connection was attached to live delivery, buffering,
        before the inbox was read; the read sees every append made before
        it.  So every message is in the replay or in the buffer (or both, a
        message appended before the read but delivered after the attach, or
        later still: forwarded by another node).  After the replay up to seq
        L, the connection gets only messages whose seq is greater than L:
        first those of the buffer, then the live ones.  No gap, no
        duplicate, in order.
        """
        inbox = self._inbox
        assert inbox is not None
        userId = user.userId

        def failed(f: Failure) -> None:
            self.log.failure("could not read the inbox of user {uid}", f, uid=userId)
            state = user.resumed(connection)
            if state is not None and state.replaying:
                connection.close(1011, "History unavailable: reconnect with the same since")

        inbox.read(userId, since, self._replayLimit, self._clock.seconds()).addCallbacks(
            lambda page: self._replay(connection, user, since, page), failed
        )

    def _replay(self, connection: IConnection, user: User, since: int, page: Page) -> None:
        state = user.resumed(connection)
        if state is None or state.buffer is None:
            return  # closed meanwhile
        userId = user.userId
        buffer, state.buffer = state.buffer, None
        if page.gapAfter(since):
            gap = self._messages.system("history_gap", userId, {"since": since, "first": page.first})
            connection.sendPrepared(self._prepare(gap.serialize()))
        last = since
        stats = user.stats
        # (a replay is a burst bounded by maxPerUser: not counted as a slow
        # consumer's backlog, as the queue's drain)
        for seq, framed in page.entries:
            connection.sendStored(self._prepare(framed))
            stats.receivedMessages += 1
            stats.bytesTransferred += len(framed)
            last = seq
        if page.entries:
            self._counters.delivered += len(page.entries)
            self._changed(userId)
        # (a since beyond the newest seq: seqs of a memory inbox restarted;
        # they count from there)
        state.floor = last if page.entries else min(since, page.last)
        for seq, prepared in buffer:
            if seq is None or state.fresh(seq):
                connection.sendPrepared(prepared)
        held = user.held
        if held is not None and held.catchUp:
            held.catchUp = False
            self.catchUp(user)

    def catchUp(self, user: User) -> None:
        """
        Another node appended to the inbox of a user it thought offline
        (the user had just resumed here): read the inbox again after what
        the resumed connections have, and send each what it lacks.
        """
        held = user.held
        if held is None or not held.resuming or self._inbox is None:
            return
        states = list(held.resuming.values())
        if any(state.replaying for state in states):
            held.catchUp = True  # again after that replay
        floors = [state.floor for state in states if not state.replaying]
        if not floors:
            return
        userId = user.userId

        def deliver(page: Page) -> None:
            for seq, framed in page.entries:
                prepared = None
                for connection in list(user.connections):
                    state = user.resumed(connection)
                    if state is not None and not state.replaying and state.fresh(seq):
                        if prepared is None:
                            prepared = self._prepare(framed)
                        connection.sendPrepared(prepared)

        self._inbox.read(userId, min(floors), self._replayLimit, self._clock.seconds()).addCallbacks(
            deliver, lambda f: self.log.failure("could not read the inbox of user {uid}", f, uid=userId)
        )
