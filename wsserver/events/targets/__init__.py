# -*- test-case-name: tests.test_events,tests.test_redistarget -*-
"""
The event targets: one sender per target type (L{wsserver.events.targets.postback},
L{wsserver.events.targets.redis}), and L{makeSenders}, the one place where a
target's C{type} is turned into its sender.
"""

from __future__ import annotations

from typing import Any

from ...config import EventConfig
from .. import ISender
from ..notifier import targetKeys
from .postback import PostbackSender
from .redis import RedisSender

__all__ = ["makeSenders"]


def makeSenders(config: EventConfig, httpClient: Any, reactor: Any) -> dict[str, ISender]:
    """
    A sender for every target key of L{targetKeys}: webhooks through
    C{httpClient}, Redis targets with a connection each.
    """
    senders: dict[str, ISender] = {}
    for chain in targetKeys(config).values():
        for key, target in chain:
            if target.type == "postback":
                senders[key] = PostbackSender(target, httpClient, reactor)
            else:
                senders[key] = RedisSender(target, reactor)
    return senders
