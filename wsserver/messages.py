# -*- test-case-name: tests.test_messages -*-
"""
Chat messages (SPEC section 3): validation of what a client sends, and the
object the server delivers.

Each message is parsed once (C{orjson}) and serialized once; the wording of
the errors is the original server's, so that clients that show them keep
working.

Integers in C{data} beyond 64 bits are carried exactly: orjson reads them
as floats (or refuses them beyond a double's range) and cannot write them,
so a payload whose C{data} holds a float that may be one is read again, and
such a message written, with the stdlib's C{json}, which keeps Python's
exact integers.  Only those messages pay for it; others pay one type test,
and, when C{data} is an object or an array, one more pass of orjson over it
(writing it, to look for floats that large).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .config import Config
from .reloadable import IReloadable

from .ids import BOT, MAX_NUMERIC, InvalidUserId, UserId, UserIdRule, anyRule, numericRule

__all__ = [
    "BOT",
    "InvalidPayload",
    "Message",
    "MessageFactory",
    "parseUserId",
    "InvalidUserId",
    "dumpJSON",
    "parsePayload",
    "InvalidSince",
    "parseSince",
]

#: The longest ack token a client may send.
MAX_ACK = 64

#: The most string ids a L{MessageFactory} remembers as checked (their
#: checks are redone after it forgets them all at once).
KNOWN_IDS = 65536

_MAX_ID = MAX_NUMERIC

#: Floats from here on (in magnitude) may be integers beyond 64 bits that
#: orjson read as floats: it reads -2^63 .. 2^64-1 as integers.
_HUGE = 2.0**63

#: A JSON integer of at least 19 digits (the shortest that can be out of
#: orjson's range is -2^63-1), as a value (after C{:}, C{[} or C{,}) and not
#: followed by a fraction or exponent. Digits in a string can match too.
_LONG_INTEGER = re.compile(rb"([:,\[]\s*)-?[0-9]{19,}+(?![.eE])")
_LONG_INTEGER_STR = re.compile(_LONG_INTEGER.pattern.decode())


class InvalidPayload(ValueError):
    """
    A message that is not a valid chat message; C{reason} says why, in the
    original's words (C{$.type must be a string}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parseUserId(values: list[str] | None, rule: UserIdRule = numericRule) -> UserId:
    """
    Parse the C{id} query parameter (all of its values) into a user id, with
    C{rule} (C{chat.userIds}).

    @raise InvalidUserId: saying what is wrong with it.
    """
    if not values or values == [""]:
        raise InvalidUserId("Id required in query parameter: ?id={id}")
    if len(values) > 1:
        raise InvalidUserId("Id given more than once in query parameter: ?id={id}")
    value = rule.fromText(values[0])
    if value == BOT:
        raise InvalidUserId("Invalid id 0: reserved for the server")
    return value


def parsePayload(payload: bytes | str) -> Any:
    """
    A message's JSON text as Python objects: with orjson, or, when its
    C{data} holds an integer beyond 64 bits, with the stdlib's C{json},
    which reads it exactly.

    @raise InvalidPayload: when it is not JSON (orjson's error message).
    """
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        return _parseRefused(payload, e)
    if type(obj) is dict:
        data = obj.get("data")
        kind = type(data)
        if kind is dict or kind is list:
            # orjson writes every float from 1e16 on with an exponent, e+16
            # .. e+308, and a "+" nowhere else but in strings: with no "+"
            # in the text (memchr) there is no such float, found several
            # times faster than by walking the values; with one, walk
            try:
                plus = data and orjson.dumps(data).find(b"+") >= 0
            except TypeError:  # nested deeper than orjson writes
                plus = True
            if plus and _holdsHugeFloat(data):
                return _parseExact(payload)
        elif kind is float and not -_HUGE < data < _HUGE:  # type: ignore[operator]
            return _parseExact(payload)
    return obj


def _holds(data: Any, scalar: type, outside: Callable[[Any], bool]) -> bool:
    """
    Whether decoded JSON C{data} holds a value of type C{scalar} (exactly:
    a bool is no int) for which C{outside} is true; walked with a stack, so
    any depth.
    """
    stack: list[Any] = [data]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is scalar:
            if outside(value):
                return True
        elif kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def _holdsHugeFloat(data: dict[str, Any] | list[Any]) -> bool:
    """
    Whether decoded C{data} holds a float of magnitude 2^63 or more.
    """
    return _holds(data, float, lambda value: not -_HUGE < value < _HUGE)


