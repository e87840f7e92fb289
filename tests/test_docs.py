"""
Tests for the documentation: the Sphinx site in C{docs/} builds with
warnings as errors (so a broken internal reference fails), its configuration
reference lists every key the code reads, and README stays a front page.
"""

from __future__ import annotations

import html
import json
import importlib.util
import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.rst")

#: The first lines of README, which C{.ci/run} takes its two commands from.
README_HEAD = """\
wsserver
========

Install and run the server on its built-in defaults (WebSocket on port 8085,
REST API on 127.0.0.1:8092)::

    python3 -m venv .venv && . .venv/bin/activate && pip install . && twistd -n wsserver

Install the test extras and run the tests::

    python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' && python -m twisted.trial tests
"""


def _extension():
    """
    The docs' local Sphinx extension, loaded from its file (C{docs/_ext} is
    no package).
    """
    path = os.path.join(DOCS, "_ext", "wsserver_config.py")
    spec = importlib.util.spec_from_file_location("wsserver_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildTests(SynchronousTestCase):
    """
    The site builds as CI builds it.
    """

    def build(self) -> str:
        """
        Build the site into a new directory with C{-W --keep-going -b html};
        fail with Sphinx's output on a non-zero exit.  Return the directory.
        """
        out = self.mktemp()
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
             "-d", out + ".doctrees", DOCS, out],
            capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            self.fail(f"sphinx-build exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return out

    def test_buildsWithoutWarnings(self) -> None:
        """
        C{sphinx-build -W} succeeds, writes a page for every document, and
        the configuration page names every key of the generated reference
        with its default.
        """
        out = self.build()
        for page in ("index", "configuration", "protocol", "rest", "auth", "limits", "events",
                     "inbox", "cluster", "client", "operations", "benchmarks", "migration",
                     "changelog", "layout"):
            self.assertTrue(os.path.exists(os.path.join(out, page + ".html")), page)
        with open(os.path.join(out, "configuration.html"), encoding="utf-8") as f:
            text = html.unescape(re.sub(r"<[^>]+>", "", f.read()))
        keys = _extension().configKeys()
        self.assertGreater(len(keys), 40)
        for key in keys:
            self.assertIn(key.key, text)
            self.assertIn(key.default, text)

    def test_internalLinksResolve(self) -> None:
        """
        Every link of the built site to one of its own pages or files leads
        to a file of the build, and to an anchor that page has: C{-W}
        catches a broken C{:ref:} or C{:doc:}, not a plain link such as
        C{`inbox <inbox.html#resuming>`_}.
        """
        out = self.build()
        pages = {}
        for name in os.listdir(out):
            if name.endswith(".html"):
                with open(os.path.join(out, name), encoding="utf-8") as f:
                    pages[name] = f.read()
        anchors = {name: set(re.findall(r'\bid="([^"]+)"', text)) for name, text in pages.items()}
        broken = []
        for name, text in sorted(pages.items()):
            for href in re.findall(r'href="([^"]+)"', text):
                href = html.unescape(href)
                if re.match(r"[a-z][a-z0-9+.-]*:", href):
                    continue  # http:, https:, mailto: (not the site's)
                path, _, fragment = href.split("?", 1)[0].partition("#")
                target = os.path.normpath(path) if path else name
                if not os.path.exists(os.path.join(out, target)):
                    broken.append(f"{name}: {href}")
                elif fragment and target in pages and fragment not in anchors[target]:
                    broken.append(f"{name}: {href}")
        self.assertGreater(sum(text.count("href=") for text in pages.values()), 500)
        self.assertEqual(broken, [])


class ConfigKeysTests(SynchronousTestCase):
    """
    The rows of the generated configuration reference.
    """

    def test_limitsWithDefaults(self) -> None:
        """
        A key is listed by its JSON path, with its type and its default as
        the code has them.
        """
        keys = {k.key: k for k in _extension().configKeys()}
        self.assertEqual(keys["server.limits.maxConnectionsPerUser"].default, "100")
        self.assertEqual(keys["server.limits.maxConnectionsPerUser"].type, "integer")
        self.assertEqual(keys["server.endpoint"].default, '"/chat"')
        self.assertEqual(keys["chat.message.enableDeliveryStatus"].default, "false")
        self.assertIn("cluster.nodeTimeoutSeconds", keys)

    def test_targetTypeKeys(self) -> None:
        """
        The keys of the target types that read their own (C{postgresql} ...)
        follow the keys every target has, each row naming its types; the
        internal C{options} is not listed.
        """
        keys = _extension().configKeys()
        rows = [(k.key, k.default, k.meaning.split(")")[0] + ")")
                for k in keys if k.key.startswith("event.targets[]")]
        names = [key for key, _, _ in rows]
        self.assertNotIn("event.targets[].options", names)
        self.assertIn(("event.targets[].table", '"wsserver_events"', "(``postgresql``, ``mysql``)"), rows)
        self.assertIn(("event.targets[].poolSize", "4", "(``postgresql``, ``mysql``)"), rows)
        self.assertIn(("event.targets[].routingKey", '"wsserver.events"', "(``amqp``)"), rows)
        self.assertIn(("event.targets[].ack", "false", "(``socket``)"), rows)
        self.assertEqual(names.count("event.targets[].dsn"), 2)
        self.assertEqual(names.count("event.targets[].address"), 3)
        self.assertLess(names.index("event.targets[].fallback"), names.index("event.targets[].dsn"))
        self.assertLess(names.index("event.targets[].ack"), [k.key for k in keys].index("event.presence"))
    def test_authKeys(self) -> None:
        """
        The auth objects (whose dataclass lives in L{wsserver.auth.config})
        are listed where the file has them, as auth objects that default to
        C{noauth}.
        """
        keys = {k.key: k for k in _extension().configKeys()}
        for key in ("server.auth", "restApi.auth", "event.targets[].auth"):
            self.assertEqual((keys[key].type, keys[key].default), ("auth object", '{"type": "noauth"}'), key)


class ReadmeTests(SynchronousTestCase):
    """
    README.rst is the front page: short, its two commands first, its links
    into C{docs/} alive.
    """

    def readme(self) -> str:
        with open(README, encoding="utf-8") as f:
            return f.read()

    def test_beginsWithTheTwoCommands(self) -> None:
        """
        README begins with the two commands that C{.ci/run} runs.
        """
        self.assertEqual(self.readme()[: len(README_HEAD)], README_HEAD)

    def test_atMost300Lines(self) -> None:
        """
        README stays a front page: at most 300 lines.
        """
        lines = self.readme().count("\n")
        self.assertLessEqual(lines, 300, f"README.rst has {lines} lines")

    def test_walkStopsTheFirstServer(self) -> None:
        """
        The walk's first step says to stop the server of README's first
        command: it still holds port 8085 and C{twistd.pid} in the checkout,
        so the walk's server would not start ("Another twistd server is
        running").
        """
        walk = self.readme().split("Five minutes with wsserver", 1)[1]
        first = walk[walk.index("**1. Start it**"):walk.index("twistd -n wsserver -C examples/config.json")]
        self.assertIn("Ctrl-C", first)

    def test_noNumberedSections(self) -> None:
        """
        README points at pages, never at a numbered section ("section 2")
        that the reader has no way to find.
        """
        self.assertEqual(re.findall(r"(?i)\bsection\s+\d+", self.readme()), [])

    def test_relativeLinksExist(self) -> None:
        """
        Every relative link of README names a file of the checkout, and a
        C{#part} of one names one of its sections (as GitHub writes the
        anchor of a title: lower case, spaces as dashes).
        """
        targets = re.findall(r"`[^`<]*<([^>`]+)>`_", self.readme())
        relative = [t for t in targets if "://" not in t and not t.startswith("#")]
        self.assertTrue(relative)
        for target in relative:
            path, _, part = target.partition("#")
            self.assertTrue(os.path.exists(os.path.join(ROOT, path)), target)
            if part:
                with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                    lines = f.read().splitlines()
                titles = [lines[i].strip() for i in range(len(lines) - 1)
                          if lines[i].strip() and re.fullmatch(r"([=\-~^])\1+", lines[i + 1].strip())]
                self.assertIn(part, [re.sub(r"[^a-z0-9 _-]", "", t.lower()).replace(" ", "-") for t in titles],
                              target)


class ExamplesTests(SynchronousTestCase):
    """
    The example configs work the way README and the docs use them.
    """

    def load(self, name: str):
        from wsserver.config import loadConfig

        return loadConfig(os.path.join(ROOT, "examples", name))

    def test_demoPageConnects(self) -> None:
        """
        With C{examples/config.json}, a browser on the demo page (its own
        origin, no credentials) passes the origin check and the auth, and a
        browser can open the dashboard (no REST auth, on loopback only).
        """
        config = self.load("config.json")
        port = 8085
        self.assertTrue(config.server.listen.startswith(f"tcp:{port}:"), config.server.listen)
        self.assertIn("interface=127.0.0.1", config.server.listen)
        self.assertIn(f"http://127.0.0.1:{port}", config.server.allowedOrigins)
        self.assertIn(f"http://localhost:{port}", config.server.allowedOrigins)
        self.assertEqual(config.server.auth.type, "noauth")
        self.assertTrue(config.server.demoPage)
        self.assertEqual(config.restApi.auth.type, "noauth")
        self.assertIn("interface=127.0.0.1", config.restApi.listen)
        self.assertTrue(config.chat.message.enableDeliveryStatus)
        self.assertTrue(config.chat.history.enabled)

    def test_productionDashboard(self) -> None:
        """
        C{examples/production.json} checks who connects, lets only its app's
        origin in, and has a REST auth a browser can send (basic), so that
        the dashboard opens.
        """
        with open(os.path.join(ROOT, "examples", "production.json"), encoding="utf-8") as f:
            text = f.read()
        # its secrets are placeholders, which the server refuses (tests.test_tap): replaced as the docs say
        for placeholder in ("change-me-as-well", "change-me-too", "change-me"):
            self.assertIn(f'"{placeholder}"', text)
            text = text.replace(f'"{placeholder}"', '"3f9c1e0a7b"')
        from wsserver.config import parseConfig

        config = parseConfig(json.loads(text))
        self.assertNotEqual(config.server.auth.type, "noauth")
        self.assertEqual(config.server.allowedOrigins, ("https://app.example.com",))
        self.assertEqual(config.restApi.auth.type, "basic")
        self.assertFalse(config.server.demoPage)


class LayoutTests(SynchronousTestCase):
    """
    C{docs/layout.rst} describes today's C{wsserver/}.
    """

    def layout(self) -> str:
        with open(os.path.join(DOCS, "layout.rst"), encoding="utf-8") as f:
            return f.read()

    def test_everyModuleNamed(self) -> None:
        """
        Every package and module of C{wsserver/} is named on the page.
        """
        text = self.layout()
        package = os.path.join(ROOT, "wsserver")
        missing = []
        for directory, dirs, files in os.walk(package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            relative = os.path.relpath(directory, package)
            if relative != ".":
                if f"``{relative}/``" not in text:
                    missing.append(relative + "/")
            for name in files:
                if name.endswith(".py") and name != "__init__.py" and f"``{name}``" not in text:
                    missing.append(os.path.join(relative, name))
        self.assertEqual(missing, [])

    def test_noStaleModule(self) -> None:
        """
        Every module the page names exists (the page once named modules the
        reshaping had removed: C{routing.py}, C{peers.py}, C{storage.py}).
        """
        names = set(re.findall(r"``([A-Za-z_]\w*\.py)``", self.layout()))
        existing = set()
        for directory, _, files in os.walk(ROOT):
            existing.update(files)
        self.assertEqual(sorted(names - existing), [])
        self.assertNotIn("To be updated", self.layout())


class ClientDocsTests(SynchronousTestCase):
    """
    C{docs/client.rst} (the reference) and C{clients/js/README.md} (the npm
    package's page, a summary linking to it) agree with the library's
    declarations, C{clients/js/wsserver.d.ts}.
    """

    def read(self, *path: str) -> str:
        with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
            return f.read()

    def test_optionsAndEvents(self) -> None:
        """
        Every option, event and status field that C{wsserver.d.ts} declares
        is in C{docs/client.rst}.
        """
        declarations = self.read("clients", "js", "wsserver.d.ts")
        page = self.read("docs", "client.rst")
        options = re.search(r"interface ConnectOptions \{(.*?)\n\}", declarations, re.S).group(1)
        events = re.search(r"interface EventMap \{(.*?)\n\}", declarations, re.S).group(1)
        status = re.search(r"type Status =(.*?);\n", declarations, re.S).group(1)
        names = set(re.findall(r"^  (\w+)\??:", options + "\n" + events, re.M))
        names |= set(re.findall(r"(\w+)\??:", status)) | set(re.findall(r'state: "(\w+)"', status))
        self.assertGreater(len(names), 20)
        self.assertEqual(sorted(n for n in names if f"``{n}``" not in page), [])

    def test_readmeLinksToThePage(self) -> None:
        """
        The package's README links to the reference, and uses only the
        events the reference names.
        """
        readme = self.read("clients", "js", "README.md")
        page = self.read("docs", "client.rst")
        self.assertIn("(../../docs/client.rst)", readme)
        for event in re.findall(r'client\.on\("(\w+)"', readme):
            self.assertIn(f'client.on("{event}"', page)
        for word in ("401", "HTTP 403/401"):
            self.assertNotIn(word, readme)
