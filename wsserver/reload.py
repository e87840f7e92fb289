# -*- test-case-name: tests.test_reload -*-
"""
SIGHUP: read the config file again and apply what can change while clients
stay connected.

Applied at once, for what comes next: C{server.auth} and C{restApi.auth}
(new handshakes and requests; connections already open stay),
C{server.allowedOrigins}, C{server.endpoint}, and the message settings
(C{chat.message}: C{maxSize}, delivery status, send-back, C{enforceSender}),
and C{server.limits} (new connections and requests; what was counted so far,
connections per address and auth failures, is kept), and
C{server.trustedProxies} (C{server.proxyProtocol} needs a restart).
The event settings and targets apply too (while events stay on: turning
them on or off, and the presence events' settings, need a restart); a
delivery that waits goes to the target now at its place in C{targets}.  The
keys that need a restart (listen addresses, workers, storage, the cluster,
the watchdog) are logged as such and keep their running value.  A file with
errors is refused: its problems are logged and the running config stays.

Each part of the server that a reload changes applies the new config itself
(L{wsserver.reloadable.IReloadable}: the WebSocket factory, the router, the
message factory, the REST site, the limits, the REST auth, the notifier's
targets); this module decides what may change and asks them in turn.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from .auth import Authenticator, Credentials
from .config import AuthConfig, Config, ConfigError, listenKey
from .events.targets.senders import makeSenders
from .reloadable import IReloadable, reloadAll

__all__ = ["ReloadableAuthenticator", "reload", "reloadables", "restartKeys"]

log = Logger()


@implementer(IReloadable)
class ReloadableAuthenticator(Authenticator):
    """
    An authenticator whose checks a reload can swap: it asks C{current}.

    @param current: the checks of the running config.
    @param build: makes the checks of a new C{restApi.auth}; L{None}: a
        reload leaves C{current} as it is.
    """

    def __init__(self, current: Authenticator, build: Callable[[AuthConfig], Authenticator] | None = None) -> None:
        self.current = current
        self._build = build

    @property  # type: ignore[override]
    def isNoAuth(self) -> bool:
        return self.current.isNoAuth

    def authenticate(self, credentials: Credentials) -> Deferred[bool]:
        return self.current.authenticate(credentials)

    def identify(self, credentials: Credentials) -> Deferred[Any]:
        return self.current.identify(credentials)

    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Swap in the checks of a reload's C{restApi.auth} (see
        L{IReloadable}).
        """
        if self._build is None or new.restApi.auth == old.restApi.auth:
            return []
        self.current = self._build(new.restApi.auth)
        return ["restApi.auth"]


@implementer(IReloadable)
class _Events:
    """
    The event notifier's side of a reload: its new targets' senders are
    made here, with the server's HTTP client and reactor, which the notifier
    does not hold.
    """

    def __init__(self, notifier: Any, httpClient: Any, reactor: Any) -> None:
        self._notifier = notifier
        self._httpClient = httpClient
        self._reactor = reactor

    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        if new.event == old.event:
            return []
        self._notifier.reconfigure(new.event, makeSenders(new.event, self._httpClient, self._reactor))
        return ["event"]


def reloadables(server: Any, reactor: Any) -> list[IReloadable]:
    """
    The parts of C{server} (a L{wsserver.tap.WsServer}) that a reload
    applies a new config to, in the order their keys are logged.
    """
    parts: list[IReloadable] = [server.ws.factory, server.router, server.router.messages]
    if server.rest is not None:
        parts.append(server.rest.factory)
    parts.append(server.limits)
    notifier = getattr(server, "notifier", None)
    if notifier is not None:
        parts.append(_Events(notifier, getattr(server, "httpClient", None), reactor))
    restAuth = getattr(server, "restAuth", None)
    if restAuth is not None:
        parts.append(restAuth)
    return parts


