# -*- test-case-name: tests.test_protocol -*-
"""
The answers to a plain HTTP request (no WebSocket upgrade) on the WebSocket
port: the demo chat page at C{/} (when C{server.demoPage}), the client
library at C{/wsserver.js} (always; with an ETag, and 304 when the browser
already has it), 404 elsewhere.

C{wsserver/web/wsserver.js} is a symbolic link to C{clients/js/wsserver.js}
(the npm package's, where it is edited and tested; npm leaves links out of
a package, so the link goes this way): an editable install reads through
it, and a wheel holds the file's bytes (setuptools copies what the link
names).  C{tests/test_assets.py} checks that the two are the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from hashlib import sha256
from importlib.resources import files

__all__ = ["CLIENT_LIBRARY_PATH", "DEMO_PAGE_HEADERS", "NOT_FOUND", "PlainResponse", "StaticFile", "clientLibrary",
           "demoPage"]

#: Where the WebSocket port serves the client library.
CLIENT_LIBRARY_PATH = "/wsserver.js"


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
        (A 304 has no body, and no length but the 200's: neither is sent.)
        """
        content = [] if self.code == 304 else [
            ("Content-Type", self.contentType),
            ("Content-Length", str(len(self.body))),
        ]
        return [*content, *self.headers, ("Connection", "close")]


NOT_FOUND = PlainResponse(404, "Not Found", "text/plain; charset=utf-8", b"Not Found\n")

#: The headers of the demo page: it runs its own inline script and the
#: client library from its own origin, connects to its own origin only, in
#: no frame.
DEMO_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
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


#: The client library's headers besides its ETag: any site may import it
#: (a module script from another origin needs CORS; the file is public and
#: no credential goes with it); revalidated on each use (a 304 without a
#: body), so that a page gets the new version as soon as the server has it.
LIBRARY_HEADERS = (
    ("Cache-Control", "no-cache"),
    ("Access-Control-Allow-Origin", "*"),
    ("X-Content-Type-Options", "nosniff"),
)


def _matches(ifNoneMatch: str, etag: str) -> bool:
    """
    Whether an C{If-None-Match} header names C{etag} (weak comparison, as
    RFC 9110 section 13.1.2 has it for this header) or is C{*}.
    """
    for candidate in ifNoneMatch.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@dataclass(frozen=True)
class StaticFile:
    """
    A file served as it is, with a strong ETag from its content.
    """

    body: bytes
    contentType: str
    headers: tuple[tuple[str, str], ...] = ()

    @cached_property
    def etag(self) -> str:
        return '"' + sha256(self.body).hexdigest()[:32] + '"'

    @cached_property
    def _ok(self) -> PlainResponse:
        return PlainResponse(200, "OK", self.contentType, self.body, (("ETag", self.etag), *self.headers))

    @cached_property
    def _notModified(self) -> PlainResponse:
        return PlainResponse(304, "Not Modified", self.contentType, b"", (("ETag", self.etag), *self.headers))

    def answer(self, ifNoneMatch: str | None) -> PlainResponse:
        """
        200 with the file, or 304 with no body when C{ifNoneMatch} (the
        request's C{If-None-Match}, if any) names it.
        """
        if ifNoneMatch is not None and _matches(ifNoneMatch, self.etag):
            return self._notModified
        return self._ok


def clientLibrary() -> StaticFile:
    """
    The client library, read once from the package data.
    """
    body = files("wsserver").joinpath("web", "wsserver.js").read_bytes()
    return StaticFile(body, "text/javascript", LIBRARY_HEADERS)
