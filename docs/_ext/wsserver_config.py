"""
The C{.. wsserver-config::} directive: the configuration reference,
generated from wsserver's own description of its configuration keys, so
that the docs cannot drift from the code.

Every row comes from L{configKeys}, the one adapter between this extension
and wsserver: only it knows where wsserver lists its keys.  It asks the
schema layer first (C{wsserver.schema}); a checkout without one falls back
to reading the dataclasses of L{wsserver.config.Config} and its sections
(their fields, type hints, defaults, and the C{#:} comments above each
field), each in the module that defines it.

Options::

    .. wsserver-config::
       :prefix: server.limits.   (only the keys under this prefix)
       :exclude: server.limits.  (leave these out; several, comma-separated)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from typing import Any, Iterable, Iterator

import attr
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


@attr.s(frozen=True, auto_attribs=True)
class Key:
    """
    One configuration key, as the reference shows it.
    """

    #: the dotted JSON path (C{server.limits.maxConnections})
    key: str
    #: the JSON type, in words (C{integer}, C{array of strings})
    type: str
    #: the default, written as JSON (C{100000}, C{"/chat"}), or C{""}
    default: str
    #: what the key means, in reStructuredText (one paragraph)
    meaning: str


def configKeys() -> list[Key]:
    """
    Every configuration key wsserver knows, in the order of the file.

    The one place that knows how wsserver lists its keys.
    """
    try:
        schema = importlib.import_module("wsserver.schema")
    except ImportError:
        keys = list(_fromDataclasses())
    else:
        keys = list(_fromSchema(schema))
    return _withTargetTypes(keys)


# --- the event target types -------------------------------------------------


def _withTargetTypes(keys: list[Key]) -> list[Key]:
    """
    C{keys} with the keys of each event target type of
    C{wsserver.events.targets.types} (which read their own keys) after the
    keys every target has, each row naming the types it applies to; the
    internal C{options} (what those types read) left out.
    """
    prefix = "event.targets[]."
    keys = [k for k in keys if k.key != prefix + "options"]
    types = importlib.import_module("wsserver.events.targets.types")
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for kind, targetType in types.TARGET_TYPES.items():
        for doc in targetType.keys:
            rows.setdefault((doc.name, doc.type, doc.default, doc.doc), []).append(kind)
    extra = [
        Key(prefix + name, type, default, f"({', '.join(f'``{kind}``' for kind in kinds)}) {_rst(doc)}")
        for (name, type, default, doc), kinds in rows.items()
    ]
    last = max((i for i, k in enumerate(keys) if k.key.startswith(prefix)), default=len(keys) - 1)
    return keys[:last + 1] + extra + keys[last + 1:]


# --- the schema layer -------------------------------------------------------


def _fromSchema(schema: Any) -> Iterator[Key]:
    """
    The keys of wsserver's schema layer.
    """
    for entry in schema.configKeys():
        yield Key(
            key=entry.key,
            type=entry.type,
            default=entry.default,
            meaning=_rst(entry.doc),
        )


# --- the fallback: today's dataclasses --------------------------------------

#: JSON names where a dataclass field is not the file's key, and fields that
#: no file sets (they are filled in by the parser); C{None}: not shown.
_RENAMED: dict[tuple[str, str], str | None] = {
    ("ServerConfig", "listenSource"): None,
    ("RestConfig", "listenSource"): None,
    ("AuthConfig", "keyData"): None,
    ("TargetConfig", "modeType"): "mode.type",
    ("TargetConfig", "modeName"): "mode.name",
    ("Config", "warnings"): None,
}

_TYPES = {
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "Any": "any JSON",
    "str | None": "string or null",
    "tuple[str, ...]": "array of strings",
    "frozenset[str]": "array of strings",
    "AuthConfig": "auth object",
    "AuthConfig | None": "auth object",
    "tuple[AuthConfig, ...]": "array of auth objects",
    "tuple[TargetConfig, ...]": "array of targets",
    "tuple[tuple[str, str], ...]": "array of objects",
}


def _fromDataclasses() -> Iterator[Key]:
    """
    The keys of L{wsserver.config.Config}, read from its dataclasses: each
    section's in the module that owns it (L{wsserver.events.config} ...).
    """
    config = importlib.import_module("wsserver.config")
    yield from _walk(config.Config, "")


def _attrDocs(module: str) -> dict[tuple[str, str], list[str]]:
    """
    The C{#:} comments of the module named C{module}, by class and field.
    """
    from sphinx.pycode import ModuleAnalyzer

    return ModuleAnalyzer.for_module(module).find_attr_docs()


def _walk(cls: type, path: str) -> Iterator[Key]:
    """
    The keys of the dataclass C{cls} under C{path}: its field types are
    names in its own module, and its comments are read from that module.
    """
    module = sys.modules[cls.__module__]
    docs = _attrDocs(cls.__module__)
    for f in dataclasses.fields(cls):
        name = _RENAMED.get((cls.__name__, f.name), f.name)
        if name is None:
            continue
        key = f"{path}{name}"
        hint = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        nested = getattr(module, hint, None)
        if dataclasses.is_dataclass(nested) and hint != "AuthConfig":
            yield from _walk(nested, f"{key}.")
            continue
        if hint == "tuple[TargetConfig, ...]" and name == "targets":
            yield Key(key, _TYPES[hint], "[]", "the event targets; each is an object with the keys below")
            yield from _walk(module.TargetConfig, f"{key}[].")
            continue
        yield Key(
            key=key,
            type=_TYPES.get(hint, hint),
            default=_default(f),
            meaning=_rst(" ".join(docs.get((cls.__name__, f.name), [])).strip()),
        )


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if isinstance(value, (tuple, frozenset, set)):
        value = sorted(value) if isinstance(value, (frozenset, set)) else list(value)
        if value and dataclasses.is_dataclass(value[0]):
            return ""
    if dataclasses.is_dataclass(value):
        return json.dumps(dataclasses.asdict(value)) if f.name != "auth" else '{"type": "noauth"}'
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


_EPYTEXT = re.compile(r"[CLIB]\{([^{}]*)\}")


def _rst(text: str) -> str:
    """
    Epytext markup (C{code}, L{link}, I{italic}) as reStructuredText.
    """

    def one(m: re.Match[str]) -> str:
        return f"``{m.group(1)}``" if m.group(0)[0] in "CL" else f"*{m.group(1)}*"

    return _EPYTEXT.sub(one, " ".join(text.split()))


# --- the directive ----------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("\n", " ") or " "


def _table(keys: Iterable[Key]) -> list[str]:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 14 16 40",
        "   :class: wsserver-config",
        "",
        "   * - key",
        "     - type",
        "     - default",
        "     - meaning",
    ]
    for k in keys:
        default = f"``{k.default}``" if k.default else " "
        lines += [
            f"   * - ``{k.key}``",
            f"     - {_cell(k.type)}",
            f"     - {default}",
            f"     - {_cell(k.meaning)}",
        ]
    return lines


class ConfigDirective(SphinxDirective):
    """
    A table of the configuration keys (see the module's docstring).
    """

    has_content = False
    option_spec = {"prefix": directives.unchanged, "exclude": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        prefix = self.options.get("prefix", "")
        exclude = [p.strip() for p in self.options.get("exclude", "").split(",") if p.strip()]
        keys = [
            k for k in configKeys()
            if k.key.startswith(prefix) and not any(k.key.startswith(p) for p in exclude)
        ]
        if not keys:
            return [self.state.document.reporter.warning(
                f"wsserver-config: no configuration key under {prefix!r}", line=self.lineno)]
        container = nodes.container()
        self.state.nested_parse(StringList(_table(keys), source="wsserver-config"), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("wsserver-config", ConfigDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
