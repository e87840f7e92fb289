"""
Any user id end to end (C{chat.userIds}): the real server on loopback, real
WebSocket clients and the REST API; and a data directory written by the
previous version (schema version 3, numeric ids only) upgraded at start.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any
from urllib.parse import quote

import orjson
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from wsserver.database import APPLICATION_ID, DATABASE_FILENAME, SCHEMA_VERSION

from .support import closeClient, openClient, restRequest, startServer

UUID = "3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c"
EMAIL = "a+b@example.com"
JSON = {"Content-Type": ["application/json"]}
LARGEST = 2**64 - 1

#: The schema of version 3, verbatim as the previous wsserver created it:
#: every user column C{INTEGER} (a numeric id as a signed 64-bit integer).
SCHEMA_V3 = [
    """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    shared INTEGER NOT NULL,
    payload BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS undelivered (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    user INTEGER NOT NULL,
    created REAL NOT NULL,
    message INTEGER NOT NULL REFERENCES messages (id)
)""",
    """CREATE INDEX IF NOT EXISTS undelivered_user ON undelivered (user, key)""",
    """CREATE INDEX IF NOT EXISTS undelivered_created ON undelivered (created)""",
    """CREATE INDEX IF NOT EXISTS undelivered_message ON undelivered (message)""",
    """CREATE TRIGGER IF NOT EXISTS undelivered_release AFTER DELETE ON undelivered
WHEN NOT EXISTS (SELECT 1 FROM undelivered WHERE message = OLD.message)
BEGIN
    DELETE FROM messages WHERE id = OLD.message;
