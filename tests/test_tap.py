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

import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsserver import __version__
from wsserver.tap import Options

from .support import TWISTD, CERT, KEY, Running, ServerProcess, closeClient, openClient, spawnServer

#: The original's own config file (its layout, "workers": 8).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "original-config.json")



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

    def test_testEqualsOne(self) -> None:
        """
        The original's C{--test=1} (its systemd unit runs it) is C{-T};
        C{--test=0} is no check.
        """
        path = _writeConfig(self, {"server": {"port": 99999}})
        self.assertEqual(self.check("-C", path, "--test=1"),
                         (1, "error: server.port: 99999 is out of range (0 to 65535)\n"))
        self.assertEqual(self.check("--test=true", "--ws", "tcp:0"), (0, "config OK\n"))
        options = Options()
        options.parseOptions(["--test=0", "--ws", "tcp:0"])
        self.assertFalse(options["test"])
        self.assertEqual(options.config.server.listen, "tcp:0")

    def test_version(self) -> None:
        """
        C{--version} prints the version of the installed package (C{0+unknown}
        from a checkout on the path that was never installed).
        """
        from importlib.metadata import PackageNotFoundError, version

        try:
            expected = version("wsserver")
        except PackageNotFoundError:
            expected = "0+unknown"
        self.assertEqual(self.check("--version"), (0, f"wsserver {expected}\n"))

    def test_checkPortOutOfRange(self) -> None:
        """
        C{-T} finds a port out of range in an endpoint string, naming the
        option, without listening.
        """
        self.assertEqual(self.check("--ws", "tcp:99999", "-T"),
                         (1, "error: --ws: port 99999 is out of range (0 to 65535)\n"))

    def test_checkStartWarnings(self) -> None:
        """
        C{-T} prints the start warnings too: the original's file gives the
        workers' and the open REST API's, and is OK.
        """
        code, out = self.check("-C", ORIGINAL, "-T")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines(), [
            "warning: server.workers: 8 worker processes need cluster.redis: running one process; "
            "set cluster.redis to run 8",
            "warning: restApi.address: the REST API listens on every address with noauth: anyone who reaches "
            "it can send messages as anyone; set restApi.auth, or listen on 127.0.0.1",
            "config OK",
        ])

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
        self.assertTrue(out.startswith('error: --ws: invalid endpoint "carrier-pigeon:12"'), out)

    def test_refuseToStart(self) -> None:
        """
        Without C{-T}, a bad config refuses to start with one line per
        problem that names the key; nothing falls back to no auth.
        """
        path = _writeConfig(self, {"server": {"auth": {"type": "bsaic"}}})
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["-C", path])
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            err.getvalue(),
            'wsserver: invalid configuration: server.auth.type: unknown auth type "bsaic" (use one of: noauth, '
            "basic, header, bearer, cookie, oneOf, allOf, remote, jwt)\n",
        )


    def test_productionPlaceholders(self) -> None:
        """
        C{examples/production.json} as shipped still has its placeholder
        secrets: C{-T} names each key and exits 1, and the server does not
        start, saying the same on stderr.
        """
        why = ("is a placeholder, not a secret: replace it with one of your own "
               "(such as the output of: openssl rand -hex 32)")
        problems = [
            f'server.auth.value: "change-me" {why}',
            f'restApi.auth.password: "change-me-too" {why}',
            f'event.targets[0].auth.value: "change-me-as-well" {why}',
        ]
        production = os.path.join(_ROOT, "examples", "production.json")
        self.assertEqual(self.check("-C", production, "-T"),
                         (1, "".join(f"error: {p}\n" for p in problems)))
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["-C", production])
        self.assertEqual((caught.exception.code, err.getvalue()),
                         (1, "".join(f"wsserver: invalid configuration: {p}\n" for p in problems)))

    def test_readmeCheckSample(self) -> None:
        """
        README's C{-T} line prints what README says it prints: its command
        (from the checkout) and the output after C{# checks the file:}.
        """
        with open(os.path.join(_ROOT, "README.rst"), encoding="utf-8") as f:
            samples = [line for line in f if " -T " in line and "# checks the file:" in line]
        self.assertEqual(len(samples), 1, samples)
        command, _, said = samples[0].partition("# checks the file:")
        args = command.split()
        self.assertEqual(args[:3], ["twistd", "-n", "wsserver"])
        args = [os.path.join(_ROOT, a) if a.endswith(".json") else a for a in args[3:]]
        self.assertEqual(self.check(*args), (0, said.strip() + "\n"))


