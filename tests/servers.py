"""
Real PostgreSQL, MariaDB and RabbitMQ servers for the event target tests,
each in a temporary directory on a free loopback port, with a password set.

They take seconds to start (RabbitMQ several), so the tests of a class share
one (L{SharedServer}: started by the first test's C{setUp}, destroyed after
the last, or at exit when only some ran); C{stop} and C{start} in the middle
of a test play the server going away and coming back (same port, same data).
Everything that waits for a server (its tools, its start, its end) runs on
the reactor and returns a L{Deferred}: no test blocks or sleeps.  (The
servers are C{subprocess} children, not the reactor's: L{_Server.destroyNow}
must be able to end them at exit, when the reactor has stopped.)

Tests are skipped when a server is not installed, except under C{CI=true}
(C{.ci/run} installs all three with apt-get): there a missing server is an
error, so that a skip cannot hide a target that was never run.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

__all__ = ["MariaDBServer", "PostgresServer", "RabbitMQServer", "SharedServer", "freePort"]

#: seconds a server gets to start, or to end after SIGTERM
START_TIMEOUT = 60
STOP_TIMEOUT = 30
#: seconds between two looks at a server that is starting or ending
POLL_SECONDS = 0.1

#: the password of every test server's user
PASSWORD = "s3cret-pw"

PG_BIN = "/usr/lib/postgresql/15/bin"
#: not /usr/sbin's wrappers: as root they switch to the rabbitmq user, who
#: cannot write to the test's directory
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


def _missing(why: str) -> Exception:
    """
    What to raise when a server is not installed: a skip on a developer's
    machine, an error in CI (where C{.ci/run} must have installed it).
    """
    if os.environ.get("CI") == "true":
        return RuntimeError(why + ": CI=true, and .ci/run should have installed it")
    return SkipTest(why)


def freePort() -> int:
    """
    A loopback TCP port that nothing listens on now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pause() -> Deferred[None]:
    return deferLater(reactor, POLL_SECONDS, lambda: None)


def _listening(port: int) -> Deferred[bool]:
    """
    Whether a TCP connection to C{port} on the loopback is accepted (it is
    closed at once).
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)

    def connected(protocol: Protocol) -> bool:
        protocol.transport.loseConnection()
        return True

    return connectProtocol(endpoint, Protocol()).addCallbacks(connected, lambda _: False)


@inlineCallbacks
def _run(argv: list[str], env: dict[str, str] | None = None, path: str | None = None,
         check: bool = True) -> Any:
    """
    Run a tool on the reactor, for L{START_TIMEOUT} seconds at most.

    @param check: a failure when it exits with another code than 0.
    @return: a L{Deferred} of its exit code and what it wrote to stdout.
    """
    done = getProcessOutputAndValue(argv[0], argv[1:], env=os.environ if env is None else env, path=path,
                                    reactor=reactor)
    # ended by a signal: the failure is (out, err, signal)
    done.addErrback(lambda f: f.value if isinstance(f.value, tuple) else f)
    out, err, code = yield done.addTimeout(START_TIMEOUT, reactor)
    if check and code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {code}:\n{err.decode(errors='replace')[-3000:]}")
    return code, out


@inlineCallbacks
def _waitFor(check: Callable[[], Deferred[bool]], what: str, process: subprocess.Popen | None, log: str) -> Any:
    """
    Fires once C{check()} fires with true (tried every L{POLL_SECONDS});
    fails when C{process} ends first or after L{START_TIMEOUT} seconds.
    """
    deadline = reactor.seconds() + START_TIMEOUT
    while not (yield check()):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} ended before it was ready:\n{_tail(log)}")
        if reactor.seconds() > deadline:
            raise RuntimeError(f"{what} was not ready in {START_TIMEOUT} s:\n{_tail(log)}")
        yield _pause()


@inlineCallbacks
def _ended(process: subprocess.Popen, timeout: float) -> Any:
    """
    Fires with whether C{process} ended within C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while process.poll() is None:
        if reactor.seconds() > deadline:
            return False
        yield _pause()
    return True


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


@inlineCallbacks
def _end(process: subprocess.Popen | None, kill: Callable[[], None] | None = None) -> Any:
    """
    End C{process} (SIGTERM, unless it was told to end already) and wait;
    C{kill} (SIGKILL by default) after L{STOP_TIMEOUT} seconds.
    """
    if process is None or process.poll() is not None:
        return
    process.terminate()
    if not (yield _ended(process, STOP_TIMEOUT)):
        (kill or process.kill)()
        yield _ended(process, STOP_TIMEOUT)


