# -*- test-case-name: tests.test_quietlog -*-
"""
The log without the libraries' internals: Twisted's C{Starting factory
<... object at 0x...>}, C{ChatServerFactory starting on 8085} and C{(TCP
Port 8085 Closed)} say nothing that wsserver's own C{WebSocket listening on
127.0.0.1:8085} does not, in words an operator cannot use.

The server's factories are not C{noisy}; what Twisted logs regardless (a
port's start and close, the factories of the libraries' clients) is left out
by a filter in front of twistd's log observer, which the top service sets on
twistd's application (L{QuietStartLog}) before twistd starts logging.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import FilteringLogObserver, ILogObserver, LogEvent, PredicateResult, formatEvent

__all__ = ["QuietStartLog", "isInternal", "quietObserver"]

#: the libraries' lines that are left out, as formatted
_INTERNAL = re.compile(
    r"(?:Starting|Stopping) factory <.*>"
    r"|\S+(?: \(TLS\))? starting on \d+"
    r"|\((?:TCP|UDP|UNIX|TLS) Port \S+ Closed\)"
)


def isInternal(event: LogEvent) -> bool:
    """
    Whether C{event} is one of the libraries' lines about their internals.
    """
    return _INTERNAL.fullmatch(formatEvent(event)) is not None


def _predicate(event: LogEvent) -> PredicateResult:
    return PredicateResult.no if isInternal(event) else PredicateResult.maybe


def quietObserver(observer: ILogObserver) -> ILogObserver:
    """
    C{observer}, that no longer sees the libraries' internal lines.
    """
    return FilteringLogObserver(observer, [_predicate])


class QuietStartLog:
    """
    A mixin for the service that twistd runs: once twistd made it a child
    of its application, it gives the application twistd's own log observer
    (the one C{--logfile}, C{--syslog} or C{--nodaemon} asks for) behind
    the filter, which twistd then logs to.

    @ivar twistdOptions: twistd's options (its C{ServerOptions}), or L{None}
        when the service does not run under twistd (tests).
    """

    twistdOptions: Any = None

    def setServiceParent(self, parent: Any) -> Any:
        result = super().setServiceParent(parent)  # type: ignore[misc]
        setComponent = getattr(parent, "setComponent", None)
        if self.twistdOptions is not None and setComponent is not None and parent.getComponent(ILogObserver) is None:
            from ._internals import twistdLogObserver

            setComponent(ILogObserver, quietObserver(twistdLogObserver(self.twistdOptions)))
        return result