class StartErrorTests(SynchronousTestCase):
    """
    L{wsserver.service.cannotListen}: a failure to listen in plain words.
    """

    def test_messages(self) -> None:
        """
        The message names the key, the address and the cause, in lower case
        as a line of the log.
        """
        import errno
        import socket

        from twisted.internet.error import CannotListenError

        from wsserver.service import cannotListen

        denied = CannotListenError("", 80, socket.error(errno.EACCES, "Permission denied"))
        self.assertEqual(str(cannotListen("server.listen", denied)),
                         "server.listen: cannot listen on port 80: permission denied")
        inUse = CannotListenError("::1", 8085, socket.error(errno.EADDRINUSE, "Address already in use"))
        self.assertEqual(str(cannotListen("--ws", inUse)), "--ws: cannot listen on ::1:8085: address already in use")
        self.assertEqual(str(cannotListen("--ws", OverflowError("bind(): port must be 0-65535."))),
                         "--ws: cannot listen: bind(): port must be 0-65535.")

    def test_listeningService(self) -> None:
        """
        L{ListeningService} raises the L{StartError} when its endpoint
        cannot listen.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import Factory

        from wsserver.service import ListeningService, StartError

        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        service = ListeningService("WebSocket", TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"), Factory(),
                                   key="--ws")
        e = self.assertRaises(StartError, service.privilegedStartService)
        self.assertEqual(str(e), f"--ws: cannot listen on 127.0.0.1:{port}: address already in use")


class SystemdUnitTests(SynchronousTestCase):
    """
    C{contrib/wsserver.service}, the systemd unit.
    """

    def test_unit(self) -> None:
        """
        The unit checks the config before starting, runs the server in the
        foreground with no pid file, reloads with SIGHUP, restarts on
        failure, as its own user; its wsserver arguments parse.
        """
        import configparser
        import shlex

        unit = configparser.ConfigParser(interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "contrib",
                               "wsserver.service"))
        service = unit["Service"]
        start = shlex.split(service["ExecStart"])
        self.assertEqual(start[1:5], ["--nodaemon", "--pidfile=", "wsserver", "-C"])
        self.assertEqual(shlex.split(service["ExecStartPre"]), start + ["-T"])
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["User"], "wsserver")
        self.assertEqual(service["NoNewPrivileges"], "yes")
        # what follows "wsserver" is our command line: with the example
        # config in place of /etc/wsserver/config.json, -T says OK
        example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                               "config.json")
        args = [example if a == "/etc/wsserver/config.json" else a for a in start[4:]]
        self.assertEqual(args[0], "-C")
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as caught:
            Options().parseOptions([*args, "-T"])
        self.assertEqual((caught.exception.code, out.getvalue()), (0, "config OK\n"))


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


    def test_maxConnectionsFitted(self) -> None:
        """
        The start says in one line what C{maxConnections} is under the open
        files limit; an explicit value above it is lowered, with a warning,
        and the WebSocket factory refuses past the lowered value.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import LogLevel, capturedLogs, formatEvent

        from wsserver.config import parseConfig
        from wsserver.tap import buildService

        for limits, level, text in (
            ({}, LogLevel.info, "server.limits.maxConnections: 768: the open files limit is 1024 and 256 are kept "
                                "for REST, Redis and files"),
            ({"maxConnections": 2000}, LogLevel.warn,
             "server.limits.maxConnections: 2000 lowered to 768: the open files limit is 1024 and 256 are kept "
             "for REST, Redis and files; raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to allow "
             "more"),
        ):
            config = parseConfig({"server": {"limits": limits}}, checkEndpoints=False)
            with capturedLogs() as events:
                server = buildService(config, MemoryReactorClock(), openFiles=1024)
            lines = [(e["log_level"], formatEvent(e)) for e in events if "maxConnections" in formatEvent(e)]
            self.assertEqual(lines, [(level, text)])
            self.assertEqual(server.ws.factory.maxConnections, 768)

    def test_maxConnectionsCheck(self) -> None:
        """
        C{-T} warns of an explicit C{maxConnections} above what the (hard)
        open files limit allows, and passes.
        """
        import resource

        self.patch(resource, "getrlimit", lambda which: (1024, 4096))
        path = _writeConfig(self, {"server": {"limits": {"maxConnections": 5000}}})
        code, out = OptionsTests.check(self, "-T", "-C", path)  # type: ignore[arg-type]
        self.assertEqual(code, 0)
        self.assertIn("warning: server.limits.maxConnections: 5000 lowered to 3840: the open files limit is 4096",
                      out)
        self.assertTrue(out.endswith("config OK\n"))


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
        self.assertIn(f"wsserver {__version__} starting".encode(), process.output)
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

    def assertOneLine(self, process: ServerProcess, ended: object, line: bytes) -> None:
        """
        The process ended with status 1 and one log line about why: C{line},
        with no traceback.
        """
        self.assertIsInstance(ended, ProcessTerminated)
        self.assertEqual(ended.exitCode, 1, process.output)  # type: ignore[attr-defined]
        self.assertNotIn(b"Traceback", process.output)
        bad = [l for l in process.output.splitlines() if b"#critical]" in l or b"#error]" in l]
        self.assertEqual(len(bad), 1, process.output)
        self.assertTrue(bad[0].endswith(line), bad[0])

    @inlineCallbacks
    def test_portInUse(self) -> object:
        """
        A WebSocket port in use: one line naming the option and the cause,
        exit 1, no traceback.
        """
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        process = self.spawn("--ws", f"tcp:{port}:interface=127.0.0.1", "--rest", "tcp:0:interface=127.0.0.1")
        ended = yield process.ended
        self.assertOneLine(process, ended,
                           f"cannot start: --ws: cannot listen on 127.0.0.1:{port}: address already in use".encode())

    @inlineCallbacks
    def test_restPortInUse(self) -> object:
        """
        A REST port in use, from the config file: one line naming
        C{restApi.listen}.
        """
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        path = _writeConfig(self, {"server": {"listen": "tcp:0:interface=127.0.0.1"},
                                   "restApi": {"listen": f"tcp:{port}:interface=127.0.0.1"}})
        process = self.spawn("-C", path)
        ended = yield process.ended
        self.assertOneLine(
            process, ended,
            f"cannot start: restApi.listen: cannot listen on 127.0.0.1:{port}: address already in use".encode())

    @inlineCallbacks
    def test_portOutOfRange(self) -> object:
        """
        A port out of range: refused before listening, in one line naming
        the option.
        """
        process = self.spawn("--ws", "tcp:99999", "--rest", "tcp:0:interface=127.0.0.1")
        ended = yield process.ended
        self.assertIsInstance(ended, ProcessTerminated)
        self.assertEqual(ended.exitCode, 1)
        self.assertEqual(process.output, b"wsserver: invalid configuration: --ws: port 99999 is out of range "
                                         b"(0 to 65535)\n")

    @inlineCallbacks
    def test_badCertificate(self) -> object:
        """
        A certificate file that is not one: one line naming the key, in
        plain words.
        """
        junk = os.path.abspath(self.mktemp())
        with open(junk, "w") as f:
            f.write("junk\n")
        path = _writeConfig(self, {"server": {"secure": {"enabled": True, "crtPath": junk, "keyPath": KEY}}})
        process = self.spawn("-C", path)
        ended = yield process.ended
        self.assertEqual(ended.exitCode, 1)  # type: ignore[attr-defined]
        self.assertEqual(process.output.decode(), f'wsserver: invalid configuration: server.secure.crtPath: '
                                                  f'"{junk}" is not a PEM certificate\n')

    @inlineCallbacks
    def test_version(self) -> object:
        """
        C{twistd wsserver --version} and the C{wsserver} console script's
        C{--version} print the package's version.
        """
        for argv in ([sys.executable, "-c", TWISTD, "wsserver", "--version"],
                     [sys.executable, "-c", "from wsserver.tap import main; main()", "--version"]):
            process = ServerProcess()
            reactor.spawnProcess(process, sys.executable, argv, env=dict(os.environ))
            ended = yield process.ended
            self.assertIsInstance(ended, ProcessDone)
            self.assertEqual(process.output, f"wsserver {__version__}\n".encode())

    @inlineCallbacks
    def console(self, *args: str) -> object:
        """
        Run the C{wsserver} console script with C{args}: its exit code and
        output.
        """
        process = ServerProcess()
        reactor.spawnProcess(process, sys.executable,
                             [sys.executable, "-c", "from wsserver.tap import main; main()", *args],
                             env=dict(os.environ))
        ended = yield process.ended
        return ended.exitCode, process.output.decode()  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_consoleTypo(self) -> object:
        """
        The C{wsserver} console script with a typo names itself, not the
        twistd command line it builds (C{twistd --nodaemon}), and exits 1.
        """
        code, out = yield self.console("--cofnig", "x.json")
        self.assertEqual((code, out), (1, "wsserver: option --cofnig not recognized\n"
                                          "wsserver: see wsserver --help for the options\n"))

    @inlineCallbacks
    def test_consoleHelp(self) -> object:
        """
        C{wsserver --help} shows C{wsserver}'s usage, and neither it nor
        C{twistd wsserver --help} lists the internal C{--adopt}.
        """
        code, out = yield self.console("--help")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("Usage: wsserver [-C config.json] [-T] [--ws ENDPOINT]"), out)
        self.assertIn("--config=", out)
        self.assertNotIn("adopt", out)
        process = ServerProcess()
        reactor.spawnProcess(process, sys.executable, [sys.executable, "-c", TWISTD, "wsserver", "--help"],
                             env=dict(os.environ))
        yield process.ended
        self.assertIn(b"Usage: twistd [options] wsserver [-C config.json]", process.output)
        self.assertIn(b"--config=", process.output)
        self.assertNotIn(b"adopt", process.output)

    @inlineCallbacks
    def test_originalConfigStarts(self) -> object:
        """
        The original's own config file (C{"workers": 8}, no cluster) starts
        unchanged, as one process that serves, with its warnings logged.
        """
        process = self.spawn("-C", ORIGINAL, "--ws", "tcp:0:interface=127.0.0.1", "--rest",
                             "tcp:0:interface=127.0.0.1")
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        server = Running(None, int(m.group(1)), None, False)  # type: ignore[arg-type]
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        alice.send({"type": "text", "text": "hello", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "hello")
        yield closeClient(alice)
        yield closeClient(bob)
        self.assertIn(b"config: server.workers: 8 worker processes need cluster.redis: running one process",
                      process.output)
        self.assertNotIn(b"workers", process.output.split(b"config: server.workers")[1].split(b"\n", 1)[1])
        self.assertNotIn(b"unknown key", process.output)
        process.transport.signalProcess("TERM")  # type: ignore[attr-defined]
        yield process.ended

    @inlineCallbacks
    def test_sighup(self) -> object:
        """
        SIGHUP re-reads the config file: the server survives, clients stay
        connected, the new auth applies to new connections, a restart-only
        change is logged as such, and a file with errors is refused.
        """
        listen = {"listen": "tcp:0:interface=127.0.0.1"}
        path = _writeConfig(self, {"server": dict(listen), "restApi": dict(listen)})
        process = self.spawn("-C", path)
        m = yield process.waitFor(rb"WebSocket listening on 127\.0\.0\.1:(\d+)")
        server = Running(None, int(m.group(1)), None, False)  # type: ignore[arg-type]
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, alice)
        self.addCleanup(closeClient, bob)

        auth = {"type": "header", "name": "X-Token", "value": "t"}
        with open(path, "w") as f:
            json.dump({"server": {"listen": "tcp:1:interface=127.0.0.1", "auth": auth}, "restApi": listen}, f)
        process.transport.signalProcess("HUP")  # type: ignore[attr-defined]
        yield process.waitFor(rb"reload done: server.auth applied")
        self.assertIn(b"reload: server.listen changed: takes effect at the next restart", process.output)
        alice.send({"type": "text", "text": "still here", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "still here")
        stranger = yield openClient(server, userId=3)
        self.assertEqual((yield stranger.closed), (4050, "Unauthorized"))
        carol = yield openClient(server, userId=4, headers={"X-Token": "t"})
        yield closeClient(carol)

        with open(path, "w") as f:
            json.dump({"server": {"auth": {"type": "bsaic"}}}, f)
        process.transport.signalProcess("HUP")  # type: ignore[attr-defined]
        yield process.waitFor(rb'reload refused, running config kept: server.auth.type: unknown auth type "bsaic"')
        bob.send({"type": "text", "text": "and here", "recipients": [1]})
        self.assertEqual((yield alice.messages.get())["text"], "and here")
        self.assertFalse(process.ended.called)
        process.transport.signalProcess("TERM")  # type: ignore[attr-defined]
        self.assertEqual((yield alice.closed), (1001, "Server shutdown"))
        yield process.ended
