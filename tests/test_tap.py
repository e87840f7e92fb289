"""
Tests for the command line (C{twistd wsserver}): options, C{-T}, refusing a
bad config, and the real process stopping on SIGTERM and SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import signal
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver.tap import Options

from .support import CERT, KEY, Running, ServerProcess, closeClient, openClient, spawnServer



def _writeConfig(test: SynchronousTestCase, raw: object) -> str:
    path = os.path.abspath(test.mktemp())
    with open(path, "w") as f:
        json.dump(raw, f)
    return path


class OptionsTests(SynchronousTestCase):
    """
    The options of C{twistd wsserver}.
    """

    def check(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(list(args))
        return caught.exception.code, out.getvalue()

    def test_defaults(self) -> None:
        """
        With no config file the built-in defaults are used.
        """
        options = Options()
        options.parseOptions([])
        config = options.config
        self.assertEqual(config.server.listen, "tcp:8085:backlog=1024")
        self.assertEqual(config.restApi.listen, "tcp:8092:interface=127.0.0.1:backlog=1024")
        self.assertEqual(config.server.auth.type, "noauth")
        self.assertEqual(config.server.dataDir, "./wsserver-data")

    def test_overrides(self) -> None:
        """
        C{--ws}, C{--rest} and C{--data-dir} override the config file.
        """
        path = _writeConfig(self, {"server": {"port": 9000}})
        options = Options()
        options.parseOptions(["-C", path, "--ws", "tcp:9100", "--rest", "tcp:9101", "--data-dir", "/tmp/d"])
        self.assertEqual(
            (options.config.server.listen, options.config.restApi.listen, options.config.server.dataDir),
            ("tcp:9100", "tcp:9101", "/tmp/d"),
        )

    def test_checkOK(self) -> None:
        """
        C{-T} with a good file prints C{config OK} (after any warnings) and
        exits 0.
        """
        path = _writeConfig(self, {"server": {"port": 9000, "colour": "blue"}})
        self.assertEqual(self.check("-C", path, "-T"), (0, "warning: server.colour: unknown key, ignored\nconfig OK\n"))
        self.assertEqual(self.check("--config", path, "--test")[0], 0)

    def test_exampleConfig(self) -> None:
        """
        The example config that README.rst points to is valid.
        """
        example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "config.json")
        self.assertEqual(self.check("-C", example, "-T"), (0, "config OK\n"))

    def test_checkProblems(self) -> None:
        """
        C{-T} with a bad file prints every problem, each naming its key, and
        exits 1.
        """
        path = _writeConfig(
            self, {"server": {"port": 70000, "auth": {"type": "bsaic"}}, "chat": {"message": {"maxSize": "big"}}}
        )
        code, out = self.check("-C", path, "-T")
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertEqual(len(lines), 3, out)
        self.assertTrue(lines[0].startswith("error: server.port: 70000 is out of range"), out)
        self.assertTrue(lines[1].startswith('error: server.auth.type: unknown auth type "bsaic"'), out)
        self.assertTrue(lines[2].startswith('error: chat.message.maxSize: unparsable size "big"'), out)

    def test_checkWarningsWithErrors(self) -> None:
        """
        With errors, C{-T} still prints the warnings: an unknown key is often
        the typo behind an error.
        """
        path = _writeConfig(self, {"server": {"port": 99999}, "chat": {"enableUndeliverdQueue": True}})
        code, out = self.check("-C", path, "-T")
        self.assertEqual(code, 1)
        self.assertEqual(out.splitlines(), [
            "warning: chat.enableUndeliverdQueue: unknown key, ignored",
            "error: server.port: 99999 is out of range (0 to 65535)",
        ])

    def test_checkMissingCertificate(self) -> None:
        """
        C{-T} names a missing certificate file by its key.
        """
        path = _writeConfig(
            self, {"server": {"secure": {"enabled": True, "crtPath": "/nonexistent.crt", "keyPath": KEY}}}
        )
        self.assertEqual(
            self.check("-C", path, "-T"), (1, 'error: server.secure.crtPath: file not found "/nonexistent.crt"\n')
        )

    def test_badEndpointOverride(self) -> None:
        """
        A C{--ws} endpoint string that Twisted cannot use is a problem named
        C{server.listen}.
        """
        code, out = self.check("--ws", "carrier-pigeon:12", "-T")
        self.assertEqual(code, 1)
        self.assertTrue(out.startswith('error: server.listen: invalid endpoint "carrier-pigeon:12"'), out)

    def test_refuseToStart(self) -> None:
        """
        Without C{-T}, a bad config refuses to start with a usage error that
        names the key; nothing falls back to no auth.
        """
        path = _writeConfig(self, {"server": {"auth": {"type": "bsaic"}}})
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["-C", path])
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            err.getvalue(),
            "wsserver: invalid configuration, not starting:\n"
            '  server.auth.type: unknown auth type "bsaic" (use one of: noauth, basic, header, bearer, cookie, '
            "oneOf, allOf, remote, jwt)\n",
        )


class WarningTests(SynchronousTestCase):
    """
    Warnings logged when the server is wired.
    """

    def test_cookieWithoutOrigins(self) -> None:
        """
        Cookie auth (here the browser setup: remote auth reading a cookie)
        with no C{allowedOrigins} logs a warning; with origins listed, none.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import capturedLogs

        from wsserver.config import parseConfig
        from wsserver.tap import buildService

        auth = {"type": "remote", "url": "http://127.0.0.1:9/check", "source": {"type": "cookie", "name": "sid"}}
        for origins, expected in (([], 1), (["https://app.example.com"], 0)):
            config = parseConfig({"server": {"auth": auth, "allowedOrigins": origins}}, checkEndpoints=False)
            with capturedLogs() as events:
                buildService(config, MemoryReactorClock())
            warned = [e for e in events if "allowedOrigins is empty" in e.get("log_format", "")]
            self.assertEqual(len(warned), expected)

    def test_jwtCookieWithoutOrigins(self) -> None:
        """
        A jwt read from a cookie counts as cookie auth for that warning; one
        read from the C{Authorization} header (no browser sends it on a
        WebSocket) does not.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import capturedLogs

        from wsserver.config import parseConfig
        from wsserver.tap import buildService

        jwt = {"type": "jwt", "secret": "k" * 32, "algorithms": ["HS256"]}
        for source, expected in (({"type": "cookie", "name": "token"}, 1), ({"type": "bearer"}, 0)):
            config = parseConfig({"server": {"auth": dict(jwt, source=source)}}, checkEndpoints=False)
            with capturedLogs() as events:
                buildService(config, MemoryReactorClock())
            warned = [e for e in events if "allowedOrigins is empty" in e.get("log_format", "")]
            self.assertEqual(len(warned), expected, source)


class ProcessTests(TestCase):
    """
    The real C{twistd wsserver} process.
    """

    timeout = 30

    def spawn(self, *args: str) -> ServerProcess:
        return spawnServer(self, *args)

    @inlineCallbacks
    def stopsOn(self, signame: str, tls: bool = False) -> object:
        if tls:
            ws = f"ssl:0:interface=127.0.0.1:privateKey={KEY}:certKey={CERT}"
        else:
            ws = "tcp:0:interface=127.0.0.1"
        process = self.spawn("--ws", ws, "--rest", "tcp:0:interface=127.0.0.1")
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        server = Running(None, int(m.group(1)), None, tls)  # type: ignore[arg-type]
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, alice)
        self.addCleanup(closeClient, bob)
        alice.send({"type": "text", "text": "hello", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "hello")
        started = reactor.seconds()
        os.kill(process.transport.pid, getattr(signal, signame))  # type: ignore[attr-defined]
        self.assertEqual((yield alice.closed), (1001, "Server shutdown"))
        self.assertEqual((yield bob.closed), (1001, "Server shutdown"))
        ended = yield process.ended
        self.assertLess(reactor.seconds() - started, 10)
        if isinstance(ended, ProcessTerminated):
            self.assertEqual(ended.signal, getattr(signal, signame), process.output)
        else:
            self.assertIsInstance(ended, ProcessDone)
        self.assertIn(b"user 1 connected", process.output)
        self.assertNotIn(b"hello", process.output)
        return ended

    def test_sigterm(self) -> Deferred[object]:
        """
        SIGTERM closes every client with 1001 and ends the process cleanly
        within 10 seconds; message bodies are not logged.
        """
        return self.stopsOn("SIGTERM")

    def test_sigint(self) -> Deferred[object]:
        """
        SIGINT does the same, over wss://.
        """
        return self.stopsOn("SIGINT", tls=True)

    @inlineCallbacks
    def test_badConfigRefused(self) -> object:
        """
        The process refuses a bad config: it exits non-zero, naming the key,
        without listening (and without twistd's usage text).
        """
        path = _writeConfig(self, {"server": {"auth": {"type": "bsaic"}}})
        process = self.spawn("-C", path)
        ended = yield process.ended
        self.assertIsInstance(ended, ProcessTerminated)
        self.assertEqual(ended.exitCode, 1)
        self.assertIn(b'server.auth.type: unknown auth type "bsaic"', process.output)
        self.assertNotIn(b"listening", process.output)
        self.assertNotIn(b"Usage:", process.output)
