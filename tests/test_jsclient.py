"""
The client library C{clients/js/wsserver.js}: its state machine in Node
(C{node --test clients/js/test/*.test.js}), and the library in headless Chromium
against the real server, imported from the server's C{/wsserver.js} by a
page of another origin (C{tests/fixtures/jsclient.html}).

Where the library waits (its backoff), the page gives it a manual clock
that the test advances: no test sleeps for a reconnect.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from typing import Any

import jwt
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data, File

from wsserver.config import parseConfig
from wsserver.tap import buildService

from .support import HERE, Running, closeClient, openClient, restRequest, startServer
from .test_browser import Browser, BrowserMixin, inReactor

ROOT = os.path.dirname(HERE)
SECRET = "a-secret-of-at-least-32-bytes-for-HS256!"


class NodeTests(SynchronousTestCase):
    """
    The library's own tests, in Node.
    """

    def test_stateMachine(self) -> None:
        """
        C{node --test clients/js/test/*.test.js} passes (reconnect rules, backoff,
        since, outbox and acks, with a fake socket and a manual clock).
        """
        node = shutil.which("node")
        if node is None:
            why = "node is not installed (apt-get install nodejs)"
            if os.environ.get("CI"):
                self.fail(why)
            raise SkipTest(why)
        # the files, not the folder: Node 21 on reads arguments as globs
        tests = sorted(glob.glob(os.path.join(ROOT, "clients", "js", "test", "*.test.js")))
        self.assertTrue(tests)
        result = subprocess.run([node, "--test", *tests], cwd=ROOT, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])
        self.assertRegex(result.stdout, r"# pass [1-9]")
        self.assertIn("# fail 0", result.stdout)


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(sub: str, seconds: float) -> str:
    """
    A jwt for user C{sub} that expires in C{seconds}.
    """
    return jwt.encode({"sub": sub, "exp": int(time.time() + seconds)}, SECRET, algorithm="HS256")


JWT_AUTH = {"type": "jwt", "secret": SECRET, "algorithms": ["HS256"], "source": {"type": "query", "name": "token"}}


class Page:
    """
    The harness page in a browser (blocking calls: from a thread).
    """

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        browser.window(url)
        browser.until(lambda d: d.execute_script("return window.harnessReady === true"), "the library imported")

    def js(self, script: str, *args: Any) -> Any:
        return self.browser.driver.execute_script(script, *args)

    def until(self, script: str, what: str, *args: Any) -> Any:
        """
        Wait until C{script} returns a true value; that value.  A timeout
        says which statuses the page went through.
        """
        from selenium.common.exceptions import TimeoutException

        try:
            return self.browser.until(lambda d: self.js(script, *args), what)
        except TimeoutException as e:
            raise AssertionError(f"{e.msg}; statuses: {self.js('return harness.statuses')}") from None

    def start(self, options: dict[str, Any], manual: bool = False, randoms: list[float] | None = None) -> None:
        self.js("harness.start(arguments[0], arguments[1], arguments[2])", options, manual, randoms)

    def state(self) -> dict[str, Any] | None:
        return self.js("return harness.last()")

    def untilState(self, state: str, code: int | None = None, count: int = 1) -> dict[str, Any]:
        """
        Wait for the C{count}th status C{state} (with C{code}); that status.
        """
        self.until("return harness.statuses.filter((s) => s.state === arguments[0] && "
                   "(arguments[1] === null || s.code === arguments[1])).length >= arguments[2]",
                   f"{count} x {state} {code}", state, code, count)
        return self.js("return harness.statuses.filter((s) => s.state === arguments[0] && "
                       "(arguments[1] === null || s.code === arguments[1]))[arguments[2] - 1]", state, code, count)

    def advance(self, ms: float) -> None:
        self.js("harness.clock.advance(arguments[0])", ms)

    def texts(self) -> list[str]:
        return self.js("return harness.texts()")


class ClientLibraryTests(BrowserMixin, TestCase):
    """
    C{/wsserver.js} in Chromium against the real server.
    """

    timeout = 60

    def harnessSite(self) -> int:
        """
        Serve C{tests/fixtures} (and the tests' manual clock) on another
        port (another origin); its port.
        """
        root = File(os.path.join(HERE, "fixtures"))
        root.putChild(b"clock.js", File(os.path.join(ROOT, "clients", "js", "test", "clock.js"), "text/javascript"))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def page(self, wsPort: int) -> Any:
        """
        A browser with the harness page, its library from C{wsPort}.
        """
        site = self.harnessSite()
        browser = yield self.browser()
        url = f"http://127.0.0.1:{site}/jsclient.html?lib=http://127.0.0.1:{wsPort}/wsserver.js"
        return (yield self.inThread(Page, browser, url))

    @inlineCallbacks
    def startAt(self, port: int, raw: dict[str, Any]) -> Any:
        """
        The real server on loopback C{port} (the same one again after a
        restart); stopped at cleanup unless stopped before.
        """
        server = raw.setdefault("server", {})
        server["listen"] = f"tcp:{port}:interface=127.0.0.1"
        raw.setdefault("restApi", {})["listen"] = "tcp:0:interface=127.0.0.1"
        raw.setdefault("chat", {}).setdefault("undelivered", {}).setdefault("storage", "memory")
        service = buildService(parseConfig(raw), reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        yield service.ws.whenListening()
        rest = yield service.rest.whenListening()
        return Running(service, port, rest.getHost().port, False)

    @inlineCallbacks
    def test_readmeSnippet(self) -> Any:
        """
        README's snippet for "a page of your app", pasted as it is into a
        page of another origin (only the server's port is the test's), gets
        the library from the server and sends: alice has the message, and
        the page the id it was acked with.
        """
        with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
            readme = f.read()
        snippet = re.search(r'^    (<script type="module">\n.*?^    </script>)\n', readme, re.S | re.M)
        self.assertIsNotNone(snippet, "README has no <script type=\"module\"> snippet")
        server = yield startServer(self)
        alice = yield openClient(server, "id=alice")
        self.addCleanup(closeClient, alice)
        script = textwrap.dedent(snippet.group(1))  # type: ignore[union-attr]
        self.assertIn("127.0.0.1:8085", script)
        script = script.replace("127.0.0.1:8085", f"127.0.0.1:{server.wsPort}")
        script = script.replace("</script>", "window.readmeAcked = id;\n</script>")
        root = Resource()
        root.putChild(b"app.html", Data(f"<!doctype html><title>an app</title>{script}".encode(), "text/html"))
        site = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(site.stopListening)
        browser = yield self.browser()

        def steps() -> str:
            browser.window(f"http://127.0.0.1:{site.getHost().port}/app.html")
            return browser.until(lambda d: d.execute_script("return window.readmeAcked"), "the snippet's send acked")

        acked = yield self.inThread(steps)
        message = yield alice.messages.get()
        self.assertEqual((message["text"], message["sender"], message["id"]), ("hi from carol", "carol", acked))

    @inlineCallbacks
    def test_resumesAcrossRestart(self) -> Any:
        """
        The server (inbox in SQLite) is stopped and started again on the
        same port while the page is connected; what was sent meanwhile
        arrives after the reconnect, and every message arrives once, in
        order, with growing seqs.
        """
        port = _freePort()
        data = os.path.abspath(self.mktemp())

        def config() -> dict[str, Any]:
            return {"server": {"dataDir": data}, "chat": {"history": {"enabled": True, "storage": "sqlite"}}}

        first = yield self.startAt(port, config())
        page = yield self.page(port)

        def send(server: Running, text: str) -> Any:
            return restRequest(server, "POST", "/send-message", json={"type": "text", "text": text, "recipients": [1]})

        def steps() -> None:
            page.start({"url": f"ws://127.0.0.1:{port}/chat", "id": 1}, manual=True)
            page.untilState("online")
            for n in (1, 2):
                inReactor(send, first, f"m{n}")
            page.until("return harness.messages.length === 2", "m1, m2")

        yield self.inThread(steps)
        yield first.service.stopService()
        state = yield self.inThread(page.untilState, "offline")
        self.assertEqual(state["code"], 1001)
        second = yield self.startAt(port, config())
        # sent while the page is away: only the inbox has them
        for n in (3, 4):
            response = yield send(second, f"m{n}")
            self.assertEqual(response.code, 202)

        def resume() -> dict[str, Any]:
            page.advance(state["delay"])
            return page.untilState("online", count=2)

        online = yield self.inThread(resume)
        self.assertEqual(online["since"], 2)
        yield self.inThread(page.until, "return harness.messages.length === 4", "m3, m4")
        yield send(second, "m5")
        yield self.inThread(page.until, "return harness.messages.length >= 5", "m5")
        messages = yield self.inThread(page.js, "return harness.messages")
        self.assertEqual([m["text"] for m in messages], ["m1", "m2", "m3", "m4", "m5"])
        self.assertEqual([m["seq"] for m in messages], [1, 2, 3, 4, 5])
        wires = yield self.inThread(page.js, "return harness.Wire.made.map((w) => w.url)")
        self.assertEqual(len(wires), 2)
        self.assertIn("since=2", wires[1])

    @inlineCallbacks
    def test_resendAfterDrop(self) -> Any:
        """
        The connection is lost after the server acked a message and before
        the page got the ack: the library resends it with the same token on
        the next connection, the server acks it again with the first id and
        routes it once.
        """
        server = yield startServer(self)
        peer = yield openClient(server, userId=2)
        self.addCleanup(closeClient, peer)
        page = yield self.page(server.wsPort)

        def steps() -> tuple[dict[str, Any], list[str], str]:
            page.start({"url": server.wsURL(), "id": 1, "minDelay": 20})
            page.untilState("online")
            page.js("harness.Wire.cutOnAck = true")
            page.js("harness.send('once', [2], 'only once')")
            page.until("return harness.acked.once !== undefined", "the ack after the resend")
            page.js("harness.send('after', [2], 'after')")
            page.until("return harness.acked.after !== undefined", "the next one acked")
            return (page.js("return harness.Wire.swallowed[0]"), page.js("return harness.Wire.made.map((w) => w.url)"),
                    page.js("return harness.acked.once"))

        swallowed, wires, acked = yield self.inThread(steps)
        self.assertEqual(len(wires), 2)
        self.assertEqual(swallowed["data"]["id"], acked)
        first = yield peer.messages.get()
        second = yield peer.messages.get()
        self.assertEqual((first["text"], first["id"]), ("only once", acked))
        self.assertEqual(second["text"], "after")

    @inlineCallbacks
    def test_outboxWhileOffline(self) -> Any:
        """
        Messages sent while the page is offline wait; on the reconnect they
        go out in order, and each send resolves with its id.
        """
        server = yield startServer(self)
        peer = yield openClient(server, userId=2)
        self.addCleanup(closeClient, peer)
        page = yield self.page(server.wsPort)

        def drop() -> None:
            for connection in server.service.router.allConnections():
                if connection.userId == 1:
                    connection.wire.transport.abortConnection()

        def steps() -> tuple[list[int], dict[str, str]]:
            page.start({"url": server.wsURL(), "id": 1}, manual=True)
            page.untilState("online")
            inReactor(drop)
            state = page.untilState("offline")
            waiting = [page.js(f"return harness.send('n{n}', [2], 'offline {n}')") for n in (1, 2, 3)]
            page.advance(state["delay"])
            page.until("return Object.keys(harness.acked).length === 3", "three acks")
            return waiting, page.js("return harness.acked")

        waiting, acked = yield self.inThread(steps)
        self.assertEqual(waiting, [1, 2, 3])
        got = []
        for _ in range(3):
            got.append((yield peer.messages.get()))
        self.assertEqual([(m["text"], m["id"]) for m in got],
                         [("offline 1", acked["n1"]), ("offline 2", acked["n2"]), ("offline 3", acked["n3"])])

    @inlineCallbacks
    def test_unauthorizedStops(self) -> Any:
        """
        4050 stops the client: no other attempt, no timer left, pending
        sends rejected.
        """
        server = yield startServer(self, {"server": {"auth": JWT_AUTH}})
        page = yield self.page(server.wsPort)
        bad = jwt.encode({"sub": "1", "exp": int(time.time() + 600)}, "another-secret-that-is-32-bytes-long!!", algorithm="HS256")

        def steps() -> tuple[dict[str, Any], int, int, str]:
            # sent at once, before the refusal
            page.js("harness.start(arguments[0], true); harness.send('x', [2], 'x')",
                    {"url": server.wsURL(), "id": 1, "token": bad})
            stopped = page.untilState("stopped")
            page.until("return harness.rejected.x !== undefined", "the send rejected")
            page.advance(3600 * 1000)
            return (stopped, page.js("return harness.Wire.made.length"), page.js("return harness.clock.timers.length"),
                    page.js("return harness.rejected.x"))

        stopped, made, timers, rejected = yield self.inThread(steps)
        self.assertEqual((stopped["code"], stopped["reason"]), (4050, "Unauthorized"))
        self.assertEqual((made, timers), (1, 0))
        self.assertIn("4050", rejected)

    @inlineCallbacks
    def test_tokenExpiredRefreshed(self) -> Any:
        """
        With a token that expires in three seconds, the server closes with
        4051; the library asks the page for a new token and goes on with it.
        """
        server = yield startServer(self, {"server": {"auth": JWT_AUTH}})
        peer = yield openClient(server, f"id=2&token={token('2', 600)}")
        self.addCleanup(closeClient, peer)
        page = yield self.page(server.wsPort)

        def steps() -> tuple[dict[str, Any], int, list[str], str]:
            page.js("harness.nextToken = arguments[0]", token("1", 600))
            page.start({"url": server.wsURL(), "id": 1, "token": token("1", 3), "onTokenExpired": True})
            page.untilState("online")
            expired = page.untilState("offline", 4051)
            page.untilState("online", count=2)
            page.js("harness.send('after', [2], 'with the new token')")
            page.until("return harness.acked.after !== undefined", "sent with the new token")
            return (expired, page.js("return harness.asked"), page.js("return harness.Wire.made.map((w) => w.url)"),
                    page.js("return harness.nextToken"))

        expired, asked, wires, fresh = yield self.inThread(steps)
        self.assertEqual((expired["reason"], asked, len(wires)), ("Token expired", 1, 2))
        self.assertIn("token=" + fresh, wires[1])
        message = yield peer.messages.get()
        self.assertEqual((message["text"], message["sender"]), ("with the new token", 1))

    @inlineCallbacks
    def test_slowConsumerResumes(self) -> Any:
        """
        4011 (a slow consumer) reconnects, resuming after the last seq: what
        was sent meanwhile arrives once, in order.
        """
        server = yield startServer(self, {"chat": {"history": {"enabled": True, "storage": "memory"}}})
        page = yield self.page(server.wsPort)

        def send(text: str) -> Any:
            return restRequest(server, "POST", "/send-message", json={"type": "text", "text": text, "recipients": [1]})

        def slow() -> None:
            for connection in server.service.router.allConnections():
                if connection.userId == 1:
                    connection.close(4011, "Slow consumer")

        def steps() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
            page.start({"url": server.wsURL(), "id": 1}, manual=True)
            page.untilState("online")
            inReactor(send, "first")
            page.until("return harness.messages.length === 1", "the first message")
            inReactor(slow)
            offline = page.untilState("offline")
            for text in ("missed 1", "missed 2"):
                inReactor(send, text)
            page.advance(offline["delay"])
            online = page.untilState("online", count=2)
            page.until("return harness.messages.length >= 3", "the missed messages")
            return offline, online, page.texts()

        offline, online, texts = yield self.inThread(steps)
        self.assertEqual((offline["code"], offline["reason"], offline["refused"]), (4011, "Slow consumer", False))
        self.assertEqual(online["since"], 1)
        self.assertEqual(texts, ["first", "missed 1", "missed 2"])

    @inlineCallbacks
    def test_backoffWithJitter(self) -> Any:
        """
        While nothing listens, each attempt waits twice as long as the one
        before, with jitter, as the injected clock and random numbers show;
        then the server is there, and the client is online.
        """
        port = _freePort()
        page = yield self.page((yield startServer(self)).wsPort)
        randoms = [0, 1, 0.5, 0.25, 1]

        def attempts() -> list[dict[str, Any]]:
            page.start({"url": f"ws://127.0.0.1:{port}/chat", "id": 1}, manual=True, randoms=randoms)
            seen = [page.untilState("offline")]
            for n in range(2, 6):
                page.advance(seen[-1]["delay"])
                seen.append(page.untilState("offline", count=n))
            return seen

        seen = yield self.inThread(attempts)
        # bases 500, 1000, 2000, 4000, 8000 ms: half, plus the random part of the other half
        self.assertEqual([s["delay"] for s in seen], [250, 1000, 1500, 2500, 8000])
        self.assertEqual({(s["code"], s["refused"]) for s in seen}, {(1006, True)})
        elapsed = yield self.inThread(page.js, "return harness.clock.now")
        self.assertEqual(elapsed, 250 + 1000 + 1500 + 2500)
        yield self.startAt(port, {})
        yield self.inThread(page.advance, seen[-1]["delay"])
        online = yield self.inThread(page.untilState, "online")
        self.assertIsNone(online["since"])
        made = yield self.inThread(page.js, "return harness.Wire.made.length")
        self.assertEqual(made, 6)
