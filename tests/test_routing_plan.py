"""
Tests for L{wsserver.routing.plan}: where the copies of one message go.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from wsserver.config import MessageConfig
from wsserver.messages import Message
from wsserver.routing.delivery import User
from wsserver.routing.plan import Plan, sendsBack, targetsOf
from wsserver.stats import UserStats

from .test_routing import FakeConnection


def users(*online: int, draining: tuple[int, ...] = (), known: tuple[int, ...] = ()) -> dict[int, User]:
    """
    Users with a connection each (C{online}), users with none whose queue
    is being read (C{draining}), and users with neither (C{known}).
    """
    out = {}
    for uid in online + draining + known:
        user = out[uid] = User(UserStats(uid, 0))
        if uid in online:
            user.connections.append(FakeConnection(uid))
        if uid in draining:
            user.startDrain()
    return out


def message(recipients: list[int], sender: int = 1, kind: str = "text") -> Message:
    return Message("id", kind, "", "t", sender, recipients, None)


class PlanTests(SynchronousTestCase):
    """
    L{Plan}: every target is here, elsewhere or offline.
    """

    def test_local(self) -> None:
        """
        Recipients with a connection here are local and reached.
        """
        here = users(2, 3)
        plan = Plan(here, {}, [2, 3], 1, None)
        self.assertEqual(plan.local, [here[2], here[3]])
        self.assertEqual(plan.reached, [2, 3])
        self.assertIsNone(plan.remote)
        self.assertIsNone(plan.offline)

    def test_offline(self) -> None:
        """
        A recipient online nowhere, known here or not, is offline, not
        reached.
        """
        plan = Plan(users(known=(2,)), {}, [2, 3], 1, None)
        self.assertEqual((plan.local, plan.reached, plan.offline), ([], [], [2, 3]))

    def test_remote(self) -> None:
        """
        A recipient online on another node only goes there, and is reached;
        one online both here and there gets both copies.
        """
        here = users(3, known=(2,))
        plan = Plan(here, {2: {"b": 1}, 3: {"b": 1}}, [2, 3], 1, None)
        self.assertEqual(plan.remote, [2, 3])
        self.assertEqual(plan.local, [here[3]])
        self.assertEqual(plan.reached, [2, 3])
        self.assertIsNone(plan.offline)

    def test_draining(self) -> None:
        """
        A recipient with no connection whose queue is being read gets its
        copy held here (behind the stored ones): local, not reached; when it
        is online elsewhere too, its copy goes there only.
        """
        here = users(draining=(2, 3))
        plan = Plan(here, {3: {"b": 1}}, [2, 3], 1, None)
        self.assertEqual(plan.local, [here[2]])
        self.assertEqual(plan.remote, [3])
        self.assertEqual(plan.reached, [3])

    def test_repeatsAndBotSkipped(self) -> None:
        """
        A recipient named twice gets one copy; 0 (the bot) none.
        """
        here = users(2)
        plan = Plan(here, {}, [2, 0, 2, 5, 5], 1, None)
        self.assertEqual(plan.local, [here[2]])
        self.assertEqual(plan.offline, [5])
        self.assertEqual(plan.reached, [2])

    def test_sendBack(self) -> None:
        """
        The sender's own copy goes to its connections here and to the nodes
        where it is online; it is never reached nor offline.
        """
        here = users(1, 2)
        plan = Plan(here, {1: {"b": 1}}, [2], 1, here[1])
        self.assertEqual(plan.local, [here[2], here[1]])
        self.assertEqual(plan.remote, [1])
        self.assertEqual(plan.reached, [2])
        alone = users(known=(1,))
        plan = Plan(alone, {}, [2], 1, alone[1])
        self.assertEqual((plan.local, plan.remote, plan.offline), ([], None, [2]))

    def test_sendBackElsewhereOnly(self) -> None:
        """
        A sender online only on another node (its queue read here) gets its
        copy there, not held here.
        """
        here = users(draining=(1,))
        plan = Plan(here, {1: {"b": 1}}, [2], 1, here[1])
        self.assertEqual(plan.local, [])
        self.assertEqual(plan.remote, [1])


    def test_singleNodeLoopSameAsGeneral(self) -> None:
        """
        With no other node the plan takes a loop of its own (no remote
        test per recipient); it gives exactly what the general loop gives
        (taken when some user, none of the recipients, is online elsewhere)
        for every mix of online, draining, known, unknown, repeated and
        bot recipients, with and without send-back.
        """
        rng = random.Random(14)
        for case in range(300):
            here = users(*range(2, 6), draining=(6, 7), known=(8, 9))
            recipients = [rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) for _ in range(rng.randint(1, 8))]
            own = rng.choice([2, 6, 8])
            # (send-back only when the sender is no recipient: sendsBack)
            sendBack = here[own] if case % 3 == 0 and own not in recipients else None
            sender = sendBack.userId if sendBack is not None else 1
            alone = Plan(here, set(), recipients, sender, sendBack)
            general = Plan(here, {99}, recipients, sender, sendBack)
            got = (alone.local, alone.reached, alone.remote, alone.offline)
            self.assertEqual(got, (general.local, general.reached, general.remote, general.offline), recipients)
            if recipients.count(2) > 1:
                self.assertEqual(alone.local.count(here[2]), 1)


class SendsBackTests(SynchronousTestCase):
    """
    L{sendsBack}: which messages the sender gets a copy of.
    """

    def test_rules(self) -> None:
        """
        Only with C{enableSendBack}, not to a sender that is a recipient,
        not for an ignored type, not for the server's own messages.
        """
        on = MessageConfig(enableSendBack=True, ignoredTypesSendBack=frozenset({"typing"}))
        self.assertTrue(sendsBack(on, message([2])))
        self.assertFalse(sendsBack(MessageConfig(), message([2])))
        self.assertFalse(sendsBack(on, message([2, 1])))
        self.assertFalse(sendsBack(on, message([2], kind="typing")))
        self.assertFalse(sendsBack(on, message([2], sender=0)))


class TargetsOfTests(SynchronousTestCase):
    """
    L{targetsOf}: the inboxes a message is appended to.
    """

    def test_targets(self) -> None:
        """
        The distinct recipients in order, 0 skipped, then the sender for
        send-back.
        """
        self.assertEqual(targetsOf([3, 0, 2, 3], 1, False), [3, 2])
        self.assertEqual(targetsOf([3, 2], 1, True), [3, 2, 1])
