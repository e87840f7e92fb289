# -*- test-case-name: tests.test_routing -*-
"""
The interfaces of the routing core: what the router (L{wsserver.routing.Router})
needs from its connections and from the rest of a cluster, and what it
offers back.  Each interface of a collaborator has a plain one-node
implementation, so that the router's code is the same for one node and for
many.

  - L{IConnection}: one live client connection, everything the router calls
    on it (the WebSocket protocol implements it).
  - L{IUserDirectory}: the users a node knows and their statistics (the
    router implements it; the cluster's statistics read it).
  - L{IPeers}: the other nodes.  The router tells them about its users'
    connections, asks where a user is, and forwards messages there.
    L{NoPeers}: nobody elsewhere.  The cluster's implementation is
    L{wsserver.cluster.node.ClusterNode}.
  - L{IInbound}: what a node hands back to its router: messages forwarded
    from other nodes, messages no other node took, a queue to read again.
    The router implements it.
  - L{IStatsListener}: told which users' statistics changed, to write them
    somewhere (the cluster's L{wsserver.cluster.stats.StatsJournal}).
    L{NoStatsListener}: nobody listens.
  - L{IClusterStatistics}: every user's statistics in the whole cluster,
    read where the nodes keep them (L{wsserver.cluster.stats.ClusterStats});
    C{/stat} and C{/stats} answer with it instead of one node's router.
  - L{IPresenceListener}: told when a user's first connection on this node
    opens and its last one closes (the presence events,
    L{wsserver.events.presence}).  L{NoPresenceListener}: nobody listens.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from twisted.internet.defer import Deferred

from zope.interface import Attribute, Interface, implementer

from ..ids import UserId
from ..stats import UserStats

__all__ = ["IClusterStatistics", "IConnection", "IInbound", "IPeers", "IPresenceListener", "IStatsListener", "IUserDirectory", "NoPeers",
           "NoPresenceListener", "NoStatsListener"]


class IConnection(Interface):
    """
    One live client connection, as the router sees it: everything the router
    calls on it.
    """

    userId = Attribute("The id of the user this connection belongs to.")

    def sendPrepared(prepared: Any) -> None:
        """
        Send a live message framed by the router's C{prepare} function.
        """

    def sendStored(prepared: Any) -> None:
        """
        Send a message the user missed (from the undelivered queue or an
        inbox replay), framed as for L{sendPrepared}: a burst bounded by the
        store's C{maxPerUser} and already in memory, so what of it waits for
        the network does not count as a slow consumer's backlog.
        """

    def close(code: int, reason: str) -> None:
        """
        Close the connection with a WebSocket close code and reason.
        """


class IUserDirectory(Interface):
    """
    The users one node knows (connected here, or seen here lately) and their
    statistics.
    """

    def userIds() -> Sequence[UserId]:
        """
        The ids of every user seen on this node.
        """

    def localUserIds() -> Sequence[UserId]:
        """
        The users with a connection on this node.
        """

    def userStats(userId: UserId) -> UserStats | None:
        """
        The statistics of one user on this node, or L{None} for a user never
        seen here.
        """

    def isOnline(userId: UserId) -> bool:
        """
        Whether C{userId} has a live connection (on any node of a cluster).
        """


class IInbound(Interface):
    """
    What the other nodes hand to this node's router.
    """

    def deliverForwarded(userIds: Sequence[UserId], payload: bytes) -> None:
        """
        Deliver a message that another node routed to this node's
        connections of C{userIds}; a user who left meanwhile is offline for
        it (its message is kept in the undelivered queue when that is on).
        """

    def undeliverable(userIds: Sequence[UserId], payload: bytes) -> None:
        """
        A message forwarded for C{userIds} reached no node (the node died,
        or was not subscribed): handle it as a message for offline users,
        unless a user is online somewhere else too.
        """

    def drainAgain(userId: UserId) -> None:
        """
        Read the undelivered queue of C{userId} again, if the user is online
        here: a message was queued for the user just now.
        """

    def localUserIds() -> Sequence[UserId]:
        """
        The users with a connection on this node.
        """


class IPeers(Interface):
    """
    The other nodes of the cluster, as the router sees them.
    """

    nodeId = Attribute("This node's name in the cluster (C{\"\"} for one node alone).")

    remoteUsers = Attribute(
        "A read-only mapping: user id -> the nodes where the user is online "
        "(not this one). The router tests membership on every recipient, so "
        "it is a plain dict, empty for one node."
    )

    def bind(inbound: IInbound) -> None:
        """
        Hand what comes from other nodes to C{inbound} (the router).
        """

    def connected(userId: UserId, stats: UserStats, count: int) -> None:
        """
        A connection of C{userId} opened here; C{count} connections of the
        user are open here now.
        """

    def disconnected(userId: UserId, stats: UserStats, count: int) -> None:
        """
        A connection of C{userId} closed here; C{count} are left (0: the
        user is offline here).
        """

    def connectionsElsewhere(userId: UserId) -> int:
        """
        How many connections C{userId} has on the other nodes.
        """

    def forward(userIds: Sequence[UserId], payload: bytes) -> None:
        """
        Send a message (its serialized form) to the other nodes where
        C{userIds} are online; each node gets it once, for its own users.
        """

    def announceQueued(userId: UserId) -> None:
        """
        A message was queued for C{userId}: a node where the user just came
        online reads the queue again.
        """

    def nodeCount() -> int:
        """
        How many nodes are known to be alive, this one included.
        """

    def isAlive(nodeId: str) -> bool:
        """
        Whether the node C{nodeId} (this one, or another) is alive.
        """


class IStatsListener(Interface):
    """
    Told about changes of users' statistics.
    """

    def changed(userId: UserId) -> None:
        """
        The statistics of C{userId} changed (a connect, a message): called on
        every message, so it must cost next to nothing.
        """

    def wentOffline(userId: UserId) -> None:
        """
        The last connection of C{userId} on this node closed.
        """


class IClusterStatistics(Interface):
    """
    The statistics of the users of a whole cluster, merged from every node's
    (what C{/stat} and C{/stats} answer in a cluster).
    """

    def statItem(userId: UserId) -> Deferred[dict[str, Any]]:
        """
        One user's statistics; zeros for a user never seen.
        """

    def statItems() -> Deferred[list[dict[str, Any]]]:
        """
        The statistics of every user seen in the cluster, by id.
        """


class IPresenceListener(Interface):
    """
    Told when a user comes online or goes offline on this node (not on
    every connection: on the first one and after the last one).
    """

    def online(userId: UserId) -> None:
        """
        The first connection of C{userId} on this node opened.
        """

    def offline(userId: UserId) -> None:
        """
        The last connection of C{userId} on this node closed.
        """


@implementer(IPeers)
class NoPeers:
    """
    One node alone: nobody elsewhere.
    """

    def __init__(self) -> None:
        self.nodeId = ""
        self.remoteUsers: Mapping[UserId, object] = {}

    def isAlive(self, nodeId: str) -> bool:
        return nodeId == self.nodeId

    def bind(self, inbound: IInbound) -> None:
        pass

    def connected(self, userId: UserId, stats: UserStats, count: int) -> None:
        pass

    def disconnected(self, userId: UserId, stats: UserStats, count: int) -> None:
        pass

    def connectionsElsewhere(self, userId: UserId) -> int:
        return 0

    def forward(self, userIds: Sequence[UserId], payload: bytes) -> None:
        pass

    def announceQueued(self, userId: UserId) -> None:
        pass

    def nodeCount(self) -> int:
        return 1


@implementer(IStatsListener)
class NoStatsListener:
    """
    Nobody listens.
    """

    def changed(self, userId: UserId) -> None:
        pass

    def wentOffline(self, userId: UserId) -> None:
        pass


@implementer(IPresenceListener)
class NoPresenceListener:
    """
    Nobody listens.
    """

    def online(self, userId: UserId) -> None:
        pass

    def offline(self, userId: UserId) -> None:
        pass
