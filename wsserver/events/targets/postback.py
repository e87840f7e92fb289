# -*- test-case-name: tests.test_events -*-
"""
The C{postback} event target (SPEC section 6): each event payload as the
body of an HTTP request to the target's C{url}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from ...auth import applyCredential
from ..config import TargetConfig
from ...httpbody import readBody
from .. import DeliveryRefused, ISender

__all__ = ["PostbackSender"]


def _reason(failure: Failure) -> str:
    """
    Why a response body could not be read, in a few words.
    """
    return failure.getErrorMessage() or (failure.type.__name__ if failure.type else "error")


@implementer(ISender)
class PostbackSender:
    """
    A webhook: the message JSON as the body of an HTTP request; success is a
    2xx answer, body included, within C{connectionTimeoutSeconds} (a body
    still arriving then is cut and the delivery fails).  Redirects are not
    followed (a redirect is not an acceptance).

    @param target: the target's config.
    @param httpClient: a treq C{HTTPClient} (or L{treq.testing.StubTreq}).
    @param reactor: the clock of the timeout.
    """

    def __init__(self, target: TargetConfig, httpClient: Any, reactor: IReactorTime) -> None:
        self._target = target
        self._client = httpClient
        self._reactor = reactor
        raw: dict[bytes, list[bytes]] = {b"Content-Type": [b"application/json"]}
        applyCredential(target.auth, raw)
        self._headers = raw

    def send(self, payload: bytes) -> Deferred[None]:
        target = self._target
        timeout = target.connectionTimeoutSeconds
        started = self._reactor.seconds()
        d = self._client.request(
            target.method,
            target.url,
            data=payload,
            headers=Headers(self._headers),
            timeout=timeout,
            reactor=self._reactor,
            allow_redirects=False,
            unbuffered=True,
        )

        def answered(response: Any) -> Deferred[None]:
            # read the body (so that the connection goes back to the pool),
            # within what is left of the timeout: the answer is not complete
            # before it is
            body = readBody(response, self._reactor, timeout, started)

            def check(result: bytes | Failure) -> None:
                if not 200 <= response.code < 300:
                    raise DeliveryRefused(f"HTTP {response.code}")
                if isinstance(result, Failure):
                    raise DeliveryRefused(f"HTTP {response.code}, but {_reason(result)}")

            return body.addBoth(check)

        return d.addCallback(answered)

    def close(self) -> Deferred[None]:
        return succeed(None)
