# -*- test-case-name: tests.test_internals -*-
"""
Every use, in the whole server, of what Autobahn and twisted.web keep to
themselves: attributes and methods that are not part of their documented
API, used where they offer no public hook.  Each use is named here, says
why, and has a test in C{tests/test_internals.py} that fails when the
library changes under it.  No other module reads or replaces a library's
private or undocumented attributes.

Autobahn (L{AutobahnServerProtocol}, a base for the server's adapter):

  1. C{dataReceived} calls C{_dataReceived} and reads C{data}, the
     buffered handshake request: a request over 16 KiB is refused with 431
     before Autobahn parses it (Autobahn buffers a request of any size), and
     the debug logging of the public C{dataReceived} is skipped (hot path).
  2. C{onMessageEnd} reads C{message_data}, C{message_is_binary} and
     C{failedByMe}: the message is handed on without Autobahn's C{_onMessage}
     and its txaio C{"message"} event (a Deferred per message nobody reads).
  3. C{sendCloseFrame} (internal, says its docstring) and C{dropConnection}
     are the only ways out of C{STATE_OPEN}: overridden to tell the adapter
     (L{AutobahnServerProtocol.onClosing}); C{sendCloseFrame} is also the
     only way to send the close codes that C{sendClose} refuses (1001, 1008).
  4. C{closeHandshakeTimeoutCall}: Autobahn's C{connectionLost} cancels its
     other timers but not this one (the wait for the answer to a close
     frame); cancelled in L{cancelCloseWait}.
  5. L{shedHandshake} drops what Autobahn keeps of the handshake
     (C{http_request_data}, C{http_headers}, ..., C{_wskey}) and its
     C{send_queue} (used only for chopped or synchronous writes, never made
     here): about 2 KB of an idle connection.  The handshake's attributes
     go from the instance (the class's C{None} stands for them), and the
     instance's C{__dict__} is made again: Autobahn gives a connection 88
     attributes, a dict of 256 slots (3.3 KB) that deleting keys does not
     shrink; the 76 left fit a new one of 128 (1.6 KB).
  6. L{plainRequest} reads C{http_headers} and C{http_status_line} (a
     request without C{Upgrade}: Autobahn has no hook for one), and
     L{sendPlainResponse} / L{refuseHandshake} answer with
     C{sendHttpErrorResponse}, C{sendData}, C{dropConnection} and set
     C{wasNotCleanReason} (its C{failHandshake} logs a warning per refusal).
  7. L{makeDebugArgumentsLazy} replaces C{pformat}, C{hltype} and C{hlval}
     in Autobahn's modules and C{Timings.__str__} (which reads
     C{Timings._timings}): Autobahn formats its debug-log arguments even
     when debug logging is off.

  11. L{AutobahnServerProtocol.watchFrames}: C{onMessageFrameBegin} and
      C{onMessageFrameData} are documented hooks, but Autobahn's own
      versions keep the message's state (C{frame_data}, its size checks):
      while watched, per-instance versions call Autobahn's, tell the length
      of each data frame as it begins (L{AutobahnServerProtocol.onFrameLength})
      and buffer nothing once not open.  Only while watched: the hot path
      pays nothing.

  17. Autobahn's Twisted adapter forwards each frame event through a
      private method of its own (C{_onMessageBegin}, C{_onMessageFrameBegin},
      C{_onMessageFrameData}, C{_onMessageFrameEnd}, C{_onMessageFrame},
      C{_onMessageEnd}) to the documented hook of the same name without
      the underscore: L{AutobahnServerProtocol} binds those private names
      to the hooks themselves, and C{_onMessageFrameEnd} to what
      Autobahn's C{onMessageFrameEnd} and C{onMessageFrame} do together
      (the frame's data goes to C{message_data} unless C{failedByMe}):
      seven calls less per message (hot path).  The hooks are not to be
      overridden by subclasses (L{AutobahnServerProtocol.onWholeMessage}
      is theirs; L{watchFrames} sets the private names per instance).

  14. L{AutobahnServerProtocol.lingerOnClose}: the close of a slow
      consumer waits for the client to read its frames.  It sets
      C{closeHandshakeTimeout} (a protocol option Autobahn copies to each
      protocol when it connects) to 0 on the one protocol, so Autobahn does
      not abort it (the session times the grace instead), and overrides
      C{_closeConnection}, where Autobahn's server aborts the TCP
      connection (a reset) once the client answered the close frame: it
      half-closes instead (FIN, C{loseWriteConnection}; over TLS the
      wrapper's C{loseConnection}, a TLS close alert, since a FIN under
      TLS without one reads as a truncated, unclean end).

twisted.internet (for C{wsserver.connection}):

  15. L{unackedBytes} and L{UnackedGauge} read Twisted's write buffer of
      a TCP transport (C{FileDescriptor.dataBuffer}, C{offset},
      C{_tempDataLen}: bytes written and not yet handed to the kernel),
      through a TLS or PROXY wrapper's C{transport}; and ask the kernel
      (Linux C{SIOCOUTQ}, an ioctl on the public C{getHandle()} socket)
      how many bytes it holds that the peer has not acknowledged.
      L{UnackedGauge} walks the wrappers once per connection, so that the
      ring's trim (every 64 KiB written) is the buffer arithmetic and one
      ioctl into a buffer of its own.

twisted.internet (for C{wsserver.checks}):

  16. L{endpointStringParts} calls C{twisted.internet.endpoints._parse}:
      the grammar of endpoint strings (C{:}-separated parts, C{key=value}
      ones, C{\\} escapes), to find the certificate and key files that an
      C{ssl:} string names and report a missing or unreadable one by its
      key before Twisted loads them; Twisted parses strings only inside
      C{serverFromString}, which loads the files.

twisted.web (for C{wsserver.rest}):

  8. L{stopReading}: a request refused with 413 before its body arrived
     must not be read further: C{HTTPChannel} has no public way to stop
     parsing, so its C{dataReceived}, C{rawDataReceived} and
     C{lineReceived} are replaced, and the callbacks of its private
     C{_transferDecoder}.
  9. L{requestLine}: the request line of such a request, which the channel
     has not handed to the request yet (C{_command}, C{_path},
     C{_version}).
  10. C{HTTPChannel.allContentReceived} (undocumented): called when a
      request has arrived whole; L{HTTPChannelHooks} turns it into
      C{onAllContentReceived}, where the REST channel stops its request
      deadline.

twisted.logger (for C{wsserver.logflood}):

  12. L{logObservers} reads C{LogPublisher._observers}: the observers that
      twistd gave the global publisher (a file, syslog, C{--logger}'s) are
      moved behind the log-flood guard once logging has begun; twistd
      offers no hook between choosing them and adding them.

twistd (for C{wsserver.quietlog}):

  13. L{twistdLogObserver} calls C{UnixAppLogger._getLogObserver}: the log
      observer twistd would make for its options (stdout, C{--logfile} with
      its SIGUSR1 rotation, C{--syslog}), which the server puts behind its
      filter of the libraries' internal lines; twistd has a public hook for
      an observer of one's own (the application's C{ILogObserver}
      component), none to wrap its own.
"""

