"""
Tests for L{wsserver.quietlog}: the log at start and stop has none of the
libraries' internal lines, and the workers' lines carry one prefix.
"""

from __future__ import annotations

import io
import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, LogLevel, LogPublisher, textFileLogObserver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.quietlog import isInternal, quietObserver

from .support import TWISTD, Running, ServerProcess, closeClient, openClient, spawnServer
from .test_workers import startWorkers

#: the libraries' internal lines, as they were in the log
_INTERNAL = re.compile(r"Starting factory|Stopping factory|object at 0x|starting on \d+|Port \d+ Closed")
#: a log line's time stamp
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ")


class FilterTests(SynchronousTestCase):
    """
    L{quietObserver} leaves out what L{isInternal} says is internal, and
    nothing else.
    """

    def test_internalLines(self) -> None:
        """
        Twisted's lines about its factories and ports are internal, in the
        new logger's and the legacy form; wsserver's are not.
        """
        out = io.StringIO()
        publisher = LogPublisher(quietObserver(textFileLogObserver(out, timeFormat=None)))
        log = Logger(observer=publisher, namespace="t")
        log.info("Starting factory {factory!r}", factory=object())
        log.info("Stopping factory {factory!r}", factory=object())
        for text in ("ChatServerFactory starting on 8085", "_NoAccept starting on 41234", "(TCP Port 8085 Closed)",
                     "ChatServerFactory (TLS) starting on 8443", "(TLS Port 8443 Closed)"):
            # as twisted.python.log.msg hands them on
            publisher({"message": (text,), "isError": 0, "system": "-", "log_format": "{log_text}",
                       "log_text": text, "log_namespace": "log_legacy", "log_level": LogLevel.info})
        log.info("WebSocket listening on {host}:{port}", host="127.0.0.1", port=8085)
        log.info("user 1 connected: starting on time")
        self.assertEqual(out.getvalue(), "- [t#info] WebSocket listening on 127.0.0.1:8085\n"
                                         "- [t#info] user 1 connected: starting on time\n")

    def test_isInternal(self) -> None:
        """
        L{isInternal} matches whole lines only.
        """
        self.assertTrue(isInternal({"log_format": "(UDP Port 53 Closed)"}))
        self.assertFalse(isInternal({"log_format": "the (TCP Port 1 Closed) line"}))


class ServerLogTests(TestCase):
    """
    The real server's log.
    """

    timeout = 60

    @inlineCallbacks
    def test_startAndStop(self) -> object:
        """
        From start to stop, with a client in between, the log has none of
        Twisted's internal lines, and says where it listens.
        """
        process = spawnServer(self, "--ws", "tcp:0:interface=127.0.0.1", "--rest", "tcp:0:interface=127.0.0.1")
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        yield process.waitFor(rb"REST API listening on 127\.0\.0\.1:\d+")
        client = yield openClient(Running(None, int(m.group(1)), None, False), userId=1)  # type: ignore[arg-type]
        yield closeClient(client)
        process.transport.signalProcess("TERM")
        yield process.ended
        output = process.output.decode()
        self.assertIn("Server Shut Down.", output)
        self.assertEqual(_INTERNAL.findall(output), [], output)

    @inlineCallbacks
    def test_logFile(self) -> object:
        """
        With twistd's C{--logfile}, the file is filtered the same way.
        """
        path = os.path.abspath(self.mktemp())
        process = ServerProcess()
        reactor.spawnProcess(process, sys.executable,
                             [sys.executable, "-c", TWISTD, "--nodaemon", "--pidfile=", f"--logfile={path}",
                              "wsserver", "--ws", "tcp:0:interface=127.0.0.1", "--rest", "tcp:0:interface=127.0.0.1",
                              "--data-dir", os.path.abspath(self.mktemp())], env=dict(os.environ))
        for _ in range(200):
            if os.path.exists(path) and b"REST API listening" in open(path, "rb").read():
                break
            yield _sleep(0.05)
        process.transport.signalProcess("TERM")
        yield process.ended
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("WebSocket listening on 127.0.0.1:", text)
        self.assertEqual(_INTERNAL.findall(text), [], text)

    @inlineCallbacks
    def test_workers(self) -> object:
        """
        With C{server.workers}, the parent's log shows each worker's line
        once prefixed: one time stamp, the worker's namespace and level, the
        worker's number; and no C{_NoAccept starting on}.
        """
        process, _ = yield startWorkers(self, 0.2, 2)
        for index in (0, 1):
            yield process.waitFor(rb"\[worker %d\] REST API listening" % index)
        process.transport.signalProcess("TERM")
        yield process.ended
        output = process.output.decode()
        self.assertEqual(_INTERNAL.findall(output), [], output)
        lines = output.splitlines()
        self.assertEqual([line for line in lines if len(_STAMP.findall(line)) > 1], [])
        for index in (0, 1):
            self.assertTrue([line for line in lines if re.fullmatch(
                _STAMP.pattern + rf"\[wsserver\.service\.ListeningService#info\] \[worker {index}\] "
                r"REST API listening on 127\.0\.0\.1:\d+", line)], output)


def _sleep(seconds: float):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
