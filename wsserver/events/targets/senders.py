# -*- test-case-name: tests.test_events,tests.test_redistarget,tests.test_targets -*-
"""
L{makeSenders}, the one place where a target's C{type} is turned into its
sender.
"""

from __future__ import annotations

from typing import Any

from ..config import EventConfig
from .. import ISender
from ..notifier import targetKeys
from .postback import PostbackSender
from .redis import RedisSender
from .types import TARGET_TYPES

__all__ = ["makeSenders"]


def makeSenders(config: EventConfig, httpClient: Any, reactor: Any) -> dict[str, ISender]:
    """
    A sender for every target key of L{targetKeys}: webhooks through
    C{httpClient}, Redis targets with a connection each, the types of
    L{wsserver.events.targets.types} by their own C{sender}.
    """
    senders: dict[str, ISender] = {}
    for chain in targetKeys(config).values():
        for key, target in chain:
            if target.type == "postback":
                senders[key] = PostbackSender(target, httpClient, reactor)
            elif target.type in TARGET_TYPES:
                senders[key] = TARGET_TYPES[target.type].sender(key, target.options, target.connectionTimeoutSeconds,
                                                                reactor)
            else:
                senders[key] = RedisSender(target, reactor)
    return senders
