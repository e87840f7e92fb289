"""
Tests for L{wsserver.limits}: the state machines behind C{server.limits},
with a L{task.Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from wsserver.config import LimitsConfig
from wsserver.limits import (FILE_RESERVE, AddressCounter, AuthFailures, Limits, RefusalLog, TokenBucket,
                             acceptCeiling, connectionCeiling)
from wsserver.proxy import parseTrustedProxies


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket}: C{messagesPerSecond} and C{burst}.
    """

    def test_burstThenRate(self) -> None:
        """
        A full bucket lets C{burst} messages through at once, then one per
        C{1/rate} seconds.
        """
        clock = Clock()
        bucket = TokenBucket(2, 5, clock)
        self.assertEqual([bucket.take() for _ in range(6)], [True] * 5 + [False])
        clock.advance(0.5)
        self.assertEqual([bucket.take(), bucket.take()], [True, False])

    def test_refillCapped(self) -> None:
        """
        A long quiet time refills the bucket to C{burst}, not beyond.
        """
        clock = Clock()
        bucket = TokenBucket(10, 3, clock)
        clock.advance(3600)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])

    def test_steadyRateKeptUp(self) -> None:
        """
        Messages at exactly the rate are never refused.
        """
        clock = Clock()
        bucket = TokenBucket(100, 1, clock)
        results = []
        for _ in range(1000):
            results.append(bucket.take())
            clock.advance(0.01)
        self.assertTrue(all(results))


class AddressCounterTests(SynchronousTestCase):
    """
    L{AddressCounter}: C{maxConnectionsPerIp}.
    """

    def test_limitPerAddress(self) -> None:
        """
        Each address gets C{limit} connections; a release makes room; other
        addresses are unaffected.
        """
        counter = AddressCounter(2)
        self.assertEqual([counter.acquire("a") for _ in range(3)], [True, True, False])
        self.assertTrue(counter.acquire("b"))
        counter.release("a")
        self.assertTrue(counter.acquire("a"))
        self.assertEqual(counter.count("a"), 2)

    def test_forgetsIdleAddresses(self) -> None:
        """
        An address with no connection left takes no memory.
        """
        counter = AddressCounter(1)
        counter.acquire("a")
        counter.release("a")
        self.assertEqual(len(counter), 0)

    def test_off(self) -> None:
        """
        With limit 0 every connection passes and nothing is kept.
        """
        counter = AddressCounter(0)
        self.assertTrue(all(counter.acquire("a") for _ in range(100)))
        self.assertEqual(len(counter), 0)


class AuthFailuresTests(SynchronousTestCase):
    """
    L{AuthFailures}: C{authFailuresPerMinute}.
    """

    def test_blockedUntilMinutePassed(self) -> None:
        """
        After C{limit} failures within a minute the address is blocked until
        the minute (from its first failure) has passed; others are not.
        """
        clock = Clock()
        failures = AuthFailures(3, clock)
        for _ in range(2):
            failures.failed("a")
            clock.advance(1)
        self.assertFalse(failures.blocked("a"))
        failures.failed("a")
        self.assertTrue(failures.blocked("a"))
        self.assertFalse(failures.blocked("b"))
        clock.advance(57)
        self.assertTrue(failures.blocked("a"))
        clock.advance(1)
        self.assertFalse(failures.blocked("a"))

    def test_memoryBounded(self) -> None:
        """
        Addresses whose minute has passed are dropped as new ones fail.
        """
        clock = Clock()
        failures = AuthFailures(3, clock)
        for i in range(10000):
            failures.failed(f"10.0.{i // 256}.{i % 256}")
            clock.advance(0.1)
        self.assertLessEqual(len(failures), 2 * 1024 + 600)

    def test_off(self) -> None:
        """
        With limit 0 nothing is blocked or kept.
        """
        failures = AuthFailures(0, Clock())
        for _ in range(100):
            failures.failed("a")
        self.assertFalse(failures.blocked("a"))
        self.assertEqual(len(failures), 0)


class RefusalLogTests(SynchronousTestCase):
    """
    L{RefusalLog}: at most one line a second per kind.
    """

    def test_floodLogsOncePerSecond(self) -> None:
        """
        A flood of refusals of one kind logs one line a second, which counts
        the refusals since the previous line; every refusal is counted.
        """
        clock = Clock()
        refusals = RefusalLog(clock)
        with capturedLogs() as events:
            for _ in range(3 * 1024):
                refusals.refused("maxConnections", "tcp4:1.2.3.4:5", "too many")
                clock.advance(1 / 1024)
        self.assertEqual([e["count"] for e in events], [1, 1024, 1024])
        self.assertEqual(refusals.refusals["maxConnections"], 3 * 1024)

    def test_kindsApart(self) -> None:
        """
        Each kind has its own line.
        """
        clock = Clock()
        refusals = RefusalLog(clock)
        with capturedLogs() as events:
            refusals.refused("a", "p", "r")
            refusals.refused("b", "p", "r")
            refusals.refused("a", "p", "r")
        self.assertEqual([e["kind"] for e in events], ["a", "b"])


