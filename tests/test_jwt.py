"""
Tests for the C{jwt} auth type: its config, the token checks (with a
L{task.Clock}), the WebSocket's use of C{sub} and C{exp} (in memory, with
L{twisted.test.iosim}), and the REST API behind it.

Keys are made here with C{cryptography}; no private key is shipped.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import hmac
import json
import os
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import orjson
from autobahn.twisted.websocket import WebSocketClientFactory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop

from wsserver.auth import Authenticator, Credentials, Grant, buildAuthenticator
from wsserver.auth.config import parseAuth
from wsserver.config import AuthConfig, ConfigError, MessageConfig, ServerConfig, parseConfig
from wsserver.configschema import _Section
from wsserver.ids import UserIdRule, anyRule, numericRule
from wsserver.messages import MessageFactory
from wsserver.connection import ChatServerFactory, prepareFrame
from wsserver.routing import Router

from .test_protocol import _Client
from .test_rest import RestMixin

#: "now" on the test clocks
NOW = 1_700_000_000
#: long enough for HS256 (RFC 7518: at least the hash size)
SECRET = "k" * 32


@functools.cache
def privateKey(kind: str) -> Any:
    """
    A private key of C{kind} (C{rsa}, C{rsa1024}, C{ec}, C{ed25519}), made once per run.
    """
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def publicPem(kind: str) -> bytes:
    return privateKey(kind).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def privatePem(kind: str) -> bytes:
    return privateKey(kind).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def claims(**kw: Any) -> dict[str, Any]:
    """
    Claims of a token for user 42 that expires in a minute; C{None} values
    are left out.
    """
    out: dict[str, Any] = {"sub": "42", "exp": NOW + 60}
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def hsToken(secret: str = SECRET, algorithm: str = "HS256", **kw: Any) -> str:
    return jwt.encode(claims(**kw), secret, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forged(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """
    A token made by hand, as an attacker would: signed with HMAC-SHA256
    over C{key}, or unsigned when C{key} is L{None}.
    """
    signingInput = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    if key is None:
        return signingInput + "."
    return signingInput + "." + b64(hmac.new(key, signingInput.encode(), hashlib.sha256).digest())


class ConfigMixin:
    """
    Parse C{jwt} auth objects.
    """

    def keyFile(self, data: bytes) -> str:
        path: str = self.mktemp()  # type: ignore[attr-defined]
        with open(path, "wb") as f:
            f.write(data)
        return path

    def parse(self, auth: dict[str, Any], where: str = "server") -> AuthConfig:
        config = parseConfig({where: {"auth": auth}}, checkEndpoints=False)
        return config.server.auth if where == "server" else config.restApi.auth

    def problems(self, auth: dict[str, Any]) -> list[str]:
        try:
            parseConfig({"server": {"auth": auth}}, checkEndpoints=False)
        except ConfigError as e:
            return e.problems
        self.fail("no problem found")  # type: ignore[attr-defined]


def hs256(**kw: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": "jwt", "secret": SECRET, "algorithms": ["HS256"]}
    raw.update(kw)
    return raw


class ConfigTests(ConfigMixin, SynchronousTestCase):
    """
    The C{jwt} auth object in the config file.
    """

    def test_hs256(self) -> None:
        """
        A secret with HMAC algorithms parses; the token comes from a bearer
        header by default; an audience string becomes a tuple.
        """
        auth = self.parse(hs256(issuer="https://id.example.com", audience="wsserver", leewaySeconds=5))
        self.assertEqual(
            (auth.type, auth.secret, auth.algorithms, auth.issuer, auth.audience, auth.leewaySeconds),
            ("jwt", SECRET, ("HS256",), "https://id.example.com", ("wsserver",), 5),
        )
        self.assertEqual(auth.source, AuthConfig(type="bearer"))
        self.assertNotIn(SECRET, repr(auth))

    def test_rs256(self) -> None:
        """
        A PEM public key file with RSA algorithms parses; its content is read
        with the config.
        """
        path = self.keyFile(publicPem("rsa"))
        auth = self.parse({"type": "jwt", "publicKey": path, "algorithms": ["RS256", "PS256"],
                           "audience": ["a", "b"], "source": {"type": "cookie", "name": "token"}})
        self.assertEqual((auth.publicKey, auth.keyData, auth.algorithms), (path, publicPem("rsa"), ("RS256", "PS256")))
        self.assertEqual(auth.audience, ("a", "b"))
        self.assertEqual(auth.source, AuthConfig(type="cookie", name="token"))

    def test_otherFamilies(self) -> None:
        """
        EC and Ed25519 public keys parse with their algorithms.
        """
        for kind, algorithm in [("ec", "ES256"), ("ed25519", "EdDSA")]:
            auth = self.parse({"type": "jwt", "publicKey": self.keyFile(publicPem(kind)), "algorithms": [algorithm]})
            self.assertEqual(auth.algorithms, (algorithm,))

    def test_querySource(self) -> None:
        """
        A token may come from the query.
        """
        auth = self.parse(hs256(source={"type": "query", "name": "token"}))
        self.assertEqual(auth.source, AuthConfig(type="query", name="token"))

    def test_restApi(self) -> None:
        """
        C{restApi.auth} may be a jwt too.
        """
        self.assertEqual(self.parse(hs256(), where="restApi").type, "jwt")

    def test_algorithmsRequired(self) -> None:
        """
        Without C{algorithms}, or with an empty list: an error naming the key.
        """
        self.assertEqual(self.problems({"type": "jwt", "secret": SECRET}), [
            'server.auth.algorithms: required for auth type "jwt": the algorithms tokens are signed with, '
            'such as ["HS256"] or ["RS256"]'])
        self.assertEqual(self.problems(hs256(algorithms=[])), ["server.auth.algorithms: must list at least one algorithm"])
        self.assertEqual(self.problems(hs256(algorithms="HS256")),
                         ['server.auth.algorithms: must be an array of strings, not string "HS256"'])

    def test_none(self) -> None:
        """
        C{none} is never allowed, whatever its case.
        """
        for name in ["none", "None"]:
            self.assertEqual(self.problems(hs256(algorithms=["HS256", name])), [
                'server.auth.algorithms: "none" is never allowed: it accepts tokens without a signature'])

    def test_unknown(self) -> None:
        """
        An unknown algorithm is an error that lists the known ones.
        """
        [problem] = self.problems(hs256(algorithms=["XS256"]))
        self.assertTrue(problem.startswith('server.auth.algorithms: unknown algorithm "XS256" (use one of: HS256, '),
                        problem)
        self.assertIn("RS256", problem)
        self.assertNotIn("none", problem)

    def test_mixed(self) -> None:
        """
        HMAC and public-key algorithms in one list are an error.
        """
        self.assertEqual(self.problems(hs256(algorithms=["HS256", "RS256"])), [
            "server.auth.algorithms: mixes HMAC (HS256) and public-key (RS256) algorithms: one key cannot "
            "verify both (a token signed with the public key as an HMAC secret must not pass)"])

    def test_hmacWithPublicKey(self) -> None:
        """
        An HMAC algorithm with a public key is an error: its text is no
        secret.
        """
        path = self.keyFile(publicPem("rsa"))
        self.assertEqual(self.problems({"type": "jwt", "publicKey": path, "algorithms": ["HS256"]}), [
            "server.auth.publicKey: HS256 needs a secret, not a public key (anyone who has the public key "
            "could sign tokens)"])

    def test_publicKeyAlgorithmWithSecret(self) -> None:
        """
        A public-key algorithm with a secret is an error.
        """
        self.assertEqual(self.problems(hs256(algorithms=["RS256"])), [
            "server.auth.secret: RS256 verifies with a publicKey (a PEM file), not a secret"])

    def test_both(self) -> None:
        """
        A secret and a public key at once are an error.
        """
        path = self.keyFile(publicPem("rsa"))
        self.assertEqual(self.problems(hs256(publicKey=path)), [
            "server.auth.secret: give secret (for HS*) or publicKey (for the others), not both"])

    def test_keyMissing(self) -> None:
        """
        No key at all: the error names the field the algorithm needs.
        """
        self.assertEqual(self.problems({"type": "jwt", "algorithms": ["HS384"]}),
                         ["server.auth.secret: required for HS384"])
        self.assertEqual(self.problems({"type": "jwt", "algorithms": ["ES256"]}),
                         ["server.auth.publicKey: required for ES256: the path of a PEM file"])
        self.assertEqual(self.problems(hs256(secret="")), ["server.auth.secret: must not be empty"])

    def test_shortSecret(self) -> None:
        """
        A secret shorter than the hash is an error (RFC 7518 section 3.2);
        the longest listed hash counts.
        """
        [problem] = self.problems(hs256(secret="short"))
        self.assertTrue(problem.startswith("server.auth.secret: 5 bytes is too short for HS256: "), problem)
        self.assertIn("RFC 7518", problem)
        [problem] = self.problems(hs256(algorithms=["HS256", "HS512"]))
        self.assertTrue(problem.startswith("server.auth.secret: 32 bytes is too short for HS512: "), problem)

    def test_pemAsSecret(self) -> None:
        """
        A PEM key pasted as the secret is an error.
        """
        [problem] = self.problems(hs256(secret=publicPem("rsa").decode()))
        self.assertEqual(problem, "server.auth.secret: The specified key is an asymmetric key or x509 "
                                  "certificate and should not be used as an HMAC secret.")

    def test_unreadableKey(self) -> None:
        """
        A public key file that cannot be read: an error naming the key and
        the cause.
        """
        path = os.path.join(self.mktemp(), "missing.pem")
        self.assertEqual(self.problems({"type": "jwt", "publicKey": path, "algorithms": ["RS256"]}), [
            f'server.auth.publicKey: cannot read "{path}": No such file or directory'])
        # and the other problems are still found
        self.assertEqual(self.problems({"type": "jwt", "publicKey": path, "algorithms": ["RS256", "none"]}), [
            f'server.auth.publicKey: cannot read "{path}": No such file or directory',
            'server.auth.algorithms: "none" is never allowed: it accepts tokens without a signature'])
        self.assertEqual(self.problems({"type": "jwt", "publicKey": path, "algorithms": ["HS256"]}), [
            f'server.auth.publicKey: cannot read "{path}": No such file or directory',
            "server.auth.publicKey: HS256 needs a secret, not a public key (anyone who has the public key "
            "could sign tokens)"])

    def test_keyReadThroughReader(self) -> None:
        """
        The auth parser does no I/O: it reads the C{publicKey} with the
        reader it is given, and names what that reader could not read.
        """
        asked: list[str] = []

        def readFile(path: str) -> bytes:
            asked.append(path)
            if path == "missing.pem":
                raise PermissionError(errno.EACCES, "Permission denied")
            return publicPem("ec")

        problems: list[str] = []
        warnings: list[str] = []
        raw = {"auth": {"type": "jwt", "publicKey": "/nowhere/key.pem", "algorithms": ["ES256"]}}
        auth = parseAuth(_Section(raw, "server", problems, warnings), "auth", readFile)
        self.assertEqual((asked, problems, warnings), (["/nowhere/key.pem"], [], []))
        self.assertEqual(auth.keyData, publicPem("ec"))
        raw = {"auth": {"type": "oneOf", "types": [{"type": "jwt", "publicKey": "missing.pem", "algorithms": ["ES256"]}]}}
        parseAuth(_Section(raw, "restApi", problems, warnings), "auth", readFile)
        self.assertEqual(problems, ['restApi.auth.types[0].publicKey: cannot read "missing.pem": Permission denied'])

    def test_notAKey(self) -> None:
        """
        A file that holds no key, or a key of another kind than the
        algorithm's, is an error naming the file and the algorithm.
        """
        path = self.keyFile(b"hello")
        [problem] = self.problems({"type": "jwt", "publicKey": path, "algorithms": ["RS256"]})
        self.assertTrue(problem.startswith(f'server.auth.publicKey: "{path}" is not a key for RS256: '), problem)
        path = self.keyFile(publicPem("rsa"))
        [problem] = self.problems({"type": "jwt", "publicKey": path, "algorithms": ["ES256"]})
        self.assertTrue(problem.startswith(f'server.auth.publicKey: "{path}" is not a key for ES256: '), problem)

    def test_shortRsaKey(self) -> None:
        """
        An RSA key under 2048 bits is an error.
        """
        path = self.keyFile(publicPem("rsa1024"))
        [problem] = self.problems({"type": "jwt", "publicKey": path, "algorithms": ["RS256"]})
        self.assertEqual(problem, f'server.auth.publicKey: "{path}": The RSA key is 1024 bits long, which is '
                                  "below the minimum recommended size of 2048 bits. See NIST SP 800-131A.")

    def test_privateKeyWarned(self) -> None:
        """
        A private key where the public key belongs works, with a warning.
        """
        path = self.keyFile(privatePem("rsa"))
        config = parseConfig({"server": {"auth": {"type": "jwt", "publicKey": path, "algorithms": ["RS256"]}}},
                             checkEndpoints=False)
        self.assertIn(f'server.auth.publicKey: "{path}" holds a private key: the server needs the public key only',
                      config.warnings)

    def test_badSource(self) -> None:
        """
        A token cannot come from basic auth; a cookie or query source needs
        its name.
        """
        self.assertEqual(self.problems(hs256(source={"type": "basic"})), [
            'server.auth.source.type: a token is read from a bearer, header, cookie or query source, not "basic"'])
        self.assertEqual(self.problems(hs256(source={"type": "query"})),
                         ['server.auth.source.name: required for auth type "query"'])
        self.assertEqual(self.problems(hs256(source={"type": "cookei", "name": "t"})), [
            'server.auth.source.type: unknown auth type "cookei" '
            '(use one of: noauth, basic, header, bearer, cookie, query)'])

    def test_otherFields(self) -> None:
        """
        C{issuer}, C{audience} and C{leewaySeconds} of the wrong type are
        errors.
        """
        self.assertEqual(self.problems(hs256(issuer=1, audience=[1], leewaySeconds=-1)), [
            "server.auth.audience: must be a string or an array of strings, not array [1]",
            "server.auth.issuer: must be a string, not number 1",
            "server.auth.leewaySeconds: -1 must be at least 0",
        ])

    def test_notForEventTargets(self) -> None:
        """
        An event target cannot send a jwt (it is a check, not a credential).
        """
        raw = {"event": {"enabled": True, "targets": [{"type": "postback", "url": "http://h/", "auth": hs256()}]}}
        with self.assertRaises(ConfigError) as e:
            parseConfig(raw, checkEndpoints=False)
        self.assertEqual(e.exception.problems, [
            'event.targets[0].auth.type: unknown auth type "jwt" (use one of: noauth, basic, header, bearer, cookie)'])

    def test_cookieSourceUsesCookies(self) -> None:
        """
        A jwt read from a cookie counts as cookie auth (for the
        C{allowedOrigins} warning); one from a header does not.
        """
        self.assertTrue(self.parse(hs256(source={"type": "cookie", "name": "t"})).usesType("cookie"))
        self.assertFalse(self.parse(hs256()).usesType("cookie"))


class TokenTests(ConfigMixin, SynchronousTestCase):
    """
    Token checks, on a L{Clock} at L{NOW}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def authenticator(self, auth: dict[str, Any] | None = None, subjectRequired: bool = True) -> Authenticator:
        return buildAuthenticator(self.parse(auth or hs256()), reactor=self.clock, subjectRequired=subjectRequired)

    def identify(self, token: str | None, auth: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 params: dict[str, list[str]] | None = None, subjectRequired: bool = True) -> Grant | None:
        if headers is None:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        a = self.authenticator(auth, subjectRequired)
        result: Grant | None = self.successResultOf(a.identify(Credentials.fromDict(headers, params)))
        self.assertEqual(self.successResultOf(a.authenticate(Credentials.fromDict(headers, params))),
                         result is not None)
        return result

    def refused(self, token: str | None, reason: str | None, **kw: Any) -> None:
        """
        The token is refused, and the log says C{reason} (and never the token).
        """
        with capturedLogs() as events:
            self.assertIsNone(self.identify(token, **kw))
        text = " ".join(formatEvent(e) for e in events)
        if reason is not None:
            self.assertIn(f"jwt refused: {reason}", text)
        if token:
            self.assertNotIn(token, text)

    def test_valid(self) -> None:
        """
        A valid token passes; its grant names the user and the expiry.
        """
        self.assertEqual(self.identify(hsToken()), Grant(subject="42", expires=NOW + 60))

    def test_algorithms(self) -> None:
        """
        Tokens signed with RSA, RSA-PSS, EC and Ed25519 keys pass with the
        public key and the algorithm configured.
        """
        for kind, algorithm in [("rsa", "RS256"), ("rsa", "PS384"), ("ec", "ES256"), ("ed25519", "EdDSA")]:
            auth = {"type": "jwt", "publicKey": self.keyFile(publicPem(kind)), "algorithms": [algorithm]}
            token = jwt.encode(claims(), privateKey(kind), algorithm=algorithm)
            self.assertEqual(self.identify(token, auth), Grant(subject="42", expires=NOW + 60), algorithm)

    def test_badSignature(self) -> None:
        """
        A token signed with another secret is refused.
        """
        self.refused(hsToken(secret="x" * 32), "Signature verification failed")

    def test_tampered(self) -> None:
        """
        A token whose claims were changed after signing is refused.
        """
        header, _, signature = hsToken().split(".")
        other = b64(json.dumps(claims(sub="1")).encode())
        self.refused(f"{header}.{other}.{signature}", "Signature verification failed")

    def test_otherAlgorithm(self) -> None:
        """
        A token signed with an HMAC algorithm that the config does not list
        is refused.
        """
        self.refused(hsToken(secret="k" * 64, algorithm="HS512"), "The specified alg value is not allowed")

    def test_noExp(self) -> None:
        """
        A token without C{exp} is refused.
        """
        self.refused(hsToken(exp=None), 'Token is missing the "exp" claim')

    def test_expNotANumber(self) -> None:
        """
        An C{exp} that is not a number is refused.
        """
        self.refused(hsToken(exp=str(NOW + 60)), "exp must be a number")
        self.refused(hsToken(exp=True), "exp must be a number")

    def test_expired(self) -> None:
        """
        A token whose C{exp} is now or past is refused; C{leewaySeconds}
        lets it pass a little longer, and its grant expires that much later.
        """
        self.refused(hsToken(exp=NOW), "token expired")
        self.refused(hsToken(exp=NOW - 100), "token expired")
        self.assertEqual(self.identify(hsToken(exp=NOW + 1)), Grant(subject="42", expires=NOW + 1))
        self.assertEqual(self.identify(hsToken(exp=NOW - 5), hs256(leewaySeconds=10)),
                         Grant(subject="42", expires=NOW + 5))

    def test_clockDecides(self) -> None:
        """
        Expiry is judged on the injected clock, not the wall clock.
        """
        token = hsToken(exp=NOW + 60)
        self.assertIsNotNone(self.identify(token))
        self.clock.advance(60)
        self.refused(token, "token expired")

    def test_notYetValid(self) -> None:
        """
        A token whose C{nbf} or C{iat} is in the future is refused.
        """
        self.refused(hsToken(nbf=NOW + 10), "token not yet valid (nbf)")
        self.refused(hsToken(iat=NOW + 10), "token not yet valid (iat)")
        self.assertIsNotNone(self.identify(hsToken(nbf=NOW, iat=NOW - 10)))
        self.refused(hsToken(nbf="soon"), "nbf must be a number")

    def test_algNone(self) -> None:
        """
        An unsigned token (C{alg: none}) is refused.
        """
        token = forged({"alg": "none", "typ": "JWT"}, claims(), None)
        self.refused(token, "The specified alg value is not allowed")

    def test_publicKeyAsHmacSecret(self) -> None:
        """
        The classic algorithm confusion: an HS256 token signed with the RS256
        public key (which anyone may have) as the HMAC secret is refused.
        """
        path = self.keyFile(publicPem("rsa"))
        auth = {"type": "jwt", "publicKey": path, "algorithms": ["RS256"]}
        token = forged({"alg": "HS256", "typ": "JWT"}, claims(), publicPem("rsa"))
        self.refused(token, "The specified alg value is not allowed", auth=auth)
        # and the right kind of token passes with that config
        self.assertIsNotNone(self.identify(jwt.encode(claims(), privateKey("rsa"), algorithm="RS256"), auth))

    def test_issuer(self) -> None:
        """
        With C{issuer}, a token from another issuer, or from none, is refused.
        """
        auth = hs256(issuer="https://id.example.com")
        self.assertIsNotNone(self.identify(hsToken(iss="https://id.example.com"), auth))
        self.refused(hsToken(iss="https://evil.example.com"), "Invalid issuer", auth=auth)
        self.refused(hsToken(), 'Token is missing the "iss" claim', auth=auth)

    def test_audience(self) -> None:
        """
        With C{audience}, a token for another audience, or for none, is
        refused; one of several configured audiences is enough.  Without
        C{audience}, a token meant for some audience is refused (RFC 7519
        section 4.1.3).
        """
        auth = hs256(audience=["wsserver", "chat"])
        self.assertIsNotNone(self.identify(hsToken(aud="chat"), auth))
        self.assertIsNotNone(self.identify(hsToken(aud=["other", "wsserver"]), auth))
        self.refused(hsToken(aud="billing"), "Audience doesn't match", auth=auth)
        self.refused(hsToken(), 'Token is missing the "aud" claim', auth=auth)
        self.refused(hsToken(aud="billing"), "Invalid audience")

    def test_subject(self) -> None:
        """
        C{sub} may be a string or an integer; anything else is refused, and
        so is a token without C{sub} where the user must come from it.  The
        REST API (no subject required) takes tokens without C{sub}.
        """
        self.assertEqual(self.identify(hsToken(sub=42)), Grant(subject="42", expires=NOW + 60))
        self.refused(hsToken(sub=4.2), "sub must be a string or an integer")
        self.refused(hsToken(sub=True), "sub must be a string or an integer")
        self.refused(hsToken(sub=None), 'Token is missing the "sub" claim')
        self.assertEqual(self.identify(hsToken(sub=None), subjectRequired=False), Grant(expires=NOW + 60))

    def test_garbage(self) -> None:
        """
        Something that is not a token is refused; no token at all too.
        """
        self.refused("not-a-token", "Not enough segments")
        self.refused(None, None)
        self.refused("", None, headers={"Authorization": "Basic dTpw"})

    def test_cookie(self) -> None:
        """
        With a cookie source, the token is read from that cookie only.
        """
        auth = hs256(source={"type": "cookie", "name": "token"})
        token = hsToken()
        self.assertIsNotNone(self.identify(token, auth, headers={"Cookie": f"theme=dark; token={token}"}))
        self.assertIsNone(self.identify(token, auth, headers={"Authorization": f"Bearer {token}"}))

    def test_query(self) -> None:
        """
        With a query source, the token is read from that query parameter.
        """
        auth = hs256(source={"type": "query", "name": "token"})
        token = hsToken()
        self.assertIsNotNone(self.identify(token, auth, headers={}, params={"id": ["42"], "token": [token]}))
        self.assertIsNone(self.identify(token, auth, headers={}, params={"t": [token]}))

    def test_header(self) -> None:
        """
        With a header source, the token is that header's whole value.
        """
        auth = hs256(source={"type": "header", "name": "X-Token"})
        self.assertIsNotNone(self.identify(hsToken(), auth, headers={"X-Token": hsToken()}))

    def test_oneOf(self) -> None:
        """
        In C{oneOf}, a passing jwt's grant is the result.
        """
        auth = {"type": "oneOf", "types": [{"type": "bearer", "value": "static"}, hs256()]}
        self.assertEqual(self.identify(hsToken(), auth), Grant(subject="42", expires=NOW + 60))
        self.assertTrue(self.authenticator(auth).givesUserId)

    def test_allOfDifferentUsers(self) -> None:
        """
        C{allOf} two tokens that name different users refuses; naming the
        same one, the grant expires with the first to expire.
        """
        auth = {"type": "allOf", "types": [hs256(), hs256(source={"type": "cookie", "name": "t"})]}
        headers = {"Authorization": f"Bearer {hsToken()}", "Cookie": f"t={hsToken(sub='43')}"}
        self.assertIsNone(self.identify(None, auth, headers=headers))
        headers = {"Authorization": f"Bearer {hsToken()}", "Cookie": f"t={hsToken(exp=NOW + 5)}"}
        self.assertEqual(self.identify(None, auth, headers=headers), Grant(subject="42", expires=NOW + 5))

    def test_unparsedConfigRefused(self) -> None:
        """
        Building from an auth object with no usable key raises.
        """
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="jwt", algorithms=("RS256",)))
        self.assertRaises(ValueError, buildAuthenticator, AuthConfig(type="jwt", secret=SECRET))