def _parseRefused(payload: bytes | str, error: orjson.JSONDecodeError) -> Any:
    """
    A payload that orjson refused: read with the stdlib's C{json} when its
    only problem (for orjson) is integers beyond a double's range (over 308
    digits, "number is infinity"); otherwise L{InvalidPayload} with orjson's
    message.
    """
    text = isinstance(payload, str)
    longInteger = _LONG_INTEGER_STR if text else _LONG_INTEGER
    if longInteger.search(payload) is None:  # type: ignore[arg-type]
        raise InvalidPayload(str(error)) from None
    # orjson takes it with 0 in place of every long integer: the stdlib
    # reads it the same but for those
    try:
        orjson.loads(longInteger.sub(r"\g<1>0" if text else rb"\g<1>0", payload))  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        raise InvalidPayload(str(error)) from None
    return _parseExact(payload)


def _parseExact(payload: bytes | str) -> Any:
    # orjson took it (or it with 0 for its long integers), so it is UTF-8
    # JSON without NaN, Infinity or lone surrogates; the stdlib can still
    # refuse an integer of more than 4300 digits (ValueError) or nesting
    # deeper than the interpreter's stack
    try:
        return json.loads(payload if isinstance(payload, str) else bytes(payload).decode("utf-8"))
    except RecursionError:
        raise InvalidPayload("depth limit exceeded") from None
    except ValueError as e:
        raise InvalidPayload(str(e).split(":")[0]) from None


def _holdsBigInt(obj: Any) -> bool:
    """
    Whether C{obj} (decoded JSON) holds an integer that orjson cannot write.
    """
    return _holds(obj, int, lambda value: not -(2**63) <= value < 2**64)


def dumpJSON(obj: Any) -> bytes:
    """
    C{obj} (decoded JSON) as compact UTF-8 JSON: with orjson, or with the
    stdlib's C{json} when it holds integers beyond 64 bits.

    @raise TypeError: when it cannot be written (nested deeper than orjson
        allows, with no big integer in it).
    """
    try:
        return orjson.dumps(obj)
    except TypeError:
        if not _holdsBigInt(obj):
            raise
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (RecursionError, ValueError) as e:
        raise TypeError(str(e)) from None
class InvalidSince(ValueError):
    """
    A C{since} query parameter that is not a non-negative integer.
    """


def parseSince(values: list[str] | None) -> int | None:
    """
    Parse the C{since} query parameter: the last inbox seq a resuming
    client has, or L{None} when the query has none.

    @raise InvalidSince: saying what is wrong with it.
    """
    if values is None:
        return None
    if len(values) != 1 or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 20:
        raise InvalidSince("Invalid since in query parameter: ?since={seq} must be a non-negative integer")
    return int(values[0])


@dataclass(slots=True)
class Message:
    """
    A routed message: what every recipient receives.
    """

    id: str
    type: str
    text: str
    timestamp: str
    sender: UserId
    recipients: list[UserId]
    data: Any
    #: the sender's ack token (C{"ack"}), not delivered
    ack: str | None = None
    #: the recipient's inbox seq of a delivered copy (ignored: each
    #: recipient's copy gets its own)
    seq: int | None = None

    def toDict(self) -> dict[str, Any]:
        """
        The delivered object, with the original's field order.
        """
        return {
            "id": self.id,
            "type": self.type,
            "text": self.text,
            "timestamp": self.timestamp,
            "sender": self.sender,
            "recipients": self.recipients,
            "data": self.data,
        }

    def serialize(self) -> bytes:
        """
        The delivered object as UTF-8 JSON, ready for a text frame.
        """
        try:  # (L{dumpJSON}, inlined: every message's path)
            return orjson.dumps(self.toDict())
        except TypeError:
            return dumpJSON(self.toDict())

    def isForBot(self) -> bool:
        """
        Whether this message is for the server only (C{recipients == [0]}).
        """
        return self.recipients == [BOT]


