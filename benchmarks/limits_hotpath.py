"""
The per-message cost of the limits, without the network and without the
neighbours' noise: the real server protocol and router in one process, fed
client frames (the throughput load's 3.3 KB message) into one connection
and writing to another's in-memory transport; CPU time per message
(time.process_time), all limits off against the defaults and against the
defaults plus a token bucket, alternating, best of --repeat rounds.

    python benchmarks/limits_hotpath.py [--messages 20000] [--repeat 15]
"""

import argparse
import os
import sys
from zoneinfo import ZoneInfo

from twisted.internet.task import Clock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from inmemory import clientFrames, connect, feed  # noqa: E402
from wsserver.auth import buildAuthenticator  # noqa: E402
from wsserver.config import AuthConfig, LimitsConfig, MessageConfig, ServerConfig  # noqa: E402
from wsserver.messages import MessageFactory  # noqa: E402
from wsserver.connection import ChatServerFactory, prepareFrame  # noqa: E402
from wsserver.routing import Router  # noqa: E402


def measure(limits, frames):
    clock = Clock()
    message = MessageConfig()
    router = Router(message, clock, MessageFactory(clock, ZoneInfo("UTC"), maxRecipients=limits.maxRecipients),
                    prepare=prepareFrame, maxTrackedUsers=limits.maxTrackedUsers)
    factory = ChatServerFactory(router, ServerConfig(limits=limits), message, buildAuthenticator(AuthConfig()), clock)
    alice, _ = connect(factory, 1)
    bob, bobTransport = connect(factory, 2)
    assert alice.session.attached and bob.session.attached
    used = feed(alice, [bobTransport], frames)
    assert not alice.transport.disconnecting
    return used


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    _, frames = clientFrames(args.messages)
    cases = {
        "all limits off": LimitsConfig.off(),
        "default limits": LimitsConfig(),
        "defaults + messagesPerSecond": LimitsConfig(messagesPerSecond=1e9, burst=10**9),
    }
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeat):
        for name, limits in cases.items():
            best[name] = min(best[name], measure(limits, frames))
    base = best["all limits off"]
    print(f"{'case':<30} {'server us/msg (best)':>21} {'ratio':>6}")
    for name in cases:
        print(f"{name:<30} {best[name]:>21.2f} {best[name] / base:>5.3f}x")


if __name__ == "__main__":
    main()
