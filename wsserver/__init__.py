"""
wsserver: a self-hosted WebSocket chat and notification server on Twisted.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    #: the installed version; setup.py is its one source
    __version__ = _version("wsserver")
except PackageNotFoundError:  # a checkout on the path that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
