"""
Tests for L{wsserver.rest}: the REST API of SPEC section 4.

The endpoints are driven with L{treq.testing.StubTreq} (the real treq API over
a real L{twisted.web.server.Site} in memory).  StubTreq builds its own plain
C{Site}, so the body bound of L{RestSite} is tested by feeding raw HTTP bytes
to a channel that L{RestSite} built, over a L{StringTransport}.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from wsserver.auth import Authenticator, Credentials, buildAuthenticator
from wsserver.config import AuthConfig, LimitsConfig, MessageConfig
from wsserver.ids import UserIdRule, anyRule, numericRule
from wsserver.limits import Limits
from wsserver.messages import MessageFactory
from wsserver.metrics import Readiness, ServerCollector, makeRegistry
from wsserver.rest import STOP_SECONDS, Operations, RestSite, makeRestResource
from wsserver.routing import Router
from wsserver.queue.memory import MemoryUndeliveredStore

BASE = "http://rest.example.com"

#: The keys of a stat item (SPEC section 3, "Statistics").
STAT_KEYS = {
    "id",
    "isOnline",
    "lastConnection",
    "connectedTimes",
    "disconnectedTimes",
    "lastMessageTime",
    "timeOnline",
    "timeOffline",
    "timeInactivity",
    "sentMessages",
    "receivedMessages",
    "bytesTransferred",
}

#: Every bad value of the C{id} query parameter, other than none at all.
BAD_IDS = ["abc", "-1", "18446744073709551616", "0", "1.5", "0x10", "1&id=2"]

JSON = {"Content-Type": "application/json"}


def error(status: int, message: str) -> dict[str, Any]:
    """
    The JSON body of an error answer.
    """
    return {"success": False, "status": status, "message": message}


class FakeConnection:
    """
    A live connection as the router sees it; records what it is sent.
    """

    def __init__(self, userId: int) -> None:
        self.userId = userId
        self.sent: list[Any] = []
        self.closed: list[tuple[int, str]] = []

    def sendPrepared(self, prepared: Any) -> None:
        # the router's default C{prepare} is the identity: serialized JSON
        self.sent.append(orjson.loads(prepared))

    def sendStored(self, prepared: Any) -> None:
        self.sendPrepared(prepared)

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


class _Waiting(Authenticator):
    """
    An authenticator whose answers the test gives, one L{Deferred} per check.
    """

    _isAsync = True
    _authType = "waiting"

    def __init__(self) -> None:
        self.pending: list[Deferred[bool]] = []

    def _check(self, credentials: Credentials) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.pending.append(d)
        return d


class RestMixin:
    """
    A router with a fake clock, the REST resource over it, and a StubTreq
    client; C{request} answers synchronously.
    """

    #: C{chat.userIds}: the original's rule, whose refusals these tests know
    ids: UserIdRule = numericRule

    def setUpRest(self, authenticator: Authenticator | None = None, realm: str | None = "wsserver") -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC"), ids=self.ids))
        if authenticator is None:
            authenticator = buildAuthenticator(AuthConfig())
        self.resource = makeRestResource(self.router, authenticator, realm, messages=self.router.messages,
                                         clock=self.clock)
        self.client = StubTreq(self.resource)

    def connect(self, userId: int) -> FakeConnection:
        """
        Attach a fake connection of C{userId} to the router.
        """
        connection = FakeConnection(userId)
        self.router.attach(connection)
        return connection

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        """
        Send a request and return the response and its whole body.
        """
        d = self.client.request(method, BASE + path, **kwargs)
        self.client.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body = self.client.content(response)
        self.client.flush()
        return response, self.successResultOf(body)  # type: ignore[attr-defined]

    def assertJSON(self, answer: tuple[Any, bytes], status: int, expected: Any) -> None:
        """
        The answer has C{status}, a JSON content type, and C{expected} as body.
        """
        response, body = answer
        self.assertEqual(  # type: ignore[attr-defined]
            (response.code, orjson.loads(body)), (status, expected), body
        )
        self.assertEqual(  # type: ignore[attr-defined]
            response.headers.getRawHeaders(b"Content-Type"), [b"application/json"]
        )

    def assertError(self, answer: tuple[Any, bytes], status: int, message: str) -> None:
        """
        The answer is the JSON error C{status} with C{message}.
        """
        self.assertJSON(answer, status, error(status, message))

    def send(self, payload: Any, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
        """
        POST C{payload} (bytes as given, anything else as JSON) to
        C{/send-message}, with a JSON content type unless C{headers} say
        otherwise.
        """
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.request("POST", "/send-message", data=data, headers=JSON if headers is None else headers)


class StatsTests(RestMixin, SynchronousTestCase):
    """
    C{GET /stats}, C{GET /stat}, C{GET /check-online}.
    """

    def setUp(self) -> None:
        self.setUpRest()

    def test_statsEmpty(self) -> None:
        """
        C{GET /stats} with no user seen answers an empty list.
        """
        self.assertJSON(self.request("GET", "/stats"), 200, {"success": True, "data": []})

    def test_stats(self) -> None:
        """
        C{GET /stats} answers one item per user seen, each with every stat
        key of SPEC section 3.
        """
        self.connect(7)
        self.connect(3)
        self.clock.advance(30)
        response, body = self.request("GET", "/stats")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        answer = orjson.loads(body)
        self.assertEqual(set(answer), {"success", "data"})
        self.assertIs(answer["success"], True)
        self.assertEqual(sorted(item["id"] for item in answer["data"]), [3, 7])
        for item in answer["data"]:
            self.assertEqual(set(item), STAT_KEYS)
            self.assertIs(item["isOnline"], True)
            self.assertEqual(item["connectedTimes"], 1)
            self.assertEqual(item["lastConnection"], 1_700_000_000)
            self.assertEqual(item["timeOnline"], 30)

    def test_statKnown(self) -> None:
        """
        C{GET /stat?id=N} answers the stat item of a user seen.
        """
        connection = self.connect(5)
        self.clock.advance(10)
        self.router.detach(connection)
        self.clock.advance(4)
        response, body = self.request("GET", "/stat?id=5")
        self.assertEqual(response.code, 200)
        answer = orjson.loads(body)
        self.assertIs(answer["success"], True)
        item = answer["data"]
        self.assertEqual(set(item), STAT_KEYS)
        self.assertEqual(item["id"], 5)
        self.assertIs(item["isOnline"], False)
        self.assertEqual((item["connectedTimes"], item["disconnectedTimes"]), (1, 1))
        self.assertEqual((item["timeOnline"], item["timeOffline"]), (10, 4))

    def test_statUnknown(self) -> None:
        """
        C{GET /stat?id=N} for a user never seen answers the item with zeros
        and C{isOnline} false.
        """
        zeros = {key: 0 for key in STAT_KEYS}
        zeros.update(id=18446744073709551615, isOnline=False)
        self.assertJSON(
            self.request("GET", "/stat?id=18446744073709551615"), 200, {"success": True, "data": zeros}
        )

    def test_statIdRequired(self) -> None:
        """
        C{GET /stat} without an id, or with an empty one, answers 400
        C{Id required}.
        """
        for path in ["/stat", "/stat?id=", "/stat?other=1"]:
            self.assertError(self.request("GET", path), 400, "Id required")

    def test_statInvalidId(self) -> None:
        """
        C{GET /stat} with an id that is not a user id (not a number, negative,
        over 2^64-1, the reserved 0, or given twice) answers 400
        C{Invalid id}.
        """
        for bad in BAD_IDS:
            self.assertError(self.request("GET", "/stat?id=" + bad), 400, "Invalid id")

    def test_checkOnline(self) -> None:
        """
        C{GET /check-online?id=N} says whether the user has a live connection.
        """
        self.connect(5)
        self.assertJSON(self.request("GET", "/check-online?id=5"), 200, {"success": True, "data": {"isOnline": True}})
        self.assertJSON(self.request("GET", "/check-online?id=6"), 200, {"success": True, "data": {"isOnline": False}})

    def test_checkOnlineAfterDisconnect(self) -> None:
        """
        A user whose last connection closed is offline.
        """
        first, second = self.connect(5), self.connect(5)
        self.router.detach(first)
        self.assertJSON(self.request("GET", "/check-online?id=5"), 200, {"success": True, "data": {"isOnline": True}})
        self.router.detach(second)
        self.assertJSON(self.request("GET", "/check-online?id=5"), 200, {"success": True, "data": {"isOnline": False}})

    def test_checkOnlineIdErrors(self) -> None:
        """
        C{GET /check-online} has the id errors of C{/stat}.
        """
        self.assertError(self.request("GET", "/check-online"), 400, "Id required")
        for bad in BAD_IDS:
            self.assertError(self.request("GET", "/check-online?id=" + bad), 400, "Invalid id")


class AnyIdTests(RestMixin, SynchronousTestCase):
    """
    With C{chat.userIds: "any"}, every endpoint takes string ids, and
    refuses others with 400 naming the rule.
    """

    ids = anyRule

    def setUp(self) -> None:
        self.setUpRest()

    def test_parameters(self) -> None:
        """
        C{?id=} takes UUIDs and e-mail addresses (a C{+} is a plus); digits
        are the number.
        """
        self.connect("a+b@example.com")
        self.connect(7)
        for query in ("a%2Bb%40example.com", "a+b@example.com"):
            self.assertJSON(self.request("GET", "/check-online?id=" + query), 200,
                            {"success": True, "data": {"isOnline": True}})
        self.assertJSON(self.request("GET", "/check-online?id=7"), 200, {"success": True, "data": {"isOnline": True}})
        stat = orjson.loads(self.request("GET", "/stat?id=a%2Bb%40example.com")[1])["data"]
        self.assertEqual(stat["id"], "a+b@example.com")

    def test_badParameters(self) -> None:
        """
        An id outside the rule is a 400 that says why, the value cut short.
        """
        cases = [
            ("a%20b", 'Invalid id "a b": only letters, digits and _-.:@|+='),
            ("007", 'Invalid id "007": a number must not start with 0'),
            ("18446744073709551616", 'Invalid id "18446744073709551616": over the maximum 2^64-1'),
            ("x" * 200, 'Invalid id "xxxxxxxxxxxxxxxxxxxxxx\u2026: longer than 128 characters'),
            ("0", "Invalid id 0: reserved for the server"),
        ]
        for query, message in cases:
            self.assertError(self.request("GET", "/stat?id=" + query), 400, message)

    def test_sendMessage(self) -> None:
        """
        C{POST /send-message} takes string recipients and senders; numeric
        ones are written back as numbers.
        """
        alice = self.connect("3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c")
        seven = self.connect(7)
        body = {"type": "text", "text": "hi", "sender": "bot@example.com",
                "recipients": ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", "7"]}
        response, _ = self.request("POST", "/send-message", data=orjson.dumps(body),
                                   headers={"Content-Type": ["application/json"]})
        self.assertEqual(response.code, 202)
        for connection in (alice, seven):
            got = connection.sent[-1]
            self.assertEqual((got["sender"], got["recipients"]),
                             ("bot@example.com", ["3f2c9a1e-7b4d-4e0a-9c1b-2d3e4f5a6b7c", 7]))

    def test_badBody(self) -> None:
        """
        A recipient outside the rule is a 400 naming it.
        """
        body = {"type": "text", "text": "hi", "recipients": ["a b"]}
        self.assertError(self.request("POST", "/send-message", data=orjson.dumps(body),
                                      headers={"Content-Type": ["application/json"]}),
                         400, 'Invalid payload. $.recipients[] must be user ids: "a b": only letters, digits and _-.:@|+=')


class SendMessageTests(RestMixin, SynchronousTestCase):
    """
    C{POST /send-message}.
    """

    def setUp(self) -> None:
        self.setUpRest()
        self.recipient = self.connect(5)

    def assertAccepted(self, answer: tuple[Any, bytes]) -> None:
        """
        The answer is 202 with an empty body.
        """
        response, body = answer
        self.assertEqual((response.code, body), (202, b""))

    def assertNothingSent(self) -> None:
        self.assertEqual(self.recipient.sent, [])

    def test_send(self) -> None:
        """
        A valid message is routed to the recipient's connections, from the
        server itself (sender 0) when it names no sender, with an id and a
        timestamp; the answer is 202 with an empty body.
        """
        self.assertAccepted(self.send({"type": "text", "text": "hi", "recipients": [5], "data": {"k": [1]}}))
        [message] = self.recipient.sent
        self.assertEqual(
            set(message), {"id", "type", "text", "timestamp", "sender", "recipients", "data"}
        )
        self.assertEqual(
            (message["type"], message["text"], message["sender"], message["recipients"], message["data"]),
            ("text", "hi", 0, [5], {"k": [1]}),
        )
        self.assertIsInstance(message["id"], str)
        self.assertEqual(message["timestamp"], "2023-11-14T22:13:20.000000+00:00")

    def test_sendCharset(self) -> None:
        """
        Parameters of the content type, such as C{charset}, are accepted.
        """
        self.assertAccepted(
            self.send(
                {"type": "text", "text": "h\u00e9", "recipients": [5]},
                {"Content-Type": "application/json; charset=utf-8"},
            )
        )
        self.assertEqual([m["text"] for m in self.recipient.sent], ["h\u00e9"])

    def test_sendTreqJSON(self) -> None:
        """
        What treq sends for C{json=} (C{application/json; charset=UTF-8}) is
        accepted.
        """
        response, body = self.request("POST", "/send-message", json={"type": "ping", "recipients": [5]})
        self.assertEqual((response.code, body), (202, b""))
        self.assertEqual([(m["type"], m["text"]) for m in self.recipient.sent], [("ping", "")])

    def test_sendWithSender(self) -> None:
        """
        A sender given in the payload is kept (the REST API may speak for any
        user).
        """
        self.assertAccepted(self.send({"type": "text", "text": "hi", "sender": 42, "recipients": [5]}))
        self.assertEqual([m["sender"] for m in self.recipient.sent], [42])
        self.assertEqual(self.router.statItem(42)["sentMessages"], 1)

    def test_sendToOffline(self) -> None:
        """
        A message for a user with no connection is accepted (and dropped,
        the undelivered queue being off).
        """
        self.assertAccepted(self.send({"type": "text", "text": "hi", "recipients": [6]}))
        self.assertNothingSent()

    def test_sendBotAmongOthers(self) -> None:
        """
        A 0 among other recipients is skipped; the others get the message.
        """
        self.assertAccepted(self.send({"type": "text", "text": "hi", "recipients": [0, 5]}))
        self.assertEqual([m["recipients"] for m in self.recipient.sent], [[0, 5]])

    def test_wrongContentType(self) -> None:
        """
        A body that is not declared C{application/json} answers 400, and
        nothing is routed.
        """
        payload = orjson.dumps({"type": "text", "text": "hi", "recipients": [5]})
        for headers in [
            {"Content-Type": "text/plain"},
            {},
            {"Content-Type": "application/jsonp"},
            {"Content-Type": "application/x-www-form-urlencoded"},
        ]:
            self.assertError(
                self.request("POST", "/send-message", data=payload, headers=headers),
                400,
                "Content-Type must be application/json",
            )
        self.assertNothingSent()

    def test_maxRecipients(self) -> None:
        """
        More than C{maxRecipients} recipients answers 400 with the wording
        of close code 4001; at the limit the message is routed.
        """
        self.router.messages.maxRecipients = 3
        response, body = self.send({"type": "text", "text": "hi", "recipients": [5, 6, 7, 8]})
        self.assertEqual((response.code, orjson.loads(body)),
                         (400, error(400, "Invalid payload. $.recipients[] must contain at most 3 values")))
        self.assertNothingSent()
        self.assertAccepted(self.send({"type": "text", "text": "hi", "recipients": [5, 6, 7]}))

    def test_invalidPayloads(self) -> None:
        """
        An invalid message answers 400 with the wording of close code 4001,
        and nothing is routed.
        """
        cases = [
            ({"text": "hi", "recipients": [5]}, "$.type must be a string"),
            ({"type": 1, "recipients": [5]}, "$.type must be a string"),
            ({"type": "text", "text": "hi", "recipients": []}, "$.recipients[] must contains at least 1 value"),
            ({"type": "text", "text": "hi"}, "$.recipients[] must be uint64_t[]"),
            ({"type": "text", "text": "hi", "recipients": ["5"]}, "$.recipients[] must be uint64_t[]"),
            ({"type": "text", "text": "hi", "recipients": [-5]}, "$.recipients[] must be uint64_t[]"),
            (b'{"type": "text", "text": "hi", "recipients": [18446744073709551616]}', "$.recipients[] must be uint64_t[]"),
            ({"type": "text", "text": "hi", "recipients": [5.0]}, "$.recipients[] must be uint64_t[]"),
            ({"type": "text", "text": "hi", "recipients": 5}, "$.recipients[] must be uint64_t[]"),
            ({"type": "text", "recipients": [5]}, "$.text must be string"),
            ({"type": "text", "text": 3, "recipients": [5]}, "$.text must be string"),
            ({"type": "text", "text": "hi", "sender": -1, "recipients": [5]}, "$.sender must be uint64_t"),
            ({"type": "text", "text": "hi", "sender": "1", "recipients": [5]}, "$.sender must be uint64_t"),
            ([{"type": "text"}], "$ must be an object"),
        ]
        for payload, reason in cases:
            self.assertError(self.send(payload), 400, "Invalid payload. " + reason)
        self.assertNothingSent()

    def test_unparsable(self) -> None:
        """
        A body that is not JSON (or is empty) answers 400 with the parse
        error after C{Invalid payload. }.
        """
        for body in [b"{not json", b"", b'{"type": "text", "recipients": [5]', b"\xff"]:
            response, raw = self.send(body)
            answer = orjson.loads(raw)
            self.assertEqual((response.code, answer["success"], answer["status"]), (400, False, 400), body)
            self.assertEqual(set(answer), {"success", "status", "message"})
            self.assertTrue(answer["message"].startswith("Invalid payload. "), answer["message"])
            self.assertGreater(len(answer["message"]), len("Invalid payload. "))
        self.assertNothingSent()

    def test_forBot(self) -> None:
        """
        A message for the bot only (C{recipients == [0]}) answers 400.
        """
        self.assertError(
            self.send({"type": "text", "text": "hi", "recipients": [0]}),
            400,
            "Can't send message to bot through the api",
        )
        self.assertNothingSent()


class RoutesTests(RestMixin, SynchronousTestCase):
    """
    C{/status}, unknown paths, and wrong methods.
    """

    def setUp(self) -> None:
        self.setUpRest()

    def test_headStatus(self) -> None:
        """
        C{HEAD /status} answers 200 with no body.
        """
        response, body = self.request("HEAD", "/status")
        self.assertEqual((response.code, body), (200, b""))

    def test_getStatus(self) -> None:
        """
        C{GET /status} answers 200 with a JSON success.
        """
        self.assertJSON(self.request("GET", "/status"), 200, {"success": True})

    def test_headGetEndpoints(self) -> None:
        """
        Every C{GET} endpoint answers C{HEAD} too.
        """
        for path in ["/stats", "/stat?id=1", "/check-online?id=1"]:
            response, body = self.request("HEAD", path)
            self.assertEqual((response.code, body), (200, b""), path)

    def test_trailingSlash(self) -> None:
        """
        An endpoint answers for its path with a trailing slash too.
        """
        self.assertJSON(self.request("GET", "/stats/"), 200, {"success": True, "data": []})

    def test_notFound(self) -> None:
        """
        A path that is no endpoint, the root, or a path below an endpoint
        answers 404 in the JSON error form, whatever the method.
        """
        for method, path in [
            ("GET", "/nope"),
            ("POST", "/nope"),
            ("GET", "/"),
            ("GET", "/stats/extra"),
            ("GET", "/stat/5?id=5"),
            ("POST", "/send-message/x"),
            ("GET", "/STATS"),
        ]:
            self.assertError(self.request(method, path), 404, "Not found")

    def test_methodNotAllowed(self) -> None:
        """
        A known path with a method it does not take answers 405 in the JSON
        error form, with an C{Allow} header.
        """
        for method, path, allowed in [
            ("GET", "/send-message", b"POST"),
            ("HEAD", "/send-message", b"POST"),
            ("POST", "/stats", b"GET, HEAD"),
            ("DELETE", "/stat?id=1", b"GET, HEAD"),
            ("PUT", "/check-online", b"GET, HEAD"),
            ("POST", "/status", b"GET, HEAD"),
        ]:
            answer = self.request(method, path)
            if method == "HEAD":
                self.assertEqual((answer[0].code, answer[1]), (405, b""))
            else:
                self.assertError(answer, 405, "Method not allowed")
            self.assertEqual(answer[0].headers.getRawHeaders(b"Allow"), [allowed], (method, path))


class BasicAuthTests(RestMixin, SynchronousTestCase):
    """
    The REST API behind basic auth.

    The auth is checked before anything else: an unauthenticated request
    gets 401 on every path, known or not (before 404) and whatever the method
    (before 405), so that nothing about the API is learned without
    credentials.
    """

    def setUp(self) -> None:
        self.setUpRest(buildAuthenticator(AuthConfig(type="basic", user="u", password="p")), "wsserver")
        self.recipient = self.connect(5)

    def assertUnauthorized(self, answer: tuple[Any, bytes]) -> None:
        """
        The answer is 401 with the basic challenge.
        """
        self.assertError(answer, 401, "Unauthorized")
        self.assertEqual(answer[0].headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="wsserver"'])

    def test_missing(self) -> None:
        """
        No credentials: 401 with C{WWW-Authenticate: Basic realm="wsserver"}.
        """
        self.assertUnauthorized(self.request("GET", "/stats"))

    def test_wrong(self) -> None:
        """
        A wrong password, a wrong user, or another scheme: 401.
        """
        self.assertUnauthorized(self.request("GET", "/stats", auth=("u", "x")))
        self.assertUnauthorized(self.request("GET", "/stats", auth=("x", "p")))
        self.assertUnauthorized(self.request("GET", "/stats", headers={"Authorization": "Bearer p"}))
        self.assertUnauthorized(self.request("GET", "/stats", headers={"Authorization": "Basic !!!"}))

    def test_right(self) -> None:
        """
        The right credentials pass.
        """
        self.assertJSON(
            self.request("GET", "/check-online?id=5", auth=("u", "p")),
            200,
            {"success": True, "data": {"isOnline": True}},
        )
        response, body = self.request("HEAD", "/status", auth=("u", "p"))
        self.assertEqual((response.code, body), (200, b""))

    def test_statusNeedsAuth(self) -> None:
        """
        C{/status} is behind the auth too.
        """
        response, body = self.request("HEAD", "/status")
        self.assertEqual((response.code, body), (401, b""))
        self.assertEqual(response.headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="wsserver"'])
        self.assertUnauthorized(self.request("GET", "/status"))

    def test_sendMessage(self) -> None:
        """
        C{POST /send-message} routes only with the right credentials.
        """
        payload = {"type": "text", "text": "hi", "recipients": [5]}
        self.assertUnauthorized(self.send(payload))
        self.assertUnauthorized(self.send(b"not json"))
        self.assertEqual(self.recipient.sent, [])
        response, body = self.request("POST", "/send-message", json=payload, auth=("u", "p"))
        self.assertEqual((response.code, body), (202, b""))
        self.assertEqual([m["text"] for m in self.recipient.sent], ["hi"])

    def test_errorsAfterAuth(self) -> None:
        """
        With the right credentials, the endpoints' own errors come through.
        """
        self.assertError(self.request("GET", "/stat", auth=("u", "p")), 400, "Id required")
        self.assertError(self.request("GET", "/stat?id=0", auth=("u", "p")), 400, "Invalid id")

    def test_unknownPath(self) -> None:
        """
        An unknown path answers 401 without credentials (auth comes before
        404), and 404 with them.
        """
        self.assertUnauthorized(self.request("GET", "/nope"))
        self.assertError(self.request("GET", "/nope", auth=("u", "p")), 404, "Not found")

    def test_wrongMethod(self) -> None:
        """
        A wrong method answers 401 without credentials (auth comes before
        405, as before 404), and 405 with them.
        """
        answer = self.request("GET", "/send-message")
        self.assertUnauthorized(answer)
        self.assertIsNone(answer[0].headers.getRawHeaders(b"Allow"))
        self.assertError(self.request("GET", "/send-message", auth=("u", "p")), 405, "Method not allowed")


class HeaderAuthTests(RestMixin, SynchronousTestCase):
    """
    The REST API behind header auth: 401 without a basic challenge.
    """

    def setUp(self) -> None:
        self.setUpRest(buildAuthenticator(AuthConfig(type="header", name="X-Token", value="t")), None)

    def test_missing(self) -> None:
        """
        No or a wrong header: 401 without C{WWW-Authenticate}.
        """
        for headers in [{}, {"X-Token": "x"}, {"X-Other": "t"}]:
            answer = self.request("GET", "/stats", headers=headers)
            self.assertError(answer, 401, "Unauthorized")
            self.assertIsNone(answer[0].headers.getRawHeaders(b"WWW-Authenticate"))

    def test_right(self) -> None:
        """
        The right header passes, whatever the case of its name.
        """
        for name in ["X-Token", "x-token"]:
            self.assertJSON(self.request("GET", "/stats", headers={name: "t"}), 200, {"success": True, "data": []})


def _dechunk(body: bytes) -> bytes:
    """
    Decode a chunked HTTP body.
    """
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        length = int(size.split(b";")[0], 16)
        if length == 0:
            return out
        out += rest[:length]
        body = rest[length + 2 :]


def parseResponse(raw: bytes) -> tuple[int, Headers, bytes]:
    """
    The status, headers and body of one raw HTTP/1.1 response.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    statusLine, *lines = head.split(b"\r\n")
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(b":")
        headers.addRawHeader(name.strip(), value.strip())
    if headers.getRawHeaders(b"Transfer-Encoding") == [b"chunked"]:
        body = _dechunk(body)
    else:
        [length] = headers.getRawHeaders(b"Content-Length", [b"0"])
        body = body[: int(length)]
    return int(statusLine.split(b" ")[1]), headers, body


