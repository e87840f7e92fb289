# -*- test-case-name: tests.test_routing -*-
"""
Statistics per user (SPEC section 3), kept from the user's first connect or
message.  Times are unix seconds from the router's clock.

In a cluster each node keeps the counters of the users it saw, and
L{mergeStatRecords} makes one item of the nodes' L{UserStats.record}s (see
L{wsserver.cluster.ClusterStats}).
"""

from __future__ import annotations

from typing import Any, Iterable

from .ids import UserId

__all__ = ["UserStats", "emptyStatItem", "mergeStatRecords"]


class UserStats:
    """
    The counters of one user; the router updates the fields directly (this is
    on every message's path, so it is a plain slotted object).
    """

    __slots__ = (
        "userId",
        "firstSeen",
        "lastConnection",
        "connectedTimes",
        "disconnectedTimes",
        "lastMessageTime",
        "sentMessages",
        "receivedMessages",
        "bytesTransferred",
        "_timeOnline",
        "_timeOffline",
        "_since",
        "_online",
    )

    def __init__(self, userId: UserId, now: float) -> None:
        self.userId = userId
        self.firstSeen = now
        self.lastConnection = 0.0
        self.connectedTimes = 0
        self.disconnectedTimes = 0
        self.lastMessageTime = 0.0
        self.sentMessages = 0
        self.receivedMessages = 0
        self.bytesTransferred = 0
        self._timeOnline = 0.0
        self._timeOffline = 0.0
        #: when the user last went online or offline
        self._since = now
        self._online = False

    def wentOnline(self, now: float) -> None:
        """
        The user's first connection (of possibly several) opened.
        """
        self._timeOffline += now - self._since
        self._since = now
        self._online = True

    def wentOffline(self, now: float) -> None:
        """
        The user's last connection closed.
        """
        self._timeOnline += now - self._since
        self._since = now
        self._online = False

    def _times(self, now: float) -> tuple[float, float]:
        online, offline = self._timeOnline, self._timeOffline
        if self._online:
            online += now - self._since
        else:
            offline += now - self._since
        return online, offline

    def item(self, now: float, isOnline: bool) -> dict[str, Any]:
        """
        The stat item of the REST API.
        """
        online, offline = self._times(now)
        lastActive = self.lastMessageTime or self.firstSeen
        return {
            "id": self.userId,
            "isOnline": isOnline,
            "lastConnection": int(self.lastConnection),
            "connectedTimes": self.connectedTimes,
            "disconnectedTimes": self.disconnectedTimes,
            "lastMessageTime": int(self.lastMessageTime),
            "timeOnline": int(online),
            "timeOffline": int(offline),
            "timeInactivity": int(now - lastActive),
            "sentMessages": self.sentMessages,
            "receivedMessages": self.receivedMessages,
            "bytesTransferred": self.bytesTransferred,
        }

    def record(self, now: float) -> dict[str, Any]:
        """
        The raw counters as of C{now}, for L{mergeStatRecords}: what a
        cluster node writes to Redis.  C{timeOnline} and C{timeOffline} are
        as of C{at} (= C{now}); C{online} says whether the user was online
        on this node then.
        """
        online, offline = self._times(now)
        return {
            "firstSeen": self.firstSeen,
            "lastConnection": self.lastConnection,
            "connectedTimes": self.connectedTimes,
            "disconnectedTimes": self.disconnectedTimes,
            "lastMessageTime": self.lastMessageTime,
            "sentMessages": self.sentMessages,
            "receivedMessages": self.receivedMessages,
            "bytesTransferred": self.bytesTransferred,
            "timeOnline": online,
            "timeOffline": offline,
            "online": self._online,
            "at": now,
        }


def emptyStatItem(userId: UserId) -> dict[str, Any]:
    """
    The stat item of a user the server has never seen: zeros, offline.
    """
    return UserStats(userId, 0.0).item(0.0, False)


_SUMS = ("connectedTimes", "disconnectedTimes", "sentMessages", "receivedMessages", "bytesTransferred")


def mergeStatRecords(userId: UserId, records: Iterable[dict[str, Any]], now: float, isOnline: bool) -> dict[str, Any]:
    """
    The stat item of a user from the L{UserStats.record}s of several nodes.

    Merge rule:
      - C{connectedTimes}, C{disconnectedTimes}, C{sentMessages},
        C{receivedMessages}, C{bytesTransferred}: the sum;
      - C{lastConnection}, C{lastMessageTime}: the latest;
      - C{isOnline}: as given (the live presence, not the records);
      - C{timeOnline}: the sum of the nodes' online times, a record whose
        C{online} is true counting on up to C{now} (from its C{at}), capped
        at C{now - firstSeen}: a user's sessions usually land on one node at
        a time, not always the same one; time online on two nodes at once is
        counted twice (up to the cap);
      - C{firstSeen}: the earliest (it is not part of the item);
      - C{timeOffline}: C{(now - firstSeen) - timeOnline}, never below 0;
      - C{timeInactivity}: C{now} minus the latest C{lastMessageTime}, or
        minus C{firstSeen} when the user never sent one; never below 0.

    No record at all: the zeros of L{emptyStatItem}, with C{isOnline}.

    @param records: dicts as L{UserStats.record} makes them; a missing field
        counts as 0 (C{online}: false).
    """
    records = list(records)
    if not records:
        item = emptyStatItem(userId)
        item["isOnline"] = isOnline
        return item
    firstSeen = min(float(r.get("firstSeen", now)) for r in records)
    lifetime = max(0.0, now - firstSeen)
    timeOnline = 0.0
    for r in records:
        online = float(r.get("timeOnline", 0))
        if r.get("online"):
            online += max(0.0, now - float(r.get("at", now)))
        timeOnline += online
    timeOnline = min(timeOnline, lifetime)
    lastMessageTime = max(float(r.get("lastMessageTime", 0)) for r in records)
    item: dict[str, Any] = {
        "id": userId,
        "isOnline": isOnline,
        "lastConnection": int(max(float(r.get("lastConnection", 0)) for r in records)),
    }
    for name in _SUMS[:2]:
        item[name] = sum(int(r.get(name, 0)) for r in records)
    item["lastMessageTime"] = int(lastMessageTime)
    item["timeOnline"] = int(timeOnline)
    item["timeOffline"] = int(max(0.0, lifetime - timeOnline))
    item["timeInactivity"] = int(max(0.0, now - (lastMessageTime or firstSeen)))
    for name in _SUMS[2:]:
        item[name] = sum(int(r.get(name, 0)) for r in records)
    return item
