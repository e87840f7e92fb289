"""
The pages in a real browser (SPEC section 9): the demo chat page on the
WebSocket port, the dashboard on the REST API, and the original C++ server's
example client's way of talking (C{tests/legacy/}) against this server.

The server runs in the test's reactor (L{tests.support.startServer});
headless Chromium is driven through Selenium, whose calls block, so every
browser step runs in a thread (L{deferToThread}) and reaches back into the
reactor with L{blockingCallFromThread}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site
from twisted.web.static import File

from .support import HERE, Running, closeClient, openClient, restRequest, startServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: The flags of a quiet, sandbox-free headless Chromium that calls nowhere.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
#: Seconds a page gets to show what a test waits for.
WAIT = 15


class Browser:
    """
    One headless Chromium (blocking calls: use from a thread).

    @param acceptInsecureCerts: trust any certificate (the development one
        of C{certs/}, for C{https://} and C{wss://}).
    """

    def __init__(self, acceptInsecureCerts: bool = False) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="wsserver-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.accept_insecure_certs = acceptInsecureCerts
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(WAIT)

    def quit(self) -> None:
        """
        End the browser and remove its profile.
        """
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def window(self, url: str) -> str:
        """
        Open C{url} in a new window; its handle.
        """
        if self.driver.current_url not in ("data:,", "about:blank"):
            self.driver.switch_to.new_window("window")
        self.driver.get(url)
        return self.driver.current_window_handle

    def use(self, handle: str) -> None:
        """
        Make the window C{handle} the one that the next calls act on.
        """
        self.driver.switch_to.window(handle)

    def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        """
        Wait until C{condition(driver)} is true; its value.
        """
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")

    def text(self, css: str) -> str:
        """
        The text of the first element matching C{css} ("" when none).
        """
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""

    def texts(self, css: str) -> list[str]:
        """
        The texts of every element matching C{css}.
        """
        from selenium.webdriver.common.by import By

        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def type(self, css: str, text: str) -> None:
        """
        Type C{text} into the element matching C{css}, then Enter.
        """
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        element = self.driver.find_element(By.CSS_SELECTOR, css)
        element.send_keys(text)
        element.send_keys(Keys.ENTER)

    def value(self, css: str) -> str:
        """
        The C{value} of the form field matching C{css}.
        """
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css).get_property("value")


def inReactor(f: Callable[..., Any], *args: Any) -> Any:
    """
    From a browser thread: run C{f} in the reactor and wait for its result.
    """
    return blockingCallFromThread(reactor, f, *args)


class BrowserMixin:
    """
    A browser per test, started and ended in a thread.
    """

    def setUp(self) -> None:
        if not os.path.exists(CHROMIUM):
            why = f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)"
            if os.environ.get("CI"):
                self.fail(why)  # type: ignore[attr-defined]  # CI installs it: a skip would hide a failure
            raise SkipTest(why)

    @inlineCallbacks
    def browser(self, acceptInsecureCerts: bool = False) -> Any:
        """
        A started L{Browser}, ended at cleanup.
        """
        browser = yield deferToThread(Browser, acceptInsecureCerts)
        self.addCleanup(deferToThread, browser.quit)  # type: ignore[attr-defined]
        return browser

    def inThread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Run the blocking browser steps C{f(*args)}.
        """
        return deferToThread(f, *args)


def demoURL(server: Running, query: str = "") -> str:
    """
    The demo page of C{server}, with C{query}.
    """
    scheme = "https" if server.tls else "http"
    return f"{scheme}://127.0.0.1:{server.wsPort}/" + (f"?{query}" if query else "")


class DemoPageTests(BrowserMixin, TestCase):
    """
    The demo chat page at C{/} of the WebSocket port.
    """

    timeout = 120

    @inlineCallbacks
    def test_twoUsersTalk(self) -> Any:
        """
        Two demo pages, as users 1 and 2, each write to the other: each sees
        the other's message, and the writer sees it sent, then delivered
        (delivery status on).
        """
        server = yield startServer(self, {"chat": {"message": {"enableDeliveryStatus": True}}})
        browser = yield self.browser()

        def steps() -> None:
            one = browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "user 1 connected")
            two = browser.window(demoURL(server, "id=2&to=1"))
            browser.until(lambda d: browser.text("#state") == "connected", "user 2 connected")
            self.assertEqual(browser.text("#who"), "user 2 \u2192 user 1")

            browser.use(one)
            browser.type("#text", "hello from one")
            browser.until(lambda d: browser.text("#log li.out .status") == "delivered", "delivered to 2")
            self.assertEqual(browser.texts("#log li.out .text"), ["hello from one"])
            self.assertEqual(browser.text("#deliveryStatus"), "delivery status on")

            browser.use(two)
            browser.until(lambda d: browser.texts("#log li.in .text") == ["hello from one"], "2 got it")
            self.assertTrue(browser.text("#log li.in .from").startswith("user 1"))
            browser.type("#text", "hi one, two here")
            browser.until(lambda d: browser.text("#log li.out .status") == "delivered", "delivered to 1")

            browser.use(one)
            browser.until(lambda d: browser.texts("#log li.in .text") == ["hi one, two here"], "1 got it")

        yield self.inThread(steps)
        # user 2 received: 1's message, the copy of its own, and the two
        # notifications for it (reached 1, reached 2)
        stats = server.service.router.statItem(2)
        self.assertEqual((stats["sentMessages"], stats["receivedMessages"]), (1, 4))

    @inlineCallbacks
    def test_stringIds(self) -> Any:
        """
        C{/?id=alice&to=bob}: string ids talk through the demo page (the
        default C{chat.userIds: "any"}), a C{+} in an id kept.
        """
        server = yield startServer(self, {"chat": {"message": {"enableDeliveryStatus": True}}})
        browser = yield self.browser()

        def steps() -> None:
            one = browser.window(demoURL(server, "id=alice&to=b+b@example.com"))
            browser.until(lambda d: browser.text("#state") == "connected", "alice connected")
            self.assertEqual(browser.text("#who"), "user alice \u2192 user b+b@example.com")
            two = browser.window(demoURL(server, "id=b+b@example.com&to=alice"))
            browser.until(lambda d: browser.text("#state") == "connected", "bob connected")
            browser.use(one)
            browser.type("#text", "hello bob")
            browser.until(lambda d: browser.text("#log li.out .status") == "delivered", "delivered to bob")
            browser.use(two)
            browser.until(lambda d: browser.texts("#log li.in .text") == ["hello bob"], "bob got it")
            self.assertTrue(browser.text("#log li.in .from").startswith("user alice"))

        yield self.inThread(steps)
        self.assertEqual(server.service.router.statItem("b+b@example.com")["receivedMessages"], 1)

    @inlineCallbacks
    def test_overTLS(self) -> Any:
        """
        Loaded over C{https://}, the page connects over C{wss://} to the
        same port, and two pages talk.
        """
        server = yield startServer(self, tls=True)
        browser = yield self.browser(acceptInsecureCerts=True)

        def steps() -> None:
            one = browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "user 1 connected")
            two = browser.window(demoURL(server, "id=2&to=1"))
            browser.until(lambda d: browser.text("#state") == "connected", "user 2 connected")
            browser.use(one)
            browser.type("#text", "over TLS")
            browser.use(two)
            browser.until(lambda d: browser.texts("#log li.in .text") == ["over TLS"], "2 got it")

        yield self.inThread(steps)

    @inlineCallbacks
    def test_sentWithoutDeliveryStatus(self) -> Any:
        """
        With delivery status off, a message shows as sent (the server's copy
        came back), never as delivered.
        """
        server = yield startServer(self)
        browser = yield self.browser()

        def steps() -> None:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "connected")
            browser.type("#text", "anyone?")
            browser.until(lambda d: browser.text("#log li.out .status") == "sent", "sent")
            self.assertEqual(browser.text("#deliveryStatus"), "")

        yield self.inThread(steps)

    @inlineCallbacks
    def test_asksForIds(self) -> Any:
        """
        Without ids in its query, the page asks for them, then connects as
        the user given.
        """
        server = yield startServer(self)
        browser = yield self.browser()

        def steps() -> str:
            browser.window(demoURL(server))
            browser.until(lambda d: d.find_element("id", "ask").is_displayed(), "the form")
            self.assertFalse(browser.driver.find_element("id", "chat").is_displayed())
            browser.driver.find_element("id", "askId").send_keys("7")
            browser.type("#askTo", "8")
            browser.until(lambda d: browser.text("#state") == "connected", "connected")
            return browser.driver.current_url

        url = yield self.inThread(steps)
        self.assertEqual(url, demoURL(server, "id=7&to=8"))
        self.assertTrue(server.service.router.isOnline(7))

    @inlineCallbacks
    def test_reconnects(self) -> Any:
        """
        When the server closes the page's connection, the page connects
        again by itself, and messages flow again.
        """
        server = yield startServer(self)
        browser = yield self.browser()
        peer = yield openClient(server, userId=2)
        self.addCleanup(closeClient, peer)

        def dropAll() -> None:
            for connection in server.service.router.allConnections():
                if connection.userId == 1:
                    connection.close(1001, "Server shutdown")

        def steps() -> None:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "connected")
            inReactor(dropAll)
            browser.until(lambda d: browser.text("#state").startswith("disconnected (1001 Server shutdown)"),
                          "the page saw the close")
            browser.until(lambda d: browser.text("#state") == "connected", "connected again")
            browser.type("#text", "back again")

        yield self.inThread(steps)
        message = yield peer.messages.get()
        self.assertEqual((message["text"], message["sender"]), ("back again", 1))
        self.assertEqual(server.service.router.statItem(1)["connectedTimes"], 2)

    @inlineCallbacks
    def test_resumesWithSince(self) -> Any:
        """
        With the inbox on, a page whose connection died (no close frame: a
        network loss) reconnects with C{since} = the newest seq it saw, and
        shows what was sent meanwhile, once each, in order.
        """
        server = yield startServer(self, {"chat": {"history": {"enabled": True, "storage": "memory"}}})
        browser = yield self.browser()
        peer = yield openClient(server, userId=2)
        self.addCleanup(closeClient, peer)

        def send(text: str) -> None:
            peer.send({"type": "text", "text": text, "recipients": [1]})

        def cutAndSend() -> None:
            for connection in server.service.router.allConnections():
                if connection.userId == 1:
                    connection.wire.transport.abortConnection()
            send("missed 1")
            send("missed 2")

        def steps() -> list[str]:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "connected")
            inReactor(lambda: send("first"))
            browser.until(lambda d: browser.texts("#log li.in .text") == ["first"], "the first message")
            inReactor(cutAndSend)
            browser.until(lambda d: browser.text("#state").startswith("connected (resumed after 1)"),
                          "resumed after seq 1")
            browser.until(lambda d: len(browser.texts("#log li.in .text")) >= 3, "the missed messages")
            return browser.texts("#log li.in .text")

        texts = yield self.inThread(steps)
        self.assertEqual(texts, ["first", "missed 1", "missed 2"])

    @inlineCallbacks
    def test_unauthorizedNotRetried(self) -> Any:
        """
        A refusal (4050 here; 4000 alike) is shown, and not tried again
        and again.
        """
        server = yield startServer(self, {"server": {"auth": {"type": "header", "name": "X-T", "value": "v"}}})
        browser = yield self.browser()

        def steps() -> str:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state").startswith("closed:"), "closed")
            return browser.text("#state")

        state = yield self.inThread(steps)
        self.assertEqual(state, "closed: 4050 Unauthorized")

    @inlineCallbacks
    def test_refusedHandshakeExplained(self) -> Any:
        """
        A handshake refused with HTTP 403 (an origin not allowed): the page
        cannot see the status, and says what it may be and where to look,
        rather than only "disconnected".
        """
        server = yield startServer(self, {"server": {"allowedOrigins": ["https://app.example.com"]}})
        browser = yield self.browser()

        def steps() -> tuple[str, list[str]]:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state").startswith("cannot connect"), "the refusal")
            browser.until(lambda d: browser.texts("#log li.note"), "the hint")
            return browser.text("#state"), browser.texts("#log li.note")

        state, notes = yield self.inThread(steps)
        origin = f"http://127.0.0.1:{server.wsPort}"
        self.assertTrue(state.startswith(f"cannot connect: the server refused the handshake (HTTP 403: is {origin} "
                                         f"in server.allowedOrigins?), retrying in "), state)
        self.assertEqual(notes, [
            f"The server is running but refuses this page's connection: most likely this page's origin, {origin}, "
            f'is not in server.allowedOrigins (HTTP 403; the server\'s log says "Origin not allowed"). The other '
            f"refusal is HTTP 429, too many connections from this address."])

    @inlineCallbacks
    def test_unreachableExplained(self) -> Any:
        """
        A server that stopped after the page loaded: the page says it is not
        reachable (not that it refused), and says nothing of origins.
        """
        server = yield startServer(self)
        browser = yield self.browser()

        def load() -> None:
            browser.window(demoURL(server, "id=1&to=2"))
            browser.until(lambda d: browser.text("#state") == "connected", "connected")

        yield self.inThread(load)
        yield server.service.stopService()

        def steps() -> tuple[str, list[str]]:
            browser.until(lambda d: browser.text("#state").startswith("cannot connect"), "the refusal")
            return browser.text("#state"), browser.texts("#log li.note")

        state, notes = yield self.inThread(steps)
        self.assertTrue(state.startswith("cannot connect: the server is not reachable, retrying in "), state)
        self.assertEqual(notes, [])


