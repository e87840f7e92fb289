# -*- test-case-name: tests.test_ids -*-
"""
User ids (C{chat.userIds}): parsed once at the edge, one type inside.

A user id is a L{UserId}: an C{int} for a numeric id (1 to 2^64-1; 0 is the
server itself) and a C{str} for any other.  Every edge (the C{?id=} query,
a message's C{sender} and C{recipients}, REST parameters and bodies, a JWT
C{sub}) turns what it was given into that form with one L{UserIdRule}, so
that C{7} and C{"7"} are the same user, and nothing inside needs to look at
an id's type: ints and strs hash and compare cheaply, and written back as
JSON an int is a number and a str a string, which is what the original's
clients saw for numeric ids, byte for byte.

The rules:
  - C{"numeric"}: the original's, every id a JSON number (a uint64);
  - C{"any"} (default): 1 to 128 characters, each an ASCII letter, a digit
    or one of C{_ - . : @ | + =}.  An id made only of digits is a number:
    it must be in 1..2^64-1 with no leading zero (C{"007"} and 2^64 are
    refused as ambiguous), and becomes the C{int}.  C{"-5"} is a string id.
"""

from __future__ import annotations

import re
import sys
from typing import Union

import attr
import orjson

__all__ = [
    "BOT", "InvalidUserId", "UserId", "UserIdRule", "anyRule", "cutShort", "idBytes", "numericRule",
    "parseIdBytes", "redisKey", "ruleFor", "sortKey",
]

#: A user id: an C{int} when numeric, else a C{str}.
UserId = Union[int, str]

#: The server itself ("bot"/admin): cannot connect.
BOT = 0
MAX_NUMERIC = 2**64 - 1
MAX_LENGTH = 128
#: The characters of an id with C{"any"}, as the refusals name them.
CHARACTERS = "letters, digits and _-.:@|+="
_ANY = re.compile(r"[A-Za-z0-9_\-.:@|+=]{1,128}\Z")


class InvalidUserId(ValueError):
    """
    A user id that cannot be used; the message says which rule it breaks.
    """


def cutShort(value: object, limit: int = 24) -> str:
    """
    C{value} as JSON, cut to about C{limit} characters for a refusal (a close
    reason has room for 123 bytes).
    """
    try:
        text = orjson.dumps(value).decode("utf-8")
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class UserIdRule:
    """
    One C{chat.userIds} rule: how each edge reads a user id.

    @ivar numeric: whether only numbers are ids (the original's rule).
    """

    numeric: bool

    def _digits(self, text: str) -> int:
        # digits only: a number, 1..2^64-1 (0 is the bot), no leading zero
        if len(text) > 1 and text[0] == "0":
            raise InvalidUserId(f"Invalid id {cutShort(text)}: a number must not start with 0")
        if len(text) > 20 or int(text) > MAX_NUMERIC:
            raise InvalidUserId(f"Invalid id {cutShort(text)}: over the maximum 2^64-1")
        return int(text)

    def fromText(self, text: str) -> UserId:
        """
        An id written as text (a query parameter, a JWT C{sub}, a REST
        parameter), already percent-decoded; 0 is returned as L{BOT} for the
        caller to refuse or accept.

        @raise InvalidUserId: naming the rule it breaks.
        """
        if self.numeric:
            if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
                raise InvalidUserId(f"Invalid id {text}: must not be negative")
            if not (text.isascii() and text.isdigit()):
                raise InvalidUserId(f"Invalid id {text!r}: must be an unsigned 64-bit integer")
            digits = text.lstrip("0") or "0"
            if len(digits) > 20 or int(digits) > MAX_NUMERIC:
                raise InvalidUserId(f"Invalid id {text}: over the maximum 2^64-1")
            return int(digits)
        if not _ANY.match(text):
            if not text:
                raise InvalidUserId("Invalid id \"\": must be 1 to 128 characters")
            if len(text) > MAX_LENGTH:
                raise InvalidUserId(f"Invalid id {cutShort(text)}: longer than {MAX_LENGTH} characters")
            raise InvalidUserId(f"Invalid id {cutShort(text)}: only {CHARACTERS}")
        if text.isdigit():
            return self._digits(text)
        # (one object for an id however many edges read it: the registry's
        # and the statistics' dict lookups then match it by identity)
        return sys.intern(text)

    def fromJSON(self, value: object) -> UserId | None:
        """
        An id as a message or a REST body gives it (a JSON number, or with
        C{"any"} a string too); L{None} when it is not one (the caller names
        the field: C{$.recipients[] must be user ids}).
        """
        if type(value) is int:
            return value if 0 <= value <= MAX_NUMERIC else None  # type: ignore[operator]
        if self.numeric or type(value) is not str:
            return None
        try:
            return self.fromText(value)  # type: ignore[arg-type]
        except InvalidUserId:
            return None

    def problem(self, value: object) -> str:
        """
        Why C{value} (refused by L{fromJSON}) is not an id, for the refusal:
        the rule and the value cut short.
        """
        if self.numeric:
            return "uint64_t"
        if type(value) is int and value < 0:  # type: ignore[operator]
            return f"a number must not be negative: {cutShort(value)}"
        if type(value) is int or (type(value) is float and value >= MAX_NUMERIC):  # type: ignore[operator]
            # (a JSON integer from 2^64 on is read as a float)
            return f"over the maximum 2^64-1: {cutShort(value)}"
        if type(value) is str:
            try:
                self.fromText(value)  # type: ignore[arg-type]
            except InvalidUserId as e:
                return str(e).replace("Invalid id ", "", 1)
        return f"a number or a string of {CHARACTERS}: {cutShort(value)}"


def sortKey(userId: UserId) -> tuple[int, int, str]:
    """
    A key that orders ids for C{/stats}: numbers first, by value, then
    strings, by text.
    """
    if type(userId) is int:
        return (0, userId, "")  # type: ignore[return-value]
    return (1, 0, userId)  # type: ignore[return-value]


def idBytes(userId: UserId) -> bytes:
    """
    C{userId} as it is written in Redis keys and in the cluster's messages:
    a number as its digits (the keys the previous version wrote), any other
    id between braces, which no id may contain, so that C{a:b} never meets
    C{a} followed by C{:b}, and no string id meets a number.
    """
    if type(userId) is int:
        return b"%d" % userId  # type: ignore[str-bytes-safe]
    return b"{%s}" % userId.encode("ascii")  # type: ignore[union-attr]


def parseIdBytes(data: bytes) -> UserId:
    """
    The id that L{idBytes} wrote.

    @raise ValueError: when C{data} is not one.
    """
    if data[:1] == b"{" and data[-1:] == b"}":
        return data[1:-1].decode("ascii")
    return int(data)


def redisKey(prefix: bytes, userId: UserId) -> bytes:
    """
    The Redis key of C{userId} under C{prefix} (see L{idBytes}): the same
    key as before for a numeric id, the id between braces for another.
    """
    return prefix + idBytes(userId)


def ruleFor(name: str) -> UserIdRule:
    """
    The rule that C{chat.userIds} names (C{"any"} or C{"numeric"}).
    """
    return numericRule if name == "numeric" else anyRule


numericRule = UserIdRule(numeric=True)
anyRule = UserIdRule(numeric=False)
