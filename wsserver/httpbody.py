# -*- test-case-name: tests.test_httpbody -*-
"""
Read an HTTP response body with a deadline and a size cap (SPEC section 8).

treq's C{timeout=} only covers the wait for the response headers: a server
that answers with headers and then sends its body one byte at a time would
hold the caller (an event delivery, a C{remote} auth check) for ever.
L{readBody} gives the body the rest of the same time budget, on the injected
clock, and closes the connection when it runs out or the body grows too big.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

__all__ = ["MAX_ANSWER_BYTES", "BodyTimeout", "BodyTooLarge", "readBody"]

#: The most bytes an answer's body may have (a webhook's, a remote auth
#: check's): the server never uses their content, so this only bounds the
#: memory and time an answer can take.
MAX_ANSWER_BYTES = 1024 * 1024


class BodyTimeout(Exception):
    """
    The body had not arrived whole when the time ran out.
    """


class BodyTooLarge(Exception):
    """
    The body was longer than allowed.
    """


class _BoundedBody(Protocol):
    """
    Collects a body up to C{maxBytes}; stops the transport (which closes the
    connection) when it is cut short.
    """

    def __init__(self, maxBytes: int, done: Deferred[bytes]) -> None:
        self._maxBytes = maxBytes
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._maxBytes:
            self.cut(BodyTooLarge(f"answer body over {self._maxBytes} bytes"))
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        # PotentialDataLoss: a body that ends with the connection (no length
        # given), which is complete as far as anyone can tell
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)

    def cut(self, why: Exception | None) -> None:
        """
        Stop reading and close the connection; fail with C{why} (L{None}: the
        caller cancelled, and the L{Deferred} fails with L{CancelledError}).
        """
        self._parts = []
        if self.transport is not None:
            self.transport.stopProducing()
        if why is not None and not self._done.called:
            self._done.errback(why)


def readBody(
    response: IResponse,
    clock: IReactorTime,
    timeout: float,
    started: float | None = None,
    maxBytes: int = MAX_ANSWER_BYTES,
) -> Deferred[bytes]:
    """
    The whole body of C{response}, if it arrives in time and is not too big.

    @param response: a response whose body nothing has read yet (with treq,
        one requested with C{unbuffered=True}).
    @param clock: the clock of the deadline.
    @param timeout: seconds the answer may take, counted from C{started};
        C{0} means no deadline.
    @param started: when the request was sent (on C{clock}), so that the
        headers and the body share one budget; L{None}: now.
    @param maxBytes: the most bytes the body may have.
    @return: a L{Deferred} that fires with the body, or fails with
        L{BodyTimeout} or L{BodyTooLarge} once the connection was closed, or
        with the reason the body was cut short by the server.  Cancelling it
        closes the connection (it fails with C{CancelledError}).
    """
    reader: _BoundedBody

    def cancel(d: Deferred[bytes]) -> None:
        reader.cut(None)

    done: Deferred[bytes] = Deferred(cancel)
    reader = _BoundedBody(maxBytes, done)
    response.deliverBody(reader)
    if done.called or not timeout:
        return done
    now = clock.seconds()
    remaining = max(0.0, (now if started is None else started) + timeout - now)
    timer: IDelayedCall = clock.callLater(
        remaining, reader.cut, BodyTimeout(f"answer not complete within {timeout:g} seconds")
    )

    def stopTimer(result: bytes | Failure) -> bytes | Failure:
        if timer.active():
            timer.cancel()
        return result

    return done.addBoth(stopTimer)
