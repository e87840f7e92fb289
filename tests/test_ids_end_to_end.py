"""
Any user id end to end (C{chat.userIds}): the real server on loopback, real
WebSocket clients and the REST API; and a data directory written by the
previous version (schema version 3, numeric ids only) upgraded at start.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Callable
from urllib.parse import quote

import jwt
import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from wsserver.database import APPLICATION_ID, DATABASE_FILENAME, SCHEMA_VERSION

from .redis import RedisTestCase
from .support import JSONSink, closeClient, openClient, restRequest, startServer

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


@inlineCallbacks
def take(client: Any, n: int) -> Any:
    """
    The next C{n} messages that C{client} receives.
    """
    got = []
    for _ in range(n):
        got.append((yield client.messages.get()))
    return got


def _until(condition: Callable[[], Any], seconds: float = 10.0) -> Deferred[bool]:
    """
    Poll C{condition} every 20 ms for at most C{seconds}: whether it held.
    """

    @inlineCallbacks
    def poll() -> Any:
        for _ in range(int(seconds / 0.02)):
            held = condition()
            if isinstance(held, Deferred):
                held = yield held
            if held:
                return True
            yield deferLater(reactor, 0.02, lambda: None)
        return False

    return poll()


class EdgeTests(TestCase):
    """
    The other places a string id goes, each through the real server: a JWT
    C{sub}, C{maxConnectionsPerUser}, ack tokens, presence events, and the
    inbox resumed with C{?since}.
    """

    timeout = 30

    @inlineCallbacks
    def open(self, server: Any, q: str, **kw: Any) -> Any:
        client = yield openClient(server, q, **kw)
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_jwtSubject(self) -> Any:
        """
        A token whose C{sub} is C{auth0|abc} connects without C{?id} and is
        that user: messages reach it and carry it as their sender; a C{sub}
        outside the rule is refused.
        """
        secret = "k" * 32
        auth = {"type": "jwt", "secret": secret, "algorithms": ["HS256"]}
        server = yield startServer(self, {"server": {"auth": auth}})

        def bearer(sub: str) -> dict[str, str]:
            token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, secret, algorithm="HS256")
            return {"Authorization": f"Bearer {token}"}

        subject = yield self.open(server, "", headers=bearer("auth0|abc"))
        other = yield self.open(server, "", headers=bearer(UUID))
        other.send({"type": "text", "text": "hi", "recipients": ["auth0|abc"]})
        got = yield subject.messages.get()
        self.assertEqual((got["sender"], got["recipients"]), (UUID, ["auth0|abc"]))
        subject.send({"type": "text", "text": "back", "recipients": [UUID]})
        self.assertEqual((yield other.messages.get())["sender"], "auth0|abc")
        refused = yield openClient(server, "", headers=bearer("a b"))
        self.assertEqual((yield refused.closed), (4050, "Unauthorized"))

    @inlineCallbacks
    def test_connectionsPerUser(self) -> Any:
        """
        C{maxConnectionsPerUser} counts a string id's connections, and
        C{"7"} and C{7} as one user's.
        """
        server = yield startServer(self, {"server": {"limits": {"maxConnectionsPerUser": 1}}})
        yield self.open(server, "id=" + quote(EMAIL, safe=""))
        again = yield openClient(server, "id=" + quote(EMAIL, safe=""))
        self.assertEqual((yield again.closed), (4008, "Too many connections"))
        yield self.open(server, "id=7")
        seven = yield openClient(server, "id=7")
        self.assertEqual((yield seven.closed), (4008, "Too many connections"))
        self.assertEqual(server.service.router.connectionsOf(EMAIL), 1)
        self.assertEqual(server.service.router.connectionsOf(7), 1)

    @inlineCallbacks
    def test_ackTokens(self) -> Any:
        """
        Ack tokens are per user with string ids too: user C{a:b} with token
        C{c} and user C{a} with token C{b:c} are two messages, each acked
        with its own id (an id with C{:} meets no other user's token); a
        resend is acked with the first id and not routed again.
        """
        server = yield startServer(self)
        ab = yield self.open(server, "id=a:b")
        a = yield self.open(server, "id=a")
        bob = yield self.open(server, "id=bob")
        ab.send({"type": "text", "text": "one", "recipients": ["bob"], "ack": "c"})
        first = yield ab.messages.get()
        a.send({"type": "text", "text": "two", "recipients": ["bob"], "ack": "b:c"})
        second = yield a.messages.get()
        self.assertEqual((first["type"], first["recipients"], first["data"]["ack"]), ("message_ack", ["a:b"], "c"))
        self.assertEqual((second["recipients"], second["data"]["ack"]), (["a"], "b:c"))
        got = (yield take(bob, 2))
        self.assertEqual([(m["sender"], m["text"]) for m in got], [("a:b", "one"), ("a", "two")])
        self.assertEqual([first["data"]["id"], second["data"]["id"]], [m["id"] for m in got])
        a.send({"type": "text", "text": "two", "recipients": ["bob"], "ack": "b:c"})
        self.assertEqual((yield a.messages.get())["data"], second["data"])
        a.send({"type": "text", "text": "three", "recipients": ["bob"]})
        self.assertEqual((yield bob.messages.get())["text"], "three")

    @inlineCallbacks
    def test_presenceEvents(self) -> Any:
        """
        C{user_online} and C{user_offline} name a string id as a JSON
        string, and a numeric one as a number.
        """
        sink = JSONSink()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(sink))
        self.addCleanup(port.stopListening)
        events = {"enabled": True, "presence": True, "presenceDebounceSeconds": 0.1, "retryIntervalSeconds": 0.1,
                  "targets": [{"type": "postback", "url": f"http://127.0.0.1:{port.getHost().port}/hook"}]}
        server = yield startServer(self, {"event": events, "server": {"dataDir": os.path.abspath(self.mktemp())}})

        def presence() -> list[tuple[str, Any]]:
            return sorted(((b["type"], b["data"]["user"]) for b in sink.bodies if b["type"].startswith("user_")),
                          key=lambda e: (e[0], str(e[1])))

        uuid = yield openClient(server, "id=" + UUID)
        yield self.open(server, "id=7")
        self.assertTrue((yield _until(lambda: presence() == [("user_online", UUID), ("user_online", 7)])))
        yield closeClient(uuid)
        self.assertTrue((yield _until(lambda: len(presence()) == 3)))
        self.assertEqual(presence(), [("user_offline", UUID), ("user_online", UUID), ("user_online", 7)])

    @inlineCallbacks
    def test_inboxResumed(self) -> Any:
        """
        An e-mail address's inbox: a phone that connects with C{?since}
        gets what came after, and C{GET /history} pages it.
        """
        server = yield startServer(self, {"server": {"dataDir": os.path.abspath(self.mktemp())},
                                          "chat": {"history": {"enabled": True, "storage": "sqlite"}}})
        laptop = yield self.open(server, "id=" + quote(EMAIL, safe=""))
        for text in ("m1", "m2", "m3"):
            response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                         data=orjson.dumps({"type": "text", "text": text, "recipients": [EMAIL]}))
            self.assertEqual(response.code, 202)
        got = (yield take(laptop, 3))
        self.assertEqual([m["seq"] for m in got], [1, 2, 3])
        phone = yield self.open(server, "id=" + quote(EMAIL, safe="") + "&since=1")
        resumed = (yield take(phone, 2))
        self.assertEqual([(m["text"], m["seq"], m["recipients"]) for m in resumed],
                         [("m2", 2, [EMAIL]), ("m3", 3, [EMAIL])])
        response = yield restRequest(server, "GET", "/history?id=" + quote(EMAIL, safe="") + "&since=2")
        self.assertEqual([m["text"] for m in (yield response.json())["data"]], ["m3"])
        response = yield restRequest(server, "GET", "/history?id=" + quote(EMAIL, safe="") + "x")
        self.assertEqual([m["text"] for m in (yield response.json())["data"]], [])


class RedisTests(RedisTestCase):
    """
    The Redis queue and inbox: what the previous version wrote is read, and
    string ids have keys of their own.
    """

    def raw(self) -> dict[str, Any]:
        return {"cluster": {"redis": self.url, "heartbeatSeconds": 0.2, "nodeTimeoutSeconds": 1.0},
                "server": {"dataDir": os.path.abspath(self.mktemp())},
                "chat": {"enableUndeliveredQueue": True, "undelivered": {"storage": "redis"},
                         "history": {"enabled": True, "storage": "redis"}}}

    @inlineCallbacks
    def open(self, server: Any, userId: Any) -> Any:
        client = yield openClient(server, "id=" + quote(str(userId), safe=""))
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_previousVersionKeys(self) -> Any:
        """
        Keys as the previous version wrote them (numeric ids as digits):
        user 5's queued messages (one kept once with user 2^64-1) arrive
        when they connect, its inbox answers both old entries, and seqs go
        on from there.
        """
        now = reactor.seconds()
        redis = self.redis.command
        yield redis("RPUSH", "wsserver:queue:5", b"%r " % now + _payload(9, [5], "q1"))
        yield redis("SET", "wsserver:queue:msg:ref1", _payload(9, [5, LARGEST], "q2"))
        yield redis("SET", "wsserver:queue:refs:ref1", 2)
        yield redis("RPUSH", "wsserver:queue:5", b"%r @ref1" % now)
        yield redis("RPUSH", f"wsserver:queue:{LARGEST}", b"%r @ref1" % now)
        for seq in (1, 2):
            yield redis("ZADD", "wsserver:inbox:5", seq, b"%d %r " % (seq, now) + _payload(9, [5], f"h{seq}"))
        yield redis("SET", "wsserver:inbox:seq:5", 2)
        server = yield startServer(self, self.raw())
        five = yield self.open(server, 5)
        got = (yield take(five, 2))
        self.assertEqual([(m["text"], m["recipients"]) for m in got], [("q1", [5]), ("q2", [5])])
        largest = yield self.open(server, LARGEST)
        self.assertEqual((yield largest.messages.get())["recipients"], [LARGEST])
        response = yield restRequest(server, "GET", "/history?id=5")
        self.assertEqual([(m["text"], m["seq"]) for m in (yield response.json())["data"]], [("h1", 1), ("h2", 2)])
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "new", "recipients": [5]}))
        self.assertEqual(response.code, 202)
        live = yield five.messages.get()
        self.assertEqual((live["text"], live["seq"]), ("new", 3))
        self.assertTrue((yield _until(lambda: redis("EXISTS", "wsserver:queue:msg:ref1").addCallback(
            lambda n: n == 0))))

    @inlineCallbacks
    def test_colonIds(self) -> Any:
        """
        Ids that look like the tail of another key (C{seq:7} beside 7,
        C{msg:r} beside the queue's shared payloads, C{a:b} beside C{a})
        get queues and inboxes of their own.
        """
        server = yield startServer(self, self.raw())
        users = ["seq:7", 7, "msg:r", "refs:r", "a", "a:b"]
        for user in users:
            response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                         data=orjson.dumps({"type": "text", "text": f"for {user}",
                                                            "recipients": [user]}))
            self.assertEqual(response.code, 202)
        response = yield restRequest(server, "POST", "/send-message", headers=JSON,
                                     data=orjson.dumps({"type": "text", "text": "all", "recipients": users}))
        self.assertEqual(response.code, 202)
        for user in users:
            client = yield self.open(server, user)
            got = (yield take(client, 2))
            # (the recipients of "all": this user's alone from the queue, or
            # every one from the inbox, whichever catch-up answers first: not
            # what this test is about)
            self.assertEqual([(m["text"], m["seq"]) for m in got], [(f"for {user}", 1), ("all", 2)])
            self.assertTrue(all(user in m["recipients"] for m in got), got)
            response = yield restRequest(server, "GET", "/history?id=" + quote(str(user), safe=""))
            self.assertEqual([m["text"] for m in (yield response.json())["data"]], [f"for {user}", "all"])
        self.assertEqual(int((yield self.redis.command("GET", "wsserver:inbox:seq:7"))), 2)
        self.assertEqual(int((yield self.redis.command("GET", "wsserver:inbox:seq:{seq:7}"))), 2)
        self.assertEqual((yield self.redis.command("EXISTS", "wsserver:inbox:seq")), 0)
