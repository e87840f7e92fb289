"""
Cluster mode (SPEC section 7): nodes joined through one Redis act as one
server.

  - L{wsserver.cluster.presence}: who is online where, as a pure state
    machine (join, beats, suspect, death by timeout);
  - L{wsserver.cluster.node}: this node's membership, the router's
    L{wsserver.routing.interfaces.IPeers}: presence messages, batched crossing;
  - L{wsserver.cluster.stats}: C{/stat} and C{/stats} for the whole cluster.

The shared stores are with their concerns (L{wsserver.queue.redis},
L{wsserver.history.redis}); their Redis link comes from
L{wsserver.redis.links.RedisLinks}, as the node's do.
"""

from .node import ClusterNode
from .presence import Presence, Seat
from .stats import ClusterStats, StatsJournal

__all__ = ["ClusterNode", "ClusterStats", "Presence", "Seat", "StatsJournal"]