from __future__ import annotations

import array
import fcntl
import pprint
import struct
import termios
from typing import Any, Callable, Sequence

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.abstract import FileDescriptor
from twisted.logger import ILogObserver, LogPublisher
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

__all__ = [
    "AutobahnServerProtocol",
    "HTTPChannelHooks",
    "Lazy",
    "UnackedGauge",
    "endpointStringParts",
    "logObservers",
    "makeDebugArgumentsLazy",
    "requestLine",
    "stopReading",
    "twistdLogObserver",
    "unackedBytes",
]

_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_OPEN = WebSocketProtocol.STATE_OPEN

#: Autobahn attributes that only the opening handshake needs (use 5).
HANDSHAKE_LEFTOVERS = (
    "http_request_data",
    "http_headers",
    "http_response_data",
    "http_request_params",
    "http_status_line",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
    "_wskey",
)


def _ignoreMessage(payload: bytes, isBinary: bool) -> None:
    pass


class AutobahnServerProtocol(WebSocketServerProtocol):
    """
    Autobahn's server protocol with the hooks it lacks (uses 1 to 6).  A
    subclass sets L{onWholeMessage}, and overrides L{onRequestBytes} and
    L{onClosing}.
    """

    # what the handshake left, once shed (use 5): read as None from here
    http_request_data = http_headers = http_response_data = http_request_params = None
    http_status_line = http_request_uri = http_request_host = http_request_path = None
    websocket_origin = websocket_protocols = websocket_extensions = _wskey = None

    #: C{onWholeMessage(payload, isBinary)}: a whole message arrived (set
    #: per connection to the receiver's bound method: no call in between)
    onWholeMessage: Callable[[bytes, bool], None] = staticmethod(_ignoreMessage)

    def onRequestBytes(self, buffered: bytes, data: bytes) -> bool:
        """
        While the handshake request arrives: C{data} was read after
        C{buffered}.  Return C{True} when it is refused (nothing more is
        read).
        """
        return False

    def onFrameLength(self, length: int) -> None:
        """
        While watched (L{watchFrames}): a data frame of C{length} bytes
        begins; its payload has not arrived.
        """

    # use 11 (through the names of use 17)
    def watchFrames(self, on: bool) -> None:
        """
        Tell L{onFrameLength} of each data frame from now on (C{on}), or no
        longer; while watched, frame data that arrives once the connection
        is no longer open (a close frame was sent) is not kept.
        """
        if on:
            self._onMessageFrameBegin = self._watchedFrameBegin  # type: ignore[method-assign]
            self._onMessageFrameData = self._watchedFrameData  # type: ignore[method-assign]
        else:
            vars(self).pop("_onMessageFrameBegin", None)
            vars(self).pop("_onMessageFrameData", None)

    def _watchedFrameBegin(self, length: int) -> None:
        type(self).onMessageFrameBegin(self, length)
        if self.state == _OPEN and not self.failedByMe:
            self.onFrameLength(length)

    def _watchedFrameData(self, payload: bytes) -> None:
        if self.state == _OPEN:
            type(self).onMessageFrameData(self, payload)

    def onClosing(self) -> None:
        """
        The connection leaves C{STATE_OPEN}: a close frame is sent (ours,
        Autobahn's for a protocol error, or the reply to the client's), or
        the connection is dropped.  Nothing may be written after it.
        """

    # use 1
    def dataReceived(self, data: bytes) -> None:
        if self.state == _CONNECTING and self.onRequestBytes(self.data, data):
            return
        self._dataReceived(data)

    # use 2
    def onMessageEnd(self) -> None:
        if not self.failedByMe:
            self.onWholeMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    # use 17: Autobahn calls these (self._onMessageBegin(...) and so on);
    # its adapter's versions only call the hooks without the underscore
    _onMessageBegin = WebSocketServerProtocol.onMessageBegin
    _onMessageFrameBegin = WebSocketServerProtocol.onMessageFrameBegin
    _onMessageFrameData = WebSocketServerProtocol.onMessageFrameData
    _onMessageEnd = onMessageEnd

    def _onMessageFrameEnd(self) -> None:
        # (Autobahn's onMessageFrameEnd, then its onMessageFrame, in one)
        if not self.failedByMe:
            self.message_data.extend(self.frame_data)
        self.frame_data = None

    # use 3
    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False) -> None:
        if self.state == _OPEN:
            self.onClosing()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def dropConnection(self, abort: bool = False) -> None:
        if self.state == _OPEN:
            self.onClosing()
        super().dropConnection(abort)

    def sendAnyClose(self, code: int, reason: str) -> None:
        """
        Send a close frame with any code: C{sendClose} accepts only 1000 and
        3000-4999.  The reason is cut to the 123 bytes a close frame holds,
        on a character boundary.
        """
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)
        else:
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123), isReply=False)

    def isConnecting(self) -> bool:
        """
        Whether the opening handshake is still under way.
        """
        return self.state == _CONNECTING

    # use 4
    def cancelCloseWait(self) -> None:
        """
        Cancel the wait for the answer to a close frame (Autobahn's
        C{connectionLost} leaves it running).
        """
        call = getattr(self, "closeHandshakeTimeoutCall", None)
        if call is not None:
            call.cancel()
            self.closeHandshakeTimeoutCall = None

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.cancelCloseWait()

    # use 14
    #: the close handshake ends with a half-close (see L{lingerOnClose})
    _halfCloseWhenAnswered = False

    def lingerOnClose(self) -> None:
        """
        For the close frame sent next: no timeout of Autobahn's for the
        client's answer (the caller times it), and once the client answered
        it, a half-close (FIN) rather than Autobahn's abort (a reset, which
        discards what the client's kernel received and the client did not
        read yet).
        """
        self.closeHandshakeTimeout = 0
        self._halfCloseWhenAnswered = True

    def _closeConnection(self, abort: bool = False) -> None:
        transport = self.transport
        if abort and self._halfCloseWhenAnswered and self.wasClean and transport is not None:
            if isinstance(transport, TLSMemoryBIOProtocol):
                # the close alert: the TCP connection ends once the client
                # answers it (or when the session's grace is over)
                transport.loseConnection()
                return
            halfClose = getattr(transport, "loseWriteConnection", None)
            if halfClose is not None:
                halfClose()
            else:
                transport.loseConnection()
            return
        super()._closeConnection(abort)

    # use 5
    def shedHandshake(self) -> None:
        """
        Drop what Autobahn keeps of the opening handshake, and its send
        queue; the instance's attributes in a dict of the size they need.
        """
        state = vars(self)
        for name in HANDSHAKE_LEFTOVERS:
            state.pop(name, None)
        state["send_queue"] = ()
        # a dict never shrinks when keys go: a new one of the right size
        self.__dict__ = {name: value for name, value in state.items()}

    # use 6
    def plainRequest(self) -> tuple[str, str] | None:
        """
        C{(method, target)} of a request without C{Upgrade} (a plain HTTP
        request), or L{None}: not one, or refused before it was parsed.
        """
        headers = getattr(self, "http_headers", None)
        if headers is None or "upgrade" in headers:
            return None
        # the request line: 405 and 505 come before Autobahn read the path
        method, _, rest = (self.http_status_line or "").partition(" ")
        return method, rest.rpartition(" ")[0]

    def sendPlainResponse(self, code: int, reason: str, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        """
        Answer a plain HTTP request and close.
        """
        self.wasNotCleanReason = "plain HTTP request"
        self.sendHttpErrorResponse(code, reason, list(headers))
        self.sendData(body)
        self.dropConnection(abort=False)

    def refuseHandshake(self, code: int, reason: str, headers: Any = None) -> None:
        """
        Refuse the handshake as Autobahn's C{failHandshake} does, without
        its log line (the caller logs, rate-limited).
        """
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, headers)
        self.dropConnection(abort=False)


