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
from typing import Any

from jwt import PyJWT, PyJWTError, get_algorithm_by_name
from twisted.internet.interfaces import IReactorTime

from ..logflood import PeerLogger
from ._base import Authenticator, Credentials, Grant, credentialFrom
from .config import AuthConfig, isPrivateKey, keyProblems

__all__ = ["JWTAuthenticator"]

#: a token is a remote peer's: the lines are held to one a second per kind
_log = PeerLogger()


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
            if isPrivateKey(key):
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
