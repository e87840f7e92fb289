# -*- test-case-name: tests.test_rest -*-
"""
The REST API (SPEC section 4): a C{twisted.web} resource tree over the router.

Every answer is JSON (but C{/metrics}: Prometheus text; C{/dashboard}: a
page); every error is C{{"success": false, "status": <code>, "message":
"<why>"}} with that HTTP status.  The REST auth applies to every endpoint,
C{/status} included, but C{/health} and C{/ready} (SPEC section 9), which
reveal nothing.  Request bodies are bounded by C{chat.message.maxSize} while
they arrive: past it the answer is 413 and the connection is closed, the rest
of the body never read.  With C{server.limits}: a request (headers and body)
that has not arrived whole within C{requestTimeoutSeconds} is dropped; a client
address over C{authFailuresPerMinute} gets 429 without an auth check.

C{POST /send-message} with an C{Idempotency-Key} header routes once per key
within C{restApi.idempotencySeconds}: a repeat answers 202 again (with
C{Idempotent-Replayed: true}) and routes nothing.  The keys of every REST
caller share one namespace (and, in a cluster, one for every node).  As the
ack tokens (L{wsserver.routing.acks}), a key is claimed I{pending}
(C{p:<node>:<message id>}) and settled with the message id only once
everything written for the message (queue, inbox, events) is committed; the
202 waits for that.  A repeat that finds the key pending: on this node, it
is answered once the first is; on another node that is alive, 409 (try
again); on a node that died (or crashed) before settling, or after a write
that failed, it routes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from io import BytesIO
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from zope.interface import implementer

from ._internals import HTTPChannelHooks, requestLine, stopReading
from .auth import Authenticator, Credentials
from .config import Config
from .events.notifier import EventNotifier
from .limits import Limits
from .logflood import PeerLogger
from .reloadable import IReloadable
from .history import IInbox
from .idempotency import IIdempotency
from .ids import UserId
from .messages import BOT, InvalidPayload, InvalidUserId, MessageFactory, parseUserId
from .metrics import Readiness, ServerCollector, SharedMetrics, makeRegistry, summaryOf
from .routing import Router
from .routing.interfaces import IClusterStatistics

__all__ = ["Operations", "RestSite", "makeRestResource"]

log = Logger()
#: for the lines that a remote peer can cause (held to one a second per kind)
peerLog = PeerLogger()

#: Seconds L{RestSite.stop} waits for the requests in progress to finish.
STOP_SECONDS = 5.0

#: The longest C{Idempotency-Key}, in characters.
MAX_IDEMPOTENCY_KEY = 200

#: A handler's answer: an HTTP status and a JSON-able body (L{None}: empty).
Answer = tuple[int, Any]


def _error(status: int, message: str) -> Answer:
    return status, {"success": False, "status": status, "message": message}


def _ok(data: Any) -> Answer:
    return 200, {"success": True, "data": data}


@dataclass(frozen=True)
class _Raw:
    """
    A body that is not JSON: its content type, bytes and extra headers.
    """

    contentType: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


#: The dashboard may run its own inline script and style, and fetch from its
#: own origin only; no frame may hold it.
_PAGE_HEADERS = (
    (b"Content-Security-Policy",
     b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
     b"frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Cache-Control", b"no-store"),
    (b"Referrer-Policy", b"no-referrer"),
)

#: The most online users that C{/overview} lists.
OVERVIEW_USERS = 1000


@dataclass
class Operations:
    """
    What the operations endpoints (C{/metrics}, C{/health}, C{/ready},
    C{/overview}, C{/dashboard}) read.

    @ivar collector: the server's metrics.
    @ivar registry: the registry that C{/metrics} exposes (the collector and
        the process metrics).
    @ivar readiness: what C{/ready} says.
    @ivar queueStorage: the undelivered queue's storage, or L{None} when the
        queue is off.
    @ivar shared: with C{server.workers} > 1, the metrics of every worker
        (C{/metrics} and C{/overview} answer their sum); L{None}: this
        process's only.
    """

    collector: ServerCollector
    registry: CollectorRegistry
    readiness: Readiness = field(default_factory=lambda: Readiness(listening=True))
    queueStorage: str | None = None
    shared: SharedMetrics | None = None


def _address(request: IRequest) -> str:
    """
    The client address of C{request}: its peer's, or, from a trusted proxy
    (C{server.trustedProxies}), the one its C{X-Forwarded-For} names.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None) or str(peer)
    limits = getattr(getattr(request.channel, "site", None), "limits", None)
    if limits is None:
        return host
    return limits.clientAddress(host, request.requestHeaders.getRawHeaders(b"x-forwarded-for"))
