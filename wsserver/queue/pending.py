# -*- test-case-name: tests.test_queue_pending -*-
"""
The bound on what the undelivered queue was given and has not written yet
(SPEC section 8: every buffer has a bound and back-pressure).

A store counts each message when it is handed one (L{PendingWrites.add})
and again when it is committed or its write failed (L{PendingWrites.done}).
Over C{maxMessages} or C{maxBytes}, or once the oldest message waiting was
handed over more than C{maxSeconds} ago, the bound is I{full}: the
connections and REST requests that route messages stop being read (they
wait with L{PendingWrites.whenRelieved}) until the writer has caught up
below the low-water mark, half of each limit; then every one of them is
resumed.  Nothing is dropped: what arrives while full (already read from the
network) is routed and kept as usual.

The age bound is what bounds a crash's loss in time: what a C{kill -9}
loses is what waits, and no sender is read once the oldest message waiting
is C{maxSeconds} old, so a crash loses at most the messages routed in the
last C{maxSeconds} of routing (and what was read from the network already).
It costs one comparison per message and no timer: the messages are grouped
in I{marks}, one per C{maxSeconds / MARKS} of time at most (a tuple each),
and the age of the oldest mark that still waits is looked at when an
C{add} comes at or after the time it becomes C{maxSeconds} old: a timer is
not needed, since when nothing is routed there is nothing to stop.  The writes finish in the order of the C{add}s, so the
count of messages written tells which marks are written.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

__all__ = ["LOW_WATER", "MARKS", "PendingBounds", "PendingWrites"]

#: The fraction of each limit below which readers are resumed.
LOW_WATER = 0.5

#: Marks per C{maxSeconds}: the oldest message waiting is at most this
#: fraction of C{maxSeconds} younger than its mark (so the bound may pause
#: the senders that much early, never late).
MARKS = 4


class _Readers:
    """
    The readers that wait for room, in the order of waiting (shared by
    L{PendingWrites} and L{PendingBounds}).
    """

    def __init__(self) -> None:
        #: what to call once there is room, in the order of waiting
        self._waiting: dict[Callable[[], None], None] = {}

    def _resumeAll(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for resume in waiting:
            resume()

    def forget(self, resume: Callable[[], None]) -> None:
        """
        C{resume} is no longer to be called (its reader is gone).
        """
        self._waiting.pop(resume, None)

    @property
    def waiting(self) -> int:
        """
        How many readers wait.
        """
        return len(self._waiting)


class PendingWrites(_Readers):
    """
    Counts the messages (and their bytes) that wait to be written, and
    tells the waiting readers when there is room again.

    @param maxMessages: over this many, L{full}; 0: no limit.
    @param maxBytes: over this many payload bytes, L{full}; 0: no limit.
    @param maxSeconds: once a message is added while the oldest one waiting
        was added this long ago (by the C{now} given to L{add}), L{full},
        until every message added before is written; 0: no limit.

    @ivar full: whether readers should stop (read on every message).
    @ivar late: whether it is full for C{maxSeconds}.
    @ivar messages: the messages waiting to be written.
    @ivar size: their payload bytes.
    @ivar pauses: how many times the bound became full.
    """

    def __init__(self, maxMessages: int = 0, maxBytes: int = 0, maxSeconds: float = 0.0) -> None:
        self.setLimits(maxMessages, maxBytes)
        self.maxSeconds = maxSeconds
        self.messages = 0
        self.size = 0
        self.full = False
        self.late = False
        self.pauses = 0
        _Readers.__init__(self)
        #: messages ever added, and ever done (writes finish in order)
        self._added = 0
        self._done = 0
        #: C{(when, first)}: the messages after the C{first}th (of
        #: C{_added}) were added from C{when} on, for less than a step;
        #: oldest first, only those that still wait
        self._marks: deque[tuple[float, int]] = deque()
        #: when the next C{add} calls L{_mark} (never while off)
        self._nextMark = float("-inf") if maxSeconds else float("inf")
        self._step = maxSeconds / MARKS
        #: while L{late}: the messages added before it became so
        self._lateUntil = 0

    def setLimits(self, maxMessages: int, maxBytes: int) -> None:
        """
        Bound by C{maxMessages} and C{maxBytes} from now on (a reload); the
        next L{add} or L{done} applies them.
        """
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self._lowMessages = int(maxMessages * LOW_WATER)
        self._lowBytes = int(maxBytes * LOW_WATER)

    def add(self, messages: int, size: int, now: float = 0.0) -> None:
        """
        C{messages} more (of C{size} bytes in all) wait to be written,
        handed over at C{now} (the router's clock; only read when
        C{maxSeconds} is on).
        """
        if now >= self._nextMark:
            self._mark(now)
        self._added += messages
        self.messages += messages
        self.size += size
        if not self.full and (
            (self.maxMessages and self.messages > self.maxMessages) or (self.maxBytes and self.size > self.maxBytes)
        ):
            self.full = True
            self.pauses += 1

    def _mark(self, now: float) -> None:
        """
        At most once per step, and when the oldest mark that waits is
        C{maxSeconds} old: start a mark at C{now} if the newest is a step
        old, and look at the age of the oldest.
        """
        marks = self._marks
        if not marks or now >= marks[-1][0] + self._step:
            marks.append((now, self._added))
        if not self.late and now - marks[0][0] >= self.maxSeconds:
            self.late = True
            self._lateUntil = self._added
            if not self.full:
                self.full = True
                self.pauses += 1
        self._nextAt()

    def _nextAt(self) -> None:
        """
        When the next C{add} calls L{_mark}: when the newest mark is a step
        old, or the oldest is C{maxSeconds} old (unless late already).
        """
        marks = self._marks
        if not marks:
            self._nextMark = float("-inf")
        elif self.late:
            self._nextMark = marks[-1][0] + self._step
        else:
            self._nextMark = min(marks[-1][0] + self._step, marks[0][0] + self.maxSeconds)

    def done(self, messages: int, size: int) -> None:
        """
        C{messages} (of C{size} bytes) were written, or their write failed:
        they no longer wait.  Below the low-water mark, and once what waited
        when it became L{late} is written, the waiting readers are resumed.
        """
        self.messages -= messages
        self.size -= size
        self._done += messages
        marks = self._marks
        if marks:
            if self._done >= self._added:
                marks.clear()
            else:
                # a mark is written once the next one's first is reached
                while len(marks) > 1 and marks[1][1] <= self._done:
                    marks.popleft()
            if self.late and self._done >= self._lateUntil:
                self.late = False
            self._nextAt()
        if (
            self.full
            and not self.late
            and (not self.maxMessages or self.messages <= self._lowMessages)
            and (not self.maxBytes or self.size <= self._lowBytes)
        ):
            self.full = False
            self._resumeAll()

    def whenRelieved(self, resume: Callable[[], None]) -> None:
        """
        Call C{resume} once the bound is no longer full (at once when it is
        not); a reader that waits already is not added twice.
        """
        if not self.full:
            resume()
        else:
            self._waiting[resume] = None


class PendingBounds(_Readers):
    """
    Several bounds read as one (the undelivered queue's and the event
    notifier's): full while any of them is; a reader waits until every one
    of them has room again.

    @param bounds: the bounds, each a L{PendingWrites}.
    """

    def __init__(self, *bounds: PendingWrites) -> None:
        self.bounds = bounds
        _Readers.__init__(self)

    @property
    def full(self) -> bool:
        """
        Whether readers should stop (read on every message).
        """
        for bound in self.bounds:
            if bound.full:
                return True
        return False

    def whenRelieved(self, resume: Callable[[], None]) -> None:
        """
        Call C{resume} once no bound is full (at once when none is); a
        reader that waits already is not added twice.
        """
        if not self.full:
            resume()
            return
        self._waiting[resume] = None
        self._check()

    def _check(self) -> None:
        """
        Resume the waiting readers when no bound is full; else wait for the
        first full one.
        """
        for bound in self.bounds:
            if bound.full:
                bound.whenRelieved(self._check)
                return
        self._resumeAll()

