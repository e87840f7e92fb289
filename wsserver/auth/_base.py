# -*- test-case-name: tests.test_auth -*-
"""
Authentication (SPEC section 5): whether a request may pass, and the
credential the server itself sends.

An L{AuthConfig} becomes an L{Authenticator} with
L{wsserver.auth.build.buildAuthenticator}; the
request's side is a L{Credentials}, built from an Autobahn handshake
(L{Credentials.fromDict}) or a C{twisted.web} request
(L{Credentials.fromRequest}).  Every check answers with a L{Deferred} that
fires with C{True} or C{False} (or, from L{Authenticator.identify}, a
L{Grant} or L{None}) and never fails: an error is logged and refuses the
request.

Secrets are compared with L{hmac.compare_digest}, on bytes.  Header values
are kept as Autobahn gives them, decoded from ISO-8859-1 (which maps each byte
to one character), so that the bytes on the wire can be recovered exactly;
configured secrets are compared as UTF-8.

A C{remote} check asks an HTTP service: it never blocks the reactor, follows
no redirect (a redirect to a login page answering 200 must not let everyone
in), and never logs the client's credential.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest, IResponse

from treq.client import HTTPClient

from ..httpbody import readBody
from ..logflood import PeerLogger
from .config import AuthConfig

__all__ = [
    "Authenticator",
    "Credentials",
    "Grant",
    "applyCredential",
    "credentialFrom",
]

#: every check is one a remote peer asks for: its lines are held to one a
#: second per kind
_log = PeerLogger()

#: the auth types that can say where a credential is
_CREDENTIAL_TYPES = ("basic", "header", "bearer", "cookie", "query")


def _wire(presented: str) -> bytes:
    """
    The bytes a header value had on the wire: it was decoded from ISO-8859-1
    (as Autobahn does); a string that cannot have been is taken as UTF-8.
    """
    try:
        return presented.encode("latin-1")
    except UnicodeEncodeError:
        return presented.encode("utf-8")


def _text(raw: bytes) -> str:
    """
    Decode bytes as UTF-8, falling back to ISO-8859-1 (which never fails).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _secretEquals(presented: str | None, expected: bytes) -> bool:
    """
    Compare a presented header value with a configured secret in constant
    time.
    """
    if presented is None:
        return False
    return hmac.compare_digest(_wire(presented), expected)


