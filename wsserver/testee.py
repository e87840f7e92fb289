# -*- test-case-name: tests.test_conformance -*-
"""
An echo server for the Autobahn TestSuite (test only, never part of a
deployment): the server's own WebSocket code, with an echo in the router's
place.

The suite needs a peer that sends every message back.  To test what the
server runs, the testee uses L{ChatServerFactory} and L{ChatServerProtocol}
unchanged (the same frame reading and writing, the same factory options,
the one UTF-8 check of a whole text message instead of Autobahn's
incremental one, the same close handling); the router is L{EchoRouter}, the
real one but for sending each message back to its connection instead of
routing it.

Run it with C{python -m wsserver.testee --port 9001} and point a fuzzing
client (C{kosoku -m fuzzingclient ws://127.0.0.1:9001/?id=1}) at it; tests
call L{listenTestee}.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from zoneinfo import ZoneInfo

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime

from .auth import buildAuthenticator
from .config import AuthConfig, MessageConfig, ServerConfig
from .messages import InvalidPayload, MessageFactory
from .connection import ChatServerFactory
from .connection.session import Session
from .routing import Router

__all__ = ["EchoRouter", "TESTEE_MAX_SIZE", "TESTEE_PATH", "makeTesteeFactory", "listenTestee", "main"]

#: The path the testee serves.
TESTEE_PATH = "/"

#: The testee's C{maxSize}: the suite's largest message (cases 9.1.6 and
#: 9.2.6) is 16 MiB, over the server's default of 10 MiB.
TESTEE_MAX_SIZE = 16 * 1024 * 1024


class EchoRouter(Router):
    """
    The real router, except that every message goes back to the connection
    it came from instead of being routed, framed as the router frames
    messages (a prepared frame written with C{sendPrepared}). Connections
    are attached and detached as on the server.

    Where the real router's JSON parser refuses a text message that is not
    UTF-8 (raising L{InvalidPayload}, which the protocol turns into 1007),
    this does the same check, so that the protocol's own error path answers.
    """

    def receive(self, connection: Session, payload: bytes) -> None:  # type: ignore[override]
        """
        Echo C{payload} to C{connection}, as a frame of its own kind.

        @raise InvalidPayload: for a text message that is not UTF-8.
        """
        binary = connection.isBinary
        if not binary:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidPayload("not UTF-8") from None
        connection.sendPrepared(PreparedMessage(payload, binary, False, False))


def makeTesteeFactory(clock: IReactorTime, maxSize: int = TESTEE_MAX_SIZE) -> ChatServerFactory:
    """
    The server's WebSocket factory, with no auth, on L{TESTEE_PATH}, echoing.

    Connections still need an C{?id=} (any valid user id), as on the server.
    """
    message = MessageConfig(maxSize=maxSize)
    router = EchoRouter(message, clock, MessageFactory(clock, ZoneInfo("UTC")))
    return ChatServerFactory(router, ServerConfig(endpoint=TESTEE_PATH), message, buildAuthenticator(AuthConfig()),
                             clock)


def listenTestee(reactor: IReactorTCP, port: int = 0, interface: str = "127.0.0.1") -> Deferred[IListeningPort]:
    """
    Listen with the testee on C{interface}:C{port} (0: any free port).
    """
    return TCP4ServerEndpoint(reactor, port, interface=interface).listen(
        makeTesteeFactory(reactor)  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> None:
    """
    C{python -m wsserver.testee [--port N] [--interface ADDR]}: serve until
    interrupted; prints the URL to point the fuzzing client at.
    """
    parser = argparse.ArgumentParser(prog="python -m wsserver.testee", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9001, help="TCP port (0: any free one); default 9001")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on; default 127.0.0.1")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    from ._internals import makeDebugArgumentsLazy

    makeDebugArgumentsLazy()

    def listening(port: IListeningPort) -> None:
        host = port.getHost()
        print(f"testee listening on ws://{host.host}:{host.port}{TESTEE_PATH}?id=1", flush=True)

    def failed(f: Any) -> None:
        print(f"testee: cannot listen: {f.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()  # type: ignore[attr-defined]

    listenTestee(reactor, args.port, args.interface).addCallbacks(listening, failed)  # type: ignore[arg-type]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
