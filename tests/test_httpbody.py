"""
Tests for L{wsserver.httpbody}: response bodies read with a deadline on a
L{task.Clock} and a size cap, over L{treq.testing.StubTreq}.
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsserver.httpbody import BodyTimeout, BodyTooLarge, readBody


class Trickle(Resource):
    """
    Answers 200 with C{first}, then leaves the request open: the test writes
    the rest (C{self.request.write}) or finishes it.
    """

    isLeaf = True

    def __init__(self, first: bytes = b"", finish: bool = False) -> None:
        super().__init__()
        self.first = first
        self.finish = finish
        self.request: Any = None
        self.lost: list[Any] = []

    def render(self, request: Any) -> Any:
        self.request = request
        request.notifyFinish().addErrback(self.lost.append)
        request.setResponseCode(200)
        if self.finish:
            return self.first
        request.write(self.first)
        return NOT_DONE_YET


class ReadBodyTests(SynchronousTestCase):
    """
    Tests for L{readBody}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def response(self, resource: Trickle) -> Any:
        self.stub = StubTreq(resource)
        return self.successResultOf(self.stub.get("http://hook.example/", unbuffered=True))

    def test_whole(self) -> None:
        """
        A body that arrives whole in time is the result, and no timer is
        left.
        """
        response = self.response(Trickle(b"all of it", finish=True))
        body = self.successResultOf(readBody(response, self.clock, 5))
        self.assertEqual(body, b"all of it")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_inPieces(self) -> None:
        """
        A body that comes in pieces before the deadline is joined, and the
        timer is cancelled when it is complete.
        """
        resource = Trickle(b"one ")
        d = readBody(self.response(resource), self.clock, 5)
        self.clock.advance(4)
        resource.request.write(b"two")
        resource.request.finish()
        self.stub.flush()
        self.assertEqual(self.successResultOf(d), b"one two")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_trickleCut(self) -> None:
        """
        A body still arriving at the deadline fails the read with
        L{BodyTimeout} saying so, and the connection is closed.
        """
        resource = Trickle(b"x")
        d = readBody(self.response(resource), self.clock, 5)
        for _ in range(4):
            self.clock.advance(1)
            resource.request.write(b"x")
            self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(1)
        f = self.failureResultOf(d, BodyTimeout)
        self.assertEqual(f.getErrorMessage(), "answer not complete within 5 seconds")
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sharedBudget(self) -> None:
        """
        With C{started}, the body gets only what the headers left of the
        timeout.
        """
        resource = Trickle(b"x")
        response = self.response(resource)
        self.clock.advance(3)
        d = readBody(response, self.clock, 5, started=0)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, BodyTimeout)

    def test_budgetSpent(self) -> None:
        """
        When the headers took the whole timeout, the body read fails at once
        (on the next timer run).
        """
        response = self.response(Trickle(b"x"))
        self.clock.advance(6)
        d = readBody(response, self.clock, 5, started=0)
        self.clock.advance(0)
        self.failureResultOf(d, BodyTimeout)

    def test_tooLarge(self) -> None:
        """
        A body over C{maxBytes}, even in pieces, fails the read with
        L{BodyTooLarge} and closes the connection, without waiting for the
        rest.
        """
        resource = Trickle(b"12345")
        d = readBody(self.response(resource), self.clock, 5, maxBytes=8)
        self.assertNoResult(d)
        resource.request.write(b"6789")
        self.stub.flush()
        f = self.failureResultOf(d, BodyTooLarge)
        self.assertEqual(f.getErrorMessage(), "answer body over 8 bytes")
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exactlyMax(self) -> None:
        """
        A body of exactly C{maxBytes} is read.
        """
        response = self.response(Trickle(b"12345678", finish=True))
        self.assertEqual(self.successResultOf(readBody(response, self.clock, 5, maxBytes=8)), b"12345678")

    def test_noDeadline(self) -> None:
        """
        A timeout of 0 sets no timer.
        """
        d = readBody(self.response(Trickle(b"x")), self.clock, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(d)

    def test_cancel(self) -> None:
        """
        Cancelling the read closes the connection and stops the timer.
        """
        resource = Trickle(b"x")
        d = readBody(self.response(resource), self.clock, 5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_serverGivesUp(self) -> None:
        """
        A body cut short by the server fails the read with the reason.
        """
        resource = Trickle(b"x")
        d = readBody(self.response(resource), self.clock, 5)
        resource.request.channel.transport.loseConnection()
        self.stub.flush()
        f = self.failureResultOf(d)
        self.assertNotIsInstance(f.value, (BodyTimeout, BodyTooLarge))
        self.assertEqual(self.clock.getDelayedCalls(), [])
