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

The parts are in their own modules, imported one way only:
L{wsserver.configschema} (the typed reads every section parser uses),
L{wsserver.auth.config} (the auth objects), L{wsserver.checks} (the checks
that read files and certificates); this module holds the other sections
and assembles the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .auth.config import AuthConfig, parseAuth
from .checks import endpointProblems, readFile, seedFileProblems
from .configschema import ConfigError, _Section, _quote, _typeName, listenKey, parseSize
from .events.targets.types import TARGET_TYPES
from .proxy import parseTrustedProxies
from .placeholders import isPlaceholder, placeholderProblem

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

STORAGES = ("memory", "sqlite", "redis")
#: the values of C{chat.userIds} (see L{wsserver.ids})
USER_ID_RULES = ("any", "numeric")


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
    #: seconds a client closed as a slow consumer has to read its frames and
    #: the 4011 close frame and answer it; then the connection is aborted
    closeGraceSeconds: float = 10
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
    #: load balancers (addresses or CIDR blocks, C{"10.0.0.0/8"}) whose
    #: C{X-Forwarded-For} (WebSocket and REST) or PROXY header names the
    #: client: the per-IP limits, the auth throttle and the logs use that
    #: address; from any other peer the header is ignored
    trustedProxies: tuple[str, ...] = ()
    #: connections to C{listen} from a trusted proxy begin with a PROXY
    #: protocol v1 or v2 header (HAProxy's C{send-proxy}, an AWS NLB); needs
    #: C{trustedProxies}; other peers' connections are read as plain HTTP
    proxyProtocol: bool = False

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
    #: messages handed to the queue and not yet written (committed, or
    #: answered by Redis); over it the senders are not read until half of
    #: it is written; 0: no limit
    maxPendingWrites: int = 10000
    #: their payload bytes (a size, as C{maxSize}); over it, the same; 0: no limit
    maxPendingBytes: int = 16 * 1024 * 1024
    #: the age of the oldest message handed to the queue and not yet
    #: written, in milliseconds: a message routed while it is older stops
    #: the senders being read until what waited then is written.  What a
    #: crash (C{kill -9}) loses without acks is what waits, so at most the
    #: messages routed in about this long (plus a quarter), which are
    #: committed about a transaction later: the last ~100 ms of routing by
    #: default; 0: no limit
    maxPendingMillis: float = 50


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
    #: groups of deliveries in flight at once: webhook requests, and the
    #: transactions (SQL) and confirm windows (C{amqp}) of up to a target's
    #: C{batchSize} rows or publishes each
    maxParallelWorkers: int = 16
    #: deliveries stored and not yet settled (pending or waiting for a
    #: retry) over which the connections and REST requests that send
    #: messages stop being read until the targets caught up below half of
    #: it; nothing is dropped; 0: no bound
    maxPending: int = 100000
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
    #: seconds a Redis command (connecting included) may take before its
    #: connection is dropped and it is tried again (a frozen Redis)
    commandTimeoutSeconds: float = 10


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
        # whether the files can be read: checks.seedFileProblems, after the parse
        for name, path in (("crtPath", crtPath), ("keyPath", keyPath)):
            if not path:
                secure.error(name, "required when secure.enabled is true")
        parts = [f"ssl:{port}", f"privateKey={_quote(keyPath)}", f"certKey={_quote(crtPath)}"]
    else:
        parts = [f"tcp:{port}"]
    if address not in ("*", "", "0.0.0.0"):
        parts.append(f"interface={_quote(address)}")
    parts.append("backlog=1024")
    return ":".join(parts), "seed"


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
            auth=parseAuth(t, "auth", readFile, credential=True),
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
        closeGraceSeconds=sect.number("closeGraceSeconds", default.closeGraceSeconds, 0),
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

    The section parsers do no I/O; what looks at the machine is in
    L{wsserver.checks}: it reads C{jwt} public keys (given to the auth
    parser to read with), checks that C{secure}'s certificate files exist
    and, with C{checkEndpoints}, the listen endpoints.

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
    serverAuth = parseAuth(s, "auth", readFile)
    origins = s.strings("allowedOrigins")
    demoPage = s.bool("demoPage", True)
    limits = _parseLimits(s.section("limits"))
    trustedProxies = s.strings("trustedProxies")
    try:
        parseTrustedProxies(trustedProxies)
    except ValueError as e:
        s.error("trustedProxies", str(e))
    proxyProtocol = s.bool("proxyProtocol", False)
    if proxyProtocol and not trustedProxies:
        s.error("proxyProtocol", "needs server.trustedProxies: the PROXY header is read only from the proxies "
                                 "listed there")
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
        trustedProxies=trustedProxies,
        proxyProtocol=proxyProtocol,
    )

    # restApi
    r = top.section("restApi")
    restEnabled = r.bool("enabled", True)
    restListen, restSource = _listenFromSeed(r, "127.0.0.1", 8092)
    rest = RestConfig(
        enabled=restEnabled,
        listen=restListen,
        auth=parseAuth(r, "auth", readFile),
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
    pendingBytes = UndeliveredConfig.maxPendingBytes
    if u.has("maxPendingBytes"):
        try:
            pendingBytes = parseSize(u.raw["maxPendingBytes"])
        except ValueError as e:
            u.error("maxPendingBytes", str(e))
    undelivered = UndeliveredConfig(
        storage=storage,
        ttlSeconds=u.number("ttlSeconds", 604800, 0),
        maxPerUser=u.int("maxPerUser", 1000, 1),
        maxPendingWrites=u.int("maxPendingWrites", UndeliveredConfig.maxPendingWrites, 0),
        maxPendingBytes=pendingBytes,
        maxPendingMillis=u.number("maxPendingMillis", UndeliveredConfig.maxPendingMillis, 0),
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
        maxPending=e.int("maxPending", EventConfig.maxPending, 0),
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
        commandTimeoutSeconds=cl.number("commandTimeoutSeconds", 10, 0.1),
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
    problems.extend(seedFileProblems(config))
    problems.extend(_crossChecks(config))
    if checkEndpoints:
        # without what the seed's own checks found already (a missing file)
        problems.extend(p for p in endpointProblems(config) if p not in problems)
    if problems:
        raise ConfigError(problems, warnings)
    return config


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
    problems.extend(_placeholderProblems(config))
    return problems


def _placeholderProblems(config: Config) -> list[str]:
    """
    The secrets of C{config} that are still a placeholder of the examples or
    the docs (C{change-me}): auth secrets, tokens and passwords, those of the
    event targets and of C{cluster.redis}; each a problem naming its key.
    """
    found: list[tuple[str, str, str]] = []

    def auth(key: str, a: AuthConfig) -> None:
        field = {"basic": "password", "header": "value", "cookie": "value", "bearer": "value",
                 "jwt": "secret"}.get(a.type)
        if field is not None:
            found.append((f"{key}.{field}", getattr(a, field), ""))
        for i, sub in enumerate(a.types):
            auth(f"{key}.types[{i}]", sub)
        found.extend((f"{key}.headers", value, f"the header {name}") for name, value in a.headers)

    def targets(key: str, items: tuple[TargetConfig, ...]) -> None:
        for i, t in enumerate(items):
            at = f"{key}[{i}]"
            auth(f"{at}.auth", t.auth)
            found.append((f"{at}.password", t.password, ""))
            urlKey = "url" if t.type == "amqp" else "dsn"
            found.append((f"{at}.{urlKey}", getattr(t.options, "password", ""), "the password"))
            targets(f"{at}.fallback", t.fallback)

    auth("server.auth", config.server.auth)
    auth("restApi.auth", config.restApi.auth)
    targets("event.targets", config.event.targets)
    if config.cluster.redis is not None:
        from .redis.address import parseRedisURL

        try:
            found.append(("cluster.redis", parseRedisURL(config.cluster.redis).password, "the password"))
        except ValueError:  # reported already
            pass
    return [placeholderProblem(key, value, what) for key, value, what in found if value and isPlaceholder(value)]


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
