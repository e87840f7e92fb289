"""
WebSocket conformance: the Autobahn TestSuite's cases (run by C{kosoku})
against L{wsserver.testee}, the server's own protocol code with an echo in
the router's place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.connection import ChatServerProtocol
from wsserver.routing import Router
from wsserver.testee import TESTEE_MAX_SIZE, TESTEE_PATH, EchoRouter, listenTestee, makeTesteeFactory

from .support import ServerProcess

#: The cases run: all but 12 and 13 (permessage-deflate, which the server
#: does not offer).
CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*")

#: How many cases that selection holds in the suite's case files.
CASE_COUNT = 301

#: The verdicts that conform: C{NON-STRICT} (a SHOULD not followed: the
#: server checks UTF-8 once per message, so it does not fail a bad text
#: message fast, cases 6.4.x) and C{INFORMATIONAL} (nothing required).
ACCEPTED = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})


def kosokuPath() -> str:
    """
    The C{kosoku} console script: next to this interpreter (a virtualenv),
    else on C{PATH}.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "kosoku")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kosoku")
    if found is None:
        raise RuntimeError("kosoku not found: pip install -e '.[test]'")
    return found


def nonConforming(index: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """
    The cases of a kosoku C{index.json} whose verdict (message exchange or
    closing handshake) does not conform, as C{"6.4.1: FAILED/OK (1007)"}.
    """
    bad = []
    for cases in index.values():
        for case, result in cases.items():
            if result["behavior"] not in ACCEPTED or result["behaviorClose"] not in ACCEPTED:
                bad.append(
                    f"{case}: {result['behavior']}/{result['behaviorClose']} ({result.get('remoteCloseCode')})"
                )
    return bad


class ReportTests(SynchronousTestCase):
    """
    Reading kosoku's report.
    """

    def test_failedNamed(self) -> None:
        """
        A case whose message exchange or closing handshake failed is named,
        with both verdicts and the server's close code; conforming ones are
        not.
        """
        index = {
            "agent": {
                "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "remoteCloseCode": 1000},
                "6.4.1": {"behavior": "NON-STRICT", "behaviorClose": "OK", "remoteCloseCode": 1007},
                "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL", "remoteCloseCode": 1000},
                "7.5.1": {"behavior": "FAILED", "behaviorClose": "OK", "remoteCloseCode": 1000},
                "7.9.1": {"behavior": "OK", "behaviorClose": "WRONG CODE", "remoteCloseCode": 1000},
            }
        }
        self.assertEqual(
            nonConforming(index),
            ["7.5.1: FAILED/OK (1000)", "7.9.1: OK/WRONG CODE (1000)"],
        )


class TesteeTests(SynchronousTestCase):
    """
    The testee is the server's own WebSocket code.
    """

    def test_sameProtocol(self) -> None:
        """
        Its connections are L{ChatServerProtocol}s (no subclass), with the
        server's options (no incremental UTF-8 check, close codes instead of
        dropped connections), on C{/}, echoing through L{EchoRouter} (a
        L{Router} that overrides C{receive} only), and big enough for the
        suite's 16 MiB messages.
        """
        factory = makeTesteeFactory(MemoryReactor())
        self.assertIs(factory.protocol, ChatServerProtocol)
        self.assertIsInstance(factory.router, EchoRouter)
        self.assertEqual([name for name in vars(EchoRouter) if not name.startswith("__")], ["receive"])
        self.assertEqual(EchoRouter.__bases__, (Router,))
        self.assertEqual(factory.path, TESTEE_PATH)
        self.assertFalse(factory.utf8validateIncoming)
        self.assertFalse(factory.failByDrop)
        self.assertEqual(factory.maxMessagePayloadSize, TESTEE_MAX_SIZE)
        self.assertEqual(factory.maxFramePayloadSize, TESTEE_MAX_SIZE)


class ConformanceTests(TestCase):
    """
    The Autobahn TestSuite: every case of L{CASES} conforms.
    """

    # ~20 s here; the 6.4.x cases wait 2 s each for a fast failure
    timeout = 180

    @inlineCallbacks
    def test_autobahn(self) -> Any:
        """
        kosoku's fuzzing client runs cases 1-7, 9 and 10 against the testee on
        loopback; none is FAILED (nor any other non-conforming verdict), and
        all of them ran.
        """
        port = yield listenTestee(reactor, 0)
        self.addCleanup(port.stopListening)
        # then the connections kosoku left closing, with their timers
        self.addCleanup(lambda: port.factory.closeAll(1001, "done", 2.0))
        outdir = os.path.abspath(self.mktemp())
        args = [f"ws://127.0.0.1:{port.getHost().port}{TESTEE_PATH}?id=1", "-o", outdir]
        for case in CASES:
            args += ["-i", case]
        out, err, code = yield getProcessOutputAndValue(
            kosokuPath(), ["-m", "fuzzingclient", *args], env=dict(os.environ)
        )
        indexPath = os.path.join(outdir, "index.json")
        if not os.path.exists(indexPath):
            self.fail(f"kosoku wrote no report (exit {code}): {err.decode(errors='replace')[-2000:]}")
        with open(indexPath) as f:
            index = json.load(f)
        bad = nonConforming(index)
        if bad:
            self.fail(f"{len(bad)} cases do not conform (report: {outdir}):\n" + "\n".join(bad))
        self.assertEqual(sum(len(cases) for cases in index.values()), CASE_COUNT)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])


class RunnerTests(TestCase):
    """
    C{python -m wsserver.testee}.
    """

    timeout = 30

    @inlineCallbacks
    def test_listens(self) -> Any:
        """
        With C{--port 0} it listens on a free loopback port and prints the
        URL to give the fuzzing client.
        """
        process = ServerProcess()
        transport = reactor.spawnProcess(
            process, sys.executable, [sys.executable, "-m", "wsserver.testee", "--port", "0"],
            env=dict(os.environ),
        )

        def kill() -> Any:
            if not process.ended.called:
                transport.signalProcess("KILL")
                return process.ended
            return None

        self.addCleanup(kill)
        listening = process.waitFor(rb"testee listening on ws://127\.0\.0\.1:(\d+)/\?id=1\n")

        def ended(reason: Any) -> Any:
            if not listening.called:
                listening.errback(AssertionError("the testee ended: " + process.output.decode(errors="replace")))
            return reason

        process.ended.addBoth(ended)
        match = yield listening
        self.assertNotEqual(int(match.group(1)), 0)
        transport.signalProcess("TERM")
        yield process.ended
