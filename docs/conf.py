"""
Sphinx configuration of wsserver's documentation.

Build it with warnings as errors, so that a broken internal reference fails
(C{tests/test_docs.py} does so in the test suite)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
# the local extension (the generated configuration reference), and the
# checkout itself, whose wsserver package that extension reads
sys.path[:0] = [os.path.join(here, "_ext"), os.path.dirname(here)]

import re  # noqa: E402

# setup.py is the one source of the version (the checkout need not be installed)
with open(os.path.join(os.path.dirname(here), "setup.py"), encoding="utf-8") as f:
    __version__ = re.search(r'version="([^"]+)"', f.read()).group(1)

project = "wsserver"
author = "the wsserver authors"
copyright = "the wsserver authors, MIT license"
version = release = __version__

extensions = ["wsserver_config"]

root_doc = "index"
exclude_patterns = ["_build"]
# ``text`` with no role is a literal, as in the README
default_role = "literal"
nitpicky = True

html_theme = "alabaster"
html_title = f"wsserver {release}"
html_static_path = []
html_theme_options = {
    "description": "a self-hosted WebSocket message server",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
