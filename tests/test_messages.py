"""
Tests for L{wsserver.messages}: user ids and chat messages (SPEC section 3).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsserver.messages import (
    BOT,
    InvalidPayload,
    InvalidUserId,
    Message,
    MessageFactory,
    parseUserId,
)
from wsserver.ids import UserIdRule, anyRule, numericRule

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
ID_FORM = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{8}$")


class ParseUserIdTests(SynchronousTestCase):
    """
    L{parseUserId} reads the C{id} query parameter, with the original's
    rule (C{chat.userIds: "numeric"}), whose refusals these tests know; the
    rule C{"any"} has its own tests (L{tests.test_ids}).
    """

    rule: UserIdRule = numericRule

    def assertRefused(self, values: list[str] | None, reason: str) -> None:
        """
        C{values} is refused with exactly C{reason}.
        """
        e = self.assertRaises(InvalidUserId, parseUserId, values, self.rule)
        self.assertEqual(str(e), reason)

    def test_required(self) -> None:
        """
        No id, no value, or an empty value: the id is required.
        """
        for values in (None, [], [""]):
            self.assertRefused(values, "Id required in query parameter: ?id={id}")

    def test_notNumber(self) -> None:
        """
        Anything but ASCII digits is refused as not an unsigned 64-bit
        integer: letters, a fraction, spaces, a sign, other scripts' digits.
        """
        for raw in ("abc", "1.5", " 5", "5 ", "+5", "1e3", "0x10", "1_000", "\u0663", "\uff15", "--5", "-"):
            self.assertRefused([raw], f"Invalid id {raw!r}: must be an unsigned 64-bit integer")

    def test_negative(self) -> None:
        """
        A negative number is refused as negative.
        """
        self.assertRefused(["-5"], "Invalid id -5: must not be negative")

    def test_tooLarge(self) -> None:
        """
        A number over 2^64-1 is refused as too large.
        """
        self.assertRefused(["18446744073709551616"], "Invalid id 18446744073709551616: over the maximum 2^64-1")
        self.assertRefused(["99999999999999999999"], "Invalid id 99999999999999999999: over the maximum 2^64-1")

    def test_veryLong(self) -> None:
        """
        A very long number is refused as too large, not with the
        L{ValueError} that C{int()} raises over 4300 digits.
        """
        raw = "9" * 5000
        self.assertRefused([raw], f"Invalid id {raw}: over the maximum 2^64-1")
        self.assertEqual(parseUserId(["0" * 4999 + "7"], self.rule), 7)

    def test_zero(self) -> None:
        """
        0 is the server's own id.
        """
        self.assertRefused(["0"], "Invalid id 0: reserved for the server")
        self.assertRefused(["000"], "Invalid id 0: reserved for the server")

    def test_valid(self) -> None:
        """
        1 to 2^64-1 are user ids.
        """
        self.assertEqual(parseUserId(["1"], self.rule), 1)
        self.assertEqual(parseUserId(["42"], self.rule), 42)
        self.assertEqual(parseUserId(["18446744073709551615"], self.rule), 2**64 - 1)

    def test_twice(self) -> None:
        """
        Two values are refused, even when equal.
        """
        for values in (["1", "2"], ["1", "1"]):
            self.assertRefused(values, "Id given more than once in query parameter: ?id={id}")


class FactoryTestMixin:
    """
    A L{MessageFactory} on a L{Clock}.
    """

    #: C{chat.userIds}: the original's rule, whose refusals these tests know
    rule: UserIdRule = numericRule

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = MessageFactory(self.clock, UTC, nodeTag=0x38F4D5DC, ids=self.rule)

    def parse(self, obj: Any, sender: int | None = 5, enforceSender: bool = True) -> Message:
        """
        Encode C{obj} as JSON and parse it as a payload from C{sender}.
        """
        return self.factory.fromPayload(json.dumps(obj).encode("utf-8"), sender, enforceSender)

    def reason(self, payload: Any, sender: int | None = 5, enforceSender: bool = True) -> str:
        """
        The reason that C{payload} (an object to encode, or bytes) is
        refused.
        """
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode("utf-8")
        e = self.assertRaises(  # type: ignore[attr-defined]
            InvalidPayload, self.factory.fromPayload, payload, sender, enforceSender
        )
        self.assertEqual(str(e), e.reason)  # type: ignore[attr-defined]
        return e.reason


class ValidationTests(FactoryTestMixin, SynchronousTestCase):
    """
    L{MessageFactory.fromPayload} refuses what is not a chat message, with
    the original's wording.
    """

    def test_notObject(self) -> None:
        """
        A JSON value that is not an object.
        """
        for payload in (b"[]", b'"x"', b"1", b"null", b"true"):
            self.assertEqual(self.reason(payload), "$ must be an object", payload)

    def test_parseError(self) -> None:
        """
        Text that is not JSON gives the parser's error.
        """
        for payload in (b"{", b"", b'{"type": "text",}', b"{'type': 'text'}"):
            self.assertNotEqual(self.reason(payload), "", payload)

    def test_invalidUTF8(self) -> None:
        """
        A binary frame that is not UTF-8 is an invalid payload.
        """
        payload = b'{"type":"text","text":"\xff\xfe","recipients":[1]}'
        self.assertRaises(InvalidPayload, self.factory.fromPayload, payload, 5)

    def test_type(self) -> None:
        """
        C{type} is a required string.
        """
        for obj in ({"text": "hi", "recipients": [1]}, {"type": 1, "text": "hi", "recipients": [1]},
                    {"type": None, "text": "hi", "recipients": [1]}):
            self.assertEqual(self.reason(obj), "$.type must be a string", obj)

    def test_text(self) -> None:
        """
        C{text} is required for type C{"text"} and must be a string.
        """
        self.assertEqual(self.reason({"type": "text", "recipients": [1]}), "$.text must be string")
        self.assertEqual(self.reason({"type": "text", "text": 5, "recipients": [1]}), "$.text must be string")
        self.assertEqual(self.reason({"type": "typing", "text": [], "recipients": [1]}), "$.text must be string")

    def test_textOptional(self) -> None:
        """
        For other types C{text} is optional and defaults to C{""}.
        """
        message = self.parse({"type": "typing", "recipients": [1]})
        self.assertEqual((message.type, message.text), ("typing", ""))

    def test_senderNotUint64(self) -> None:
        """
        A C{sender} that is not an unsigned 64-bit integer.
        """
        for sender in ("5", -1, 1.5, 5.0, True, False, [5], {}, 2**64):
            obj = {"type": "text", "text": "hi", "sender": sender, "recipients": [1]}
            self.assertEqual(self.reason(obj), "$.sender must be uint64_t", sender)

    def test_tooLargeDecoded(self) -> None:
        """
        L{MessageFactory.fromObject} refuses 2^64 given as a Python integer
        (the JSON parser turns it into a float, which is refused too).
        """
        obj = {"type": "text", "text": "hi", "sender": 2**64, "recipients": [1]}
        e = self.assertRaises(InvalidPayload, self.factory.fromObject, obj, 5)
        self.assertEqual(e.reason, "$.sender must be uint64_t")
        obj = {"type": "text", "text": "hi", "recipients": [1, 2**64]}
        e = self.assertRaises(InvalidPayload, self.factory.fromObject, obj, 5)
        self.assertEqual(e.reason, "$.recipients[] must be uint64_t[]")

    def test_senderOmitted(self) -> None:
        """
        With C{enforceSender}, an omitted C{sender} is the connection's id.
        """
        self.assertEqual(self.parse({"type": "text", "text": "hi", "recipients": [1]}, 5).sender, 5)

    def test_senderOwn(self) -> None:
        """
        With C{enforceSender}, a C{sender} equal to the connection's id is
        accepted.
        """
        self.assertEqual(self.parse({"type": "text", "text": "hi", "sender": 5, "recipients": [1]}, 5).sender, 5)

    def test_senderOther(self) -> None:
        """
        With C{enforceSender}, another C{sender} is refused, naming the
        connection's id.
        """
        for other in (6, 0, 2**64 - 1):
            obj = {"type": "text", "text": "hi", "sender": other, "recipients": [1]}
            self.assertEqual(self.reason(obj, 5), "$.sender must be your own id (5)", other)

    def test_senderRequired(self) -> None:
        """
        Without C{enforceSender} and with no connection id, the payload must
        name its sender (the original's rule), and any valid one is taken.
        """
        obj = {"type": "text", "text": "hi", "recipients": [1]}
        self.assertEqual(self.reason(obj, None, False), "$.sender must be uint64_t")
        obj["sender"] = 77
        self.assertEqual(self.parse(obj, None, False).sender, 77)

    def test_senderNotEnforced(self) -> None:
        """
        Without C{enforceSender} a given C{sender} is taken as it is, and an
        omitted one is C{sender} (the REST API's 0).
        """
        self.assertEqual(self.parse({"type": "t", "sender": 9, "recipients": [1]}, BOT, False).sender, 9)
        self.assertEqual(self.parse({"type": "t", "recipients": [1]}, BOT, False).sender, BOT)

    def test_recipientsNotList(self) -> None:
        """
        C{recipients} must be a list of unsigned 64-bit integers.
        """
        for recipients in (None, 1, "1", {"0": 1}, [1, "2"], [1, -2], [True], [1.0], [2**64]):
            obj: dict[str, Any] = {"type": "text", "text": "hi"}
            if recipients is not None:
                obj["recipients"] = recipients
            self.assertEqual(self.reason(obj), "$.recipients[] must be uint64_t[]", recipients)

    def test_recipientsEmpty(self) -> None:
        """
        C{recipients} must hold at least one value.
        """
        self.assertEqual(
            self.reason({"type": "text", "text": "hi", "recipients": []}),
            "$.recipients[] must contains at least 1 value",
        )

    def test_timestampNotString(self) -> None:
        """
        A given C{timestamp} must be a string.
        """
        for timestamp in (0, 1.5, [], {}, True):
            obj = {"type": "text", "text": "hi", "recipients": [1], "timestamp": timestamp}
            self.assertEqual(self.reason(obj), "$.timestamp must be string", timestamp)


class AnyIdTests(FactoryTestMixin, SynchronousTestCase):
    """
    With C{chat.userIds: "any"}, C{sender} and C{recipients} take strings
    too; numbers stay numbers; refusals name the rule, the value cut short.
    """

    rule = anyRule

    def test_strings(self) -> None:
        """
        String ids are kept as given; a string of digits is the number.
        """
        message = self.parse({"type": "text", "text": "hi", "sender": "alice@example.com",
                              "recipients": ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", "7", 8]},
                             "alice@example.com")
        self.assertEqual(message.sender, "alice@example.com")
        self.assertEqual(message.recipients, ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", 7, 8])
        self.assertEqual(orjson.loads(message.serialize())["recipients"],
                         ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", 7, 8])

    def test_numbersUnchanged(self) -> None:
        """
        Numeric ids are written back as the numbers they were, so the
        original's clients see what they saw.
        """
        message = self.parse({"type": "text", "text": "hi", "sender": "5", "recipients": [1, 2]}, 5)
        self.assertEqual((message.sender, message.recipients), (5, [1, 2]))
        self.assertIn(b'"sender":5,"recipients":[1,2]', message.serialize())

    def test_badRecipients(self) -> None:
        """
        A recipient that is no id: C{$.recipients[] must be user ids}, why.
        """
        cases = [
            (["a b"], '$.recipients[] must be user ids: "a b": only letters, digits and _-.:@|+='),
            ([1, "007"], '$.recipients[] must be user ids: "007": a number must not start with 0'),
            ([2**64], "$.recipients[] must be user ids: over the maximum 2^64-1: 1.8446744073709552e+19"),
            (["x" * 200], '$.recipients[] must be user ids: "xxxxxxxxxxxxxxxxxxxxxx…: longer than 128 characters'),
            ([1.5], "$.recipients[] must be user ids: a number or a string of letters, digits and _-.:@|+=: 1.5"),
            ("alice", "$.recipients[] must be user ids"),
            ([-1], "$.recipients[] must be user ids: a number must not be negative: -1"),
        ]
        for recipients, reason in cases:
            obj = {"type": "text", "text": "hi", "recipients": recipients}
            self.assertEqual(self.reason(obj), reason, recipients)

    def test_knownIds(self) -> None:
        """
        A string id read once is remembered (a bounded number of them): read
        again it is the same id; a bad one is never remembered.
        """
        from wsserver import messages

        self.patch(messages, "KNOWN_IDS", 2)
        for _ in range(2):
            self.assertEqual(self.parse({"type": "text", "text": "", "recipients": ["a", "7", 8]}, 5).recipients,
                             ["a", 7, 8])
        self.assertEqual(self.factory._known, {"a": "a", "7": 7})
        self.parse({"type": "text", "text": "", "recipients": ["b"]}, 5)
        self.assertEqual(self.factory._known, {"b": "b"})
        self.reason({"type": "text", "text": "", "recipients": ["c d"]})
        self.assertEqual(self.factory._known, {"b": "b"})

    def test_oneKnownRecipient(self) -> None:
        """
        A message to one string id read lately gets that id (the object the
        rule gave, not the text of this payload) without reading the list
        again; a list of one unknown or bad id is still read and refused.
        """
        self.assertEqual(self.reason({"type": "text", "text": "", "recipients": ["c d"]}),
                         '$.recipients[] must be user ids: "c d": only letters, digits and _-.:@|+=')
        first = self.parse({"type": "text", "text": "", "recipients": ["bob"]}, 5)
        remembered = self.factory._known["bob"]
        self.factory._lastGiven = None
        calls: list[Any] = []
        self.patch(self.factory, "_recipients", lambda given: calls.append(given) or ["other"])
        second = self.parse({"type": "text", "text": "", "recipients": ["bob"]}, 5)
        self.assertEqual(second.recipients, ["bob"])
        self.assertIs(second.recipients[0], remembered)
        self.assertIsNot(second.recipients, first.recipients)
        self.assertEqual(calls, [], "not read again")
        self.assertEqual(self.parse({"type": "text", "text": "", "recipients": ["carol"]}, 5).recipients, ["other"])
        self.assertEqual(calls, [["carol"]])

    def test_knownSender(self) -> None:
        """
        A string sender is remembered as recipients are: read again it is
        the same id object, and the rule does not read it again; a bad one
        is refused each time and never remembered.
        """
        obj = {"type": "text", "text": "", "sender": "alice", "recipients": ["bob"]}
        first = self.parse(obj, "alice")
        self.assertEqual(self.factory._known["alice"], "alice")
        read: list[Any] = []
        readId = self.factory._readId
        self.patch(self.factory, "_readId", lambda value: read.append(value) or readId(value))
        second = self.parse(obj, "alice")
        self.assertIs(second.sender, first.sender)
        self.assertEqual(read, [])
        for _ in range(2):
            self.assertEqual(self.reason({"type": "text", "text": "", "sender": "a b", "recipients": [1]}, "alice"),
                             '$.sender must be a user id: "a b": only letters, digits and _-.:@|+=')
        self.assertEqual(read, ["a b", "a b"])
        self.assertNotIn("a b", self.factory._known)
        self.assertEqual(self.reason({"type": "text", "text": "", "sender": "bob", "recipients": [1]}, "alice"),
                         "$.sender must be your own id (alice)")

    def test_sameRecipientsAgain(self) -> None:
        """
        A list of string recipients equal to the last one is not read
        again: each message gets its own list of the same ids.
        """
        obj = {"type": "text", "text": "", "recipients": ["a", "7", "b"]}
        first = self.parse(obj, 5)
        self.assertEqual(self.factory._lastGiven, ["a", "7", "b"])
        self.factory._known.clear()
        second = self.parse(obj, 5)
        self.assertEqual(second.recipients, ["a", 7, "b"])
        self.assertIsNot(second.recipients, first.recipients)
        second.recipients.append("c")
        self.assertEqual(self.parse(obj, 5).recipients, ["a", 7, "b"])
        self.assertEqual(self.factory._known, {}, "read from the last list, not one by one")

    def test_lastRecipientsOnlyStrings(self) -> None:
        """
        Only a list of strings is kept as the last one: a list with a
        number is read each time, so that one equal to it by C{==} but
        with a float (C{1.0 == 1}) is refused.
        """
        self.parse({"type": "text", "text": "", "recipients": ["a", 1]}, 5)
        self.assertIsNone(self.factory._lastGiven)
        self.assertEqual(
            self.reason({"type": "text", "text": "", "recipients": ["a", 1.0]}),
            "$.recipients[] must be user ids: a number or a string of letters, digits and _-.:@|+=: 1.0")
        self.parse({"type": "text", "text": "", "recipients": ["a"]}, 5)
        self.assertEqual(
            self.reason({"type": "text", "text": "", "recipients": ["a b"]}),
            '$.recipients[] must be user ids: "a b": only letters, digits and _-.:@|+=')

    def test_badSender(self) -> None:
        """
        A sender that is no id names the rule; another user's is refused.
        """
        obj = {"type": "text", "text": "hi", "sender": "a/b", "recipients": [1]}
        self.assertEqual(self.reason(obj, "alice"), '$.sender must be a user id: "a/b": only letters, digits and _-.:@|+=')
        obj = {"type": "text", "text": "hi", "sender": "bob", "recipients": [1]}
        self.assertEqual(self.reason(obj, "alice"), "$.sender must be your own id (alice)")
        obj = {"type": "text", "text": "hi", "recipients": [1]}
        self.assertEqual(self.reason(obj, None), "$.sender must be a user id")


class MessageTests(FactoryTestMixin, SynchronousTestCase):
    """
    What a valid payload becomes.
    """

    def test_fields(self) -> None:
        """
        A full payload keeps its fields; the server adds an id.
        """
        message = self.parse(
            {
                "type": "text",
                "text": "hi \u00e9\U0001f600",
                "sender": 5,
                "recipients": [7, 2**64 - 1],
                "timestamp": "2024-01-02T03:04:05Z",
                "data": {"k": [1, None, {"n": 1.5}]},
            }
        )
        self.assertEqual(message.type, "text")
        self.assertEqual(message.text, "hi \u00e9\U0001f600")
        self.assertEqual(message.sender, 5)
        self.assertEqual(message.recipients, [7, 2**64 - 1])
        self.assertEqual(message.timestamp, "2024-01-02T03:04:05Z")
        self.assertEqual(message.data, {"k": [1, None, {"n": 1.5}]})
        self.assertRegex(message.id, ID_FORM)

    def test_strPayload(self) -> None:
        """
        A payload may be a L{str} as well as L{bytes}.
        """
        message = self.factory.fromPayload('{"type":"text","text":"\u00e9","recipients":[1]}', 5)
        self.assertEqual(message.text, "\u00e9")

    def test_binaryUTF8(self) -> None:
        """
        UTF-8 bytes (a binary frame) are decoded.
        """
        message = self.factory.fromPayload('{"type":"text","text":"\u00e9","recipients":[1]}'.encode("utf-8"), 5)
        self.assertEqual(message.text, "\u00e9")

    def test_dataUntouched(self) -> None:
        """
        C{data} is carried as it is, whatever JSON it holds.
        """
        for data in ({"a": {"b": [1, 2, {"c": None}]}, "d": "x"}, [1, "2"], "s", 0, False, 2.5):
            message = self.parse({"type": "t", "recipients": [1], "data": data})
            self.assertEqual(message.data, data)
            self.assertIs(type(message.data), type(data))

    def test_dataDefault(self) -> None:
        """
        C{data} defaults to null.
        """
        self.assertIsNone(self.parse({"type": "t", "recipients": [1]}).data)

    def test_timestampKept(self) -> None:
        """
        A given C{timestamp} is kept as it is.
        """
        message = self.parse({"type": "t", "recipients": [1], "timestamp": "yesterday"})
        self.assertEqual(message.timestamp, "yesterday")

    def test_timestampDefault(self) -> None:
        """
        Without C{timestamp} the server fills the clock's time, ISO 8601
        with microseconds and the offset of the configured zone.
        """
        self.clock.advance(1.5)
        self.assertEqual(self.parse({"type": "t", "recipients": [1]}).timestamp, "1970-01-01T00:00:01.500000+00:00")

    def test_timestampZone(self) -> None:
        """
        Timestamps are written in the configured zone, with its offset at
        that time.
        """
        clock = Clock()
        factory = MessageFactory(clock, BERLIN)
        self.assertEqual(factory.timestamp(), "1970-01-01T01:00:00.000000+01:00")
        clock.advance(1719835200.25)  # 2024-07-01T12:00:00.25Z, summer time
        message = factory.fromPayload(b'{"type":"t","recipients":[1]}', 5)
        self.assertEqual(message.timestamp, "2024-07-01T14:00:00.250000+02:00")

    def test_ids(self) -> None:
        """
        Ids have the original's form (time, node, process, counter) and are
        unique.
        """
        self.clock.advance(0x5A32EA72)
        first = self.parse({"type": "t", "recipients": [1]}).id
        self.assertEqual(first, "5A32EA72-38F4D5DC-%04X-00000001" % (os.getpid() & 0xFFFF))
        ids = {first} | {self.factory.newId() for _ in range(1000)}
        self.assertEqual(len(ids), 1001)
        for i in ids:
            self.assertRegex(i, ID_FORM)

    def test_idsOtherNode(self) -> None:
        """
        Two factories (two processes or nodes) give different ids at the
        same time.
        """
        other = MessageFactory(self.clock, UTC)
        self.assertRegex(other.newId(), ID_FORM)
        self.assertNotEqual(
            MessageFactory(self.clock, UTC, nodeTag=1).newId(), MessageFactory(self.clock, UTC, nodeTag=2).newId()
        )

    def test_serialize(self) -> None:
        """
        L{Message.serialize} gives compact UTF-8 JSON with the original's
        key order.
        """
        message = Message("ID-1", "text", "h\u00e9", "ts", 5, [7, 8], {"z": 1, "a": None})
        self.assertEqual(
            message.serialize(),
            '{"id":"ID-1","type":"text","text":"h\u00e9","timestamp":"ts","sender":5,'
            '"recipients":[7,8],"data":{"z":1,"a":null}}'.encode("utf-8"),
        )
        self.assertEqual(
            list(message.toDict()), ["id", "type", "text", "timestamp", "sender", "recipients", "data"]
        )

    def test_serializeParsed(self) -> None:
        """
        A parsed message serializes with every field, defaults filled.
        """
        message = self.parse({"recipients": [7], "type": "typing"})
        self.assertEqual(
            orjson.loads(message.serialize()),
            {
                "id": message.id,
                "type": "typing",
                "text": "",
                "timestamp": "1970-01-01T00:00:00.000000+00:00",
                "sender": 5,
                "recipients": [7],
                "data": None,
            },
        )

    def test_notification(self) -> None:
        """
        The delivery status names the message and the recipient it reached,
        and goes from the server (0) to the sender.
        """
        message = self.parse({"type": "text", "text": "hi", "recipients": [7, 8]})
        self.clock.advance(2)
        note = self.factory.notification(message, 8)
        self.assertEqual(
            note.toDict(),
            {
                "id": note.id,
                "type": "notification_received",
                "text": "",
                "timestamp": "1970-01-01T00:00:02.000000+00:00",
                "sender": 0,
                "recipients": [5],
                "data": {"id": message.id, "recipient": 8},
            },
        )
        self.assertRegex(note.id, ID_FORM)
        self.assertNotEqual(note.id, message.id)

    def test_isForBot(self) -> None:
        """
        A message is for the bot only when its recipients are exactly
        C{[0]}.
        """
        self.assertTrue(self.parse({"type": "t", "recipients": [0]}).isForBot())
        self.assertFalse(self.parse({"type": "t", "recipients": [0, 7]}).isForBot())
        self.assertFalse(self.parse({"type": "t", "recipients": [7]}).isForBot())
