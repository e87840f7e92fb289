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

Each section has its dataclasses and its parser in the module that owns
it, which never imports this one:

  - C{server} and C{restApi}: L{wsserver.serverconfig}, holding
    C{server.limits} (L{wsserver.limitsconfig}) and the auth objects
    (L{wsserver.auth.config});
  - C{chat}: L{wsserver.chatconfig} (C{userIds}, C{message}), holding
    C{chat.undelivered} (L{wsserver.queue.config}) and C{chat.history}
    (L{wsserver.history.config});
  - C{event} and its targets: L{wsserver.events.config};
  - C{cluster}: L{wsserver.clusterconfig}.

They share L{wsserver.configschema} (the typed reads, the error); the checks
that read files and certificates are L{wsserver.checks}.  This module holds
the whole L{Config}, composes the sections' parsers, checks what involves
several sections, and re-exports the sections' names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .auth.config import AuthConfig
from .chatconfig import ChatConfig, MessageConfig, parseChat
from .checks import endpointProblems, readFile, seedFileProblems
from .clusterconfig import ClusterConfig, parseCluster
from .configschema import ConfigError, _Section, _typeName, listenKey, parseSize
from .events.config import EventConfig, TargetConfig, parseEvent
from .history.config import HistoryConfig
from .limitsconfig import LimitsConfig
from .placeholders import isPlaceholder, placeholderProblem
from .queue.config import UndeliveredConfig
from .serverconfig import RestConfig, ServerConfig, WatchdogConfig, parseRest, parseServer

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

    # each section by the module that owns it, in the file's order
    server = parseServer(top.section("server"), readFile)
    rest = parseRest(top.section("restApi"), readFile)
    chat = parseChat(top.section("chat"))
    event = parseEvent(top.section("event"), readFile)
    cluster = parseCluster(top.section("cluster"))
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
