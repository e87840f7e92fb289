# -*- test-case-name: tests.test_jwt -*-
"""
The C{jwt} auth type (SPEC section 5): a signed token, verified with PyJWT.

The algorithms a token may use come from the config only, and one config
holds one kind of key: an HMAC secret for C{HS*}, or a PEM public key for
C{RS*}, C{PS*}, C{ES*} and C{EdDSA}.  So a token cannot choose how it is
checked (signing an C{HS256} token with the public key as the HMAC secret
gets nowhere), and C{none} is never allowed.

PyJWT checks the signature, the algorithm, C{iss}, C{aud}, and that C{exp}
(and on the WebSocket C{sub}) are present.  The times (C{exp}, C{nbf},
C{iat}) are compared here, on the server's clock, because PyJWT reads the
wall clock itself: with the injected clock, the check at connect time and
the timer that closes the connection when the token expires agree, and both
can be tested with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from jwt import PyJWT, PyJWTError, get_algorithm_by_name
from jwt.algorithms import get_default_algorithms
from twisted.internet.interfaces import IReactorTime

from ..config import AuthConfig
from ..logflood import PeerLogger
from ._base import Authenticator, Credentials, Grant, credentialFrom

__all__ = ["JWTAuthenticator", "keyProblems"]

#: a token is a remote peer's: the lines are held to one a second per kind
_log = PeerLogger()


def _isHMAC(algorithm: str) -> bool:
    return algorithm.startswith("HS")


def _known() -> list[str]:
    """
    The algorithms this PyJWT (with C{cryptography}) can verify, C{none}
    left out.
    """
    return [name for name in get_default_algorithms() if name != "none"]


def _isPrivate(key: Any) -> bool:
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
            if _isPrivate(key):
                warnings.append(("publicKey", f'"{keyPath}" holds a private key: the server needs the public key only'))
    return problems, warnings


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class JWTAuthenticator(Authenticator):
    """
    Passes a request whose token verifies; its L{Grant} carries the token's
    C{sub} and the time it expires (C{exp} plus C{leewaySeconds}).

    @param config: a C{jwt} auth object, checked by the config parser.
    @param clock: the clock that C{exp}, C{nbf} and C{iat} are compared on.
    @param subjectRequired: refuse tokens without C{sub} (the WebSocket's
        case, where C{sub} is the user).
    @raise ValueError: when C{config} has no usable key.
    """

    _authType = "jwt"

    def __init__(self, config: AuthConfig, clock: IReactorTime, subjectRequired: bool = False) -> None:
        if not config.algorithms:
            raise ValueError("auth type jwt: no algorithms")
        problems, _ = keyProblems(config.algorithms, config.secret, config.publicKey, config.keyData)
        if problems:
            raise ValueError("auth type jwt: " + "; ".join(f"{name}: {why}" for name, why in problems))
        self._algorithms = list(config.algorithms)
        key: Any
        if config.secret:
            key = config.secret.encode("utf-8")
        else:
            key = get_algorithm_by_name(self._algorithms[0]).prepare_key(config.keyData)
            if _isPrivate(key):
                key = key.public_key()
        self._key = key
        self._source = config.source or AuthConfig(type="bearer")
        self._clock = clock
        self._leeway = config.leewaySeconds
        self._issuer = config.issuer or None
        self._audience = list(config.audience) or None
        self.givesUserId = subjectRequired
        self._decoder = PyJWT()
        self._options: Any = {
            "require": ["exp", "sub"] if subjectRequired else ["exp"],
            # compared below, on the injected clock
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            # a user id may be given as a JSON number too: checked below
            "verify_sub": False,
            "enforce_minimum_key_length": True,
        }

    def _refuse(self, reason: str) -> None:
        _log.info("jwt refused: {reason}", reason=reason)
        return None

    def _check(self, credentials: Credentials) -> Grant | None:
        token = credentialFrom(self._source, credentials)
        if token is None:
            return None
        try:
            claims = self._decoder.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options=self._options,
            )
        except PyJWTError as e:
            return self._refuse(str(e) or type(e).__name__)
        now = self._clock.seconds()
        leeway = self._leeway
        exp = claims["exp"]
        if not _number(exp):
            return self._refuse("exp must be a number")
        if exp + leeway <= now:
            return self._refuse("token expired")
        for name in ("nbf", "iat"):
            if name in claims:
                value = claims[name]
                if not _number(value):
                    return self._refuse(f"{name} must be a number")
                if value > now + leeway:
                    return self._refuse(f"token not yet valid ({name})")
        subject = claims.get("sub")
        if subject is not None:
            if isinstance(subject, bool) or not isinstance(subject, (str, int)):
                return self._refuse("sub must be a string or an integer")
            subject = str(subject)
        return Grant(subject=subject, expires=exp + leeway)
