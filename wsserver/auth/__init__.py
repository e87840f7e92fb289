# -*- test-case-name: tests.test_auth -*-
"""
Authentication (SPEC section 5): whether a request may pass, and the
credential the server itself sends.

The checks live in small private modules: L{wsserver.auth._base} (the
credentials of a request, the header, cookie, combination and C{remote}
checks, the credentials the server sends), L{wsserver.auth._jwt} (signed
tokens) and L{wsserver.auth.build} (a config to its check).  Import them
from here.  The auth objects of the configuration and their parser are in
L{wsserver.auth.config}, which imports none of them.
"""

from ._base import Authenticator, Credentials, Grant, applyCredential, credentialFrom
from .build import buildAuthenticator

__all__ = [
    "Authenticator",
    "Credentials",
    "Grant",
    "applyCredential",
    "buildAuthenticator",
    "credentialFrom",
]
