# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsserver}: the command line, and the wiring of the services.

This module only wires: the logic lives in L{wsserver.routing}, the
WebSocket adapter in L{wsserver.protocol}, the REST API in L{wsserver.rest}.
"""

from __future__ import annotations

import gc
import resource
import sys
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from .auth import buildAuthenticator
from .config import Config, ConfigError, defaultConfig, endpointProblems, loadConfig, withOverrides
from .messages import MessageFactory
from .protocol import CLOSE_CODES, ChatServerFactory, prepareFrame
from .rest import RestSite, makeRestResource
from .routing import Router
from .service import ListeningService
from .storage import MemoryUndeliveredStore
from .watchdog import Watchdog

__all__ = ["Options", "WsServer", "buildService", "main", "makeService"]

log = Logger()

#: Seconds that clients get to answer the shutdown's close frame.
SHUTDOWN_GRACE = 5.0
#: Seconds between two prunings of expired undelivered messages.
PRUNE_INTERVAL = 60.0


class Options(usage.Options):
    """
    C{twistd wsserver [-C config.json] [-T] [--ws ENDPOINT] [--rest ENDPOINT] [--data-dir DIR]}
    """

    synopsis = "[-C config.json] [-T] [--ws ENDPOINT] [--rest ENDPOINT] [--data-dir DIR]"
    optFlags = [
        ["test", "T", "Check the configuration: print 'config OK' or every problem, and exit 0 or 1."],
    ]
    optParameters = [
        ["config", "C", None, "The JSON config file (the original wsserver's layout)."],
        ["ws", None, None, "WebSocket listen endpoint: tcp:8085 for ws://, ssl:8443:privateKey=K:certKey=C for wss://."],
        ["rest", None, None, "REST API listen endpoint, e.g. tcp:8092:interface=127.0.0.1."],
        ["data-dir", None, None, "Directory for the data that survives a restart."],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.json")})

    config: Config

    def postOptions(self) -> None:
        try:
            if self["config"]:
                config = loadConfig(self["config"], checkEndpoints=False)
            else:
                config = defaultConfig()
            config = withOverrides(config, ws=self["ws"], rest=self["rest"], dataDir=self["data-dir"])
            problems = endpointProblems(config)
            if problems:
                raise ConfigError(problems)
        except ConfigError as e:
            if self["test"]:
                for problem in e.problems:
                    print(f"error: {problem}")
                raise SystemExit(1)
            print("wsserver: invalid configuration, not starting:", file=sys.stderr)
            for problem in e.problems:
                print(f"  {problem}", file=sys.stderr)
            raise SystemExit(1)
        if self["test"]:
            for warning in config.warnings:
                print(f"warning: {warning}")
            print("config OK")
            raise SystemExit(0)
        self.config = config


class WsServer(MultiService):
    """
    The whole server: the WebSocket and REST services, the watchdog and the
    housekeeping timers, around one router.

    @ivar router: the routing core.
    @ivar ws: the WebSocket listening service.
    @ivar rest: the REST listening service, or L{None} when disabled.
    """

    router: Router
    ws: ListeningService
    rest: ListeningService | None = None


class _PoolCloser(Service):
    """
    Closes the kept-alive connections of the HTTP client at stop.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def stopService(self) -> Any:
        super().stopService()
        return self._pool.closeCachedConnections()


def buildService(config: Config, reactor: Any, httpClient: Any = None) -> WsServer:
    """
    Wire a server for C{config} on C{reactor}.

    @param httpClient: a treq C{HTTPClient} for remote auth; one on
        C{reactor} is made when needed and none is given.
    """
    if httpClient is None and (config.server.auth.usesType("remote") or config.restApi.auth.usesType("remote")):
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor)
        httpClient = HTTPClient(Agent(reactor, pool=pool))
    else:
        pool = None

    top = WsServer()
    if pool is not None:
        _PoolCloser(pool).setServiceParent(top)
    chat = config.chat
    store = None
    if chat.enableUndeliveredQueue:
        store = MemoryUndeliveredStore(chat.undelivered.ttlSeconds, chat.undelivered.maxPerUser)
        pruner = TimerService(PRUNE_INTERVAL, lambda: store.prune(reactor.seconds()))
        pruner.clock = reactor
        pruner.setServiceParent(top)

    router = top.router = Router(
        chat.message,
        reactor,
        MessageFactory(reactor, config.server.tz),
        store=store,
        prepare=prepareFrame,
    )

    wsAuth = buildAuthenticator(config.server.auth, httpClient, reactor)
    factory = ChatServerFactory(router, config.server, chat.message, wsAuth, reactor)
    top.ws = ListeningService(
        "WebSocket",
        serverFromString(reactor, config.server.listen),
        factory,
        onStop=lambda: factory.closeAll(CLOSE_CODES["shutdown"], "Server shutdown", SHUTDOWN_GRACE),
    )
    top.ws.setServiceParent(top)

    if config.restApi.enabled:
        restAuth = buildAuthenticator(config.restApi.auth, httpClient, reactor)
        realm = "wsserver" if config.restApi.auth.usesType("basic") else None
        site = RestSite(makeRestResource(router, restAuth, realm), maxBody=chat.message.maxSize)
        top.rest = ListeningService("REST API", serverFromString(reactor, config.restApi.listen), site)
        top.rest.setServiceParent(top)

    if config.server.watchdog.enabled:
        Watchdog(config.server.watchdog, router.allConnections, reactor).setServiceParent(top)

    for warning in config.warnings:
        log.warn("config: {warning}", warning=warning)
    if config.server.auth.usesType("cookie") and not config.server.allowedOrigins:
        log.warn(
            "server.auth uses cookies but server.allowedOrigins is empty: any web site can open a "
            "connection with its visitors' cookies; list your app's origins"
        )
    return top


def makeService(options: Options, reactor: Any = None) -> WsServer:
    """
    twistd's entry point: the server for the parsed command line.
    """
    from ._autobahn import makeDebugArgumentsLazy

    makeDebugArgumentsLazy()
    _raiseFileLimit()
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    # What the start made (the libraries: some 200,000 objects) will live as
    # long as the process: keep it out of the cyclic collector's full passes,
    # which otherwise stalled every connection for ~40 ms every few seconds
    # under load (p99 latency of the fan-out benchmark: 42 ms before, 1.8 ms
    # after).
    reactor.callWhenRunning(gc.freeze)
    return buildService(options.config, reactor)


def _raiseFileLimit() -> None:
    """
    Raise the soft limit of open files to the hard limit: each connection is
    one, and the usual soft limit of 1,024 would cap the server there.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open files limit raised from {soft} to {hard}", soft=soft, hard=hard)


def main(argv: list[str] | None = None) -> None:
    """
    The C{wsserver} console script: C{twistd --nodaemon wsserver ARGS}, with
    no pid file.
    """
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "wsserver", *args]
    run()
