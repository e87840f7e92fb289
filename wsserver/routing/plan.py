# -*- test-case-name: tests.test_routing_plan -*-
"""
The fan-out plan: where the copies of one message go.

One rule for every path (SPEC section 3, "Routing"), with or without the
inbox: each distinct recipient (0 skipped), and the sender for send-back,
is a I{target}; a target gets its copy

  - on its connections here (L{Plan.local}), when it has one, or while its
    undelivered queue is read (the copy waits behind the stored ones);
  - on the other nodes where it is online (L{Plan.remote}); a target online
    there and not here counts as reached;
  - in the undelivered queue (L{Plan.offline}) when it is online nowhere
    (the sender's own copy never is: it had the message).

L{Plan.reached} lists the recipients that got a live copy (the delivery
statuses).  The router carries out a plan with one copy for all targets
(one frame here, one crossing per node), or with each target's own copy
(with the inbox: each carries the target's seq).
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from ..ids import UserId
from ..chatconfig import MessageConfig
from ..messages import BOT, Message
from .delivery import User

__all__ = ["Plan", "sendsBack", "targetsOf"]


def sendsBack(config: MessageConfig, message: Message) -> bool:
    """
    Whether C{message}'s sender gets a copy too (C{enableSendBack}): not for
    the server's own messages, not when the sender is a recipient anyway,
    not for the types in C{ignoredTypesSendBack}.
    """
    return (
        config.enableSendBack
        and message.sender != BOT
        and message.sender not in message.recipients
        and message.type not in config.ignoredTypesSendBack
    )


def targetsOf(recipients: Sequence[UserId], sender: UserId, sendBack: bool) -> list[UserId]:
    """
    The distinct targets of a message, in order: its recipients (0 skipped),
    then its sender for send-back (the inboxes it is appended to).
    """
    targets = []
    seen = set()
    for r in recipients:
        if r != BOT and r not in seen:
            seen.add(r)
            targets.append(r)
    if sendBack:
        targets.append(sender)
    return targets


class Plan:
    """
    Where the copies of one message go (see the module's docstring):
    planned when made, from the users here and those online elsewhere.

    @ivar local: the users here who get a copy written (or held).
    @ivar remote: the targets online on other nodes (L{None}: none).
    @ivar offline: the recipients online nowhere (L{None}: none).
    @ivar reached: the recipients that got a live copy.
    """

    __slots__ = ("local", "remote", "offline", "reached")

    def __init__(
        self,
        users: Mapping[UserId, User],
        remoteUsers: Collection[UserId],
        recipients: Sequence[UserId],
        sender: UserId,
        sendBack: User | None,
    ) -> None:
        """
        @param recipients: the message's recipients (0 and repeats skipped).
        @param sendBack: the user here who sent the message, when it gets a
            copy too (its copy also goes to the other nodes where C{sender}
            is online); L{None}: no send-back.
        """
        self.local: list[User] = []
        self.reached: list[UserId] = []
        local = self.local
        reached = self.reached
        remote: list[UserId] | None = None
        offline: list[UserId] | None = None
        # repeats skipped in C (dict keys keep the first of each, in order)
        distinct = recipients if len(recipients) == 1 else dict.fromkeys(recipients)
        if not remoteUsers:
            # no other node (a single server): the loop below without its
            # remote branch, giving exactly its result -- one test less per
            # recipient (tested against it in tests.test_routing_plan)
            for r in distinct:
                if r == BOT:
                    continue
                user = users.get(r)
                if user is not None:
                    if user.connections:
                        local.append(user)
                        reached.append(r)
                        continue
                    if user.draining:
                        local.append(user)
                        continue
                if offline is None:
                    offline = [r]
                else:
                    offline.append(r)
        else:
            for r in distinct:
                if r == BOT:
                    continue
                user = users.get(r)
                if r in remoteUsers:
                    if remote is None:
                        remote = [r]
                    else:
                        remote.append(r)
                    if user is None or not user.connections:
                        # its copy is there (not held here, where it left)
                        reached.append(r)
                        continue
                if user is not None and (user.connections or user.draining):
                    local.append(user)
                    if user.connections:
                        reached.append(r)
                elif offline is None:
                    offline = [r]
                else:
                    offline.append(r)
        if sendBack is not None:
            own: User | None = sendBack
            if sender in remoteUsers:
                if remote is None:
                    remote = [sender]
                else:
                    remote.append(sender)
                if not sendBack.connections:
                    own = None
            if own is not None and (own.connections or own.draining):
                local.append(own)
        self.remote = remote
        self.offline = offline