#: C{GET /history}: entries answered when the query gives no C{limit}, and
#: the most it may ask for.
HISTORY_LIMIT = 100
HISTORY_MAX = 1000


def _count(request: IRequest, name: bytes, default: int, high: int | None) -> int | str:
    """
    A non-negative integer query parameter (at most C{high}), or what is
    wrong with it.
    """
    values = request.args.get(name)
    if values is None:
        return default
    raw = values[0]
    if len(values) != 1 or not raw.isdigit() or len(raw) > 20:
        return "must be a non-negative integer"
    value = int(raw)
    if high is not None and value > high:
        return f"must be from 1 to {high}"
    return value


class _BoundedRequest(server.Request):
    """
    A request whose body is bounded by C{site.maxBody} as it arrives: past
    it (a C{Content-Length} over it, or a chunked body that grows over it),
    the answer is 413 at once and the connection is closed, so a huge or
    endless upload costs neither memory nor reading.
    """

    tooLarge = False
    _received = 0

    #: the site while the request is answered (see L{RestSite.stop})
    _inProgressAt: RestSite | None = None

    def process(self) -> None:
        # in progress until finished or lost: the site's stop waits for it
        site = self._inProgressAt = self.channel.site
        site.begun(self)
        super().process()

    def finish(self) -> None:
        super().finish()
        self._ended()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._ended()

    def _ended(self) -> None:
        site = self._inProgressAt
        if site is not None:
            self._inProgressAt = None
            site.ended(self)

    def _limit(self) -> int:
        return getattr(self.channel.site, "maxBody", 0)

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if limit and length is not None and length > limit:
            super().gotLength(None)
            # (no "100 Continue": the body is not wanted)
            self.requestHeaders.removeHeader(b"expect")
            self._refuseTooLarge()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.tooLarge:
            return
        self._received += len(data)
        limit = self._limit()
        if limit and self._received > limit:
            self._refuseTooLarge()
            return
        super().handleContentChunk(data)

    def _refuseTooLarge(self) -> None:
        """
        Answer 413 before the body has arrived, and close the connection
        without reading what follows.
        """
        self.tooLarge = True
        self.content = BytesIO()
        channel = self.channel
        channel.stopDeadline()
        site = channel.site
        if site.limits is not None:
            site.limits.refused("maxSize", _address(self), "request body too large")
        # nothing more is read from this connection: not the rest of the
        # body, not a next request
        channel.persistent = False
        stopReading(channel)
        # the request line, which the channel has not handed over yet
        self.method, self.uri, self.clientproto = requestLine(channel)
        self.path = self.uri.split(b"?", 1)[0]
        body = orjson.dumps(_error(413, f"Payload too large: the limit is {self._limit()} bytes")[1])
        self.setResponseCode(413)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.setHeader(b"Connection", b"close")
        self.write(body)
        self.finish()


class _TimedChannel(HTTPChannelHooks):
    """
    An HTTP/1.1 channel on which each request (its headers and its body)
    must arrive whole within C{site.requestTimeout} seconds from its first
    byte, or the connection is dropped: the idle timeout alone would let a
    client that trickles a byte now and then hold a connection for ever.
    """

    site: RestSite
    _deadline: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and self.site.requestTimeout:
            self._deadline = self.callLater(self.site.requestTimeout, self._timedOut)
        super().dataReceived(data)

    def onAllContentReceived(self) -> None:
        self.stopDeadline()

    def connectionLost(self, reason: Failure) -> None:
        self.stopDeadline()
        super().connectionLost(reason)

    def stopDeadline(self) -> None:
        """
        The request arrived whole (or was answered early): no timer runs.
        """
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _timedOut(self) -> None:
        self._deadline = None
        peer = self.transport.getPeer()
        if self.site.limits is not None:
            self.site.limits.refused("requestTimeoutSeconds", getattr(peer, "host", None) or str(peer),
                                     "request not received in time")
        self.transport.abortConnection()