class RestSiteTests(SynchronousTestCase):
    """
    L{RestSite}: request bodies bounded by C{maxBody}, tested with raw HTTP
    over a L{StringTransport}.
    """

    maxBody = 1000

    def setUp(self) -> None:
        self.clock = Clock()
        self.router = Router(MessageConfig(), self.clock, MessageFactory(self.clock, ZoneInfo("UTC")))
        self.recipient = FakeConnection(5)
        self.router.attach(self.recipient)
        self.authenticator: Authenticator = buildAuthenticator(AuthConfig())

    limits: Limits | None = None

    def site(self) -> RestSite:
        resource: Resource = makeRestResource(self.router, self.authenticator, "wsserver",
                                               limits=getattr(self, "limits", None),
                                               messages=self.router.messages, clock=self.clock)
        self.reactor = MemoryReactorClock()
        return RestSite(resource, self.maxBody, limits=getattr(self, "limits", None), reactor=self.reactor)

    def connect(self) -> tuple[Any, StringTransport]:
        """
        A server-side HTTP channel of a new L{RestSite}, and its transport.
        """
        channel = self.site().buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
        return channel, transport

    def exchange(self, raw: bytes) -> tuple[int, Headers, bytes]:
        """
        Feed C{raw} to a new channel and parse its answer.
        """
        channel, transport = self.connect()
        channel.dataReceived(raw)
        return parseResponse(transport.value())

    def post(self, body: bytes, extra: bytes = b"") -> bytes:
        """
        A raw C{POST /send-message} request with a JSON body and a
        Content-Length.
        """
        return (
            b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra
            + b"Content-Length: %d\r\n\r\n" % (len(body),)
            + body
        )

    def chunked(self, body: bytes, size: int = 300, extra: bytes = b"") -> bytes:
        """
        A raw C{POST /send-message} request with a chunked JSON body.
        """
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
        )
        return (
            b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )

    def message(self, size: int) -> bytes:
        """
        A valid message for user 5 of exactly C{size} bytes.
        """
        body = orjson.dumps({"type": "text", "text": "", "recipients": [5]})
        body = orjson.dumps({"type": "text", "text": "x" * (size - len(body)), "recipients": [5]})
        self.assertEqual(len(body), size)
        return body

    def assertTooLarge(self, answer: tuple[int, Headers, bytes]) -> None:
        status, headers, body = answer
        self.assertEqual(
            (status, orjson.loads(body)),
            (413, error(413, f"Payload too large: the limit is {self.maxBody} bytes")),
        )
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        self.assertEqual(self.recipient.sent, [])

    def test_underLimit(self) -> None:
        """
        A body of at most C{maxBody} bytes is routed: 202 with an empty body.
        """
        status, headers, body = self.exchange(self.post(self.message(200)))
        self.assertEqual((status, body), (202, b""))
        self.assertEqual(headers.getRawHeaders(b"Content-Length"), [b"0"])
        self.assertIsNone(headers.getRawHeaders(b"Content-Type"))
        self.assertEqual(len(self.recipient.sent), 1)

    def test_atLimit(self) -> None:
        """
        A body of exactly C{maxBody} bytes passes, with a Content-Length or
        chunked.
        """
        body = self.message(self.maxBody)
        self.assertEqual(self.exchange(self.post(body))[0], 202)
        self.assertEqual(self.exchange(self.chunked(body))[0], 202)
        self.assertEqual(len(self.recipient.sent), 2)

    def test_contentLengthOverLimit(self) -> None:
        """
        A Content-Length over C{maxBody} answers 413 in the JSON error form,
        and nothing is routed.
        """
        self.assertTooLarge(self.exchange(self.post(self.message(self.maxBody + 1))))

    def test_bigContentLength(self) -> None:
        """
        A Content-Length of 20000 bytes, with a body of that size that is no
        valid message, answers 413 (not a parse error): the body is not kept.
        """
        self.assertTooLarge(self.exchange(self.post(b"{" + b" " * 19999)))

    def test_chunkedOverLimit(self) -> None:
        """
        A chunked body that grows over C{maxBody} answers 413, and nothing is
        routed.
        """
        self.assertTooLarge(self.exchange(self.chunked(self.message(self.maxBody + 1))))
        self.assertTooLarge(self.exchange(self.chunked(self.message(5000), size=1)))

    def test_closedAfterTooLarge(self) -> None:
        """
        A 413 is sent as soon as the body is known to be too large (here:
        from its headers, before any of the body arrived), and the connection
        is closed: what follows is never read, not even a next request.
        """
        channel, transport = self.connect()
        head, _, body = self.post(self.message(3000)).partition(b"\r\n\r\n")
        channel.dataReceived(head + b"\r\n\r\n")
        status, headers, _ = answer = parseResponse(transport.value())
        self.assertTooLarge(answer)
        self.assertEqual(headers.getRawHeaders(b"Connection"), [b"close"])
        self.assertTrue(transport.disconnecting)
        transport.clear()
        channel.dataReceived(body + self.post(self.message(100)))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.recipient.sent, [])

    def test_endlessChunkedCut(self) -> None:
        """
        A chunked body that never ends is answered with 413 and closed once
        it passed C{maxBody}, without waiting for its end.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(self.maxBody // 100 + 1):
            channel.dataReceived(b"64\r\n" + b"x" * 100 + b"\r\n")
        self.assertTooLarge(parseResponse(transport.value()))
        self.assertTrue(transport.disconnecting)
        transport.clear()
        for _ in range(100):
            channel.dataReceived(b"64\r\n" + b"x" * 100 + b"\r\n")
        channel.dataReceived(b"0\r\n\r\n")
        self.assertEqual(transport.value(), b"")

    def test_expectContinueRefused(self) -> None:
        """
        A request that asks for C{100 Continue} with a body over the limit
        gets the 413 only (no invitation to send the body).
        """
        status, headers, body = self.exchange(
            b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        self.assertEqual(status, 413)

    def test_otherEndpoints(self) -> None:
        """
        The bound does not get in the way of other requests.
        """
        status, headers, body = self.exchange(b"GET /check-online?id=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, orjson.loads(body)), (200, {"success": True, "data": {"isOnline": True}}))

    def test_tooLargeWithAuth(self) -> None:
        """
        Behind auth, a body over the limit answers 413 with or without
        credentials: the body is refused while it arrives, before the auth
        check (which needs the whole request).
        """
        self.authenticator = buildAuthenticator(AuthConfig(type="basic", user="u", password="p"))
        body = self.message(2000)
        self.assertTooLarge(self.exchange(self.post(body)))
        self.assertTooLarge(self.exchange(self.post(body, b"Authorization: Basic dTpw\r\n")))
        self.assertTooLarge(self.exchange(self.chunked(body, extra=b"Authorization: Basic dTpw\r\n")))
        self.assertEqual(self.exchange(self.post(self.message(100), b"Authorization: Basic dTpw\r\n"))[0], 202)

    def test_clientGoneBeforeAuth(self) -> None:
        """
        When the client goes away while the auth is being checked, the answer
        is dropped quietly and nothing is routed.
        """
        waiting = self.authenticator = _Waiting()
        channel, transport = self.connect()
        channel.dataReceived(self.post(self.message(100)))
        [d] = waiting.pending
        channel.connectionLost(Failure(ConnectionError("gone")))
        d.callback(True)
        self.assertEqual(self.recipient.sent, [])
        self.assertEqual(transport.value(), b"")

    def test_asyncAuth(self) -> None:
        """
        An auth that answers later holds the answer until then.
        """
        waiting = self.authenticator = _Waiting()
        channel, transport = self.connect()
        channel.dataReceived(self.post(self.message(100)))
        self.assertEqual(transport.value(), b"")
        waiting.pending[0].callback(True)
        self.assertEqual(parseResponse(transport.value())[:1], (202,))
        self.assertEqual(len(self.recipient.sent), 1)


class StoppingTests(SynchronousTestCase):
    """
    A stopping server answers 503 on connections kept alive past the stop.
    """

    maxBody = RestSiteTests.maxBody
    setUp = RestSiteTests.setUp
    site = RestSiteTests.site
    post = RestSiteTests.post
    message = RestSiteTests.message

    def test_stopping(self) -> None:
        """
        After L{RestSite.stop}, a message is refused with 503 (and the
        connection closed), not accepted with 202 and then lost.
        """
        site = self.site()
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
        self.successResultOf(site.stop())
        channel.dataReceived(self.post(self.message(100)))
        status, headers, body = parseResponse(transport.value())
        self.assertEqual(status, 503)
        self.assertEqual(orjson.loads(body), {"success": False, "status": 503, "message": "Server shutting down"})
        self.assertEqual(self.recipient.sent, [])

    def test_stoppingNotReady(self) -> None:
        """
        After L{RestSite.stop}, C{/ready} answers 503 and C{/health} still
        200 (the process serves until it exits).
        """
        site = self.site()
        self.successResultOf(site.stop())
        answers = []
        for path in (b"/ready", b"/health"):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
            channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = parseResponse(transport.value())
            answers.append((status, orjson.loads(body)))
        self.assertEqual(answers, [(503, {"status": "not ready"}), (200, {"status": "ok"})])


    def inProgress(self) -> tuple[RestSite, Any, StringTransport, Deferred[bool]]:
        """
        A site, and a message on a connection to it whose auth has not
        answered yet: a request in progress.
        """
        waiting = self.authenticator = _Waiting()
        site = self.site()
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionError("test over")))
        channel.dataReceived(self.post(self.message(100)))
        [d] = waiting.pending
        return site, channel, transport, d

    def test_stopWaitsForRequests(self) -> None:
        """
        L{RestSite.stop} fires once the requests in progress are answered
        (the message accepted then is routed), its timer cancelled.
        """
        site, channel, transport, auth = self.inProgress()
        timers = list(self.reactor.getDelayedCalls())
        stopped = site.stop()
        self.assertNoResult(stopped)
        [timer] = [c for c in self.reactor.getDelayedCalls() if c not in timers]
        auth.callback(True)
        self.successResultOf(stopped)
        self.assertEqual(parseResponse(transport.value())[0], 202)
        self.assertEqual(len(self.recipient.sent), 1)
        self.assertTrue(timer.cancelled)

    def test_stopWaitsForLostRequests(self) -> None:
        """
        A request whose connection is lost is no longer waited for.
        """
        site, channel, transport, auth = self.inProgress()
        stopped = site.stop()
        channel.connectionLost(Failure(ConnectionError("gone")))
        self.successResultOf(stopped)

    def test_stopTimeout(self) -> None:
        """
        L{RestSite.stop} waits C{STOP_SECONDS} at most for the requests in
        progress, and says how many are left.
        """
        site, channel, transport, auth = self.inProgress()
        stopped = site.stop()
        self.reactor.advance(STOP_SECONDS - 0.1)
        self.assertNoResult(stopped)
        with capturedLogs() as logged:
            self.reactor.advance(0.1)
        self.successResultOf(stopped)
        [event] = [e for e in logged if e.get("log_namespace") == "wsserver.rest"]
        self.assertEqual((event["n"], event["timeout"]), (1, STOP_SECONDS))
        self.assertEqual(formatEvent(event), "REST API: 1 requests still in progress after 5.0 s at stop")

class OperationsTests(RestMixin, SynchronousTestCase):
    """
    C{/metrics}, C{/health}, C{/ready}, C{/overview} and C{/dashboard}
    (SPEC section 9), behind basic auth but for health and readiness.
    """

    def setUp(self) -> None:
        auth = buildAuthenticator(AuthConfig(type="basic", user="u", password="p"))
        self.setUpRest(auth, "wsserver")
        self.notifier = _Notifier()
        self.readiness = Readiness()
        self.store = MemoryUndeliveredStore(60, 10)
        collector = ServerCollector(self.router, self.notifier, self.store)
        self.operations = Operations(collector, makeRegistry(collector), self.readiness, "memory")
        self.resource = makeRestResource(self.router, auth, "wsserver", notifier=self.notifier,
                                         operations=self.operations, messages=self.router.messages,
                                         clock=self.clock)
        self.client = StubTreq(self.resource)

    def test_metrics(self) -> None:
        """
        C{GET /metrics} answers the Prometheus text format with the server's
        figures, the event counts read fresh for each scrape.
        """
        self.connect(5)
        self.send({"type": "text", "text": "hi", "recipients": [5]}, headers={**JSON, "Authorization": BASIC})
        response, body = self.request("GET", "/metrics", auth=("u", "p"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [CONTENT_TYPE_LATEST.encode()])
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        self.assertEqual(samples[("wsserver_connections", ())], 1)
        self.assertEqual(samples[("wsserver_messages_received_total", (("source", "rest"),))], 1)
        self.assertEqual(samples[("wsserver_messages_delivered_total", ())], 1)
        self.assertEqual(samples[("wsserver_event_pending", (("target", "targets[0]"), ("type", "postback")))], 4)
        self.assertIn(("process_cpu_seconds_total", ()), samples)
        self.request("GET", "/metrics", auth=("u", "p"))
        self.assertEqual(self.notifier.calls, 2)

    def test_metricsNeedAuth(self) -> None:
        """
        C{/metrics}, C{/overview} and C{/dashboard} are behind the REST auth.
        """
        for path in ("/metrics", "/overview", "/dashboard"):
            answer = self.request("GET", path)
            self.assertError(answer, 401, "Unauthorized")
            self.assertEqual(answer[0].headers.getRawHeaders(b"WWW-Authenticate"), [b'Basic realm="wsserver"'])

    def test_health(self) -> None:
        """
        C{GET /health} answers 200 without credentials, and names nothing
        (no C{Server} header).
        """
        self.assertJSON(self.request("GET", "/health"), 200, {"status": "ok"})
        response, body = self.request("HEAD", "/health")
        self.assertEqual((response.code, body), (200, b""))
        self.assertIsNone(response.headers.getRawHeaders(b"Server"))
        self.readiness.stopping = True
        self.assertJSON(self.request("GET", "/health"), 200, {"status": "ok"})

    def test_ready(self) -> None:
        """
        C{GET /ready}: 503 before listening, 200 once listening and joined,
        503 when not joined and once stopping; no credentials needed.
        """
        self.assertJSON(self.request("GET", "/ready"), 503, {"status": "not ready"})
        self.readiness.listening = True
        answer = self.request("GET", "/ready")
        self.assertJSON(answer, 200, {"status": "ready"})
        self.assertIsNone(answer[0].headers.getRawHeaders(b"Server"))
        joined = [False]
        self.readiness.joined = lambda: joined[0]
        self.assertJSON(self.request("GET", "/ready"), 503, {"status": "not ready"})
        joined[0] = True
        self.assertJSON(self.request("GET", "/ready"), 200, {"status": "ready"})
        self.readiness.stopping = True
        self.assertJSON(self.request("GET", "/ready"), 503, {"status": "not ready"})

    def test_readyDefault(self) -> None:
        """
        A REST tree made without operations is always ready, and still has
        its metrics.
        """
        self.setUpRest()
        self.assertJSON(self.request("GET", "/ready"), 200, {"status": "ready"})
        response, body = self.request("GET", "/metrics")
        self.assertIn(b"wsserver_connections 0.0", body)

    def test_healthOtherMethod(self) -> None:
        """
        Another method on C{/health} is behind the auth like any 405.
        """
        self.assertError(self.request("POST", "/health"), 401, "Unauthorized")
        self.assertError(self.request("POST", "/health", auth=("u", "p")), 405, "Method not allowed")

    def test_overview(self) -> None:
        """
        C{GET /overview}: this node's figures, the queue, the event counts,
        and the online users with their statistics.
        """
        self.connect(5)
        gone = self.connect(6)
        self.router.detach(gone)
        self.clock.advance(10)
        response, body = self.request("GET", "/overview", auth=("u", "p"))
        self.assertEqual(response.code, 200)
        data = orjson.loads(body)["data"]
        self.assertEqual(data["nodes"], 1)
        self.assertEqual(data["node"]["connections"], 1)
        self.assertEqual(data["node"]["usersOnline"], 1)
        self.assertEqual(data["node"]["dropped"], {"offline": 0, "queue": 0})
        self.assertEqual(data["undelivered"], {"enabled": True, "storage": "memory"})
        self.assertEqual(data["events"], self.notifier.figures)
        self.assertEqual(data["usersOnline"], 1)
        self.assertEqual([u["id"] for u in data["users"]], [5])
        self.assertEqual(set(data["users"][0]), STAT_KEYS)
        self.assertEqual(data["users"][0]["timeOnline"], 10)

    def test_dashboard(self) -> None:
        """
        C{GET /dashboard}: one HTML page that loads nothing from elsewhere
        (its content security policy allows its own origin only).
        """
        response, body = self.request("GET", "/dashboard", auth=("u", "p"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"text/html; charset=utf-8"])
        [policy] = response.headers.getRawHeaders(b"Content-Security-Policy")
        self.assertIn(b"default-src 'none'", policy)
        self.assertIn(b"connect-src 'self'", policy)
        self.assertTrue(body.startswith(b"<!DOCTYPE html>"))
        self.assertIn(b"/overview", body)
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)
        self.assertNotIn(b"<script src", body)


#: The basic credentials C{u:p}.
BASIC = "Basic dTpw"


class _Notifier:
    """
    An event notifier's C{counts()}, with fixed figures.
    """

    figures = [{"target": "targets[0]", "type": "postback", "destination": "http://h/hook",
                "succeeded": 1, "pending": 3, "retrying": 1, "failed": 0}]

    def __init__(self) -> None:
        self.calls = 0

    def counts(self) -> Deferred[list[dict[str, Any]]]:
        self.calls += 1
        return succeed(self.figures)

    def notify(self, message: Any, payload: bytes) -> None:
        pass

class RestLimitsTests(RestSiteTests):
    """
    C{server.limits} on the REST API: C{requestTimeoutSeconds} and
    C{authFailuresPerMinute} (and every test of L{RestSiteTests} with the
    default limits on).
    """

    def setUp(self) -> None:
        super().setUp()
        self.limits = Limits(LimitsConfig(requestTimeoutSeconds=30, authFailuresPerMinute=3), self.clock)

    def test_slowRequestDropped(self) -> None:
        """
        A request whose headers and body have not arrived whole within
        C{requestTimeoutSeconds} is dropped, however steadily it trickles.
        """
        channel, transport = self.connect()
        raw = self.post(self.message(200))
        for i in range(29):
            channel.dataReceived(raw[i : i + 1])
            self.reactor.advance(1)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnected or transport.disconnecting)
        self.assertEqual(self.limits.refusals["requestTimeoutSeconds"], 1)
        self.assertEqual(self.recipient.sent, [])

    def test_wholeInTime(self) -> None:
        """
        A request that arrived whole in time is answered and its timer is
        gone; the connection serves the next one.
        """
        channel, transport = self.connect()
        channel.dataReceived(self.post(self.message(200)))
        self.assertEqual(parseResponse(transport.value())[0], 202)
        self.assertEqual(self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds(), 30)  # idle timeout
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_authFailuresThrottled(self) -> None:
        """
        After C{authFailuresPerMinute} failed checks from one address, its
        requests get 429 in the JSON error form until the minute has passed,
        the right credentials included; then they pass again.
        """
        self.authenticator = buildAuthenticator(AuthConfig(type="basic", user="u", password="p"))
        bad = b"GET /check-online?id=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n\r\n"
        good = b"GET /check-online?id=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n"
        for _ in range(3):
            self.assertEqual(self.exchange(bad)[0], 401)
        status, headers, body = self.exchange(good)
        self.assertEqual((status, orjson.loads(body)), (429, error(429, "Too many failed authentications")))
        self.clock.advance(60)
        self.assertEqual(self.exchange(good)[0], 200)