# use 7


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
    Make Autobahn's debug-log arguments lazy (idempotent): C{pformat} of
    some 40 settings on every new connection, C{hltype}/C{hlval} a dozen
    times per handshake, about a quarter of the time of a connect.  Called
    once by the outermost layers (C{twistd wsserver}, C{wsserver-bench}),
    never on import; the logs read the same when debug logging is on.
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


# use 15

#: Linux's C{SIOCOUTQ}: the bytes of a TCP socket's send queue that the peer
#: has not acknowledged (the same number as the terminal's C{TIOCOUTQ})
SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)


def kernelUnacked(sock: Any) -> int:
    """
    The bytes the kernel holds for the TCP socket C{sock} that its peer has
    not acknowledged (C{SIOCOUTQ}); 0 where the system cannot tell.
    """
    try:
        answer = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return 0
    return max(0, struct.unpack("i", answer)[0])


def _innermost(transport: Any) -> Any:
    """
    The transport under the TLS or PROXY wrappers of C{transport} (each a
    protocol wrapper whose C{transport} is the next): the first
    C{FileDescriptor}, or the last one found.
    """
    for _ in range(4):
        if isinstance(transport, FileDescriptor):
            break
        inner = getattr(transport, "transport", None)
        if inner is None or inner is transport:
            break
        transport = inner
    return transport