class DashboardTests(BrowserMixin, TestCase):
    """
    The dashboard at C{/dashboard} of the REST API.
    """

    timeout = 120

    @inlineCallbacks
    def test_showsUsersAndMovingCounts(self) -> Any:
        """
        The dashboard lists the connected users (a string id too), and
        their message counts move as messages arrive, without a reload.
        """
        server = yield startServer(self)
        browser = yield self.browser()
        client = yield openClient(server, userId=42)
        self.addCleanup(closeClient, client)
        alice = yield openClient(server, "id=alice%40example.com")
        self.addCleanup(closeClient, alice)

        def send(n: int) -> Deferred[Any]:
            return restRequest(server, "POST", "/send-message", json={"type": "text", "text": f"m{n}", "recipients": [42]})

        def steps() -> tuple[str, str]:
            browser.window(server.restURL("/dashboard"))
            browser.until(lambda d: browser.text("#users tr[data-id='42'] td") == "42", "user 42 listed")
            browser.until(lambda d: browser.text("#users tr[data-id='alice@example.com'] td") == "alice@example.com",
                          "a string id listed")
            self.assertEqual(browser.text("#connections"), "2")
            self.assertEqual(browser.text("#usersOnline"), "2")
            self.assertEqual(browser.text("#queueState"), "off")
            before = browser.text("#delivered")
            for n in range(5):
                inReactor(send, n)
            browser.until(lambda d: browser.text("#delivered") == "5", "the delivered count moved")
            browser.until(lambda d: browser.text("#received") == "5", "the received count moved")
            return before, browser.text("#users tr[data-id='42'] td:nth-child(7)")

        before, received = yield self.inThread(steps)
        self.assertEqual((before, received), ("0", "5"))
        for _ in range(5):
            yield client.messages.get()


    @inlineCallbacks
    def test_chartAxisWholeSteps(self) -> Any:
        """
        The chart's gridlines are labelled with whole, distinct, evenly
        spaced rates (1, 2 or 5 times a power of ten per step) whose top
        holds the highest rate: idle, 4 3 2 1 0 (it once read 1 1 1 0 0);
        after a burst, a scale above the burst's rate.
        """
        server = yield startServer(self)
        browser = yield self.browser()
        client = yield openClient(server, userId=42)
        self.addCleanup(closeClient, client)

        def send(n: int) -> Deferred[Any]:
            return restRequest(server, "POST", "/send-message", json={"type": "text", "text": f"m{n}", "recipients": [42]})

        def axis() -> list[int]:
            return [int(label.replace(",", "")) for label in browser.driver.find_element(
                "css selector", "#chart").get_attribute("data-axis").split()]

        def steps() -> tuple[list[int], list[int], float]:
            browser.window(server.restURL("/dashboard"))
            browser.until(lambda d: d.find_element("css selector", "#chart").get_attribute("data-axis"), "the chart")
            idle = axis()
            for n in range(30):
                inReactor(send, n)
            browser.until(lambda d: axis()[0] > 4, "a scale for the burst")
            # both from one drawing
            labels, highest = browser.driver.execute_script(
                "var c = document.getElementById('chart'); return [c.dataset.axis, c.dataset.highest]")
            return idle, [int(label.replace(",", "")) for label in labels.split()], float(highest)

        idle, busy, highest = yield self.inThread(steps)
        self.assertEqual(idle, [4, 3, 2, 1, 0])
        step = busy[0] // 4
        self.assertEqual(busy, [4 * step, 3 * step, 2 * step, step, 0])
        self.assertIn(int(str(step)[0]), (1, 2, 5))
        self.assertEqual(str(step)[1:].strip("0"), "")
        self.assertGreaterEqual(4 * step, highest)
        # and the smallest such: the step before it would not hold it
        before = step * 2 // 5 if str(step)[0] == "5" else step // 2
        self.assertLess(4 * before, highest)
        for _ in range(30):
            yield client.messages.get()

    @inlineCallbacks
    def test_notificationsCountedOut(self) -> Any:
        """
        The page says that messages/s out counts the notifications (delivery
        status, send-back) too.
        """
        server = yield startServer(self)
        browser = yield self.browser()

        def steps() -> tuple[str, str]:
            browser.window(server.restURL("/dashboard"))
            browser.until(lambda d: browser.text("#connections") == "0", "the figures")
            return browser.text("#rateOutLabel"), browser.text("#outNote")

        label, note = yield self.inThread(steps)
        self.assertEqual(label, "messages/s out (notifications too)")
        self.assertIn("counts the notifications too (delivery status, send-back copies)", note)

    @inlineCallbacks
    def test_refusedNotAskedAgain(self) -> Any:
        """
        When the REST API starts to answer 401 (its auth changed by a
        reload), the page says why and stops asking; when it stops
        answering, the page says it cannot reach it.
        """
        from wsserver.auth import buildAuthenticator
        from wsserver.config import AuthConfig

        server = yield startServer(self)
        browser = yield self.browser()
        restAuth = server.service.restAuth
        noauth = restAuth.current

        def load() -> None:
            browser.window(server.restURL("/dashboard"))
            browser.until(lambda d: browser.text("#updated").startswith("updated"), "the figures")

        yield self.inThread(load)
        refusing = buildAuthenticator(AuthConfig(type="bearer", value="k7Qw9"), None, reactor)
        asked = []

        class Counting:
            isNoAuth = False

            def authenticate(self, credentials: Any) -> Any:
                asked.append(credentials)
                return refusing.authenticate(credentials)

            def identify(self, credentials: Any) -> Any:
                asked.append(credentials)
                return refusing.identify(credentials)

        restAuth.current = Counting()

        def refused() -> str:
            browser.until(lambda d: "HTTP 401" in browser.text("#updated"), "the 401")
            return browser.text("#updated")

        said = yield self.inThread(refused)
        self.assertEqual(said, "the REST API refuses this browser's credentials (HTTP 401): restApi.auth changed, "
                               "or a browser cannot send it (only basic auth can be typed in); reload the page "
                               "to try again")
        # not asked again: over two of its intervals, one request only
        yield deferLater(reactor, 2.5, lambda: None)
        self.assertEqual(len(asked), 1)
        restAuth.current = noauth

        def gone() -> str:
            browser.driver.refresh()
            browser.until(lambda d: browser.text("#updated").startswith("updated"), "the figures again")
            return "ok"

        yield self.inThread(gone)
        yield server.service.rest.stopService()

        def unreachable() -> str:
            browser.until(lambda d: "cannot reach" in browser.text("#updated"), "unreachable")
            return browser.text("#updated")

        self.assertEqual((yield self.inThread(unreachable)),
                         "cannot reach the REST API (has the server stopped?), trying again every second")


