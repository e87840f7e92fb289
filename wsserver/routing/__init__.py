"""
The routing core (SPEC section 3, "Routing"; sections 7 and 10 where a
cluster and the inbox take part), transport-free:

  - L{interfaces}: L{IConnection} (what the router calls on a connection),
    L{IUserDirectory}, and what the router needs from the rest of a
    cluster (L{IPeers}, L{IInbound}, L{IStatsListener},
    L{IPresenceListener}) with their one-node implementations;
  - L{registry}: the users of a node, their connections and statistics,
    bounded by C{maxTrackedUsers};
  - L{delivery}: per-user delivery state (live, or held behind the
    undelivered queue's read and the replays of resuming connections);
  - L{plan}: the one fan-out plan of every message (here, other nodes,
    offline queue, send-back, delivery statuses);
  - L{catchup}: the undelivered queue's drain and the inbox replays;
  - L{acks}: the ack ledger (claims, commits and acks of ack tokens);
  - L{router}: L{Router}, the facade over them.
"""

from .interfaces import (
    IConnection,
    IInbound,
    IPeers,
    IPresenceListener,
    IStatsListener,
    IUserDirectory,
    NoPeers,
    NoPresenceListener,
    NoStatsListener,
)
from .router import Router

__all__ = [
    "IConnection",
    "IInbound",
    "IPeers",
    "IPresenceListener",
    "IStatsListener",
    "IUserDirectory",
    "NoPeers",
    "NoPresenceListener",
    "NoStatsListener",
    "Router",
]
