"""
Tests for L{wsserver.reload}: what a SIGHUP applies to a running server, and
what it leaves for a restart.  (The signal itself: tests.test_tap.)
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import os

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.web.server import Site
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from wsserver.auth import Authenticator, buildAuthenticator
from wsserver.config import AuthConfig, ConfigError, MessageConfig, parseConfig
from wsserver.limits import Limits
from wsserver.messages import MessageFactory
from wsserver.reload import ReloadableAuthenticator, reloadables, restartKeys
from wsserver.reloadable import IReloadable, reloadAll
from wsserver.routing import Router
from wsserver.config import withOverrides

from .support import CERT, KEY, JSONSink, closeClient, loopbackConfig, openClient, restRequest, startServer


async def _until(condition, seconds: float = 5.0) -> bool:
    """
    Poll C{condition} every 20 ms until it holds, for at most C{seconds}.
    """
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await deferLater(reactor, 0.02, lambda: None)
    return False


class ReloadTests(TestCase):
    """
    C{WsServer.reload} on a real server on loopback.
    """

    timeout = 20

    def reload(self, server: Any, raw: Any) -> list[str]:
        """
        Reload C{server} with the config C{raw} (on the same loopback
        ports); return the log lines it wrote.
        """
        config = loopbackConfig(raw)
        with capturedLogs() as events:
            server.service.reload(lambda: config, reactor)
        return [formatEvent(e) for e in events]

    @inlineCallbacks
    def test_auth(self):
        """
        A new C{server.auth} applies to new connections; open ones stay.
        """
        server = yield startServer(self)
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        lines = self.reload(server, {"server": {"auth": {"type": "bearer", "value": "s3cret"}}})
        self.assertEqual(lines, ["reload requested", "reload done: server.auth applied"])
        stranger = yield openClient(server, userId=2)
        self.assertEqual((yield stranger.closed), (4050, "Unauthorized"))
        bob = yield openClient(server, userId=3, headers={"Authorization": "Bearer s3cret"})
        self.addCleanup(closeClient, bob)
        bob.send({"type": "text", "text": "hi", "recipients": [1]})
        self.assertEqual((yield alice.messages.get())["text"], "hi")

    @inlineCallbacks
    def test_authToJWT(self):
        """
        A reload to C{jwt} auth requires the token's C{sub} on the
        WebSocket, as at start: another user's token, or one without
        C{sub}, is refused.
        """
        import jwt

        server = yield startServer(self)
        secret = "a-secret-of-at-least-32-bytes-long!!"
        lines = self.reload(server, {"server": {"auth": {"type": "jwt", "secret": secret,
                                                          "algorithms": ["HS256"]}}})
        self.assertEqual(lines[-1], "reload done: server.auth applied")
        token = jwt.encode({"sub": "5", "exp": int(reactor.seconds()) + 600}, secret, algorithm="HS256")
        mallory = yield openClient(server, userId=6, headers={"Authorization": f"Bearer {token}"})
        self.assertEqual((yield mallory.closed), (4050, "Unauthorized"))
        anyone = jwt.encode({"exp": int(reactor.seconds()) + 600}, secret, algorithm="HS256")
        mallory = yield openClient(server, userId=7, headers={"Authorization": f"Bearer {anyone}"})
        self.assertEqual((yield mallory.closed), (4050, "Unauthorized"))
        owner = yield openClient(server, userId=5, headers={"Authorization": f"Bearer {token}"})
        self.addCleanup(closeClient, owner)
        self.assertFalse(owner.closed.called)

    @inlineCallbacks
    def test_eventTargets(self):
        """
        New event targets apply to the next messages: after the reload the
        webhook is the new one, and the old one gets nothing more.
        """
        old, new = JSONSink(), JSONSink()
        ports = []
        for sink in (old, new):
            port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(sink))
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)

        def events(port):
            return {"event": {"enabled": True, "targets": [
                {"type": "postback", "url": f"http://127.0.0.1:{port}/hook"}]},
                "server": {"dataDir": os.path.abspath(self.dataDir)}}

        self.dataDir = self.mktemp()
        server = yield startServer(self, events(ports[0]))
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        alice.send({"type": "text", "text": "before", "recipients": [2]})
        yield _until(lambda: len(old.bodies) == 1)
        lines = self.reload(server, events(ports[1]))
        self.assertEqual(lines[-1], "reload done: event applied")
        alice.send({"type": "text", "text": "after", "recipients": [2]})
        yield _until(lambda: len(new.bodies) == 1)
        self.assertEqual([b["text"] for b in old.bodies], ["before"])
        self.assertEqual([b["text"] for b in new.bodies], ["after"])

    @inlineCallbacks
    def test_restAuthAndMessages(self):
        """
        A new C{restApi.auth} and new message settings apply to what comes
        next: here the REST API asks for a token, and the sender gets its
        own message back (C{enableSendBack}).
        """
        server = yield startServer(self)
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        lines = self.reload(server, {
            "restApi": {"auth": {"type": "header", "name": "X-Key", "value": "k"}},
            "chat": {"message": {"enableSendBack": True}},
        })
        self.assertEqual(lines[-1], "reload done: chat.message, restApi.auth applied")
        response = yield restRequest(server, "GET", "/stats")
        self.assertEqual(response.code, 401)
        yield response.content()
        response = yield restRequest(server, "GET", "/stats", headers={"X-Key": "k"})
        self.assertEqual(response.code, 200)
        yield response.content()
        alice.send({"type": "text", "text": "echo", "recipients": [2]})
        self.assertEqual((yield alice.messages.get())["text"], "echo")

    @inlineCallbacks
    def test_demoPage(self):
        """
        A new C{server.endpoint} is the path the demo page connects to, and
        C{server.demoPage} turns the page off (and on) without a restart.
        """
        import treq

        server = yield startServer(self)
        root = f"http://127.0.0.1:{server.wsPort}/"
        lines = self.reload(server, {"server": {"endpoint": "/ws"}})
        self.assertEqual(lines[-1], "reload done: server.endpoint applied")
        response = yield treq.get(root, persistent=False)
        self.assertIn(b'var ENDPOINT = "/ws";', (yield response.content()))
        lines = self.reload(server, {"server": {"endpoint": "/ws", "demoPage": False}})
        self.assertEqual(lines[-1], "reload done: server.demoPage applied")
        response = yield treq.get(root, persistent=False)
        self.assertEqual((response.code, (yield response.content())), (404, b"Not Found\n"))

    @inlineCallbacks
    def test_limits(self):
        """
        New C{server.limits} apply to new connections and requests; the
        connections open stay.
        """
        server = yield startServer(self)
        alice = yield openClient(server, userId=1)
        self.addCleanup(closeClient, alice)
        lines = self.reload(server, {"server": {"limits": {
            "maxConnectionsPerUser": 1, "maxRecipients": 2, "requestTimeoutSeconds": 5,
        }}})
        self.assertEqual(lines[-1], "reload done: server.limits applied")
        second = yield openClient(server, userId=1)
        self.assertEqual((yield second.closed), (4008, "Too many connections"))
        response = yield restRequest(server, "POST", "/send-message", headers={"Content-Type": ["application/json"]},
                                     json={"type": "t", "recipients": [1, 2, 3]})
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["message"],
                         "Invalid payload. $.recipients[] must contain at most 2 values")
        self.assertEqual(server.service.rest.factory.requestTimeout, 5)
        self.assertEqual(server.service.limits.config.maxConnectionsPerUser, 1)

    @inlineCallbacks
    def test_trustedProxies(self):
        """
        New C{server.trustedProxies} apply to the next handshakes;
        C{server.proxyProtocol} needs a restart.
        """
        server = yield startServer(self)
        lines = self.reload(server, {"server": {"trustedProxies": ["127.0.0.1"], "proxyProtocol": True}})
        self.assertEqual(lines, [
            "reload requested",
            "reload: server.proxyProtocol changed: takes effect at the next restart",
            "reload done: server.trustedProxies applied",
        ])
        self.assertTrue(server.service.limits.proxies.trusts("127.0.0.1"))
        self.assertEqual(server.service.limits.clientAddress("127.0.0.1", [b"203.0.113.7"]), "203.0.113.7")
        self.assertFalse(server.service.config.server.proxyProtocol)

    @inlineCallbacks
    def test_restartOnly(self):
        """
        Keys that need a restart are logged as such and keep their running
        value.
        """
        server = yield startServer(self)
        before = server.service.config
        raw = {"server": {"workers": 2, "timezone": "Europe/Berlin", "dataDir": "elsewhere"},
               "cluster": {"redis": "redis://127.0.0.1:1"}}
        lines = self.reload(server, raw)
        self.assertEqual(lines, [
            "reload requested",
            "reload: server.workers changed: takes effect at the next restart",
            "reload: server.dataDir changed: takes effect at the next restart",
            "reload: server.timezone changed: takes effect at the next restart",
            "reload: cluster changed: takes effect at the next restart",
            "reload done: nothing to apply",
        ])
        after = server.service.config
        self.assertEqual((after.server, after.chat, after.cluster), (before.server, before.chat, before.cluster))

    @inlineCallbacks
    def test_refused(self):
        """
        A file with errors is refused: each problem logged, the running
        config kept.
        """
        server = yield startServer(self)
        before = server.service.config

        def load():
            raise ConfigError(['server.auth.type: unknown auth type "bsaic"', "server.port: 70000 is out of range"])

        with capturedLogs() as events:
            server.service.reload(load, reactor)
        self.assertEqual([formatEvent(e) for e in events], [
            "reload requested",
            'reload refused, running config kept: server.auth.type: unknown auth type "bsaic"',
            "reload refused, running config kept: server.port: 70000 is out of range",
        ])
        self.assertIs(server.service.config, before)

    def test_restartKeys(self):
        """
        L{restartKeys} names the keys that differ and need a restart; a
        REST auth that turns basic is one (its 401 changes header).
        """
        old = parseConfig({}, checkEndpoints=False)
        new = parseConfig({"server": {"port": 9000, "auth": {"type": "bearer", "value": "x"}},
                           "restApi": {"auth": {"type": "basic", "user": "u", "password": "p"}}},
                          checkEndpoints=False)
        self.assertEqual(restartKeys(old, new), ["server.port", "restApi.auth (to or from basic)"])
        self.assertEqual(restartKeys(old, old), [])
        # the event store's write delay is read at start
        delayed = parseConfig({"event": {"writeDelayMillis": 0}}, checkEndpoints=False)
        self.assertEqual(restartKeys(old, delayed), ["event.writeDelayMillis"])

    def test_restartKeysAsWritten(self):
        """
        A listen address that changed is named by the key the user wrote:
        C{port}, C{address} or C{secure} in the original's layout, C{listen}
        where it is given, the option for C{--ws}.
        """
        old = parseConfig({}, checkEndpoints=False)
        secure = {"enabled": True, "crtPath": CERT, "keyPath": KEY}
        for raw, keys in [
            ({"server": {"address": "127.0.0.1"}}, ["server.address"]),
            ({"restApi": {"port": 9001, "address": "::1"}}, ["restApi.port, restApi.address"]),
            ({"server": {"secure": secure}}, ["server.secure"]),
            ({"server": {"listen": "tcp:9000"}}, ["server.listen"]),
        ]:
            self.assertEqual(restartKeys(old, parseConfig(raw, checkEndpoints=False)), keys, raw)
        self.assertEqual(restartKeys(old, withOverrides(old, ws="tcp:9002")), ["--ws"])

class ReloadablePartTests(TestCase):
    """
    The parts a reload asks (L{IReloadable}): each applies what it uses and
    names the keys it applied.
    """

    def config(self, raw: Any) -> Any:
        return parseConfig(raw, checkEndpoints=False)

    @inlineCallbacks
    def test_parts(self):
        """
        Every part of a running server that L{reloadables} names provides
        L{IReloadable}, and none applies anything when nothing changed; the
        REST API's parts are left out when it is disabled.
        """
        server = yield startServer(self)
        parts = reloadables(server.service, reactor)
        self.assertEqual([type(p).__name__ for p in parts], [
            "ChatServerFactory", "Router", "MessageFactory", "RestSite", "Limits", "ReloadableAuthenticator"])
        for part in parts:
            self.assertTrue(verifyObject(IReloadable, part))
            self.assertEqual(part.reloadConfig(server.service.config, server.service.config), [], part)
        server = yield startServer(self, {"restApi": {"enabled": False}})
        self.assertEqual([type(p).__name__ for p in reloadables(server.service, reactor)],
                         ["ChatServerFactory", "Router", "MessageFactory", "Limits"])

    def test_routerAndMessages(self):
        """
        The router takes C{chat.message} and C{maxTrackedUsers}, the message
        factory C{maxRecipients}; other limits are not theirs.
        """
        clock = Clock()
        messages = MessageFactory(clock, ZoneInfo("UTC"), maxRecipients=10)
        router = Router(MessageConfig(), clock, messages, maxTrackedUsers=5)
        old = self.config({})
        self.assertEqual(router.reloadConfig(old, self.config({"server": {"limits": {"burst": 3}}})), [])
        self.assertEqual(messages.reloadConfig(old, self.config({"server": {"limits": {"burst": 3}}})), [])
        new = self.config({"server": {"limits": {"maxTrackedUsers": 7, "maxRecipients": 2}},
                           "chat": {"message": {"enableSendBack": True}}})
        self.assertEqual(router.reloadConfig(old, new), ["chat.message", "server.limits"])
        self.assertEqual(router.maxTrackedUsers, 7)
        self.assertEqual(messages.reloadConfig(old, new), ["server.limits"])
        self.assertEqual(messages.maxRecipients, 2)

    def test_limits(self):
        """
        L{Limits} takes C{server.limits}, keeping its counts.
        """
        old = self.config({"server": {"limits": {"maxConnectionsPerIp": 1}}})
        limits = Limits(old.server.limits, Clock())
        self.assertTrue(limits.addresses.acquire("10.0.0.1"))
        self.assertEqual(limits.reloadConfig(old, old), [])
        new = self.config({"server": {"limits": {"maxConnectionsPerIp": 3}}})
        self.assertEqual(limits.reloadConfig(old, new), ["server.limits"])
        self.assertEqual((limits.config, limits.addresses.limit), (new.server.limits, 3))
        self.assertEqual(limits.addresses.count("10.0.0.1"), 1)

    def test_restAuth(self):
        """
        L{ReloadableAuthenticator} swaps in what its builder makes of a new
        C{restApi.auth}; without a builder it keeps its checks.
        """
        built: list[AuthConfig] = []

        def build(auth: AuthConfig) -> Authenticator:
            built.append(auth)
            return buildAuthenticator(auth)

        first = buildAuthenticator(AuthConfig())
        old, new = self.config({}), self.config({"restApi": {"auth": {"type": "bearer", "value": "k"}}})
        auth = ReloadableAuthenticator(first, build)
        self.assertEqual(auth.reloadConfig(old, old), [])
        self.assertEqual(auth.reloadConfig(old, new), ["restApi.auth"])
        self.assertEqual(built, [new.restApi.auth])
        self.assertFalse(auth.isNoAuth)
        fixed = ReloadableAuthenticator(first)
        self.assertEqual(fixed.reloadConfig(old, new), [])
        self.assertIs(fixed.current, first)

    def test_reloadAll(self):
        """
        L{reloadAll} asks every part in turn and names each key once, in the
        order the parts named them.
        """
        asked = []

        @implementer(IReloadable)
        class Part:
            def __init__(self, keys):
                self.keys = keys

            def reloadConfig(self, old, new):
                asked.append(self)
                return self.keys

        parts = [Part(["server.auth", "chat.message"]), Part([]), Part(["chat.message", "event"])]
        config = self.config({})
        self.assertEqual(reloadAll(parts, config, config), ["server.auth", "chat.message", "event"])
        self.assertEqual(asked, parts)