class OriginalClientTests(BrowserMixin, TestCase):
    """
    A client written the way the original C++ server's browser example
    works (C{tests/legacy/client.html}) talks to this server.
    """

    timeout = 120

    @inlineCallbacks
    def test_exampleClientsTalk(self) -> Any:
        """
        Two such clients, as users 1 and 2: a text from 1 shows in 2's list,
        and 1 sees the delivery notification.
        """
        server = yield startServer(self, {"chat": {"message": {"enableDeliveryStatus": True}}})
        port = reactor.listenTCP(0, Site(File(os.path.join(HERE, "legacy"))), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        browser = yield self.browser()

        def page(me: int, friend: int) -> str:
            # the page appends ":8085/chat?id=<me>": that lands in "_"
            addr = f"127.0.0.1:{server.wsPort}/chat?id={me}&_="
            return (f"http://127.0.0.1:{port.getHost().port}/client.html"
                    f"?id={me}&friendId={friend}&addr={quote(addr, safe='')}")

        def steps() -> tuple[str, str]:
            one = browser.window(page(1, 2))
            browser.until(lambda d: "Connected" in browser.value("#message-list"), "1 connected")
            two = browser.window(page(2, 1))
            browser.until(lambda d: "Connected" in browser.value("#message-list"), "2 connected")
            browser.use(one)
            browser.type("#message", "hello from the original")
            browser.until(lambda d: "- received" in browser.value("#message-list"), "the notification")
            first = browser.value("#message-list")
            browser.use(two)
            browser.until(lambda d: ">>> hello from the original" in browser.value("#message-list"), "2 got it")
            return first, browser.value("#message-list")

        first, second = yield self.inThread(steps)
        self.assertIn(" >>> Connected - received", first)
        self.assertIn(" >>> hello from the original", second)
