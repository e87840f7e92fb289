# -*- test-case-name: tests.test_autobahn -*-
"""
Make Autobahn's debug-log arguments lazy.

Autobahn formats the arguments of its debug log calls before the call, even
when debug logging is off: C{pformat} of some 40 settings on every new
connection, C{hltype}/C{hlval} a dozen times per handshake.  In a profile of
10,000 connections that is about a quarter of the time of a connect, on the
server and on the bench client alike.

L{makeDebugArgumentsLazy} swaps those names in Autobahn's modules for
versions that return an object formatted only when a log observer turns it
into text, so that the logs read the same when debug logging is on.  It is
called once by the outermost layers (C{twistd wsserver}, C{wsserver-bench}),
never on import.
"""

from __future__ import annotations

import pprint
from typing import Any, Callable

__all__ = ["Lazy", "makeDebugArgumentsLazy"]


class Lazy:
    """
    C{func(*args)}, computed when turned into text.
    """

    __slots__ = ("_func", "_args")

    def __init__(self, func: Callable[..., str], *args: Any) -> None:
        self._func = func
        self._args = args

    def __str__(self) -> str:
        return self._func(*self._args)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazy(func: Callable[..., str]) -> Callable[..., Lazy]:
    def make(*args: Any) -> Lazy:
        return Lazy(func, *args)

    make.__name__ = func.__name__
    return make


def makeDebugArgumentsLazy() -> None:
    """
    Patch Autobahn's WebSocket modules (idempotent).
    """
    from autobahn import util
    from autobahn.twisted import websocket as twistedWebsocket
    from autobahn.websocket import protocol

    if getattr(protocol, "_wsserverLazy", False):
        return
    protocol.pformat = _lazy(pprint.pformat)
    # the one non-logging use of pformat: a str is required there
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
    for module in (protocol, twistedWebsocket):
        module.hltype = _lazy(util.hltype)
        module.hlval = _lazy(util.hlval)
    protocol._wsserverLazy = True