class LimitsTests(SynchronousTestCase):
    """
    L{Limits}: the shared state of one server.
    """

    def test_bucketOnlyWithRate(self) -> None:
        """
        Connections get a token bucket only when C{messagesPerSecond} is set.
        """
        clock = Clock()
        self.assertIsNone(Limits(LimitsConfig(), clock).bucket())
        bucket = Limits(LimitsConfig(messagesPerSecond=1, burst=1), clock).bucket()
        self.assertEqual([bucket.take(), bucket.take()], [True, False])

    def test_counters(self) -> None:
        """
        Closes and refusals are counted by limit and by kind.
        """
        limits = Limits(LimitsConfig(), Clock())
        limits.closed("sendBufferBytes")
        limits.closed("sendBufferBytes")
        limits.refused("maxConnections", "p", "r")
        self.assertEqual(limits.limitCloses["sendBufferBytes"], 2)
        self.assertEqual(limits.refusals["maxConnections"], 1)

    def test_clientAddress(self) -> None:
        """
        The client address is the peer's unless the peer is a trusted
        proxy, whose C{X-Forwarded-For} names it.
        """
        limits = Limits(LimitsConfig(), Clock(), parseTrustedProxies(["10.0.0.1"]))
        self.assertEqual(limits.clientAddress("10.0.0.1", [b"203.0.113.7"]), "203.0.113.7")
        self.assertEqual(limits.clientAddress("10.0.0.2", [b"203.0.113.7"]), "10.0.0.2")
        self.assertEqual(Limits(LimitsConfig(), Clock()).clientAddress("10.0.0.1", [b"203.0.113.7"]), "10.0.0.1")


class ConnectionCeilingTests(SynchronousTestCase):
    """
    C{maxConnections} fitted to the open files limit (L{connectionCeiling}),
    with an injected limit.
    """

    def test_defaultLowered(self) -> None:
        """
        The default, above what 4,096 open files allow, is lowered to the
        limit less the reserve, said in a line that is not a warning.
        """
        ceiling = connectionCeiling(LimitsConfig().maxConnections, 4096)
        self.assertEqual(ceiling.maxConnections, 4096 - FILE_RESERVE)
        self.assertFalse(ceiling.warning)
        self.assertEqual(ceiling.text, "server.limits.maxConnections: 3840: the open files limit is 4096 and 256 "
                                       "are kept for REST, Redis and files")

    def test_acceptCeiling(self) -> None:
        """
        The WebSocket port holds at most the ceiling of C{maxConnections}
        and a quarter of the files kept apart: the rest stay free for REST,
        Redis and the database whatever a flood does.
        """
        self.assertEqual(acceptCeiling(4096), 4096 - FILE_RESERVE + FILE_RESERVE // 4)
        self.assertEqual(acceptCeiling(400), 200 + 50)

    def test_explicitLoweredWithWarning(self) -> None:
        """
        An explicit value above the limit is lowered too, with a warning that
        says how to allow more.
        """
        ceiling = connectionCeiling(5000, 4096)
        self.assertEqual(ceiling.maxConnections, 3840)
        self.assertTrue(ceiling.warning)
        self.assertEqual(ceiling.text, "server.limits.maxConnections: 5000 lowered to 3840: the open files limit is "
                                       "4096 and 256 are kept for REST, Redis and files; raise the limit "
                                       "(LimitNOFILE= in the systemd unit, ulimit -n) to allow more")

    def test_withinLimit(self) -> None:
        """
        A value the limit allows stays, and the line says what the limit
        would allow.
        """
        ceiling = connectionCeiling(100000, 1048576)
        self.assertEqual((ceiling.maxConnections, ceiling.warning), (100000, False))
        self.assertEqual(ceiling.text, "server.limits.maxConnections: 100000 (the open files limit, 1048576, "
                                       "allows 1048320)")

    def test_smallLimit(self) -> None:
        """
        Under a small limit half of it is kept for connections, not less.
        """
        self.assertEqual(connectionCeiling(100000, 300).maxConnections, 150)

    def test_offStaysOff(self) -> None:
        """
        0 (off) stays off.
        """
        ceiling = connectionCeiling(0, 1024)
        self.assertEqual((ceiling.maxConnections, ceiling.warning), (0, False))

    def test_limitsApplyIt(self) -> None:
        """
        L{Limits} with an open files limit answers the fitted value (for the
        settings in force, or others: a reload's); without one, the
        setting.
        """
        limits = Limits(LimitsConfig(), Clock(), openFiles=1024)
        self.assertEqual(limits.maxConnections(), 768)
        self.assertEqual(limits.maxConnections(LimitsConfig(maxConnections=100)), 100)
        self.assertEqual(Limits(LimitsConfig(), Clock()).maxConnections(), 100000)
        self.assertIsNone(Limits(LimitsConfig(), Clock()).ceiling())
