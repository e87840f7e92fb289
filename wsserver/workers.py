# -*- test-case-name: tests.test_workers -*-
"""
C{server.workers} > 1: one command starts N worker processes that share the
listening sockets, all joined through C{cluster.redis}.

The parent listens (and never accepts), then starts each worker as
C{twistd wsserver} with the same options plus C{--adopt ws=FD,rest=FD}: the
worker adopts the sockets (C{AdoptedStreamServerEndpoint}) and the kernel
spreads new connections over the workers.  Each worker keeps its own event
store in C{<dataDir>/worker-<n>}, so a restarted worker resends its own
pending deliveries.  A worker that dies is restarted after a second; SIGTERM
to the parent stops every worker (each closes its clients with 1001) and
then the parent.

C{/metrics} answers for all the workers, whichever takes the request: the
workers share prometheus_client's multiprocess directory
(C{PROMETHEUS_MULTIPROC_DIR} when set, C{<dataDir>/metrics} otherwise),
emptied by the parent at its start; each writes its figures there
(L{wsserver.metrics.SharedMetrics}), and the parent removes the gauges of a
worker that ended.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

from prometheus_client.multiprocess import mark_process_dead
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel

from .config import Config, listenKey
from .quietlog import QuietStartLog
from .service import cannotListen

__all__ = ["METRICS_DIR_ENV", "WorkerPool", "parseAdopt"]

#: the environment variable that names the workers' shared metrics directory
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_TWISTD = "from twisted.scripts.twistd import run; run()"
#: Seconds before a dead worker is started again.
RESTART_DELAY = 1.0
#: Seconds workers get to stop before they are killed.
STOP_TIMEOUT = 9.0


def parseAdopt(value: str) -> dict[str, int]:
    """
    Parse C{--adopt ws=FD,rest=FD}.

    @raise ValueError: when it is not of that form.
    """
    out = {}
    for part in value.split(","):
        name, sep, fd = part.partition("=")
        if not sep or name not in ("ws", "rest") or not fd.isdigit():
            raise ValueError(f"--adopt takes ws=FD[,rest=FD], not {value!r}")
        out[name] = int(fd)
    if "ws" not in out:
        raise ValueError("--adopt needs ws=FD")
    return out


#: a line of a worker's log: its time stamp, C{[namespace#level]}, the text
_WORKER_LINE = re.compile(r"\S+ \[([^\]#\s]+)#(\w+)\] (.*)", re.DOTALL)


class _NoAccept(Factory):
    noisy = False


class _Worker(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: Deferred[None] = Deferred()
        #: its process id (the transport forgets it once the process ended)
        self.pid = 0
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        # the worker's log lines, as lines of the parent's log
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.pool.relay(self.index, line.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.pool._ended(self, reason)


class WorkerPool(QuietStartLog, Service):
    """
    The parent of the worker processes.

    @param config: the parsed configuration (C{server.workers} > 1).
    @param args: the command line given after C{wsserver}, passed on.
    @param reactor: the reactor.
    """

    log = Logger()

    def __init__(self, config: Config, args: list[str], reactor: Any) -> None:
        self._config = config
        self._args = args
        self._reactor = reactor
        self._ports: dict[str, Any] = {}
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        #: where the workers share their metrics
        self.metricsDir = os.environ.get(METRICS_DIR_ENV) or os.path.join(config.server.dataDir, "metrics")

    def relay(self, index: int, line: str) -> None:
        """
        Log a line of worker C{index}'s log as a line of this log: with the
        worker's namespace and level, under this log's time stamp, not the
        worker's whole prefix inside this one's.
        """
        m = _WORKER_LINE.match(line)
        if m is None:
            self.log.info("[worker {index}] {line}", index=index, line=line)
            return
        namespace, levelName, text = m.groups()
        try:
            level = LogLevel.levelWithName(levelName)
        except InvalidLogLevelError:
            level = LogLevel.info
        Logger(namespace=namespace).emit(level, "[worker {index}] {line}", index=index, line=text)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        server, rest = self._config.server, self._config.restApi
        listens = {"ws": (server.listen, listenKey("server", server.listenSource))}
        if rest.enabled:
            listens["rest"] = (rest.listen, listenKey("restApi", rest.listenSource))
        for name, (listen, key) in listens.items():
            d = serverFromString(self._reactor, listen).listen(_NoAccept())
            try:
                port = self._result(d)
            except (CannotListenError, OSError) as e:
                raise cannotListen(key, e) from e
            port.stopReading()  # the workers accept, not the parent
            self._ports[name] = port
            address = port.getHost()
            self.log.info("{what} listening on {host}:{port} for {n} workers",
                          what="WebSocket" if name == "ws" else "REST API",
                          host=address.host, port=address.port, n=self._config.server.workers)

    @staticmethod
    def _result(d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        if not results:
            raise RuntimeError("listening did not complete at once")
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def startService(self) -> None:
        super().startService()
        # the figures of an earlier run would add to this one's (start-up
        # only: the reactor serves nothing yet)
        os.makedirs(self.metricsDir, exist_ok=True)
        for name in os.listdir(self.metricsDir):
            if name.endswith(".db"):
                os.remove(os.path.join(self.metricsDir, name))
        for index in range(self._config.server.workers):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        fds = {name: port.fileno() for name, port in self._ports.items()}
        adopt = ",".join(f"{name}={fd}" for name, fd in fds.items())
        dataDir = os.path.join(self._config.server.dataDir, f"worker-{index}")
        argv = [sys.executable, "-c", _TWISTD, "--nodaemon", "--pidfile=", "wsserver",
                *self._args, "--data-dir", dataDir, "--adopt", adopt]
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for fd in fds.values():
            childFDs[fd] = fd
        worker = _Worker(self, index)
        env = {**os.environ, METRICS_DIR_ENV: self.metricsDir}
        self._reactor.spawnProcess(worker, sys.executable, argv, env=env, childFDs=childFDs)
        self._workers[index] = worker
        worker.pid = worker.transport.pid
        self.log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
        if worker.pid:
            # its gauges (connections, users online) leave the sum; its
            # counters stay in it
            mark_process_dead(worker.pid, self.metricsDir)
        if self._stopping or not self.running:
            return
        self.log.warn("worker {index} ended ({why}); restarting it in {s} s",
                      index=worker.index, why=reason.getErrorMessage(), s=RESTART_DELAY)
        self._reactor.callLater(RESTART_DELAY, lambda: self.running and not self._stopping
                                and worker.index not in self._workers and self._spawn(worker.index))

    def reload(self) -> None:
        """
        SIGHUP: pass it on to every worker; each reads the config again.
        """
        self.log.info("reload requested: passing it on to {n} workers", n=len(self._workers))
        for worker in self._workers.values():
            try:
                worker.transport.signalProcess(signal.SIGHUP)
            except Exception:  # already gone
                pass

    def workerPIDs(self) -> list[int]:
        """
        The process ids of the running workers.
        """
        return [w.transport.pid for w in self._workers.values() if w.transport.pid]

    def stopService(self) -> Deferred[Any]:
        """
        SIGTERM every worker, kill the ones still there after
        C{STOP_TIMEOUT}, then stop listening.
        """
        super().stopService()
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            try:
                worker.transport.signalProcess(signal.SIGTERM)
            except Exception:  # already gone
                pass

        def kill() -> None:
            for worker in workers:
                if not worker.ended.called:
                    try:
                        worker.transport.signalProcess(signal.SIGKILL)
                    except Exception:
                        pass

        timer = self._reactor.callLater(STOP_TIMEOUT, kill)
        d = DeferredList([w.ended for w in workers])

        def stopListening(_: Any) -> Any:
            if timer.active():
                timer.cancel()
            return DeferredList([port.stopListening() for port in self._ports.values()])

        return d.addCallback(stopListening)
