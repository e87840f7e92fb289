"""
The WebSocket side (SPEC section 3): one client connection.

Wire protocol, as the original server's:

  - connect to C{ws(s)://HOST:PORT/chat?id=USER_ID}; another path is refused
    at the handshake with HTTP 404, an C{Origin} outside
    C{server.allowedOrigins} (when that list is set) with HTTP 403;
  - the handshake completes, then the id and the auth are checked: a bad id
    closes with 4000, failed auth with 4050 C{Unauthorized}; messages that
    arrive before the check passed wait for it, and are dropped if it fails;
  - with C{jwt} auth the token's C{sub} must equal the id, or gives it when
    the query has none; the connection closes with 4051 C{Token expired}
    when the token's C{exp} passes;
  - each message (text frame, or binary frame holding the same UTF-8 JSON) is
    a JSON object C{{"type", "text", "sender", "recipients", "data",
    "timestamp"}}; an invalid one closes with 4001 C{Invalid payload. ...},
    one over C{maxSize} with 1009;
  - recipients get C{{"id", "type", "text", "timestamp", "sender",
    "recipients", "data"}} as a text frame (with C{"seq"} when the inbox is
    on); C{?since=N} resumes: the inbox after N first (C{?since} malformed:
    4000); a message with C{"ack"} is answered C{message_ack} once committed;
  - the watchdog closes with 4010; a server shutdown with 1001;
  - a plain HTTP GET (no Upgrade) of C{/} gets the demo chat page (when
    C{server.demoPage}), of C{/wsserver.js} the client library (always),
    any other one 404;
  - C{server.limits} (see L{wsserver.limits}): refused at the handshake with
    HTTP 503 (C{maxConnections}), 429 (C{maxConnectionsPerIp},
    C{authFailuresPerMinute}), 431 (a request over 16 KiB); closed with 4008
    (C{maxConnectionsPerUser}), 4029 (C{messagesPerSecond}), 4011 (a slow
    consumer, C{sendBufferBytes}), 1008 (C{preAuthBytes}, an auth check
    that outlasts C{handshakeTimeoutSeconds}).

The modules: L{session} the connection's logic (a state machine with a
clock, no transport), L{protocol} the thin Autobahn adapter and its
factory, L{pages} the answers to plain HTTP requests.
"""

from .pages import PlainResponse
from .protocol import ChatServerFactory, ChatServerProtocol, prepareFrame
from .session import CLOSE_CODES, MAX_EARLY_MESSAGES, Session

__all__ = ["CLOSE_CODES", "MAX_EARLY_MESSAGES", "ChatServerFactory", "ChatServerProtocol", "PlainResponse",
           "Session", "prepareFrame"]
