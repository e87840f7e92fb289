# -*- test-case-name: tests.test_config -*-
"""
The machinery that every section parser of the configuration shares: the
error that names every problem by its key, typed reads from one JSON object
(L{_Section}), sizes, and the quoting of endpoint strings.

It imports nothing of wsserver, so that each part of the server can own the
parser of its own section (L{wsserver.auth.config} the auth objects) while
L{wsserver.config} assembles the whole file: the imports go one way only.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping, Sequence

__all__ = ["ConfigError", "listenKey", "parseSize"]


class ConfigError(Exception):
    """
    The configuration cannot be used.

    @ivar problems: one line per problem, each starting with the key it is about.
    """

    def __init__(self, problems: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        #: the warnings found too (unknown keys: often the typo behind an error)
        self.warnings = list(warnings)
        super().__init__("\n".join(self.problems))


_SIZE = re.compile(r"^\s*([0-9]+)\s*([KkMm]?)\s*$")


def parseSize(value: object) -> int:
    """
    Parse a size: a number of bytes, or a string with suffix C{K} or C{M}
    (C{"512K"}, C{"10M"}; powers of 1024).

    @raise ValueError: when C{value} is not such a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    raise ValueError(f'unparsable size {json.dumps(value)}: use bytes, or a number with K or M ("512K", "10M")')


def _quote(value: str) -> str:
    """
    Escape a value for a Twisted endpoint string.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def listenKey(section: str, source: str) -> str:
    """
    The name of a listen address in messages: the option (C{--ws}) when it
    came from the command line, else the key (C{server.listen}).
    """
    return source if source.startswith("--") else f"{section}.listen"


def _typeName(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Section:
    """
    Typed reads from one JSON object, recording every problem by its key.
    """

    def __init__(self, raw: Mapping[str, Any], path: str, problems: list[str], warnings: list[str]) -> None:
        self.raw = raw
        self.path = path
        self.problems = problems
        self.warnings = warnings
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, why: str) -> None:
        self.problems.append(f"{self.key(name)}: {why}")

    def has(self, name: str) -> bool:
        self.seen.add(name)
        return name in self.raw and self.raw[name] is not None

    def _get(self, name: str, default: Any, check: Callable[[Any], bool], want: str) -> Any:
        self.seen.add(name)
        if name not in self.raw:
            return default
        value = self.raw[name]
        if not check(value):
            self.error(name, f"must be {want}, not {_typeName(value)} {json.dumps(value)}")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, default, lambda v: isinstance(v, bool), "true or false")

    def str(self, name: str, default: str) -> str:
        return self._get(name, default, lambda v: isinstance(v, str), "a string")

    def int(self, name: str, default: int, low: int | None = None, high: int | None = None) -> int:
        value = self._get(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            self.error(name, f"{value} is out of range ({low} to {high if high is not None else 'any'})")
            return default
        return value

    def number(self, name: str, default: float, low: float = 0) -> float:
        value = self._get(
            name, default, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
        )
        if value < low:
            self.error(name, f"{value} must be at least {low}")
            return default
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(
            name, [], lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "an array of strings"
        )
        return tuple(value)

    def section(self, name: str) -> _Section:
        value = self._get(name, {}, lambda v: v is None or isinstance(v, dict), "an object")
        return _Section(value or {}, self.key(name), self.problems, self.warnings)

    def finish(self) -> None:
        """
        Warn about every key that nothing read.
        """
        for name in self.raw:
            if name not in self.seen:
                self.warnings.append(f"{self.key(name)}: unknown key, ignored")


class _IndexSection(_Section):
    """
    An array seen as a section (its items keyed C{"0"}, C{"1"} ...), so that
    items are named C{key[i]}.
    """

    def key(self, name: str) -> str:
        return f"{self.path}[{name}]"
