# -*- test-case-name: tests.test_auth,tests.test_jwt -*-
"""
L{buildAuthenticator}: an L{AuthConfig} to its L{Authenticator}.

It lives apart from the checks so that the imports go one way: this module
imports L{wsserver.auth._base} (the checks) and L{wsserver.auth._jwt} (signed
tokens, built on the base), and neither imports it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from treq.client import HTTPClient

from ._base import (
    _CREDENTIAL_TYPES,
    Authenticator,
    _Basic,
    _Bearer,
    _Combination,
    _Cookie,
    _Header,
    _NoAuth,
    _Remote,
)
from ._jwt import JWTAuthenticator
from .config import AuthConfig

__all__ = ["buildAuthenticator"]


def _globalReactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor  # type: ignore[return-value]


def buildAuthenticator(
    config: AuthConfig,
    httpClient: HTTPClient | None = None,
    reactor: IReactorTime | None = None,
    subjectRequired: bool = False,
) -> Authenticator:
    """
    The L{Authenticator} that C{config} describes.

    @param config: the auth object.
    @param httpClient: what C{remote} checks send their requests with: an
        L{HTTPClient}, or anything with its C{request} method, such as
        L{treq.testing.StubTreq}.  If L{None}, the C{treq} module's own
        functions are used.
    @param reactor: the clock that C{remote} timeouts run on and C{jwt}
        times are compared on; if L{None}, the global reactor.  Neither is
        used by other types.
    @param subjectRequired: C{jwt} tokens must have a C{sub} (the
        WebSocket's auth, where it is the user).
    @raise ValueError: when C{config} cannot be used (an unknown type, an
        empty combination, a C{remote} without a usable C{source}, a C{jwt}
        without a usable key).
    """
    kind = config.type
    if kind == "noauth":
        return _NoAuth()
    if kind == "basic":
        return _Basic(config.user, config.password)
    if kind == "header":
        return _Header(config.name, config.value)
    if kind == "bearer":
        return _Bearer(config.value)
    if kind == "cookie":
        return _Cookie(config.name, config.value)
    if kind in ("oneOf", "allOf"):
        if not config.types:
            raise ValueError(f"auth type {kind} needs at least one auth object")
        return _Combination(
            kind, [buildAuthenticator(t, httpClient, reactor, subjectRequired) for t in config.types]
        )
    if kind == "remote":
        if config.source is None or config.source.type not in _CREDENTIAL_TYPES:
            raise ValueError(
                "auth type remote needs a source of type " + ", ".join(_CREDENTIAL_TYPES)
            )
        if httpClient is None:
            import treq

            httpClient = treq  # type: ignore[assignment]
        assert httpClient is not None
        return _Remote(config, httpClient, reactor or _globalReactor())
    if kind == "jwt":
        return JWTAuthenticator(config, reactor or _globalReactor(), subjectRequired)
    raise ValueError(f"unknown auth type {kind!r}")
