"""
Tests for the layout of the C{wsserver} package: no import circle, and the
configuration's parts importing one way only.

The imports are read from the source with L{ast}, every one of them: at the
top of a module, inside functions (lazy imports), and under
C{if TYPE_CHECKING:} alike, because each can close a circle (a lazy one only
later, at the first call).  Importing C{a.b.c} runs the packages C{a} and
C{a.b} too, so an import counts as an import of the packages above its
target as well (those that do not contain the importing module, which are
running already).
"""

from __future__ import annotations

import ast
import os
from collections import deque

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "wsserver")


def modules(package: str) -> dict[str, str]:
    """
    The modules of the package in the directory C{package}: dotted names
    (a package by the name of its directory) to their files.
    """
    parent = os.path.dirname(package)
    found = {}
    for directory, subdirectories, files in os.walk(package):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, parent)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def importGraph(package: str) -> dict[str, set[str]]:
    """
    Which modules of C{package} each of its modules imports, at any level
    (see the module's docstring).
    """
    found = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        isPackage = os.path.basename(path) == "__init__.py"
        here = name.split(".") if isPackage else name.split(".")[:-1]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        targets: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # "from package import name": name may be a module
                targets.append(module)
                targets.extend(f"{module}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in found and prefix != name and not name.startswith(prefix + "."):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The import circles of C{graph}: one for each group of modules that
    import each other, as a path C{[a, b, ..., a]}.
    """
    # Tarjan's strongly connected components, without recursion
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        onStack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    onStack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in onStack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        onStack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)
    return [_path(graph, group) for group in groups]


def _path(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """
    A shortest circle through the first module of C{group}.
    """
    first = min(group)
    came: dict[str, str] = {}
    queue = deque([first])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & group):
            if child == first:
                path = [node]
                while path[-1] != first:
                    path.append(came[path[-1]])
                return [first, *reversed(path[:-1]), first]
            if child not in came:
                came[child] = node
                queue.append(child)
    raise AssertionError(f"no circle in {group}")


class ImportCircleTests(SynchronousTestCase):
    """
    L{importGraph} and L{circles} find every import circle, lazy imports
    included, and C{wsserver} has none.
    """

    def package(self, files: dict[str, str]) -> str:
        """
        Write a package C{pkg} of C{files} (paths relative to it, to their
        source) into a new directory; return the package's directory.
        """
        package = os.path.join(self.mktemp(), "pkg")
        for relative, source in {"__init__.py": "", **files}.items():
            path = os.path.join(package, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
        return package

    def test_noCircleInWsserver(self) -> None:
        """
        No import circle in wsserver, counting lazy imports too.
        """
        found = circles(importGraph(PACKAGE))
        self.assertEqual(found, [], "\n".join(" -> ".join(c) for c in found))

    def test_lazyCircle(self) -> None:
        """
        An import inside a function closes a circle as well as one at the
        top of the module does.
        """
        package = self.package({
            "a.py": "from .b import B\n",
            "b.py": "B = 1\n\ndef f():\n    from . import a\n    return a\n",
            "c.py": "from . import a\n",
        })
        self.assertEqual(circles(importGraph(package)), [["pkg.a", "pkg.b", "pkg.a"]])

    def test_absoluteAndTypeChecking(self) -> None:
        """
        Absolute imports count, and so do those under C{TYPE_CHECKING}.
        """
        package = self.package({
            "a.py": "import pkg.b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
        })
        self.assertEqual(circles(importGraph(package)), [["pkg.a", "pkg.b", "pkg.a"]])

    def test_throughPackage(self) -> None:
        """
        Importing a module of a package runs the package's C{__init__}: a
        circle through it is found.
        """
        package = self.package({
            "config.py": "from .auth.config import AuthConfig\n",
            "auth/__init__.py": "from ._base import check\n",
            "auth/config.py": "AuthConfig = object\n",
            "auth/_base.py": "from ..config import Config\n",
        })
        self.assertEqual(circles(importGraph(package)), [["pkg.auth", "pkg.auth._base", "pkg.config", "pkg.auth"]])
        # a package's own modules importing each other through it is no circle
        package = self.package({
            "auth/__init__.py": "from ._base import check\nfrom .build import build\n",
            "auth/_base.py": "check = 1\n",
            "auth/build.py": "from ._base import check\nfrom . import _base\n",
        })
        self.assertEqual(circles(importGraph(package)), [])


def reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """
    The modules that importing C{start} imports, directly or not.
    """
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


#: The modules that own a section of the configuration, and what each
#: imports of wsserver: the shared machinery, the sections it holds, and
#: modules of its own package; never L{wsserver.config}, which composes them.
SECTIONS = {
    "wsserver.auth.config": {"wsserver.configschema"},
    "wsserver.chatconfig": {
        "wsserver.configschema", "wsserver.history", "wsserver.history.config", "wsserver.queue",
        "wsserver.queue.config",
    },
    "wsserver.clusterconfig": {"wsserver.configschema", "wsserver.redis", "wsserver.redis.address"},
    "wsserver.events.config": {
        "wsserver.configschema", "wsserver.auth", "wsserver.auth.config", "wsserver.events.targets",
        "wsserver.events.targets.types",
    },
    "wsserver.history.config": {"wsserver.configschema"},
    "wsserver.limitsconfig": {"wsserver.configschema"},
    "wsserver.queue.config": {"wsserver.configschema"},
    "wsserver.serverconfig": {
        "wsserver.configschema", "wsserver.auth", "wsserver.auth.config", "wsserver.limitsconfig", "wsserver.proxy",
    },
}


class ConfigLayoutTests(SynchronousTestCase):
    """
    The configuration's parts import one way: the shared machinery nothing
    of wsserver, each section's owner never the configuration module.
    """

    def setUp(self) -> None:
        self.graph = importGraph(PACKAGE)

    def test_configschemaStandsAlone(self) -> None:
        """
        L{wsserver.configschema} imports nothing of wsserver.
        """
        self.assertEqual(self.graph["wsserver.configschema"], set())

    def test_authConfigOnlySchema(self) -> None:
        """
        L{wsserver.auth.config} imports only the shared machinery (so that
        the configuration can import it without importing the checks).
        """
        self.assertEqual(self.graph["wsserver.auth.config"], {"wsserver.configschema"})

    def test_sectionImports(self) -> None:
        """
        Each section's module imports the shared machinery, the sections it
        holds and its own package's modules only (L{SECTIONS}).
        """
        for name, imports in SECTIONS.items():
            self.assertEqual(self.graph[name], imports, name)

    def test_sectionsNeverReachConfig(self) -> None:
        """
        Nothing that a section's module imports, directly or not, imports
        the configuration module or the checks; the configuration module
        imports every section.
        """
        for name in SECTIONS:
            found = reached(self.graph, name)
            self.assertNotIn("wsserver.config", found, name)
            self.assertNotIn("wsserver.checks", found, name)
        self.assertEqual(set(SECTIONS) - reached(self.graph, "wsserver.config"), set())

    def test_authNeverImportsConfig(self) -> None:
        """
        No module of L{wsserver.auth} imports L{wsserver.config}; the
        configuration imports auth's parser.
        """
        for name, edges in self.graph.items():
            if name == "wsserver.auth" or name.startswith("wsserver.auth."):
                self.assertNotIn("wsserver.config", edges, name)
        self.assertIn("wsserver.auth.config", self.graph["wsserver.config"])

    def test_checksImportNoParser(self) -> None:
        """
        L{wsserver.checks}, which the configuration runs after its parse,
        imports no parser: only the shared machinery, and the endpoint
        strings' grammar from L{wsserver._internals}, which imports nothing
        of wsserver.
        """
        self.assertEqual(self.graph["wsserver.checks"], {"wsserver.configschema", "wsserver._internals"})
        self.assertEqual(self.graph["wsserver._internals"], set())