END""",
    """CREATE TABLE IF NOT EXISTS inbox_messages (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS inbox (
    user INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    message INTEGER NOT NULL REFERENCES inbox_messages (id),
    PRIMARY KEY (user, seq)
) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS inbox_created ON inbox (created)""",
    """CREATE INDEX IF NOT EXISTS inbox_message ON inbox (message)""",
    """CREATE TRIGGER IF NOT EXISTS inbox_release AFTER DELETE ON inbox
WHEN NOT EXISTS (SELECT 1 FROM inbox WHERE message = OLD.message)
BEGIN
    DELETE FROM inbox_messages WHERE id = OLD.message;
END""",
    """CREATE TABLE IF NOT EXISTS inbox_seq (
    user INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    primary_target TEXT NOT NULL,
    target TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    state TEXT NOT NULL
)""",
    """CREATE INDEX IF NOT EXISTS events_due ON events (state, not_before)""",
    """CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)""",
    """INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)""",
]


def _payload(sender: int, recipients: list[int], text: str) -> bytes:
    return orjson.dumps({"id": f"OLD-{text}", "type": "text", "text": text,
                         "timestamp": "2026-01-01T00:00:00.000000+00:00", "sender": sender,
                         "recipients": recipients, "data": None})


def makeVersion3(dataDir: str, now: float) -> None:
    """
    A data directory as the previous version left it: user 5 has two
    queued messages (one shared with user 2^64-1, stored as -1) and two
    inbox entries (seqs 1 and 2).
    """
    os.makedirs(dataDir)
    connection = sqlite3.connect(os.path.join(dataDir, DATABASE_FILENAME), isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA_V3:
        connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute("PRAGMA user_version = 3")
    connection.execute("COMMIT")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("INSERT INTO messages (id, shared, payload) VALUES (1, 0, ?)", (_payload(9, [5], "q1"),))
    connection.execute("INSERT INTO messages (id, shared, payload) VALUES (2, 1, ?)",
                       (_payload(9, [5, LARGEST], "q2"),))
    for key, user, message in [(1, 5, 1), (2, 5, 2), (3, -1, 2)]:
        connection.execute("INSERT INTO undelivered (key, user, created, message) VALUES (?, ?, ?, ?)",
                           (key, user, now, message))
    for seq in (1, 2):
        connection.execute("INSERT INTO inbox_messages (id, payload) VALUES (?, ?)",
                           (seq, _payload(9, [5], f"h{seq}")))
        connection.execute("INSERT INTO inbox (user, seq, created, message) VALUES (5, ?, ?, ?)", (seq, now, seq))
    connection.execute("INSERT INTO inbox_seq (user, seq) VALUES (5, 2)")
    connection.close()


class AnyIdTests(TestCase):
    """
    C{chat.userIds: "any"} (the default) over real connections.
    """

    timeout = 30

    @inlineCallbacks
    def open(self, server: Any, userId: str) -> Any:
        client = yield openClient(server, "id=" + quote(userId, safe=""))
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_stringIds(self) -> Any:
        """
        A UUID and an e-mail address connect, send each other messages over
        the WebSocket and the REST API, and show in C{/stats} after the
        numbers; a numeric id is still written as a number.
        """
        server = yield startServer(self, {"chat": {"message": {"enableDeliveryStatus": True}}})
        alice = yield self.open(server, EMAIL)
        bob = yield self.open(server, UUID)
        seven = yield self.open(server, "7")
        alice.send({"type": "text", "text": "hi", "recipients": [UUID, "7"]})
        got = yield bob.messages.get()
        self.assertEqual((got["sender"], got["recipients"]), (EMAIL, [UUID, 7]))
        self.assertEqual((yield seven.messages.get())["id"], got["id"])
        notes = []
        for _ in range(2):
            notes.append((yield alice.messages.get()))
        self.assertEqual(sorted((n["data"]["recipient"] for n in notes), key=str), [UUID, 7])
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "rest", "recipients": [EMAIL]}))
        self.assertEqual(response.code, 202)
        self.assertEqual((yield alice.messages.get())["recipients"], [EMAIL])
        response = yield restRequest(server, "GET", "/check-online?id=" + quote(EMAIL, safe=""))
        self.assertEqual((yield response.json())["data"], {"isOnline": True})
        response = yield restRequest(server, "GET", "/stats")
        self.assertEqual([i["id"] for i in (yield response.json())["data"]], [7, UUID, EMAIL])

    @inlineCallbacks
    def test_refusals(self) -> Any:
        """
        An id outside the rule: 4000 on connect, 4001 in a message, 400 on
        REST, each naming the rule.
        """
        server = yield startServer(self)
        client = yield openClient(server, "id=a%20b")
        self.assertEqual((yield client.closed), (4000, 'Invalid id "a b": only letters, digits and _-.:@|+='))
        client = yield openClient(server, "id=007")
        self.assertEqual((yield client.closed), (4000, 'Invalid id "007": a number must not start with 0'))
        alice = yield self.open(server, "alice")
        alice.send({"type": "text", "text": "hi", "recipients": ["bob", "a/b"]})
        self.assertEqual((yield alice.closed),
                         (4001, 'Invalid payload. $.recipients[] must be user ids: "a/b": only letters, digits and _-.:@|+='))
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "x", "recipients": [str(2**64)]}))
        self.assertEqual((response.code, (yield response.json())["message"]),
                         (400, 'Invalid payload. $.recipients[] must be user ids: "18446744073709551616": over the maximum 2^64-1'))
        response = yield restRequest(server, "GET", "/stat?id=a%2Fb")
        self.assertEqual((response.code, (yield response.json())["message"]),
                         (400, 'Invalid id "a/b": only letters, digits and _-.:@|+='))

    @inlineCallbacks
    def test_numericRule(self) -> Any:
        """
        With C{chat.userIds: "numeric"}, string ids get the original's
        refusals, word for word.
        """
        server = yield startServer(self, {"chat": {"userIds": "numeric"}})
        client = yield openClient(server, "id=alice")
        self.assertEqual((yield client.closed), (4000, "Invalid id 'alice': must be an unsigned 64-bit integer"))
        five = yield self.open(server, "5")
        five.send({"type": "text", "text": "hi", "recipients": ["6"]})
        self.assertEqual((yield five.closed), (4001, "Invalid payload. $.recipients[] must be uint64_t[]"))
        response = yield restRequest(server, "GET", "/stat?id=alice")
        self.assertEqual((response.code, (yield response.json())["message"]), (400, "Invalid id"))

    @inlineCallbacks
    def test_stringIdsQueued(self) -> Any:
        """
        A message for an offline string id waits in the SQLite queue and the
        inbox, and reaches the user when they connect; C{GET /history}
        answers it.
        """
        dataDir = os.path.abspath(self.mktemp())
        server = yield startServer(self, {
            "server": {"dataDir": dataDir},
            "chat": {"enableUndeliveredQueue": True, "undelivered": {"storage": "sqlite"},
                     "history": {"enabled": True, "storage": "sqlite"}},
        })
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "later", "recipients": [UUID, "-5"]}))
        self.assertEqual(response.code, 202)
        response = yield restRequest(server, "GET", "/history?id=" + UUID)
        page = (yield response.json())["data"]
        self.assertEqual([(m["text"], m["seq"]) for m in page], [("later", 1)])
        bob = yield self.open(server, UUID)
        got = yield bob.messages.get()
        self.assertEqual((got["text"], got["recipients"]), ("later", [UUID]))
        other = yield self.open(server, "-5")
        self.assertEqual((yield other.messages.get())["recipients"], ["-5"])


class UpgradeTests(TestCase):
    """
    A data directory of the previous version (schema 3) is migrated at
    start, and its queued and inbox messages are delivered.
    """

    timeout = 30

    @inlineCallbacks
    def test_delivered(self) -> Any:
        """
        User 5's queued messages arrive when they connect (the shared one
        with C{recipients} rewritten to C{[5]}), user 2^64-1's too, and the
        inbox answers both old entries, with seqs going on from there.
        """
        from twisted.internet import reactor

        dataDir = os.path.abspath(self.mktemp())
        makeVersion3(dataDir, reactor.seconds())
        server = yield startServer(self, {
            "server": {"dataDir": dataDir},
            "chat": {"enableUndeliveredQueue": True, "undelivered": {"storage": "sqlite"},
                     "history": {"enabled": True, "storage": "sqlite"}},
        })
        connection = sqlite3.connect(os.path.join(dataDir, DATABASE_FILENAME))
        self.assertEqual(connection.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        connection.close()
        five = yield openClient(server, "id=5")
        self.addCleanup(closeClient, five)
        got = []
        for _ in range(2):
            got.append((yield five.messages.get()))
        self.assertEqual([(m["text"], m["recipients"]) for m in got], [("q1", [5]), ("q2", [5])])
        largest = yield openClient(server, f"id={LARGEST}")
        self.addCleanup(closeClient, largest)
        self.assertEqual((yield largest.messages.get())["recipients"], [LARGEST])
        response = yield restRequest(server, "GET", "/history?id=5")
        self.assertEqual([(m["text"], m["seq"]) for m in (yield response.json())["data"]], [("h1", 1), ("h2", 2)])
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "new", "recipients": [5]}))
        self.assertEqual(response.code, 202)
        live = yield five.messages.get()
        self.assertEqual((live["text"], live["seq"]), ("new", 3))
