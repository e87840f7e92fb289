# -*- test-case-name: tests.test_config -*-
"""
The C{chat} section of the configuration: which user ids are accepted
(C{userIds}, read by L{wsserver.ids}), what a message may be
(L{MessageConfig}, C{chat.message}), and the sections it holds: the
undelivered queue's (L{wsserver.queue.config}) and the inbox's
(L{wsserver.history.config}).

Its own module, since the modules that use it (L{wsserver.messages},
L{wsserver.routing}) import the configuration; it imports the shared
machinery (L{wsserver.configschema}) and the sections it holds only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .configschema import _Section, parseSize
from .history.config import HistoryConfig, parseHistory
from .queue.config import UndeliveredConfig, parseUndelivered

__all__ = ["ChatConfig", "MessageConfig", "USER_ID_RULES", "parseChat"]

#: The largest user id: ids are unsigned 64-bit integers.
MAX_USER_ID = 2**64 - 1

#: the values of C{chat.userIds} (see L{wsserver.ids})
USER_ID_RULES = ("any", "numeric")


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


def parseChat(c: _Section) -> ChatConfig:
    """
    Parse the C{chat} section C{c} and the sections it holds, reporting
    their problems under their keys.
    """
    m = c.section("message")
    queueOld = m.bool("enableUndeliveredQueue", False)
    queueOn = c.bool("enableUndeliveredQueue", queueOld) if c.has("enableUndeliveredQueue") else queueOld
    undelivered = parseUndelivered(c.section("undelivered"))
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
    history = parseHistory(c.section("history"))
    userIds = c.str("userIds", "any")
    if userIds not in USER_ID_RULES:
        c.error("userIds", f"unknown rule {json.dumps(userIds)} (use one of: {', '.join(USER_ID_RULES)})")
        userIds = "any"
    c.finish()
    chat = ChatConfig(userIds=userIds, enableUndeliveredQueue=queueOn, undelivered=undelivered, message=message, history=history)
    return chat
