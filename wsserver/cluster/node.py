# -*- test-case-name: tests.test_cluster,tests.test_presence -*-
"""
This process's membership of the cluster: the L{IPeers} of its router, over
one Redis.

Channels: one per node (C{wsserver:node:<id>}) for the messages it must
deliver, and one presence channel (C{wsserver:presence}) for what the nodes
say of themselves:

  - C{conn <node> <uid> <n> <connectedTimes> <lastConnection>}: user C{uid}
    has C{n} connections on C{node} now (0: offline there), with the two
    counters that C{/stat} must show for an online user;
  - C{beat <node> <uid>:<n>:<connectedTimes>:<lastConnection>,...}: every
    C{heartbeatSeconds}, all of a node's users;
  - C{hello <node>}: a node (re)joined; every node answers with its beat at once;
  - C{bye <node>}: a node stops; its users are offline at once;
  - C{queued <node> <uid>}: a message was queued for C{uid}; the node where
    the user is reads the queue again.

The rules of who counts as online where are in L{wsserver.cluster.presence}.

B{Joining.}  Once subscribed, a node sends its hello; C{PUBLISH} answers how
many nodes listen on the presence channel, so the node knows how many beats
to wait for.  It is joined when all have answered, or C{joinTimeout} seconds
after the hello.  The server holds new WebSocket connections until then
(L{ClusterNode.whenJoined}), so it routes to users online elsewhere from its
first connection on.  With Redis unreachable at start it serves its own
users after C{joinTimeout} and joins when Redis is back.

B{Crossing.}  Messages for another node are batched: every message for that
node in one turn of the reactor goes out as one C{PUBLISH} to its channel,
each message once with the recipients it has there.  A batch is
C{<uid>,<uid>... <length>\\n<payload>} entries one after the other, after a
header C{#<node> <epoch> <seq>\\n} for a node that reads sequence numbers.  The
messages go out on one connection, in order, so a sender's messages keep
their order.  A C{PUBLISH} that reached no subscriber hands its messages
back to the router as undeliverable (offline for their recipients) and makes
that node suspect.  While Redis is unreachable the batches wait in an outbox
per node, in order, bounded (L{onPressure}), and go out once Redis answers a
C{PING} and that node can hear them: at once when this node's subscription
outlived the outage (Redis froze), else once that node was heard again
(pub/sub keeps nothing for absent subscribers); the batches of a node that
died meanwhile are handed back as undeliverable.

B{Once.}  A batch that timed out may have been published all the same: it
is sent again with its sequence number, and the receiving node, which keeps
the highest number delivered per sender and epoch (the batches of a sender
come in order on one channel), drops it.  A node says in its hello (C{hello
<node> seq}) that it reads numbers, and is answered by a numbered batch
without messages (number 0); a node of the previous version (a plain hello)
gets and sends batches without the header.

Connections: the node is handed them (L{wsserver.redis.links.IRedisLinks},
whose service makes and stops them); the hot one carries the batches and
presence, the pub/sub one listens on the node's channels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ..routing.interfaces import IInbound, IPeers
from ..redis.links import IRedisLinks
from ..ids import UserId, idBytes, parseIdBytes, sortKey
from ..stats import UserStats
from .presence import Presence, Seat, formatSeat, parseSeats

__all__ = ["ClusterNode", "MAX_OUTBOX", "PRESENCE", "nodeChannel", "parseBatch", "parseHeader"]

PRESENCE = b"wsserver:presence"
#: seconds a joining node waits for the beats of the nodes already there
JOIN_TIMEOUT = 2.0
#: the messages for other nodes that wait for Redis before the senders are
#: paused
MAX_OUTBOX = 10000
#: the flag of a hello from a node that reads sequenced batches
SEQUENCED = b"seq"


def _bySortKey(item: tuple[UserId, Any]) -> tuple[int, int, str]:
    return sortKey(item[0])


def nodeChannel(node: str) -> bytes:
    """
    The channel where C{node} receives its messages.
    """
    return b"wsserver:node:" + node.encode()


def formatBatch(entries: Sequence[tuple[Sequence[UserId], bytes]]) -> bytes:
    """
    The body of one C{PUBLISH}: each message once, after its recipients
    (L{idBytes}: a number as before, a string id between braces).
    """
    parts = []
    for userIds, payload in entries:
        parts.append(b"%s %d\n" % (b",".join([idBytes(u) for u in userIds]), len(payload)))
        parts.append(payload)
    return b"".join(parts)


def parseHeader(data: bytes) -> tuple[str, bytes, int, int] | None:
    """
    The sequence header of a batch (C{#<node> <epoch> <seq>\\n}, before its
    entries): the sending node, its epoch, the sequence number and where
    the entries begin; L{None} for a batch without one (from a node of the
    previous version, or to one).

    @raise ValueError: for a header that is not one.
    """
    if data[:1] != b"#":
        return None
    nl = data.index(b"\n")
    node, epoch, seq = data[1:nl].split(b" ")
    number = int(seq)
    if number < 0:
        raise ValueError("negative sequence")
    return node.decode("utf-8"), epoch, number, nl + 1


def parseBatch(data: bytes, pos: int = 0) -> list[tuple[list[UserId], bytes]]:
    """
    The messages of a batch (L{formatBatch}), from C{pos} on (after its
    header: L{parseHeader}).

    @raise ValueError: for a batch that is not one.
    """
    out = []
    end = len(data)
    while pos < end:
        nl = data.index(b"\n", pos)
        uids, size = data[pos:nl].split(b" ")
        start = nl + 1
        stop = start + int(size)
        if stop > end:
            raise ValueError("batch cut short")
        out.append(([parseIdBytes(u) for u in uids.split(b",")], data[start:stop]))
        pos = stop
    return out


@dataclass(slots=True)
class _Batch:
    """
    One C{PUBLISH} for a node: kept until Redis answered it, sent again
    with the same sequence number after a timeout (it may have reached the
    node: the node drops a second copy).
    """

    #: the messages, each with its recipients on that node
    entries: list[tuple[Sequence[UserId], bytes]]
    #: the entries as they are published (L{formatBatch})
    body: bytes
    #: the sequence number; 0: that node does not read sequences
    seq: int
    #: whether Redis answered that it reached no subscriber (so it surely
    #: did not reach the node: sent again, it takes a new number)
    reachedNobody: bool = False


@implementer(IPeers)
class ClusterNode(Service):
    """
    This node of the cluster (see the module docstring).

    @param links: the Redis connections (started and stopped by their owner).
    @param reactor: the reactor (connections, timers and the clock).
    @param heartbeatSeconds: how often this node announces its users.
    @param nodeTimeoutSeconds: a node not heard for this long is dead.
    @param nodeId: this node's name (a random one by default).
    @param joinTimeout: seconds to wait for the other nodes' beats at a join.
    @param maxOutbox: the messages that wait in the outbox before the
        senders are paused (L{onPressure}).
    """

    log = Logger()

    def __init__(self, links: IRedisLinks, reactor: Any, heartbeatSeconds: float = 10,
                 nodeTimeoutSeconds: float = 30, nodeId: str | None = None,
                 joinTimeout: float = JOIN_TIMEOUT, maxOutbox: int = MAX_OUTBOX) -> None:
        self.nodeId = nodeId or os.urandom(6).hex()
        self._id = self.nodeId.encode()
        #: this run of the node: a restarted node numbers its batches anew
        self.epoch = os.urandom(4).hex().encode()
        self._header = b"#%s %s " % (self._id, self.epoch)
        #: the last sequence number given to a batch (one counter for every
        #: node: each node sees its batches' numbers grow)
        self._seq = 0
        #: the nodes that read sequenced batches (their hello said so, or
        #: they sent one)
        self._sequenced: set[str] = set()
        #: sending node -> (its epoch, the highest sequence number delivered)
        self._marks: dict[str, tuple[bytes, int]] = {}
        #: batches dropped because they were delivered already
        self.duplicates = 0
        self._address = links.address
        self._reactor = reactor
        self.heartbeatSeconds = heartbeatSeconds
        self._joinTimeout = joinTimeout
        self.presence = Presence(reactor, nodeTimeoutSeconds, died=self._died)
        #: user id -> the other nodes where the user is online (IPeers)
        self.remoteUsers = self.presence.where
        self._channel = nodeChannel(self.nodeId)
        self._inbound: IInbound | None = None
        #: this node's users, as it announces them
        self._local: dict[UserId, Seat] = {}
        #: node -> the messages for it in this turn of the reactor
        self._batches: dict[str, list[tuple[Sequence[int], bytes]]] = {}
        self._flushCall: Any = None
        #: node -> (since when, the batches) waiting for Redis and for that
        #: node to be back
        self._outbox: dict[str, tuple[float, list[_Batch]]] = {}
        self._outboxCall: Any = None
        self._outboxMessages = 0
        self._maxOutbox = max(1, maxOutbox)
        #: whether a PING asks Redis if it answers again
        self._probing = False
        #: whether the senders are paused (the outbox is full)
        self.paused = False
        self._pressure: list[tuple[Callable[[], Any], Callable[[], Any]]] = []
        #: when the pub/sub connection last subscribed
        self._subscribedAt = 0.0
        #: node -> when a presence message from it last arrived
        self._heard: dict[str, float] = {}
        self._retry = min(1.0, heartbeatSeconds)
        #: whether the pub/sub connection is subscribed (only then does this
        #: node announce itself: being heard means being able to hear)
        self.subscribed = False
        self._everSubscribed = False
        self.joined = False
        self._joinWaiters: list[Deferred[None]] = []
        self._expected: int | None = None
        self._answered: set[str] = set()
        self._joinTimer: Any = None
        self._startTimer: Any = None
        self._loop: LoopingCall | None = None
        self._stopped = False
        self.malformed = 0
        #: called with a node's id and its users when it is declared dead
        self._diedObservers: list[Callable[[str, list[UserId]], Any]] = []
        #: the hot connection: batches and presence
        self.link = links.hot
        links.subscribe([PRESENCE, self._channel], self._received, self._subscribed, self._unsubscribed)

    # IPeers

    def bind(self, inbound: IInbound) -> None:
        self._inbound = inbound

    def connected(self, userId: UserId, stats: UserStats, count: int) -> None:
        seat = self._local[userId] = Seat(count, stats.connectedTimes, stats.lastConnection)
        self._announce(userId, seat)

    def disconnected(self, userId: UserId, stats: UserStats, count: int) -> None:
        if count:
            seat = self._local[userId] = Seat(count, stats.connectedTimes, stats.lastConnection)
        else:
            self._local.pop(userId, None)
            seat = Seat(0, stats.connectedTimes, stats.lastConnection)
        self._announce(userId, seat)

    def _announce(self, userId: UserId, seat: Seat) -> None:
        # only while subscribed: being heard means being able to hear (a
        # change made while cut off is in the beat that follows the hello)
        if self.subscribed:
            self._publish(PRESENCE, b"conn %s %s %d %d %d" % (
                self._id, idBytes(userId), seat.connections, seat.connectedTimes, int(seat.lastConnection)))

    def connectionsElsewhere(self, userId: UserId) -> int:
        return self.presence.connectionsOf(userId)

    def forward(self, userIds: Sequence[UserId], payload: bytes) -> None:
        where = self.remoteUsers
        batches = self._batches
        if len(userIds) == 1:
            for node in where.get(userIds[0], ()):
                batch = batches.get(node)
                if batch is None:
                    batch = batches[node] = []
                batch.append((userIds, payload))
        else:
            perNode: dict[str, list[int]] = {}
            for userId in userIds:
                for node in where.get(userId, ()):
                    perNode.setdefault(node, []).append(userId)
            for node, uids in perNode.items():
                batch = batches.get(node)
                if batch is None:
                    batch = batches[node] = []
                batch.append((uids, payload))
        if self._flushCall is None and batches:
            self._flushCall = self._reactor.callLater(0, self._flush)

    def announceQueued(self, userId: UserId) -> None:
        self._publish(PRESENCE, b"queued %s %s" % (self._id, idBytes(userId)))

    def nodeCount(self) -> int:
        return len(self.presence.nodes()) + 1

    def isAlive(self, nodeId: str) -> bool:
        return nodeId == self.nodeId or nodeId in self.presence.nodes()

    # joining

    def whenJoined(self) -> Deferred[None]:
        """
        Fires once this node has learnt the cluster's presence (or gave up
        waiting: see the module docstring).
        """
        if self.joined or self._stopped:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._joinWaiters.append(d)
        return d

    def _join(self, nodes: Any) -> None:
        """
        The hello reached C{nodes} subscribers (this one included): wait for
        the beats of the others.
        """
        if self.joined:
            return
        self._expected = max(0, int(nodes) - 1)
        self._checkJoined()

    def _checkJoined(self) -> None:
        if not self.joined and self._expected is not None and len(self._answered) >= self._expected:
            self._joinDone("answered")

    def _joinDone(self, why: str) -> None:
        """
        Stop waiting to join: all C{"answered"}, the C{"timeout"} passed
        (subscribed or not), or the node is C{"stopping"}.
        """
        if self.joined:
            return
        for timer in (self._joinTimer, self._startTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._joinTimer = self._startTimer = None
        waiters, self._joinWaiters = self._joinWaiters, []
        if why == "answered":
            self.joined = True
            self.log.info("cluster node {node} joined: {n} other nodes, {users} users online elsewhere",
                          node=self.nodeId, n=len(self.presence.nodes()), users=len(self.remoteUsers))
        elif why == "timeout" and self.subscribed:
            self.joined = True
            self.log.warn("cluster node {node} joined without the answers of {missing} nodes",
                          node=self.nodeId, missing=(self._expected or 0) - len(self._answered))
        elif why == "timeout":
            self.log.warn("cluster Redis unreachable: serving this node's users; joining when it is back")
        for d in waiters:
            d.callback(None)

    # publishing

    def _publish(self, channel: bytes, data: bytes) -> Deferred[Any]:
        return self.link.execute(b"PUBLISH", channel, data).addErrback(
            lambda f: self.log.debug("cluster publish failed: {why}", why=f.getErrorMessage()))

    def _flush(self) -> None:
        """
        Send each node its batch of this turn.
        """
        self._flushCall = None
        batches, self._batches = self._batches, {}
        if not self.running:
            for node, entries in batches.items():
                self._handBack(entries)
            return
        sequenced = self._sequenced
        for node, entries in batches.items():
            seq = 0
            if node in sequenced:
                seq = self._seq = self._seq + 1
            batch = _Batch(entries, formatBatch(entries), seq)
            if node in self._outbox or not self.link.connected:
                self._wait(node, batch)  # behind what waits already: in order
            else:
                self._send(node, batch)

    def _send(self, node: str, batch: _Batch) -> None:
        data = self._header + b"%d\n" % batch.seq + batch.body if batch.seq else batch.body
        d = self.link.execute(b"PUBLISH", nodeChannel(node), data)
        d.addCallbacks(self._published, self._notPublished, (node, batch), None, (node, batch))

    def _published(self, receivers: Any, node: str, batch: _Batch) -> None:
        if int(receivers) > 0:
            return
        if self._heard.get(node, 0.0) <= self._subscribedAt:
            # not heard since this node (re)subscribed itself: Redis may have
            # restarted, and that node not subscribed again yet
            batch.reachedNobody = True
            self._wait(node, batch)
            return
        self.log.info("cluster node {node} did not take {n} messages: it is suspect, and they are "
                      "handled as messages for offline users", node=node, n=len(batch.entries))
        self.presence.suspect(node)
        self._handBack(batch.entries)

    def _notPublished(self, failure: Any, node: str, batch: _Batch) -> None:
        # it may have reached Redis (a timeout): sent again, it keeps its
        # number, and the node drops it if it got it
        if not self._outbox and not self._probing:
            self.log.warn("cluster Redis unreachable ({why}); messages for other nodes wait",
                          why=failure.getErrorMessage())
        batch.reachedNobody = False
        self._wait(node, batch)

    def _wait(self, node: str, batch: _Batch) -> None:
        """
        Keep C{batch} for C{node} until Redis answers again and that node
        can hear it, in order behind what waits already; pause the senders
        when the outbox is full.
        """
        waiting = self._outbox.get(node)
        if waiting is None:
            waiting = self._outbox[node] = (self._reactor.seconds(), [])
        waiting[1].append(batch)
        self._outboxMessages += len(batch.entries)
        if self._outboxMessages >= self._maxOutbox and not self.paused:
            self.paused = True
            self.log.warn("{n} messages for other nodes wait for Redis: the senders are paused",
                          n=self._outboxMessages)
            for pause, _ in self._pressure:
                pause()
        self._scheduleOutbox()

    def _scheduleOutbox(self) -> None:
        if self._outboxCall is None and not self._probing and self._outbox and self.running:
            self._outboxCall = self._reactor.callLater(self._retry, self._flushOutbox)

    def _taken(self, batches: list[_Batch]) -> None:
        """
        C{batches} left the outbox: resume the senders once half of it is
        free.
        """
        self._outboxMessages -= sum(len(batch.entries) for batch in batches)
        if self.paused and self._outboxMessages <= self._maxOutbox // 2:
            self.paused = False
            for _, resume in self._pressure:
                resume()

    def onPressure(self, pause: Callable[[], Any], resume: Callable[[], Any]) -> None:
        """
        Call C{pause} when the outbox holds C{maxOutbox} messages (the
        senders should stop sending), C{resume} when half of them are out.
        """
        self._pressure.append((pause, resume))

    def _handBack(self, entries: list[tuple[Sequence[int], bytes]]) -> None:
        if self._inbound is None:
            return
        for userIds, payload in entries:
            self._inbound.undeliverable(userIds, payload)

    def _flushOutbox(self) -> None:
        """
        Hand back what waits for a node that died; then, once Redis answers
        a C{PING}, send what waits for the nodes that can hear it (see
        L{_sendOutbox}).
        """
        self._outboxCall = None
        if not self.running:
            return
        alive = set(self.presence.nodes())
        for node, (since, batches) in list(self._outbox.items()):
            if node not in alive:
                # the node died meanwhile: its users are offline now
                del self._outbox[node]
                self._taken(batches)
                for batch in batches:
                    self._handBack(batch.entries)
        if not self._outbox:
            return
        if not self.link.connected:
            self._scheduleOutbox()
            return
        # one command, not the whole outbox, into a Redis that may be frozen
        self._probing = True
        self.link.execute(b"PING").addCallbacks(self._pingAnswered, self._pingFailed)

    def _pingAnswered(self, _: Any) -> None:
        self._probing = False
        if self.running:
            self._sendOutbox()
            self._scheduleOutbox()

    def _pingFailed(self, _: Any) -> None:
        self._probing = False
        self._scheduleOutbox()

    def _sendOutbox(self) -> None:
        """
        Redis answers: send, in order, what waits for each node that can
        hear it: a node heard since its messages began to wait, or any
        node while this node's own subscription is older than the wait
        (Redis froze but did not restart: the subscriptions are there).

        A batch keeps its sequence number (the node drops it if an earlier
        try reached it), except from the first batch that reached nobody on:
        those take new numbers, so that none is below a number the node
        has seen already.
        """
        intact = self.subscribed
        for node, (since, batches) in list(self._outbox.items()):
            if not (self._heard.get(node, 0.0) > since or (intact and self._subscribedAt < since)):
                continue
            del self._outbox[node]
            self._taken(batches)
            renumber = False
            for batch in batches:
                renumber = renumber or batch.reachedNobody
                if renumber and batch.seq:
                    batch.seq = self._seq = self._seq + 1
                batch.reachedNobody = False
                self._send(node, batch)
        if not self._outbox:
            self.log.info("cluster messages that waited for other nodes are sent")

    def outboxSize(self) -> int:
        """
        How many messages wait in the outbox.
        """
        return self._outboxMessages

    # receiving

    def _received(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == self._channel:
                pos = 0
                if data[:1] == b"#":
                    header = parseHeader(data)
                    assert header is not None
                    sender, epoch, seq, pos = header
                    if not self._fresh(sender, epoch, seq):
                        return
                inbound = self._inbound
                for userIds, payload in parseBatch(data, pos):
                    if inbound is not None:
                        inbound.deliverForwarded(userIds, payload)
            else:
                self._presenceMessage(data)
        except (ValueError, IndexError):
            self.malformed += 1
            self.log.warn("ignoring a malformed cluster message on {channel} ({size} bytes)",
                          channel=channel.decode("utf-8", "replace"), size=len(data))

    def _fresh(self, sender: str, epoch: bytes, seq: int) -> bool:
        """
        Whether a batch numbered C{seq} by C{sender} in its C{epoch} is new:
        the batches of one sender come in order on this node's channel, so
        one that is not above the highest delivered is a second copy (its
        first try reached Redis, the answer did not come back).  Number 0
        is no delivery: a sender saying that it numbers its batches.
        """
        self._sequenced.add(sender)
        if not seq:
            return True
        mark = self._marks.get(sender)
        if mark is not None and mark[0] == epoch and seq <= mark[1]:
            self.duplicates += 1
            return False
        self._marks[sender] = (epoch, seq)
        return True

    def _presenceMessage(self, data: bytes) -> None:
        kind, node, *rest = data.split(b" ", 2)
        nodeId = node.decode()
        if nodeId == self.nodeId:
            return
        if kind == b"queued":
            # not a sign of life: a node cut off from its subscription may
            # still queue (its presence messages wait for its subscription)
            uid = parseIdBytes(rest[0])
            if uid in self._local and self._inbound is not None:
                self._inbound.drainAgain(uid)
            return
        self._heard[nodeId] = self._reactor.seconds()
        presence = self.presence
        if kind == b"conn":
            uid, count, times, last = rest[0].split(b" ")
            presence.connections(nodeId, parseIdBytes(uid), Seat(int(count), int(times), float(last)))
        elif kind == b"beat":
            presence.beat(nodeId, parseSeats(rest[0].split(b",") if rest else ()))
            self._answered.add(nodeId)
            self._checkJoined()
        elif kind == b"hello":
            presence.heard(nodeId)
            self._beat()
            if rest and SEQUENCED in rest[0].split(b" "):
                # it reads sequenced batches; tell it that this node does
                # too (a beat cannot say it: the previous version would not
                # read the beat)
                self._sequenced.add(nodeId)
                self._publish(nodeChannel(nodeId), self._header + b"0\n")
            else:
                self._sequenced.discard(nodeId)
        elif kind == b"bye":
            presence.goodbye(nodeId)
            self._forget(nodeId)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def onDied(self, observer: Callable[[str, list[UserId]], Any]) -> None:
        """
        Call C{observer} with a node's id and the ids of its users when the
        presence declares that node dead (not when it said goodbye): its
        users' C{user_offline} events (L{wsserver.events.presence}).
        """
        self._diedObservers.append(observer)

    def _died(self, node: str, users: list[UserId]) -> None:
        self.log.info("cluster node {node} not heard for {s:g} s: its {n} users are offline",
                      node=node, s=self.presence.timeout, n=len(users))
        self._heard.pop(node, None)
        self._forget(node)
        _, batches = self._outbox.pop(node, (0.0, []))
        self._taken(batches)
        for batch in batches:
            self._handBack(batch.entries)
        for observer in self._diedObservers:
            observer(node, users)

    def _forget(self, node: str) -> None:
        """
        C{node} left: what this node knows of its batches goes.
        """
        self._sequenced.discard(node)
        self._marks.pop(node, None)

    def _subscribed(self) -> None:
        """
        The pub/sub connection is (again) subscribed: say hello, so that
        every node answers with its beat, and announce this node now.
        """
        again = self._everSubscribed
        self.subscribed = self._everSubscribed = True
        self._subscribedAt = self._reactor.seconds()
        self.presence.reconnected()
        self._answered = set()
        d = self._publish(PRESENCE, b"hello %s %s" % (self._id, SEQUENCED))
        if not self.joined:
            if self._startTimer is not None and self._startTimer.active():
                self._startTimer.cancel()
            self._startTimer = None
            d.addCallback(lambda nodes: nodes is not None and self._join(nodes))
            if self._joinTimer is None or not self._joinTimer.active():
                self._joinTimer = self._reactor.callLater(self._joinTimeout, self._joinDone, "timeout")
        self._beat()
        if again and self._inbound is not None:
            # announcements of queued messages were missed meanwhile
            for uid in self._inbound.localUserIds():
                self._inbound.drainAgain(uid)

    def _unsubscribed(self) -> None:
        self.subscribed = False
        self.presence.cutOff()

    def _beat(self) -> None:
        """
        Announce this node's users.
        """
        if self.subscribed:
            users = b",".join(formatSeat(u, s) for u, s in sorted(self._local.items(), key=_bySortKey))
            self._publish(PRESENCE, b"beat %s %s" % (self._id, users))

    # life cycle

    def startService(self) -> None:
        super().startService()
        address, reactor = self._address, self._reactor
        self._startTimer = reactor.callLater(self._joinTimeout, self._joinDone, "timeout")
        self._loop = LoopingCall(self._beat)
        self._loop.clock = reactor
        self._loop.start(self.heartbeatSeconds, now=False).addErrback(
            lambda f: self.log.failure("cluster heartbeat stopped", f))
        self.log.info("cluster node {node} joining through Redis at {where}", node=self.nodeId,
                      where=str(address))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for timer in (self._joinTimer, self._startTimer, self._flushCall, self._outboxCall):
            if timer is not None and timer.active():
                timer.cancel()
        self._joinDone("stopping")
        self.presence.stop()
        if self._batches:
            self._flush()
        # the links close after this (their owner stops later)
        return self._publish(PRESENCE, b"bye %s" % self._id) if self.subscribed else succeed(None)
