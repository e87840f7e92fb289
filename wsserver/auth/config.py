# -*- test-case-name: tests.test_jwt,tests.test_config -*-
"""
The auth objects of the configuration (SPEC section 5): L{AuthConfig}, its
parser, and the checks of a C{jwt} key.

The sections' parsers call L{parseAuth} for C{server.auth}, C{restApi.auth}
(L{wsserver.serverconfig}) and each event target's C{auth}
(L{wsserver.events.config}); nothing here imports the configuration
module or the authenticators, so both can import this one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from jwt import PyJWTError, get_algorithm_by_name
from jwt.algorithms import get_default_algorithms

from ..configschema import _IndexSection, _Section

__all__ = ["AUTH_TYPES", "AuthConfig", "SOURCE_TYPES", "isPrivateKey", "keyProblems", "parseAuth"]

AUTH_TYPES = ("noauth", "basic", "header", "bearer", "cookie", "oneOf", "allOf", "remote", "jwt")
#: where a C{remote} or C{jwt} check may find the client's credential
SOURCE_TYPES = ("noauth", "basic", "header", "bearer", "cookie", "query")
#: The fields of all auth types: where the chosen type does not use one (the
#: original's templates carry C{user} and C{password} under C{noauth}), it is
#: ignored without an "unknown key" warning.
AUTH_FIELDS = ("user", "password", "name", "value", "types", "url", "method", "headers", "data", "source",
               "timeoutSeconds", "secret", "publicKey", "algorithms", "issuer", "audience", "leewaySeconds")

@dataclass(frozen=True)
class AuthConfig:
    """
    One auth object (SPEC section 5): who may connect, or, for an event
    target, the credential the server sends.

    Only the fields of its C{type} are meaningful; the others keep their
    defaults.
    """

    type: str = "noauth"
    user: str = ""
    password: str = ""
    name: str = ""
    value: str = ""
    #: for C{oneOf} / C{allOf}
    types: tuple[AuthConfig, ...] = ()
    #: for C{remote}
    url: str = ""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    data: Any = None
    source: AuthConfig | None = None
    timeoutSeconds: float = 10.0
    #: for C{jwt}: an HMAC secret, or the path of a PEM public key and its
    #: content (read with the config, so that a reload reads it again)
    secret: str = field(default="", repr=False)
    publicKey: str = ""
    keyData: bytes = field(default=b"", repr=False)
    algorithms: tuple[str, ...] = ()
    issuer: str = ""
    audience: tuple[str, ...] = ()
    leewaySeconds: float = 0.0

    def usesType(self, authType: str) -> bool:
        """
        Whether this auth, or any auth nested in it (the C{source} of a
        C{remote} or C{jwt} check included), is of C{authType}: so
        C{usesType("cookie")} says whether a browser's cookies can pass it.
        """
        return (
            self.type == authType
            or any(t.usesType(authType) for t in self.types)
            or (self.source is not None and self.source.usesType(authType))
        )


def _isHMAC(algorithm: str) -> bool:
    return algorithm.startswith("HS")


def _known() -> list[str]:
    """
    The algorithms this PyJWT (with C{cryptography}) can verify, C{none}
    left out.
    """
    return [name for name in get_default_algorithms() if name != "none"]


def isPrivateKey(key: Any) -> bool:
    """
    Whether a C{cryptography} key object is a private key (those can give
    their public key; public keys cannot).
    """
    return hasattr(key, "public_key")


def keyProblems(
    algorithms: Sequence[str], secret: str, keyPath: str, keyData: bytes | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """
    What is wrong with a C{jwt} config's algorithms and key, for the config
    parser.

    @param algorithms: the configured algorithms (not empty).
    @param secret: the configured HMAC secret, or C{""}.
    @param keyPath: the configured C{publicKey} path, or C{""}.
    @param keyData: the content of that file; L{None} when it could not be
        read (a problem reported already): the rest is still checked.
    @return: problems and warnings, each a list of (field name, why).
    """
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    known = _known()
    for algorithm in algorithms:
        if algorithm.lower() == "none":
            problems.append(("algorithms", '"none" is never allowed: it accepts tokens without a signature'))
        elif algorithm not in known:
            problems.append(("algorithms", f'unknown algorithm "{algorithm}" (use one of: {", ".join(known)})'))
    if problems:
        return problems, warnings
    hmacs = [a for a in algorithms if _isHMAC(a)]
    others = [a for a in algorithms if not _isHMAC(a)]
    if hmacs and others:
        problems.append((
            "algorithms",
            f"mixes HMAC ({', '.join(hmacs)}) and public-key ({', '.join(others)}) algorithms: "
            "one key cannot verify both (a token signed with the public key as an HMAC secret must not pass)",
        ))
        return problems, warnings
    if secret and keyPath:
        problems.append(("secret", "give secret (for HS*) or publicKey (for the others), not both"))
        return problems, warnings
    if hmacs:
        if keyPath:
            problems.append((
                "publicKey",
                f"{hmacs[0]} needs a secret, not a public key (anyone who has the public key could sign tokens)",
            ))
        elif not secret:
            problems.append(("secret", f'required for {hmacs[0]}'))
        else:
            for algorithm in hmacs:
                try:
                    verifier = get_algorithm_by_name(algorithm)
                    short = verifier.check_key_length(verifier.prepare_key(secret))
                except PyJWTError as e:  # a PEM key given as a secret
                    problems.append(("secret", str(e)))
                    break
                if short:
                    size = len(secret.encode("utf-8"))
                    problems.append(("secret", f"{size} bytes is too short for {algorithm}: {short}"))
                    break
        return problems, warnings
    if secret:
        problems.append(("secret", f"{others[0]} verifies with a publicKey (a PEM file), not a secret"))
    elif not keyPath:
        problems.append(("publicKey", f"required for {others[0]}: the path of a PEM file"))
    elif keyData is not None:
        for algorithm in others:
            try:
                verifier = get_algorithm_by_name(algorithm)
                key = verifier.prepare_key(keyData)
                short = verifier.check_key_length(key)
            except Exception as e:  # cryptography and PyJWT raise many kinds: report them all
                reason = str(e) or type(e).__name__
                problems.append(("publicKey", f'"{keyPath}" is not a key for {algorithm}: {reason}'))
                break
            if short:
                problems.append(("publicKey", f'"{keyPath}": {short}'))
                break
        else:
            if isPrivateKey(key):
                warnings.append(("publicKey", f'"{keyPath}" holds a private key: the server needs the public key only'))
    return problems, warnings


def parseAuth(
    sect: _Section, name: str, readFile: Callable[[str], bytes], credential: bool = False, source: bool = False
) -> AuthConfig:
    """
    Parse the auth object at C{sect[name]}, reporting its problems under
    their keys.

    @param readFile: reads a file (C{jwt}'s C{publicKey}), raising
        L{OSError}: L{wsserver.checks.readFile}; the parser itself does no
        I/O.
    @param credential: true for event targets, where combinations and
        remote checks make no sense.
    @param source: true for the C{source} of a C{remote} or C{jwt} check.
    """
    if not sect.has(name):
        if isinstance(sect, _IndexSection) and name in sect.raw:
            # a null inside oneOf/allOf must not become a "noauth" that lets everyone in
            sect.error(name, "must be an auth object, not null")
        return AuthConfig()
    a = sect.section(name)
    if not isinstance(sect.raw.get(name), dict):
        return AuthConfig()
    kind = a.str("type", "")
    if source:
        allowed: tuple[str, ...] = SOURCE_TYPES
    elif credential:
        allowed = ("noauth", "basic", "header", "bearer", "cookie")
    else:
        allowed = AUTH_TYPES
    if kind not in allowed:
        if kind == "" and "type" not in a.raw:
            a.error("type", "required")
        else:
            a.error("type", f"unknown auth type {json.dumps(kind)} (use one of: {', '.join(allowed)})")
        return AuthConfig()

    def required(field: str) -> str:
        if field not in a.raw:
            a.error(field, f'required for auth type "{kind}"')
            a.seen.add(field)
            return ""
        value = a.str(field, "")
        if not value and field != "user":
            a.error(field, "must not be empty")
        return value

    result = AuthConfig(type=kind)
    # what the chosen type reads is checked below; the others' fields are leftovers
    a.seen.update(f for f in AUTH_FIELDS if f in a.raw)
    if source:
        # where a remote or jwt check finds the credential: only names matter
        if kind in ("header", "cookie", "query"):
            result = replace(result, name=required("name"))
        a.seen.update(("value", "user", "password"))  # an auth object reused as is
        a.finish()
        return result
    if kind == "basic":
        user = required("user")
        if ":" in user:
            a.error("user", 'must not contain ":" (HTTP basic auth splits on it)')
        result = replace(result, user=user, password=required("password"))
    elif kind in ("header", "cookie"):
        result = replace(result, name=required("name"), value=required("value"))
    elif kind == "bearer":
        result = replace(result, value=required("value"))
    elif kind in ("oneOf", "allOf"):
        raw = a._get("types", None, lambda v: isinstance(v, list), "an array of auth objects")
        if not raw:
            if raw is not None:
                a.error("types", "must hold at least one auth object")
            elif "types" not in a.raw:
                a.error("types", f'required for auth type "{kind}"')
            raw = []
        items = _IndexSection({str(i): v for i, v in enumerate(raw)}, a.key("types"), a.problems, a.warnings)
        subs = [parseAuth(items, str(i), readFile) for i in range(len(raw))]
        result = replace(result, types=tuple(subs))
    elif kind == "remote":
        url = required("url")
        if url and not re.match(r"^https?://", url):
            a.error("url", f"must be an http:// or https:// URL, not {json.dumps(url)}")
        headers = []
        rawHeaders = a._get(
            "headers",
            [],
            lambda v: isinstance(v, list)
            and all(isinstance(h, dict) and all(isinstance(x, str) for x in h.values()) for h in v),
            'an array of objects such as {"X-Key": "value"}',
        )
        for h in rawHeaders:
            headers.extend(h.items())
        data = a._get("data", None, lambda v: v is None or isinstance(v, (str, dict)), "a string or an object")
        source = parseAuth(a, "source", readFile, source=True) if a.has("source") else None
        if source is None or source.type == "noauth":
            a.error("source", 'required for auth type "remote": an auth object saying where the credential is, '
                    'such as {"type": "cookie", "name": "session"}')
        result = replace(
            result,
            url=url,
            method=a.str("method", "POST").upper(),
            headers=tuple(headers),
            data=data,
            source=source,
            timeoutSeconds=a.number("timeoutSeconds", 10, 0.001),
        )
    elif kind == "jwt":
        result = _parseJwt(a, result, readFile)
    a.finish()
    return result


def _parseJwt(a: _Section, result: AuthConfig, readFile: Callable[[str], bytes]) -> AuthConfig:
    """
    The fields of a C{jwt} auth object.  The allowed algorithms come from
    here only, never from a token, and must suit the key given: an HMAC
    algorithm with a public key (whose text anyone may know, so anyone could
    sign with it as a secret), or a public-key algorithm with a secret, is an
    error; C{none} is never allowed.
    """
    algorithms: tuple[str, ...] = ()
    if "algorithms" not in a.raw:
        a.error("algorithms", 'required for auth type "jwt": the algorithms tokens are signed with, '
                'such as ["HS256"] or ["RS256"]')
        a.seen.add("algorithms")
    else:
        algorithms = a.strings("algorithms")
        if not algorithms and isinstance(a.raw["algorithms"], list):
            a.error("algorithms", "must list at least one algorithm")
    secret = a.str("secret", "")
    keyPath = a.str("publicKey", "")
    keyData = b""
    readable = True
    if keyPath:
        try:
            keyData = readFile(keyPath)
        except OSError as e:
            a.error("publicKey", f"cannot read {json.dumps(keyPath)}: {e.strerror}")
            readable = False
    if "secret" in a.raw and not secret:
        a.error("secret", "must not be empty")
    elif "publicKey" in a.raw and not keyPath:
        a.error("publicKey", "must not be empty")
    elif algorithms:
        problems, warnings = keyProblems(algorithms, secret, keyPath, keyData if readable else None)
        for name, why in problems:
            a.error(name, why)
        for name, why in warnings:
            a.warnings.append(f"{a.key(name)}: {why}")
    audience = a._get(
        "audience", [], lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "a string or an array of strings",
    )
    source = AuthConfig(type="bearer")
    if a.has("source"):
        before = len(a.problems)
        source = parseAuth(a, "source", readFile, source=True)
        if len(a.problems) == before and source.type not in ("bearer", "header", "cookie", "query"):
            a.problems.append(
                f"{a.key('source')}.type: a token is read from a bearer, header, cookie or query source, "
                f"not {json.dumps(source.type)}"
            )
    return replace(
        result,
        secret=secret,
        publicKey=keyPath,
        keyData=keyData,
        algorithms=algorithms,
        issuer=a.str("issuer", ""),
        audience=(audience,) if isinstance(audience, str) else tuple(audience),
        leewaySeconds=a.number("leewaySeconds", 0, 0),
        source=source,
    )
