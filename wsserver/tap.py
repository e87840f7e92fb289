# -*- test-case-name: tests.test_tap -*-
"""
C{twistd wsserver}: the command line, and the wiring of the services.

This module only wires: the logic lives in L{wsserver.routing}, the
WebSocket adapter in L{wsserver.connection}, the REST API in L{wsserver.rest}.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import sys
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, LogPublisher, globalLogPublisher
from twisted.python import usage

from . import __version__
from .auth import Authenticator, buildAuthenticator
from .cluster import ClusterNode, ClusterStats, StatsJournal
from .checks import endpointProblems
from .config import AuthConfig, Config, ConfigError, defaultConfig, listenKey, loadConfig, startWarnings, withOverrides
from .ids import ruleFor
from .messages import MessageFactory
from .metrics import Readiness, ServerCollector, SharedMetrics, makeRegistry
from .routing.interfaces import NoPeers
from .connection import CLOSE_CODES, ChatServerFactory, prepareFrame
from .reload import ReloadableAuthenticator, reload
from .rest import Operations, RestSite, makeRestResource
from .routing import Router
from .service import ListeningService, LogGuardService, StartError
from .database import DATABASE_FILENAME, Database, StorageError, openDatabase
from .events.notifier import EventNotifier
from .events.presence import MemoryPresenceLedger, PresenceDebouncer, PresenceEvents, RedisPresenceLedger
from .events.sqlite import SqliteEventStore
from .events.targets.senders import makeSenders
from .history import IInbox
from .history.memory import MemoryInbox
from .history.redis import RedisInbox
from .history.sqlite import SqliteInbox
from .idempotency import IIdempotency, MemoryIdempotency, RedisIdempotency
from .limits import Limits, connectionCeiling
from .prune import IPrunable, pruneService
from .proxy import ProxyProtocolEndpoint, parseTrustedProxies
from .quietlog import QuietStartLog
from .queue import IUndeliveredStore
from .queue.memory import MemoryUndeliveredStore
from .queue.pending import PendingBounds, PendingWrites
from .queue.redis import RedisUndeliveredStore
from .queue.sqlite import SqliteUndeliveredStore
from .redis.address import parseRedisURL
from .redis.links import RedisLinks
from .watchdog import Watchdog
from .workers import METRICS_DIR_ENV, WorkerPool, parseAdopt

__all__ = ["Options", "WsServer", "buildService", "main", "makeService"]

log = Logger()

#: Seconds that clients get to answer the shutdown's close frame.
SHUTDOWN_GRACE = 5.0
#: Seconds between two prunings of the expired entries of the stores.
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
        ["ws", None, None,
         "WebSocket listen endpoint: tcp:8085 for ws://, ssl:8443:privateKey=K:certKey=C for wss://."],
        ["rest", None, None, "REST API listen endpoint, e.g. tcp:8092:interface=127.0.0.1."],
        ["data-dir", None, None, "Directory for the data that survives a restart."],
        ["adopt", None, None, "Internal: listening sockets handed over by the parent of server.workers."],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.json")})

    config: Config
    #: sockets given by a worker pool's parent (C{--adopt}), by name
    adopt: dict[str, int] | None = None
    #: the arguments as given, for the worker processes
    args: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.args = list(sys.argv[1:] if options is None else options)
        super().parseOptions([_testFlag(a) for a in self.args if a not in _TEST_OFF])

    def getSynopsis(self) -> str:
        """
        The usage line: C{Usage: wsserver ...} under the C{wsserver} console
        script (L{main}), twistd's own under twistd.
        """
        if getattr(self.parent, "consoleScript", False):
            return f"Usage: wsserver {self.synopsis}"
        return super().getSynopsis()

    def getUsage(self, width: int | None = None) -> str:
        """
        The options' help, without the internal ones (C{--adopt}, which only
        the workers' parent passes).
        """
        hidden = [o for o in self.longOpt if o.rstrip("=") in _INTERNAL]
        shown = self.longOpt
        self.longOpt = [o for o in shown if o not in hidden]
        try:
            return super().getUsage(width)
        finally:
            self.longOpt = shown

    def opt_version(self) -> None:
        """
        Print the wsserver version and exit.
        """
        print(f"wsserver {__version__}")
        raise SystemExit(0)

    def load(self) -> Config:
        """
        Read the config file (or the defaults) and apply the options: at
        start, and again for a reload.

        @raise ConfigError: naming every problem.
        """
        if self["config"]:
            config = loadConfig(self["config"], checkEndpoints=False)
        else:
            config = defaultConfig()
        config = withOverrides(config, ws=self["ws"], rest=self["rest"], dataDir=self["data-dir"])
        problems = endpointProblems(config)
        if problems:
            raise ConfigError(problems, config.warnings)
        return config

    def postOptions(self) -> None:
        if self["adopt"]:
            try:
                self.adopt = parseAdopt(self["adopt"])
            except ValueError as e:
                raise usage.UsageError(str(e))
        try:
            config = self.load()
        except ConfigError as e:
            if self["test"]:
                for warning in e.warnings:
                    print(f"warning: {warning}")
                for problem in e.problems:
                    print(f"error: {problem}")
                raise SystemExit(1)
            for problem in e.problems:
                print(f"wsserver: invalid configuration: {problem}", file=sys.stderr)
            raise SystemExit(1)
        if self["test"]:
            for warning in [*config.warnings, *startWarnings(config), *_fileLimitWarnings(config)]:
                print(f"warning: {warning}")
            print("config OK")
            raise SystemExit(0)
        self.config = config


def _fileLimitWarnings(config: Config) -> list[str]:
    """
    C{-T}: the warning that an explicit C{maxConnections} is above what
    the open files limit allows (the hard one: the server raises its soft
    limit to it at start), as the start would log it.
    """
    openFiles = _openFiles(hard=True)
    if openFiles is None:
        return []
    ceiling = connectionCeiling(config.server.limits.maxConnections, openFiles)
    return [ceiling.text] if ceiling.warning else []

#: options that are not for users, left out of C{--help}
_INTERNAL = frozenset({"adopt"})

#: C{--test=0} (and the like): the original's way of saying "no -T"
_TEST_OFF = frozenset(f"--test={v}" for v in ("0", "false", "no", "off"))


def _testFlag(arg: str) -> str:
    """
    C{--test=1} (the original's systemd unit runs it), C{--test=true}: the
    flag C{--test}.
    """
    if arg.lower() in {f"--test={v}" for v in ("1", "true", "yes", "on")}:
        return "--test"
    return arg


class WsServer(QuietStartLog, MultiService):
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
    notifier: EventNotifier | None = None
    cluster: ClusterNode | None = None
    clusterStats: ClusterStats | None = None
    limits: Limits
    #: the config running (a reload changes it)
    config: Config
    httpClient: Any = None
    #: the REST API's auth, which a reload can swap
    restAuth: ReloadableAuthenticator | None = None
    #: claimed keys (C{Idempotency-Key}, ack tokens): the cluster's with
    #: C{cluster.redis}
    idempotency: IIdempotency
    #: the presence events' debouncer, when C{event.presence} is on
    presence: PresenceDebouncer | None = None

    def reload(self, load: Callable[[], Config], reactor: Any) -> None:
        """
        Read the config again with C{load} and apply what can change while
        clients stay connected (SIGHUP); see L{wsserver.reload}.
        """
        reload(self, load, reactor)

    def stopService(self) -> Deferred[None]:
        """
        Stop the services one after the other, in the reverse order of their
        addition, each once the one before it has stopped: so what was added
        first (the HTTP pool, the database, the notifier) is released after
        what still uses it.  (L{MultiService} would stop them all at once:
        the database closed under the notifier's last deliveries.)
        """
        Service.stopService(self)
        d: Deferred[Any] = succeed(None)
        for service in reversed(list(self)):

            def stop(_: Any, service: Any = service) -> Deferred[Any]:
                return maybeDeferred(service.stopService).addErrback(
                    lambda f: log.failure("could not stop {service}", f, service=service)
                )

            d.addCallback(stop)
        return d.addCallback(lambda _: None)


class _AtStop(Service):
    """
    Runs C{stop} (which may return a L{Deferred}) when the server stops: for
    what must be released last, such as connection pools and the database.
    """

    def __init__(self, stop: Callable[[], Any]) -> None:
        self._stop = stop

    def stopService(self) -> Any:
        super().stopService()
        return self._stop()


def _endpoint(reactor: Any, listen: str, adopt: dict[str, int] | None, name: str) -> Any:
    """
    The endpoint to serve on: from the endpoint string, or the socket a
    worker pool's parent handed over.
    """
    if adopt is None or name not in adopt:
        return serverFromString(reactor, listen)
    import socket

    from twisted.internet.endpoints import AdoptedStreamServerEndpoint

    probe = socket.socket(fileno=adopt[name])
    family = probe.family
    probe.detach()
    return AdoptedStreamServerEndpoint(reactor, adopt[name], family)


def buildService(config: Config, reactor: Any, httpClient: Any = None,
                 adopt: dict[str, int] | None = None, openFiles: int | None = None,
                 logPublisher: LogPublisher | None = None, metricsDir: str | None = None) -> WsServer:
    """
    Wire a server for C{config} on C{reactor}.

    @param httpClient: a treq C{HTTPClient} for remote auth and webhooks; one
        on C{reactor} is made when needed and none is given.
    @param adopt: listening sockets to serve on (a worker's), by name
        (C{ws}, C{rest}), instead of the configured endpoints.
    @param openFiles: the open files limit that C{maxConnections} is fitted
        to; by default the process's (its soft C{RLIMIT_NOFILE}).
    @param logPublisher: the publisher whose observers are guarded against
        log floods while the server runs (twistd's global one); none by
        default.
    @param metricsDir: a worker's: the directory where the workers of its
        pool share their metrics (L{SharedMetrics}); L{None}: this
        process's own only.
    @raise StorageError: when the database in the data directory cannot be
        used (start-up only: it is opened before the reactor runs).
    """
    top = WsServer()
    top.config = config
    if logPublisher is not None:
        # first: stopped last, so the lines of the shutdown are guarded too
        LogGuardService(logPublisher, reactor).setServiceParent(top)
    chat = config.chat
    events = config.event if config.event.enabled else None
    # Services stop in the reverse order of their addition: what is added
    # first (the database, the HTTP pool, the notifier) is released last,
    # after the clients were closed.
    if httpClient is None and (
        config.server.auth.usesType("remote") or config.restApi.auth.usesType("remote") or events is not None
    ):
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = max(2, config.event.maxParallelWorkers)
        httpClient = HTTPClient(Agent(reactor, pool=pool))
        _AtStop(pool.closeCachedConnections).setServiceParent(top)

    history = chat.history
    database = _database(config, reactor)
    if database is not None:
        _AtStop(database.close).setServiceParent(top)

    notifier = top.notifier = _notifier(config, database, httpClient, reactor)
    if notifier is not None:
        notifier.setServiceParent(top)

    links, node = _cluster(config, reactor)
    if links is not None and node is not None:
        # the links before the node: closed after it, and after the stores
        # that use them (the WebSocket service stops first)
        links.setServiceParent(top)
        node.setServiceParent(top)
        top.cluster = node

    undelivered = config.chat.undelivered
    pendingWrites = PendingWrites(undelivered.maxPendingWrites, undelivered.maxPendingBytes,
                                  undelivered.maxPendingMillis / 1000)
    store = _undeliveredStore(config, database, links, node, pendingWrites, reactor)
    if isinstance(store, RedisUndeliveredStore):
        # stops after the clients are closed (the WebSocket service is
        # added later), before the links close (added earlier)
        _AtStop(store.close).setServiceParent(top)
    inbox = _inbox(config, database, links, reactor)
    pruned: list[tuple[str, IPrunable]] = []
    if store is not None:
        pruned.append(("undelivered messages", store))
    if inbox is not None:
        pruned.append(("inbox entries", inbox))
    if pruned:
        pruneService(pruned, reactor, PRUNE_INTERVAL).setServiceParent(top)
    top.idempotency = RedisIdempotency(links.bulk) if links is not None else MemoryIdempotency(reactor)

    limits = top.limits = Limits(config.server.limits, reactor, parseTrustedProxies(config.server.trustedProxies),
                                 _openFiles() if openFiles is None else openFiles)
    ceiling = limits.ceiling()
    if ceiling is not None:
        (log.warn if ceiling.warning else log.info)("{limit}", limit=ceiling.text)
    messages = MessageFactory(reactor, config.server.tz, maxRecipients=limits.config.maxRecipients,
                              ids=ruleFor(chat.userIds))
    presence = None
    presenceEvents: PresenceEvents | None = None
    if notifier is not None and events is not None and events.presence:
        ledger = RedisPresenceLedger(links.bulk) if links is not None else MemoryPresenceLedger()
        presenceEvents = PresenceEvents(ledger, node if node is not None else NoPeers(), messages,
                                        notifier.notifyServerEvent)
        presence = top.presence = PresenceDebouncer(reactor, events.presenceDebounceSeconds, presenceEvents.settled)
        # stops after the WebSocket service (added later): the closes of the
        # shutdown start no timer
        _AtStop(presence.stop).setServiceParent(top)

    journal = StatsJournal() if node is not None else None
    router = top.router = Router(
        chat.message,
        reactor,
        messages,
        store=store,
        notify=notifier.notify if notifier is not None else None,
        prepare=prepareFrame,
        peers=node,
        statsListener=journal,
        maxTrackedUsers=limits.config.maxTrackedUsers,
        presenceListener=presence,
        inbox=inbox,
        replayLimit=history.maxPerUser,
        notifyCommitted=notifier.committed if notifier is not None else None,
        ackSeconds=config.restApi.idempotencySeconds,
        idempotency=top.idempotency,
        # the events' bound too: senders wait while either is full
        pendingWrites=PendingBounds(pendingWrites, notifier.pending) if notifier is not None else pendingWrites,
    )
    # stops after the WebSocket service (added later): its retry timers are
    # cancelled once the clients are closed
    _AtStop(router.stop).setServiceParent(top)
    if node is not None and presenceEvents is not None:
        # a dead node's users: offline once for the cluster (SPEC 7)
        nodeDied = presenceEvents.nodeDied
        node.onDied(lambda nodeId, users: nodeDied(users, router.isOnline))
    clusterStats = None
    if node is not None:
        assert journal is not None and links is not None
        # after the node and before the WebSocket service: it stops once the
        # clients are closed (their last counts written), before the Redis
        # links close
        clusterStats = top.clusterStats = ClusterStats(node, links.bulk, router, journal, reactor)
        clusterStats.setServiceParent(top)

    # on the WebSocket, a token's sub is the user: tokens must have one
    def buildWsAuth(auth: AuthConfig) -> Authenticator:
        return buildAuthenticator(auth, httpClient, reactor, subjectRequired=True)

    factory = ChatServerFactory(router, config.server, chat.message, buildWsAuth(config.server.auth), reactor, limits,
                                buildAuth=buildWsAuth)
    wsEndpoint = _endpoint(reactor, config.server.listen, adopt, "ws")
    if config.server.proxyProtocol:
        wsEndpoint = ProxyProtocolEndpoint(wsEndpoint, lambda: limits.proxies)
    top.ws = ListeningService(
        "WebSocket",
        wsEndpoint,
        factory,
        onStop=lambda: factory.closeAll(CLOSE_CODES["shutdown"], "Server shutdown", SHUTDOWN_GRACE),
        # a joining node learns who is online elsewhere before it takes its
        # first connection (those that come meanwhile wait in the backlog)
        holdUntil=node.whenJoined if node is not None else None,
        key=listenKey("server", config.server.listenSource),
    )
    top.ws.setServiceParent(top)
    if isinstance(store, RedisUndeliveredStore):
        # too many messages wait for Redis: the WebSocket senders wait too
        store.onPressure(factory.pauseReading, factory.resumeReading)
    if node is not None:
        # too many messages for other nodes wait for Redis: likewise
        node.onPressure(factory.pauseReading, factory.resumeReading)

    top.httpClient = httpClient
    # in a cluster, ready once the node learnt who is online elsewhere, and
    # while it reaches Redis
    readiness = Readiness(joined=(lambda: node.joined) if node is not None else (lambda: True),
                          redis=links.reachable if links is not None else (lambda: True))
    top.ws.whenListening().addCallback(lambda _: setattr(readiness, "listening", True))
    if config.restApi.enabled:
        def buildRestAuth(auth: AuthConfig) -> Authenticator:
            return buildAuthenticator(auth, httpClient, reactor)

        restAuth = top.restAuth = ReloadableAuthenticator(buildRestAuth(config.restApi.auth), buildRestAuth)
        realm = "wsserver" if config.restApi.auth.usesType("basic") else None
        clusterGauges = (lambda: (node.nodeCount(), node.outboxSize())) if node is not None else None
        collector = ServerCollector(router, notifier, store, clusterGauges=clusterGauges,
                                    limitCloses=limits.limitCloses)
        registry = makeRegistry(collector)
        shared = None
        if metricsDir is not None:
            # a worker of server.workers: /metrics answers for all of them
            shared = SharedMetrics(registry, metricsDir, reactor, refresh=collector.refresh)
            shared.setServiceParent(top)
        operations = Operations(collector, registry, readiness,
                                chat.undelivered.storage if chat.enableUndeliveredQueue else None, shared)
        site = RestSite(makeRestResource(router, restAuth, realm, notifier, stats=clusterStats,
                                         operations=operations, limits=limits, idempotency=top.idempotency,
                                         idempotencySeconds=config.restApi.idempotencySeconds,
                                         messages=messages, clock=reactor, inbox=inbox),
                        maxBody=chat.message.maxSize, limits=limits, reactor=reactor)
        top.rest = ListeningService("REST API", _endpoint(reactor, config.restApi.listen, adopt, "rest"), site,
                                    onStop=site.stop, key=listenKey("restApi", config.restApi.listenSource))
        top.rest.setServiceParent(top)

    if config.server.watchdog.enabled:
        Watchdog(config.server.watchdog, router.allConnections, reactor).setServiceParent(top)
    # added last, so stopped first: /ready says 503 from the stop's start
    _AtStop(lambda: setattr(readiness, "stopping", True)).setServiceParent(top)

    for warning in [*config.warnings, *startWarnings(config)]:
        log.warn("config: {warning}", warning=warning)
    if config.server.auth.usesType("cookie") and not config.server.allowedOrigins:
        log.warn(
            "server.auth uses cookies but server.allowedOrigins is empty: handshakes that carry an "
            "Origin header (browsers) are refused with 403; list your app's origins in "
            'server.allowedOrigins, or ["*"] to allow every one'
        )
    return top


def _database(config: Config, reactor: Any) -> Database | None:
    """
    The database in the data directory, opened (start-up only: it blocks)
    when a store or the event notifier keeps its data there.
    """
    chat = config.chat
    if (
        (chat.enableUndeliveredQueue and chat.undelivered.storage == "sqlite")
        or config.event.enabled
        or (chat.history.enabled and chat.history.storage == "sqlite")
    ):
        return openDatabase(os.path.join(config.server.dataDir, DATABASE_FILENAME), reactor)
    return None


def _notifier(config: Config, database: Database | None, httpClient: Any, reactor: Any) -> EventNotifier | None:
    """
    The event notifier, its deliveries in the database, or L{None} when
    C{event} is off.
    """
    if not config.event.enabled:
        return None
    assert database is not None
    return EventNotifier(config.event, SqliteEventStore(database, reactor, config.event.writeDelayMillis / 1000),
                         makeSenders(config.event, httpClient, reactor), reactor)


def _cluster(config: Config, reactor: Any) -> tuple[RedisLinks | None, ClusterNode | None]:
    """
    The Redis links and this node of the cluster, or L{None}s without
    C{cluster.redis}.
    """
    if config.cluster.redis is None:
        return None, None
    links = RedisLinks(parseRedisURL(config.cluster.redis), reactor, config.cluster.commandTimeoutSeconds)
    cluster = config.cluster
    return links, ClusterNode(links, reactor, cluster.heartbeatSeconds, cluster.nodeTimeoutSeconds)


def _undeliveredStore(config: Config, database: Database | None, links: RedisLinks | None,
                      node: ClusterNode | None, pending: PendingWrites, reactor: Any) -> IUndeliveredStore | None:
    """
    The undelivered queue of C{chat.undelivered.storage}, or L{None} when
    it is off; what it has not written yet is counted in C{pending}.
    """
    if not config.chat.enableUndeliveredQueue:
        return None
    undelivered = config.chat.undelivered
    if undelivered.storage == "redis":
        assert links is not None and node is not None
        # writes wait for Redis when it is unreachable (closed with the links)
        return RedisUndeliveredStore(links.bulk, undelivered.ttlSeconds, undelivered.maxPerUser,
                                     announce=node.announceQueued, pending=pending, clock=reactor)
    if undelivered.storage == "sqlite":
        assert database is not None
        return SqliteUndeliveredStore(database, undelivered.ttlSeconds, undelivered.maxPerUser, reactor, pending)
    return MemoryUndeliveredStore(undelivered.ttlSeconds, undelivered.maxPerUser)


def _inbox(config: Config, database: Database | None, links: RedisLinks | None, reactor: Any) -> IInbox | None:
    """
    The inboxes of C{chat.history.storage}, or L{None} when they are off.
    """
    history = config.chat.history
    if not history.enabled:
        return None
    if history.storage == "redis":
        assert links is not None
        return RedisInbox(links.bulk, reactor, history.ttlSeconds, history.maxPerUser)
    if history.storage == "sqlite":
        assert database is not None
        return SqliteInbox(database, reactor, history.ttlSeconds, history.maxPerUser)
    return MemoryInbox(history.ttlSeconds, history.maxPerUser)


def makeService(options: Options, reactor: Any = None) -> WsServer:
    """
    twistd's entry point: the server for the parsed command line.
    """
    from ._internals import makeDebugArgumentsLazy

    makeDebugArgumentsLazy()
    _quietStartErrors()
    log.info("wsserver {version} starting", version=__version__)
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
    config = options.config
    if config.server.workers > 1 and options.adopt is None:
        workers = WorkerPool(config, [a for a in options.args], reactor)
        workers.twistdOptions = options.parent
        _onHangup(reactor, workers.reload)
        return workers  # type: ignore[return-value]
    try:
        metricsDir = os.environ.get(METRICS_DIR_ENV) if options.adopt is not None else None
        top = buildService(config, reactor, adopt=options.adopt, logPublisher=globalLogPublisher,
                           metricsDir=metricsDir or None)
    except StorageError as e:
        print(f"wsserver: cannot start: {e}", file=sys.stderr)
        raise SystemExit(1)
    top.twistdOptions = options.parent
    _onHangup(reactor, lambda: top.reload(options.load, reactor))
    return top


def _onHangup(reactor: Any, reload: Callable[[], Any]) -> None:
    """
    On SIGHUP, call C{reload} in the reactor's thread, instead of dying (the
    default action): systemd's C{ExecReload} sends it.
    """

    def hangup(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, hangup)


def _quietStartErrors() -> None:
    """
    Make a L{StartError} that ends twistd (raised while it starts the
    services, after it wrote its pid file) one log line and exit status 1,
    not a traceback: twistd lets the exception through once it has removed
    its pid file, so the interpreter's last word is ours to say.
    """
    previous = sys.excepthook
    if getattr(previous, "_wsserver", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, StartError):
            log.critical("cannot start: {why}", why=str(value))
        else:
            previous(kind, value, tb)

    hook._wsserver = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _openFiles(hard: bool = False) -> int | None:
    """
    The open files limit (the soft one, or the C{hard} one that
    L{_raiseFileLimit} raises it to), or L{None} when there is none.
    """
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1 if hard else 0]
    return None if limit == resource.RLIM_INFINITY or limit < 0 else limit


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
    no pid file.  Its usage and its errors speak of C{wsserver}, not of the
    twistd command line it builds: C{wsserver: option --bogus not
    recognized}.
    """
    from twisted.scripts.twistd import ServerOptions, runApp

    class Command(ServerOptions):  # type: ignore[misc]
        #: read by L{Options.getSynopsis}
        consoleScript = True

    args = sys.argv[1:] if argv is None else argv
    command = Command()
    try:
        command.parseOptions(["--nodaemon", "--pidfile=", "wsserver", *args])
    except usage.UsageError as e:
        print(f"wsserver: {e}", file=sys.stderr)
        print("wsserver: see wsserver --help for the options", file=sys.stderr)
        raise SystemExit(1)
    runApp(command)
