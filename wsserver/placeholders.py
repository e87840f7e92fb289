# -*- test-case-name: tests.test_config -*-
"""
Known placeholder secrets: the values that the examples and the docs put
where a secret goes (C{change-me}, C{secret}, ...).  A config that still
carries one is refused (L{wsserver.config}): a server started from a copied
example must not be one that anyone who read the docs can log in to.
"""

from __future__ import annotations

import json
import re

__all__ = ["isPlaceholder", "placeholderProblem"]

#: placeholders, as L{_normalized} writes them (lower case, letters and digits)
_WORDS = frozenset({
    "secret", "example", "password", "passwd", "changeit", "mysecret", "yoursecret", "supersecret",
    "token", "yourtoken", "apikey", "yourapikey",
})
#: the beginnings of longer placeholders: C{change-me-too}, C{CHANGE_ME_1},
#: the docs' C{"a random string of at least 32 bytes....."}
_PREFIXES = ("changeme", "replaceme", "arandomstring", "yoursecret", "putyour")


def _normalized(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def isPlaceholder(value: str) -> bool:
    """
    Whether C{value} is a known placeholder rather than a secret of one's own.
    """
    normalized = _normalized(value)
    return normalized in _WORDS or normalized.startswith(_PREFIXES)


def placeholderProblem(key: str, value: str, what: str = "") -> str:
    """
    The config problem for the placeholder C{value} at C{key}; C{what} says
    which part of the key's value it is (C{"the password"} of a URL).
    """
    said = f"{what} {json.dumps(value)}" if what else json.dumps(value)
    return (f"{key}: {said} is a placeholder, not a secret: replace it with one of your own "
            f"(such as the output of: openssl rand -hex 32)")