def _restartOnly(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """
    The keys whose change needs a restart: (key, running value, new value).
    """
    pairs = [
        (_listenKey("server", old.server, new.server), old.server.listen, new.server.listen),
        ("server.workers", old.server.workers, new.server.workers),
        ("server.dataDir", old.server.dataDir, new.server.dataDir),
        ("server.timezone", old.server.timezone, new.server.timezone),
        ("server.watchdog", old.server.watchdog, new.server.watchdog),
        ("server.proxyProtocol", old.server.proxyProtocol, new.server.proxyProtocol),
        ("restApi.enabled", old.restApi.enabled, new.restApi.enabled),
        (_listenKey("restApi", old.restApi, new.restApi), old.restApi.listen, new.restApi.listen),
        ("restApi.idempotencySeconds", old.restApi.idempotencySeconds, new.restApi.idempotencySeconds),
        ("chat.enableUndeliveredQueue", old.chat.enableUndeliveredQueue, new.chat.enableUndeliveredQueue),
        ("chat.undelivered", old.chat.undelivered, new.chat.undelivered),
        ("event.enabled", old.event.enabled, new.event.enabled),
        ("event.presence", old.event.presence, new.event.presence),
        ("event.presenceDebounceSeconds", old.event.presenceDebounceSeconds, new.event.presenceDebounceSeconds),
        ("event.writeDelayMillis", old.event.writeDelayMillis, new.event.writeDelayMillis),
        ("chat.history", old.chat.history, new.chat.history),
        ("cluster", old.cluster, new.cluster),
    ]
    # a REST auth that starts or stops being basic changes the 401's header
    oldBasic, newBasic = old.restApi.auth.usesType("basic"), new.restApi.auth.usesType("basic")
    if oldBasic != newBasic:
        pairs.append(("restApi.auth (to or from basic)", old.restApi.auth.type, new.restApi.auth.type))
    return [(key, a, b) for key, a, b in pairs if a != b]


#: the keys of the original's layout that an endpoint string's parts come
#: from (L{wsserver.serverconfig}'s C{_listenFromSeed}), by part
_SEED_KEYS = {"port": "port", "interface": "address", "type": "secure", "privateKey": "secure", "certKey": "secure"}


def _seedParts(listen: str) -> dict[str, str]:
    """
    The parts of an endpoint string made from C{address}, C{port} and
    C{secure}: its type, its port and its keyword arguments.
    """
    kind, port, *rest = re.split(r"(?<!\\):", listen) + [""]
    parts = {"type": kind, "port": port}
    parts.update(p.partition("=")[::2] for p in rest if p)
    return parts


def _listenKey(section: str, old: Any, new: Any) -> str:
    """
    The key to name for a change of C{section}'s listen address: the one
    the user wrote, C{server.port} (or C{server.address}, ...) for the
    original's layout, else C{server.listen} or the option (C{--ws}).
    """
    if old.listenSource != "seed" or new.listenSource != "seed":
        return listenKey(section, new.listenSource if new.listenSource != "seed" else old.listenSource)
    a, b = _seedParts(old.listen), _seedParts(new.listen)
    keys = [f"{section}.{key}" for part, key in _SEED_KEYS.items() if a.get(part) != b.get(part)]
    return ", ".join(dict.fromkeys(keys)) or listenKey(section, "listen")


def restartKeys(old: Config, new: Config) -> list[str]:
    """
    The keys that differ between C{old} and C{new} and need a restart.
    """
    return [key for key, _, _ in _restartOnly(old, new)]


def reload(server: Any, load: Callable[[], Config], reactor: Any) -> Config | None:
    """
    Read the config again with C{load} and apply it to C{server} (a
    L{wsserver.tap.WsServer} built by C{buildService}).

    @return: the config now running, or L{None} when the new one was
        refused (the running one stays).
    """
    log.info("reload requested")
    try:
        new = load()
    except ConfigError as e:
        for problem in e.problems:
            log.error("reload refused, running config kept: {problem}", problem=problem)
        return None
    old: Config = server.config
    restart = _restartOnly(old, new)
    for key, _, _ in restart:
        log.warn("reload: {key} changed: takes effect at the next restart", key=key)
    # what a restart is needed for keeps its running value
    running = replace(
        new,
        server=replace(new.server, listen=old.server.listen, listenSource=old.server.listenSource,
                       workers=old.server.workers, dataDir=old.server.dataDir, timezone=old.server.timezone,
                       watchdog=old.server.watchdog, proxyProtocol=old.server.proxyProtocol),
        restApi=replace(new.restApi, enabled=old.restApi.enabled, listen=old.restApi.listen,
                        listenSource=old.restApi.listenSource, idempotencySeconds=old.restApi.idempotencySeconds,
                        auth=old.restApi.auth if any(k.startswith("restApi.auth") for k, _, _ in restart)
                        else new.restApi.auth),
        chat=replace(new.chat, enableUndeliveredQueue=old.chat.enableUndeliveredQueue,
                     undelivered=old.chat.undelivered),
        event=(replace(new.event, presence=old.event.presence,
                       presenceDebounceSeconds=old.event.presenceDebounceSeconds,
                       writeDelayMillis=old.event.writeDelayMillis)
               if old.event.enabled and new.event.enabled else old.event),
        cluster=old.cluster,
    )
    applied = reloadAll(reloadables(server, reactor), old, running)
    for warning in running.warnings:
        log.warn("config: {warning}", warning=warning)
    server.config = running
    log.info("reload done: {applied}", applied=", ".join(applied) + " applied" if applied else "nothing to apply")
    return running

