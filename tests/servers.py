"""
Real PostgreSQL, MariaDB and RabbitMQ servers for the event target tests,
each in a temporary directory on a free loopback port, with a password set.

They take seconds to start (RabbitMQ several), so the tests of a class share
one (L{SharedServer}: started by the first test, destroyed after the last,
or at exit when only some ran); L{stop} and L{start} in the middle of a
test play the server going away and coming back (same port, same data).  Starting and stopping wait for the server outside the reactor: they
are the test's setup, not code under test.

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
import time

from twisted.trial.unittest import SkipTest

__all__ = ["MariaDBServer", "PostgresServer", "RabbitMQServer", "SharedServer", "freePort"]

#: seconds a server gets to start, or to end after SIGTERM
START_TIMEOUT = 60
STOP_TIMEOUT = 30

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


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _waitFor(check, what: str, process: subprocess.Popen | None, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} ended before it was ready:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready in {START_TIMEOUT} s:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


def _end(process: subprocess.Popen | None) -> None:
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

    def stop(self) -> None:
        """
        End the server (SIGTERM) and wait for it; its data stays.
        """
        _end(self._process)
        self._process = None

    def destroy(self) -> None:
        """
        Stop and remove its directory.
        """
        self.stop()
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
        subprocess.run(
            self._as([f"{PG_BIN}/initdb", "-D", self.data, "-U", self.user, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.directory)
        self.start()
        subprocess.run(
            [f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
            check=True, env={**os.environ, "PGPASSWORD": PASSWORD}, stderr=subprocess.PIPE)

    def stop(self) -> None:
        """
        Fast shutdown (SIGINT: sessions are ended; SIGTERM would wait for
        every client to leave) and wait; its data stays.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        _end(self._process)
        self._process = None

    def _as(self, argv: list[str]) -> list[str]:
        uid, gid = self._ids
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]

    def dsn(self, password: str = PASSWORD, database: str | None = None) -> str:
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> None:
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

        def ready() -> bool:
            return subprocess.run([f"{PG_BIN}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0

        _waitFor(ready, "postgres", self._process, self.log)

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
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.start()
        self._root(
            f"CREATE DATABASE {self.database};"
            f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL ON *.* TO '{self.user}'@'%';"
            "FLUSH PRIVILEGES;")

    def _root(self, sql: str) -> None:
        subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", sql],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def dsn(self, password: str = PASSWORD, database: str | None = None) -> str:
        return f"mysql://{self.user}:{password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> None:
        """
        Start (again, on the same port) and wait until it takes connections.
        """
        self._process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", f"--log-error={self.log}",
             "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2", "--pid-file=" + self.directory + "/pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _waitFor(lambda: _listening(self.port), "mariadbd", self._process, self.log)

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
        self.start()
        self.ctl("add_user", self.user, PASSWORD)
        self.ctl("set_user_tags", self.user, "administrator")
        self.ctl("set_permissions", "-p", "/", self.user, ".*", ".*", ".*")

    def ctl(self, *args: str) -> str:
        """
        Run C{rabbitmqctl} on this node; its output.
        """
        done = subprocess.run([RABBIT_BIN + "/rabbitmqctl", "-n", self.node, *args], env=self.env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=START_TIMEOUT)
        return done.stdout.decode(errors="replace")

    def url(self, password: str = PASSWORD) -> str:
        return f"amqp://{self.user}:{password}@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        """
        Start (again, on the same port) and wait until it takes AMQP
        connections.
        """
        logf = open(self.log, "ab")
        self._process = subprocess.Popen([RABBIT_BIN + "/rabbitmq-server"], env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.directory)
        logf.close()
        _waitFor(lambda: _listening(self.port), "rabbitmq-server", self._process, self.log)
        self.ctl("await_startup")

    def stop(self) -> None:
        """
        End the node (C{rabbitmqctl stop}: its Erlang VM and all) and wait.
        """
        if self._process is not None and self._process.poll() is None:
            try:
                self.ctl("stop")
            except (subprocess.SubprocessError, OSError):
                pass
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait()
        self._process = None

    def queueDepth(self, queue: str) -> int:
        """
        How many messages C{queue} holds.
        """
        for line in self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages").splitlines():
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

    def get(self, test: object) -> _Server:
        """
        The server (started now when it is not), for C{test}.
        """
        if self._server is None:
            self._server = self._factory()
            atexit.register(self._server.destroy)
        addCleanup = getattr(test, "addCleanup")
        addCleanup(self._finished)
        return self._server

    def _finished(self) -> None:
        self._done += 1
        if self._done >= self._tests and self._server is not None:
            self._server.destroy()
            self._server = None
            self._done = 0

    @classmethod
    def of(cls, testClass: type, factory: type[_Server]) -> SharedServer:
        """
        A shared server for the C{test_} methods of C{testClass}.
        """
        return cls(factory, len([n for n in dir(testClass) if n.startswith("test_")]))
