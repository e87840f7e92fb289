# -*- test-case-name: tests.test_routing_registry -*-
"""
The registry: the users a node knows, their live connections and their
statistics, with a bound on the users kept who have no connection
(C{maxTrackedUsers}: beyond it the least recently seen are forgotten).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

from ..ids import UserId, sortKey
from ..stats import UserStats, emptyStatItem
from .delivery import User
from .interfaces import IConnection

__all__ = ["Registry"]


class Registry:
    """
    The users of one node, by id.

    @ivar users: user id -> L{User} (read on every message: a plain dict).
    @ivar maxTrackedUsers: the most users with no connection whose
        statistics are kept (0: no limit; a reload may change it).
    @ivar connectionCount: the live connections of every user.
    """

    def __init__(self, maxTrackedUsers: int = 0) -> None:
        self.users: dict[UserId, User] = {}
        #: the users in C{users} with no connection, least recently seen first
        self._offline: OrderedDict[int, None] = OrderedDict()
        self.maxTrackedUsers = maxTrackedUsers
        self.connectionCount = 0

    def user(self, userId: UserId, now: float) -> User:
        """
        The user C{userId}, known from now on if it was not.
        """
        user = self.users.get(userId)
        if user is None:
            user = self.users[userId] = User(UserStats(userId, now))
            self._seenOffline(userId)
        return user

    def seen(self, user: User) -> None:
        """
        C{user} was just seen (it sent a message): with no connection, it is
        forgotten last.
        """
        if not user.connections and user.userId in self._offline:
            self._offline.move_to_end(user.userId)

    def _seenOffline(self, userId: UserId) -> None:
        """
        C{userId}, who has no connection, was just seen: it is forgotten
        last; forget the least recently seen beyond C{maxTrackedUsers}.
        """
        offline = self._offline
        offline[userId] = None
        offline.move_to_end(userId)
        cap = self.maxTrackedUsers
        if cap and len(offline) > cap:
            users = self.users
            for _ in range(len(offline) - cap):
                oldest, _ = offline.popitem(last=False)
                user = users.get(oldest)
                if user is not None and user.draining:
                    offline[oldest] = None  # its undelivered queue is being read: not now
                    continue
                users.pop(oldest, None)

    def add(self, connection: IConnection, now: float) -> User:
        """
        C{connection} opened: counted in its user's statistics.
        """
        userId = connection.userId
        user = self.user(userId, now)
        stats = user.stats
        stats.connectedTimes += 1
        stats.lastConnection = now
        self.connectionCount += 1
        self._offline.pop(userId, None)
        user.connections.append(connection)
        if len(user.connections) == 1:
            stats.wentOnline(now)
        return user

    def remove(self, connection: IConnection, now: float) -> User | None:
        """
        C{connection} closed: its user, or L{None} when it was not attached.
        """
        user = self.users.get(connection.userId)
        if user is None or not user.remove(connection):
            return None
        self.connectionCount -= 1
        user.stats.disconnectedTimes += 1
        if not user.connections:
            self._seenOffline(connection.userId)
            user.stats.wentOffline(now)
        return user

    def isHere(self, userId: UserId) -> bool:
        """
        Whether C{userId} has a live connection on this node.
        """
        user = self.users.get(userId)
        return user is not None and bool(user.connections)

    def connectionsOf(self, userId: UserId) -> int:
        """
        How many connections C{userId} has open on this node.
        """
        user = self.users.get(userId)
        return len(user.connections) if user is not None else 0

    def localUserIds(self) -> list[int]:
        """
        The users with a connection on this node.
        """
        return [u for u, user in self.users.items() if user.connections]

    def allConnections(self) -> Iterator[IConnection]:
        """
        Every live connection (a snapshot, safe to close them while iterating).
        """
        return iter([c for user in self.users.values() for c in user.connections])

    def userIds(self) -> list[int]:
        """
        The ids of every user known.
        """
        return list(self.users)

    def userStats(self, userId: UserId) -> UserStats | None:
        """
        The statistics of one user, or L{None} for a user never seen.
        """
        user = self.users.get(userId)
        return None if user is None else user.stats

    def statItem(self, userId: UserId, now: float) -> dict[str, Any]:
        """
        The statistics of one user; zeros for a user never seen.
        """
        user = self.users.get(userId)
        if user is None:
            return emptyStatItem(userId)
        return user.stats.item(now, bool(user.connections))

    def statItems(self, now: float) -> list[dict[str, Any]]:
        """
        The statistics of every user known, by id.
        """
        users = self.users
        return [users[u].stats.item(now, bool(users[u].connections)) for u in sorted(users, key=sortKey)]