class WebSocketTests(ConfigMixin, SynchronousTestCase):
    """
    The WebSocket with jwt auth, in memory: C{sub} is the user, C{exp} ends
    the connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        loop = replace_loop(self.clock)
        loop.__enter__()
        self.addCleanup(loop.__exit__, None, None, None)
        self.pumps: list[iosim.IOPump] = []
        self.factory = self.makeFactory(hs256())

    def makeFactory(self, auth: dict[str, Any], ids: UserIdRule = numericRule) -> ChatServerFactory:
        """
        A factory with C{auth}; the original's id rule unless C{ids} says.
        """
        messages = MessageFactory(self.clock, ZoneInfo("UTC"), ids=ids)
        router = Router(MessageConfig(), self.clock, messages, prepare=prepareFrame)
        authenticator = buildAuthenticator(self.parse(auth), reactor=self.clock, subjectRequired=True)
        return ChatServerFactory(router, ServerConfig(), MessageConfig(), authenticator, self.clock)

    def connect(self, query: str, token: str | None = None, headers: dict[str, str] | None = None) -> _Client:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        clientFactory = WebSocketClientFactory(f"ws://127.0.0.1:8085/chat?{query}", headers=headers)
        clientFactory.protocol = _Client
        server = self.factory.buildProtocol(None)
        client = clientFactory.buildProtocol(None)
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, isServer=True), client, iosim.FakeTransport(client, isServer=False)
        ))
        client.serverSide = server
        self.flush()
        return client

    def flush(self) -> None:
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def test_valid(self) -> None:
        """
        A token whose C{sub} is the query's id lets the user in.
        """
        client = self.connect("id=42", hsToken())
        self.assertIsNone(client.closedWith)
        self.assertTrue(self.factory.router.isOnline(42))
        client.sendMessage(orjson.dumps({"type": "text", "text": "me", "recipients": [42]}))
        self.flush()
        self.assertEqual([m["text"] for m in client.received], ["me"])

    def test_integerSubject(self) -> None:
        """
        C{sub} as a JSON integer works as the string does.
        """
        self.connect("id=42", hsToken(sub=42))
        self.assertTrue(self.factory.router.isOnline(42))

    def test_otherUser(self) -> None:
        """
        A token for another user is refused with 4050 Unauthorized.
        """
        client = self.connect("id=41", hsToken())
        self.assertEqual(client.closedWith, (4050, "Unauthorized"))
        self.assertFalse(self.factory.router.isOnline(41))
        self.assertFalse(self.factory.router.isOnline(42))

    def test_idFromSubject(self) -> None:
        """
        Without C{?id}, the token's C{sub} gives the id.
        """
        client = self.connect("", hsToken())
        self.assertIsNone(client.closedWith)
        self.assertEqual(client.serverSide.session.userId, 42)
        self.assertTrue(self.factory.router.isOnline(42))
        self.connect("since=0", hsToken(sub="7"))
        self.assertTrue(self.factory.router.isOnline(7))

    def test_subjectNotAnId(self) -> None:
        """
        A C{sub} that is no user id (a name, 0, over 2^64-1) is refused with
        4050, with or without C{?id}.
        """
        for sub in ["alice", "0", str(2**64), "-1"]:
            client = self.connect("", hsToken(sub=sub))
            self.assertEqual(client.closedWith, (4050, "Unauthorized"), sub)

    def test_stringSubject(self) -> None:
        """
        With C{chat.userIds: "any"}, a C{sub} such as C{auth0|abc} is the
        user; one outside the rule is refused with 4050; a number given as
        a string is the number.
        """
        self.factory = self.makeFactory(hs256(), anyRule)
        client = self.connect("", hsToken(sub="auth0|abc"))
        self.assertEqual((client.closedWith, client.serverSide.session.userId), (None, "auth0|abc"))
        client = self.connect("id=auth0%7Cabc", hsToken(sub="auth0|abc"))
        self.assertEqual((client.closedWith, client.serverSide.session.userId), (None, "auth0|abc"))
        client = self.connect("", hsToken(sub="42"))
        self.assertEqual((client.closedWith, client.serverSide.session.userId), (None, 42))
        for sub in ["a b", "007", "bob"]:
            client = self.connect("id=alice" if sub == "bob" else "", hsToken(sub=sub))
            self.assertEqual(client.closedWith, (4050, "Unauthorized"), sub)

    def test_anyQueryId(self) -> None:
        """
        With C{chat.userIds: "any"}, the C{?id} query takes UUIDs and e-mail
        addresses (a C{+} is a plus); a bad one is a 4000 naming the rule.
        """
        self.factory = self.makeFactory(hs256(), anyRule)
        client = self.connect("id=a+b@example.com", hsToken(sub="a+b@example.com"))
        self.assertEqual((client.closedWith, client.serverSide.session.userId), (None, "a+b@example.com"))
        client = self.connect("id=a%20b", hsToken())
        self.assertEqual(client.closedWith, (4000, 'Invalid id "a b": only letters, digits and _-.:@|+='))
        client = self.connect("id=007", hsToken())
        self.assertEqual(client.closedWith, (4000, 'Invalid id "007": a number must not start with 0'))
        client = self.connect("id=18446744073709551616", hsToken())
        self.assertEqual(client.closedWith, (4000, 'Invalid id "18446744073709551616": over the maximum 2^64-1'))

    def test_badQueryId(self) -> None:
        """
        A C{?id} that is given but bad is still refused with 4000; an empty
        one counts as none.
        """
        client = self.connect("id=abc", hsToken())
        self.assertEqual(client.closedWith, (4000, "Invalid id 'abc': must be an unsigned 64-bit integer"))
        client = self.connect("id=0", hsToken())
        self.assertEqual(client.closedWith, (4000, "Invalid id 0: reserved for the server"))
        client = self.connect("id=", hsToken())
        self.assertEqual((client.closedWith, client.serverSide.session.userId), (None, 42))

    def test_noToken(self) -> None:
        """
        No token: 4050.
        """
        self.assertEqual(self.connect("id=42").closedWith, (4050, "Unauthorized"))

    def test_otherAuthNeedsId(self) -> None:
        """
        In C{oneOf}, a pass by an auth that names no user still needs
        C{?id}: 4000 without it.
        """
        self.factory = self.makeFactory({"type": "oneOf", "types": [hs256(), {"type": "bearer", "value": "static"}]})
        client = self.connect("", "static")
        self.assertEqual(client.closedWith, (4000, "Id required in query parameter: ?id={id}"))
        self.assertIsNone(self.connect("id=5", "static").closedWith)

    def test_expiredAtConnect(self) -> None:
        """
        A token that has expired is refused with 4050.
        """
        self.assertEqual(self.connect("id=42", hsToken(exp=NOW - 1)).closedWith, (4050, "Unauthorized"))

    def test_expiresWhileConnected(self) -> None:
        """
        When the token's C{exp} passes, the connection is closed with 4051
        C{Token expired}, and the user is offline.
        """
        client = self.connect("id=42", hsToken(exp=NOW + 30))
        self.clock.advance(29.9)
        self.flush()
        self.assertIsNone(client.closedWith)
        self.clock.advance(0.1)
        self.flush()
        self.assertEqual(client.closedWith, (4051, "Token expired"))
        self.assertFalse(self.factory.router.isOnline(42))

    def test_leewayDelaysExpiry(self) -> None:
        """
        With C{leewaySeconds}, the connection lasts that much past C{exp}.
        """
        self.factory = self.makeFactory(hs256(leewaySeconds=10))
        client = self.connect("id=42", hsToken(exp=NOW + 30))
        self.clock.advance(39)
        self.flush()
        self.assertIsNone(client.closedWith)
        self.clock.advance(1)
        self.flush()
        self.assertEqual(client.closedWith, (4051, "Token expired"))

    def test_expiryCancelledOnClose(self) -> None:
        """
        A connection that closes before its token expires leaves no expiry
        timer behind.
        """
        client = self.connect("id=42", hsToken(exp=NOW + 30))
        timer = client.serverSide.session._expiry
        self.assertTrue(timer.active())
        client.sendClose(1000)
        self.flush()
        self.assertFalse(timer.active())
        self.assertIsNone(client.serverSide.session._expiry)
        self.assertNotIn(timer, self.clock.getDelayedCalls())

    def test_cookie(self) -> None:
        """
        A token in a cookie, as a browser sends it, works without C{?id}.
        """
        self.factory = self.makeFactory(hs256(source={"type": "cookie", "name": "token"}))
        client = self.connect("", headers={"Cookie": f"token={hsToken()}"})
        self.assertIsNone(client.closedWith)
        self.assertEqual(client.serverSide.session.userId, 42)

    def test_query(self) -> None:
        """
        A token in the query works too.
        """
        self.factory = self.makeFactory(hs256(source={"type": "query", "name": "token"}))
        client = self.connect(f"id=42&token={hsToken()}")
        self.assertIsNone(client.closedWith)
        self.assertEqual(self.connect(f"id=41&token={hsToken()}").closedWith, (4050, "Unauthorized"))


class RestTests(RestMixin, ConfigMixin, SynchronousTestCase):
    """
    The REST API behind a jwt: a bearer token by default, no C{sub} needed.
    """

    def setUp(self) -> None:
        self.setUpJwt(hs256())

    def setUpJwt(self, auth: dict[str, Any]) -> None:
        self.tokenClock = Clock()
        self.tokenClock.advance(NOW)
        self.setUpRest(buildAuthenticator(self.parse(auth, where="restApi"), reactor=self.tokenClock), None)

    def test_token(self) -> None:
        """
        A valid token passes, with or without C{sub}; a missing, expired or
        forged one gets 401.
        """
        ok = {"success": True, "data": []}
        self.assertJSON(self.request("GET", "/stats", headers={"Authorization": f"Bearer {hsToken()}"}), 200, ok)
        self.assertJSON(self.request("GET", "/stats", headers={"Authorization": f"Bearer {hsToken(sub=None)}"}),
                        200, ok)
        for headers in [{}, {"Authorization": f"Bearer {hsToken(exp=NOW)}"},
                        {"Authorization": f"Bearer {hsToken(secret='x' * 32)}"}]:
            self.assertError(self.request("GET", "/stats", headers=headers), 401, "Unauthorized")

    def test_query(self) -> None:
        """
        A query source reads the token from the request's query.
        """
        self.setUpJwt(hs256(source={"type": "query", "name": "token"}))
        self.assertJSON(self.request("GET", f"/stats?token={hsToken()}"), 200, {"success": True, "data": []})
        self.assertError(self.request("GET", "/stats?token=x"), 401, "Unauthorized")