@implementer(IReloadable)
class MessageFactory:
    """
    Validates payloads and stamps messages with an id and a timestamp.

    Ids have the original's form (C{5A32EA72-38F4D5DC-3541-00000008}): the
    time in seconds, a random number for this server process, the process id,
    and a counter; unique across restarts and across the nodes of a cluster.

    @param clock: where the time comes from.
    @param tz: the zone that timestamps are written in.
    @param maxRecipients: the most recipients a message may have (0: no
        limit; C{server.limits.maxRecipients}).
    @param ids: how user ids are read (C{chat.userIds}); every edge (the
        WebSocket's query, the REST API) reads them with this rule.
    """

    def __init__(self, clock: IReactorTime, tz: ZoneInfo, nodeTag: int | None = None,
                 maxRecipients: int = 0, ids: UserIdRule = anyRule) -> None:
        self.maxRecipients = maxRecipients
        self.ids = ids
        #: string ids read lately, and what they are (see L{_recipients})
        self._known: dict[str, UserId] = {}
        #: the last list of recipients made only of strings, as given and
        #: as read (see L{_recipients})
        self._lastGiven: list[str] | None = None
        self._lastRead: list[UserId] = []
        self._clock = clock
        self._tz = tz
        node = random.getrandbits(32) if nodeTag is None else nodeTag
        #: the middle of every id: this process's random number and pid
        self._idMiddle = "-%08X-%04X-" % (node, os.getpid() & 0xFFFF)
        self._counter = 0
        #: the second last written in a timestamp, and its text around the
        #: microseconds (a timestamp per message: formatted once a second)
        self._stampSecond: float | None = None
        self._stampHead = ""
        self._stampTail = ""


    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Apply a reload's C{server.limits.maxRecipients} to the messages
        validated from now on (see L{IReloadable}).
        """
        if new.server.limits.maxRecipients == old.server.limits.maxRecipients:
            return []
        self.maxRecipients = new.server.limits.maxRecipients
        return ["server.limits"]
    def newId(self) -> str:
        """
        A new unique message id.
        """
        self._counter = counter = (self._counter + 1) & 0xFFFFFFFF
        return "%08X%s%08X" % (int(self._clock.seconds()) & 0xFFFFFFFF, self._idMiddle, counter)

    def timestamp(self) -> str:
        """
        Now, in ISO 8601 with microseconds and the UTC offset of the zone.

        The date, the time to the second and the offset are formatted once
        a second; the microseconds are rounded as
        L{datetime.fromtimestamp} rounds them (half to even), so the text
        is the same as C{datetime.fromtimestamp(now, tz).isoformat()}'s.
        """
        now = self._clock.seconds()
        second = math.floor(now)
        micro = round((now - second) * 1e6)
        if micro >= 1000000:
            second += 1
            micro -= 1000000
        if second != self._stampSecond:
            text = datetime.fromtimestamp(second, self._tz).isoformat(timespec="seconds")
            # (a four-digit year: "YYYY-MM-DDTHH:MM:SS" then the offset)
            self._stampHead, self._stampTail = text[:19], text[19:]
            self._stampSecond = second
        return "%s.%06d%s" % (self._stampHead, micro, self._stampTail)

    def fromPayload(self, payload: bytes | str, sender: UserId | None, enforceSender: bool = True) -> Message:
        """
        Parse and validate what a client sent.

        @param payload: the JSON text, as bytes (any WebSocket frame) or str.
        @param sender: the sender when the payload names none (the
            connection's user, or 0 for the REST API); L{None} when the payload
            must name its sender (the original's rule, C{enforceSender} off).
        @param enforceSender: when true a C{sender} in the payload must equal
            C{sender}.
        @raise InvalidPayload: naming what is wrong.
        """
        return self.fromObject(parsePayload(payload), sender, enforceSender)

    def fromObject(self, obj: Any, sender: UserId | None, enforceSender: bool = True) -> Message:
        """
        Validate a decoded payload; see L{fromPayload}.
        """
        if type(obj) is not dict:
            raise InvalidPayload("$ must be an object")
        kind = obj.get("type")
        if type(kind) is not str:
            raise InvalidPayload("$.type must be a string")
        text = obj.get("text")
        if text is None:
            if kind == "text":
                raise InvalidPayload("$.text must be string")
            text = ""
        elif type(text) is not str:
            raise InvalidPayload("$.text must be string")
        given = obj.get("sender")
        if given is None:
            if sender is None:
                raise InvalidPayload(self._badSender(None))
        else:
            # (a number in range: every message's path)
            if type(given) is not int or not 0 <= given <= _MAX_ID:  # type: ignore[operator]
                # (a string the rule read lately: a dict lookup, not its check)
                known = self._known.get(given) if type(given) is str else None
                given = known if known is not None else self._readId(given)
                if given is None:
                    raise InvalidPayload(self._badSender(obj.get("sender")))
            if enforceSender and sender is not None and given != sender:
                raise InvalidPayload(f"$.sender must be your own id ({sender})")
            sender = given
        recipients = obj.get("recipients")
        # (the count first: a huge list is refused without looking at it)
        if type(recipients) is list and self.maxRecipients and len(recipients) > self.maxRecipients:
            raise InvalidPayload(f"$.recipients[] must contain at most {self.maxRecipients} values")
        if type(recipients) is not list:
            raise InvalidPayload(self._badRecipients(None))
        for r in recipients:  # (numbers in range, inlined: every message's path)
            if type(r) is not int or not 0 <= r <= _MAX_ID:
                # (one string id read lately, inlined: a pair's every message)
                known = self._known.get(r) if type(r) is str and len(recipients) == 1 else None
                recipients = [known] if known is not None else self._recipients(recipients)
                break
        if not recipients:
            raise InvalidPayload("$.recipients[] must contains at least 1 value")
        timestamp = obj.get("timestamp")
        if timestamp is None:
            timestamp = self.timestamp()
        elif type(timestamp) is not str:
            raise InvalidPayload("$.timestamp must be string")
        ack = obj.get("ack")
        if ack is not None and (type(ack) is not str or len(ack) > MAX_ACK):
            raise InvalidPayload(f"$.ack must be a string of at most {MAX_ACK} characters")
        assert sender is not None
        return Message(self.newId(), kind, text, timestamp, sender, recipients, obj.get("data"), ack)

    def _recipients(self, given: list[Any]) -> list[UserId]:
        """
        C{given}, not all numbers, read with the rule; the string ids seen
        lately are remembered (at most L{KNOWN_IDS}), so that a recipient
        written again costs a dict lookup, not the rule's check.

        A list of strings equal to the last one read (a sender writing to
        its group again: the fan-out case) is not read again: comparing two
        lists of strings costs a fraction of hashing each string anew, and
        the ids it gives, already hashed, make the plan's lookups cheaper.
        Only lists of strings are kept: a string equals nothing but a
        string, whereas C{1.0 == 1}.

        @raise InvalidPayload: naming the first that is no id.
        """
        if self.ids.numeric:
            for r in given:
                if type(r) is not int or not 0 <= r <= _MAX_ID:
                    raise InvalidPayload(self._badRecipients(r))
        if given == self._lastGiven:
            return self._lastRead[:]  # (a copy: each message owns its list)
        known = self._known
        fromJSON = self.ids.fromJSON
        out = []
        strings = True
        for r in given:
            if type(r) is str:
                userId = known.get(r)
                if userId is None:
                    userId = self._readId(r)
                    if userId is None:
                        raise InvalidPayload(self._badRecipients(r))
            else:
                strings = False
                userId = fromJSON(r)
                if userId is None:
                    raise InvalidPayload(self._badRecipients(r))
            out.append(userId)
        if strings:
            self._lastGiven = given
            self._lastRead = out[:]
        return out

    def _readId(self, value: object) -> UserId | None:
        """
        C{value} read with the rule (L{None}: no id); a string id is
        remembered (at most L{KNOWN_IDS}), so that read again, as a sender
        or a recipient, it costs a dict lookup and gives the same object.
        """
        userId = self.ids.fromJSON(value)
        if userId is not None and type(value) is str:
            known = self._known
            if len(known) >= KNOWN_IDS:
                known.clear()
            known[value] = userId  # type: ignore[index]
        return userId

    def _badSender(self, value: object) -> str:
        if self.ids.numeric:
            return "$.sender must be uint64_t"
        if value is None:
            return "$.sender must be a user id"
        return f"$.sender must be a user id: {self.ids.problem(value)}"

    def _badRecipients(self, value: object) -> str:
        if self.ids.numeric:
            return "$.recipients[] must be uint64_t[]"
        if value is None:  # (not an array)
            return "$.recipients[] must be user ids"
        return f"$.recipients[] must be user ids: {self.ids.problem(value)}"

    def notification(self, message: Message, recipient: UserId, timestamp: str | None = None) -> Message:
        """
        The delivery status sent to C{message}'s sender when it reached
        C{recipient} (C{enableDeliveryStatus}).

        @param timestamp: its timestamp (one for all the notifications of a
            message); now by default.
        """
        return Message(
            self.newId(),
            "notification_received",
            "",
            timestamp if timestamp is not None else self.timestamp(),
            BOT,
            [message.sender],
            {"id": message.id, "recipient": recipient},
        )

    def system(self, kind: str, userId: UserId, data: Any) -> Message:
        """
        A message from the server to C{userId} only (C{message_ack},
        C{history_gap}).
        """
        return Message(self.newId(), kind, "", self.timestamp(), BOT, [userId], data)
