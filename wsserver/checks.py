# -*- test-case-name: tests.test_config -*-
"""
The checks of a configuration that look at the machine: files readable,
certificates and keys loadable and matching, listen endpoints usable.

The parsers (each section's, composed by L{wsserver.config}) do no I/O;
these run after them: L{seedFileProblems} with every parse (a certificate named by
C{secure.crtPath} must exist), L{endpointProblems} for C{twistd wsserver -T}
and at start, once the command line's C{--ws} and C{--rest} are applied.
Every problem is named by its key, in plain words (not OpenSSL's).
"""

from __future__ import annotations

import json
from typing import Protocol

from .configschema import listenKey

__all__ = ["IListener", "IListening", "IRestListener", "endpointProblems", "fileProblem", "listenProblems", "readFile",
           "seedFileProblems", "tlsProblems"]


class IListener(Protocol):
    """
    What the checks read of C{server}.
    """

    @property
    def listen(self) -> str: ...

    @property
    def listenSource(self) -> str: ...


class IRestListener(IListener, Protocol):
    """
    What the checks read of C{restApi}.
    """

    @property
    def enabled(self) -> bool: ...


class IListening(Protocol):
    """
    What the checks read of a L{wsserver.config.Config} (so that this module
    need not import the configuration).
    """

    @property
    def server(self) -> IListener: ...

    @property
    def restApi(self) -> IRestListener: ...


def readFile(path: str) -> bytes:
    """
    The content of the file at C{path} (a C{jwt} public key): what the
    parsers are given to read files with.

    @raise OSError: when it cannot be read.
    """
    with open(path, "rb") as f:
        return f.read()


def fileProblem(path: str) -> str | None:
    """
    Why the file at C{path} cannot be read, in plain words, or L{None}.
    """
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return f"file not found {json.dumps(path)}"
    except IsADirectoryError:
        return f"{json.dumps(path)} is a directory, not a file"
    except OSError as e:
        return f"cannot read {json.dumps(path)}: {(e.strerror or str(e)).lower()}"


def _tlsFiles(listen: str, names: tuple[str, str]) -> list[tuple[str, str]]:
    """
    The certificate and key files of an C{ssl:} endpoint string, each with
    its name from C{names} (one file when both are in it), or none for
    other kinds.

    @raise Exception: when C{listen} cannot be parsed.
    """
    from ._internals import endpointStringParts  # the endpoint-string grammar

    args, kwargs = endpointStringParts(listen)
    if not args or args[0] not in ("ssl", "ssl6"):
        return []
    keyPath = kwargs.get("privateKey", "server.pem")
    certPath = kwargs.get("certKey") or keyPath
    return list(zip(names, (certPath, keyPath))) if certPath != keyPath else [(names[1], keyPath)]


def tlsProblems(listen: str, names: tuple[str, str]) -> list[str]:
    """
    Check the certificate and key files of an C{ssl:} endpoint string: each
    readable, a PEM certificate and a PEM private key that match.

    @param names: how to name the certificate and the key in messages.
    @return: one line per problem, in plain words (not OpenSSL's).
    """
    from OpenSSL.crypto import FILETYPE_PEM
    from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate

    files = _tlsFiles(listen, names)
    if not files:
        return []
    certPath, keyPath = files[0][1], files[-1][1]
    problems = []
    for name, path in files:
        why = fileProblem(path)
        if why is not None:
            problems.append(f"{name}: {why}")
    if problems:
        return problems
    with open(certPath, "rb") as f:
        certPEM = f.read()
    with open(keyPath, "rb") as f:
        keyPEM = f.read()
    try:
        certificate = Certificate.loadPEM(certPEM)
    except Exception:  # OpenSSL's errors: say it in plain words instead
        problems.append(f"{names[0]}: {json.dumps(certPath)} is not a PEM certificate")
    try:
        key = KeyPair.load(keyPEM, FILETYPE_PEM)
    except Exception:
        problems.append(f"{names[1]}: {json.dumps(keyPath)} is not a PEM private key")
    if not problems:
        try:
            PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
        except Exception:
            problems.append(
                f"{names[1]}: {json.dumps(keyPath)} is not the key of the certificate {json.dumps(certPath)}")
    return problems


def listenProblems(section: str, listen: str, source: str) -> list[str]:
    """
    Check that C{listen} is a server endpoint string that Twisted can use,
    without listening: its syntax, its port range and, for C{ssl:}, the
    certificate and key.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Factory
    from twisted.internet.testing import MemoryReactor

    key = listenKey(section, source)
    if source == "seed":
        names = (f"{section}.secure.crtPath", f"{section}.secure.keyPath")
    else:
        names = (f"{key}: certKey", f"{key}: privateKey")
    try:
        problems = tlsProblems(listen, names)
    except Exception:  # not even parsable: serverFromString says why below
        problems = []
    if problems:
        return problems
    reactor = MemoryReactor()
    try:
        endpoint = serverFromString(reactor, listen)
    except Exception as e:  # serverFromString raises many kinds: report them all
        return [f"{key}: invalid endpoint {json.dumps(listen)}: {e}"]
    # "listen" on a reactor that only records what it was asked: the port
    # and interface as Twisted read them from the string
    endpoint.listen(Factory()).addErrback(lambda f: None)
    for port, *_ in reactor.tcpServers + reactor.sslServers:
        if not 0 <= port <= 65535:
            return [f"{key}: port {port} is out of range (0 to 65535)"]
    return []


def endpointProblems(config: IListening) -> list[str]:
    """
    Check that the listen endpoints of C{config} can be used, without
    listening: the endpoint strings, their ports, the TLS key and
    certificate files.
    """
    problems = listenProblems("server", config.server.listen, config.server.listenSource)
    if config.restApi.enabled:
        problems += listenProblems("restApi", config.restApi.listen, config.restApi.listenSource)
    return problems


def seedFileProblems(config: IListening) -> list[str]:
    """
    The certificate and key files of C{secure} (the original's
    C{address}/C{port}/C{secure} keys) that cannot be read, named by their
    keys.  Checked with every parse, REST API disabled or not, as the
    original refused to start without them.
    """
    problems = []
    for section, listener in (("server", config.server), ("restApi", config.restApi)):
        if listener.listenSource != "seed":
            continue
        names = (f"{section}.secure.crtPath", f"{section}.secure.keyPath")
        try:
            files = _tlsFiles(listener.listen, names)
        except Exception:  # not an endpoint string: endpointProblems says why
            continue
        for name, path in files:
            # an empty path is reported by the parser ("required")
            why = fileProblem(path) if path else None
            if why is not None:
                problems.append(f"{name}: {why}")
    return problems
