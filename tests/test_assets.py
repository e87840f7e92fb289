"""
The client library as the package ships it (L{wsserver.connection.pages}): one source
(C{clients/js/wsserver.js}, the npm package's), the same bytes in the Python
package, one version everywhere.
"""

from __future__ import annotations

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from wsserver.connection.pages import StaticFile, clientLibrary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "clients", "js")


def _read(*path: str) -> bytes:
    with open(os.path.join(*path), "rb") as f:
        return f.read()


class ClientLibraryFileTests(SynchronousTestCase):
    """
    What C{GET /wsserver.js} serves is what npm publishes.
    """

    def test_sameAsTheNpmPackage(self) -> None:
        """
        The package data copy (C{wsserver/web/wsserver.js}) is
        C{clients/js/wsserver.js}, byte for byte: after editing the
        library, copy it (C{cp clients/js/wsserver.js wsserver/web/}).
        """
        self.assertEqual(clientLibrary().body, _read(CLIENT, "wsserver.js"),
                         "cp clients/js/wsserver.js wsserver/web/wsserver.js")

    def test_ascii(self) -> None:
        """
        The library is ASCII: served as C{text/javascript} with no charset,
        it reads the same whatever a browser assumes.
        """
        clientLibrary().body.decode("ascii")

    def test_oneVersion(self) -> None:
        """
        The npm package's version and the library's C{VERSION} are the
        server's (C{setup.py}).
        """
        server = re.search(rb'version="([^"]+)"', _read(ROOT, "setup.py")).group(1).decode()  # type: ignore[union-attr]
        package = json.loads(_read(CLIENT, "package.json"))
        self.assertEqual(package["version"], server)
        self.assertIn(f'export const VERSION = "{server}";'.encode(), clientLibrary().body)

    def test_packageForNpm(self) -> None:
        """
        C{package.json} names the module and its types, exports them, and
        ships the files they name.
        """
        package = json.loads(_read(CLIENT, "package.json"))
        self.assertEqual((package["type"], package["license"], package["types"]), ("module", "MIT", "./wsserver.d.ts"))
        self.assertEqual(package["exports"]["."], {"types": "./wsserver.d.ts", "default": "./wsserver.js"})
        for name in package["files"]:
            self.assertTrue(os.path.isfile(os.path.join(CLIENT, name)), name)

    def test_typesName(self) -> None:
        """
        The declarations name each export of the module.
        """
        source = clientLibrary().body.decode()
        types = _read(CLIENT, "wsserver.d.ts").decode()
        exported = set(re.findall(r"^export (?:const|function|class) (\w+)", source, re.M))
        self.assertEqual(exported, {"VERSION", "connect", "SendError", "Client"})
        for name in exported:
            self.assertRegex(types, rf"export (?:const|function|class) {name}\b")


class StaticFileTests(SynchronousTestCase):
    """
    L{StaticFile}: 200 with an ETag, 304 when the browser has it.
    """

    def test_etagFromContent(self) -> None:
        """
        The ETag is strong and follows the content.
        """
        one, two = StaticFile(b"a", "text/plain"), StaticFile(b"b", "text/plain")
        self.assertRegex(one.etag, r'^"[0-9a-f]{32}"$')
        self.assertNotEqual(one.etag, two.etag)
        self.assertEqual(one.etag, StaticFile(b"a", "text/plain").etag)

    def test_answers(self) -> None:
        """
        No or another C{If-None-Match}: 200, the body, the ETag first then
        the file's headers; a match: 304, no body, the same headers.
        """
        f = StaticFile(b"body", "text/plain", (("Cache-Control", "no-cache"),))
        for given in (None, "", '"x"', 'W/"x", "y"'):
            answer = f.answer(given)
            self.assertEqual((answer.code, answer.body), (200, b"body"), given)
            self.assertEqual(answer.headers, (("ETag", f.etag), ("Cache-Control", "no-cache")))
        for given in (f.etag, f"W/{f.etag}", f' "x" ,{f.etag}', "*"):
            answer = f.answer(given)
            self.assertEqual((answer.code, answer.reason, answer.body), (304, "Not Modified", b""), given)
            self.assertEqual(answer.headers, (("ETag", f.etag), ("Cache-Control", "no-cache")))
