"""
What one trim of the slow-consumer ring costs in asking how much the
client has not acknowledged: the wrapper walk of
C{wsserver._internals.unackedBytes} against the L{UnackedGauge} made once
per connection, on a real loopback TCP socket, bare and under a TLS
wrapper (C{TLSMemoryBIOProtocol}); microseconds a call, the best of
--repeat rounds.

    python benchmarks/unacked.py [--calls 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import socket
import timeit
from typing import Any, Callable

from twisted.internet import reactor, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from wsserver._internals import UnackedGauge, unackedBytes


def connection() -> tuple[tcp.Connection, list[socket.socket]]:
    """
    A Twisted TCP transport on one end of a loopback connection (not
    registered with the reactor: only its buffer and socket are read).
    """
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    client = socket.create_connection(listening.getsockname())
    server, _ = listening.accept()
    return tcp.Connection(server, Protocol(), reactor), [listening, client, server]


def tlsWrapper(transport: tcp.Connection, certs: str) -> Any:
    """
    A server-side TLS wrapper over C{transport}, as the server's TLS port
    makes one.
    """
    contextFactory = DefaultOpenSSLContextFactory(f"{certs}/server.key", f"{certs}/server.crt")
    factory = TLSMemoryBIOFactory(contextFactory, False, Factory.forProtocol(Protocol))
    wrapper = factory.buildProtocol(None)
    wrapper.makeConnection(transport)
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--certs", default="certs")
    options = parser.parse_args()
    plain, keep = connection()
    tls = tlsWrapper(plain, options.certs)
    cases: list[tuple[str, Callable[[], int]]] = [
        ("tcp, walk", lambda: unackedBytes(plain)),
        ("tcp, gauge", UnackedGauge(plain)),
        ("tls, walk", lambda: unackedBytes(tls)),
        ("tls, gauge", UnackedGauge(tls)),
    ]
    for name, call in cases:
        best = min(timeit.repeat(call, number=options.calls, repeat=options.repeat)) / options.calls
        print(f"{name:12s} {best * 1e6:6.3f} us a call")
    for sock in keep:
        sock.close()


if __name__ == "__main__":
    main()
