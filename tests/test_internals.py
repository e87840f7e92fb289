"""
Tests for L{wsserver._internals}: each use of what Autobahn and twisted.web
keep to themselves, held against the installed library, so that a release
that changes it fails here (numbers as in the module's docstring).
"""

from __future__ import annotations

import ast
import inspect
import socket
import sys
import textwrap
from collections import deque
from typing import Any

import txaio
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket import protocol as autobahnProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web import http, server
from twisted.web.resource import Resource
from txaio.testutil import replace_loop

from wsserver._internals import (
    HANDSHAKE_LEFTOVERS,
    AutobahnServerProtocol,
    HTTPChannelHooks,
    UnackedGauge,
    endpointStringParts,
    kernelUnacked,
    requestLine,
    stopReading,
    unackedBytes,
)

from .support import KEY, CERT, _trust
from .test_protocol import _TCPLikeTransport

txaio.use_twisted()


class _Recorder(AutobahnServerProtocol):
    """
    The hooks, recorded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[bytes, bool]] = []
        self.requestBytes: list[tuple[bytes, bytes]] = []
        self.closings = 0
        self.onWholeMessage = lambda payload, isBinary: self.messages.append((payload, isBinary))
        self.refuseAt: int | None = None
        self.failed: list[tuple[int, tuple[str, str] | None]] = []

    def onRequestBytes(self, buffered: bytes, data: bytes) -> bool:
        self.requestBytes.append((buffered, data))
        return self.refuseAt is not None and len(buffered) + len(data) > self.refuseAt

    def onClosing(self) -> None:
        self.closings += 1

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        raise AssertionError("Autobahn's own message path was taken")

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        self.failed.append((code, self.plainRequest()))
        super().failHandshake(reason, code, responseHeaders)


class _Client(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.closedWith: tuple[int | None, str | None] | None = None

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closedWith = (code, reason)


def _assignments(cls: type, state: str) -> set[str]:
    """
    The methods of C{cls} that assign C{self.state = WebSocketProtocol.<state>}.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if (isinstance(inner, ast.Assign) and isinstance(inner.value, ast.Attribute)
                        and inner.value.attr == state
                        and any(isinstance(t, ast.Attribute) and t.attr == "state" for t in inner.targets)):
                    found.add(node.name)
    return found