class UnackedGauge:
    """
    What one transport's peer has not acknowledged (L{unackedBytes}), with
    the wrappers walked once: the TCP transport (whose write buffer holds
    the ciphertext under TLS) and
    its socket are kept, and the kernel's answer is read into a buffer kept
    for it.  Made when first needed, for the life of the connection.

    The socket object is kept rather than its number: once closed its
    C{fileno()} is -1 and the ioctl fails (0), where a number kept could by
    then name another connection's socket.
    """

    __slots__ = ("_fd", "_socket", "_answer")

    def __init__(self, transport: Any) -> None:
        inner = _innermost(transport)
        #: the TCP transport whose write buffer counts (L{None}: none)
        self._fd: FileDescriptor | None = inner if isinstance(inner, FileDescriptor) else None
        sock = None
        getHandle = getattr(inner, "getHandle", None)
        if getHandle is not None:
            try:
                sock = getHandle()
            except (OSError, AttributeError):
                sock = None
        if sock is not None and not hasattr(sock, "fileno"):
            sock = None
        self._socket = sock
        self._answer = array.array("i", [0])

    def __call__(self) -> int:
        """
        The bytes written that the peer's TCP has not acknowledged: as
        L{unackedBytes} of the transport.
        """
        fd = self._fd
        total = 0 if fd is None else len(fd.dataBuffer) - fd.offset + fd._tempDataLen
        sock = self._socket
        if sock is not None:
            answer = self._answer
            try:
                fcntl.ioctl(sock, SIOCOUTQ, answer, True)
            except (OSError, ValueError, TypeError):
                return total
            if answer[0] > 0:
                total += answer[0]
        return total


