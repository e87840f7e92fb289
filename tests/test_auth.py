"""
Tests for L{wsserver.auth}.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from treq.testing import StubTreq

from wsserver.auth import (
    Authenticator,
    Credentials,
    applyCredential,
    buildAuthenticator,
    credentialFrom,
)
from wsserver.config import AuthConfig
from wsserver.httpbody import MAX_ANSWER_BYTES

URL = "http://auth.example.com/check"


def creds(**headers: str) -> Credentials:
    """
    Credentials from keyword headers; C{_} in a name becomes C{-}.
    """
    return Credentials.fromDict({k.replace("_", "-"): v for k, v in headers.items()})


def basicHeader(userPassword: bytes) -> str:
    return "Basic " + base64.b64encode(userPassword).decode("ascii")


class AuthTestMixin:
    """
    Helpers to run an authenticator synchronously.
    """

    def passes(self, config: AuthConfig, credentials: Credentials, **kw: Any) -> bool:
        d = buildAuthenticator(config, **kw).authenticate(credentials)
        result: bool = self.successResultOf(d)  # type: ignore[attr-defined]
        return result


class CredentialsTests(SynchronousTestCase):
    """
    Tests for L{Credentials}.
    """

    def test_fromDictCaseInsensitive(self) -> None:
        """
        L{Credentials.fromDict} finds a header whatever the case of its name,
        on either side.
        """
        c = Credentials.fromDict({"x-api-key": "k1", "X-Other": "o"})
        self.assertEqual(c.header("X-API-Key"), "k1")
        self.assertEqual(c.header("x-other"), "o")
        self.assertIsNone(c.header("missing"))

    def test_fromRequest(self) -> None:
        """
        L{Credentials.fromRequest} reads a request's headers, by any case.
        """
        request = DummyRequest([b""])
        request.requestHeaders.addRawHeader(b"X-Api-Key", b"k1")
        request.requestHeaders.addRawHeader(b"Authorization", b"Bearer tok")
        c = Credentials.fromRequest(request)
        self.assertEqual(c.header("x-api-key"), "k1")
        self.assertEqual(c.bearer(), "tok")
        self.assertIsNone(c.header("missing"))

    def test_fromRequestLastValue(self) -> None:
        """
        Like C{getHeader}, the last of repeated headers counts.
        """
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"X-Key", [b"first", b"last"])
        self.assertEqual(Credentials.fromRequest(request).header("X-Key"), "last")

    def test_fromRequestCookiesJoined(self) -> None:
        """
        Repeated C{Cookie} headers (HTTP/2) are all searched.
        """
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"Cookie", [b"a=1", b"sid=v"])
        c = Credentials.fromRequest(request)
        self.assertEqual(c.cookie("a"), "1")
        self.assertEqual(c.cookie("sid"), "v")

    def test_fromRequestNonAscii(self) -> None:
        """
        Bytes are decoded from ISO-8859-1, as Autobahn does, so both sources
        give the same strings.
        """
        request = DummyRequest([b""])
        request.requestHeaders.addRawHeader(b"X-Key", "é".encode("utf-8"))
        fromRequest = Credentials.fromRequest(request).header("X-Key")
        fromDict = Credentials.fromDict({"x-key": "é".encode("utf-8").decode("iso-8859-1")}).header("X-Key")
        self.assertEqual(fromRequest, fromDict)

    def test_customGetHeader(self) -> None:
        """
        L{Credentials} takes any callable that looks headers up.
        """
        c = Credentials(lambda name: "v" if name.lower() == "x-a" else None)
        self.assertEqual(c.header("X-A"), "v")
        self.assertIsNone(c.header("X-B"))

    def test_cookie(self) -> None:
        """
        L{Credentials.cookie} finds a cookie among others.
        """
        c = creds(cookie="a=1; sid=v; b=2")
        self.assertEqual(c.cookie("sid"), "v")
        self.assertEqual(c.cookie("a"), "1")
        self.assertEqual(c.cookie("b"), "2")
        self.assertIsNone(c.cookie("c"))

    def test_cookieCaseSensitive(self) -> None:
        """
        Cookie names are case-sensitive.
        """
        self.assertIsNone(creds(cookie="SID=v").cookie("sid"))

    def test_cookieJunk(self) -> None:
        """
        Parts without C{=}, empty parts and odd spacing are tolerated.
        """
        c = creds(cookie=';junk;; =x;  sid = v ; other="q,w"; ')
        self.assertEqual(c.cookie("sid"), "v")
        self.assertEqual(c.cookie("other"), '"q,w"')
        self.assertIsNone(c.cookie("junk"))

    def test_cookieValueWithEquals(self) -> None:
        """
        A value may hold C{=} (base64 padding).
        """
        self.assertEqual(creds(cookie="sid=YWJj==").cookie("sid"), "YWJj==")

    def test_cookieFirstWins(self) -> None:
        """
        When a cookie name repeats, the first counts.
        """
        self.assertEqual(creds(cookie="sid=1; sid=2").cookie("sid"), "1")

    def test_cookieAbsent(self) -> None:
        """
        Without a C{Cookie} header there is no cookie.
        """
        self.assertIsNone(creds().cookie("sid"))
        self.assertIsNone(creds(cookie="").cookie("sid"))

    def test_bearer(self) -> None:
        """
        L{Credentials.bearer} takes the token after C{Bearer}, whatever the
        scheme's case.
        """
        self.assertEqual(creds(authorization="Bearer abc").bearer(), "abc")
        self.assertEqual(creds(authorization="bearer  abc ").bearer(), "abc")
        self.assertEqual(creds(Authorization="BEARER abc").bearer(), "abc")

    def test_bearerMissing(self) -> None:
        """
        No header, another scheme, or no token gives L{None}.
        """
        self.assertIsNone(creds().bearer())
        self.assertIsNone(creds(authorization="Basic abc").bearer())
        self.assertIsNone(creds(authorization="Bearer").bearer())
        self.assertIsNone(creds(authorization="Bearer   ").bearer())
        self.assertIsNone(creds(authorization="Bearerabc").bearer())

    def test_basic(self) -> None:
        """
        L{Credentials.basic} decodes user and password; the password may hold
        C{:}.
        """
        c = creds(authorization=basicHeader(b"alice:s3:cr3t"))
        self.assertEqual(c.basic(), ("alice", "s3:cr3t"))
        c = creds(authorization="basic " + base64.b64encode("zoë:pä".encode("utf-8")).decode())
        self.assertEqual(c.basic(), ("zoë", "pä"))

    def test_basicMalformed(self) -> None:
        """
        Bad base64, no C{:}, another scheme or no header give L{None}.
        """
        self.assertIsNone(creds(authorization="Basic !!!not-base64").basic())
        self.assertIsNone(creds(authorization="Basic YWxpY2U6cHc").basic())  # bad padding
        self.assertIsNone(creds(authorization=basicHeader(b"nocolon")).basic())
        self.assertIsNone(creds(authorization="Bearer " + basicHeader(b"a:b")[6:]).basic())
        self.assertIsNone(creds(authorization="Basic").basic())
        self.assertIsNone(creds().basic())


class SimpleTypeTests(AuthTestMixin, SynchronousTestCase):
    """
    Tests for the C{noauth}, C{basic}, C{header}, C{bearer} and C{cookie}
    checks.
    """

    def test_noauth(self) -> None:
        """
        C{noauth} always passes, and says it is C{noauth}.
        """
        a = buildAuthenticator(AuthConfig())
        self.assertTrue(a.isNoAuth)
        self.assertTrue(self.successResultOf(a.authenticate(creds())))

    def test_isNoAuthOnlyForNoauth(self) -> None:
        """
        Every other type has C{isNoAuth} false, a combination holding
        C{noauth} too.
        """
        for config in [
            AuthConfig(type="bearer", value="t"),
            AuthConfig(type="oneOf", types=(AuthConfig(),)),
        ]:
            self.assertFalse(buildAuthenticator(config).isNoAuth)

    def test_basic(self) -> None:
        """
        C{basic} passes with the right user and password.
        """
        config = AuthConfig(type="basic", user="alice", password="s3cret")
        self.assertTrue(self.passes(config, creds(authorization=basicHeader(b"alice:s3cret"))))

    def test_basicUtf8(self) -> None:
        """
        C{basic} compares UTF-8 user and password.
        """
        config = AuthConfig(type="basic", user="zoë", password="pä:ss")
        header = basicHeader("zoë:pä:ss".encode("utf-8"))
        self.assertTrue(self.passes(config, creds(authorization=header)))

    def test_basicWrong(self) -> None:
        """
        C{basic} fails with a wrong password, a wrong user, a malformed or
        missing header.
        """
        config = AuthConfig(type="basic", user="alice", password="s3cret")
        for headers in [
            {"authorization": basicHeader(b"alice:wrong")},
            {"authorization": basicHeader(b"bob:s3cret")},
            {"authorization": basicHeader(b"alice:s3cret ")},
            {"authorization": basicHeader(b"alices3cret")},
            {"authorization": "Basic %%%"},
            {"authorization": "Bearer " + basicHeader(b"alice:s3cret")[6:]},
            {"authorization": "Basic"},
            {},
        ]:
            self.assertFalse(self.passes(config, Credentials.fromDict(headers)), headers)

    def test_header(self) -> None:
        """
        C{header} passes when the header holds the value, whatever the case
        of its name.
        """
        config = AuthConfig(type="header", name="X-Api-Key", value="k1")
        self.assertTrue(self.passes(config, creds(x_api_key="k1")))
        self.assertTrue(self.passes(config, Credentials.fromDict({"X-API-KEY": "k1"})))

    def test_headerFromRequestAnyCase(self) -> None:
        """
        C{header} passes on a C{twisted.web} request whose header is in
        another case.
        """
        config = AuthConfig(type="header", name="X-Api-Key", value="k1")
        request = DummyRequest([b""])
        request.requestHeaders.addRawHeader(b"x-API-key", b"k1")
        self.assertTrue(self.passes(config, Credentials.fromRequest(request)))

    def test_headerWrong(self) -> None:
        """
        C{header} fails with a wrong, missing, or differently cased value.
        """
        config = AuthConfig(type="header", name="X-Api-Key", value="k1")
        self.assertFalse(self.passes(config, creds(x_api_key="k2")))
        self.assertFalse(self.passes(config, creds(x_api_key="K1")))
        self.assertFalse(self.passes(config, creds(x_api_key="")))
        self.assertFalse(self.passes(config, creds(x_other="k1")))

    def test_headerNonAscii(self) -> None:
        """
        A non-ASCII value sent as UTF-8 matches the configured value.
        """
        config = AuthConfig(type="header", name="X-Key", value="clé")
        wire = "clé".encode("utf-8").decode("iso-8859-1")
        self.assertTrue(self.passes(config, creds(x_key=wire)))
        request = DummyRequest([b""])
        request.requestHeaders.addRawHeader(b"X-Key", "clé".encode("utf-8"))
        self.assertTrue(self.passes(config, Credentials.fromRequest(request)))

    def test_bearer(self) -> None:
        """
        C{bearer} passes with the right token, whatever the scheme's case.
        """
        config = AuthConfig(type="bearer", value="tok")
        self.assertTrue(self.passes(config, creds(authorization="Bearer tok")))
        self.assertTrue(self.passes(config, creds(authorization="bearer tok")))

    def test_bearerWrong(self) -> None:
        """
        C{bearer} fails with a wrong token, another scheme, or no header.
        """
        config = AuthConfig(type="bearer", value="tok")
        self.assertFalse(self.passes(config, creds(authorization="Bearer tok2")))
        self.assertFalse(self.passes(config, creds(authorization="Token tok")))
        self.assertFalse(self.passes(config, creds(authorization="tok")))
        self.assertFalse(self.passes(config, creds(authorization="Bearer")))
        self.assertFalse(self.passes(config, creds(x_token="tok")))

    def test_cookie(self) -> None:
        """
        C{cookie} passes when the cookie is among others.
        """
        config = AuthConfig(type="cookie", name="sid", value="v")
        self.assertTrue(self.passes(config, creds(cookie="a=1; sid=v; b=2")))
        self.assertTrue(self.passes(config, creds(Cookie="sid=v")))

    def test_cookieWrong(self) -> None:
        """
        C{cookie} fails with a wrong value, another name, junk, or no
        header.
        """
        config = AuthConfig(type="cookie", name="sid", value="v")
        self.assertFalse(self.passes(config, creds(cookie="a=1; sid=w; b=2")))
        self.assertFalse(self.passes(config, creds(cookie="a=1; xsid=v")))
        self.assertFalse(self.passes(config, creds(cookie="sidv; ;=")))
        self.assertFalse(self.passes(config, creds(x_sid="v")))
        self.assertFalse(self.passes(config, creds()))

    def test_unknownType(self) -> None:
        """
        An unknown type is refused when building, not treated as
        C{noauth}.
        """
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="bsaic"))

    def test_errorRefuses(self) -> None:
        """
        An unexpected error in a check is logged and refuses; it does not
        fail the L{Deferred}.
        """

        class Broken(Authenticator):
            def _check(self, credentials: Credentials) -> bool:
                1 / 0
                return True

        self.assertFalse(self.successResultOf(Broken().authenticate(creds())))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_asyncErrorRefuses(self) -> None:
        """
        A check whose L{Deferred} fails is logged and refuses.
        """

        class Broken(Authenticator):
            def _check(self, credentials: Credentials) -> Deferred[bool]:
                d: Deferred[bool] = Deferred()
                d.errback(ZeroDivisionError())
                return d

        self.assertFalse(self.successResultOf(Broken().authenticate(creds())))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


BEARER = AuthConfig(type="bearer", value="tok")
KEY = AuthConfig(type="header", name="X-Key", value="k")
SID = AuthConfig(type="cookie", name="sid", value="v")


class CombinationTests(AuthTestMixin, SynchronousTestCase):
    """
    Tests for C{oneOf} and C{allOf}.
    """

    def test_oneOf(self) -> None:
        """
        C{oneOf} passes when any of its checks passes.
        """
        config = AuthConfig(type="oneOf", types=(BEARER, KEY))
        self.assertTrue(self.passes(config, creds(authorization="Bearer tok")))
        self.assertTrue(self.passes(config, creds(x_key="k")))
        self.assertTrue(self.passes(config, creds(x_key="k", authorization="Bearer no")))
        self.assertFalse(self.passes(config, creds(x_key="no", authorization="Bearer no")))
        self.assertFalse(self.passes(config, creds()))

    def test_allOf(self) -> None:
        """
        C{allOf} passes only when all of its checks pass.
        """
        config = AuthConfig(type="allOf", types=(BEARER, KEY))
        self.assertTrue(self.passes(config, creds(x_key="k", authorization="Bearer tok")))
        self.assertFalse(self.passes(config, creds(authorization="Bearer tok")))
        self.assertFalse(self.passes(config, creds(x_key="k")))
        self.assertFalse(self.passes(config, creds()))

    def test_nested(self) -> None:
        """
        Combinations nest: C{allOf(cookie, oneOf(bearer, header))}.
        """
        config = AuthConfig(
            type="allOf", types=(SID, AuthConfig(type="oneOf", types=(BEARER, KEY)))
        )
        self.assertTrue(self.passes(config, creds(cookie="sid=v", x_key="k")))
        self.assertTrue(self.passes(config, creds(cookie="sid=v", authorization="Bearer tok")))
        self.assertFalse(self.passes(config, creds(cookie="sid=v")))
        self.assertFalse(self.passes(config, creds(x_key="k", authorization="Bearer tok")))

    def test_nestedOneOfOfAllOf(self) -> None:
        """
        C{oneOf(allOf(cookie, header), bearer)}.
        """
        config = AuthConfig(
            type="oneOf", types=(AuthConfig(type="allOf", types=(SID, KEY)), BEARER)
        )
        self.assertTrue(self.passes(config, creds(cookie="sid=v", x_key="k")))
        self.assertTrue(self.passes(config, creds(authorization="Bearer tok")))
        self.assertFalse(self.passes(config, creds(cookie="sid=v")))

    def test_oneOfWithNoauth(self) -> None:
        """
        C{oneOf} holding C{noauth} passes everything.
        """
        config = AuthConfig(type="oneOf", types=(BEARER, AuthConfig()))
        self.assertTrue(self.passes(config, creds()))

    def test_empty(self) -> None:
        """
        An empty combination is refused when building.
        """
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="oneOf"))
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="allOf"))


class Recorder(Resource):
    """
    A resource that records each request and answers with a chosen status,
    or never.
    """

    isLeaf = True

    def __init__(
        self, code: int = 200, hang: bool = False, partial: bool = False, body: bytes = b"the start of a body"
    ) -> None:
        super().__init__()
        self.code = code
        self.hang = hang
        self.partial = partial
        self.body = body
        self.requests: list[dict[str, Any]] = []
        #: why each request's connection was lost before its end
        self.lost: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(
            {
                "method": request.method,
                "uri": request.uri,
                "headers": request.requestHeaders,
                "body": request.content.read(),
            }
        )
        request.notifyFinish().addErrback(self.lost.append)
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        if self.partial:
            request.write(self.body)
            return NOT_DONE_YET
        return b"a body"


def remote(**kw: Any) -> AuthConfig:
    """
    A C{remote} auth object reading the credential from the C{sid} cookie.
    """
    kw.setdefault("source", AuthConfig(type="cookie", name="sid"))
    kw.setdefault("url", URL)
    return AuthConfig(type="remote", **kw)


class RemoteTests(SynchronousTestCase):
    """
    Tests for C{remote}, over L{StubTreq}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def check(self, config: AuthConfig, resource: Recorder, credentials: Credentials) -> Deferred[bool]:
        self.stub = StubTreq(resource)
        a = buildAuthenticator(config, httpClient=self.stub, reactor=self.clock)  # type: ignore[arg-type]
        self.assertFalse(a.isNoAuth)
        return a.authenticate(credentials)

    def test_passOn2xx(self) -> None:
        """
        C{remote} passes when the URL answers 2xx, and leaves no timer.
        """
        for code in (200, 201, 204, 299):
            resource = Recorder(code)
            self.assertTrue(self.successResultOf(self.check(remote(), resource, creds(cookie="sid=v"))))
            self.assertEqual(len(resource.requests), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failOnOthers(self) -> None:
        """
        C{remote} fails when the URL answers 3xx, 4xx or 5xx, logging the URL
        and status but not the credential.
        """
        for code in (301, 302, 401, 403, 500):
            resource = Recorder(code)
            with capturedLogs() as events:
                d = self.check(remote(data="{0}"), resource, creds(cookie="sid=SECRET"))
                self.assertFalse(self.successResultOf(d))
            self.assertEqual(len(resource.requests), 1)
            text = " ".join(formatEvent(e) for e in events)
            self.assertIn(URL, text)
            self.assertIn(str(code), text)
            self.assertNotIn("SECRET", text)

    def test_defaultPost(self) -> None:
        """
        The default method is C{POST}, to the configured URL; C{data} L{None}
        sends no body.
        """
        resource = Recorder()
        self.successResultOf(self.check(remote(), resource, creds(cookie="sid=v")))
        [req] = resource.requests
        self.assertEqual(req["method"], b"POST")
        self.assertEqual(req["uri"], b"/check")
        self.assertEqual(req["body"], b"")

    def test_method(self) -> None:
        """
        The configured method is used.
        """
        resource = Recorder()
        self.successResultOf(self.check(remote(method="GET"), resource, creds(cookie="sid=v")))
        self.assertEqual(resource.requests[0]["method"], b"GET")

    def test_stringData(self) -> None:
        """
        String data is sent as-is, with every C{{0}} replaced by the
        credential, and no content type added.
        """
        resource = Recorder()
        config = remote(data="token={0}&again={0}&other={1}")
        self.successResultOf(self.check(config, resource, creds(cookie="a=1; sid=abc; b=2")))
        [req] = resource.requests
        self.assertEqual(req["body"], b"token=abc&again=abc&other={1}")
        self.assertIsNone(req["headers"].getRawHeaders(b"content-type"))

    def test_objectData(self) -> None:
        """
        Object data has C{{0}} replaced in its string values (recursively,
        keys untouched) and is sent as JSON.
        """
        resource = Recorder()
        data = {
            "token": "{0}",
            "{0}": "key untouched",
            "nested": {"t": "Bearer {0}", "n": 1, "l": ["{0}", 2, None, True]},
        }
        self.successResultOf(self.check(remote(data=data), resource, creds(cookie="sid=ab\"c")))
        [req] = resource.requests
        self.assertEqual(
            json.loads(req["body"]),
            {
                "token": 'ab"c',
                "{0}": "key untouched",
                "nested": {"t": 'Bearer ab"c', "n": 1, "l": ['ab"c', 2, None, True]},
            },
        )
        self.assertEqual(req["headers"].getRawHeaders(b"content-type"), [b"application/json"])

    def test_objectDataContentTypeFromHeaders(self) -> None:
        """
        A content type in the configured headers wins over
        C{application/json}.
        """
        resource = Recorder()
        config = remote(data={"t": "{0}"}, headers=(("content-type", "application/vnd.x+json"),))
        self.successResultOf(self.check(config, resource, creds(cookie="sid=v")))
        self.assertEqual(
            resource.requests[0]["headers"].getRawHeaders(b"content-type"), [b"application/vnd.x+json"]
        )

    def test_headersSent(self) -> None:
        """
        The configured headers are sent, repeated names included.
        """
        resource = Recorder()
        config = remote(headers=(("X-Service-Key", "abc"), ("X-Multi", "1"), ("X-Multi", "2")))
        self.successResultOf(self.check(config, resource, creds(cookie="sid=v")))
        headers = resource.requests[0]["headers"]
        self.assertEqual(headers.getRawHeaders(b"x-service-key"), [b"abc"])
        self.assertEqual(headers.getRawHeaders(b"x-multi"), [b"1", b"2"])

    def test_missingCredential(self) -> None:
        """
        Without the credential, C{remote} fails without any request.
        """
        resource = Recorder()
        for credentials in [creds(), creds(cookie="other=1"), creds(cookie="sid=")]:
            self.assertFalse(self.successResultOf(self.check(remote(), resource, credentials)))
        self.assertEqual(resource.requests, [])

    def test_sources(self) -> None:
        """
        The credential comes from a header, a bearer token, a cookie or basic
        auth, as C{source} says.
        """
        cases = [
            (AuthConfig(type="header", name="X-Token"), creds(x_token="t1"), b"t1"),
            (AuthConfig(type="bearer"), creds(authorization="Bearer t2"), b"t2"),
            (AuthConfig(type="cookie", name="sid"), creds(cookie="sid=t3"), b"t3"),
            (AuthConfig(type="basic"), creds(authorization=basicHeader(b"u:p")), b"u:p"),
        ]
        for source, credentials, expected in cases:
            resource = Recorder()
            d = self.check(remote(source=source, data="{0}"), resource, credentials)
            self.assertTrue(self.successResultOf(d))
            self.assertEqual(resource.requests[0]["body"], expected)

    def test_querySource(self) -> None:
        """
        A C{remote} check may read the credential from the query.
        """
        resource = Recorder()
        config = remote(source=AuthConfig(type="query", name="session"), data="{0}")
        d = self.check(config, resource, Credentials.fromDict({}, {"session": ["abc"]}))
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(resource.requests[0]["body"], b"abc")

    def test_timeout(self) -> None:
        """
        C{remote} fails when the URL does not answer within the timeout, on
        the injected clock, and logs why.
        """
        resource = Recorder(hang=True)
        with capturedLogs() as events:
            d = self.check(remote(timeoutSeconds=5, data="{0}"), resource, creds(cookie="sid=SECRET"))
            self.assertNoResult(d)
            self.assertEqual(len(resource.requests), 1)
            self.clock.advance(4.9)
            self.assertNoResult(d)
            self.clock.advance(0.2)
            self.assertFalse(self.successResultOf(d))
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn(URL, text)
        self.assertIn("within 5", text)
        self.assertNotIn("SECRET", text)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowBody(self) -> None:
        """
        A 2xx whose body is still arriving at the timeout (counted from the
        request) is refused then, with a log line that says why; the
        connection is closed and no timer is left.
        """
        resource = Recorder(partial=True)
        with capturedLogs() as events:
            d = self.check(remote(timeoutSeconds=5), resource, creds(cookie="sid=SECRET"))
            self.assertNoResult(d)
            self.clock.advance(4.9)
            self.assertNoResult(d)
            self.clock.advance(0.1)
            self.assertFalse(self.successResultOf(d))
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn(f"remote auth {URL} failed: HTTP 2xx, but answer not complete within 5 seconds", text)
        self.assertNotIn("SECRET", text)
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hugeBody(self) -> None:
        """
        A 2xx with a body over the cap is refused without reading the rest.
        """
        resource = Recorder(partial=True, body=b"x" * (MAX_ANSWER_BYTES + 1))
        self.assertFalse(self.successResultOf(self.check(remote(), resource, creds(cookie="sid=v"))))
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)

    def test_refusalBodyCut(self) -> None:
        """
        A non-2xx answer refuses at once; its trickling body is cut at the
        timeout, leaving no timer.
        """
        resource = Recorder(401, partial=True)
        d = self.check(remote(timeoutSeconds=5), resource, creds(cookie="sid=v"))
        self.assertFalse(self.successResultOf(d))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(5)
        self.stub.flush()
        self.assertEqual(len(resource.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionError(self) -> None:
        """
        A connection error fails C{remote} and is logged with the URL.
        """

        class Refusing:
            def request(self, method: str, url: str, **kw: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                d.errback(ConnectionRefusedError("connection refused"))
                return d

        a = buildAuthenticator(remote(), httpClient=Refusing(), reactor=self.clock)  # type: ignore[arg-type]
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(a.authenticate(creds(cookie="sid=v"))))
        text = " ".join(formatEvent(e) for e in events)
        self.assertIn(URL, text)
        self.assertIn("refused", text)

    def test_requestRaises(self) -> None:
        """
        An HTTP client that raises fails C{remote}; the error is logged.
        """

        class Raising:
            def request(self, method: str, url: str, **kw: Any) -> Deferred[Any]:
                raise RuntimeError("boom")

        a = buildAuthenticator(remote(), httpClient=Raising(), reactor=self.clock)  # type: ignore[arg-type]
        self.assertFalse(self.successResultOf(a.authenticate(creds(cookie="sid=v"))))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_badSource(self) -> None:
        """
        A C{remote} without a usable source is refused when building.
        """
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="remote", url=URL))
        self.assertRaises(ValueError, buildAuthenticator, remote(source=AuthConfig()))

    def test_oneOfSyncFirst(self) -> None:
        """
        In C{oneOf}, a check that needs no request runs first, and a pass
        there makes no request.
        """
        resource = Recorder()
        config = AuthConfig(type="oneOf", types=(remote(), BEARER))
        d = self.check(config, resource, creds(cookie="sid=v", authorization="Bearer tok"))
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(resource.requests, [])
        d = self.check(config, resource, creds(cookie="sid=v"))
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(len(resource.requests), 1)

    def test_allOfWithRemote(self) -> None:
        """
        In C{allOf}, a failed check that needs no request spares the request;
        otherwise the remote answer decides.
        """
        config = AuthConfig(type="allOf", types=(remote(), BEARER))
        resource = Recorder(200)
        self.assertFalse(self.successResultOf(self.check(config, resource, creds(cookie="sid=v"))))
        self.assertEqual(resource.requests, [])
        both = creds(cookie="sid=v", authorization="Bearer tok")
        self.assertTrue(self.successResultOf(self.check(config, resource, both)))
        self.assertFalse(self.successResultOf(self.check(config, Recorder(401), both)))

    def test_oneOfRemotesInTurn(self) -> None:
        """
        C{oneOf} of two remote checks stops at the first that passes.
        """
        first, second = Recorder(200), Recorder(200)
        a = buildAuthenticator(
            AuthConfig(type="oneOf", types=(remote(url="http://a/"), remote(url="http://b/"))),
            httpClient=StubTreq(_Route({b"a": first, b"b": second})),  # type: ignore[arg-type]
            reactor=self.clock,
        )
        self.assertTrue(self.successResultOf(a.authenticate(creds(cookie="sid=v"))))
        self.assertEqual((len(first.requests), len(second.requests)), (1, 0))
        first.code = 401
        self.assertTrue(self.successResultOf(a.authenticate(creds(cookie="sid=v"))))
        self.assertEqual((len(first.requests), len(second.requests)), (2, 1))


