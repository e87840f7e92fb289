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

from wsserver.connection.pages import StaticFile, clientLibrary, demoPage

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
        The package data (C{wsserver/web/wsserver.js}, in the tree a link to
        C{clients/js/wsserver.js}; a wheel holds the file) is
        C{clients/js/wsserver.js}, byte for byte.
        """
        self.assertEqual(clientLibrary().body, _read(CLIENT, "wsserver.js"))

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

    def test_licenseShipped(self) -> None:
        """
        The package carries the project's license text (npm publishes the
        package's folder, which the checkout's C{LICENSE} is not in), and
        says so in C{files}.
        """
        package = json.loads(_read(CLIENT, "package.json"))
        self.assertIn("LICENSE", package["files"])
        self.assertEqual(_read(CLIENT, "LICENSE"), _read(ROOT, "LICENSE"), "cp LICENSE clients/js/")

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


def _block(text: str, opening: str) -> str:
    """
    The body of the brace block that starts with C{opening} in C{text}
    (braces counted, so nested blocks are inside).
    """
    start = text.index(opening)
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    raise ValueError(opening)


class DeclarationsMatchTests(SynchronousTestCase):
    """
    C{wsserver.d.ts} declares what C{wsserver.js} does, name for name: an
    option the library reads and the types lack is a type error in every
    TypeScript app that passes it, and a declared one it ignores is a lie.
    """

    def setUp(self) -> None:
        self.source = clientLibrary().body.decode()
        self.types = _read(CLIENT, "wsserver.d.ts").decode()

    def test_options(self) -> None:
        """
        C{ConnectOptions} names every option the library reads
        (C{options.X} and the numeric knobs of C{DEFAULTS}), and no other.
        """
        read = set(re.findall(r"\boptions\.(\w+)", self.source))
        read |= set(re.findall(r"^  (\w+): \d+,", _block(self.source, "const DEFAULTS"), re.M))
        declared = set(re.findall(r"^  (\w+)\??:", _block(self.types, "interface ConnectOptions"), re.M))
        self.assertGreater(len(read), 10)
        self.assertEqual(sorted(read), sorted(declared))

    def test_events(self) -> None:
        """
        C{EventMap} names every event the library emits, and no other.
        """
        emitted = set(re.findall(r'_emit\("(\w+)"', self.source))
        declared = set(re.findall(r"^  (\w+):", _block(self.types, "interface EventMap"), re.M))
        self.assertEqual(sorted(emitted), sorted(declared))
        self.assertEqual(emitted, {"message", "status", "delivered", "presence", "gap"})

    def test_statuses(self) -> None:
        """
        The C{Status} union has one member per state the library reports,
        each with the fields the library gives it.
        """
        given = {}
        for state, extra in re.findall(r'_status\("(\w+)", [^{]*\{([^}]*)\}', self.source):
            fields = {"state", "code", "reason"}
            for part in extra.split(","):
                part = part.strip()
                if part:
                    fields.add(part.split(":")[0].strip())
            given.setdefault(state, set()).update(fields)
        union = self.types[self.types.index("export type Status ="):]
        union = union[:union.index("};\n") + 1]
        declared = {}
        for member in re.split(r"\n  \| ", union)[1:]:
            state = re.search(r'state: "(\w+)"', member).group(1)  # type: ignore[union-attr]
            declared[state] = set(re.findall(r"(\w+)\??:", re.sub(r"/\*\*.*?\*/", "", member, flags=re.S)))
        self.assertEqual(sorted(given), ["connecting", "offline", "online", "stopped"])
        self.assertEqual(given, declared)

    def test_clientMembers(self) -> None:
        """
        C{class Client} declares every public method, getter and property of
        the library's (names without C{_}), and no other.
        """
        body = _block(self.source, "export class Client")
        members = set(re.findall(r"^  (?:get )?([a-z]\w*)\(", body, re.M)) - {"constructor"}
        members |= set(re.findall(r"^    this\.([a-z]\w*) =", body, re.M))
        declared = set(re.findall(r"^  (?:readonly )?([a-z]\w*)[(<:?]", _block(self.types, "export class Client"), re.M))
        declared -= {"constructor"}
        self.assertEqual(sorted(members), sorted(declared))
        self.assertEqual({"on", "off", "send", "close", "pending"} - members, set())

    def test_constructors(self) -> None:
        """
        The classes' constructors take the parameters the library's take,
        by name and in order (C{new SendError(message, code, reason)}).
        """
        for name in ("Client", "SendError"):
            body = _block(self.source, f"export class {name}")
            given = re.search(r"^  constructor\(([^)]*)\)", body, re.M).group(1)  # type: ignore[union-attr]
            declared = re.search(r"^  constructor\(([^)]*)\)", _block(self.types, f"export class {name}"), re.M)
            self.assertIsNotNone(declared, f"{name} declares no constructor")
            names = [p.split("=")[0].strip() for p in given.split(",") if p.strip()]
            self.assertEqual([p.split(":")[0].strip(" ?") for p in declared.group(1).split(",") if p.strip()],  # type: ignore[union-attr]
                             names, name)


class DemoPageUsesTheLibraryTests(SynchronousTestCase):
    """
    The demo page is an app of the client library, not a second copy of
    its logic.
    """

    def test_importsTheLibrary(self) -> None:
        """
        The page's one module script imports C{connect} from the server's
        C{/wsserver.js}, and does none of what the library does: no
        WebSocket of its own, no backoff timer, no C{since} in an address,
        no handling of C{message_ack} or C{history_gap}.
        """
        page = demoPage("/chat").body.decode("utf-8")
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
        self.assertEqual([attributes for attributes, _ in scripts], [' type="module"'])
        script = scripts[0][1]
        self.assertIn('import { connect } from "/wsserver.js";', script)
        self.assertIn("connect({url: ENDPOINT", script)
        for copy in ("WebSocket(", "setTimeout", "setInterval", "since=", "message_ack", "history_gap",
                     "notification_received", "Math.pow", "onclose"):
            self.assertNotIn(copy, script)
