"""
The ceiling of our stack: a minimal Autobahn relay speaking the subset of
wsserver's protocol that wsserver-bench uses, and nothing else.

  - connect to ws://HOST:PORT/chat?id=N;
  - a message is a JSON object with "recipients"; the relay adds "id",
    "timestamp" and "sender" and sends it to every connection of each
    recipient.

No validation beyond what routing needs, no statistics, no auth, no queue,
Autobahn's default options: what a team would write by hand in an afternoon
with the same libraries (Twisted, Autobahn with its NVX accelerators, orjson).
It is the baseline that benchmarks/compare.py measures wsserver against.

With --trivial it parses nothing and forwards each message as it came to the
pair partner (user id XOR 1, as wsserver-bench pairs its clients): the
cheapest server possible, to measure the bench client's own ceiling.

    python benchmarks/relay.py --port 8085 [--trivial]
"""

import argparse
import datetime
import itertools

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor

_ids = itertools.count(1)


class Relay(WebSocketServerProtocol):
    userId = None

    def onConnect(self, request):
        self.userId = int(request.params["id"][0])

    def onOpen(self):
        self.factory.users.setdefault(self.userId, []).append(self)

    def onMessage(self, payload, isBinary):
        message = orjson.loads(payload)
        message["id"] = str(next(_ids))
        message["sender"] = self.userId
        message["timestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        out = orjson.dumps(message)
        users = self.factory.users
        for recipient in message["recipients"]:
            for connection in users.get(recipient, ()):
                connection.sendMessage(out)

    def onClose(self, wasClean, code, reason):
        connections = self.factory.users.get(self.userId)
        if connections and self in connections:
            connections.remove(self)


class Trivial(Relay):
    """
    The cheapest server possible: no parsing, and past Autobahn's
    per-message overheads (the same shortcuts wsserver takes), so that what
    limits a run against it is the bench client.
    """

    def connectionMade(self):
        super().connectionMade()
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self._dataReceived(data)

    def onMessageEnd(self):
        if not self.failedByMe:
            frame = self.factory.prepareMessage(b"".join(self.message_data)).payloadHybi
            for connection in self.factory.users.get(self.userId ^ 1, ()):
                connection.transport.write(frame)
        self.message_data = None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--trivial", action="store_true", help="forward unparsed to the pair partner")
    args = parser.parse_args()
    factory = WebSocketServerFactory()
    factory.protocol = Trivial if args.trivial else Relay
    if args.trivial:
        factory.setProtocolOptions(utf8validateIncoming=False)
    factory.users = {}
    reactor.listenTCP(args.port, factory, backlog=1024, interface=args.interface)
    print(f"relay listening on {args.interface}:{args.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
