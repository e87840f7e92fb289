# -*- test-case-name: tests.test_routing -*-
"""
Statistics per user (SPEC section 3), kept from the user's first connect or
message.  Times are unix seconds from the router's clock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UserStats", "emptyStatItem"]


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

    def __init__(self, userId: int, now: float) -> None:
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

    def item(self, now: float, isOnline: bool) -> dict[str, Any]:
        """
        The stat item of the REST API.
        """
        online, offline = self._timeOnline, self._timeOffline
        if self._online:
            online += now - self._since
        else:
            offline += now - self._since
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


def emptyStatItem(userId: int) -> dict[str, Any]:
    """
    The stat item of a user the server has never seen: zeros, offline.
    """
    return UserStats(userId, 0.0).item(0.0, False)