class Credentials:
    """
    What a request offers: its headers and its query.

    Header values are strings as Autobahn gives them: decoded from
    ISO-8859-1; query values are text.
    """

    def __init__(
        self,
        getHeader: Callable[[str], str | None],
        getQuery: Callable[[str], str | None] = lambda name: None,
    ) -> None:
        """
        @param getHeader: returns the value of the header named by its
            argument, or L{None}; names are case-insensitive.
        @param getQuery: returns the (first) value of the query parameter
            named by its argument, or L{None}.
        """
        self._getHeader = getHeader
        self._getQuery = getQuery

    @classmethod
    def fromDict(cls, headers: Mapping[str, str], params: Mapping[str, list[str]] | None = None) -> Credentials:
        """
        The credentials of an Autobahn handshake.

        @param headers: C{ConnectionRequest.headers}: header names (any case)
            to values; Autobahn lower-cases the names and joins repeated
            headers with C{", "}.
        @param params: C{ConnectionRequest.params}: the query, names to
            lists of values.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        query = params or {}
        return cls(lambda name: lowered.get(name.lower()), lambda name: (query.get(name) or [None])[0])

    @classmethod
    def fromRequest(cls, request: IRequest) -> Credentials:
        """
        The credentials of a C{twisted.web} request.

        Like L{IRequest.getHeader}, the last of repeated headers counts, but
        repeated C{Cookie} headers (as HTTP/2 sends them) are joined with
        C{"; "}.  Values are decoded from ISO-8859-1, as Autobahn does.

        @param request: the request.
        """
        requestHeaders: Headers = request.requestHeaders

        def getHeader(name: str) -> str | None:
            raw = requestHeaders.getRawHeaders(name.encode("latin-1", "replace"))
            if not raw:
                return None
            if name.lower() == "cookie":
                return b"; ".join(raw).decode("latin-1")
            return raw[-1].decode("latin-1")

        args: dict[bytes, list[bytes]] = request.args or {}

        def getQuery(name: str) -> str | None:
            values = args.get(name.encode("utf-8"))
            return _text(values[0]) if values else None

        return cls(getHeader, getQuery)

    def header(self, name: str) -> str | None:
        """
        The value of the header C{name} (case-insensitive), or L{None}.
        """
        return self._getHeader(name)

    def query(self, name: str) -> str | None:
        """
        The first value of the query parameter C{name}, or L{None}.
        """
        return self._getQuery(name)

    def cookie(self, name: str) -> str | None:
        """
        The value of the cookie C{name} (case-sensitive, as cookie names are)
        in the C{Cookie} header, or L{None}.

        Parsing is tolerant: C{name=value} pairs are separated by C{";"},
        and parts without C{"="} are skipped.  When a name repeats, the first
        one counts (browsers send the most specific path first).  The value
        is returned as sent, double quotes included.
        """
        raw = self.header("cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip() == name:
                return value.strip()
        return None

    def _authorization(self, scheme: str) -> str | None:
        """
        What follows C{scheme} (case-insensitive) in the C{Authorization}
        header, stripped; L{None} if the header is absent, names another
        scheme, or has nothing after it.
        """
        raw = self.header("authorization")
        if raw is None:
            return None
        given, _, rest = raw.strip().partition(" ")
        if given.lower() != scheme:
            return None
        return rest.strip() or None

    def bearer(self) -> str | None:
        """
        The token of an C{Authorization: Bearer ...} header, or L{None}.
        """
        return self._authorization("bearer")

    def _basicBytes(self) -> bytes | None:
        """
        The decoded C{user:password} bytes of an C{Authorization: Basic ...}
        header; L{None} if absent, not strict base64, or without C{":"}.
        """
        token = self._authorization("basic")
        if token is None:
            return None
        try:
            decoded = base64.b64decode(token.encode("latin-1"), validate=True)
        except (binascii.Error, ValueError):
            return None
        if b":" not in decoded:
            return None
        return decoded

    def basic(self) -> tuple[str, str] | None:
        """
        The user and password of an C{Authorization: Basic ...} header,
        decoded as UTF-8 (or ISO-8859-1 if that fails); L{None} if the header
        is absent or malformed.
        """
        decoded = self._basicBytes()
        if decoded is None:
            return None
        user, _, password = _text(decoded).partition(":")
        return user, password


@dataclass(frozen=True)
class Grant:
    """
    What a check that passed vouches for, beyond passing.

    @ivar subject: the user the credential names (a token's C{sub}, as
        text), or L{None} when it names none.
    @ivar expires: when the credential stops being valid (seconds on the
        server's clock), or L{None} if never.
    """

    subject: str | None = None
    expires: float | None = None


#: the L{Grant} of a check that vouches for nothing but passing
PASSED = Grant()


def _asGrant(result: bool | Grant | None) -> Grant | None:
    """
    A check's answer as a grant: C{True} grants L{PASSED}, C{False} nothing.
    """
    if isinstance(result, Grant):
        return result
    return PASSED if result else None


class Authenticator:
    """
    Decides whether a request's L{Credentials} pass.

    Subclasses implement C{_check}, which returns a C{bool} (or a L{Grant}
    for a pass, L{None} for a refusal), or a L{Deferred} firing with one.

    @ivar isNoAuth: C{True} only for C{noauth}, so that the caller can skip
        building L{Credentials} on the hot path.
    @ivar givesUserId: whether a pass may name the user (a C{jwt}'s C{sub}),
        so that the WebSocket may take the id from it when the query has none.
    """

    isNoAuth: bool = False
    givesUserId: bool = False
    #: whether C{_check} may wait (on the network)
    _isAsync: bool = False
    #: the auth type, for logs
    _authType: str = ""

    def authenticate(self, credentials: Credentials) -> Deferred[bool]:
        """
        Whether C{credentials} pass.

        @return: a L{Deferred} that fires with C{True} or C{False}; it never
            fails: an unexpected error is logged and refuses.
        """
        return self.identify(credentials).addCallback(lambda grant: grant is not None)

    def identify(self, credentials: Credentials) -> Deferred[Grant | None]:
        """
        Whether C{credentials} pass, and what for.

        @return: a L{Deferred} that fires with a L{Grant} when they pass, or
            L{None}; it never fails: an unexpected error is logged and
            refuses.
        """
        try:
            result = self._check(credentials)
        except Exception:
            _log.failure("auth check {authType} failed", authType=self._authType)
            return succeed(None)
        if isinstance(result, Deferred):
            return result.addCallbacks(_asGrant, self._crashed)
        return succeed(_asGrant(result))

    def _crashed(self, failure: Failure) -> None:
        _log.failure("auth check {authType} failed", failure, authType=self._authType)
        return None

    def _check(self, credentials: Credentials) -> bool | Grant | None | Deferred[Any]:
        raise NotImplementedError(f"{type(self).__name__}._check")


class _NoAuth(Authenticator):
    isNoAuth = True
    _authType = "noauth"

    def authenticate(self, credentials: Credentials) -> Deferred[bool]:
        return succeed(True)

    def identify(self, credentials: Credentials) -> Deferred[Grant | None]:
        return succeed(PASSED)

    def _check(self, credentials: Credentials) -> bool:
        return True


class _Basic(Authenticator):
    _authType = "basic"

    def __init__(self, user: str, password: str) -> None:
        self._expected = f"{user}:{password}".encode("utf-8")

    def _check(self, credentials: Credentials) -> bool:
        presented = credentials._basicBytes()
        if presented is None:
            return False
        return hmac.compare_digest(presented, self._expected)


class _Header(Authenticator):
    _authType = "header"

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._expected = value.encode("utf-8")

    def _check(self, credentials: Credentials) -> bool:
        return _secretEquals(credentials.header(self._name), self._expected)


class _Bearer(Authenticator):
    _authType = "bearer"

    def __init__(self, value: str) -> None:
        self._expected = value.encode("utf-8")

    def _check(self, credentials: Credentials) -> bool:
        return _secretEquals(credentials.bearer(), self._expected)


class _Cookie(Authenticator):
    _authType = "cookie"

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._expected = value.encode("utf-8")

    def _check(self, credentials: Credentials) -> bool:
        return _secretEquals(credentials.cookie(self._name), self._expected)


class _Combination(Authenticator):
    """
    C{oneOf} or C{allOf}: the checks that cannot wait run first, and the
    first answer that decides stops the others (checks that wait run one
    after another, so that a decided request makes no further HTTP call).

    C{oneOf} grants what its first pass grants; C{allOf} what all grant
    together: the one subject they name (naming two is a refusal), and the
    earliest expiry.
    """

    def __init__(self, authType: str, children: list[Authenticator]) -> None:
        self._authType = authType
        self._wanted = authType == "oneOf"
        self._children = sorted(children, key=lambda c: c._isAsync)
        self._isAsync = any(c._isAsync for c in children)
        self.givesUserId = any(c.givesUserId for c in children)

    def _check(self, credentials: Credentials) -> Deferred[Grant | None]:
        return Deferred.fromCoroutine(self._decide(credentials))

    async def _decide(self, credentials: Credentials) -> Grant | None:
        # oneOf stops at the first pass, allOf at the first refusal
        grants = []
        for child in self._children:
            grant = await child.identify(credentials)
            if (grant is not None) == self._wanted:
                return grant
            grants.append(grant)
        return None if self._wanted else _together(grants)


def _together(grants: list[Grant | None]) -> Grant | None:
    """
    What passes of C{allOf} grant together; L{None} when they name different
    subjects.
    """
    subjects = {g.subject for g in grants if g is not None and g.subject is not None}
    if len(subjects) > 1:
        _log.info("auth refused: allOf checks name different users")
        return None
    times = [g.expires for g in grants if g is not None and g.expires is not None]
    if not subjects and not times:
        return PASSED
    return Grant(subject=subjects.pop() if subjects else None, expires=min(times) if times else None)


def _substitute(data: Any, credential: str) -> Any:
    """
    Replace C{{0}} with C{credential} in every string value in C{data}
    (recursively through objects and arrays; object keys are untouched).
    """
    if isinstance(data, str):
        return data.replace("{0}", credential)
    if isinstance(data, dict):
        return {key: _substitute(value, credential) for key, value in data.items()}
    if isinstance(data, list):
        return [_substitute(value, credential) for value in data]
    return data


def _describe(failure: Failure) -> str:
    """
    A short reason for a failed HTTP request, for logs.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(_describe(r) if isinstance(r, Failure) else str(r) for r in reasons)
    message = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return f"{name}: {message}" if message else name


class _Remote(Authenticator):
    """
    Asks an HTTP service: the request passes when it answers 2xx, body
    included, within the timeout.
    """

    _authType = "remote"
    _isAsync = True

    def __init__(self, config: AuthConfig, httpClient: HTTPClient, reactor: IReactorTime) -> None:
        assert config.source is not None
        self._config = config
        self._source = config.source
        self._client = httpClient
        self._reactor = reactor
        self._hasContentType = any(k.lower() == "content-type" for k, _ in config.headers)

    def _request(self, credential: str) -> tuple[Headers, bytes | None]:
        """
        The headers and the body to send for C{credential}.
        """
        headers = Headers()
        for name, value in self._config.headers:
            headers.addRawHeader(name, value)
        data = self._config.data
        if data is None:
            return headers, None
        if isinstance(data, str):
            return headers, data.replace("{0}", credential).encode("utf-8")
        if not self._hasContentType:
            headers.addRawHeader("Content-Type", "application/json")
        body = json.dumps(_substitute(data, credential), separators=(",", ":"), ensure_ascii=False)
        return headers, body.encode("utf-8")

    def _check(self, credentials: Credentials) -> bool | Deferred[bool]:
        credential = credentialFrom(self._source, credentials)
        if credential is None:
            return False
        headers, body = self._request(credential)
        start = self._reactor.seconds()
        d: Deferred[IResponse] = self._client.request(
            self._config.method,
            self._config.url,
            headers=headers,
            data=body,
            timeout=self._config.timeoutSeconds,
            reactor=self._reactor,
            allow_redirects=False,
            unbuffered=True,
        )
        return d.addCallbacks(self._answered, self._failed, callbackArgs=(start,), errbackArgs=(start,))

    def _answered(self, response: IResponse, start: float) -> bool | Deferred[bool]:
        # the body too must arrive within the timeout: a server that sends
        # 200 and then trickles has not answered
        body = readBody(response, self._reactor, self._config.timeoutSeconds, start)
        if 200 <= response.code < 300:
            return body.addCallbacks(lambda _: True, self._unfinished)
        # the status decides; the body is read (and dropped) only so that the
        # connection is released, or cut at the timeout
        body.addErrback(lambda _: None)
        _log.info(
            "remote auth {url} refused: HTTP {code}", url=self._config.url, code=response.code
        )
        return False

    def _unfinished(self, failure: Failure) -> bool:
        _log.warn(
            "remote auth {url} failed: HTTP 2xx, but {reason}",
            url=self._config.url,
            reason=failure.getErrorMessage() or _describe(failure),
        )
        return False

    def _failed(self, failure: Failure, start: float) -> bool:
        timeout = self._config.timeoutSeconds
        if timeout and self._reactor.seconds() - start >= timeout:
            reason = f"no answer within {timeout} seconds"
        elif failure.check(CancelledError):
            reason = "cancelled"
        else:
            reason = _describe(failure)
        _log.warn("remote auth {url} failed: {reason}", url=self._config.url, reason=reason)
        return False


def _setHeader(headers: dict[bytes, list[bytes]], name: bytes, value: bytes) -> None:
    """
    Set the header C{name} to C{value}, replacing it in any case.
    """
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]
    headers[name] = [value]


def applyCredential(config: AuthConfig, headers: dict[bytes, list[bytes]]) -> None:
    """
    Add the credential that C{config} describes to the headers of an
    outgoing request.

    C{basic}, C{bearer} and C{header} replace a header of the same name (in
    any case); C{cookie} joins the cookies already there.

    @param config: a C{noauth}, C{basic}, C{header}, C{bearer} or C{cookie}
        auth object.
    @param headers: header names to values, as treq takes them; changed in
        place.
    @raise ValueError: for any other type.
    """
    kind = config.type
    if kind == "noauth":
        return
    if kind == "basic":
        token = base64.b64encode(f"{config.user}:{config.password}".encode("utf-8"))
        _setHeader(headers, b"Authorization", b"Basic " + token)
    elif kind == "bearer":
        _setHeader(headers, b"Authorization", b"Bearer " + config.value.encode("utf-8"))
    elif kind == "header":
        _setHeader(headers, config.name.encode("utf-8"), config.value.encode("utf-8"))
    elif kind == "cookie":
        cookies = [v for k, vs in headers.items() if k.lower() == b"cookie" for v in vs]
        cookies.append(f"{config.name}={config.value}".encode("utf-8"))
        _setHeader(headers, b"Cookie", b"; ".join(cookies))
    else:
        raise ValueError(f"auth type {kind!r} cannot be sent as a credential")


def credentialFrom(source: AuthConfig, credentials: Credentials) -> str | None:
    """
    The client's credential, where C{source} says it is, for a C{remote} or
    C{jwt} check.

    @param source: a C{header} (the value of the header C{source.name}),
        C{bearer} (the token), C{cookie} (the value of the cookie
        C{source.name}), C{query} (the value of the query parameter
        C{source.name}) or C{basic} (the decoded C{user:password}) auth
        object.
    @param credentials: what the request offers.
    @return: the credential (bytes sent as UTF-8 are decoded as such), or
        L{None} if it is absent or empty (or C{source} is of another type).
    """
    kind = source.type
    value: str | None
    if kind == "header":
        value = credentials.header(source.name)
    elif kind == "bearer":
        value = credentials.bearer()
    elif kind == "cookie":
        value = credentials.cookie(source.name)
    elif kind == "basic":
        decoded = credentials._basicBytes()
        value = None if decoded is None else _text(decoded)
    elif kind == "query":
        value = credentials.query(source.name)
    else:
        return None
    if not value:
        return None
    # header values were decoded from ISO-8859-1: recover UTF-8 text (query
    # values are text already)
    return value if kind in ("basic", "query") else _text(_wire(value))
