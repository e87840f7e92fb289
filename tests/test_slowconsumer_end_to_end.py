"""
End-to-end: closing a slow consumer on real loopback sockets (SPEC section
8, "Closing a slow consumer").  The slow client's socket has a small receive
buffer and stops reading; the server passes C{sendBufferBytes}, sends 4011
and waits for the client to read; with the undelivered queue on, every
message sent is received at least once, whether the client reads again, or
dies without reading.
"""

from __future__ import annotations

import socket
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from .support import ChatClient, Running, closeClient, openClient, startServer

#: the slow client's receive buffer (the kernel doubles it)
RCVBUF = 8 * 1024


class _Recording(ChatClient):
    """
    A client that records why its TCP connection ended.
    """

    def __init__(self) -> None:
        super().__init__()
        #: fires with C{[reason]} (a Failure would be an errback)
        self.lostReason: Deferred[list[Failure]] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.lostReason.callback([reason])


def openSmallBuffered(server: Running, userId: int) -> Deferred[_Recording]:
    """
    Connect a L{_Recording} client as C{userId} over a socket whose receive
    buffer is L{RCVBUF} (set before it connects, so the window is small);
    fires once the WebSocket is open.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    # (the kernel completes a connect to a listening loopback socket at once)
    sock.connect(("127.0.0.1", server.wsPort))
    sock.setblocking(False)
    factory = WebSocketClientFactory(server.wsURL(f"id={userId}"))
    factory.protocol = _Recording
    factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=5)
    made: list[_Recording] = []
    build = factory.buildProtocol
    factory.buildProtocol = lambda addr: made.append(build(addr)) or made[-1]  # type: ignore[method-assign]
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)  # type: ignore[attr-defined]
    sock.close()
    return made[0].opened


class SlowConsumerCloseTests(TestCase):
    """
    The close of a slow consumer: frames, then 4011, then a FIN; nothing
    lost with the undelivered queue on.
    """

    timeout = 120

    #: messages sent to the slow client
    count = 4000

    def config(self, **limits: Any) -> dict[str, Any]:
        # (the queue keeps more than the messages sent, duplicates included)
        return {"server": {"limits": limits},
                "chat": {"enableUndeliveredQueue": True, "undelivered": {"maxPerUser": 10 * self.count}}}

    @inlineCallbacks
    def sendAll(self, sender: ChatClient, first: int, last: int) -> Any:
        """
        Send messages C{first} to C{last} - 1 to user 1 (and a copy to the
        sender, user 2), in batches, each batch's copy awaited: the server
        routed it (a batch smaller than C{sendBufferBytes}: the sender
        is no slow consumer).
        """
        text = "x" * 2000
        for start in range(first, last, 10):
            end = min(start + 10, last)
            for i in range(start, end):
                sender.send({"type": "t", "text": text, "data": i, "recipients": [1, 2]})
            for i in range(start, end):
                yield sender.messages.get()

    @inlineCallbacks
    def sendUntilClosed(self, server: Running, sender: ChatClient) -> Any:
        """
        Send to user 1 as L{sendAll} until it is closed as a slow consumer
        (the server's kernel takes a few MB first); the number sent.
        """
        limits = server.service.limits
        sent = 0
        while not limits.limitCloses["sendBufferBytes"] and sent < self.count:
            yield self.sendAll(sender, sent, sent + 10)
            sent += 10
        self.assertEqual(limits.limitCloses["sendBufferBytes"], 1)
        return sent

    @inlineCallbacks
    def rest(self, server: Running, sender: ChatClient, seen: list[int]) -> Any:
        """
        Reconnect user 1 and add what it gets to C{seen}, up to a marker
        sent once it is connected (behind what was kept for it).
        """
        again = yield openClient(server, userId=1)
        sender.send({"type": "t", "text": "end", "data": -1, "recipients": [1]})
        while True:
            message = yield again.messages.get()
            if message["data"] == -1:
                break
            seen.append(message["data"])
        yield closeClient(again)

    @inlineCallbacks
    def waitGone(self, server: Running, userId: int) -> Any:
        """
        Wait until no connection of C{userId} is left on the server.
        """
        for _ in range(1000):
            if not [p for p in server.service.ws.factory.live if p.session.userId == userId]:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail(f"user {userId}'s connection never went")

    def assertAllOnce(self, seen: list[int]) -> None:
        """
        Every message sent was received at least once (duplicates allowed).
        """
        missing = sorted(set(range(self.count)) - set(seen))
        self.assertEqual(missing, [], f"{len(missing)} of {self.count} lost")

    @inlineCallbacks
    def test_readsAgainInGrace(self) -> None:
        """
        A client that stops reading, is closed as a slow consumer, then
        reads again within C{closeGraceSeconds} reads its frames and then
        the 4011 close frame, and the TCP connection ends with a FIN (no
        reset); a reconnect gets the rest: every message at least once.
        """
        server = yield startServer(self, self.config(sendBufferBytes="64K", closeGraceSeconds=10))
        limits = server.service.limits
        slow = yield openSmallBuffered(server, 1)
        sender = yield openClient(server, userId=2)
        slow.transport.pauseProducing()
        sent = yield self.sendUntilClosed(server, sender)
        yield self.sendAll(sender, sent, self.count)
        self.assertEqual(limits.limitCloses["sendBufferBytes"], 1)
        slow.transport.resumeProducing()
        code, reason = yield slow.closed
        self.assertEqual((code, reason), (4011, "Slow consumer"))
        [lost] = yield slow.lostReason
        self.assertTrue(lost.check(ConnectionDone), lost)
        first = [m["data"] for m in slow.messages.pending]
        self.assertEqual(first, sorted(first))
        self.assertGreater(len(first), 0)
        later: list[int] = []
        yield self.rest(server, sender, later)
        self.assertGreater(len(later), 0)
        self.assertAllOnce(first + later)
        yield closeClient(sender)

    @inlineCallbacks
    def test_deadAfterClose(self) -> None:
        """
        A client closed as a slow consumer that dies without reading (its
        socket closed, its unread data discarded): nothing is lost.
        """
        server = yield startServer(self, self.config(sendBufferBytes="64K", closeGraceSeconds=10))
        slow = yield openSmallBuffered(server, 1)
        sender = yield openClient(server, userId=2)
        slow.transport.pauseProducing()
        sent = yield self.sendUntilClosed(server, sender)
        slow.transport.abortConnection()
        yield self.waitGone(server, 1)
        yield self.sendAll(sender, sent, self.count)
        seen: list[int] = []
        yield self.rest(server, sender, seen)
        self.assertAllOnce(seen)
        yield closeClient(sender)

    @inlineCallbacks
    def test_deadWhileStalled(self) -> None:
        """
        A client that stops reading and dies before it passed
        C{sendBufferBytes}: what its kernel had not acknowledged, and what
        it may have received unread, is kept; nothing is lost.
        """
        server = yield startServer(self, self.config())
        slow = yield openSmallBuffered(server, 1)
        sender = yield openClient(server, userId=2)
        slow.transport.pauseProducing()
        yield self.sendAll(sender, 0, self.count // 2)
        self.assertEqual(server.service.limits.limitCloses["sendBufferBytes"], 0)
        slow.transport.abortConnection()
        yield self.waitGone(server, 1)
        yield self.sendAll(sender, self.count // 2, self.count)
        seen: list[int] = []
        yield self.rest(server, sender, seen)
        self.assertAllOnce(seen)
        yield closeClient(sender)
