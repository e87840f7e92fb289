"""
End-to-end test of the log-flood guard: floods of refused handshakes and
refused auths against the real server on loopback write a handful of lines.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from .support import openClient, startServer
from .test_proxy_end_to_end import _Handshake


@inlineCallbacks
def refusedHandshake(server: Any, userId: int) -> Any:
    """
    A raw handshake from 127.0.0.1; its HTTP status.
    """
    client = _Handshake(b"", userId, None)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.wsPort), client)
    status = yield client.status
    client.transport.abortConnection()
    return status


class LogFloodTests(TestCase):
    """
    Floods that a remote peer can cause, and the lines they write.
    """

    timeout = 60

    @inlineCallbacks
    def test_refusals(self) -> None:
        """
        200 refused handshakes and a brute force of 60 refused auths write at
        most a few lines of each kind (the server's own, Autobahn's,
        Twisted's), where every one of them caused several; after a second,
        the next line of a kind says how many like it were held back.
        """
        written: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(written.append)
        self.addCleanup(globalLogPublisher.removeObserver, written.append)
        auth = {"type": "header", "name": "X-Token", "value": "good"}
        server = yield startServer(self, {"server": {"auth": auth, "limits": {"authFailuresPerMinute": 30}}},
                                   logPublisher=globalLogPublisher)
        # what the server logs, all of it (added after the guard: not behind it)
        caused: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(caused.append)
        self.addCleanup(globalLogPublisher.removeObserver, caused.append)
        del written[:]
        for i in range(60):
            if i < 30:
                client = yield openClient(server, userId=i + 1, headers={"X-Token": "bad"})
                self.assertEqual((yield client.closed), (4050, "Unauthorized"))
            else:
                # past authFailuresPerMinute: refused at the handshake
                self.assertEqual((yield refusedHandshake(server, i + 1)), 429)
        for i in range(200):
            # the address is over authFailuresPerMinute: every one refused
            self.assertEqual((yield refusedHandshake(server, 1)), 429)
        lines = [formatEvent(e) for e in written]
        self.assertGreater(len(caused), 500)
        kinds = {(e.get("log_namespace"), e.get("log_format")) for e in written}
        seconds = 1 + int(max(e["log_time"] for e in caused) - min(e["log_time"] for e in caused))
        self.assertLessEqual(len(lines), len(kinds) * (seconds + 1), "\n".join(lines))
        self.assertLess(len(lines), 60, "\n".join(lines))
        self.assertIn("auth failed for user 1 from tcp4:127.0.0.1:", "\n".join(lines))
        # a second later, the next refusal's lines say how many were held
        yield deferLater(reactor, 1.1, lambda: None)
        del written[:]
        self.assertEqual((yield refusedHandshake(server, 1)), 429)
        held = [int(m.group(1)) for m in (re.match(r"(\d+) more log lines like the next were held back",
                                                   formatEvent(e)) for e in written) if m]
        self.assertTrue(held, "\n".join(formatEvent(e) for e in written))
        self.assertGreater(max(held), 100)
