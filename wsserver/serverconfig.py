# -*- test-case-name: tests.test_config -*-
"""
The C{server} and C{restApi} sections of the configuration: where the
server listens and what it serves there (L{ServerConfig}, with its
C{watchdog}; L{RestConfig}), and their parsers.

Both read the original's C{address}/C{port}/C{secure} as well as C{listen}.
This module imports the shared machinery (L{wsserver.configschema}), the
sections it holds (L{wsserver.auth.config}, L{wsserver.limitsconfig}) and
the proxy list's parser, never L{wsserver.config}, which calls
L{parseServer} and L{parseRest}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .auth.config import AuthConfig, parseAuth
from .configschema import _Section, _quote
from .limitsconfig import LimitsConfig, parseLimits
from .proxy import parseTrustedProxies

__all__ = ["RestConfig", "ServerConfig", "WatchdogConfig", "parseRest", "parseServer"]


@dataclass(frozen=True)
class WatchdogConfig:
    enabled: bool = False
    connectionLifetimeSeconds: float = 600
    pingIntervalSeconds: float = 60


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


def parseServer(s: _Section, readFile: Callable[[str], bytes]) -> ServerConfig:
    """
    Parse the C{server} section C{s}, reporting its problems under their keys.

    @param readFile: reads a file (a C{jwt} key), as
        L{wsserver.auth.config.parseAuth} takes it.
    """
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
    limits = parseLimits(s.section("limits"))
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
    return server


def parseRest(r: _Section, readFile: Callable[[str], bytes]) -> RestConfig:
    """
    Parse the C{restApi} section C{r}, as L{parseServer} does C{server}.
    """
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
    return rest


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
