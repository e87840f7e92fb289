"""
Fuzzing of the message validator (L{wsserver.messages}) with hypothesis:
whatever a client sends, the router either routes a valid message or
refuses it with L{InvalidPayload} (which the protocol closes with 4001, or
1007 for a text frame that is not UTF-8), never with another exception.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.config import MessageConfig
from wsserver.ids import numericRule
from wsserver.messages import InvalidPayload, Message, MessageFactory, parsePayload
from wsserver.routing import Router

from .test_routing import FakeConnection

#: Bounded: the module runs in a few seconds, with no database left behind.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

SENDER = 5
MAX_ID = 2**64 - 1

integers = st.one_of(
    st.integers(-10, 10),
    st.integers(-(2**64), 2**65),  # around the 64-bit bounds
    st.integers(-(10**400), 10**400),  # beyond a double
    st.sampled_from([0, SENDER, MAX_ID, MAX_ID + 1, -(2**63), -(2**63) - 1, 2**70, -(2**70)]),
)
floats = st.floats(allow_nan=False, allow_infinity=False)


def jsonValues(integers: Any) -> Any:
    """
    Any JSON value (bounded in size and depth), with integers from
    C{integers}.
    """
    return st.recursive(
        st.one_of(st.none(), st.booleans(), integers, floats, st.text(max_size=20)),
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
        max_leaves=12,
    )


values = jsonValues(integers)
#: what orjson reads: integers within 64 bits (and floats beyond)
orjsonValues = jsonValues(st.integers(-(2**63), MAX_ID))
userIds = st.one_of(st.integers(0, MAX_ID), st.sampled_from([SENDER, 1, 2]))
#: field values that are right more often than random ones would be
fieldValues = {
    "type": st.one_of(st.sampled_from(["text", "typing", ""]), values),
    "text": st.one_of(st.text(max_size=20), values),
    "sender": st.one_of(st.just(SENDER), userIds, values),
    # at most 5 recipients: under any maxRecipients limit
    "recipients": st.one_of(st.lists(userIds, max_size=5), st.lists(values, max_size=5), values),
    "data": values,
    "timestamp": st.one_of(st.text(max_size=30), values),
}


@st.composite
def messageObjects(draw: Any) -> dict[str, Any]:
    """
    A JSON object with some of the message fields, each of a random type
    (often the right one), and maybe a field the server ignores.
    """
    obj = {}
    for name, strategy in fieldValues.items():
        if draw(st.booleans()) or name in ("type", "recipients"):
            obj[name] = draw(strategy)
    if draw(st.booleans()):
        obj[draw(st.text(max_size=8))] = draw(values)
    return obj


def encode(obj: Any, asciiOnly: bool = False) -> bytes:
    """
    C{obj} as JSON text (the stdlib writes big integers exactly).
    """
    return json.dumps(obj, ensure_ascii=asciiOnly).encode("utf-8")


def expectedReason(obj: Any) -> str | None:
    """
    What the rules of the wire protocol say of C{obj} sent by user
    L{SENDER}: the reason it is refused, or L{None} when it is valid.
    """
    if type(obj) is not dict:
        return "$ must be an object"

    def isId(v: Any) -> bool:
        return type(v) is int and 0 <= v <= MAX_ID

    if type(obj.get("type")) is not str:
        return "$.type must be a string"
    text = obj.get("text")
    if (text is None and obj["type"] == "text") or (text is not None and type(text) is not str):
        return "$.text must be string"
    sender = obj.get("sender")
    if sender is not None:
        if not isId(sender):
            return "$.sender must be uint64_t"
        if sender != SENDER:
            return f"$.sender must be your own id ({SENDER})"
    recipients = obj.get("recipients")
    if type(recipients) is not list or not all(isId(r) for r in recipients):
        return "$.recipients[] must be uint64_t[]"
    if not recipients:
        return "$.recipients[] must contains at least 1 value"
    timestamp = obj.get("timestamp")
    if timestamp is not None and type(timestamp) is not str:
        return "$.timestamp must be string"
    return None


class FuzzTests(SynchronousTestCase):
    """
    Random payloads through L{Router.receive}, as the protocol calls it.
    """

    def setUp(self) -> None:
        clock = Clock()
        self.router = Router(MessageConfig(), clock, MessageFactory(clock, ZoneInfo("UTC"), nodeTag=1, ids=numericRule))
        self.alice = FakeConnection(SENDER)
        self.router.attach(self.alice)
        self.bob = FakeConnection(2)
        self.router.attach(self.bob)

    def receive(self, payload: bytes) -> Message | InvalidPayload:
        """
        Hand C{payload} to the router; the message routed, or the refusal.
        Any other exception fails the test.
        """
        try:
            return self.router.receive(self.alice, payload)
        except InvalidPayload as e:
            self.assertEqual(str(e), e.reason)
            self.assertIsInstance(e.reason, str)
            return e

    @FUZZ
    @given(st.binary(max_size=200))
    def test_anyBytes(self, payload: bytes) -> None:
        """
        Any bytes: a message or L{InvalidPayload}; what is accepted is UTF-8
        (so that a text frame needs no other UTF-8 check).
        """
        if isinstance(self.receive(payload), Message):
            payload.decode("utf-8")

    @FUZZ
    @given(messageObjects(), st.booleans(), st.data())
    def test_damagedMessages(self, obj: dict[str, Any], asciiOnly: bool, data: Any) -> None:
        """
        A message's JSON text with bytes replaced, inserted or cut off (bad
        UTF-8 in strings, broken syntax): a message or L{InvalidPayload}, and
        only UTF-8 is accepted.
        """
        payload = bytearray(encode(obj, asciiOnly))
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(payload)))
            action = data.draw(st.sampled_from(["replace", "insert", "cut"]))
            junk = data.draw(st.binary(min_size=1, max_size=4))
            if action == "replace":
                payload[at : at + len(junk)] = junk
            elif action == "insert":
                payload[at:at] = junk
            else:
                del payload[at:]
        raw = bytes(payload)
        if isinstance(self.receive(raw), Message):
            raw.decode("utf-8")

    @FUZZ
    @given(messageObjects(), st.booleans())
    def test_structured(self, obj: dict[str, Any], asciiOnly: bool) -> None:
        """
        A JSON object with random field types is refused exactly when the
        rules say, with their reason; a valid one is delivered with every
        field as sent (big integers in C{data} exact, floats equal) and the
        defaults filled.
        """
        sent = len(self.bob.sent)
        result = self.receive(encode(obj, asciiOnly))
        reason = expectedReason(obj)
        if reason is not None:
            self.assertIsInstance(result, InvalidPayload)
            self.assertEqual(result.reason, reason)  # type: ignore[union-attr]
            return
        self.assertIsInstance(result, Message)
        delivered = json.loads(result.serialize())  # type: ignore[union-attr]
        self.assertEqual(
            {k: v for k, v in delivered.items() if k not in ("id", "timestamp")},
            {
                "type": obj["type"],
                "text": obj.get("text") or "",
                "sender": SENDER,
                "recipients": obj["recipients"],
                "data": obj.get("data"),
            },
        )
        self.assertEqual(_types(delivered["data"]), _types(obj.get("data")))
        if "timestamp" in obj and obj["timestamp"] is not None:
            self.assertEqual(delivered["timestamp"], obj["timestamp"])
        if 2 in obj["recipients"]:
            self.assertEqual(len(self.bob.sent), sent + 1)
            self.assertEqual(self.bob.sent[-1], result.serialize())  # type: ignore[union-attr]

    @FUZZ
    @given(values)
    def test_dataRoundTrip(self, value: Any) -> None:
        """
        L{parsePayload} reads any C{data} as the stdlib writes it, with the
        same types: integers of any size stay exact integers.
        """
        parsed = parsePayload(encode({"data": value}))["data"]
        self.assertEqual(parsed, value)
        self.assertEqual(_types(parsed), _types(value))

    @FUZZ
    @given(st.floats(min_value=2.0**63, allow_infinity=False), st.booleans())
    def test_hugeFloatsWrittenWithExponent(self, value: float, negative: bool) -> None:
        """
        orjson writes every float of magnitude 2^63 or more with C{e+}: the
        C{+} that L{parsePayload} looks for before it walks C{data}.
        """
        self.assertIn(b"e+", orjson.dumps(-value if negative else value))

    @FUZZ
    @given(orjsonValues)
    def test_plusOnlyInExponents(self, value: Any) -> None:
        """
        Outside strings, orjson writes a C{+} only in the exponent of a float
        (so that a text with no C{+} holds no huge float).
        """
        text = orjson.dumps(value)
        if b"+" in text:
            self.assertTrue(_hasPlusInside(value), text)


def _hasPlusInside(value: Any) -> bool:
    """
    Whether C{value} holds a float written with an exponent sign, or a
    string (key or value) with a C{+}.
    """
    if type(value) is dict:
        return any("+" in k or _hasPlusInside(v) for k, v in value.items())
    if type(value) is list:
        return any(_hasPlusInside(v) for v in value)
    if type(value) is str:
        return "+" in value
    return type(value) is float and "+" in orjson.dumps(value).decode()


def _types(value: Any) -> Any:
    """
    The shape of C{value} with each scalar replaced by its type (C{1 == 1.0}
    and C{True == 1} would hide a wrong one).
    """
    if type(value) is dict:
        return {k: _types(v) for k, v in value.items()}
    if type(value) is list:
        return [_types(v) for v in value]
    return type(value)

