# -*- test-case-name: tests.test_reload -*-
"""
L{IReloadable}: a part of the running server that takes a new config on
SIGHUP itself, so that L{wsserver.reload} asks each part rather than write
into its attributes.
"""

from __future__ import annotations

from typing import Iterable

from zope.interface import Interface

from .config import Config

__all__ = ["IReloadable", "reloadAll"]


class IReloadable(Interface):
    """
    A part of the server whose settings a reload can change while clients
    stay connected.
    """

    def reloadConfig(old: Config, new: Config) -> list[str]:
        """
        Apply, for what comes next, what differs between C{old} (the config
        running) and C{new} (the config to run; the keys that need a
        restart already carry their running values).

        @return: the keys applied (C{"server.auth"}, C{"chat.message"}...),
            in the order of the file; empty when nothing this part uses
            changed.
        """


def reloadAll(parts: Iterable[IReloadable], old: Config, new: Config) -> list[str]:
    """
    Reload each of C{parts} in turn.

    @return: the keys applied, each once, in the order the parts named them.
    """
    applied: list[str] = []
    for part in parts:
        for key in part.reloadConfig(old, new):
            if key not in applied:
                applied.append(key)
    return applied
