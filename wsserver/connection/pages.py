# -*- test-case-name: tests.test_protocol -*-
"""
The answers to a plain HTTP request (no WebSocket upgrade) on the WebSocket
port: the demo chat page at C{/} (when C{server.demoPage}), 404 elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files

__all__ = ["DEMO_PAGE_HEADERS", "NOT_FOUND", "PlainResponse", "demoPage"]


@dataclass(frozen=True)
class PlainResponse:
    """
    An answer to a plain HTTP request on the WebSocket port.
    """

    code: int
    reason: str
    contentType: str
    body: bytes
    #: more headers, besides the type, the length and C{Connection: close}
    headers: tuple[tuple[str, str], ...] = ()

    def allHeaders(self) -> list[tuple[str, str]]:
        """
        Every header of the answer, in order; the connection closes after it.
        """
        return [
            ("Content-Type", self.contentType),
            ("Content-Length", str(len(self.body))),
            *self.headers,
            ("Connection", "close"),
        ]


NOT_FOUND = PlainResponse(404, "Not Found", "text/plain; charset=utf-8", b"Not Found\n")

#: The headers of the demo page: it runs its own inline script and connects
#: to its own origin only, in no frame.
DEMO_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def demoPage(endpoint: str) -> PlainResponse:
    """
    The demo chat page (a package data file) for the WebSocket path
    C{endpoint}.
    """
    # in a <script>, JSON is JavaScript; "<" escaped so no "</script>" ends it
    literal = json.dumps(endpoint).replace("<", "\\u003c")
    page = files("wsserver").joinpath("web", "demo.html").read_text("utf-8")
    body = page.replace("__WSSERVER_ENDPOINT__", literal).encode("utf-8")
    return PlainResponse(200, "OK", "text/html; charset=utf-8", body, DEMO_PAGE_HEADERS)
