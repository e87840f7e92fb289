"""
Tests for L{wsserver.ids}: the user id rules of C{chat.userIds}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsserver.ids import (
    BOT, InvalidUserId, anyRule, cutShort, idBytes, numericRule, parseIdBytes, redisKey, ruleFor, sortKey,
)


class AnyRuleTests(SynchronousTestCase):
    """
    C{chat.userIds: "any"}.
    """

    def refused(self, text: str) -> str:
        with self.assertRaises(InvalidUserId) as caught:
            anyRule.fromText(text)
        return str(caught.exception)

    def test_strings(self) -> None:
        """
        UUIDs, e-mail addresses, Auth0 subjects and Mongo ObjectIds are ids,
        kept as the text they are.
        """
        for text in ("3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", "alice@example.com", "auth0|5f7c8e9d",
                     "507f1f77bcf86cd799439011", "a+b=c", "-5", "x" * 128):
            self.assertEqual(anyRule.fromText(text), text)

    def test_oneObject(self) -> None:
        """
        A string id read twice, from two texts, is one object (interned), so
        that the dicts keyed by ids match it by identity.
        """
        text = "".join(["3f2c9a1e-7b4d-", "4e0a-9c1b-2d3e4f5a6b7c"])
        again = "".join(["3f2c9a1e-7b4d-4e0a-", "9c1b-2d3e4f5a6b7c"])
        self.assertIsNot(text, again)
        self.assertIs(anyRule.fromText(text), anyRule.fromText(again))
        self.assertIs(anyRule.fromJSON(again), anyRule.fromText(text))

    def test_numbersStayNumbers(self) -> None:
        """
        An id of digits only is the number: C{"7"} is C{7}; C{"0"} is the bot.
        """
        self.assertEqual(anyRule.fromText("7"), 7)
        self.assertEqual(anyRule.fromText(str(2**64 - 1)), 2**64 - 1)
        self.assertEqual(anyRule.fromText("0"), BOT)
        self.assertEqual(anyRule.fromJSON("7"), 7)
        self.assertEqual(anyRule.fromJSON(7), 7)

    def test_ambiguousNumbers(self) -> None:
        """
        A leading zero or a number over 2^64-1 is refused with a reason that
        says so.
        """
        self.assertEqual(self.refused("007"), 'Invalid id "007": a number must not start with 0')
        self.assertEqual(self.refused(str(2**64)), 'Invalid id "18446744073709551616": over the maximum 2^64-1')
        self.assertIsNone(anyRule.fromJSON("007"))
        self.assertIsNone(anyRule.fromJSON(2**64))
        self.assertIsNone(anyRule.fromJSON(-1))

    def test_characters(self) -> None:
        """
        Characters outside the set, an empty id and one over 128 characters
        are refused, naming the rule, the value cut short.
        """
        self.assertEqual(self.refused("a b"), 'Invalid id "a b": only letters, digits and _-.:@|+=')
        self.assertEqual(self.refused("é"), 'Invalid id "é": only letters, digits and _-.:@|+=')
        self.assertEqual(self.refused(""), 'Invalid id "": must be 1 to 128 characters')
        self.assertEqual(self.refused("x" * 129), 'Invalid id "xxxxxxxxxxxxxxxxxxxxxx\u2026: longer than 128 characters')
        self.assertIsNone(anyRule.fromJSON("a{b}"))
        self.assertIsNone(anyRule.fromJSON(True))
        self.assertIsNone(anyRule.fromJSON(1.5))
        self.assertIsNone(anyRule.fromJSON(None))

    def test_problem(self) -> None:
        """
        L{UserIdRule.problem} says why a JSON value is not an id.
        """
        self.assertEqual(anyRule.problem("a b"), '"a b": only letters, digits and _-.:@|+=')
        self.assertEqual(anyRule.problem("007"), '"007": a number must not start with 0')
        self.assertEqual(anyRule.problem(2**64), "over the maximum 2^64-1: 18446744073709551616")
        self.assertEqual(anyRule.problem([1]), "a number or a string of letters, digits and _-.:@|+=: [1]")
        self.assertEqual(numericRule.problem("alice"), "uint64_t")


class NumericRuleTests(SynchronousTestCase):
    """
    C{chat.userIds: "numeric"}: the original's rule, every refusal as before.
    """

    def refused(self, text: str) -> str:
        with self.assertRaises(InvalidUserId) as caught:
            numericRule.fromText(text)
        return str(caught.exception)

    def test_numbers(self) -> None:
        """
        Digits are ids (a leading zero too, as before); JSON strings are not.
        """
        self.assertEqual(numericRule.fromText("7"), 7)
        self.assertEqual(numericRule.fromText("007"), 7)
        self.assertEqual(numericRule.fromJSON(7), 7)
        self.assertIsNone(numericRule.fromJSON("7"))

    def test_refusals(self) -> None:
        """
        The original's refusals, word for word.
        """
        self.assertEqual(self.refused("-5"), "Invalid id -5: must not be negative")
        self.assertEqual(self.refused("alice"), "Invalid id 'alice': must be an unsigned 64-bit integer")
        self.assertEqual(self.refused(str(2**64)), "Invalid id 18446744073709551616: over the maximum 2^64-1")


class HelperTests(SynchronousTestCase):
    """
    Sorting, Redis keys and cutting values short.
    """

    def test_sortKey(self) -> None:
        """
        Numbers first by value, then strings by text.
        """
        self.assertEqual(sorted(["bob", 10, "alice", 2], key=sortKey), [2, 10, "alice", "bob"])

    def test_redisKey(self) -> None:
        """
        A numeric id keeps the previous version's key; any other stands
        between braces, so an id with C{:} meets no other key.
        """
        self.assertEqual(redisKey(b"wsserver:inbox:", "a:seq"), b"wsserver:inbox:{a:seq}")
        self.assertEqual(redisKey(b"wsserver:inbox:", 7), b"wsserver:inbox:7")
        self.assertNotEqual(redisKey(b"q:", "a:b"), redisKey(b"q:", "a") + b":b")
        self.assertNotEqual(redisKey(b"q:", "-5"), redisKey(b"q:", 5))

    def test_idBytes(self) -> None:
        """
        L{parseIdBytes} reads what L{idBytes} wrote, numbers as numbers.
        """
        for userId in (7, 2**64 - 1, "alice@example.com", "a:b", "-5"):
            self.assertEqual(parseIdBytes(idBytes(userId)), userId)
        self.assertEqual(idBytes(7), b"7")
        self.assertEqual(idBytes("a:b"), b"{a:b}")
        self.assertRaises(ValueError, parseIdBytes, b"a")

    def test_ruleFor(self) -> None:
        """
        C{chat.userIds} names a rule.
        """
        self.assertIs(ruleFor("numeric"), numericRule)
        self.assertIs(ruleFor("any"), anyRule)

    def test_cutShort(self) -> None:
        """
        Values are shown as JSON, cut to the limit with an ellipsis.
        """
        self.assertEqual(cutShort("abc"), '"abc"')
        self.assertEqual(len(cutShort("x" * 500)), 24)
