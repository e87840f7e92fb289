"""
Tests for L{wsserver.config}: the config file of SPEC section 2.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from wsserver.checks import endpointProblems, seedFileProblems
from wsserver.config import (
    AuthConfig,
    ChatConfig,
    ClusterConfig,
    Config,
    ConfigError,
    EventConfig,
    LimitsConfig,
    MessageConfig,
    RestConfig,
    ServerConfig,
    TargetConfig,
    UndeliveredConfig,
    WatchdogConfig,
    _crossChecks,
    defaultConfig,
    loadConfig,
    parseConfig,
    parseSize,
    startWarnings,
    withOverrides,
)

#: The original's own config file (its bin/config.json layout, "workers": 8).
ORIGINAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "original-config.json")

#: The full example of SPEC section 2, verbatim.
SPEC_EXAMPLE = """
{
  "server": {
    "endpoint": "/chat", "address": "*", "port": 8085,
    "listen": "tcp:8085",
    "workers": 1, "timezone": "UTC", "dataDir": "./wsserver-data",
    "secure": {"enabled": false, "crtPath": "certs/server.crt", "keyPath": "certs/server.key"},
    "watchdog": {"enabled": false, "connectionLifetimeSeconds": 600, "pingIntervalSeconds": 60},
    "auth": {"type": "noauth"}
  },
  "restApi": {
    "enabled": true, "address": "*", "port": 8092, "listen": "tcp:8092",
    "secure": {"enabled": false, "crtPath": "", "keyPath": ""},
    "auth": {"type": "noauth"}
  },
  "chat": {
    "enableUndeliveredQueue": false,
    "undelivered": {"storage": "sqlite", "ttlSeconds": 604800, "maxPerUser": 1000},
    "message": {"maxSize": "10M", "enableDeliveryStatus": false, "enableSendBack": false,
                "ignoredTypesSendBack": [], "enforceSender": true}
  },
  "event": {
    "enabled": false, "enableRetry": true, "retryIntervalSeconds": 10, "retryCount": 3,
    "sendBotMessages": false, "maxParallelWorkers": 16, "ignoreTypes": [],
    "targets": [{"type": "postback", "url": "http://127.0.0.1:9000/hook",
                 "connectionTimeoutSeconds": 10, "auth": {"type": "header", "name": "X-Token", "value": "t"}}]
  },
  "cluster": {"redis": null}
}
"""


def writeSelfSignedPair(directory: str) -> tuple[str, str]:
    """
    Write a throwaway self-signed certificate and its key, both PEM.

    @param directory: created if missing.
    @return: the paths of the certificate and of the key.
    """
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crtPath = os.path.join(directory, "server.crt")
    keyPath = os.path.join(directory, "server.key")
    with open(crtPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return crtPath, keyPath


class ConfigTestMixin:
    """
    Helpers to parse a config and look at its problems.
    """

    def problemsOf(self, raw: Any, checkEndpoints: bool = False) -> list[str]:
        """
        Parse C{raw}, which must fail, and return its problems.
        """
        e = self.assertRaises(ConfigError, parseConfig, raw, checkEndpoints)  # type: ignore[attr-defined]
        return e.problems

    def writeFile(self, content: bytes | str) -> str:
        """
        Write C{content} to a new temporary file and return its path.
        """
        path = self.mktemp()  # type: ignore[attr-defined]
        with open(path, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
        return path


class DefaultsTests(ConfigTestMixin, SynchronousTestCase):
    """
    The built-in defaults (SPEC section 1), with and without an empty file.
    """

    def assertSpecDefaults(self, config: Config) -> None:
        """
        C{config} has the defaults that SPEC section 1 lists.
        """
        self.assertEqual(config.server.listen, "tcp:8085:backlog=1024")
        self.assertEqual(config.server.endpoint, "/chat")
        self.assertEqual(config.restApi.enabled, True)
        self.assertEqual(config.restApi.listen, "tcp:8092:interface=127.0.0.1:backlog=1024")
        self.assertEqual(config.server.auth, AuthConfig(type="noauth"))
        self.assertEqual(config.restApi.auth, AuthConfig(type="noauth"))
        self.assertEqual(config.server.dataDir, "./wsserver-data")
        self.assertEqual(config.server.workers, 1)
        self.assertEqual(config.server.timezone, "UTC")
        self.assertEqual(config.server.tz, ZoneInfo("UTC"))
        self.assertEqual(config.server.watchdog, WatchdogConfig(False, 600, 60))
        self.assertEqual(config.server.allowedOrigins, ())
        self.assertEqual(config.server.demoPage, True)
        self.assertEqual(config.chat.enableUndeliveredQueue, False)
        self.assertEqual(
            config.chat.message,
            MessageConfig(
                maxSize=10 * 1024 * 1024,
                enableDeliveryStatus=False,
                enableSendBack=False,
                ignoredTypesSendBack=frozenset(),
                enforceSender=True,
            ),
        )
        self.assertEqual(config.chat.undelivered.ttlSeconds, 604800)
        self.assertEqual(config.chat.undelivered.maxPerUser, 1000)
        self.assertEqual(config.event, EventConfig())
        self.assertEqual(config.event.enabled, False)
        self.assertEqual(config.cluster, ClusterConfig(redis=None))
        self.assertEqual(config.warnings, ())

    def test_defaultConfig(self) -> None:
        """
        L{defaultConfig} has the built-in defaults of SPEC section 1.
        """
        self.assertSpecDefaults(defaultConfig())

    def test_emptyFile(self) -> None:
        """
        C{parseConfig({})} (a file that is just C{{}}) gives the same
        defaults, and its endpoints check out.
        """
        config = parseConfig({})
        self.assertSpecDefaults(config)
        self.assertEqual(config.chat.undelivered.storage, "sqlite")

    def test_emptySections(self) -> None:
        """
        Empty or null sections are the same as absent ones.
        """
        raw = {"server": {}, "restApi": None, "chat": {"message": {}}, "event": {}, "cluster": {}}
        self.assertEqual(parseConfig(raw), parseConfig({}))

    def test_topLevelNotObject(self) -> None:
        """
        A config that is not a JSON object is refused.
        """
        self.assertEqual(self.problemsOf([]), ["(top level): must be an object, not array"])
        self.assertEqual(self.problemsOf("x"), ["(top level): must be an object, not string"])


class SpecExampleTests(ConfigTestMixin, SynchronousTestCase):
    """
    The full example of SPEC section 2.
    """

    def test_loads(self) -> None:
        """
        The example file loads into the values it gives, with no warning.
        """
        config = loadConfig(self.writeFile(SPEC_EXAMPLE), checkEndpoints=True)
        self.assertEqual(
            config.server,
            ServerConfig(
                endpoint="/chat",
                listen="tcp:8085",
                workers=1,
                timezone="UTC",
                dataDir="./wsserver-data",
                watchdog=WatchdogConfig(enabled=False, connectionLifetimeSeconds=600, pingIntervalSeconds=60),
                auth=AuthConfig(type="noauth"),
                allowedOrigins=(),
            ),
        )
        self.assertEqual(config.restApi, RestConfig(enabled=True, listen="tcp:8092", auth=AuthConfig()))
        self.assertEqual(
            config.chat,
            ChatConfig(
                enableUndeliveredQueue=False,
                undelivered=UndeliveredConfig(storage="sqlite", ttlSeconds=604800, maxPerUser=1000),
                message=MessageConfig(maxSize=10 * 1024 * 1024, enforceSender=True),
            ),
        )
        self.assertEqual(
            config.event,
            EventConfig(
                enabled=False,
                enableRetry=True,
                retryIntervalSeconds=10,
                retryCount=3,
                sendBotMessages=False,
                maxParallelWorkers=16,
                ignoreTypes=frozenset(),
                targets=(
                    TargetConfig(
                        type="postback",
                        url="http://127.0.0.1:9000/hook",
                        method="POST",
                        connectionTimeoutSeconds=10,
                        auth=AuthConfig(type="header", name="X-Token", value="t"),
                    ),
                ),
            ),
        )
        self.assertEqual(config.cluster, ClusterConfig(redis=None))
        self.assertEqual(config.warnings, ())

    def test_eventEnabled(self) -> None:
        """
        The example with C{event.enabled} true is accepted; without targets
        it is refused.
        """
        raw = json.loads(SPEC_EXAMPLE)
        raw["event"]["enabled"] = True
        self.assertTrue(parseConfig(raw, checkEndpoints=False).event.enabled)
        raw["event"]["targets"] = []
        self.assertEqual(
            self.problemsOf(raw),
            ["event.targets: at least one target is needed when event.enabled is true"],
        )

    def test_eventMillis(self) -> None:
        """
        C{event.writeDelayMillis} (100 by default; 0 writes at once) and
        C{event.batchWaitMillis} (10; 0: no wait) are read; a negative one,
        one over the top (10,000 and 1,000) or not an integer is refused
        with the key's name.
        """
        for key, default, top in [("writeDelayMillis", 100, 10000), ("batchWaitMillis", 10, 1000)]:
            self.assertEqual(getattr(parseConfig({}, checkEndpoints=False).event, key), default)
            self.assertEqual(getattr(parseConfig({"event": {key: 0}}, checkEndpoints=False).event, key), 0)
            for value, problem in [(-1, f"-1 is out of range (0 to {top})"),
                                   (top + 1, f"{top + 1} is out of range (0 to {top})"),
                                   (0.5, "must be an integer, not number 0.5")]:
                self.assertEqual(self.problemsOf({"event": {key: value}}), [f"event.{key}: {problem}"])

    def test_clusterAccepted(self) -> None:
        """
        The example with a C{cluster.redis} URL is accepted, with the
        heartbeat defaults; with the queue on, the queue must be in Redis.
        """
        raw = json.loads(SPEC_EXAMPLE)
        raw["cluster"]["redis"] = "redis://127.0.0.1:6379/0"
        cluster = parseConfig(raw, checkEndpoints=False).cluster
        self.assertEqual(cluster, ClusterConfig(redis="redis://127.0.0.1:6379/0", heartbeatSeconds=10,
                                                nodeTimeoutSeconds=30))
        raw["chat"]["enableUndeliveredQueue"] = True
        self.assertEqual(
            self.problemsOf(raw),
            ['chat.undelivered.storage: with cluster.redis the queue is shared by the nodes: use "redis"'],
        )

    def test_clusterCommandTimeout(self) -> None:
        """
        C{cluster.commandTimeoutSeconds} is read (10 by default); below 0.1
        or not a number, it is refused with the key's name.
        """
        raw = json.loads(SPEC_EXAMPLE)
        raw["cluster"]["redis"] = "redis://127.0.0.1:6379/0"
        self.assertEqual(parseConfig(raw, checkEndpoints=False).cluster.commandTimeoutSeconds, 10)
        raw["cluster"]["commandTimeoutSeconds"] = 0.5
        self.assertEqual(parseConfig(raw, checkEndpoints=False).cluster.commandTimeoutSeconds, 0.5)
        raw["cluster"]["commandTimeoutSeconds"] = 0
        self.assertEqual(self.problemsOf(raw), ["cluster.commandTimeoutSeconds: 0 must be at least 0.1"])
        raw["cluster"]["commandTimeoutSeconds"] = "5"
        self.assertEqual(self.problemsOf(raw), ['cluster.commandTimeoutSeconds: must be a number, not string "5"'])

    def test_crossChecks(self) -> None:
        """
        L{_crossChecks} refuses the features this version lacks, events
        without targets, and more than one worker without a cluster; it has
        nothing against the defaults.
        """
        self.assertEqual(_crossChecks(defaultConfig()), [])
        config = Config(
            chat=ChatConfig(enableUndeliveredQueue=True, undelivered=UndeliveredConfig(storage="sqlite")),
            event=EventConfig(enabled=True),
        )
        self.assertEqual(
            _crossChecks(config),
            ["event.targets: at least one target is needed when event.enabled is true"],
        )
        redis = Config(chat=ChatConfig(enableUndeliveredQueue=True, undelivered=UndeliveredConfig(storage="redis")))
        self.assertEqual(
            _crossChecks(redis),
            ['chat.undelivered.storage: "redis" needs cluster.redis; use "sqlite" or "memory"'],
        )
        slow = Config(cluster=ClusterConfig(redis="redis://h", heartbeatSeconds=30, nodeTimeoutSeconds=30))
        self.assertEqual(
            _crossChecks(slow),
            ["cluster.nodeTimeoutSeconds: must be longer than cluster.heartbeatSeconds"],
        )
        clustered = Config(server=ServerConfig(workers=2), cluster=ClusterConfig(redis="redis://h"))
        self.assertEqual(_crossChecks(clustered), [])
        secure = Config(server=ServerConfig(workers=2, listen="ssl:8443:privateKey=k:certKey=c"),
                        cluster=ClusterConfig(redis="redis://h"))
        self.assertEqual(
            _crossChecks(secure),
            ['server.listen: workers share tcp: sockets only (put TLS in front of them, or use server.workers 1), '
             'not "ssl:8443:privateKey=k:certKey=c"'],
        )

    def test_usesTypeSource(self) -> None:
        """
        C{usesType} sees into a remote check's C{source}: the cookie setup
        for browsers counts as cookie auth (for the allowedOrigins warning).
        """
        auth = parseConfig({"server": {"auth": {
            "type": "remote", "url": "http://127.0.0.1:9/check", "source": {"type": "cookie", "name": "sid"}}}},
            checkEndpoints=False).server.auth
        self.assertTrue(auth.usesType("cookie"))
        self.assertFalse(auth.usesType("basic"))

    def test_workersWithoutCluster(self) -> None:
        """
        C{workers: 8} without C{cluster.redis} (the original's files: its
        workers were threads) is a warning, not an error, and runs one
        process.
        """
        config = parseConfig({"server": {"workers": 8}})
        self.assertEqual(config.server.workers, 1)
        self.assertEqual(config.warnings, (
            "server.workers: 8 worker processes need cluster.redis: running one process; "
            "set cluster.redis to run 8",
        ))
        clustered = parseConfig({"server": {"workers": 8}, "cluster": {"redis": "redis://127.0.0.1"}})
        self.assertEqual((clustered.server.workers, clustered.warnings), (8, ()))

    def test_clusterNotURL(self) -> None:
        """
        A C{cluster.redis} that is not a redis URL names the key.
        """
        self.assertEqual(
            self.problemsOf({"cluster": {"redis": "localhost:6379"}}),
            ['cluster.redis: must be a redis:// or unix:// URL, not "localhost:6379"'],
        )


class ListenTests(ConfigTestMixin, SynchronousTestCase):
    """
    The seed's C{address}/C{port}/C{secure} become an endpoint string;
    C{listen} wins.
    """

    def test_tcpPort(self) -> None:
        """
        A port alone listens on all interfaces.
        """
        config = parseConfig({"server": {"port": 9000}, "restApi": {"port": 9001}})
        self.assertEqual(config.server.listen, "tcp:9000:backlog=1024")
        self.assertEqual(config.restApi.listen, "tcp:9001:interface=127.0.0.1:backlog=1024")

    def test_allInterfaces(self) -> None:
        """
        C{*}, C{0.0.0.0} and an empty address mean all interfaces.
        """
        for address in ("*", "0.0.0.0", ""):
            config = parseConfig({"restApi": {"address": address, "port": 8092}})
            self.assertEqual(config.restApi.listen, "tcp:8092:backlog=1024", address)

    def test_interface(self) -> None:
        """
        Another address becomes C{interface=}, escaped for an IPv6 address.
        """
        config = parseConfig({"server": {"address": "10.1.2.3", "port": 8085}, "restApi": {"address": "::1"}})
        self.assertEqual(config.server.listen, "tcp:8085:interface=10.1.2.3:backlog=1024")
        self.assertEqual(config.restApi.listen, "tcp:8092:interface=\\:\\:1:backlog=1024")

    def test_ssl(self) -> None:
        """
        C{secure.enabled} with existing files gives an C{ssl:} endpoint that
        Twisted accepts.
        """
        crtPath, keyPath = writeSelfSignedPair(self.mktemp())
        self.assertNoSpecials(crtPath)
        raw = {
            "server": {
                "address": "127.0.0.1",
                "port": 8443,
                "secure": {"enabled": True, "crtPath": crtPath, "keyPath": keyPath},
            }
        }
        config = parseConfig(raw, checkEndpoints=True)
        self.assertEqual(
            config.server.listen,
            f"ssl:8443:privateKey={keyPath}:certKey={crtPath}:interface=127.0.0.1:backlog=1024",
        )

    def assertNoSpecials(self, path: str) -> None:
        """
        C{path} has no character that an endpoint string escapes, so that
        it can be written into the expected value as it is.
        """
        for c in ":=\\":
            self.assertNotIn(c, path)

    def test_sslEscaped(self) -> None:
        """
        Colons, equal signs and backslashes in the certificate paths are
        escaped, and Twisted reads the files back through the escapes.
        """
        base = self.mktemp()
        self.assertNoSpecials(base)
        crtPath, keyPath = writeSelfSignedPair(os.path.join(base, "a:b=c\\d"))
        raw = {"restApi": {"port": 8443, "secure": {"enabled": True, "crtPath": crtPath, "keyPath": keyPath}}}
        config = parseConfig(raw, checkEndpoints=True)
        escaped = base + "/a\\:b\\=c\\\\d"
        self.assertEqual(
            config.restApi.listen,
            f"ssl:8443:privateKey={escaped}/server.key:certKey={escaped}/server.crt"
            ":interface=127.0.0.1:backlog=1024",
        )

    def test_listenWins(self) -> None:
        """
        C{listen} wins over C{address}/C{port}/C{secure}, even when the
        seed's certificate files are missing.
        """
        raw = {
            "server": {
                "address": "10.0.0.1",
                "port": 1,
                "listen": "tcp:7000",
                "secure": {"enabled": True, "crtPath": "missing.crt", "keyPath": "missing.key"},
            },
            "restApi": {"address": "10.0.0.1", "port": 2, "listen": "tcp:7001:interface=127.0.0.1"},
        }
        config = parseConfig(raw, checkEndpoints=True)
        self.assertEqual(config.server.listen, "tcp:7000")
        self.assertEqual(config.restApi.listen, "tcp:7001:interface=127.0.0.1")

    def test_missingCertificate(self) -> None:
        """
        C{secure.enabled} with a certificate file that does not exist is an
        error naming C{server.secure.crtPath}.
        """
        crtPath, keyPath = writeSelfSignedPair(self.mktemp())
        os.remove(crtPath)
        raw = {"server": {"port": 8443, "secure": {"enabled": True, "crtPath": crtPath, "keyPath": keyPath}}}
        self.assertEqual(self.problemsOf(raw), [f'server.secure.crtPath: file not found "{crtPath}"'])
        # once, named by the seed's key, when the endpoints are checked too
        self.assertEqual(self.problemsOf(raw, checkEndpoints=True), [f'server.secure.crtPath: file not found "{crtPath}"'])

    def test_certificatePathsRequired(self) -> None:
        """
        C{secure.enabled} without paths names both keys.
        """
        self.assertEqual(
            self.problemsOf({"restApi": {"secure": {"enabled": True}}}),
            [
                "restApi.secure.crtPath: required when secure.enabled is true",
                "restApi.secure.keyPath: required when secure.enabled is true",
            ],
        )

    def test_invalidListen(self) -> None:
        """
        A C{listen} that Twisted cannot parse is an error naming
        C{server.listen} (or C{restApi.listen}) when endpoints are checked.
        """
        raw = {"server": {"listen": "bogus:8085"}, "restApi": {"listen": "tcp:notaport"}}
        self.assertEqual(parseConfig(raw, checkEndpoints=False).server.listen, "bogus:8085")
        problems = self.problemsOf(raw, checkEndpoints=True)
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(problems[0].startswith('server.listen: invalid endpoint "bogus:8085": '), problems[0])
        self.assertTrue(problems[1].startswith('restApi.listen: invalid endpoint "tcp:notaport": '), problems[1])

    def test_disabledRestNotChecked(self) -> None:
        """
        The REST endpoint of a disabled REST API is not checked.
        """
        config = parseConfig({"restApi": {"enabled": False, "listen": "bogus:1"}}, checkEndpoints=True)
        self.assertEqual(config.restApi.enabled, False)

    def test_portOutOfRange(self) -> None:
        """
        A port over 65535 or negative is an error naming the key.
        """
        self.assertEqual(
            self.problemsOf({"server": {"port": 70000}, "restApi": {"port": -1}}),
            [
                "server.port: 70000 is out of range (0 to 65535)",
                "restApi.port: -1 is out of range (0 to 65535)",
            ],
        )


class TypeTests(ConfigTestMixin, SynchronousTestCase):
    """
    A value of the wrong type is an error naming its key.
    """

    def test_integer(self) -> None:
        """
        A string or a boolean where an integer belongs.
        """
        self.assertEqual(
            self.problemsOf({"server": {"port": "8085", "workers": True}}),
            [
                'server.port: must be an integer, not string "8085"',
                "server.workers: must be an integer, not boolean true",
            ],
        )

    def test_boolean(self) -> None:
        """
        A string or a number where a boolean belongs.
        """
        self.assertEqual(
            self.problemsOf({"chat": {"message": {"enableSendBack": "yes"}}, "restApi": {"enabled": 1}}),
            [
                'restApi.enabled: must be true or false, not number 1',
                'chat.message.enableSendBack: must be true or false, not string "yes"',
            ],
        )

    def test_demoPage(self) -> None:
        """
        C{server.demoPage} is a boolean: false turns the demo page off, a
        string is an error naming the key.
        """
        self.assertEqual(parseConfig({"server": {"demoPage": False}}, checkEndpoints=False).server.demoPage, False)
        self.assertEqual(
            self.problemsOf({"server": {"demoPage": "no"}}),
            ['server.demoPage: must be true or false, not string "no"'],
        )

    def test_string(self) -> None:
        """
        A number where a string belongs.
        """
        self.assertEqual(
            self.problemsOf({"server": {"endpoint": 5}}),
            ["server.endpoint: must be a string, not number 5"],
        )

    def test_number(self) -> None:
        """
        A string, or a negative number, where a number of seconds belongs.
        """
        self.assertEqual(
            self.problemsOf({"server": {"watchdog": {"pingIntervalSeconds": "60", "connectionLifetimeSeconds": -1}}}),
            [
                "server.watchdog.connectionLifetimeSeconds: -1 must be at least 0",
                'server.watchdog.pingIntervalSeconds: must be a number, not string "60"',
            ],
        )

    def test_section(self) -> None:
        """
        A section that is not an object.
        """
        self.assertEqual(
            self.problemsOf({"server": [], "chat": {"message": 3}}),
            ["server: must be an object, not array []", "chat.message: must be an object, not number 3"],
        )

    def test_strings(self) -> None:
        """
        A list that holds something else than strings.
        """
        self.assertEqual(
            self.problemsOf({"server": {"allowedOrigins": ["https://a.example", 1]}}),
            ['server.allowedOrigins: must be an array of strings, not array ["https://a.example", 1]'],
        )

    def test_endpointPath(self) -> None:
        """
        The WebSocket path must start with C{/}.
        """
        self.assertEqual(
            self.problemsOf({"server": {"endpoint": "chat"}}),
            ['server.endpoint: must be a path starting with "/", not "chat"'],
        )

    def test_values(self) -> None:
        """
        Values of the right types are kept.
        """
        config = parseConfig(
            {
                "server": {
                    "endpoint": "/ws",
                    "dataDir": "/var/lib/wsserver",
                    "allowedOrigins": ["https://app.example.com"],
                    "watchdog": {"enabled": True, "connectionLifetimeSeconds": 30, "pingIntervalSeconds": 2.5},
                },
                "chat": {"message": {"enableSendBack": True, "ignoredTypesSendBack": ["typing", "seen"]}},
            }
        )
        self.assertEqual(config.server.endpoint, "/ws")
        self.assertEqual(config.server.dataDir, "/var/lib/wsserver")
        self.assertEqual(config.server.allowedOrigins, ("https://app.example.com",))
        self.assertEqual(config.server.watchdog, WatchdogConfig(True, 30, 2.5))
        self.assertEqual(config.chat.message.enableSendBack, True)
        self.assertEqual(config.chat.message.ignoredTypesSendBack, frozenset({"typing", "seen"}))


class AuthTests(ConfigTestMixin, SynchronousTestCase):
    """
    Auth objects (SPEC section 5); nothing falls back to "no auth".
    """

    def test_unknownType(self) -> None:
        """
        An unknown auth type is an error naming the key and the type.
        """
        problems = self.problemsOf({"server": {"auth": {"type": "bsaic", "user": "u", "password": "p"}}})
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith('server.auth.type: unknown auth type "bsaic"'), problems[0])
        self.assertEqual(
            problems[0],
            'server.auth.type: unknown auth type "bsaic" '
            "(use one of: noauth, basic, header, bearer, cookie, oneOf, allOf, remote, jwt)",
        )

    def test_typeRequired(self) -> None:
        """
        An auth object without C{type} is an error, not "no auth".
        """
        self.assertEqual(
            self.problemsOf({"restApi": {"auth": {"user": "u"}}}),
            ["restApi.auth.type: required"],
        )

    def test_notObject(self) -> None:
        """
        An auth that is not an object is an error.
        """
        self.assertEqual(
            self.problemsOf({"server": {"auth": "basic"}}),
            ['server.auth: must be an object, not string "basic"'],
        )

    def test_nestedUnknownType(self) -> None:
        """
        A problem inside C{oneOf} names the item by its index.
        """
        raw = {"server": {"auth": {"type": "oneOf", "types": [{"type": "noauth"}, {"type": "bsaic"}]}}}
        problems = self.problemsOf(raw)
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith('server.auth.types[1].type: unknown auth type "bsaic"'), problems[0])

    def test_nestedNull(self) -> None:
        """
        A null inside C{oneOf} is an error, not a "noauth" that lets
        everyone in.
        """
        raw = {"server": {"auth": {"type": "oneOf", "types": [{"type": "bearer", "value": "t"}, None]}}}
        self.assertEqual(self.problemsOf(raw), ["server.auth.types[1]: must be an auth object, not null"])

    def test_nestedRequired(self) -> None:
        """
        A missing field deep inside C{allOf} names its full path.
        """
        raw = {"server": {"auth": {"type": "allOf", "types": [{"type": "oneOf", "types": [{"type": "header"}]}]}}}
        self.assertEqual(
            self.problemsOf(raw),
            [
                'server.auth.types[0].types[0].name: required for auth type "header"',
                'server.auth.types[0].types[0].value: required for auth type "header"',
            ],
        )

    def test_typesRequired(self) -> None:
        """
        C{oneOf} / C{allOf} need at least one auth object.
        """
        self.assertEqual(
            self.problemsOf({"server": {"auth": {"type": "oneOf"}}, "restApi": {"auth": {"type": "allOf", "types": []}}}),
            [
                'server.auth.types: required for auth type "oneOf"',
                "restApi.auth.types: must hold at least one auth object",
            ],
        )

    def test_requiredFields(self) -> None:
        """
        Each auth type names the fields it misses.
        """
        cases = [
            ({"type": "basic"}, ['x.auth.user: required for auth type "basic"',
                                 'x.auth.password: required for auth type "basic"']),
            ({"type": "basic", "user": "u"}, ['x.auth.password: required for auth type "basic"']),
            ({"type": "header", "value": "v"}, ['x.auth.name: required for auth type "header"']),
            ({"type": "cookie", "name": "session"}, ['x.auth.value: required for auth type "cookie"']),
            ({"type": "bearer"}, ['x.auth.value: required for auth type "bearer"']),
            ({"type": "header", "name": "", "value": "v"}, ["x.auth.name: must not be empty"]),
            ({"type": "basic", "user": "a:b", "password": "p"},
             ['x.auth.user: must not contain ":" (HTTP basic auth splits on it)']),
        ]
        for auth, expected in cases:
            problems = self.problemsOf({"server": {"auth": auth}})
            self.assertEqual(problems, [p.replace("x.", "server.", 1) for p in expected], auth)

    def test_remote(self) -> None:
        """
        A remote check needs an http(s) URL and a source.
        """
        self.assertEqual(
            self.problemsOf({"server": {"auth": {"type": "remote", "url": "ftp://x"}}}),
            [
                'server.auth.url: must be an http:// or https:// URL, not "ftp://x"',
                'server.auth.source: required for auth type "remote": an auth object saying where the '
                'credential is, such as {"type": "cookie", "name": "session"}',
            ],
        )

    def test_parsed(self) -> None:
        """
        Valid auth objects parse into L{AuthConfig}s, nested ones too.
        """
        raw = {
            "server": {
                "auth": {
                    "type": "oneOf",
                    "types": [
                        {"type": "basic", "user": "u", "password": "p"},
                        {"type": "cookie", "name": "session", "value": "s"},
                        {
                            "type": "remote",
                            "url": "https://auth.example/check",
                            "method": "get",
                            "headers": [{"X-Key": "k"}],
                            "data": {"token": "{0}"},
                            "source": {"type": "bearer", "value": ""},
                        },
                    ],
                }
            },
            "restApi": {"auth": {"type": "bearer", "value": "s3-Kq9v"}},
        }
        config = parseConfig(raw)
        self.assertEqual(
            config.server.auth,
            AuthConfig(
                type="oneOf",
                types=(
                    AuthConfig(type="basic", user="u", password="p"),
                    AuthConfig(type="cookie", name="session", value="s"),
                    AuthConfig(
                        type="remote",
                        url="https://auth.example/check",
                        method="GET",
                        headers=(("X-Key", "k"),),
                        data={"token": "{0}"},
                        source=AuthConfig(type="bearer", value=""),
                    ),
                ),
            ),
        )
        self.assertEqual(config.restApi.auth, AuthConfig(type="bearer", value="s3-Kq9v"))
        self.assertTrue(config.server.auth.usesType("cookie"))
        self.assertFalse(config.server.auth.usesType("header"))
        self.assertEqual(config.warnings, ())

    def test_targetCredential(self) -> None:
        """
        An event target's auth is a credential: combinations are refused.
        """
        raw = {"event": {"targets": [{"type": "postback", "url": "http://h/", "auth": {"type": "oneOf"}}]}}
        self.assertEqual(
            self.problemsOf(raw),
            ['event.targets[0].auth.type: unknown auth type "oneOf" (use one of: noauth, basic, header, bearer, cookie)'],
        )


class SizeTests(ConfigTestMixin, SynchronousTestCase):
    """
    L{parseSize} and C{chat.message.maxSize}.
    """

    def test_parseSize(self) -> None:
        """
        Bytes, C{K} and C{M} (powers of 1024, either case).
        """
        self.assertEqual(parseSize(1024), 1024)
        self.assertEqual(parseSize(0), 0)
        self.assertEqual(parseSize("2048"), 2048)
        self.assertEqual(parseSize("512K"), 512 * 1024)
        self.assertEqual(parseSize("512k"), 512 * 1024)
        self.assertEqual(parseSize("10M"), 10 * 1024 * 1024)

    def test_parseSizeBad(self) -> None:
        """
        Anything else raises L{ValueError} saying what is accepted.
        """
        e = self.assertRaises(ValueError, parseSize, "10X")
        self.assertEqual(str(e), 'unparsable size "10X": use bytes, or a number with K or M ("512K", "10M")')
        for bad in ("", "M", "1.5M", "10G", 1.5, True, None, [1]):
            self.assertRaises(ValueError, parseSize, bad)
        e = self.assertRaises(ValueError, parseSize, -1)
        self.assertEqual(str(e), "size must not be negative: -1")

    def test_maxSize(self) -> None:
        """
        C{maxSize} in a config is parsed.
        """
        for value, expected in ((1024, 1024), ("512K", 524288), ("10M", 10485760)):
            config = parseConfig({"chat": {"message": {"maxSize": value}}})
            self.assertEqual(config.chat.message.maxSize, expected, value)

    def test_maxSizeBad(self) -> None:
        """
        An unparsable C{maxSize} is an error naming C{chat.message.maxSize}.
        """
        self.assertEqual(
            self.problemsOf({"chat": {"message": {"maxSize": "10X"}}}),
            ['chat.message.maxSize: unparsable size "10X": use bytes, or a number with K or M ("512K", "10M")'],
        )


class TimezoneTests(ConfigTestMixin, SynchronousTestCase):
    """
    C{server.timezone}.
    """

    def test_known(self) -> None:
        """
        An IANA name is kept and gives its zone.
        """
        config = parseConfig({"server": {"timezone": "Europe/Berlin"}})
        self.assertEqual(config.server.timezone, "Europe/Berlin")
        self.assertEqual(config.server.tz, ZoneInfo("Europe/Berlin"))

    def test_unknown(self) -> None:
        """
        An unknown name, a path or a directory of zones is an error naming
        the key.
        """
        for name in ("Mars/Olympus", "../etc/passwd", "", "America"):
            self.assertEqual(
                self.problemsOf({"server": {"timezone": name}}),
                [f'server.timezone: unknown time zone {json.dumps(name)} (use an IANA name such as Europe/Berlin)'],
                name,
            )


class QueueTests(ConfigTestMixin, SynchronousTestCase):
    """
    C{chat.enableUndeliveredQueue}, in its documented place and the place
    the original's code read.
    """

    def test_documentedPlace(self) -> None:
        """
        C{chat.enableUndeliveredQueue} turns the queue on.
        """
        raw = {"chat": {"enableUndeliveredQueue": True, "undelivered": {"storage": "memory"}}}
        config = parseConfig(raw)
        self.assertEqual(config.chat.enableUndeliveredQueue, True)
        self.assertEqual(config.chat.undelivered.storage, "memory")
        self.assertEqual(config.warnings, ())

    def test_oldPlace(self) -> None:
        """
        C{chat.message.enableUndeliveredQueue} is accepted too, without a
        warning.
        """
        raw = {"chat": {"message": {"enableUndeliveredQueue": True}, "undelivered": {"storage": "memory"}}}
        config = parseConfig(raw)
        self.assertEqual(config.chat.enableUndeliveredQueue, True)
        self.assertEqual(config.warnings, ())

    def test_documentedPlaceWins(self) -> None:
        """
        When both places are given, the documented one wins.
        """
        raw = {"chat": {"enableUndeliveredQueue": False, "message": {"enableUndeliveredQueue": True}}}
        self.assertEqual(parseConfig(raw).chat.enableUndeliveredQueue, False)

    def test_unknownStorage(self) -> None:
        """
        An unknown storage is an error naming the key.
        """
        self.assertEqual(
            self.problemsOf({"chat": {"undelivered": {"storage": "disk"}}}),
            ['chat.undelivered.storage: unknown storage "disk" (use one of: memory, sqlite, redis)'],
        )

    def test_pendingWrites(self) -> None:
        """
        C{maxPendingWrites} (a count) and C{maxPendingBytes} (a size, as
        C{maxSize}) bound what waits to be written; 0 turns each off.
        """
        undelivered = parseConfig({}).chat.undelivered
        self.assertEqual((undelivered.maxPendingWrites, undelivered.maxPendingBytes), (10000, 16 << 20))
        undelivered = parseConfig(
            {"chat": {"undelivered": {"maxPendingWrites": 0, "maxPendingBytes": "512K"}}}
        ).chat.undelivered
        self.assertEqual((undelivered.maxPendingWrites, undelivered.maxPendingBytes), (0, 512 << 10))

    def test_pendingMillis(self) -> None:
        """
        C{maxPendingMillis} bounds the age of what waits to be written
        (50 ms); 0 turns it off; a negative one is an error naming the key.
        """
        self.assertEqual(parseConfig({}).chat.undelivered.maxPendingMillis, 50)
        undelivered = parseConfig({"chat": {"undelivered": {"maxPendingMillis": 0}}}).chat.undelivered
        self.assertEqual(undelivered.maxPendingMillis, 0)
        self.assertEqual(
            self.problemsOf({"chat": {"undelivered": {"maxPendingMillis": -1}}}),
            ["chat.undelivered.maxPendingMillis: -1 must be at least 0"],
        )

    def test_pendingWritesErrors(self) -> None:
        """
        A negative count or an unparsable size is an error naming the key.
        """
        self.assertEqual(
            self.problemsOf({"chat": {"undelivered": {"maxPendingWrites": -1, "maxPendingBytes": "1G"}}}),
            [
                'chat.undelivered.maxPendingBytes: unparsable size "1G": use bytes, or a number with K or M'
                ' ("512K", "10M")',
                "chat.undelivered.maxPendingWrites: -1 is out of range (0 to any)",
            ],
        )

    def test_userIds(self) -> None:
        """
        C{chat.userIds} is C{"any"} by default, or C{"numeric"}; another
        value is an error naming the key.
        """
        self.assertEqual(parseConfig({}).chat.userIds, "any")
        self.assertEqual(parseConfig({"chat": {"userIds": "numeric"}}).chat.userIds, "numeric")
        self.assertEqual(
            self.problemsOf({"chat": {"userIds": "uuid"}}),
            ['chat.userIds: unknown rule "uuid" (use one of: any, numeric)'],
        )
        self.assertEqual(
            self.problemsOf({"chat": {"userIds": 1}}),
            ["chat.userIds: must be a string, not number 1"],
        )


class WarningTests(ConfigTestMixin, SynchronousTestCase):
    """
    Unknown keys are warnings, not errors.
    """

    def test_unknownKeys(self) -> None:
        """
        Every unknown key, at any depth, gives one warning naming it.
        """
        raw = {
            "server": {"foo": 1, "secure": {"bar": 2}, "auth": {"type": "noauth", "baz": 3}},
            "chat": {"message": {"maxsize": "1M"}},
            "extra": {},
        }
        config = parseConfig(raw)
        self.assertEqual(
            config.warnings,
            (
                "server.secure.bar: unknown key, ignored",
                "server.auth.baz: unknown key, ignored",
                "server.foo: unknown key, ignored",
                "chat.message.maxsize: unknown key, ignored",
                "extra: unknown key, ignored",
            ),
        )
        self.assertEqual(config.chat.message.maxSize, 10 * 1024 * 1024)


class ProblemsTests(ConfigTestMixin, SynchronousTestCase):
    """
    All problems are reported at once.
    """

    def test_several(self) -> None:
        """
        L{ConfigError.problems} lists every problem, and its message has one
        line per problem.
        """
        raw = {
            "server": {"port": "x", "timezone": "Mars/Olympus", "auth": {"type": "bsaic"}},
            "restApi": {"port": 99999},
            "chat": {"message": {"maxSize": "10X"}},
        }
        e = self.assertRaises(ConfigError, parseConfig, raw, False)
        self.assertEqual(
            e.problems,
            [
                'server.port: must be an integer, not string "x"',
                'server.timezone: unknown time zone "Mars/Olympus" (use an IANA name such as Europe/Berlin)',
                'server.auth.type: unknown auth type "bsaic" '
                "(use one of: noauth, basic, header, bearer, cookie, oneOf, allOf, remote, jwt)",
                "restApi.port: 99999 is out of range (0 to 65535)",
                'chat.message.maxSize: unparsable size "10X": use bytes, or a number with K or M ("512K", "10M")',
            ],
        )
        self.assertEqual(str(e), "\n".join(e.problems))


class LoadTests(ConfigTestMixin, SynchronousTestCase):
    """
    L{loadConfig} reads a file.
    """

    def test_notJSON(self) -> None:
        """
        A file that is not JSON is a L{ConfigError} naming the file.
        """
        path = self.writeFile("{server: }")
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(len(e.problems), 1)
        self.assertTrue(e.problems[0].startswith(f"{path}: not valid JSON: "), e.problems[0])

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is a L{ConfigError}.
        """
        path = self.writeFile(b'{"server": {"endpoint": "/\xff"}}')
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertTrue(e.problems[0].startswith(f"{path}: not valid JSON: "), e.problems[0])

    def test_missing(self) -> None:
        """
        A file that does not exist is a L{ConfigError} naming the file.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(e.problems, [f"{path}: cannot read config file: No such file or directory"])

    def test_problems(self) -> None:
        """
        The problems of a file's content are raised as they are.
        """
        path = self.writeFile('{"server": {"port": 70000}}')
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(e.problems, ["server.port: 70000 is out of range (0 to 65535)"])


class OverrideTests(SynchronousTestCase):
    """
    L{withOverrides}: the command line's C{--ws}, C{--rest}, C{--data-dir}.
    """

    def test_overrides(self) -> None:
        """
        Each override replaces its value and nothing else.
        """
        config = parseConfig({"server": {"timezone": "Europe/Berlin"}, "restApi": {"enabled": False}})
        result = withOverrides(config, ws="tcp:9000", rest="tcp:9001:interface=127.0.0.1", dataDir="/tmp/d")
        self.assertEqual(result.server.listen, "tcp:9000")
        self.assertEqual(result.server.dataDir, "/tmp/d")
        self.assertEqual(result.server.timezone, "Europe/Berlin")
        self.assertEqual(result.restApi.listen, "tcp:9001:interface=127.0.0.1")
        self.assertEqual(result.restApi.enabled, True)
        self.assertEqual(result.chat, config.chat)
        self.assertEqual(config.server.listen, "tcp:8085:backlog=1024")

    def test_none(self) -> None:
        """
        Without overrides the config is unchanged.
        """
        config = defaultConfig()
        self.assertEqual(withOverrides(config), config)

    def test_one(self) -> None:
        """
        One override leaves the others as they were.
        """
        config = defaultConfig()
        result = withOverrides(config, dataDir="data2")
        self.assertEqual(result, Config(server=ServerConfig(dataDir="data2"), chat=config.chat))


class OriginalFileTests(ConfigTestMixin, SynchronousTestCase):
    """
    The original's files start unchanged: their template keys are no
    "unknown key" warnings, their C{workers} is no error.
    """

    def test_originalFile(self) -> None:
        """
        The original's own config file loads; its one file warning is the
        workers', and it runs one process.
        """
        config = loadConfig(ORIGINAL)
        self.assertEqual(config.warnings, (
            "server.workers: 8 worker processes need cluster.redis: running one process; "
            "set cluster.redis to run 8",
        ))
        self.assertEqual(config.server.workers, 1)
        self.assertEqual(config.server.auth, AuthConfig())
        self.assertEqual(config.restApi.listen, "tcp:8082:backlog=1024")

    def test_unusedAuthFields(self) -> None:
        """
        Fields of other auth types (C{user} and C{password} under
        C{noauth}, as the original's templates have them) are ignored
        without a warning, at any depth; a key no auth type has is still
        warned about.
        """
        leftovers = {"user": "", "password": "", "name": "", "value": ""}
        config = parseConfig({
            "server": {"auth": {"type": "noauth", **leftovers}},
            "restApi": {"auth": {"type": "bearer", "value": "t", "user": "", "password": ""}},
            "event": {"targets": [{"type": "postback", "url": "http://127.0.0.1:9/h",
                                   "auth": {"type": "noauth", "user": "", "password": ""}}]},
        })
        self.assertEqual(config.warnings, ())
        self.assertEqual(config.restApi.auth, AuthConfig(type="bearer", value="t"))
        config = parseConfig({"server": {"auth": {"type": "noauth", "user": "", "passwrod": "x"}}})
        self.assertEqual(config.warnings, ("server.auth.passwrod: unknown key, ignored",))

    def test_tmpDir(self) -> None:
        """
        The original's C{server.tmpDir} is accepted without a warning; it
        must still be a string.
        """
        self.assertEqual(parseConfig({"server": {"tmpDir": "/var/tmp"}}).warnings, ())
        self.assertEqual(self.problemsOf({"server": {"tmpDir": 1}}), ['server.tmpDir: must be a string, not number 1'])


class EndpointProblemTests(ConfigTestMixin, SynchronousTestCase):
    """
    L{endpointProblems} finds, without listening, what would stop the start:
    each problem names the key or the option, and says why in plain words.
    """

    def problems(self, raw: Any, ws: str | None = None) -> list[str]:
        return endpointProblems(withOverrides(parseConfig(raw, checkEndpoints=False), ws=ws))

    def test_portOutOfRange(self) -> None:
        """
        A port out of range in an endpoint string names C{server.listen},
        C{restApi.listen} or the option.
        """
        self.assertEqual(
            self.problems({"server": {"listen": "tcp:99999"}, "restApi": {"listen": "ssl:-1:privateKey=k"}}),
            ["server.listen: port 99999 is out of range (0 to 65535)", "restApi.listen: privateKey: file not found \"k\""],
        )
        self.assertEqual(self.problems({}, ws="tcp:70000:interface=127.0.0.1"),
                         ["--ws: port 70000 is out of range (0 to 65535)"])
        self.assertEqual(self.problems({}, ws="tcp6:port=65536"), ["--ws: port 65536 is out of range (0 to 65535)"])
        self.assertEqual(self.problems({}, ws="tcp:65535"), [])
        self.assertEqual(self.problems({}, ws="unix:/tmp/wsserver.sock"), [])

    def test_certificateUnreadable(self) -> None:
        """
        A certificate or key that cannot be read is named by the seed's
        key, or by the C{ssl:} option of the listen string.
        """
        crtPath, keyPath = writeSelfSignedPair(self.mktemp())
        directory = os.path.dirname(crtPath)
        seed = {"server": {"secure": {"enabled": True, "crtPath": directory, "keyPath": keyPath}}}
        self.assertEqual(self.problemsOf(seed, checkEndpoints=True),
                         [f'server.secure.crtPath: "{directory}" is a directory, not a file'])
        self.assertEqual(
            self.problems({}, ws=f"ssl:8443:privateKey=/nonexistent.key:certKey={crtPath}"),
            ['--ws: privateKey: file not found "/nonexistent.key"'],
        )
        self.assertEqual(
            self.problems({"restApi": {"listen": f"ssl:8443:privateKey={keyPath}:certKey={directory}"}}),
            [f'restApi.listen: certKey: "{directory}" is a directory, not a file'],
        )

    def test_certificateNotPEM(self) -> None:
        """
        Files that are not PEM, or a key of another certificate, are said
        so, not in OpenSSL's words.
        """
        crtPath, keyPath = writeSelfSignedPair(self.mktemp())
        otherCrt, otherKey = writeSelfSignedPair(self.mktemp())
        junk = self.writeFile("not a certificate\n")
        problems = self.problems({"server": {"secure": {"enabled": True, "crtPath": junk, "keyPath": junk}}})
        self.assertEqual(problems, [f'server.secure.crtPath: "{junk}" is not a PEM certificate',
                                    f'server.secure.keyPath: "{junk}" is not a PEM private key'])
        self.assertEqual(
            self.problems({}, ws=f"ssl:8443:privateKey={otherKey}:certKey={crtPath}"),
            [f'--ws: privateKey: "{otherKey}" is not the key of the certificate "{crtPath}"'],
        )
        self.assertEqual(self.problems({}, ws=f"ssl:8443:privateKey={keyPath}:certKey={crtPath}"), [])
        for problem in problems:
            self.assertNotIn("PEM routines", problem)


class SeedFileProblemTests(ConfigTestMixin, SynchronousTestCase):
    """
    L{seedFileProblems}, which every parse runs: the files of C{secure}
    that cannot be read, named by their keys; the parse itself reads none.
    """

    def test_named(self) -> None:
        """
        A missing key of C{server.secure} and a missing certificate of
        C{restApi.secure} are named by their keys, a disabled REST API's
        too; a path with the endpoint string's special characters is read
        back through the escapes.
        """
        crtPath, keyPath = writeSelfSignedPair(os.path.join(self.mktemp(), "a:b=c"))
        missing = os.path.join(os.path.dirname(crtPath), "missing")
        raw = {
            "server": {"secure": {"enabled": True, "crtPath": crtPath, "keyPath": missing}},
            "restApi": {"enabled": False, "secure": {"enabled": True, "crtPath": missing, "keyPath": keyPath}},
        }
        problems = [f'server.secure.keyPath: file not found "{missing}"',
                    f'restApi.secure.crtPath: file not found "{missing}"']
        self.assertEqual(self.problemsOf(raw), problems)
        # a tcp: seed has no file; an ssl: one written by hand is read back
        config = parseConfig({"server": {"port": 1}, "restApi": {"enabled": False}}, checkEndpoints=False)
        self.assertEqual((config.server.listenSource, seedFileProblems(config)), ("seed", []))
        plain = os.path.join(self.mktemp(), "missing")
        seeded = replace(config, server=replace(config.server, listen=f"ssl:1:privateKey={plain}"))
        self.assertEqual(seedFileProblems(seeded), [f'server.secure.keyPath: file not found "{plain}"'])

    def test_listenNotSeed(self) -> None:
        """
        Files named in C{listen} or C{--ws} are left to L{endpointProblems}
        (C{-T} and the start), which names them by their option.
        """
        listen = "ssl:8443:privateKey=/nonexistent.key"
        config = withOverrides(parseConfig({"restApi": {"listen": listen}}, checkEndpoints=False), ws=listen)
        self.assertEqual(seedFileProblems(config), [])
        self.assertEqual(endpointProblems(config), ['--ws: privateKey: file not found "/nonexistent.key"',
                                                    'restApi.listen: privateKey: file not found "/nonexistent.key"'])


class StartWarningTests(SynchronousTestCase):
    """
    L{startWarnings}: risky but working settings.
    """

    def test_openRestWithoutAuth(self) -> None:
        """
        A REST API on a non-loopback address with C{noauth} is warned about,
        naming the key or option and the fix.
        """
        self.assertEqual(startWarnings(parseConfig({"restApi": {"address": "*"}})), [
            "restApi.address: the REST API listens on every address with noauth: anyone who reaches it can send "
            "messages as anyone; set restApi.auth, or listen on 127.0.0.1",
        ])
        self.assertEqual(startWarnings(withOverrides(defaultConfig(), rest="tcp:9000:interface=10.1.2.3")), [
            "--rest: the REST API listens on 10.1.2.3 with noauth: anyone who reaches it can send messages as "
            "anyone; set restApi.auth, or listen on 127.0.0.1",
        ])
        self.assertEqual(len(startWarnings(parseConfig({"restApi": {"listen": "tcp:9000"}}))), 1)

    def test_safeRest(self) -> None:
        """
        No warning for the default (127.0.0.1), another loopback address,
        a UNIX socket, a REST API with auth, or a disabled one.
        """
        basic = {"type": "basic", "user": "u", "password": "p"}
        for raw in ({}, {"restApi": {"address": "::1"}}, {"restApi": {"listen": "tcp:9000:interface=localhost"}},
                    {"restApi": {"listen": "unix:/tmp/wsserver-rest.sock"}},
                    {"restApi": {"address": "*", "auth": basic}}, {"restApi": {"address": "*", "enabled": False}}):
            self.assertEqual(startWarnings(parseConfig(raw, checkEndpoints=False)), [], raw)
class LimitsConfigTests(SynchronousTestCase):
    """
    C{server.limits}.
    """

    def test_defaults(self) -> None:
        """
        Without the section, the defaults are those of a public server.
        """
        limits = parseConfig({}).server.limits
        self.assertEqual(limits, LimitsConfig())
        self.assertEqual((limits.maxConnections, limits.maxConnectionsPerUser, limits.sendBufferBytes,
                          limits.preAuthBytes, limits.authFailuresPerMinute), (100000, 100, 4 << 20, 64 << 10, 30))

    def test_values(self) -> None:
        """
        Numbers, and sizes as C{maxSize} takes them; 0 is accepted (off).
        """
        limits = parseConfig({"server": {"limits": {
            "sendBufferBytes": "64K", "preAuthBytes": 1000, "messagesPerSecond": 2.5, "burst": 10,
            "maxConnections": 0, "handshakeTimeoutSeconds": 0,
        }}}).server.limits
        self.assertEqual((limits.sendBufferBytes, limits.preAuthBytes, limits.messagesPerSecond, limits.burst,
                          limits.maxConnections, limits.handshakeTimeoutSeconds), (65536, 1000, 2.5, 10, 0, 0))

    def test_errorsNameTheKey(self) -> None:
        """
        Wrong values are errors naming C{server.limits.KEY}; unknown keys warnings.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig({"server": {"limits": {
                "sendBufferBytes": "4Q", "maxConnections": -1, "burst": "x", "requestTimeoutSeconds": -1,
                "maxRecipient": 5,
            }}})
        e = caught.exception
        self.assertEqual(e.problems, [
            'server.limits.burst: must be an integer, not string "x"',
            "server.limits.maxConnections: -1 is out of range (0 to any)",
            'server.limits.sendBufferBytes: unparsable size "4Q": use bytes, or a number with K or M '
            '("512K", "10M")',
            "server.limits.requestTimeoutSeconds: -1 must be at least 0",
        ])
        self.assertEqual(e.warnings, ["server.limits.maxRecipient: unknown key, ignored"])

    def test_closeGraceSeconds(self) -> None:
        """
        C{closeGraceSeconds}: 10 by default, any number of seconds from 0;
        a negative number or a string is an error naming the key.
        """
        self.assertEqual(parseConfig({}).server.limits.closeGraceSeconds, 10)
        limits = parseConfig({"server": {"limits": {"closeGraceSeconds": 2.5}}}).server.limits
        self.assertEqual(limits.closeGraceSeconds, 2.5)
        off = parseConfig({"server": {"limits": {"closeGraceSeconds": 0}}}).server.limits
        self.assertEqual(off.closeGraceSeconds, 0)
        for value, problem in [(-1, "-1 must be at least 0"), ("10", 'must be a number, not string "10"')]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig({"server": {"limits": {"closeGraceSeconds": value}}})
            self.assertEqual(caught.exception.problems, [f"server.limits.closeGraceSeconds: {problem}"])

    def test_burstWithRate(self) -> None:
        """
        A rate limit needs a bucket of at least one message.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig({"server": {"limits": {"messagesPerSecond": 5, "burst": 0}}})
        self.assertEqual(caught.exception.problems,
                         ["server.limits.burst: must be at least 1 when messagesPerSecond is set"])


class ProxyConfigTests(ConfigTestMixin, SynchronousTestCase):
    """
    C{server.trustedProxies} and C{server.proxyProtocol}.
    """

    def test_defaults(self) -> None:
        """
        By default no proxy is trusted and no PROXY header is read.
        """
        server = parseConfig({}).server
        self.assertEqual((server.trustedProxies, server.proxyProtocol), ((), False))

    def test_parsed(self) -> None:
        """
        Addresses and CIDR blocks are kept as given.
        """
        server = parseConfig({"server": {"trustedProxies": ["10.0.0.0/8", "::1"], "proxyProtocol": True}}).server
        self.assertEqual((server.trustedProxies, server.proxyProtocol), (("10.0.0.0/8", "::1"), True))

    def test_notAnAddress(self) -> None:
        """
        An entry that is neither an address nor a CIDR block is named.
        """
        self.assertEqual(
            self.problemsOf({"server": {"trustedProxies": ["10.0.0.0/8", "lb.example"]}}),
            ["server.trustedProxies: not an address or CIDR block: 'lb.example'"],
        )

    def test_notAList(self) -> None:
        """
        A string instead of a list.
        """
        self.assertEqual(
            self.problemsOf({"server": {"trustedProxies": "10.0.0.1"}}),
            ['server.trustedProxies: must be an array of strings, not string "10.0.0.1"'],
        )

    def test_proxyProtocolNeedsTrusted(self) -> None:
        """
        C{proxyProtocol} with no trusted proxy would read no header at all:
        refused.
        """
        self.assertEqual(
            self.problemsOf({"server": {"proxyProtocol": True}}),
            ["server.proxyProtocol: needs server.trustedProxies: the PROXY header is read only from the "
             "proxies listed there"],
        )
        self.assertEqual(
            self.problemsOf({"server": {"proxyProtocol": "yes", "trustedProxies": ["10.0.0.1"]}}),
            ['server.proxyProtocol: must be true or false, not string "yes"'],
        )
#: the end of every placeholder problem
_REPLACE = "is a placeholder, not a secret: replace it with one of your own (such as the output of: openssl rand -hex 32)"


class PlaceholderTests(ConfigTestMixin, SynchronousTestCase):
    """
    A secret that is still a placeholder of the examples or the docs
    (C{change-me}) is a problem naming its key: the server does not start
    on it, and C{-T} says so.
    """

    def test_authSecrets(self) -> None:
        """
        The password of basic auth, the value of header, cookie and bearer
        auth, and a JWT secret are checked, inside C{oneOf} too.
        """
        raw = {
            "server": {"auth": {"type": "oneOf", "types": [
                {"type": "cookie", "name": "session", "value": "change-me"},
                {"type": "jwt", "secret": "a random string of at least 32 bytes.....", "algorithms": ["HS256"]},
            ]}},
            "restApi": {"auth": {"type": "basic", "user": "backend", "password": "CHANGE_ME_TOO"}},
        }
        self.assertEqual(self.problemsOf(raw), [
            f'server.auth.types[0].value: "change-me" {_REPLACE}',
            f'server.auth.types[1].secret: "a random string of at least 32 bytes....." {_REPLACE}',
            f'restApi.auth.password: "CHANGE_ME_TOO" {_REPLACE}',
        ])

    def test_bearerAndHeader(self) -> None:
        """
        A REST bearer token C{secret}, a header auth C{example}, and a
        remote auth's header C{changeme}.
        """
        raw = {
            "server": {"auth": {"type": "remote", "url": "http://127.0.0.1:9/check",
                                "headers": [{"X-Key": "changeme"}], "source": {"type": "bearer"}}},
            "restApi": {"auth": {"type": "bearer", "value": "secret"}},
            "event": {"targets": [{"type": "postback", "url": "http://127.0.0.1:9/hook",
                                   "auth": {"type": "header", "name": "X-Token", "value": "example"}}]},
        }
        self.assertEqual(self.problemsOf(raw), [
            f'server.auth.headers: the header X-Key "changeme" {_REPLACE}',
            f'restApi.auth.value: "secret" {_REPLACE}',
            f'event.targets[0].auth.value: "example" {_REPLACE}',
        ])

    def test_targetPasswords(self) -> None:
        """
        A redis target's password, the password in an amqp target's URL and
        a SQL target's dsn, in a fallback too, and in C{cluster.redis}.
        """
        raw = {
            "event": {"targets": [
                {"type": "redis", "password": "change-me",
                 "fallback": [{"type": "postgresql", "dsn": "postgresql://wsserver:secret@127.0.0.1/db"}]},
                {"type": "amqp", "url": "amqp://wsserver:change-me@127.0.0.1/"},
            ]},
            "cluster": {"redis": "redis://:change-me@127.0.0.1:6379"},
            "chat": {"undelivered": {"storage": "redis"}},
        }
        self.assertEqual(self.problemsOf(raw), [
            f'event.targets[0].password: "change-me" {_REPLACE}',
            f'event.targets[0].fallback[0].dsn: the password "secret" {_REPLACE}',
            f'event.targets[1].url: the password "change-me" {_REPLACE}',
            f'cluster.redis: the password "change-me" {_REPLACE}',
        ])

    def test_ownSecretsPass(self) -> None:
        """
        Secrets of one's own pass, as do placeholders where nothing reads
        them (the original's templates put a password under C{noauth}).
        """
        config = parseConfig({
            "server": {"auth": {"type": "noauth", "password": "change-me"}},
            "restApi": {"auth": {"type": "basic", "user": "backend", "password": "3f9c1e0a7b"}},
        })
        self.assertEqual(config.restApi.auth.password, "3f9c1e0a7b")
