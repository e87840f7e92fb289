# -*- test-case-name: tests.test_queue_pending -*-
"""
The bound on what the undelivered queue was given and has not written yet
(SPEC section 8: every buffer has a bound and back-pressure).

A store counts each message when it is handed one (L{PendingWrites.add})
and again when it is committed or its write failed (L{PendingWrites.done}).
Over C{maxMessages} or C{maxBytes} the bound is I{full}: the connections
and REST requests that route messages stop being read (they wait with
L{PendingWrites.whenRelieved}) until the writer has caught up below the
low-water mark, half of each limit; then every one of them is resumed.
Nothing is dropped: what arrives while full (already read from the network)
is routed and kept as usual.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["LOW_WATER", "PendingBounds", "PendingWrites"]

#: The fraction of each limit below which readers are resumed.
LOW_WATER = 0.5


class PendingWrites:
    """
    Counts the messages (and their bytes) that wait to be written, and
    tells the waiting readers when there is room again.

    @param maxMessages: over this many, L{full}; 0: no limit.
    @param maxBytes: over this many payload bytes, L{full}; 0: no limit.

    @ivar full: whether readers should stop (read on every message).
    @ivar messages: the messages waiting to be written.
    @ivar size: their payload bytes.
    @ivar pauses: how many times the bound became full.
    """

    def __init__(self, maxMessages: int = 0, maxBytes: int = 0) -> None:
        self.setLimits(maxMessages, maxBytes)
        self.messages = 0
        self.size = 0
        self.full = False
        self.pauses = 0
        #: what to call once below the low-water mark, in the order of waiting
        self._waiting: dict[Callable[[], None], None] = {}

    def setLimits(self, maxMessages: int, maxBytes: int) -> None:
        """
        Bound by C{maxMessages} and C{maxBytes} from now on (a reload); the
        next L{add} or L{done} applies them.
        """
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self._lowMessages = int(maxMessages * LOW_WATER)
        self._lowBytes = int(maxBytes * LOW_WATER)

    def add(self, messages: int, size: int) -> None:
        """
        C{messages} more (of C{size} bytes in all) wait to be written.
        """
        self.messages += messages
        self.size += size
        if not self.full and (
            (self.maxMessages and self.messages > self.maxMessages) or (self.maxBytes and self.size > self.maxBytes)
        ):
            self.full = True
            self.pauses += 1

    def done(self, messages: int, size: int) -> None:
        """
        C{messages} (of C{size} bytes) were written, or their write failed:
        they no longer wait.  Below the low-water mark, the waiting readers
        are resumed.
        """
        self.messages -= messages
        self.size -= size
        if (
            self.full
            and (not self.maxMessages or self.messages <= self._lowMessages)
            and (not self.maxBytes or self.size <= self._lowBytes)
        ):
            self.full = False
            waiting, self._waiting = self._waiting, {}
            for resume in waiting:
                resume()

    def whenRelieved(self, resume: Callable[[], None]) -> None:
        """
        Call C{resume} once the bound is no longer full (at once when it is
        not); a reader that waits already is not added twice.
        """
        if not self.full:
            resume()
        else:
            self._waiting[resume] = None

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


class PendingBounds:
    """
    Several bounds read as one (the undelivered queue's and the event
    notifier's): full while any of them is; a reader waits until every one
    of them has room again.

    @param bounds: the bounds, each a L{PendingWrites}.
    """

    def __init__(self, *bounds: PendingWrites) -> None:
        self.bounds = bounds
        #: what to call once none is full, in the order of waiting
        self._waiting: dict[Callable[[], None], None] = {}

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
