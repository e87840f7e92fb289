"""
The setup that benchmarks/hotpath.py and benchmarks/limits_hotpath.py share:
server connections on in-memory transports, the throughput load's client
frames, and the timed loop that feeds them.

It imports no wsserver module, so that hotpath.py's child processes can use
it with an older source tree (one without this module) first on their path.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

__all__ = ["HANDSHAKE", "clientFrames", "connect", "feed"]

#: a client's opening handshake, for user C{uid}
HANDSHAKE = (
    "GET /chat?id={uid} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def connect(factory: Any, uid: int) -> tuple[Any, StringTransport]:
    """
    A server protocol of C{factory} on an in-memory transport, past the
    handshake as user C{uid}; the protocol and its transport (emptied).
    """
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000 + uid))
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE.format(uid=uid).encode())
    transport.clear()
    return protocol, transport


def clientFrames(count: int, recipient: int = 2, stamp: float = 1.0) -> tuple[bytes, list[bytes]]:
    """
    The throughput load's message (3.2 KB of text to C{recipient}) and
    C{count} of its client frames, 8 to a read as the bench's window of 8 in
    flight; the payload and the reads.
    """
    payload = orjson.dumps({"type": "text", "text": "x" * 3200, "recipients": [recipient], "data": {"t": stamp}})
    frame = PreparedMessage(payload, False, True, False).payloadHybi
    return payload, [frame * 8] * (count // 8)


def feed(sender: Any, transports: list[StringTransport], reads: list[bytes], clock: Clock | None = None) -> float:
    """
    Feed C{reads} to C{sender}, emptying C{transports} after each (and
    moving C{clock} on by 100 us, when given); the CPU microseconds per
    message (8 to a read).
    """
    started = time.process_time()
    for chunk in reads:
        sender.dataReceived(chunk)
        for transport in transports:
            transport.clear()
        if clock is not None:
            clock.advance(0.0001)
    used = time.process_time() - started
    return used / (len(reads) * 8) * 1e6