class _Route(Resource):
    """
    Dispatch by C{Host} to recorders.
    """

    isLeaf = True

    def __init__(self, byHost: dict[bytes, Recorder]) -> None:
        super().__init__()
        self.byHost = byHost

    def render(self, request: Any) -> Any:
        return self.byHost[request.getRequestHostname()].render(request)


class ApplyCredentialTests(SynchronousTestCase):
    """
    Tests for L{applyCredential}.
    """

    def test_noauth(self) -> None:
        """
        C{noauth} adds nothing.
        """
        headers: dict[bytes, list[bytes]] = {b"X-A": [b"1"]}
        applyCredential(AuthConfig(), headers)
        self.assertEqual(headers, {b"X-A": [b"1"]})

    def test_basic(self) -> None:
        """
        C{basic} adds C{Authorization: Basic base64(user:password)}, which
        the C{basic} check accepts.
        """
        config = AuthConfig(type="basic", user="alice", password="pä:ss")
        headers: dict[bytes, list[bytes]] = {}
        applyCredential(config, headers)
        expected = b"Basic " + base64.b64encode("alice:pä:ss".encode("utf-8"))
        self.assertEqual(headers, {b"Authorization": [expected]})
        received = Credentials.fromDict({"authorization": expected.decode("latin-1")})
        self.assertTrue(self.successResultOf(buildAuthenticator(config).authenticate(received)))

    def test_bearer(self) -> None:
        """
        C{bearer} adds C{Authorization: Bearer value}, replacing one in any
        case.
        """
        headers: dict[bytes, list[bytes]] = {b"authorization": [b"Basic old"]}
        applyCredential(AuthConfig(type="bearer", value="tok"), headers)
        self.assertEqual(headers, {b"Authorization": [b"Bearer tok"]})

    def test_header(self) -> None:
        """
        C{header} adds C{name: value}.
        """
        headers: dict[bytes, list[bytes]] = {b"X-A": [b"1"]}
        applyCredential(AuthConfig(type="header", name="X-Api-Key", value="k1"), headers)
        self.assertEqual(headers, {b"X-A": [b"1"], b"X-Api-Key": [b"k1"]})

    def test_cookie(self) -> None:
        """
        C{cookie} adds C{Cookie: name=value}, joining cookies already there.
        """
        headers: dict[bytes, list[bytes]] = {}
        applyCredential(AuthConfig(type="cookie", name="sid", value="v"), headers)
        self.assertEqual(headers, {b"Cookie": [b"sid=v"]})
        headers = {b"cookie": [b"a=1"]}
        applyCredential(AuthConfig(type="cookie", name="sid", value="v"), headers)
        self.assertEqual(headers, {b"Cookie": [b"a=1; sid=v"]})

    def test_notACredential(self) -> None:
        """
        Combinations and C{remote} cannot be sent.
        """
        for config in [AuthConfig(type="oneOf", types=(BEARER,)), remote()]:
            self.assertRaises(ValueError, applyCredential, config, {})


