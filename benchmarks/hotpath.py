"""
A change to the hot path, on and off, in one run: the server's protocol and
router of each source tree in a process of its own (one after the other,
alternating, --repeat rounds), fed client frames (the throughput load's
3.3 KB message, 8 to a read) into one connection, writing to another's
in-memory transport; CPU time per message (time.process_time), default
config (--features: with delivery status and send-back too), the best and
the median of the rounds.  With --pairs N, N pairs of connections send to
each other in turn, as the throughput load's 50 pairs do: what a change
costs in memory per connection (frames kept longer, the allocator's and
the caches' work) shows only with many connections, not with one pair.
No network and no neighbours' noise: it tells
apart changes of a few percent that compare.py's rates cannot.

    git archive HEAD~1 | tar -x -C /tmp/before
    python benchmarks/hotpath.py --tree /tmp/before --tree . [--messages 20000] [--repeat 9] [--pairs 50]

The trees must have this one's modules (wsserver.connection, wsserver.routing),
or a85a95f's (wsserver.protocol, no limits), the baseline of issue 14.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

#: run with the tree first on the path and this directory last (for inmemory)
CHILD = r"""
import sys, time
from zoneinfo import ZoneInfo

import orjson
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.task import Clock

sys.path.append(sys.argv[3])
from inmemory import clientFrames, connect, feed

from wsserver.auth import buildAuthenticator
from wsserver.config import AuthConfig, MessageConfig, ServerConfig
from wsserver.messages import MessageFactory
try:
    from wsserver.connection import ChatServerFactory, prepareFrame
    from wsserver.config import LimitsConfig
    OLD = False
except ImportError:  # a85a95f's layout: one protocol module, no limits
    from wsserver.protocol import ChatServerFactory, prepareFrame
    OLD = True
from wsserver.routing import Router


def measure(count, features, pairs):
    clock = Clock()
    clock.advance(1.8e9)
    message = MessageConfig(enableDeliveryStatus=features, enableSendBack=features)
    if OLD:
        router = Router(message, clock, MessageFactory(clock, ZoneInfo("UTC")), prepare=prepareFrame)
        factory = ChatServerFactory(router, ServerConfig(), message, buildAuthenticator(AuthConfig()), clock)
    else:
        limits = LimitsConfig()
        router = Router(message, clock, MessageFactory(clock, ZoneInfo("UTC"), maxRecipients=limits.maxRecipients),
                        prepare=prepareFrame, maxTrackedUsers=limits.maxTrackedUsers)
        factory = ChatServerFactory(router, ServerConfig(limits=limits), message, buildAuthenticator(AuthConfig()),
                                    clock)
    if pairs == 1:
        alice, aliceTransport = connect(factory, 1)
        bob, bobTransport = connect(factory, 2)
        assert (alice if OLD else alice.session).attached and (bob if OLD else bob.session).attached
        payload, frames = clientFrames(count, stamp=1.5)
        used = feed(alice, [bobTransport, aliceTransport], frames, clock)
        assert not alice.transport.disconnecting
        alice.dataReceived(frames[0])
        assert len(bobTransport.value()) >= 8 * len(payload), "not delivered"
        return used
    # connections 2k+1 and 2k+2 are a pair: each sends to the other
    conns = [connect(factory, uid) for uid in range(1, 2 * pairs + 1)]
    assert all((p if OLD else p.session).attached for p, _ in conns)
    frames = []
    for k in range(2 * pairs):
        partner = k + 2 if k % 2 == 0 else k
        payload = orjson.dumps({"type": "text", "text": "x" * 3200, "recipients": [partner], "data": {"t": 1.5}})
        frames.append(PreparedMessage(payload, False, True, False).payloadHybi * 8)
    rounds = max(1, count // (8 * 2 * pairs))
    started = time.process_time()
    for _ in range(rounds):
        for k, (protocol, transport) in enumerate(conns):
            protocol.dataReceived(frames[k])
            conns[k + 1 if k % 2 == 0 else k - 1][1].clear()
            transport.clear()
        clock.advance(0.0001)
    used = time.process_time() - started
    alice, aliceTransport = conns[0]
    assert not alice.transport.disconnecting
    alice.dataReceived(frames[0])
    assert len(conns[1][1].value()) >= 8 * len(payload), "not delivered"
    return used / (rounds * 2 * pairs * 8) * 1e6


print(measure(int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[4])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="a source tree (twice or more)")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--features", action="store_true", help="delivery status and send-back on")
    parser.add_argument("--pairs", type=int, default=1,
                        help="pairs of connections sending to each other in turn (50: the throughput load's)")
    args = parser.parse_args()
    trees = [os.path.abspath(t) for t in args.tree]
    times: dict[str, list[float]] = {t: [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.messages), "1" if args.features else "0", HERE,
                                  str(args.pairs)],
                                 env=env, capture_output=True, text=True, cwd=tree)
            if out.returncode:
                raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
            times[tree].append(float(out.stdout.strip().splitlines()[-1]))
    base = min(times[trees[0]])
    print(f"{'tree':<40} {'best us/msg':>12} {'median':>8} {'best ratio':>11}")
    for tree in trees:
        best = min(times[tree])
        print(f"{tree:<40} {best:>12.2f} {statistics.median(times[tree]):>8.2f} {best / base:>10.3f}x")


if __name__ == "__main__":
    main()
