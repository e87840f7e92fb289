"""
End-to-end tests: the real server on loopback port 0, real Autobahn clients
over ws:// and wss://, and treq against the REST API.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import orjson
import treq
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from .support import CERT, ChatClient, closeClient, openClient, restRequest, startServer

#: the original's id rule, whose refusals these tests know
NUMERIC = {"chat": {"userIds": "numeric"}}


def _later(seconds: float = 0.05) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


class ChatTests(TestCase):
    """
    Two or more clients chat through the server.
    """

    timeout = 20
    tls = False

    @inlineCallbacks
    def open(self, server, userId=None, **kwargs):
        client = yield openClient(server, userId=userId, **kwargs)
        self.addCleanup(closeClient, client)
        return client

    @inlineCallbacks
    def test_chat(self):
        """
        A message from one user reaches every connection of the recipient, as
        the delivered object of SPEC section 3.
        """
        server = yield startServer(self, tls=self.tls)
        alice = yield self.open(server, 1)
        phone = yield self.open(server, 2)
        laptop = yield self.open(server, 2)
        alice.send({"type": "text", "text": "hi", "recipients": [2], "data": {"k": [1, None]}})
        for client in (phone, laptop):
            got = yield client.messages.get()
            self.assertEqual(list(got), ["id", "type", "text", "timestamp", "sender", "recipients", "data"])
            self.assertEqual(
                (got["type"], got["text"], got["sender"], got["recipients"], got["data"]),
                ("text", "hi", 1, [2], {"k": [1, None]}),
            )
        self.assertEqual(len(alice.messages.pending), 0)

    @inlineCallbacks
    def test_order(self):
        """
        Messages from one sender arrive in the order they were sent.
        """
        server = yield startServer(self, tls=self.tls)
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        for i in range(200):
            alice.send({"type": "text", "text": str(i), "recipients": [2]})
        texts = []
        for i in range(200):
            texts.append((yield bob.messages.get())["text"])
        self.assertEqual(texts, [str(i) for i in range(200)])

    @inlineCallbacks
    def test_binaryAndFragmented(self):
        """
        A binary frame holding the JSON, and a message fragmented into many
        frames, are routed like a text frame; recipients get text frames.
        """
        server = yield startServer(self, tls=self.tls)
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        alice.send({"type": "text", "text": "bin", "recipients": [2]}, binary=True)
        payload = orjson.dumps({"type": "text", "text": "x" * 5000, "recipients": [2]})
        alice.beginMessage(isBinary=False)
        for i in range(0, len(payload), 700):
            alice.sendMessageFrame(payload[i : i + 700])
        alice.endMessage()
        self.assertEqual((yield bob.messages.get())["text"], "bin")
        self.assertEqual((yield bob.messages.get())["text"], "x" * 5000)

    @inlineCallbacks
    def test_badIdsKeepOthersServed(self):
        """
        Connections with a bad id are closed with 4000 and a reason saying
        which problem; other clients keep chatting meanwhile.
        """
        server = yield startServer(self, NUMERIC, tls=self.tls)
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        cases = {
            "": "Id required in query parameter: ?id={id}",
            "x=1": "Id required in query parameter: ?id={id}",
            "id=": "Id required in query parameter: ?id={id}",
            "id=abc": "Invalid id 'abc': must be an unsigned 64-bit integer",
            "id=-3": "Invalid id -3: must not be negative",
            "id=18446744073709551616": "Invalid id 18446744073709551616: over the maximum 2^64-1",
            "id=0": "Invalid id 0: reserved for the server",
        }
        for query, reason in cases.items():
            client = yield openClient(server, query=query)
            self.assertEqual((yield client.closed), (4000, reason), query)
            alice.send({"type": "text", "text": query, "recipients": [2]})
            self.assertEqual((yield bob.messages.get())["text"], query)

    @inlineCallbacks
    def test_invalidPayloads(self):
        """
        Each invalid payload closes only its sender's connection with 4001 and
        the original's reason.
        """
        server = yield startServer(self, NUMERIC, tls=self.tls)
        bob = yield self.open(server, 2)
        cases = [
            ({"type": 1, "recipients": [2]}, "Invalid payload. $.type must be a string"),
            ({"type": "text", "recipients": [2]}, "Invalid payload. $.text must be string"),
            ({"type": "x", "sender": "1", "recipients": [2]}, "Invalid payload. $.sender must be uint64_t"),
            ({"type": "x", "sender": 9, "recipients": [2]}, "Invalid payload. $.sender must be your own id (1)"),
            ({"type": "x", "recipients": ["2"]}, "Invalid payload. $.recipients[] must be uint64_t[]"),
            ({"type": "x", "recipients": []}, "Invalid payload. $.recipients[] must contains at least 1 value"),
            ([1, 2], "Invalid payload. $ must be an object"),
        ]
        for payload, reason in cases:
            alice = yield openClient(server, userId=1)
            alice.send(payload)
            self.assertEqual((yield alice.closed), (4001, reason))
        alice = yield openClient(server, userId=1)
        alice.sendMessage(b'{"type": ')
        code, reason = yield alice.closed
        self.assertEqual(code, 4001)
        self.assertTrue(reason.startswith("Invalid payload. "), reason)
        alice = yield self.open(server, 1)
        alice.send({"type": "text", "text": "still here", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "still here")

    @inlineCallbacks
    def test_invalidUTF8(self):
        """
        A text frame that is not UTF-8 closes with 1007; a binary frame that
        is not UTF-8 JSON is an invalid payload (4001).
        """
        server = yield startServer(self, tls=self.tls)
        alice = yield openClient(server, userId=1)
        alice.sendMessage(b'{"type": "\xff", "recipients": [2]}', isBinary=False)
        self.assertEqual((yield alice.closed), (1007, "Invalid UTF-8 in text message"))
        alice = yield openClient(server, userId=1)
        alice.sendMessage(b'{"type": "\xff", "recipients": [2]}', isBinary=True)
        code, reason = yield alice.closed
        self.assertEqual(code, 4001)
        self.assertTrue(reason.startswith("Invalid payload. str is not valid UTF-8"), reason)

    @inlineCallbacks
    def test_tooBig(self):
        """
        A message over C{maxSize} (after reassembly) closes with 1009, the
        reason naming the limit.
        """
        server = yield startServer(self, {"chat": {"message": {"maxSize": "1K"}}}, tls=self.tls)
        alice = yield openClient(server, userId=1)
        payload = orjson.dumps({"type": "text", "text": "x" * 600, "recipients": [2]})
        alice.beginMessage(isBinary=False)
        alice.sendMessageFrame(payload)
        alice.sendMessageFrame(payload)
        alice.endMessage()
        code, reason = yield alice.closed
        self.assertEqual(code, WebSocketProtocol.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG)
        self.assertIn("1024", reason)

    @inlineCallbacks
    def test_longReasonCut(self):
        """
        A close reason longer than a close frame holds is cut to 123 bytes on
        a character boundary, so the client still reads it.
        """
        server = yield startServer(self, NUMERIC, tls=self.tls)
        client = yield openClient(server, query="id=" + quote("é" * 100))
        code, reason = yield client.closed
        self.assertEqual(code, 4000)
        self.assertLessEqual(len(reason.encode("utf-8")), 123)
        self.assertTrue(reason.startswith("Invalid id 'éé"), reason)

    @inlineCallbacks
    def test_undeliveredQueue(self):
        """
        With the undelivered queue on, a message for an offline user is kept
        and delivered when the user connects, before newer messages.
        """
        server = yield startServer(self, {"chat": {"enableUndeliveredQueue": True}}, tls=self.tls)
        alice = yield self.open(server, 1)
        alice.send({"type": "text", "text": "first", "recipients": [2, 3]})
        alice.send({"type": "text", "text": "second", "recipients": [2]})
        yield _later()
        bob = yield self.open(server, 2)
        alice.send({"type": "text", "text": "third", "recipients": [2]})
        got = []
        for _ in range(3):
            got.append((yield bob.messages.get()))
        self.assertEqual([m["text"] for m in got], ["first", "second", "third"])
        self.assertEqual(got[0]["recipients"], [2])

    @inlineCallbacks
    def test_sendBackAndDeliveryStatus(self):
        """
        With send-back and delivery status on, the sender's connections get
        the message and a C{notification_received} naming the message and the
        recipient.
        """
        raw = {"chat": {"message": {"enableSendBack": True, "enableDeliveryStatus": True}}}
        server = yield startServer(self, raw, tls=self.tls)
        alice = yield self.open(server, 1)
        bob = yield self.open(server, 2)
        alice.send({"type": "text", "text": "hi", "recipients": [2, 3]})
        sent = yield bob.messages.get()
        back = yield alice.messages.get()
        note = yield alice.messages.get()
        self.assertEqual(back, sent)
        self.assertEqual(
            (note["type"], note["sender"], note["recipients"], note["data"]),
            ("notification_received", 0, [1], {"id": sent["id"], "recipient": 2}),
        )

    @inlineCallbacks
    def test_botMessage(self):
        """
        A message for the bot (recipients [0]) reaches no client.
        """
        server = yield startServer(self, {"chat": {"message": {"enableSendBack": True}}}, tls=self.tls)
        alice = yield self.open(server, 1)
        alice.send({"type": "text", "text": "bot", "recipients": [0]})
        alice.send({"type": "text", "text": "me", "recipients": [0, 1]})
        got = yield alice.messages.get()
        self.assertEqual(got["text"], "me")
        response = yield restRequest(server, "GET", "/stat?id=1")
        body = yield response.json()
        self.assertEqual(body["data"]["sentMessages"], 2)

    @inlineCallbacks
    def test_headerAuth(self):
        """
        With header auth, a connection without the header is closed with 4050
        Unauthorized, and its messages were never routed; one with it chats.
        """
        raw = {"server": {"auth": {"type": "header", "name": "X-Token", "value": "s3cret"}}}
        server = yield startServer(self, raw, tls=self.tls)
        bob = yield self.open(server, 2, headers={"X-Token": "s3cret"})
        mallory = yield openClient(server, userId=1, headers={"X-Token": "guess"})
        mallory.send({"type": "text", "text": "spam", "recipients": [2]})
        self.assertEqual((yield mallory.closed), (4050, "Unauthorized"))
        alice = yield self.open(server, 1, headers={"X-Token": "s3cret"})
        alice.send({"type": "text", "text": "ok", "recipients": [2]})
        self.assertEqual((yield bob.messages.get())["text"], "ok")

    @inlineCallbacks
    def test_cookieAuth(self):
        """
        Cookie auth, the one a browser can use, passes with the cookie.
        """
        raw = {"server": {"auth": {"type": "cookie", "name": "session", "value": "abc"},
                          "allowedOrigins": ["https://app.example.com"]}}
        server = yield startServer(self, raw, tls=self.tls)
        bob = yield self.open(server, 2, headers={"Cookie": "theme=dark; session=abc",
                                                    "Origin": "https://app.example.com"})
        denied = yield openClient(server, userId=3, headers={"Cookie": "session=abd"})
        self.assertEqual((yield denied.closed), (4050, "Unauthorized"))
        self.assertTrue(bob.opened.called)

    @inlineCallbacks
    def test_shutdown(self):
        """
        Stopping the server closes every client with 1001 Server shutdown.
        """
        server = yield startServer(self, tls=self.tls)
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        yield server.service.stopService()
        self.assertEqual((yield alice.closed), (1001, "Server shutdown"))
        self.assertEqual((yield bob.closed), (1001, "Server shutdown"))


class SecureChatTests(ChatTests):
    """
    The same over wss:// and https://, with the development certificate.
    """

    tls = True


class HandshakeTests(TestCase):
    """
    Refusals at the HTTP level of the WebSocket handshake.
    """

    timeout = 20

    def handshake(self, server, path, origin=None):
        headers = {
            "Upgrade": ["websocket"],
            "Connection": ["Upgrade"],
            "Sec-WebSocket-Key": [base64.b64encode(b"0123456789abcdef").decode()],
            "Sec-WebSocket-Version": ["13"],
        }
        if origin:
            headers["Origin"] = [origin]
        return treq.get(f"http://127.0.0.1:{server.wsPort}{path}", headers=headers, persistent=False)

    @inlineCallbacks
    def test_wrongPath(self):
        """
        Another path than C{server.endpoint} is refused with 404.
        """
        server = yield startServer(self, {"server": {"endpoint": "/ws"}})
        response = yield self.handshake(server, "/chat?id=1")
        self.assertEqual(response.code, 404)
        yield response.content()

    @inlineCallbacks
    def test_alpn(self):
        """
        A TLS client that offers protocols over ALPN, as every browser does
        (C{h2}, C{http/1.1}), gets C{http/1.1} and its WebSocket, rather than
        a TLS alert.
        """
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.internet.endpoints import SSL4ClientEndpoint
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        server = yield startServer(self, tls=True)
        with open(CERT, "rb") as f:
            options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(f.read()),
                                          acceptableProtocols=[b"h2", b"http/1.1"])
        factory = WebSocketClientFactory(server.wsURL("id=1"))
        factory.protocol = ChatClient
        client = yield SSL4ClientEndpoint(reactor, "127.0.0.1", server.wsPort, options).connect(factory)
        self.addCleanup(closeClient, client)
        yield client.opened
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")

    @inlineCallbacks
    def test_origin(self):
        """
        With C{allowedOrigins}, another origin is refused with 403; a listed
        one, or none (not a browser), passes.
        """
        server = yield startServer(self, {"server": {"allowedOrigins": ["https://app.example.com"]}})
        response = yield self.handshake(server, "/chat?id=1", origin="https://evil.example.com")
        self.assertEqual(response.code, 403)
        yield response.content()
        client = yield openClient(server, userId=1, headers={"Origin": "https://app.example.com"})
        yield closeClient(client)
        client = yield openClient(server, userId=1)
        yield closeClient(client)


class PlainHTTPTests(TestCase):
    """
    Plain HTTP requests (no WebSocket upgrade) on the WebSocket port.
    """

    timeout = 20

    @inlineCallbacks
    def test_notFound(self):
        """
        Every plain request gets 404 C{Not Found}: other paths, the
        WebSocket path, another method, and Autobahn's old redirect query;
        no answer has a C{Server} header.
        """
        server = yield startServer(self)
        for method, path in (("GET", "/x"), ("GET", "/chat?id=1"), ("POST", "/chat"), ("PUT", "/"),
                             ("GET", "/x?redirect=http%3A%2F%2Fexample.com%2F&after=x")):
            response = yield treq.request(method, f"http://127.0.0.1:{server.wsPort}{path}", persistent=False)
            body = yield response.content()
            self.assertEqual((response.code, body), (404, b"Not Found\n"), (method, path))
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
            self.assertFalse(response.headers.hasHeader("server"), (method, path))

    @inlineCallbacks
    def test_root(self):
        """
        C{GET /} is answered by the factory's C{rootPage} hook: with the
        demo page off, 404, with no C{Server} header (not Autobahn's status
        page, which named its version).
        """
        server = yield startServer(self, {"server": {"demoPage": False}})
        response = yield treq.get(f"http://127.0.0.1:{server.wsPort}/", persistent=False)
        body = yield response.content()
        self.assertEqual((response.code, body), (404, b"Not Found\n"))
        self.assertFalse(response.headers.hasHeader("server"))
        self.assertNotIn(b"Autobahn", body)

    @inlineCallbacks
    def test_rootHook(self):
        """
        What the factory's C{rootPage} answers is what C{GET /} gets; other
        paths stay 404.
        """
        from wsserver.connection import PlainResponse

        server = yield startServer(self)
        page = PlainResponse(200, "OK", "text/html; charset=utf-8", b"<p>hello</p>")
        server.service.ws.factory.rootPage = lambda: page
        response = yield treq.get(f"http://127.0.0.1:{server.wsPort}/", persistent=False)
        self.assertEqual((response.code, (yield response.content())), (200, b"<p>hello</p>"))
        response = yield treq.get(f"http://127.0.0.1:{server.wsPort}/other", persistent=False)
        self.assertEqual((response.code, (yield response.content())), (404, b"Not Found\n"))

    @inlineCallbacks
    def test_clientLibraryRevalidated(self):
        """
        C{GET /wsserver.js} on the WebSocket port gets the client library
        (C{clients/js/wsserver.js}) with an ETag and C{Cache-Control:
        no-cache}; a second GET that sends that ETag in C{If-None-Match},
        as a browser revalidating its copy does, gets 304 with no body.
        """
        server = yield startServer(self)
        url = f"http://127.0.0.1:{server.wsPort}/wsserver.js"
        response = yield treq.get(url, persistent=False)
        body = yield response.content()
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "clients", "js", "wsserver.js"), "rb") as f:
            self.assertEqual((response.code, body), (200, f.read()))
        [etag] = response.headers.getRawHeaders("etag")
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-cache"])
        again = yield treq.get(url, headers={"If-None-Match": [etag]}, persistent=False)
        self.assertEqual((again.code, (yield again.content())), (304, b""))
        self.assertEqual(again.headers.getRawHeaders("etag"), [etag])

    @inlineCallbacks
    def test_handshakeNamesNoLibrary(self):
        """
        The WebSocket handshake's answer (101) has no C{Server} header.
        """
        server = yield startServer(self)
        client = yield openClient(server, userId=1)
        self.addCleanup(closeClient, client)
        self.assertEqual(client.http_status_line.split()[1], "101")
        self.assertNotIn("server", client.http_headers)


class RestTests(TestCase):
    """
    Every REST endpoint over a real socket.
    """

    timeout = 20

    @inlineCallbacks
    def test_endpoints(self):
        """
        /stats, /stat, /check-online, /send-message and /status answer as
        SPEC section 4 says, and a REST message reaches a WebSocket client.
        """
        server = yield startServer(self)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, bob)
        response = yield restRequest(
            server, "POST", "/send-message",
            data=json.dumps({"type": "text", "text": "from api", "recipients": [2]}).encode(),
            headers={"Content-Type": ["application/json; charset=utf-8"]},
        )
        self.assertEqual((response.code, (yield response.content())), (202, b""))
        got = yield bob.messages.get()
        self.assertEqual((got["sender"], got["text"]), (0, "from api"))
        response = yield restRequest(server, "GET", "/check-online?id=2")
        self.assertEqual((yield response.json()), {"success": True, "data": {"isOnline": True}})
        response = yield restRequest(server, "GET", "/stat?id=2")
        item = (yield response.json())["data"]
        self.assertEqual((item["id"], item["isOnline"], item["receivedMessages"]), (2, True, 1))
        response = yield restRequest(server, "GET", "/stats")
        body = yield response.json()
        self.assertEqual([i["id"] for i in body["data"]], [2])
        response = yield restRequest(server, "HEAD", "/status")
        self.assertEqual(response.code, 200)
        yield response.content()
        response = yield restRequest(server, "GET", "/stat")
        self.assertEqual((response.code, (yield response.json())),
                         (400, {"success": False, "status": 400, "message": "Id required"}))
        response = yield restRequest(server, "GET", "/nope")
        self.assertEqual((response.code, (yield response.json())),
                         (404, {"success": False, "status": 404, "message": "Not found"}))

    @inlineCallbacks
    def test_tooDeep(self):
        """
        A REST message whose C{data} is nested too deep is a 400 in the
        JSON error form, not a 500.
        """
        server = yield startServer(self)
        body = b'{"type": "x", "recipients": [2], "data": ' + b"[" * 300 + b"]" * 300 + b"}"
        response = yield restRequest(server, "POST", "/send-message", data=body,
                                     headers={"Content-Type": ["application/json"]})
        self.assertEqual(response.code, 400)
        self.assertTrue((yield response.json())["message"].startswith("Invalid payload. $.data cannot be carried"))

    @inlineCallbacks
    def test_basicAuth(self):
        """
        REST basic auth: 401 with C{WWW-Authenticate} without credentials,
        200 with them.
        """
        server = yield startServer(self, {"restApi": {"auth": {"type": "basic", "user": "u", "password": "p"}}})
        response = yield restRequest(server, "GET", "/stats")
        self.assertEqual(response.code, 401)
        self.assertEqual(response.headers.getRawHeaders("WWW-Authenticate"), ['Basic realm="wsserver"'])
        self.assertEqual((yield response.json())["message"], "Unauthorized")
        response = yield restRequest(server, "GET", "/stats", auth=("u", "p"))
        self.assertEqual(response.code, 200)
        yield response.content()

    @inlineCallbacks
    def test_tooLarge(self):
        """
        A body over C{maxSize} is answered 413.
        """
        server = yield startServer(self, {"chat": {"message": {"maxSize": 100}}})
        response = yield restRequest(
            server, "POST", "/send-message", data=b"x" * 1000, headers={"Content-Type": ["application/json"]}
        )
        self.assertEqual(response.code, 413)
        self.assertEqual((yield response.json())["status"], 413)


class RemoteAuthTests(TestCase):
    """
    Remote auth against a real HTTP service on loopback.
    """

    timeout = 20

    @inlineCallbacks
    def test_remote(self):
        """
        The server asks the remote URL with the client's cookie put into
        C{data}; a 2xx answer lets the client in, another closes it with 4050.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        seen = []

        class Check(Resource):
            isLeaf = True

            def render_POST(self, request):
                body = json.loads(request.content.read())
                seen.append((request.getHeader(b"x-api-key"), body))
                request.setResponseCode(200 if body["session"] == "good" else 403)
                return b"{}"

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Check()))
        self.addCleanup(port.stopListening)
        auth = {
            "type": "remote",
            "url": f"http://127.0.0.1:{port.getHost().port}/check",
            "headers": [{"X-Api-Key": "k"}],
            "data": {"session": "{0}"},
            "source": {"type": "cookie", "name": "sid"},
        }
        server = yield startServer(self, {"server": {"auth": auth}})
        good = yield openClient(server, userId=1, headers={"Cookie": "sid=good"})
        self.addCleanup(closeClient, good)
        bad = yield openClient(server, userId=2, headers={"Cookie": "sid=bad"})
        self.assertEqual((yield bad.closed), (4050, "Unauthorized"))
        good.send({"type": "text", "text": "me", "recipients": [1]})
        self.assertEqual((yield good.messages.get())["text"], "me")
        self.assertEqual(sorted(seen, key=lambda s: s[1]["session"]),
                         [(b"k", {"session": "bad"}), (b"k", {"session": "good"})])

    @inlineCallbacks
    def test_tricklingAnswerRefused(self):
        """
        A remote auth service that answers 200 and then sends its body a
        byte at a time is cut at C{timeoutSeconds}: the client is closed with
        4050 then, and the service sees its connection closed.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.task import LoopingCall
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET, Site

        lost = []

        class Trickle(Resource):
            isLeaf = True

            def render_POST(self, request):
                request.setResponseCode(200)
                request.setHeader(b"content-length", b"1000000")
                drip = LoopingCall(request.write, b" ")
                drip.start(0.1)

                def gone(reason):
                    drip.stop()
                    lost.append(reason)

                request.notifyFinish().addErrback(gone)
                return NOT_DONE_YET

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Trickle()))
        self.addCleanup(port.stopListening)
        auth = {
            "type": "remote",
            "url": f"http://127.0.0.1:{port.getHost().port}/check",
            "timeoutSeconds": 1,
            "source": {"type": "cookie", "name": "sid"},
        }
        server = yield startServer(self, {"server": {"auth": auth}})
        started = reactor.seconds()
        client = yield openClient(server, userId=1, headers={"Cookie": "sid=good"})
        self.assertEqual((yield client.closed), (4050, "Unauthorized"))
        elapsed = reactor.seconds() - started
        self.assertTrue(0.9 <= elapsed < 3, elapsed)
        yield _later(0.2)
        self.assertEqual(len(lost), 1)


class JWTTests(TestCase):
    """
    The jwt auth type on the real server.
    """

    timeout = 20

    @inlineCallbacks
    def test_expires(self):
        """
        A client with an HS256 token and no C{?id} is the token's C{sub}, and
        is closed with 4051 C{Token expired} when its C{exp} passes.
        """
        import jwt

        secret = "s" * 32
        auth = {"type": "jwt", "secret": secret, "algorithms": ["HS256"]}
        server = yield startServer(self, {"server": {"auth": auth}})
        exp = int(reactor.seconds()) + 2
        token = jwt.encode({"sub": "42", "exp": exp}, secret, algorithm="HS256")
        client = yield openClient(server, headers={"Authorization": f"Bearer {token}"})
        client.send({"type": "text", "text": "me", "recipients": [42]})
        self.assertEqual((yield client.messages.get())["sender"], 42)
        self.assertEqual((yield client.closed), (4051, "Token expired"))
        self.assertTrue(exp <= reactor.seconds() < exp + 1.5, (exp, reactor.seconds()))

    @inlineCallbacks
    def test_rs256Cookie(self):
        """
        An RS256 token in a cookie, checked with a PEM public key file,
        lets its user in; a token for another user than C{?id}, or signed
        with the public key as an HMAC secret, is closed with 4050.
        """
        import hashlib
        import hmac

        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pem)
        auth = {"type": "jwt", "publicKey": path, "algorithms": ["RS256"], "issuer": "https://id.example.com",
                "source": {"type": "cookie", "name": "token"}}
        server = yield startServer(self, {"server": {"auth": auth, "allowedOrigins": ["https://app.example.com"]}})
        claims = {"sub": "7", "exp": int(reactor.seconds()) + 60, "iss": "https://id.example.com"}
        token = jwt.encode(claims, key, algorithm="RS256")
        headers = {"Cookie": f"token={token}", "Origin": "https://app.example.com"}
        good = yield openClient(server, userId=7, headers=headers)
        self.addCleanup(closeClient, good)
        other = yield openClient(server, userId=8, headers=headers)
        self.assertEqual((yield other.closed), (4050, "Unauthorized"))
        signingInput = token.rsplit(".", 1)[0].replace(
            token.split(".")[0], base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode())
        signature = base64.urlsafe_b64encode(hmac.new(pem, signingInput.encode(), hashlib.sha256).digest())
        forged = signingInput + "." + signature.rstrip(b"=").decode()
        mallory = yield openClient(server, userId=7, headers={"Cookie": f"token={forged}",
                                                               "Origin": "https://app.example.com"})
        self.assertEqual((yield mallory.closed), (4050, "Unauthorized"))
        good.send({"type": "text", "text": "still here", "recipients": [7]})
        self.assertEqual((yield good.messages.get())["text"], "still here")


class OperationsTests(TestCase):
    """
    The operations endpoints of a started server, and the demo page on its
    WebSocket port, over real sockets.
    """

    timeout = 20

    @inlineCallbacks
    def test_readyAndMetrics(self):
        """
        A started server is ready; its metrics count what its clients did,
        by source and by close code.
        """
        server = yield startServer(self)
        response = yield restRequest(server, "GET", "/ready")
        self.assertEqual((response.code, (yield response.json())), (200, {"status": "ready"}))
        alice = yield openClient(server, userId=1)
        bob = yield openClient(server, userId=2)
        self.addCleanup(closeClient, bob)
        alice.send({"type": "text", "text": "hi", "recipients": [2, 3]})
        yield bob.messages.get()
        yield closeClient(alice)
        response = yield restRequest(server, "GET", "/metrics")
        text = (yield response.content()).decode()
        for line in ("wsserver_connections 1.0", "wsserver_users_online 1.0", "wsserver_connects_total 2.0",
                     'wsserver_disconnects_total{code="1000"} 1.0',
                     'wsserver_messages_received_total{source="websocket"} 1.0',
                     "wsserver_messages_delivered_total 1.0",
                     'wsserver_messages_dropped_total{reason="offline"} 1.0'):
            self.assertIn(line + "\n", text)

    @inlineCallbacks
    def test_queueMetrics(self):
        """
        With the queue on, the overview names its storage and the metrics
        count what it kept.
        """
        server = yield startServer(self, {"chat": {"enableUndeliveredQueue": True}})
        response = yield restRequest(server, "POST", "/send-message", json={"type": "x", "recipients": [9]})
        self.assertEqual(response.code, 202)
        yield response.content()
        response = yield restRequest(server, "GET", "/overview")
        data = (yield response.json())["data"]
        self.assertEqual(data["undelivered"], {"enabled": True, "storage": "memory"})
        self.assertEqual((data["node"]["queued"], data["node"]["received"]["rest"]), (1, 1))

    @inlineCallbacks
    def test_demoPage(self):
        """
        C{GET /} on the WebSocket port is the demo page (by default), with
        its content security policy; another path 404; neither names a
        library.
        """
        server = yield startServer(self, {"server": {"endpoint": "/ws"}})
        response = yield treq.get(f"http://127.0.0.1:{server.wsPort}/?id=1&to=2", persistent=False)
        body = yield response.content()
        self.assertEqual(response.code, 200)
        self.assertIn(b'var ENDPOINT = "/ws";', body)
        self.assertIsNone(response.headers.getRawHeaders(b"Server"))
        self.assertEqual(response.headers.getRawHeaders(b"Content-Security-Policy")[0][:18], b"default-src 'none'")
        response = yield treq.get(f"http://127.0.0.1:{server.wsPort}/ws", persistent=False)
        self.assertEqual((response.code, (yield response.content())), (404, b"Not Found\n"))
        self.assertIsNone(response.headers.getRawHeaders(b"Server"))