def _endNow(process: subprocess.Popen | None) -> None:
    """
    End C{process} without the reactor (at exit: it has stopped).
    """
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Server:
    """
    What the three have in common: a directory, a port, a process.
    """

    name = "server"

    def __init__(self) -> None:
        # short: unix socket paths must stay under 108 bytes
        self.directory = tempfile.mkdtemp(prefix=f"ws{self.name}-")
        os.chmod(self.directory, 0o755)
        self.port = freePort()
        self.password = PASSWORD
        self.log = os.path.join(self.directory, "server.log")
        self._process: subprocess.Popen | None = None

    def create(self) -> Deferred[None]:
        """
        Make its data, start it and make its user and database.
        """
        raise NotImplementedError()

    def start(self) -> Deferred[None]:
        """
        Start (again, on the same port) and wait until it takes connections.
        """
        raise NotImplementedError()

    def stop(self) -> Deferred[None]:
        """
        End the server (SIGTERM) and wait for it; its data stays.
        """
        process, self._process = self._process, None
        return _end(process)

    def destroy(self) -> Deferred[None]:
        """
        Stop and remove its directory.
        """
        return self.stop().addCallback(lambda _: shutil.rmtree(self.directory, True))

    def destroyNow(self) -> None:
        """
        L{destroy} without the reactor (at exit).
        """
        process, self._process = self._process, None
        _endNow(process)
        shutil.rmtree(self.directory, True)


