# -*- test-case-name: tests.test_reload -*-
"""
SIGHUP: read the config file again and apply what can change while clients
stay connected.

Applied at once, for what comes next: C{server.auth} and C{restApi.auth}
(new handshakes and requests; connections already open stay),
C{server.allowedOrigins}, C{server.endpoint}, and the message settings
(C{chat.message}: C{maxSize}, delivery status, send-back, C{enforceSender}),
and C{server.limits} (new connections and requests; what was counted so far,
connections per address and auth failures, is kept).
The event settings and targets apply too (while events stay on: turning
them on or off, and the presence events' settings, need a restart); a
delivery that waits goes to the target now at its place in C{targets}.  The
keys that need a restart (listen addresses, workers, storage, the cluster,
the watchdog) are logged as such and keep their running value.  A file with
errors is refused: its problems are logged and the running config stays.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .auth import Authenticator, Credentials, buildAuthenticator
from .config import Config, ConfigError, LimitsConfig, listenKey
from .events.targets.senders import makeSenders

__all__ = ["ReloadableAuthenticator", "reload", "restartKeys"]

log = Logger()


class ReloadableAuthenticator(Authenticator):
    """
    An authenticator whose checks a reload can swap: it asks C{current}.
    """

    def __init__(self, current: Authenticator) -> None:
        self.current = current

    @property  # type: ignore[override]
    def isNoAuth(self) -> bool:
        return self.current.isNoAuth

    def authenticate(self, credentials: Credentials) -> Deferred[bool]:
        return self.current.authenticate(credentials)

    def identify(self, credentials: Credentials) -> Deferred[Any]:
        return self.current.identify(credentials)


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
        ("restApi.enabled", old.restApi.enabled, new.restApi.enabled),
        (_listenKey("restApi", old.restApi, new.restApi), old.restApi.listen, new.restApi.listen),
        ("restApi.idempotencySeconds", old.restApi.idempotencySeconds, new.restApi.idempotencySeconds),
        ("chat.enableUndeliveredQueue", old.chat.enableUndeliveredQueue, new.chat.enableUndeliveredQueue),
        ("chat.undelivered", old.chat.undelivered, new.chat.undelivered),
        ("event.enabled", old.event.enabled, new.event.enabled),
        ("event.presence", old.event.presence, new.event.presence),
        ("event.presenceDebounceSeconds", old.event.presenceDebounceSeconds, new.event.presenceDebounceSeconds),
        ("chat.history", old.chat.history, new.chat.history),
        ("cluster", old.cluster, new.cluster),
    ]
    # a REST auth that starts or stops being basic changes the 401's header
    oldBasic, newBasic = old.restApi.auth.usesType("basic"), new.restApi.auth.usesType("basic")
    if oldBasic != newBasic:
        pairs.append(("restApi.auth (to or from basic)", old.restApi.auth.type, new.restApi.auth.type))
    return [(key, a, b) for key, a, b in pairs if a != b]


#: the keys of the original's layout that an endpoint string's parts come
#: from (L{wsserver.config}'s C{_listenFromSeed}), by part
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
                       watchdog=old.server.watchdog),
        restApi=replace(new.restApi, enabled=old.restApi.enabled, listen=old.restApi.listen,
                        listenSource=old.restApi.listenSource, idempotencySeconds=old.restApi.idempotencySeconds,
                        auth=old.restApi.auth if any(k.startswith("restApi.auth") for k, _, _ in restart)
                        else new.restApi.auth),
        chat=replace(new.chat, enableUndeliveredQueue=old.chat.enableUndeliveredQueue,
                     undelivered=old.chat.undelivered),
        event=(replace(new.event, presence=old.event.presence,
                       presenceDebounceSeconds=old.event.presenceDebounceSeconds)
               if old.event.enabled and new.event.enabled else old.event),
        cluster=old.cluster,
    )
    httpClient = getattr(server, "httpClient", None)
    factory = server.ws.factory
    applied = []
    if running.server.auth != old.server.auth:
        factory.authenticator = buildAuthenticator(running.server.auth, httpClient, reactor, subjectRequired=True)
        factory.cookieAuth = running.server.auth.usesType("cookie")
        applied.append("server.auth")
    if running.server.allowedOrigins != old.server.allowedOrigins:
        factory.allowedOrigins = frozenset(running.server.allowedOrigins)
        applied.append("server.allowedOrigins")
    if running.server.endpoint != old.server.endpoint:
        factory.path = running.server.endpoint
        applied.append("server.endpoint")
    if running.server.demoPage != old.server.demoPage:
        applied.append("server.demoPage")
    if running.server.endpoint != old.server.endpoint or running.server.demoPage != old.server.demoPage:
        # the page names the WebSocket path
        factory.setDemoPage(running.server)
    if running.chat.message != old.chat.message:
        factory.setMessageConfig(running.chat.message)
        server.router.setMessageConfig(running.chat.message)
        if server.rest is not None:
            server.rest.factory.maxBody = running.chat.message.maxSize
        applied.append("chat.message")
    if running.server.limits != old.server.limits:
        _applyLimits(server, running.server.limits)
        applied.append("server.limits")
    notifier = getattr(server, "notifier", None)
    if notifier is not None and running.event != old.event:
        notifier.reconfigure(running.event, makeSenders(running.event, httpClient, reactor))
        applied.append("event")
    restAuth = getattr(server, "restAuth", None)
    if restAuth is not None and running.restApi.auth != old.restApi.auth:
        restAuth.current = buildAuthenticator(running.restApi.auth, httpClient, reactor)
        applied.append("restApi.auth")
    for warning in running.warnings:
        log.warn("config: {warning}", warning=warning)
    server.config = running
    log.info("reload done: {applied}", applied=", ".join(applied) + " applied" if applied else "nothing to apply")
    return running


def _applyLimits(server: Any, limits: LimitsConfig) -> None:
    """
    Give the running server new C{server.limits}.
    """
    server.limits.reconfigure(limits)
    server.ws.factory.setLimits(limits)
    server.router.messages.maxRecipients = limits.maxRecipients
    server.router.maxTrackedUsers = limits.maxTrackedUsers
    if server.rest is not None:
        server.rest.factory.setRequestTimeout(limits.requestTimeoutSeconds)
