# -*- test-case-name: tests.test_auth -*-
"""
Authentication (SPEC section 5): whether a request may pass, and the
credential the server itself sends.

The checks live in small private modules: L{wsserver.auth._base} (the
credentials of a request, the header, cookie, combination and C{remote}
checks, the credentials the server sends) and L{wsserver.auth._jwt} (signed
tokens).  Import them from here.
"""

from ._base import Authenticator, Credentials, Grant, applyCredential, buildAuthenticator, credentialFrom

__all__ = [
    "Authenticator",
    "Credentials",
    "Grant",
    "applyCredential",
    "buildAuthenticator",
    "credentialFrom",
]
