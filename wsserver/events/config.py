# -*- test-case-name: tests.test_config -*-
"""
The C{event} section of the configuration: L{EventConfig}, its targets
(L{TargetConfig}) and their parser.

C{postback} and C{redis} targets have their keys here; every other type
owns its keys in L{wsserver.events.targets.types}.  This module imports the
shared machinery (L{wsserver.configschema}), the auth objects
(L{wsserver.auth.config}) and the target types, never L{wsserver.config},
which calls L{parseEvent}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from ..auth.config import AuthConfig, parseAuth
from ..configschema import _Section
from .targets.types import TARGET_TYPES

__all__ = ["EventConfig", "TargetConfig", "parseEvent"]


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
    #: milliseconds the stored row of a new delivery waits before it is
    #: written: one that its target confirms meanwhile is never written,
    #: only counted; a crash (C{kill -9}) can lose the deliveries of about
    #: the last this many milliseconds of routing of messages without acks
    #: (an ack waits until its deliveries are written); 0: written by the
    #: next transaction (read at start)
    writeDelayMillis: int = 100
    #: milliseconds that new deliveries fewer than a target's C{batchSize}
    #: wait for more before they go out: a light load then goes in one
    #: transaction or confirm window every few milliseconds, not one a
    #: message; a target without a C{batchSize} (a webhook) alone never
    #: waits; 0: at once
    batchWaitMillis: int = 10


def parseEvent(e: _Section, readFile: Callable[[str], bytes]) -> EventConfig:
    """
    Parse the C{event} section C{e}, reporting its problems under their keys.

    @param readFile: reads a file (a target's C{jwt} key), as
        L{wsserver.auth.config.parseAuth} takes it.
    """
    event = EventConfig(
        enabled=e.bool("enabled", False),
        enableRetry=e.bool("enableRetry", True),
        retryIntervalSeconds=e.number("retryIntervalSeconds", 10),
        retryCount=e.int("retryCount", 3, 0),
        sendBotMessages=e.bool("sendBotMessages", False),
        maxParallelWorkers=e.int("maxParallelWorkers", 16, 1),
        maxPending=e.int("maxPending", EventConfig.maxPending, 0),
        ignoreTypes=frozenset(e.strings("ignoreTypes")),
        targets=_parseTargets(e, "targets", readFile),
        presence=e.bool("presence", False),
        presenceDebounceSeconds=e.number("presenceDebounceSeconds", 3, 0),
        writeDelayMillis=e.int("writeDelayMillis", EventConfig.writeDelayMillis, 0, 10000),
        batchWaitMillis=e.int("batchWaitMillis", EventConfig.batchWaitMillis, 0, 1000),
    )
    e.finish()
    return event


def _parseTarget(sect: _Section, index: int, readFile: Callable[[str], bytes]) -> TargetConfig | None:
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
    fallback = _parseTargets(t, "fallback", readFile)
    t.finish()
    return replace(target, fallback=fallback)


def _parseTargets(sect: _Section, name: str, readFile: Callable[[str], bytes]) -> tuple[TargetConfig, ...]:
    raw = sect._get(name, [], lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "an array of objects")
    targets = []
    for i, item in enumerate(raw):
        target = _parseTarget(_Section(item, f"{sect.key(name)}[{i}]", sect.problems, sect.warnings), i, readFile)
        if target is not None:
            targets.append(target)
    return tuple(targets)