@implementer(IReloadable)
class RestSite(server.Site):
    """
    The REST API's site: bounded request bodies, and requests that must
    arrive in time.

    @ivar maxBody: the most bytes a request body may have.
    @ivar limits: the server's limits (C{requestTimeoutSeconds}; refusals
        are counted and logged there), or L{None}.
    """

    #: no "Starting factory <... at 0x...>" in the log (L{wsserver.quietlog})
    noisy = False

    requestFactory = _BoundedRequest
    protocol = _TimedChannel
    #: set when the server stops: requests still arriving get 503
    stopping = False

    def __init__(self, resource: Resource, maxBody: int, limits: Limits | None = None, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.maxBody = maxBody
        self.limits = limits
        self._idleTimeOut = self.timeOut
        #: seconds for a request to arrive whole (0: no limit)
        self.requestTimeout: float = 0
        #: the requests being answered (L{stop} waits for them)
        self._inProgress: set[server.Request] = set()
        #: the L{stop}s waiting for them
        self._idle: list[Deferred[None]] = []
        if limits is not None:
            self.setRequestTimeout(limits.config.requestTimeoutSeconds)

    def setRequestTimeout(self, timeout: float) -> None:
        """
        Requests (on connections made from now on) must arrive whole within
        C{timeout} seconds (0: no limit); it is also the idle time of a
        kept-alive connection.
        """
        self.requestTimeout = timeout
        self.timeOut = timeout or self._idleTimeOut

    def reloadConfig(self, old: Config, new: Config) -> list[str]:
        """
        Apply a reload's C{chat.message.maxSize} (the body bound) and
        C{server.limits.requestTimeoutSeconds} to the requests from now on
        (see L{IReloadable}).
        """
        applied = []
        if new.chat.message != old.chat.message:
            self.maxBody = new.chat.message.maxSize
            applied.append("chat.message")
        if new.server.limits != old.server.limits:
            self.setRequestTimeout(new.server.limits.requestTimeoutSeconds)
            applied.append("server.limits")
        return applied

    def begun(self, request: server.Request) -> None:
        """
        C{request} is being answered (it has arrived whole): L{stop} waits
        for it.
        """
        self._inProgress.add(request)

    def ended(self, request: server.Request) -> None:
        """
        C{request} is answered, or its connection lost.
        """
        inProgress = self._inProgress
        inProgress.discard(request)
        if not inProgress and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def stop(self, timeout: float = STOP_SECONDS) -> Deferred[None]:
        """
        Answer 503 from now on (the server is stopping), and wait for the
        requests in progress to finish, for C{timeout} seconds at most: a
        message accepted is routed before the router and the stores go.

        @return: fires when none is in progress, or at the timeout.
        """
        self.stopping = True
        if not self._inProgress:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._idle.remove(d))
        self._idle.append(d)

        def timedOut(result: Any, timeout: float) -> None:
            log.warn("REST API: {n} requests still in progress after {timeout} s at stop",
                     n=len(self._inProgress), timeout=timeout)

        return d.addTimeout(timeout, self.reactor, onTimeoutCancel=timedOut)


class _Endpoint(Resource):
    """
    One REST endpoint: checks the method and the auth, then answers with its
    handler's JSON.
    """

    isLeaf = True

    def __init__(self, api: _Api, handlers: dict[bytes, Callable[[IRequest], Answer]], public: bool = False) -> None:
        super().__init__()
        self._api = api
        #: answers without the REST auth (C{/health}, C{/ready})
        self._public = public
        self._handlers = handlers
        if b"GET" in handlers and b"HEAD" not in handlers:
            self._handlers = {**handlers, b"HEAD": handlers[b"GET"]}

    def render(self, request: IRequest) -> bytes | int:
        if request.postpath not in ([], [b""]):
            # a leaf answers for its own path (and a trailing slash) only
            return self._api.guarded(request, lambda r: _error(404, "Not found"))
        handler = self._handlers.get(request.method)
        if handler is None:
            # behind the auth too, like 404: no caller learns the methods
            # without credentials
            return self._api.guarded(request, self._notAllowed)
        if self._public:
            # answered to anyone: not even the web library's name and version
            request.responseHeaders.removeHeader(b"Server")
            return self._api.run(request, handler)
        return self._api.guarded(request, handler)

    def _notAllowed(self, request: IRequest) -> Answer:
        request.setHeader(b"Allow", b", ".join(sorted(self._handlers)))
        return _error(405, "Method not allowed")