class PostgresServer(_Server):
    """
    Debian's PostgreSQL 15, run as C{nobody} (C{initdb} refuses root), with
    the superuser C{wsserver} and the database C{events}; the extension
    C{pg_stat_statements} is loaded (C{CREATE EXTENSION} makes its view).
    """

    name = "pg"
    user = "wsserver"
    database = "events"

    def __init__(self) -> None:
        if not os.access(os.path.join(PG_BIN, "initdb"), os.X_OK):
            raise _missing("PostgreSQL 15 is not installed (apt-get install postgresql)")
        super().__init__()
        self.data = os.path.join(self.directory, "data")
        entry = pwd.getpwnam("nobody")
        self._ids = (entry.pw_uid, entry.pw_gid)
        os.chown(self.directory, *self._ids)
        pwfile = os.path.join(self.directory, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD)
        os.chown(pwfile, *self._ids)
        self._pwfile = pwfile

    @inlineCallbacks
    def create(self) -> Any:
        yield _run(self._as([f"{PG_BIN}/initdb", "-D", self.data, "-U", self.user, f"--pwfile={self._pwfile}",
                             "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"]), path=self.directory)
        yield self.start()
        yield _run([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
                   env={**os.environ, "PGPASSWORD": PASSWORD})

    def stop(self) -> Deferred[None]:
        """
        Fast shutdown (SIGINT: sessions are ended; SIGTERM would wait for
        every client to leave) and wait; its data stays.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        return super().stop()

    def _as(self, argv: list[str]) -> list[str]:
        uid, gid = self._ids
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]

    def dsn(self, password: str = PASSWORD, database: str | None = None) -> str:
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> Deferred[None]:
        """
        Start (again, on the same port) and wait until it takes connections.
        """
        logf = open(self.log, "ab")
        self._process = subprocess.Popen(
            self._as([f"{PG_BIN}/postgres", "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1",
                      "-k", self.directory, "-c", "fsync=off", "-c", "full_page_writes=off",
                      # statements counted per text (tests that count the INSERTs of a batch)
                      "-c", "shared_preload_libraries=pg_stat_statements"]),
            stdout=logf, stderr=subprocess.STDOUT, cwd=self.directory)
        logf.close()

        def ready() -> Deferred[bool]:
            isReady = _run([f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False)
            return isReady.addCallback(lambda done: done[0] == 0)

        return _waitFor(ready, "postgres", self._process, self.log)

    def query(self, sql: str) -> list[tuple]:
        """
        Run C{sql} with a connection of its own; the rows it returns.
        """
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []


class MariaDBServer(_Server):
    """
    MariaDB with the user C{wsserver} (all privileges) and the database
    C{events}.
    """

    name = "maria"
    user = "wsserver"
    database = "events"

    def __init__(self) -> None:
        if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
            raise _missing("MariaDB is not installed (apt-get install mariadb-server)")
        super().__init__()
        self.data = os.path.join(self.directory, "data")
        self.socket = os.path.join(self.directory, "sock")
        # its own: in the shared /tmp, two bootstraps at once (another test
        # run beside this one) trip over each other's temporary tables
        self.tmp = os.path.join(self.directory, "tmp")
        os.makedirs(self.tmp)

    @inlineCallbacks
    def create(self) -> Any:
        yield _run([shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
                    f"--datadir={self.data}", "--user=root", "--auth-root-authentication-method=socket",
                    "--skip-test-db", f"--tmpdir={self.tmp}"])
        yield self.start()
        yield self._root(
            f"CREATE DATABASE {self.database};"
            f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL ON *.* TO '{self.user}'@'%';"
            "FLUSH PRIVILEGES;")

    def _root(self, sql: str) -> Deferred[Any]:
        return _run([shutil.which("mariadb") or "mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                     "-e", sql])

    def dsn(self, password: str = PASSWORD, database: str | None = None) -> str:
        return f"mysql://{self.user}:{password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> Deferred[None]:
        """
        Start (again, on the same port) and wait until it takes connections.
        """
        self._process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", f"--log-error={self.log}",
             f"--tmpdir={self.tmp}",
             "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2", "--pid-file=" + self.directory + "/pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _waitFor(lambda: _listening(self.port), "mariadbd", self._process, self.log)

    def query(self, sql: str) -> list[tuple]:
        """
        Run C{sql} with a connection of its own; the rows it returns.
        """
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user=self.user, password=PASSWORD,
                               database=self.database, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


class RabbitMQServer(_Server):
    """
    RabbitMQ with the user C{wsserver} (administrator, vhost C{/}), a node
    of its own (unique name, distribution port and Erlang cookie).
    """

    name = "rabbit"
    user = "wsserver"

    def __init__(self) -> None:
        if not os.access(RABBIT_BIN + "/rabbitmq-server", os.X_OK):
            raise _missing("RabbitMQ is not installed (apt-get install rabbitmq-server)")
        super().__init__()
        self.distPort = freePort()
        self.node = f"wsrabbit{self.port}@localhost"
        home = os.path.join(self.directory, "home")
        os.mkdir(home)
        cookie = os.path.join(home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(f"wscookie{self.port}")
        os.chmod(cookie, 0o400)
        config = os.path.join(self.directory, "rabbitmq.conf")
        with open(config, "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        self.env = {
            **os.environ,
            "HOME": home,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.distPort),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.directory, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.directory, "log"),
            "RABBITMQ_CONFIG_FILE": config,
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.directory, "plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with open(self.env["RABBITMQ_ENABLED_PLUGINS_FILE"], "w") as f:
            f.write("[].\n")

    @inlineCallbacks
    def create(self) -> Any:
        yield self.start()
        yield self.ctl("add_user", self.user, PASSWORD)
        yield self.ctl("set_user_tags", self.user, "administrator")
        yield self.ctl("set_permissions", "-p", "/", self.user, ".*", ".*", ".*")

    def ctl(self, *args: str) -> Deferred[str]:
        """
        Run C{rabbitmqctl} on this node; its output.
        """
        done = _run([RABBIT_BIN + "/rabbitmqctl", "-n", self.node, *args], env=self.env)
        return done.addCallback(lambda done: done[1].decode(errors="replace"))

    def url(self, password: str = PASSWORD) -> str:
        return f"amqp://{self.user}:{password}@127.0.0.1:{self.port}/%2F"

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start (again, on the same port) and wait until it takes AMQP
        connections.
        """
        logf = open(self.log, "ab")
        self._process = subprocess.Popen([RABBIT_BIN + "/rabbitmq-server"], env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=self.directory)
        logf.close()
        yield _waitFor(lambda: _listening(self.port), "rabbitmq-server", self._process, self.log)
        yield self.ctl("await_startup")

    @inlineCallbacks
    def stop(self) -> Any:
        """
        End the node (C{rabbitmqctl stop}: its Erlang VM and all) and wait.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                yield self.ctl("stop")
            except (RuntimeError, OSError):
                pass
            if not (yield _ended(process, STOP_TIMEOUT)):
                os.killpg(process.pid, signal.SIGKILL)
                yield _ended(process, STOP_TIMEOUT)

    def destroyNow(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # the Erlang VM and all of its session
            os.killpg(self._process.pid, signal.SIGKILL)
        super().destroyNow()

    @inlineCallbacks
    def queueDepth(self, queue: str) -> Any:
        """
        How many messages C{queue} holds.
        """
        listed = yield self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        for line in listed.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return 0


class SharedServer:
    """
    One server for the tests of a class (trial has no C{setUpClass}).

    @param factory: makes the server (L{PostgresServer} ...).
    @param tests: how many tests share it: destroyed after the last.
    """

    def __init__(self, factory: type[_Server], tests: int) -> None:
        self._factory = factory
        self._tests = tests
        self._done = 0
        self._server: _Server | None = None

    @inlineCallbacks
    def get(self, test: object) -> Any:
        """
        The server (created and started now when it is not), for C{test}:
        for its C{setUp} to return.

        @return: a L{Deferred} of the server.
        """
        if self._server is None:
            server = self._factory()
            atexit.register(server.destroyNow)
            try:
                yield server.create()
            except BaseException:
                yield server.destroy()
                raise
            self._server = server
        addCleanup = getattr(test, "addCleanup")
        addCleanup(self._finished)
        return self._server

    def _finished(self) -> Deferred[None] | None:
        self._done += 1
        if self._done >= self._tests and self._server is not None:
            server, self._server = self._server, None
            self._done = 0
            return server.destroy()
        return None

    @classmethod
    def of(cls, testClass: type, factory: type[_Server]) -> SharedServer:
        """
        A shared server for the C{test_} methods of C{testClass}.
        """
        return cls(factory, len([n for n in dir(testClass) if n.startswith("test_")]))
