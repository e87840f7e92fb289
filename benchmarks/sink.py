"""
A webhook sink for the event benchmarks: answers every request 200, after
--delay seconds (0: at once), and counts what it received.

    python benchmarks/sink.py --port 9000 [--delay 5]
"""

import argparse

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


class Sink(Resource):
    isLeaf = True

    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.count = 0

    def render(self, request):
        self.count += 1
        if not self.delay:
            return b""

        def answer():
            if not request._disconnected:
                request.finish()

        reactor.callLater(self.delay, answer)
        return NOT_DONE_YET


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    site = Site(Sink(args.delay))
    site.noisy = False
    site.log = lambda request: None
    reactor.listenTCP(args.port, site, backlog=1024, interface="127.0.0.1")
    print(f"sink listening on 127.0.0.1:{args.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