class _NotFound(Resource):
    isLeaf = True

    def __init__(self, api: _Api) -> None:
        super().__init__()
        self._api = api

    def render(self, request: IRequest) -> bytes | int:
        return self._api.guarded(request, lambda r: _error(404, "Not found"))


class _Root(Resource):
    def __init__(self, api: _Api) -> None:
        super().__init__()
        self._api = api

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return _NotFound(self._api)


class _Api:
    """
    The handlers of the REST API.
    """

    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        realm: bytes | None,
        notifier: EventNotifier | None,
        clusterStats: IClusterStatistics | None = None,
        operations: Operations | None = None,
        limits: Limits | None = None,
        idempotency: IIdempotency | None = None,
        idempotencySeconds: float = 0,
        *,
        messages: MessageFactory,
        clock: IReactorTime,
        inbox: IInbox | None = None,
    ) -> None:
        self.messages = messages
        self.clock = clock
        self.inbox = inbox
        self.limits = limits
        if operations is None:
            collector = ServerCollector(router, notifier)
            operations = Operations(collector, makeRegistry(collector))
        self.operations = operations
        self.idempotency = idempotency if idempotencySeconds > 0 else None
        self.idempotencySeconds = idempotencySeconds
        #: C{Idempotency-Key}s routed here and not settled yet -> the
        #: repeats waiting for the first's answer
        self._unsettled: dict[bytes, list[Deferred[Answer]]] = {}
        self.notifier = notifier
        self.clusterStats = clusterStats
        self.router = router
        self.authenticator = authenticator
        self.realm = realm

    # plumbing

    def write(self, request: IRequest, answer: Answer) -> bytes:
        status, body = answer
        request.setResponseCode(status)
        if body is None:
            return b""
        if isinstance(body, _Raw):
            request.setHeader(b"Content-Type", body.contentType)
            for name, value in body.headers:
                request.setHeader(name, value)
            return body.body
        request.setHeader(b"Content-Type", b"application/json")
        return orjson.dumps(body)

    def run(self, request: IRequest, handler: Callable[[IRequest], Answer | Deferred[Answer]]) -> bytes | int:
        """
        Answer with C{handler}, which may answer later (a L{Deferred}).
        """
        answer = handler(request)
        if not isinstance(answer, Deferred):
            return self.write(request, answer)
        finished = []
        request.notifyFinish().addErrback(lambda f: finished.append(True))

        def crashed(f: Failure) -> Answer:
            log.failure("REST handler failed", f)
            return _error(500, "Internal error")

        def send(answer: Answer) -> None:
            if not finished:
                request.write(self.write(request, answer))
                request.finish()

        answer.addErrback(crashed).addCallback(send)
        return server.NOT_DONE_YET

    def guarded(self, request: IRequest, handler: Callable[[IRequest], Answer | Deferred[Answer]]) -> bytes | int:
        """
        Answer with C{handler} once the REST auth passed, with 401 otherwise;
        with 503 once the server is stopping (on connections kept alive past
        the stop of the listening port), so that nothing is accepted that
        could no longer be routed or kept.
        """
        if getattr(getattr(request.channel, "site", None), "stopping", False):
            request.setHeader(b"Connection", b"close")
            return self.write(request, _error(503, "Server shutting down"))
        if self.authenticator.isNoAuth:
            return self.run(request, handler)
        limits = self.limits
        address = _address(request)
        if limits is not None and limits.authFailures.blocked(address):
            limits.refused("authFailuresPerMinute", address, "too many failed authentications")
            return self.write(request, _error(429, "Too many failed authentications"))

        finished = []
        request.notifyFinish().addErrback(lambda f: finished.append(True))

        def checked(passed: bool) -> None:
            if finished:
                return
            if passed:
                body = self.run(request, handler)
                if body is server.NOT_DONE_YET:
                    return
            else:
                if limits is not None:
                    limits.authFailures.failed(address)
                peerLog.info("REST auth failed from {peer}", peer=address)
                if self.realm is not None:
                    request.setHeader(b"WWW-Authenticate", b'Basic realm="' + self.realm + b'"')
                body = self.write(request, _error(401, "Unauthorized"))
            request.write(body)
            request.finish()

        def failed(f: Any) -> None:
            log.failure("REST auth check failed", f)
            checked(False)

        def crashed(f: Failure) -> None:
            log.failure("REST request failed", f)
            if not finished and not request.finished:
                request.write(self.write(request, _error(500, "Internal error")))
                request.finish()

        d = self.authenticator.authenticate(Credentials.fromRequest(request))
        d.addCallbacks(checked, failed).addErrback(crashed)
        return server.NOT_DONE_YET

    def _userId(self, request: IRequest) -> UserId | Answer:
        rule = self.messages.ids
        values = request.args.get(b"id")
        if not rule.numeric and b"+" in request.uri:
            # (a plus is one of an id's characters, not a space)
            values = parse_qs(urlsplit(request.uri).query.replace(b"+", b"%2B")).get(b"id")
        if not values or values == [b""]:
            return _error(400, "Id required")
        try:
            return parseUserId([v.decode("utf-8", "replace") for v in values], rule)
        except InvalidUserId as e:
            # the original's words with its rule; with "any", why
            return _error(400, "Invalid id" if rule.numeric else str(e))

    # endpoints

    def stats(self, request: IRequest) -> Answer | Deferred[Answer]:
        if self.clusterStats is not None:
            return self.clusterStats.statItems().addCallback(_ok)
        return _ok(self.router.statItems())

    def stat(self, request: IRequest) -> Answer | Deferred[Answer]:
        uid = self._userId(request)
        if isinstance(uid, tuple):
            return uid
        if self.clusterStats is not None:
            return self.clusterStats.statItem(uid).addCallback(_ok)
        return _ok(self.router.statItem(uid))

    def checkOnline(self, request: IRequest) -> Answer:
        uid = self._userId(request)
        if isinstance(uid, tuple):
            return uid
        return _ok({"isOnline": self.router.isOnline(uid)})

    def sendMessage(self, request: IRequest) -> Answer | Deferred[Answer]:
        if getattr(request, "tooLarge", False):
            limit = getattr(request.channel.site, "maxBody", 0)
            return _error(413, f"Payload too large: the limit is {limit} bytes")
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if contentType != b"application/json":
            return _error(400, "Content-Type must be application/json")
        body = request.content.read()
        try:
            message = self.messages.fromPayload(body, BOT, enforceSender=False)
        except InvalidPayload as e:
            return _error(400, "Invalid payload. " + e.reason)
        if message.isForBot():
            return _error(400, "Can't send message to bot through the api")
        key = request.getHeader(b"idempotency-key") if self.idempotency is not None else None
        if key is None:
            return self._route(message)
        if len(key.decode("utf-8", "replace")) > MAX_IDEMPOTENCY_KEY:
            return _error(400, f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters")
        if not key:
            return _error(400, "Idempotency-Key must not be empty")
        try:
            # before the claim: a message that cannot be routed must not use up its key
            message.serialize()
        except (TypeError, orjson.JSONEncodeError) as e:
            return _error(400, f"Invalid payload. $.data cannot be carried: {e}")
        assert self.idempotency is not None

        idempotency = self.idempotency
        peers = self.router.peers
        claimKey = b"rest:" + key
        pending = b"p:%s:%s" % (peers.nodeId.encode(), message.id.encode())

        def replayed(answer: Answer) -> Answer:
            if answer[0] == 202:
                request.setHeader(b"Idempotent-Replayed", b"true")
            return answer

        def claimed(earlier: bytes | None) -> Answer | Deferred[Answer]:
            if earlier is None:
                return self._routeClaimed(claimKey, message)
            if not earlier.startswith(b"p:"):
                return replayed((202, None))
            waiters = self._unsettled.get(claimKey)
            if waiters is not None:
                # routed here, not committed yet: answered as the first is
                waiter: Deferred[Answer] = Deferred()
                waiters.append(waiter)
                return waiter.addCallback(replayed)
            node = earlier.split(b":", 2)[1].decode("utf-8", "replace")
            if node != peers.nodeId and peers.isAlive(node):
                return _error(409, "A request with this Idempotency-Key is in progress; try again")
            # its node died (or forgot it) before settling: route it again, claimed anew
            idempotency.settle(claimKey, pending).addErrback(
                lambda f: log.warn("Idempotency-Key could not be claimed again: {why}", why=f.getErrorMessage()))
            return self._routeClaimed(claimKey, message)

        def unchecked(f: Failure) -> Answer:
            log.warn("Idempotency-Key could not be checked: {why}", why=f.getErrorMessage())
            return _error(503, "Idempotency-Key could not be checked; nothing was sent, try again")

        d = idempotency.claim(claimKey, pending, self.idempotencySeconds)
        return d.addCallbacks(claimed, unchecked)

    def _routeClaimed(self, claimKey: bytes, message: Any) -> Answer | Deferred[Answer]:
        """
        Route a message whose C{Idempotency-Key} this request claimed; once
        everything written for it is committed, settle the key with the
        message id and answer (and answer the repeats that waited).  After a
        failed write the key is left pending on no node, so that a repeat
        routes again.
        """
        idempotency = self.idempotency
        assert idempotency is not None
        writes: list[Deferred[Any]] = []
        try:
            self.router.route(message, writes=writes)
        except InvalidPayload as e:
            return _error(400, "Invalid payload. " + e.reason)
        self.router.counters.receivedRest += 1
        waiters = self._unsettled[claimKey] = []

        def committed(_: object) -> Deferred[Answer]:
            def answer(_: object) -> Answer:
                return 202, None

            def unsettled(f: Failure) -> Answer:
                log.warn("Idempotency-Key could not be settled: {why}", why=f.getErrorMessage())
                return 202, None  # routed and kept: the pending claim stays until its TTL

            return idempotency.settle(claimKey, message.id.encode()).addCallbacks(answer, unsettled)

        def unwritten(f: Failure) -> Deferred[Answer]:
            log.warn("a message sent with an Idempotency-Key could not be stored: {why}",
                     why=getattr(f.value, "subFailure", f).getErrorMessage())
            error = _error(503, "The message could not be stored; try again with the same Idempotency-Key")
            d = idempotency.settle(claimKey, b"p::" + message.id.encode())
            return d.addBoth(lambda _: error)

        def done(answer: Answer) -> Answer:
            self._unsettled.pop(claimKey, None)
            for waiter in waiters:
                waiter.callback(answer)
            return answer

        d = gatherResults(writes, consumeErrors=True).addCallbacks(committed, unwritten)
        return d.addCallback(done)

    def _route(self, message: Any) -> Answer | Deferred[Answer]:
        router = self.router
        try:
            router.route(message)
        except InvalidPayload as e:
            return _error(400, "Invalid payload. " + e.reason)
        router.counters.receivedRest += 1
        pending = router.pendingWrites
        if pending.full:
            # the undelivered queue is behind: the 202 (and so the next
            # request of this client: the channel reads none meanwhile)
            # waits until it caught up
            relieved: Deferred[Answer] = Deferred()
            pending.whenRelieved(lambda: relieved.callback((202, None)))
            return relieved
        return 202, None

    def history(self, request: IRequest) -> Answer | Deferred[Answer]:
        uid = self._userId(request)
        if isinstance(uid, tuple):
            return uid
        inbox = self.inbox
        if inbox is None:
            return _error(404, "History is not enabled (chat.history.enabled)")
        since = _count(request, b"since", 0, None)
        if isinstance(since, str):
            return _error(400, f"Invalid since: {since}")
        limit = _count(request, b"limit", HISTORY_LIMIT, HISTORY_MAX)
        if isinstance(limit, str):
            return _error(400, f"Invalid limit: {limit}")
        if limit == 0:
            return _error(400, "Invalid limit: must be from 1 to 1000")
        d = inbox.read(uid, since, limit, self.clock.seconds())
        return d.addCallback(lambda page: _ok([orjson.Fragment(payload) for _, payload in page.entries]))

    def status(self, request: IRequest) -> Answer:
        return 200, {"success": True}

    def events(self, request: IRequest) -> Answer | Deferred[Answer]:
        if self.notifier is None:
            return _ok([])
        return self.notifier.counts().addCallback(_ok)

    # operations (SPEC section 9)

    def metrics(self, request: IRequest) -> Deferred[Answer]:
        operations = self.operations

        def expose(_: None) -> Answer:
            registry = operations.registry
            if operations.shared is not None:
                operations.shared.write()  # this worker's figures fresh, the others' up to a second old
                registry = operations.shared.registry
            return 200, _Raw(CONTENT_TYPE_LATEST.encode("ascii"), generate_latest(registry))

        return operations.collector.refresh().addCallback(expose)

    def health(self, request: IRequest) -> Answer:
        return 200, {"status": "ok"}

    def ready(self, request: IRequest) -> Answer:
        stopping = getattr(getattr(request.channel, "site", None), "stopping", False)
        if stopping or not self.operations.readiness.ready():
            return 503, {"status": "not ready"}
        return 200, {"status": "ready"}

    def overview(self, request: IRequest) -> Deferred[Answer]:
        return Deferred.fromCoroutine(self._overview())

    async def _overview(self) -> Answer:
        operations = self.operations
        if operations.shared is not None:
            operations.shared.write()
            node = summaryOf(operations.shared.registry.collect())
        else:
            node = operations.collector.summary()
        if self.clusterStats is not None:
            items = await self.clusterStats.statItems()
        else:
            items = self.router.statItems()
        online = [item for item in items if item["isOnline"]]
        events = None if self.notifier is None else await self.notifier.counts()
        return _ok({
            "nodes": node.get("cluster", {}).get("nodes", 1),
            "node": node,
            "undelivered": {"enabled": operations.queueStorage is not None, "storage": operations.queueStorage},
            "events": events,
            "usersOnline": len(online),
            "users": online[:OVERVIEW_USERS],
        })

    def dashboard(self, request: IRequest) -> Answer:
        return 200, _Raw(b"text/html; charset=utf-8", _dashboardPage(), _PAGE_HEADERS)


def _dashboardPage() -> bytes:
    """
    The dashboard, a package data file (read at each request: it is small,
    and rarely asked for).
    """
    return files("wsserver").joinpath("web", "dashboard.html").read_bytes()


def makeRestResource(
    router: Router,
    authenticator: Authenticator,
    basicRealm: str | None = "wsserver",
    notifier: EventNotifier | None = None,
    stats: IClusterStatistics | None = None,
    operations: Operations | None = None,
    limits: Limits | None = None,
    idempotency: IIdempotency | None = None,
    idempotencySeconds: float = 0,
    *,
    messages: MessageFactory,
    clock: IReactorTime,
    inbox: IInbox | None = None,
) -> Resource:
    """
    The REST API's resource tree.

    @param basicRealm: the realm of the C{WWW-Authenticate} header sent with a
        401, or L{None} when the auth is not basic.
    @param notifier: the event notifier that C{/events} reports on, if any.
    @param stats: where C{/stat} and C{/stats} come from in a cluster (a
        L{wsserver.cluster.ClusterStats}: C{statItem(id)} and C{statItems()}
        answer L{Deferred}s); L{None}: from C{router}, this process's only.
    @param operations: what C{/metrics}, C{/ready} and C{/overview} read;
        L{None}: metrics of C{router} and C{notifier}, always ready.
    @param limits: the server's limits (C{authFailuresPerMinute}, shared with
        the WebSocket side), or L{None}.
    @param idempotency: where C{Idempotency-Key}s are claimed, for
        C{idempotencySeconds} (0 or no store: the header is ignored).
    @param messages: makes the messages of C{/send-message} (the router's).
    @param clock: the time source (the router's).
    @param inbox: the per-user inboxes that C{/history} reads (L{None}:
        C{chat.history} is off).
    """
    api = _Api(router, authenticator, basicRealm.encode() if basicRealm else None, notifier, stats, operations,
               limits, idempotency, idempotencySeconds, messages=messages, clock=clock, inbox=inbox)
    root = _Root(api)
    root.putChild(b"stats", _Endpoint(api, {b"GET": api.stats}))
    root.putChild(b"stat", _Endpoint(api, {b"GET": api.stat}))
    root.putChild(b"check-online", _Endpoint(api, {b"GET": api.checkOnline}))
    root.putChild(b"send-message", _Endpoint(api, {b"POST": api.sendMessage}))
    root.putChild(b"status", _Endpoint(api, {b"GET": api.status}))
    root.putChild(b"events", _Endpoint(api, {b"GET": api.events}))
    root.putChild(b"metrics", _Endpoint(api, {b"GET": api.metrics}))
    root.putChild(b"health", _Endpoint(api, {b"GET": api.health}, public=True))
    root.putChild(b"ready", _Endpoint(api, {b"GET": api.ready}, public=True))
    root.putChild(b"overview", _Endpoint(api, {b"GET": api.overview}))
    root.putChild(b"dashboard", _Endpoint(api, {b"GET": api.dashboard}))
    root.putChild(b"history", _Endpoint(api, {b"GET": api.history}))
    return root
