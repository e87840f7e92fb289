# -*- test-case-name: tests.test_config -*-
"""
The configuration file (SPEC section 2): one parse of the original's JSON
layout into typed, immutable objects.

Every problem is named by its key (C{server.auth.type: unknown auth type
"bsaic"}) and all of them are reported at once, so that C{twistd wsserver -T}
can list everything wrong with a file in one run.  Nothing falls back
silently: an unknown auth type is an error, not "no auth".

Relative paths (certificates, the data directory) are taken relative to the
directory the server is started from, as the original did.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .events.targets.types import TARGET_TYPES

__all__ = [
    "AuthConfig",
    "ChatConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "EventConfig",
    "LimitsConfig",
    "MessageConfig",
    "RestConfig",
    "ServerConfig",
    "TargetConfig",
    "UndeliveredConfig",
    "HistoryConfig",
    "WatchdogConfig",
    "defaultConfig",
    "endpointProblems",
    "loadConfig",
    "parseConfig",
    "listenKey",
    "parseSize",
    "startWarnings",
    "withOverrides",
]

#: The largest user id: ids are unsigned 64-bit integers.
MAX_USER_ID = 2**64 - 1

AUTH_TYPES = ("noauth", "basic", "header", "bearer", "cookie", "oneOf", "allOf", "remote", "jwt")
#: where a C{remote} or C{jwt} check may find the client's credential
SOURCE_TYPES = ("noauth", "basic", "header", "bearer", "cookie", "query")
#: The fields of all auth types: where the chosen type does not use one (the
#: original's templates carry C{user} and C{password} under C{noauth}), it is
#: ignored without an "unknown key" warning.
AUTH_FIELDS = ("user", "password", "name", "value", "types", "url", "method", "headers", "data", "source",
               "timeoutSeconds", "secret", "publicKey", "algorithms", "issuer", "audience", "leewaySeconds")
STORAGES = ("memory", "sqlite", "redis")
#: the values of C{chat.userIds} (see L{wsserver.ids})
USER_ID_RULES = ("any", "numeric")


class ConfigError(Exception):
    """
    The configuration cannot be used.

    @ivar problems: one line per problem, each starting with the key it is about.
    """

    def __init__(self, problems: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        #: the warnings found too (unknown keys: often the typo behind an error)
        self.warnings = list(warnings)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class AuthConfig:
    """
    One auth object (SPEC section 5): who may connect, or, for an event
    target, the credential the server sends.

    Only the fields of its C{type} are meaningful; the others keep their
    defaults.
    """

    type: str = "noauth"
    user: str = ""
    password: str = ""
    name: str = ""
    value: str = ""
    #: for C{oneOf} / C{allOf}
    types: tuple[AuthConfig, ...] = ()
    #: for C{remote}
    url: str = ""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    data: Any = None
    source: AuthConfig | None = None
    timeoutSeconds: float = 10.0
    #: for C{jwt}: an HMAC secret, or the path of a PEM public key and its
    #: content (read with the config, so that a reload reads it again)
    secret: str = field(default="", repr=False)
    publicKey: str = ""
    keyData: bytes = field(default=b"", repr=False)
    algorithms: tuple[str, ...] = ()
    issuer: str = ""
    audience: tuple[str, ...] = ()
    leewaySeconds: float = 0.0

    def usesType(self, authType: str) -> bool:
        """
        Whether this auth, or any auth nested in it (the C{source} of a
        C{remote} or C{jwt} check included), is of C{authType}: so
        C{usesType("cookie")} says whether a browser's cookies can pass it.
        """
        return (
            self.type == authType
            or any(t.usesType(authType) for t in self.types)
            or (self.source is not None and self.source.usesType(authType))
        )


@dataclass(frozen=True)
class WatchdogConfig:
    enabled: bool = False
    connectionLifetimeSeconds: float = 600
    pingIntervalSeconds: float = 60


@dataclass(frozen=True)
class LimitsConfig:
    """
    C{server.limits}: bounds that keep one client (or one address) from
    taking the server down.  Each is a number; 0 turns it off.  The
    defaults are safe for a server on the open internet.
    """

    #: open connections in all; more: HTTP 503 at the handshake
    maxConnections: int = 100000
    #: open connections from one client address; more: HTTP 429
    maxConnectionsPerIp: int = 0
    #: connections of one user; more: the new one is closed with 4008
    maxConnectionsPerUser: int = 100
    #: per connection, a token bucket (rate, size); over it: 4029
    messagesPerSecond: float = 0
    burst: int = 50
    #: recipients of one message; more: 4001 / 400
    maxRecipients: int = 10000
    #: bytes kept for one connection that the network does not take; more: 4011
    sendBufferBytes: int = 4 * 1024 * 1024
    #: seconds for the opening handshake and the auth check
    handshakeTimeoutSeconds: float = 10
    #: statistics of users with no connection kept, least recently seen dropped first
    maxTrackedUsers: int = 1000000
    #: failed auth checks per client address and minute; more: HTTP 429
    authFailuresPerMinute: int = 30
    #: bytes a connection may send before its auth check passed; more: 1008
    preAuthBytes: int = 64 * 1024
    #: seconds for a REST request or a handshake request to arrive whole
    requestTimeoutSeconds: float = 30

    @classmethod
    def off(cls) -> LimitsConfig:
        """
        Every limit turned off (for benchmarks and tests).
        """
        return cls(**{name: 0 for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ServerConfig:
    #: the WebSocket path, C{/chat}
    endpoint: str = "/chat"
    #: a Twisted server endpoint string: C{tcp:} serves ws://, C{ssl:} wss://
    listen: str = "tcp:8085:backlog=1024"
    workers: int = 1
    timezone: str = "UTC"
    dataDir: str = "./wsserver-data"
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    allowedOrigins: tuple[str, ...] = ()
    #: where C{listen} came from, to name it in errors: C{"listen"} (the key,
    #: or the default), C{"seed"} (C{address}/C{port}/C{secure}) or C{"--ws"}
    listenSource: str = "listen"
    #: serve the demo chat page at C{/} of the WebSocket port
    demoPage: bool = True
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @property
    def tz(self) -> ZoneInfo:
        """
        The time zone that message timestamps are written in.
        """
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class RestConfig:
    enabled: bool = True
    listen: str = "tcp:8092:interface=127.0.0.1:backlog=1024"
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: as L{ServerConfig.listenSource} (C{"--rest"} for the option)
    listenSource: str = "listen"
    #: how long an C{Idempotency-Key} (and a message's ack token) is
    #: remembered; 0: not at all
    idempotencySeconds: float = 300


@dataclass(frozen=True)
class UndeliveredConfig:
    storage: str = "sqlite"
    ttlSeconds: float = 604800
    maxPerUser: int = 1000


@dataclass(frozen=True)
class HistoryConfig:
    """
    C{chat.history}: the per-user inbox and resumable connections.
    """

    enabled: bool = False
    storage: str = "sqlite"
    maxPerUser: int = 1000
    ttlSeconds: float = 604800


@dataclass(frozen=True)
class MessageConfig:
    #: bytes, after reassembly of fragmented messages
    maxSize: int = 10 * 1024 * 1024
    enableDeliveryStatus: bool = False
    enableSendBack: bool = False
    ignoredTypesSendBack: frozenset[str] = frozenset()
    enforceSender: bool = True


@dataclass(frozen=True)
class ChatConfig:
    #: which user ids are accepted: ``"any"`` (1 to 128 letters, digits and
    #: ``_-.:@|+=``; digits only are a number) or ``"numeric"`` (the
    #: original's: unsigned 64-bit numbers only)
    userIds: str = "any"
    enableUndeliveredQueue: bool = False
    undelivered: UndeliveredConfig = field(default_factory=UndeliveredConfig)
    message: MessageConfig = field(default_factory=MessageConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)


@dataclass(frozen=True)
class TargetConfig:
    """
    One event target: C{postback} (a webhook), C{redis}, or a type of
    L{wsserver.events.targets.types} (whose keys are in C{options}).
    """

    type: str
    url: str = ""
    method: str = "POST"
    connectionTimeoutSeconds: float = 10
    auth: AuthConfig = field(default_factory=AuthConfig)
    address: str = "127.0.0.1"
    port: int = 6379
    unixSocket: str = ""
    database: int = 0
    password: str = ""
    modeType: str = "queue"
    modeName: str = "wsserver_events_queue"
    fallback: tuple[TargetConfig, ...] = ()
    #: the keys of a L{wsserver.events.targets.types} type, as its parser read them
    options: object | None = None


@dataclass(frozen=True)
class EventConfig:
    enabled: bool = False
    enableRetry: bool = True
    retryIntervalSeconds: float = 10
    retryCount: int = 3
    sendBotMessages: bool = False
    maxParallelWorkers: int = 16
    ignoreTypes: frozenset[str] = frozenset()
    targets: tuple[TargetConfig, ...] = ()
    #: C{user_online} / C{user_offline} events to the targets
    presence: bool = False
    #: seconds a presence change must last before it is sent
    presenceDebounceSeconds: float = 3


@dataclass(frozen=True)
class ClusterConfig:
    #: a C{redis://} (or C{unix://}) URL, or L{None} for a single node
    redis: str | None = None
    #: how often a node announces its online users
    heartbeatSeconds: float = 10
    #: a node not heard for this long counts as dead (its users offline)
    nodeTimeoutSeconds: float = 30


@dataclass(frozen=True)
class Config:
    """
    The whole configuration, and the warnings its file gave.
    """

    server: ServerConfig = field(default_factory=ServerConfig)
    restApi: RestConfig = field(default_factory=RestConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    event: EventConfig = field(default_factory=EventConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    warnings: tuple[str, ...] = ()


def defaultConfig() -> Config:
    """
    The built-in defaults, used when no config file is given.
    """
    return Config(chat=ChatConfig(undelivered=UndeliveredConfig(storage="memory")))


_SIZE = re.compile(r"^\s*([0-9]+)\s*([KkMm]?)\s*$")


def parseSize(value: object) -> int:
    """
    Parse a size: a number of bytes, or a string with suffix C{K} or C{M}
    (C{"512K"}, C{"10M"}; powers of 1024).

    @raise ValueError: when C{value} is not such a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    raise ValueError(f'unparsable size {json.dumps(value)}: use bytes, or a number with K or M ("512K", "10M")')


