"""
Tests for L{wsserver._internals}.
"""

import pprint

from autobahn.util import hltype
from autobahn.websocket import protocol
from twisted.trial.unittest import SynchronousTestCase

from wsserver._internals import Lazy, makeDebugArgumentsLazy


class LazyTests(SynchronousTestCase):
    """
    The lazy debug arguments read the same as the eager ones.
    """

    def test_lazyText(self):
        """
        A L{Lazy} is computed only when turned into text, and gives the
        function's result.
        """
        calls = []

        def f(x):
            calls.append(x)
            return f"<{x}>"

        lazy = Lazy(f, 3)
        self.assertEqual(calls, [])
        self.assertEqual((str(lazy), f"{lazy}", "{a}".format(a=lazy)), ("<3>", "<3>", "<3>"))

    def test_patched(self):
        """
        After the patch Autobahn's names give lazy objects that format as
        before, and L{protocol.Timings} still prints.
        """
        makeDebugArgumentsLazy()
        makeDebugArgumentsLazy()
        value = [("a", 1), ("b", {"c": 2})]
        self.assertIsInstance(protocol.pformat(value), Lazy)
        self.assertEqual(str(protocol.pformat(value)), pprint.pformat(value))
        self.assertEqual(str(protocol.hltype(LazyTests)), hltype(LazyTests))
        timings = protocol.Timings()
        timings.track("x")
        self.assertIn("'x'", str(timings))
