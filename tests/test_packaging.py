"""
Tests for the packaging: C{pip install .} and C{pip install -e .} both give
a C{twistd} that finds the wsserver plugin.

Each test copies this checkout to a scratch directory (pip and setuptools
write C{build/} and C{wsserver.egg-info} beside C{setup.py}: in the
checkout itself, tests running at the same time would find the package's
metadata appear under them), installs the copy into a scratch prefix with
the venv's own pip and setuptools (no network: C{--no-index
--no-build-isolation --no-deps}), then asks Twisted's plugin scan in a child
process that sees that prefix first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Run in the child: put the prefix's site-packages (and what its .pth files
#: add) first on sys.path, then print the wsserver plugin's file as Twisted's
#: plugin scan finds it.  The environment running these tests may have
#: wsserver installed too (CI installs it): plugin folders outside the prefix
#: that hold a wsserver plugin are left out of the scan, so that what is
#: found is what the prefix brings.
_FIND_PLUGIN = """
import os, site, sys
prefix = sys.argv[1]
added = [prefix]
for name in sorted(os.listdir(prefix)):
    if name.endswith(".pth"):
        for line in open(os.path.join(prefix, name)):
            line = line.strip()
            if line and not line.startswith(("#", "import")):
                added.append(line)
site.addsitedir(prefix)
sys.path[:] = added + [p for p in sys.path if p not in added]
import twisted.plugins
ours = {os.path.normpath(os.path.join(a, "twisted", "plugins")) for a in added}
twisted.plugins.__path__[:] = [
    d for d in twisted.plugins.__path__
    if os.path.normpath(d) in ours or not os.path.exists(os.path.join(d, "wsserver_plugin.py"))]
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
found = [p for p in getPlugins(IServiceMaker) if p.tapname == "wsserver"]
print(sys.modules["twisted.plugins.wsserver_plugin"].__file__ if found else "not found")
"""


#: what of the checkout is not copied: what git ignores, and its history
_NOT_COPIED = shutil.ignore_patterns(".git", "_trial_temp*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                     "_build", "dropin.cache", ".hypothesis", "node_modules", ".venv", "venv")


class InstallTests(SynchronousTestCase):
    """
    The installed package exposes the twistd plugin.
    """

    def checkout(self) -> str:
        """
        A copy of this checkout (links kept as links), to install from.
        """
        copy = os.path.abspath(self.mktemp())
        shutil.copytree(ROOT, copy, symlinks=True, ignore=_NOT_COPIED)
        return copy

    def install(self, *args: str) -> str:
        """
        C{pip install ARGS} into a new prefix; return its site-packages.  With
        C{--ignore-installed}: without it pip uninstalls the wsserver that
        runs these tests from its own environment first.
        """
        prefix = os.path.abspath(self.mktemp())
        os.makedirs(prefix + "-cwd")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps",
             "--no-warn-script-location", "--ignore-installed", "--prefix", prefix, *args],
            check=True, cwd=prefix + "-cwd", capture_output=True,
        )
        return sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})

    def pluginFile(self, sitePackages: str) -> str:
        """
        Where a child process whose path starts with C{sitePackages} finds
        the wsserver plugin (C{"not found"} when it does not).
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        result = subprocess.run([sys.executable, "-c", _FIND_PLUGIN, sitePackages], env=env, cwd=cwd,
                                check=True, capture_output=True, text=True)
        return result.stdout.strip()

    def test_editable(self) -> None:
        """
        After C{pip install -e .}, Twisted's plugin scan
        (C{getPlugins(IServiceMaker)}) finds the plugin in the checkout.
        """
        checkout = self.checkout()
        sitePackages = self.install("--editable", checkout)
        self.assertEqual(self.pluginFile(sitePackages),
                         os.path.join(checkout, "twisted", "plugins", "wsserver_plugin.py"))

    def test_regular(self) -> None:
        """
        After C{pip install .}, the plugin is installed into Twisted's own
        C{twisted/plugins}, and found there.
        """
        sitePackages = self.install(self.checkout())
        installed = os.path.join(sitePackages, "twisted", "plugins", "wsserver_plugin.py")
        self.assertTrue(os.path.isfile(installed))
        self.assertTrue(os.path.isfile(os.path.join(sitePackages, "wsserver", "tap.py")))
        # the client library that GET /wsserver.js serves: the file, not the
        # checkout's link to clients/js/wsserver.js
        library = os.path.join(sitePackages, "wsserver", "web", "wsserver.js")
        self.assertTrue(os.path.isfile(library))
        self.assertFalse(os.path.islink(library))
        found = self.pluginFile(sitePackages)
        self.assertTrue(found.startswith(os.path.join(sitePackages, "twisted", "plugins")), found)