def unackedBytes(transport: Any) -> int:
    """
    The bytes written to C{transport} that the peer's TCP has not
    acknowledged: Twisted's write buffer of the TCP transport under any TLS
    or PROXY wrapper (under TLS the ciphertext counts, which is more than
    the plain text) and the kernel's unacknowledged send queue.  0 for a
    transport that is not TCP (a test's C{StringTransport}).  The wrappers
    are walked on every call: a connection asks its L{UnackedGauge}.
    """
    return UnackedGauge(transport)()


# use 16


def endpointStringParts(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and the C{key=value} parts of the endpoint string
    C{description}, unescaped, as C{serverFromString} reads them (use 16).

    @raise Exception: when C{description} cannot be parsed.
    """
    from twisted.internet.endpoints import _parse

    return _parse(description)


# uses 8 to 10


def _ignore(*args: Any) -> None:
    pass


def stopReading(channel: HTTPChannel) -> None:
    """
    Read nothing more from C{channel}: not the rest of a body, not a next
    request.
    """
    channel.dataReceived = channel.rawDataReceived = channel.lineReceived = _ignore  # type: ignore[method-assign]
    decoder = getattr(channel, "_transferDecoder", None)
    if decoder is not None:
        decoder.dataCallback = decoder.finishCallback = _ignore


def requestLine(channel: HTTPChannel) -> tuple[bytes, bytes, bytes]:
    """
    C{(method, uri, version)} of the request that C{channel} is reading,
    before it handed them to the request.
    """
    return channel._command, channel._path, channel._version


class HTTPChannelHooks(HTTPChannel):
    """
    twisted.web's channel with a hook for a request that arrived whole
    (use 10).
    """

    def onAllContentReceived(self) -> None:
        """
        The current request (headers and body) has arrived whole.
        """

    def allContentReceived(self) -> None:
        self.onAllContentReceived()
        super().allContentReceived()


# use 12


def logObservers(publisher: LogPublisher) -> list[ILogObserver]:
    """
    The observers of C{publisher}, in their order (a copy).
    """
    return list(publisher._observers)
def twistdLogObserver(options: Any) -> Any:
    """
    The log observer that twistd makes for its C{options} (a
    C{ServerOptions}) when nothing else is asked for (use 13).
    """
    from twisted.scripts._twistd_unix import UnixAppLogger

    return UnixAppLogger(options)._getLogObserver()
