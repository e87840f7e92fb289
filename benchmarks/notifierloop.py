"""
How many deliveries the event notifier reads back from its SQLite store,
and the CPU it spends, under a steady load that the target keeps up with:
the notifier over a L{SqliteEventStore} in this process, a target that
answers each delivery 2 ms later (in groups of 500, as the SQL targets
take them), 100 messages of 3 KB offered every millisecond.

Run it with the tree to measure on C{PYTHONPATH}; for a side-by-side
figure, run it alternately with an exported older tree::

    git archive main | tar -x -C /tmp/main
    PYTHONPATH=/tmp/main python benchmarks/notifierloop.py --deliveries 30000
    PYTHONPATH=. python benchmarks/notifierloop.py --deliveries 30000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

from twisted.internet import defer, task


class Target:
    """
    A sender that accepts each delivery 2 ms after it is handed over.
    """

    batchSize = 500

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def send(self, payload: bytes) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.reactor.callLater(0.002, d.callback, None)
        return d

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)


async def run(reactor: Any, deliveries: int) -> None:
    from wsserver.config import parseConfig
    from wsserver.database import openDatabase
    from wsserver.events.notifier import EventNotifier
    from wsserver.events.sqlite import SqliteEventStore
    from wsserver.messages import Message

    where = tempfile.mkdtemp()
    try:
        store = SqliteEventStore(openDatabase(os.path.join(where, "wsserver.sqlite3"), reactor))
        readBack = [0]
        due = store.due

        def counted(result: list[Any]) -> list[Any]:
            readBack[0] += len(result)
            return result

        store.due = lambda *args: due(*args).addCallback(counted)  # type: ignore[method-assign]
        config = parseConfig({"event": {"enabled": True, "targets": [{"type": "postback", "url": "http://x/a"}]}},
                             checkEndpoints=False).event
        notifier = EventNotifier(config, store, {"targets[0]": Target(reactor)}, reactor)
        notifier.startService()
        message = Message("ID", "text", "x" * 3000, "T", 1, [2], None)
        payload = message.serialize()
        started = time.process_time()
        offered = 0
        while offered < deliveries:
            for _ in range(100):
                notifier.notify(message, payload)
            offered += 100
            await task.deferLater(reactor, 0.001, lambda: None)
        while (await notifier.counts())[0]["succeeded"] < offered:
            await task.deferLater(reactor, 0.05, lambda: None)
        used = time.process_time() - started
        await notifier.stopService()
        print(f"{offered} deliveries, {readBack[0]} read back from the store, process CPU {used:.2f} s")
    finally:
        shutil.rmtree(where, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=30000)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args.deliveries)))


if __name__ == "__main__":
    main()