class AutobahnTests(SynchronousTestCase):
    """
    Uses 1 to 7: Autobahn.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        loop = replace_loop(self.clock)
        loop.__enter__()
        self.addCleanup(loop.__exit__, None, None, None)
        self.factory = WebSocketServerFactory()
        self.factory.protocol = _Recorder
        self.factory.setProtocolOptions(failByDrop=False, closeHandshakeTimeout=2, webStatus=False)

    def connect(self) -> tuple[_Recorder, _Client, iosim.IOPump]:
        server = self.factory.buildProtocol(None)
        clientFactory = WebSocketClientFactory("ws://127.0.0.1:8085/chat")
        clientFactory.protocol = _Client
        client = clientFactory.buildProtocol(None)
        pump = iosim.connect(
            server, iosim.FakeTransport(server, isServer=True, peerAddress=IPv4Address("TCP", "10.0.0.1", 4000)),
            client, iosim.FakeTransport(client, isServer=False),
        )
        pump.flush()
        return server, client, pump

    def test_requestBuffered(self) -> None:
        """
        1: while connecting, C{data} holds what was read of the request;
        C{_dataReceived} buffers and parses it; a refusal stops the read.
        """
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertEqual(protocol.state, WebSocketProtocol.STATE_CONNECTING)
        protocol.dataReceived(b"GET /chat HTTP/1.1\r\n")
        protocol.dataReceived(b"Host: x\r\n")
        self.assertEqual(protocol.requestBytes, [(b"", b"GET /chat HTTP/1.1\r\n"),
                                                 (b"GET /chat HTTP/1.1\r\n", b"Host: x\r\n")])
        self.assertEqual(protocol.data, b"GET /chat HTTP/1.1\r\nHost: x\r\n")
        protocol.refuseAt = 10
        protocol.dataReceived(b"X: y\r\n")
        self.assertEqual(protocol.data, b"GET /chat HTTP/1.1\r\nHost: x\r\n")

    def test_wholeMessages(self) -> None:
        """
        2: each message, fragmented or not, text or binary, reaches
        C{onWholeMessage} whole (from C{message_data}), and not Autobahn's
        C{onMessage}.
        """
        server, client, pump = self.connect()
        self.assertEqual(server.state, WebSocketProtocol.STATE_OPEN)
        client.sendMessage(b"one")
        client.sendMessage(b"\x00\x01", isBinary=True)
        client.beginMessage()
        client.sendMessageFrame(b"thr")
        client.sendMessageFrame(b"ee")
        client.endMessage()
        pump.flush()
        self.assertEqual(server.messages, [(b"one", False), (b"\x00\x01", True), (b"three", False)])
        self.assertIsNone(server.message_data)

    def test_noMessageAfterFailure(self) -> None:
        """
        2: a message over C{maxMessagePayloadSize} fails the connection
        (C{failedByMe}) and is not handed on.
        """
        self.factory.setProtocolOptions(maxMessagePayloadSize=10)
        server, client, pump = self.connect()
        client.sendMessage(b"x" * 11)
        pump.flush()
        self.assertTrue(server.failedByMe)
        self.assertEqual(server.messages, [])
        self.assertEqual(client.closedWith[0], 1009)

    def test_onlyWaysOutOfOpen(self) -> None:
        """
        3: Autobahn leaves C{STATE_OPEN} only in C{sendCloseFrame}
        (CLOSING) and C{dropConnection} or C{_connectionLost} (CLOSED).
        """
        self.assertEqual(_assignments(WebSocketProtocol, "STATE_CLOSING"), {"sendCloseFrame"})
        self.assertEqual(_assignments(WebSocketProtocol, "STATE_CLOSED"), {"dropConnection", "_connectionLost"})
        self.assertIn("isReply", inspect.signature(WebSocketProtocol.sendCloseFrame).parameters)

    def test_closing(self) -> None:
        """
        3: our close, the reply to the client's, and a drop each tell
        C{onClosing} once, while open.
        """
        server, client, pump = self.connect()
        server.sendClose(1000)
        server.sendClose(1000)
        self.assertEqual((server.closings, server.state), (1, WebSocketProtocol.STATE_CLOSING))
        server, client, pump = self.connect()
        client.sendClose(1000)
        pump.flush()
        self.assertEqual(server.closings, 1)
        server, client, pump = self.connect()
        server.dropConnection(abort=True)
        self.assertEqual(server.closings, 1)

    def test_anyClose(self) -> None:
        """
        3: C{sendCloseFrame} sends the codes C{sendClose} refuses, with the
        reason cut to 123 bytes on a character boundary.
        """
        server, client, pump = self.connect()
        self.assertRaises(Exception, WebSocketProtocol.sendClose, server, 1008, "x")
        server.sendAnyClose(1008, "é" * 100)
        pump.flush()
        code, reason = client.closedWith
        self.assertEqual((code, reason), (1008, "é" * 61))

    def test_closeWaitOutlivesConnection(self) -> None:
        """
        4: after a close frame Autobahn waits in C{closeHandshakeTimeoutCall}
        and its own C{connectionLost} leaves that timer; ours cancels it.
        """
        server, client, pump = self.connect()
        server.sendClose(1000)
        self.assertIsNotNone(server.closeHandshakeTimeoutCall)
        WebSocketServerProtocol.connectionLost(server, Failure(ConnectionLost()))
        call = server.closeHandshakeTimeoutCall
        self.assertIsNotNone(call)
        call.cancel()
        server, client, pump = self.connect()
        server.sendClose(1000)
        server.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(server.closeHandshakeTimeoutCall)
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshakeLeftovers(self) -> None:
        """
        5: once open, the attributes shed exist on the instance and the
        send queue is an empty deque; shed, they read as None from the
        class, the instance's dict is half the size it was, and messages
        still flow both ways.
        """
        server, client, pump = self.connect()
        for name in HANDSHAKE_LEFTOVERS:
            self.assertIn(name, vars(server))
        self.assertIsInstance(server.send_queue, deque)
        self.assertEqual(len(server.send_queue), 0)
        before = sys.getsizeof(vars(server))
        count = len(vars(server))
        server.shedHandshake()
        for name in HANDSHAKE_LEFTOVERS:
            self.assertNotIn(name, vars(server))
            self.assertIsNone(getattr(server, name), name)
        self.assertEqual(len(vars(server)), count - len(HANDSHAKE_LEFTOVERS))
        self.assertLessEqual(sys.getsizeof(vars(server)), before // 2)
        received = []
        client.onMessage = lambda payload, isBinary: received.append(payload)
        server.sendMessage(b"out")
        client.sendMessage(b"in")
        pump.flush()
        self.assertEqual((received, server.messages), ([b"out"], [(b"in", False)]))

    def test_plainRequest(self) -> None:
        """
        6: a request without C{Upgrade} fails the handshake with 426 (405
        for another method) while C{http_headers} and C{http_status_line}
        tell what it was; an upgrade's refusal is not plain.
        """
        for request, code, plain in (
            (b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", 426, ("GET", "/x?y=1")),
            (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", 405, ("POST", "/")),
            (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400, None),
        ):
            protocol = self.factory.buildProtocol(None)
            transport = _TCPLikeTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(request)
            self.assertEqual(protocol.failed[:1], [(code, plain)])

    def test_plainResponse(self) -> None:
        """
        6: L{AutobahnServerProtocol.sendPlainResponse} and C{refuseHandshake}
        write the status, the headers and the body, and close.
        """
        protocol = self.factory.buildProtocol(None)
        transport = _TCPLikeTransport()
        protocol.makeConnection(transport)
        protocol.sendPlainResponse(404, "Not Found", [("Content-Length", "2")], b"no")
        self.assertEqual(transport.value(), b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
        self.assertTrue(transport.disconnecting)
        protocol = self.factory.buildProtocol(None)
        transport = _TCPLikeTransport()
        protocol.makeConnection(transport)
        protocol.refuseHandshake(429, "Too many")
        self.assertEqual(transport.value(), b"HTTP/1.1 429 Too many\r\n\r\n")
        self.assertTrue(transport.disconnecting)

    def test_debugNames(self) -> None:
        """
        7: the names made lazy are in Autobahn's modules, and C{Timings}
        keeps its entries in C{_timings}.
        """
        from autobahn.twisted import websocket as twistedWebsocket

        for module, names in ((autobahnProtocol, ("pformat", "hltype", "hlval")),
                              (twistedWebsocket, ("hltype", "hlval"))):
            for name in names:
                self.assertTrue(callable(getattr(module, name)), name)
        timings = autobahnProtocol.Timings()
        timings.track("x")
        self.assertIn("x", timings._timings)


class _Request(http.Request):
    lines: list[tuple[bytes, bytes, bytes]] = []
    chunks: list[bytes] = []

    def gotLength(self, length: int | None) -> None:
        _Request.lines.append(requestLine(self.channel))
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        _Request.chunks.append(data)
        super().handleContentChunk(data)


class _Hooked(HTTPChannelHooks):
    arrived = 0

    def onAllContentReceived(self) -> None:
        _Hooked.arrived += 1


class TwistedWebTests(SynchronousTestCase):
    """
    Uses 8 to 10: twisted.web's channel.
    """

    def setUp(self) -> None:
        _Request.lines = []
        _Request.chunks = []
        _Hooked.arrived = 0

    def channel(self, cls: type[http.HTTPChannel] = http.HTTPChannel) -> tuple[http.HTTPChannel, StringTransport]:
        site = server.Site(Resource())
        site.requestFactory = _Request
        channel = cls()
        channel.site = site
        channel.requestFactory = _Request
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_requestLine(self) -> None:
        """
        9: while the headers are read (C{gotLength}), C{_command}, C{_path}
        and C{_version} hold the request line.
        """
        channel, _ = self.channel()
        channel.dataReceived(b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(_Request.lines, [(b"POST", b"/x?y=1", b"HTTP/1.1")])

    def test_stopReading(self) -> None:
        """
        8: the channel has the three read methods and, for a chunked body, a
        C{_transferDecoder} with C{dataCallback} and C{finishCallback};
        replaced, nothing more of the body is handed on.
        """
        channel, _ = self.channel()
        for name in ("dataReceived", "rawDataReceived", "lineReceived"):
            self.assertTrue(callable(getattr(channel, name)), name)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
        self.assertEqual(_Request.chunks, [b"ab"])
        decoder = channel._transferDecoder
        self.assertTrue(callable(decoder.dataCallback) and callable(decoder.finishCallback))
        stopReading(channel)
        channel.dataReceived(b"2\r\ncd\r\n0\r\n\r\n")
        decoder.dataCallback(b"ef")
        self.assertEqual(_Request.chunks, [b"ab"])

    def test_allContentReceived(self) -> None:
        """
        10: C{allContentReceived} is called once per request, after its body.
        """
        channel, _ = self.channel(_Hooked)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(_Hooked.arrived, 0)
        channel.dataReceived(b"cd")
        self.assertEqual(_Hooked.arrived, 1)
        self.assertIsInstance(channel, http.HTTPChannel)
        self.assertIn("allContentReceived", vars(http.HTTPChannel))


class _Watched(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def onFrameLength(self, length: int) -> None:
        self.lengths.append(length)
        if sum(self.lengths) > 100:
            self.sendClose(1000)


class WatchFramesTests(AutobahnTests):
    """
    Use 11: Autobahn's frame hooks, per instance while watched.
    """

    def setUp(self) -> None:
        super().setUp()
        self.factory.protocol = _Watched

    def test_lengthsBeforePayload(self) -> None:
        """
        Watched, each data frame's length is told as its header arrives
        (Autobahn's own checks still run); after a close frame no frame data
        is kept; unwatched, Autobahn's own hooks are back.
        """
        server, client, pump = self.connect()
        server.watchFrames(True)
        client.beginMessage()
        client.sendMessageFrame(b"x" * 50)
        client.beginMessageFrame(1000)
        client.sendMessageFrameData(b"y" * 1000)
        pump.flush()
        self.assertEqual(server.lengths, [50, 1000])
        self.assertNotEqual(server.state, WebSocketProtocol.STATE_OPEN)
        self.assertEqual(server.message_data_total_length, 1050)
        # the first frame was kept, the second one's payload was not
        self.assertEqual(b"".join(server.message_data), b"x" * 50)
        self.assertIn("_onMessageFrameBegin", vars(server))
        server.watchFrames(False)
        self.assertNotIn("_onMessageFrameBegin", vars(server))
        self.assertNotIn("_onMessageFrameData", vars(server))

    def test_calledThroughInstance(self) -> None:
        """
        Autobahn calls the hooks through the instance (so a per-instance one
        takes their place).
        """
        source = inspect.getsource(autobahnProtocol.WebSocketProtocol.onFrameBegin)
        source += inspect.getsource(autobahnProtocol.WebSocketProtocol.onFrameData)
        self.assertIn("self._onMessageFrameBegin(", source)
        self.assertIn("self._onMessageFrameData(", source)


class FrameEventsTests(AutobahnTests):
    """
    Use 17: the frame events go to Autobahn's hooks without its Twisted
    adapter's forwarding methods.
    """

    def test_adapterForwardsOnly(self) -> None:
        """
        Autobahn calls the private names, and its adapter's versions only
        call the hooks of the same name (which the private names are bound
        to here); its C{onMessageFrameEnd} hands C{frame_data} to
        C{onMessageFrame}, which extends C{message_data} (what
        C{_onMessageFrameEnd} does here in one).
        """
        source = "".join(inspect.getsource(getattr(autobahnProtocol.WebSocketProtocol, name))
                         for name in ("onFrameBegin", "onFrameData", "onFrameEnd"))
        for name in ("_onMessageBegin(", "_onMessageFrameBegin(", "_onMessageFrameData(", "_onMessageFrameEnd()",
                     "_onMessageEnd()"):
            self.assertIn("self." + name, source)
        from autobahn.twisted.websocket import WebSocketAdapterProtocol

        forwards = {"onMessageBegin": "isBinary", "onMessageFrameBegin": "length", "onMessageFrameData": "payload",
                    "onMessageFrameEnd": "", "onMessageFrame": "payload", "onMessageEnd": ""}
        for name, argument in forwards.items():
            body = inspect.getsource(getattr(WebSocketAdapterProtocol, "_" + name)).strip().splitlines()[1:]
            self.assertEqual([line.strip() for line in body], [f"self.{name}({argument})"])
        end = inspect.getsource(autobahnProtocol.WebSocketProtocol.onMessageFrameEnd)
        self.assertIn("self._onMessageFrame(self.frame_data)", end)
        self.assertIn("self.message_data.extend(payload)", inspect.getsource(autobahnProtocol.WebSocketProtocol.onMessageFrame))

    def test_noForwarding(self) -> None:
        """
        Messages, in one frame or several, arrive whole without a call of
        the adapter's forwarding methods.
        """
        from autobahn.twisted.websocket import WebSocketAdapterProtocol

        def forwarded(*args: Any) -> None:
            raise AssertionError("the adapter's forwarding method was called")

        for name in ("_onMessageBegin", "_onMessageFrameBegin", "_onMessageFrameData", "_onMessageFrameEnd",
                     "_onMessageFrame", "_onMessageEnd"):
            self.patch(WebSocketAdapterProtocol, name, forwarded)
        server, client, pump = self.connect()
        client.sendMessage(b"one")
        client.beginMessage()
        client.sendMessageFrame(b"tw")
        client.sendMessageFrame(b"o")
        client.endMessage()
        pump.flush()
        self.assertEqual(server.messages, [(b"one", False), (b"two", False)])
        self.assertIsNone(server.frame_data)


class _HalfClosing(iosim.FakeTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.halfClosed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.halfClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class LingerTests(AutobahnTests):
    """
    Use 14: C{closeHandshakeTimeout} per protocol, and C{_closeConnection},
    where Autobahn's server aborts once the close handshake is done.
    """

    def connectHalfClosing(self) -> tuple[_Recorder, _Client, iosim.IOPump, _HalfClosing]:
        server = self.factory.buildProtocol(None)
        clientFactory = WebSocketClientFactory("ws://127.0.0.1:8085/chat")
        clientFactory.protocol = _Client
        client = clientFactory.buildProtocol(None)
        transport = _HalfClosing(server, isServer=True)
        pump = iosim.connect(server, transport, client, iosim.FakeTransport(client, isServer=False))
        pump.flush()
        return server, client, pump, transport

    def test_abortWhenAnswered(self) -> None:
        """
        Without it, Autobahn's server aborts the connection (a reset) once
        the client answered its close frame, and times the answer.
        """
        server, client, pump, transport = self.connectHalfClosing()
        server.sendClose(4011, "Slow consumer")
        self.assertIsNotNone(server.closeHandshakeTimeoutCall)
        pump.flush()
        self.assertEqual((transport.aborted, transport.halfClosed), (True, False))

    def test_halfCloseWhenAnswered(self) -> None:
        """
        With it, no timer of Autobahn's waits for the answer, and the
        answer is followed by a half-close, not an abort.
        """
        server, client, pump, transport = self.connectHalfClosing()
        server.lingerOnClose()
        server.sendClose(4011, "Slow consumer")
        self.assertIsNone(server.closeHandshakeTimeoutCall)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pump.flush()
        self.assertEqual((transport.aborted, transport.halfClosed), (False, True))
        self.assertEqual(client.closedWith, None)
        self.assertEqual(server.state, WebSocketProtocol.STATE_CLOSED)

    def test_abortUnanswered(self) -> None:
        """
        With it, a drop that is not the end of a clean close handshake (a
        protocol error, the caller's abort) still aborts.
        """
        server, client, pump, transport = self.connectHalfClosing()
        server.lingerOnClose()
        server.sendClose(4011, "Slow consumer")
        server.dropConnection(abort=True)
        self.assertEqual((transport.aborted, transport.halfClosed), (True, False))


class UnackedTests(SynchronousTestCase):
    """
    Use 15: Twisted's write buffer of a TCP transport, and C{SIOCOUTQ}.
    """

    def test_writeBuffer(self) -> None:
        """
        A C{FileDescriptor}'s unwritten bytes are C{dataBuffer} from
        C{offset}, and C{_tempDataLen} of what waits to be joined to it;
        C{write} keeps them there until the reactor writes.
        """
        fd = FileDescriptor(reactor=Clock())
        fd.startWriting = lambda: None  # type: ignore[method-assign]
        fd.connected = True
        self.assertEqual((fd.dataBuffer, fd.offset, fd._tempDataLen), (b"", 0, 0))
        fd.write(b"x" * 100)
        fd.write(b"y" * 20)
        self.assertEqual(unackedBytes(fd), 120)
        fd.dataBuffer, fd.offset = b"z" * 50, 10
        self.assertEqual(unackedBytes(fd), 40 + 120)

    def test_wrapper(self) -> None:
        """
        A wrapper (TLS) is looked through to its C{transport}; a transport
        that is not TCP has nothing unacknowledged.
        """
        fd = FileDescriptor(reactor=Clock())
        fd.startWriting = lambda: None  # type: ignore[method-assign]
        fd.connected = True
        fd.write(b"x" * 30)

        class Wrapper:
            transport = fd

        self.assertEqual(unackedBytes(Wrapper()), 30)
        self.assertEqual(unackedBytes(StringTransport()), 0)

    def test_kernel(self) -> None:
        """
        C{SIOCOUTQ} counts what a TCP socket's peer has not acknowledged:
        nothing once the peer's buffer took it, the rest when the peer does
        not read.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("SIOCOUTQ is Linux's")
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        client = socket.socket()
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listening.getsockname())
        server, _ = listening.accept()
        self.addCleanup(server.close)
        self.assertEqual(kernelUnacked(server), 0)
        server.setblocking(False)
        sent = 0
        try:
            while True:
                sent += server.send(b"x" * 65536)
        except BlockingIOError:
            pass
        unacked = kernelUnacked(server)
        self.assertGreater(unacked, 0)
        self.assertLess(unacked, sent)
        received = 0
        client.settimeout(5)
        while received < sent:
            received += len(client.recv(1 << 20))
        self.assertEqual(kernelUnacked(server), 0)
        self.assertEqual(kernelUnacked(object()), 0)


class UnackedGaugeTests(SynchronousTestCase):
    """
    Use 15, walked once: L{UnackedGauge} answers what L{unackedBytes} does.
    """

    def test_writeBuffer(self) -> None:
        """
        The gauge of a C{FileDescriptor}, or of a wrapper around one, reads
        its write buffer as it is when asked, not when the gauge was made.
        """
        fd = FileDescriptor(reactor=Clock())
        fd.startWriting = lambda: None  # type: ignore[method-assign]
        fd.connected = True

        class Wrapper:
            transport = fd

        direct, wrapped = UnackedGauge(fd), UnackedGauge(Wrapper())
        self.assertEqual((direct(), wrapped()), (0, 0))
        fd.write(b"x" * 100)
        fd.write(b"y" * 20)
        self.assertEqual((direct(), wrapped(), unackedBytes(fd)), (120, 120, 120))
        fd.dataBuffer, fd.offset = b"z" * 50, 10
        self.assertEqual((direct(), wrapped()), (160, 160))

    def test_notTCP(self) -> None:
        """
        A transport that is not TCP has nothing unacknowledged.
        """
        transport = StringTransport()
        transport.write(b"x" * 10)
        self.assertEqual(UnackedGauge(transport)(), 0)
        self.assertEqual(UnackedGauge(object())(), 0)

    def test_closedSocket(self) -> None:
        """
        The gauge keeps the socket, not its number: once closed (the number
        free for another connection's socket) it counts nothing.
        """
        sock = socket.socket()

        class Handle:
            def getHandle(self) -> socket.socket:
                return sock

        gauge = UnackedGauge(Handle())
        self.assertEqual(gauge(), 0)
        sock.close()
        other = socket.socket()
        self.addCleanup(other.close)
        self.assertEqual(gauge(), 0)


class _Stuffer(Protocol):
    """
    Writes C{size} bytes once connected, and keeps its transport.
    """

    def __init__(self, size: int, connected: Deferred[Any]) -> None:
        self.size = size
        self.made = connected

    def connectionMade(self) -> None:
        self.transport.write(b"x" * self.size)  # type: ignore[union-attr]
        self.made.callback(self.transport)


class _Stalled(Protocol):
    """
    Reads nothing once the first bytes came (over TLS, once the handshake
    is done): the peer's writes fill the kernel's buffers.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]


class UnackedGaugeSocketTests(TestCase):
    """
    L{UnackedGauge} against the wrapper walk of L{unackedBytes}, on real
    loopback connections (plain TCP and TLS) whose client reads nothing.
    """

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("SIOCOUTQ is Linux's")

    @inlineCallbacks
    def stalled(self, tls: bool) -> Any:
        """
        Connect a client that reads nothing to a server that writes 8 MB;
        fire with the server's transport once the kernel holds some of it
        unacknowledged and Twisted's buffer the rest.
        """
        from twisted.internet import reactor
        from twisted.internet.ssl import DefaultOpenSSLContextFactory

        connected: Deferred[Any] = Deferred()
        factory = Factory.forProtocol(lambda: _Stuffer(8 << 20, connected))
        clientFactory = Factory.forProtocol(_Stalled)
        if tls:
            port = reactor.listenSSL(0, factory, DefaultOpenSSLContextFactory(KEY, CERT), interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = (SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, _trust()) if tls
                    else TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        client = yield endpoint.connect(clientFactory)
        self.addCleanup(client.transport.abortConnection)
        transport = yield connected
        self.addCleanup(transport.abortConnection)
        inner = transport.transport if tls else transport
        for _ in range(500):
            if kernelUnacked(inner.getHandle()) and len(inner.dataBuffer) - inner.offset:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        return transport, inner

    @inlineCallbacks
    def check(self, tls: bool) -> Any:
        transport, inner = yield self.stalled(tls)
        gauge = UnackedGauge(transport)
        measured, walked = gauge(), unackedBytes(transport)
        buffered = len(inner.dataBuffer) - inner.offset + inner._tempDataLen
        kernel = kernelUnacked(inner.getHandle())
        self.assertEqual(measured, walked)
        self.assertEqual(measured, buffered + kernel)
        self.assertGreater(kernel, 0)
        self.assertGreater(buffered, 0)
        # the same gauge, asked again later: a number of now
        from twisted.internet import reactor

        yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(gauge(), unackedBytes(transport))

    def test_tcp(self) -> None:
        """
        Plain TCP: Twisted's write buffer and the kernel's send queue.
        """
        return self.check(False)

    def test_tls(self) -> None:
        """
        TLS: the wrapper is walked to the TCP transport, whose buffer (the
        ciphertext) and kernel queue count.
        """
        return self.check(True)


class EndpointStringTests(SynchronousTestCase):
    """
    Use 16: the grammar of Twisted's endpoint strings.
    """

    def test_parts(self) -> None:
        """
        The positional parts, and the C{key=value} ones by key, with their
        C{\\} escapes undone.
        """
        self.assertEqual(endpointStringParts("tcp:8085:backlog=1024"), (["tcp", "8085"], {"backlog": "1024"}))
        self.assertEqual(
            endpointStringParts(r"ssl:8443:privateKey=C\:\\keys\\a.key:certKey=b\=c.crt:interface=\:\:1"),
            (["ssl", "8443"], {"privateKey": "C:\\keys\\a.key", "certKey": "b=c.crt", "interface": "::1"}),
        )

    def test_quotedPaths(self) -> None:
        """
        A path quoted the way the configuration writes it into an endpoint
        string (L{wsserver.configschema._quote}) comes back unchanged.
        """
        from wsserver.configschema import _quote

        for path in ("certs/server.key", "odd:dir\\x=y.key", "C:\\keys\\a b.pem"):
            self.assertEqual(endpointStringParts(f"ssl:0:privateKey={_quote(path)}")[1], {"privateKey": path}, path)


class TwistedLoggerTests(SynchronousTestCase):
    """
    The use of twisted.logger's internals (12).
    """

    def test_logObservers(self) -> None:
        """
        12: a publisher's observers, in their order, as a copy; removing one
        through the public API is seen.
        """
        from twisted.logger import LogPublisher

        from wsserver._internals import logObservers

        first: list[Any] = []
        second: list[Any] = []
        publisher = LogPublisher(first.append, second.append)
        observers = logObservers(publisher)
        self.assertEqual(observers, [first.append, second.append])
        observers.clear()
        publisher.removeObserver(first.append)
        self.assertEqual(logObservers(publisher), [second.append])
class TwistdTests(SynchronousTestCase):
    """
    Use 13: twistd's own log observer, made for its options.
    """

    def test_logFile(self) -> None:
        """
        With C{--logfile}, the observer writes to that file.
        """
        import os

        from twisted.logger import Logger
        from twisted.scripts.twistd import ServerOptions

        from wsserver._internals import twistdLogObserver

        path = os.path.abspath(self.mktemp())
        options = ServerOptions()
        options.parseOptions(["--nodaemon", f"--logfile={path}"])
        observer = twistdLogObserver(options)
        Logger(observer=observer, namespace="t").info("hello {who}", who="log")
        with open(path, encoding="utf-8") as f:
            self.assertRegex(f.read(), r"^\S+ \[t#info\] hello log\n$")

    def test_stdout(self) -> None:
        """
        With C{--nodaemon} and no log file, it writes to stdout.
        """
        import io
        import sys

        from twisted.logger import Logger
        from twisted.scripts.twistd import ServerOptions

        from wsserver._internals import twistdLogObserver

        options = ServerOptions()
        options.parseOptions(["--nodaemon"])
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        Logger(observer=twistdLogObserver(options), namespace="t").info("hello")
        self.assertRegex(out.getvalue(), r"^\S+ \[t#info\] hello\n$")