def _quote(value: str) -> str:
    """
    Escape a value for a Twisted endpoint string.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _typeName(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Section:
    """
    Typed reads from one JSON object, recording every problem by its key.
    """

    def __init__(self, raw: Mapping[str, Any], path: str, problems: list[str], warnings: list[str]) -> None:
        self.raw = raw
        self.path = path
        self.problems = problems
        self.warnings = warnings
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, why: str) -> None:
        self.problems.append(f"{self.key(name)}: {why}")

    def has(self, name: str) -> bool:
        self.seen.add(name)
        return name in self.raw and self.raw[name] is not None

    def _get(self, name: str, default: Any, check: Callable[[Any], bool], want: str) -> Any:
        self.seen.add(name)
        if name not in self.raw:
            return default
        value = self.raw[name]
        if not check(value):
            self.error(name, f"must be {want}, not {_typeName(value)} {json.dumps(value)}")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, default, lambda v: isinstance(v, bool), "true or false")

    def str(self, name: str, default: str) -> str:
        return self._get(name, default, lambda v: isinstance(v, str), "a string")

    def int(self, name: str, default: int, low: int | None = None, high: int | None = None) -> int:
        value = self._get(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            self.error(name, f"{value} is out of range ({low} to {high if high is not None else 'any'})")
            return default
        return value

    def number(self, name: str, default: float, low: float = 0) -> float:
        value = self._get(
            name, default, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
        )
        if value < low:
            self.error(name, f"{value} must be at least {low}")
            return default
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(
            name, [], lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "an array of strings"
        )
        return tuple(value)

    def section(self, name: str) -> _Section:
        value = self._get(name, {}, lambda v: v is None or isinstance(v, dict), "an object")
        return _Section(value or {}, self.key(name), self.problems, self.warnings)

    def finish(self) -> None:
        """
        Warn about every key that nothing read.
        """
        for name in self.raw:
            if name not in self.seen:
                self.warnings.append(f"{self.key(name)}: unknown key, ignored")


def _listenFromSeed(sect: _Section, defaultAddress: str, defaultPort: int) -> tuple[str, str]:
    """
    Translate the original's C{address}/C{port}/C{secure} fields to an
    endpoint string; C{listen} wins where given.

    @return: the endpoint string, and where it came from (C{"listen"} or
        C{"seed"}: see L{ServerConfig.listenSource}).
    """
    address = sect.str("address", defaultAddress)
    port = sect.int("port", defaultPort, 0, 65535)
    secure = sect.section("secure")
    enabled = secure.bool("enabled", False)
    crtPath = secure.str("crtPath", "")
    keyPath = secure.str("keyPath", "")
    secure.finish()
    listen = sect.str("listen", "")
    if listen:
        return listen, "listen"
    if enabled:
        for name, path in (("crtPath", crtPath), ("keyPath", keyPath)):
            if not path:
                secure.error(name, "required when secure.enabled is true")
            elif (why := _fileProblem(path)) is not None:
                secure.error(name, why)
        parts = [f"ssl:{port}", f"privateKey={_quote(keyPath)}", f"certKey={_quote(crtPath)}"]
    else:
        parts = [f"tcp:{port}"]
    if address not in ("*", "", "0.0.0.0"):
        parts.append(f"interface={_quote(address)}")
    parts.append("backlog=1024")
    return ":".join(parts), "seed"


def listenKey(section: str, source: str) -> str:
    """
    The name of a listen address in messages: the option (C{--ws}) when it
    came from the command line, else the key (C{server.listen}).
    """
    return source if source.startswith("--") else f"{section}.listen"


def _fileProblem(path: str) -> str | None:
    """
    Why the file at C{path} cannot be read, in plain words, or L{None}.
    """
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return f"file not found {json.dumps(path)}"
    except IsADirectoryError:
        return f"{json.dumps(path)} is a directory, not a file"
    except OSError as e:
        return f"cannot read {json.dumps(path)}: {(e.strerror or str(e)).lower()}"


def _tlsProblems(listen: str, names: tuple[str, str]) -> list[str]:
    """
    Check the certificate and key files of an C{ssl:} endpoint string: each
    readable, a PEM certificate and a PEM private key that match.

    @param names: how to name the certificate and the key in messages.
    @return: one line per problem, in plain words (not OpenSSL's).
    """
    from OpenSSL.crypto import FILETYPE_PEM
    from twisted.internet.endpoints import _parse  # the endpoint-string grammar
    from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate

    args, kwargs = _parse(listen)
    if not args or args[0] not in ("ssl", "ssl6"):
        return []
    keyPath = kwargs.get("privateKey", "server.pem")
    certPath = kwargs.get("certKey") or keyPath
    problems = []
    files = zip(names, (certPath, keyPath)) if certPath != keyPath else [(names[1], keyPath)]
    for name, path in files:
        why = _fileProblem(path)
        if why is not None:
            problems.append(f"{name}: {why}")
    if problems:
        return problems
    with open(certPath, "rb") as f:
        certPEM = f.read()
    with open(keyPath, "rb") as f:
        keyPEM = f.read()
    try:
        certificate = Certificate.loadPEM(certPEM)
    except Exception:  # OpenSSL's errors: say it in plain words instead
        problems.append(f"{names[0]}: {json.dumps(certPath)} is not a PEM certificate")
    try:
        key = KeyPair.load(keyPEM, FILETYPE_PEM)
    except Exception:
        problems.append(f"{names[1]}: {json.dumps(keyPath)} is not a PEM private key")
    if not problems:
        try:
            PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
        except Exception:
            problems.append(f"{names[1]}: {json.dumps(keyPath)} is not the key of the certificate {json.dumps(certPath)}")
    return problems


def _listenProblems(section: str, listen: str, source: str) -> list[str]:
    """
    Check that C{listen} is a server endpoint string that Twisted can use,
    without listening: its syntax, its port range and, for C{ssl:}, the
    certificate and key.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Factory
    from twisted.internet.testing import MemoryReactor

    key = listenKey(section, source)
    if source == "seed":
        names = (f"{section}.secure.crtPath", f"{section}.secure.keyPath")
    else:
        names = (f"{key}: certKey", f"{key}: privateKey")
    try:
        problems = _tlsProblems(listen, names)
    except Exception:  # not even parsable: serverFromString says why below
        problems = []
    if problems:
        return problems
    reactor = MemoryReactor()
    try:
        endpoint = serverFromString(reactor, listen)
    except Exception as e:  # serverFromString raises many kinds: report them all
        return [f"{key}: invalid endpoint {json.dumps(listen)}: {e}"]
    # "listen" on a reactor that only records what it was asked: the port
    # and interface as Twisted read them from the string
    endpoint.listen(Factory()).addErrback(lambda f: None)
    for port, *_ in reactor.tcpServers + reactor.sslServers:
        if not 0 <= port <= 65535:
            return [f"{key}: port {port} is out of range (0 to 65535)"]
    return []


def listenInterface(listen: str) -> str | None:
    """
    The interface that a C{tcp:}/C{ssl:} endpoint string listens on
    (C{""}: every one), or L{None} for other kinds (a UNIX socket).
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Factory
    from twisted.internet.testing import MemoryReactor

    reactor = MemoryReactor()
    try:
        serverFromString(reactor, listen).listen(Factory()).addErrback(lambda f: None)
    except Exception:
        return None
    for server in reactor.tcpServers:
        return server[3]
    for server in reactor.sslServers:
        return server[4]
    return None


def _parseAuth(sect: _Section, name: str, credential: bool = False, source: bool = False) -> AuthConfig:
    """
    Parse the auth object at C{sect[name]}; C{credential} is true for event
    targets, where combinations and remote checks make no sense.
    """
    if not sect.has(name):
        if isinstance(sect, _IndexSection) and name in sect.raw:
            # a null inside oneOf/allOf must not become a "noauth" that lets everyone in
            sect.error(name, "must be an auth object, not null")
        return AuthConfig()
    a = sect.section(name)
    if not isinstance(sect.raw.get(name), dict):
        return AuthConfig()
    kind = a.str("type", "")
    if source:
        allowed: tuple[str, ...] = SOURCE_TYPES
    elif credential:
        allowed = ("noauth", "basic", "header", "bearer", "cookie")
    else:
        allowed = AUTH_TYPES
    if kind not in allowed:
        if kind == "" and "type" not in a.raw:
            a.error("type", "required")
        else:
            a.error("type", f"unknown auth type {json.dumps(kind)} (use one of: {', '.join(allowed)})")
        return AuthConfig()

    def required(field: str) -> str:
        if field not in a.raw:
            a.error(field, f'required for auth type "{kind}"')
            a.seen.add(field)
            return ""
        value = a.str(field, "")
        if not value and field != "user":
            a.error(field, "must not be empty")
        return value

    result = AuthConfig(type=kind)
    # what the chosen type reads is checked below; the others' fields are leftovers
    a.seen.update(f for f in AUTH_FIELDS if f in a.raw)
    if source:
        # where a remote or jwt check finds the credential: only names matter
        if kind in ("header", "cookie", "query"):
            result = replace(result, name=required("name"))
        a.seen.update(("value", "user", "password"))  # an auth object reused as is
        a.finish()
        return result
    if kind == "basic":
        user = required("user")
        if ":" in user:
            a.error("user", 'must not contain ":" (HTTP basic auth splits on it)')
        result = replace(result, user=user, password=required("password"))
    elif kind in ("header", "cookie"):
        result = replace(result, name=required("name"), value=required("value"))
    elif kind == "bearer":
        result = replace(result, value=required("value"))
    elif kind in ("oneOf", "allOf"):
        raw = a._get("types", None, lambda v: isinstance(v, list), "an array of auth objects")
        if not raw:
            if raw is not None:
                a.error("types", "must hold at least one auth object")
            elif "types" not in a.raw:
                a.error("types", f'required for auth type "{kind}"')
            raw = []
        items = _IndexSection({str(i): v for i, v in enumerate(raw)}, a.key("types"), a.problems, a.warnings)
        subs = [_parseAuth(items, str(i)) for i in range(len(raw))]
        result = replace(result, types=tuple(subs))
    elif kind == "remote":
        url = required("url")
        if url and not re.match(r"^https?://", url):
            a.error("url", f"must be an http:// or https:// URL, not {json.dumps(url)}")
        headers = []
        rawHeaders = a._get(
            "headers",
            [],
            lambda v: isinstance(v, list)
            and all(isinstance(h, dict) and all(isinstance(x, str) for x in h.values()) for h in v),
            'an array of objects such as {"X-Key": "value"}',
        )
        for h in rawHeaders:
            headers.extend(h.items())
        data = a._get("data", None, lambda v: v is None or isinstance(v, (str, dict)), "a string or an object")
        source = _parseAuth(a, "source", source=True) if a.has("source") else None
        if source is None or source.type == "noauth":
            a.error("source", 'required for auth type "remote": an auth object saying where the credential is, '
                    'such as {"type": "cookie", "name": "session"}')
        result = replace(
            result,
            url=url,
            method=a.str("method", "POST").upper(),
            headers=tuple(headers),
            data=data,
            source=source,
            timeoutSeconds=a.number("timeoutSeconds", 10, 0.001),
        )
    elif kind == "jwt":
        result = _parseJwt(a, result)
    a.finish()
    return result


def _parseJwt(a: _Section, result: AuthConfig) -> AuthConfig:
    """
    The fields of a C{jwt} auth object.  The allowed algorithms come from
    here only, never from a token, and must suit the key given: an HMAC
    algorithm with a public key (whose text anyone may know, so anyone could
    sign with it as a secret), or a public-key algorithm with a secret, is an
    error; C{none} is never allowed.
    """
    from .auth._jwt import keyProblems

    algorithms: tuple[str, ...] = ()
    if "algorithms" not in a.raw:
        a.error("algorithms", 'required for auth type "jwt": the algorithms tokens are signed with, '
                'such as ["HS256"] or ["RS256"]')
        a.seen.add("algorithms")
    else:
        algorithms = a.strings("algorithms")
        if not algorithms and isinstance(a.raw["algorithms"], list):
            a.error("algorithms", "must list at least one algorithm")
    secret = a.str("secret", "")
    keyPath = a.str("publicKey", "")
    keyData = b""
    readable = True
    if keyPath:
        try:
            with open(keyPath, "rb") as f:
                keyData = f.read()
        except OSError as e:
            a.error("publicKey", f"cannot read {json.dumps(keyPath)}: {e.strerror}")
            readable = False
    if "secret" in a.raw and not secret:
        a.error("secret", "must not be empty")
    elif "publicKey" in a.raw and not keyPath:
        a.error("publicKey", "must not be empty")
    elif algorithms:
        problems, warnings = keyProblems(algorithms, secret, keyPath, keyData if readable else None)
        for name, why in problems:
            a.error(name, why)
        for name, why in warnings:
            a.warnings.append(f"{a.key(name)}: {why}")
    audience = a._get(
        "audience", [], lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "a string or an array of strings",
    )
    source = AuthConfig(type="bearer")
    if a.has("source"):
        before = len(a.problems)
        source = _parseAuth(a, "source", source=True)
        if len(a.problems) == before and source.type not in ("bearer", "header", "cookie", "query"):
            a.problems.append(
                f"{a.key('source')}.type: a token is read from a bearer, header, cookie or query source, "
                f"not {json.dumps(source.type)}"
            )
    return replace(
        result,
        secret=secret,
        publicKey=keyPath,
        keyData=keyData,
        algorithms=algorithms,
        issuer=a.str("issuer", ""),
        audience=(audience,) if isinstance(audience, str) else tuple(audience),
        leewaySeconds=a.number("leewaySeconds", 0, 0),
        source=source,
    )


class _IndexSection(_Section):
    """
    An array seen as a section (its items keyed C{"0"}, C{"1"} ...), so that
    items are named C{key[i]}.
    """

    def key(self, name: str) -> str:
        return f"{self.path}[{name}]"


def _parseTarget(sect: _Section, index: int) -> TargetConfig | None:
    t = _Section(sect.raw, sect.path, sect.problems, sect.warnings)
    kind = t.str("type", "")
    if kind not in ("postback", "redis") and kind not in TARGET_TYPES:
        known = ", ".join(["postback", "redis", *TARGET_TYPES])
        t.error("type", f"unknown event target type {json.dumps(kind)} (use one of: {known})")
        return None
    target = TargetConfig(type=kind)
    if kind in TARGET_TYPES:
        # each of these types owns its keys
        target = replace(target, options=TARGET_TYPES[kind].parse(t),
                         connectionTimeoutSeconds=t.number("connectionTimeoutSeconds", 10))
    elif kind == "postback":
        url = t.str("url", "")
        if not re.match(r"^https?://", url):
            t.error("url", f"must be an http:// or https:// URL, not {json.dumps(url)}")
        target = replace(
            target,
            url=url,
            method=t.str("method", "POST").upper(),
            connectionTimeoutSeconds=t.number("connectionTimeoutSeconds", 10),
            auth=_parseAuth(t, "auth", credential=True),
        )
    else:
        mode = t.section("mode")
        modeType = mode.str("type", "queue")
        if modeType not in ("queue", "channel"):
            mode.error("type", f'must be "queue" or "channel", not {json.dumps(modeType)}')
        modeName = mode.str("name", "wsserver_events_queue" if modeType != "channel" else "wsserver_events_channel")
        mode.finish()
        target = replace(
            target,
            address=t.str("address", "127.0.0.1"),
            port=t.int("port", 6379, 1, 65535),
            unixSocket=t.str("unixSocket", ""),
            database=t.int("database", 0, 0),
            password=t.str("password", ""),
            modeType=modeType,
            modeName=modeName,
            connectionTimeoutSeconds=t.number("connectionTimeoutSeconds", 10),
        )
    fallback = _parseTargets(t, "fallback")
    t.finish()
    return replace(target, fallback=fallback)


def _parseTargets(sect: _Section, name: str) -> tuple[TargetConfig, ...]:
    raw = sect._get(name, [], lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "an array of objects")
    targets = []
    for i, item in enumerate(raw):
        target = _parseTarget(_Section(item, f"{sect.key(name)}[{i}]", sect.problems, sect.warnings), i)
        if target is not None:
            targets.append(target)
    return tuple(targets)


def _parseLimits(sect: _Section) -> LimitsConfig:
    """
    C{server.limits}: integers, seconds, and sizes (as C{maxSize}); 0 turns
    a limit off.
    """
    default = LimitsConfig()

    def size(name: str) -> int:
        value: int = getattr(default, name)
        if sect.has(name):
            try:
                value = parseSize(sect.raw[name])
            except ValueError as e:
                sect.error(name, str(e))
        return value

    burst = sect.int("burst", default.burst, 0)
    rate = sect.number("messagesPerSecond", default.messagesPerSecond, 0)
    if rate and burst < 1:
        sect.error("burst", "must be at least 1 when messagesPerSecond is set")
    limits = LimitsConfig(
        maxConnections=sect.int("maxConnections", default.maxConnections, 0),
        maxConnectionsPerIp=sect.int("maxConnectionsPerIp", default.maxConnectionsPerIp, 0),
        maxConnectionsPerUser=sect.int("maxConnectionsPerUser", default.maxConnectionsPerUser, 0),
        messagesPerSecond=rate,
        burst=burst,
        maxRecipients=sect.int("maxRecipients", default.maxRecipients, 0),
        sendBufferBytes=size("sendBufferBytes"),
        handshakeTimeoutSeconds=sect.number("handshakeTimeoutSeconds", default.handshakeTimeoutSeconds, 0),
        maxTrackedUsers=sect.int("maxTrackedUsers", default.maxTrackedUsers, 0),
        authFailuresPerMinute=sect.int("authFailuresPerMinute", default.authFailuresPerMinute, 0),
        preAuthBytes=size("preAuthBytes"),
        requestTimeoutSeconds=sect.number("requestTimeoutSeconds", default.requestTimeoutSeconds, 0),
    )
    sect.finish()
    return limits


def parseConfig(raw: object, checkEndpoints: bool = True) -> Config:
    """
    Parse a decoded JSON config into a L{Config}.

    @param checkEndpoints: also check that the listen endpoints can be used
        (loads TLS keys and certificates).
    @raise ConfigError: naming every problem by its key.
    """
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be an object, not {_typeName(raw)}"])
    top = _Section(raw, "", problems, warnings)

    # server
    s = top.section("server")
    endpoint = s.str("endpoint", "/chat")
    if not endpoint.startswith("/"):
        s.error("endpoint", f'must be a path starting with "/", not {json.dumps(endpoint)}')
    listen, listenSource = _listenFromSeed(s, "*", 8085)
    workers = s.int("workers", 1, 1, 256)
    timezone = s.str("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        s.error("timezone", f"unknown time zone {json.dumps(timezone)} (use an IANA name such as Europe/Berlin)")
        timezone = "UTC"
    dataDir = s.str("dataDir", "./wsserver-data")
    s.str("tmpDir", "/tmp")  # the original's; nothing here needs it
    w = s.section("watchdog")
    watchdog = WatchdogConfig(
        enabled=w.bool("enabled", False),
        connectionLifetimeSeconds=w.number("connectionLifetimeSeconds", 600, 0),
        pingIntervalSeconds=w.number("pingIntervalSeconds", 60, 0),
    )
    if watchdog.enabled and watchdog.pingIntervalSeconds <= 0:
        w.error("pingIntervalSeconds", "must be more than 0 when the watchdog is enabled")
    w.finish()
    serverAuth = _parseAuth(s, "auth")
    origins = s.strings("allowedOrigins")
    demoPage = s.bool("demoPage", True)
    limits = _parseLimits(s.section("limits"))
    s.finish()
    server = ServerConfig(
        endpoint=endpoint,
        listen=listen,
        workers=workers,
        timezone=timezone,
        dataDir=dataDir,
        watchdog=watchdog,
        auth=serverAuth,
        allowedOrigins=origins,
        listenSource=listenSource,
        demoPage=demoPage,
        limits=limits,
    )

    # restApi
    r = top.section("restApi")
    restEnabled = r.bool("enabled", True)
    restListen, restSource = _listenFromSeed(r, "127.0.0.1", 8092)
    rest = RestConfig(
        enabled=restEnabled,
        listen=restListen,
        auth=_parseAuth(r, "auth"),
        listenSource=restSource,
        idempotencySeconds=r.number("idempotencySeconds", 300, 0),
    )
    r.finish()

    # chat
    c = top.section("chat")
    m = c.section("message")
    queueOld = m.bool("enableUndeliveredQueue", False)
    queueOn = c.bool("enableUndeliveredQueue", queueOld) if c.has("enableUndeliveredQueue") else queueOld
    u = c.section("undelivered")
    storage = u.str("storage", "sqlite")
    if storage not in STORAGES:
        u.error("storage", f"unknown storage {json.dumps(storage)} (use one of: {', '.join(STORAGES)})")
        storage = "memory"
    undelivered = UndeliveredConfig(
        storage=storage,
        ttlSeconds=u.number("ttlSeconds", 604800, 0),
        maxPerUser=u.int("maxPerUser", 1000, 1),
    )
    u.finish()
    maxSize = 10 * 1024 * 1024
    if m.has("maxSize"):
        try:
            maxSize = parseSize(m.raw["maxSize"])
        except ValueError as e:
            m.error("maxSize", str(e))
    message = MessageConfig(
        maxSize=maxSize,
        enableDeliveryStatus=m.bool("enableDeliveryStatus", False),
        enableSendBack=m.bool("enableSendBack", False),
        ignoredTypesSendBack=frozenset(m.strings("ignoredTypesSendBack")),
        enforceSender=m.bool("enforceSender", True),
    )
    m.finish()
    h = c.section("history")
    historyStorage = h.str("storage", "sqlite")
    if historyStorage not in STORAGES:
        h.error("storage", f"unknown storage {json.dumps(historyStorage)} (use one of: {', '.join(STORAGES)})")
        historyStorage = "memory"
    history = HistoryConfig(
        enabled=h.bool("enabled", False),
        storage=historyStorage,
        maxPerUser=h.int("maxPerUser", 1000, 1),
        ttlSeconds=h.number("ttlSeconds", 604800, 0),
    )
    h.finish()
    userIds = c.str("userIds", "any")
    if userIds not in USER_ID_RULES:
        c.error("userIds", f"unknown rule {json.dumps(userIds)} (use one of: {', '.join(USER_ID_RULES)})")
        userIds = "any"
    c.finish()
    chat = ChatConfig(userIds=userIds, enableUndeliveredQueue=queueOn, undelivered=undelivered, message=message, history=history)

    # event
    e = top.section("event")
    event = EventConfig(
        enabled=e.bool("enabled", False),
        enableRetry=e.bool("enableRetry", True),
        retryIntervalSeconds=e.number("retryIntervalSeconds", 10),
        retryCount=e.int("retryCount", 3, 0),
        sendBotMessages=e.bool("sendBotMessages", False),
        maxParallelWorkers=e.int("maxParallelWorkers", 16, 1),
        ignoreTypes=frozenset(e.strings("ignoreTypes")),
        targets=_parseTargets(e, "targets"),
        presence=e.bool("presence", False),
        presenceDebounceSeconds=e.number("presenceDebounceSeconds", 3, 0),
    )
    e.finish()

    # cluster
    cl = top.section("cluster")
    redis = cl._get("redis", None, lambda v: v is None or isinstance(v, str), "a redis:// URL or null")
    if redis is not None:
        from .redis.address import parseRedisURL

        try:
            parseRedisURL(redis)
        except ValueError:
            cl.error("redis", f"must be a redis:// or unix:// URL, not {json.dumps(redis)}")
    cluster = ClusterConfig(
        redis=redis,
        heartbeatSeconds=cl.number("heartbeatSeconds", 10, 0.1),
        nodeTimeoutSeconds=cl.number("nodeTimeoutSeconds", 30, 0.1),
    )
    cl.finish()
    top.finish()
    if server.workers > 1 and cluster.redis is None:
        # the original's workers were threads (its files say 8): start them
        # unchanged, as one process
        warnings.append(f"server.workers: {server.workers} worker processes need cluster.redis: running one "
                        f"process; set cluster.redis to run {server.workers}")
        server = replace(server, workers=1)

    config = Config(server, rest, chat, event, cluster, tuple(warnings))
    problems.extend(_crossChecks(config))
    if checkEndpoints:
        # without what the seed's own checks found already (a missing file)
        problems.extend(p for p in endpointProblems(config) if p not in problems)
    if problems:
        raise ConfigError(problems, warnings)
    return config


def endpointProblems(config: Config) -> list[str]:
    """
    Check that the listen endpoints of C{config} can be used, without
    listening: the endpoint strings, their ports, the TLS key and
    certificate files.
    """
    problems = _listenProblems("server", config.server.listen, config.server.listenSource)
    if config.restApi.enabled:
        problems += _listenProblems("restApi", config.restApi.listen, config.restApi.listenSource)
    return problems


def startWarnings(config: Config) -> list[str]:
    """
    Warnings about a config that works but is risky, given at start (and by
    C{-T}): each names the key and says how to fix it.
    """
    warnings = []
    rest = config.restApi
    if rest.enabled and rest.auth.type == "noauth":
        interface = listenInterface(rest.listen)
        if interface is not None and not _isLoopback(interface):
            where = f"{interface or 'every address'}"
            key = "restApi.address" if rest.listenSource == "seed" else listenKey("restApi", rest.listenSource)
            warnings.append(
                f"{key}: the REST API listens on {where} with noauth: anyone "
                f"who reaches it can send messages as anyone; set restApi.auth, or listen on 127.0.0.1"
            )
    if config.event.presence and not config.event.enabled:
        warnings.append("event.presence: true, but event.enabled is false: no presence event is sent; "
                        "set event.enabled and a target")
    return warnings


def _isLoopback(interface: str) -> bool:
    import ipaddress

    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def _crossChecks(config: Config) -> list[str]:
    """
    Problems that involve more than one key, or features that this version
    does not have yet (refused rather than ignored).
    """
    problems = []
    clustered = config.cluster.redis is not None
    if config.server.workers > 1:
        for key, listen in (("server.listen", config.server.listen), ("restApi.listen", config.restApi.listen)):
            if not listen.startswith("tcp:"):
                problems.append(f"{key}: workers share tcp: sockets only (put TLS in front of them, "
                                f"or use server.workers 1), not {json.dumps(listen)}")
    if config.chat.enableUndeliveredQueue and clustered and config.chat.undelivered.storage != "redis":
        problems.append(
            'chat.undelivered.storage: with cluster.redis the queue is shared by the nodes: use "redis"'
        )
    if config.chat.enableUndeliveredQueue and not clustered and config.chat.undelivered.storage == "redis":
        problems.append('chat.undelivered.storage: "redis" needs cluster.redis; use "sqlite" or "memory"')
    history = config.chat.history
    if history.enabled and clustered and history.storage != "redis":
        problems.append('chat.history.storage: with cluster.redis the inbox is shared by the nodes: use "redis"')
    if history.enabled and not clustered and history.storage == "redis":
        problems.append('chat.history.storage: "redis" needs cluster.redis; use "sqlite" or "memory"')
    if clustered and config.cluster.nodeTimeoutSeconds <= config.cluster.heartbeatSeconds:
        problems.append("cluster.nodeTimeoutSeconds: must be longer than cluster.heartbeatSeconds")
    if config.event.enabled and not config.event.targets:
        problems.append("event.targets: at least one target is needed when event.enabled is true")
    return problems


def loadConfig(path: str, checkEndpoints: bool = True) -> Config:
    """
    Read and parse the config file at C{path}.

    @raise ConfigError: when the file cannot be read, is not JSON, or has problems.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror}"])
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError([f"{path}: not valid JSON: {e}"])
    return parseConfig(raw, checkEndpoints)


def withOverrides(
    config: Config, ws: str | None = None, rest: str | None = None, dataDir: str | None = None
) -> Config:
    """
    Apply the command line's C{--ws}, C{--rest} and C{--data-dir}.
    """
    server, restApi = config.server, config.restApi
    if ws is not None:
        server = replace(server, listen=ws, listenSource="--ws")
    if dataDir is not None:
        server = replace(server, dataDir=dataDir)
    if rest is not None:
        restApi = replace(restApi, listen=rest, enabled=True, listenSource="--rest")
    return replace(config, server=server, restApi=restApi)