class CredentialFromTests(SynchronousTestCase):
    """
    Tests for L{credentialFrom}.
    """

    def test_header(self) -> None:
        """
        A C{header} source gives the header's value, by any case.
        """
        source = AuthConfig(type="header", name="X-Token")
        self.assertEqual(credentialFrom(source, creds(x_token="t")), "t")
        self.assertEqual(credentialFrom(source, Credentials.fromDict({"X-TOKEN": "t"})), "t")
        self.assertIsNone(credentialFrom(source, creds()))
        self.assertIsNone(credentialFrom(source, creds(x_token="")))

    def test_bearer(self) -> None:
        """
        A C{bearer} source gives the token.
        """
        source = AuthConfig(type="bearer")
        self.assertEqual(credentialFrom(source, creds(authorization="Bearer t")), "t")
        self.assertIsNone(credentialFrom(source, creds(authorization="Basic t")))
        self.assertIsNone(credentialFrom(source, creds()))

    def test_cookie(self) -> None:
        """
        A C{cookie} source gives the cookie's value.
        """
        source = AuthConfig(type="cookie", name="sid")
        self.assertEqual(credentialFrom(source, creds(cookie="a=1; sid=v; b=2")), "v")
        self.assertIsNone(credentialFrom(source, creds(cookie="a=1")))
        self.assertIsNone(credentialFrom(source, creds()))

    def test_query(self) -> None:
        """
        A C{query} source gives the first value of the query parameter,
        from an Autobahn handshake or a C{twisted.web} request (as UTF-8
        text); without a query there is none.
        """
        source = AuthConfig(type="query", name="token")
        self.assertEqual(credentialFrom(source, Credentials.fromDict({}, {"token": ["t1", "t2"], "id": ["1"]})), "t1")
        self.assertIsNone(credentialFrom(source, Credentials.fromDict({}, {"id": ["1"]})))
        self.assertIsNone(credentialFrom(source, Credentials.fromDict({}, {"token": [""]})))
        self.assertIsNone(credentialFrom(source, creds()))
        request = DummyRequest([b""])
        request.args = {b"token": ["\u00e9t\u00e9".encode("utf-8")]}
        self.assertEqual(credentialFrom(source, Credentials.fromRequest(request)), "\u00e9t\u00e9")
        request.args = {}
        self.assertIsNone(credentialFrom(source, Credentials.fromRequest(request)))

    def test_basic(self) -> None:
        """
        A C{basic} source gives the decoded C{user:password}.
        """
        source = AuthConfig(type="basic")
        self.assertEqual(credentialFrom(source, creds(authorization=basicHeader(b"u:p:w"))), "u:p:w")
        self.assertIsNone(credentialFrom(source, creds(authorization="Basic %%")))
        self.assertIsNone(credentialFrom(source, creds()))

    def test_utf8(self) -> None:
        """
        A credential sent as UTF-8 comes back as text.
        """
        source = AuthConfig(type="header", name="X-Token")
        wire = "clé".encode("utf-8").decode("iso-8859-1")
        self.assertEqual(credentialFrom(source, creds(x_token=wire)), "clé")

    def test_otherType(self) -> None:
        """
        A source of another type gives nothing.
        """
        self.assertIsNone(credentialFrom(AuthConfig(), creds(authorization="Bearer t")))
