"""A thin async Kubernetes REST client that speaks plain dicts.

``Client`` sends requests through kubernetes-asyncio's ``Configuration`` and ``RESTClientObject`` (so
kubeconfig/in-cluster credentials, token refresh and TLS come from there; ``opsync.rest`` imports them without
the generated classes), never through its ``ApiClient`` or generated model classes: bodies go out and come back
as JSON dicts (``KubeObject``). Every request has a deadline and is shown to the client's ``observers`` (an
``ApiRequest`` each); the default one, ``count_request``, counts it in ``rest_client_requests_total{code,method,
host}`` as client-go's request-result metric does. Failures the API server reports become typed ``ApiError``
subclasses whose message comes from the server's ``Status`` only, never from the request body (which may hold
Secret data). Network failures propagate as ``aiohttp.ClientError`` or ``TimeoutError``.

Requests and watches go over HTTP/2 when the API server offers it (``opsync.http2``): all of them on one
connection, as client-go sends them, instead of a connection for each watch and for each request in flight.
Otherwise (``http2=False``, a proxy, a server without HTTP/2) they go over aiohttp's HTTP/1.1 pool.

One class with every REST verb and the watch stream, plus the re-exported errors (``opsync.errors``) its
callers catch.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import ssl
import urllib.request
from asyncio import sslproto
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlencode, urlsplit

import aiohttp

from opsync import __version__, metrics, rest
from opsync.errors import (  # re-exported: callers catch them as opsync.client errors
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    TooManyRequestsError,
    error_from_response,
    error_from_status,
)
from opsync.http2 import CLIENT_GO_HEALTH_CHECK, HealthCheck, Pool, Stream
from opsync.resources import KubeObject, Resource

__all__ = [
    "AlreadyExistsError",
    "ApiError",
    "ApiRequest",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "NotFoundError",
    "PatchType",
    "RequestObserver",
    "TooManyRequestsError",
    "WatchEvent",
    "count_request",
    "error_from_response",
    "error_from_status",
]

log = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    # JSON is YAML, so an apply body can be sent as JSON under the YAML media type the API asks for.
    "apply": "application/apply-patch+yaml",
}
Query = list[tuple[str, str]]  # (name, value) pairs, in order; aliased since Client.list shadows ``list``
_MUTATE_ATTEMPTS = 5  # as client-go's retry.DefaultRetry
_MUTATE_BACKOFF = 0.01


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request, as observers see it: no headers, no body."""

    method: str
    path: str
    host: str
    """``host:port`` of the API server."""
    status: int | None
    """The HTTP status; None when no answer came."""


RequestObserver = Callable[[ApiRequest], None]
"""Called after every request; must not raise and must not block."""


def count_request(request: ApiRequest) -> None:
    """The default observer: ``rest_client_requests_total`` (code ``<error>`` without an answer, as client-go)."""
    code = "<error>" if request.status is None else str(request.status)
    metrics.REST_CLIENT_REQUESTS.labels(code=code, method=request.method, host=request.host).inc()


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event: ``type`` is ADDED, MODIFIED, DELETED or BOOKMARK (ERROR events are raised)."""

    type: str
    object: KubeObject


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _skip_environment_lookups(session: aiohttp.ClientSession) -> None:
    """Stop aiohttp looking up proxies and ``~/.netrc`` in a worker thread on every request.

    kubernetes-asyncio's session trusts the environment: two thread-pool round trips and a file lookup per
    request, about 0.8 ms of CPU (measured for docs/benchmarks.md; several times the cost of a loopback request). With
    no proxy variables set the lookups can find nothing client-go would use (it reads no ``.netrc``), so they
    are turned off; with proxy variables the session is left as it is.
    """
    if not urllib.request.getproxies():
        session._trust_env = False


TLS_READ_BUFFER = 8 * 1024
"""The read buffer of each TLS connection in a process that made a ``Client`` (asyncio's own is 256 KiB)."""


def _small_tls_read_buffers() -> None:
    """Give each TLS connection of this process an 8 KiB read buffer instead of asyncio's 256 KiB.

    asyncio allocates and zeroes ``SSLProtocol.max_size`` bytes when a TLS connection opens and keeps them for
    the connection's life. Over HTTP/1.1 every watch holds a connection of its own for as long as it runs, one
    per (namespace, kind): nine kinds in 50 watched namespaces held 112 MiB of read buffers. The size bounds one
    read from the socket, not a response (asyncio reads until the socket is drained): listing 32 MB of Secrets
    took the same time and CPU with 8, 16, 32, 64 and 256 KiB (docs/benchmarks.md), a TLS record of 16 KiB
    taking two reads at 8. Only a buffer larger than this one is lowered.
    """
    sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, TLS_READ_BUFFER)


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 -- a path
SERVICE_ACCOUNT_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
USER_AGENT = f"opsync/{__version__}"
"""What the API server's audit log shows as the client of opsync's requests."""


class Client:
    """Async CRUD, patch and watch on any ``Resource``; returns plain dicts."""

    def __init__(
        self,
        configuration: rest.Configuration,
        *,
        request_timeout: float = 30.0,
        field_manager: str = "opsync",
        observers: Sequence[RequestObserver] = (count_request,),
        http2: bool = True,
        http2_health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> None:
        """A client of the API server ``configuration`` names, with its credentials and TLS settings (as the
        loaders in ``from_kubeconfig`` and ``in_cluster`` fill it in). Make it with an event loop running: the
        connection pool is made here.

        ``http2=False`` (opsync's ``DISABLE_HTTP2``, as client-go's) sends everything over HTTP/1.1; so does an
        API server reached through a proxy, or one that does not offer HTTP/2. ``http2_health`` times the HTTP/2
        connections' health check (``HTTP2_READ_IDLE_TIMEOUT_SECONDS`` and ``HTTP2_PING_TIMEOUT_SECONDS``).

        The HTTP/1.1 pool has no limit on open connections: each open watch holds one for its life, so a limit
        (for kubernetes-asyncio 100 by default) was reached from 12 watched namespaces, and every other request
        then waited minutes for a watch to end. client-go sets none either; how many requests are in flight is
        bounded by the callers (the workers of each controller, one list per informer). ``observers`` see
        every request (replace the default to count requests elsewhere, or not at all).
        """
        _small_tls_read_buffers()
        self._configuration = configuration
        self._rest = rest.RESTClientObject(configuration, maxsize=0)  # aiohttp: 0 is no limit
        self._headers = {"User-Agent": USER_AGENT}
        self._observers = tuple(observers)
        self.request_timeout = request_timeout
        self.field_manager = field_manager
        self._metric_host = urlsplit(self.host).netloc
        self._http2 = _http2_pool(configuration, http2_health) if http2 else None
        _skip_environment_lookups(self._rest.pool_manager)

    @classmethod
    async def from_kubeconfig(
        cls,
        path: str | None = None,
        *,
        context: str | None = None,
        request_timeout: float = 30.0,
        field_manager: str = "opsync",
        observers: Sequence[RequestObserver] = (count_request,),
        http2: bool = True,
        http2_health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> Client:
        """A client for ``path`` (default: ``$KUBECONFIG`` or ``~/.kube/config``) and ``context``."""
        configuration = rest.Configuration()
        await rest.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        return cls(
            configuration,
            request_timeout=request_timeout,
            field_manager=field_manager,
            observers=observers,
            http2=http2,
            http2_health=http2_health,
        )

    @classmethod
    def in_cluster(
        cls,
        *,
        request_timeout: float = 30.0,
        field_manager: str = "opsync",
        observers: Sequence[RequestObserver] = (count_request,),
        token_file: str = SERVICE_ACCOUNT_TOKEN,
        ca_file: str = SERVICE_ACCOUNT_CA,
        http2: bool = True,
        http2_health: HealthCheck = CLIENT_GO_HEALTH_CHECK,
    ) -> Client:
        """A client for the pod's ServiceAccount (token re-read as kubelet rotates it), at the address
        ``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT`` give; the files are where kubelet mounts them.

        Call it with an event loop running: the connection pool is made here.
        """
        configuration = rest.Configuration()
        rest.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration, token_filename=token_file, cert_filename=ca_file
        )
        return cls(
            configuration,
            request_timeout=request_timeout,
            field_manager=field_manager,
            observers=observers,
            http2=http2,
            http2_health=http2_health,
        )

    def impersonate(self, user: str) -> None:
        """Send every further request as ``user`` (the ``Impersonate-User`` header; the caller needs the
        ``impersonate`` verb on that user or ServiceAccount). For ``system:serviceaccount:NS:NAME`` the API
        server adds the ServiceAccount's groups itself."""
        self._headers["Impersonate-User"] = user

    @property
    def host(self) -> str:
        """The API server URL, e.g. ``https://127.0.0.1:6443``."""
        return str(self._configuration.host)

    async def close(self) -> None:
        """Close the connection pools."""
        if self._http2 is not None:
            await self._http2.close()
        await self._rest.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # plumbing

    async def _send(
        self, method: str, path: str, query: Query, body: Any = None, content_type: str | None = None
    ) -> _Response:
        """Send a request and return the response, its body unread; the observers see it whatever happens."""
        headers = {
            **await self._request_headers(),
            "Accept": "application/json",
            "Content-Type": content_type or "application/json",
        }
        url = f"{path}?{urlencode(query)}" if query else path
        status: int | None = None
        try:
            response: _Response | None = None
            if self._http2 is not None:
                response = await self._send_http2(self._http2, method, url, headers, body)
            if response is None:
                response = _Http1Response(
                    await self._rest.request(
                        method, self.host + url, headers=headers, body=body, _preload_content=False
                    )
                )
            status = response.status
            return response
        finally:
            request = ApiRequest(method, path, self._metric_host, status)
            for observe in self._observers:
                observe(request)

    async def _send_http2(
        self, pool: Pool, method: str, url: str, headers: Mapping[str, str], body: Any
    ) -> Stream | None:
        """The request as one stream of the pool's connection; None when the server speaks no HTTP/2."""
        data = b"" if body is None else json.dumps(body).encode()  # JSON for every content type, as kubernetes-asyncio
        fields = [(":method", method), (":scheme", "https"), (":authority", self._metric_host), (":path", url)]
        fields += [(name.lower(), value) for name, value in headers.items()]
        if data:
            fields.append(("content-length", str(len(data))))
        return await pool.request(fields, data)

    async def _request_headers(self) -> dict[str, str]:
        """User-Agent, impersonation and the bearer token: re-read first when the loader gave a refresh hook (a
        rotated ServiceAccount token, an exec plugin's expired credential). Client certificates are in the TLS
        contexts."""
        headers = dict(self._headers)
        settings: Any = self._configuration.auth_settings()
        if inspect.isawaitable(settings):  # a coroutine in kubernetes-asyncio 33; the dict itself in 32
            settings = await settings
        bearer = settings.get("BearerToken")
        if bearer:
            headers[bearer["key"]] = bearer["value"]
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        async with asyncio.timeout(self.request_timeout):
            response = await self._send(method, path, query or [], body, content_type)
            try:
                data = await response.read_all()
            finally:
                response.close()
        if response.status >= 300:
            raise error_from_response(response.status, data, response.headers)
        return json.loads(data) if data else None

    @staticmethod
    def _object_path(resource: Resource, name: str, namespace: str | None, subresource: str | None = None) -> str:
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource} {name!r}: a namespace is required")
        return resource.path(namespace, name, subresource)

    # reads

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> KubeObject:
        """Read one object."""
        return cast(KubeObject, await self._request("GET", self._object_path(resource, name, namespace)))

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> KubeObject:
        """One page of a list: ``{"items": [...], "metadata": {"resourceVersion", "continue"}}``.

        ``namespace=None`` lists a namespaced resource across all namespaces.
        """
        query: Query = []
        for key, value in (
            ("labelSelector", label_selector),
            ("fieldSelector", field_selector),
            ("limit", str(limit) if limit else None),
            ("continue", continue_token),
            ("resourceVersion", resource_version),
            ("resourceVersionMatch", resource_version_match),
        ):
            if value is not None:
                query.append((key, value))
        return cast(KubeObject, await self._request("GET", resource.path(namespace), query))

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = True,
        inactivity_timeout: float = 70.0,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Stream changes after ``resource_version``.

        The stream ends normally when the server closes it (after ``timeout_seconds``) or when nothing (no event,
        no bookmark) arrived for ``inactivity_timeout`` seconds: a silently dead connection must not stall the
        caller forever. ERROR events are raised as ``ApiError`` (``GoneError`` for an expired resourceVersion).
        """
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", _flag(allow_bookmarks)),
        ]
        if label_selector is not None:
            query.append(("labelSelector", label_selector))
        if field_selector is not None:
            query.append(("fieldSelector", field_selector))
        return self._stream(resource.path(namespace), query, inactivity_timeout)

    async def _stream(self, path: str, query: Query, inactivity_timeout: float) -> AsyncGenerator[WatchEvent, None]:
        async with asyncio.timeout(self.request_timeout):
            body = await self._send("GET", path, query)
            if body.status != 200:
                try:
                    data = await body.read_all(_ERROR_BODY_LIMIT)
                finally:
                    body.close()
                raise error_from_response(body.status, data, body.headers)
        try:
            pending = bytearray()
            while True:
                try:
                    async with asyncio.timeout(inactivity_timeout):
                        chunk = await body.read()
                except TimeoutError:
                    log.warning("watch %s: nothing received for %.0fs, reconnecting", path, inactivity_timeout)
                    return
                if not chunk:
                    return  # the server ended the watch (timeoutSeconds elapsed)
                pending += chunk
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    if line.strip():
                        yield _watch_event(bytes(line))
        finally:
            body.close()

    # writes

    async def create(self, resource: Resource, body: KubeObject, namespace: str | None = None) -> KubeObject:
        """Create ``body`` (in ``namespace``, default: the body's own)."""
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource}: a namespace is required to create")
        query = [("fieldManager", self.field_manager)]
        return cast(KubeObject, await self._request("POST", resource.path(namespace), query, body))

    async def replace(self, resource: Resource, body: KubeObject, *, subresource: str | None = None) -> KubeObject:
        """Replace (PUT) the object named by ``body``'s metadata; its resourceVersion guards against races."""
        meta = body.get("metadata") or {}
        path = self._object_path(resource, meta["name"], meta.get("namespace"), subresource)
        return cast(KubeObject, await self._request("PUT", path, [("fieldManager", self.field_manager)], body))

    async def patch(
        self,
        resource: Resource,
        name: str,
        body: KubeObject | Sequence[Any],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        force: bool = False,
    ) -> KubeObject:
        """Patch an object. ``apply`` is server-side apply as ``field_manager``; ``force`` takes over conflicting
        fields (apply only)."""
        if force and patch_type != "apply":
            raise ValueError("force is only meaningful for server-side apply")
        query = [("fieldManager", self.field_manager)]
        if force:
            query.append(("force", "true"))
        path = self._object_path(resource, name, namespace, subresource)
        return cast(KubeObject, await self._request("PATCH", path, query, body, _PATCH_CONTENT_TYPES[patch_type]))

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> None:
        """Delete an object; ``preconditions`` may pin its ``uid`` and/or ``resourceVersion``."""
        options: KubeObject = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = dict(preconditions)
        await self._request("DELETE", self._object_path(resource, name, namespace), None, options)

    async def mutate(
        self, resource: Resource, name: str, namespace: str | None, fn: Callable[[KubeObject], bool]
    ) -> KubeObject | None:
        """Read the object, let ``fn`` change it in place, and write it back if ``fn`` returned True.

        A write that loses a race (409 Conflict) is retried from a fresh read a few times. Returns the written
        object, or None when ``fn`` decided nothing needed to change.
        """
        attempt = 1
        while True:
            obj = await self.get(resource, name, namespace)
            if not fn(obj):
                return None
            try:
                return await self.replace(resource, obj)
            except ConflictError:
                if attempt == _MUTATE_ATTEMPTS:
                    raise
            attempt += 1
            # Jittered so that racing writers do not collide again in lock step.
            await asyncio.sleep(_MUTATE_BACKOFF * (1 + random.random()))  # noqa: S311 -- not crypto


_ERROR_BODY_LIMIT = 1 << 20  # a watch refused: its Status is a few hundred bytes


class _Response(Protocol):
    """What ``Client`` reads of a response, over either protocol; ``close`` it when done."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the body (at most ``limit`` bytes)."""

    def close(self) -> None: ...


class _Http1Response:
    """An aiohttp response as a ``_Response``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        return await self._response.content.readany()

    async def read_all(self, limit: int | None = None) -> bytes:
        data = await self._response.read()
        return data if limit is None else data[:limit]

    def close(self) -> None:
        # Read to its end, the connection goes back to the pool; a watch ended early must drop its own.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _http2_pool(configuration: rest.Configuration, health: HealthCheck) -> Pool | None:
    """HTTP/2 connections to the API server, with the TLS settings kubernetes-asyncio gives its own session; None
    for an API server over plain HTTP or through a proxy (which opsync's HTTP/2 does not tunnel)."""
    url = urlsplit(str(configuration.host))
    if url.scheme != "https" or not url.hostname or configuration.proxy:
        return None
    if urllib.request.getproxies().get("https") and not urllib.request.proxy_bypass(url.hostname):
        return None
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if getattr(configuration, "disable_strict_ssl_verification", False):  # not in older kubernetes-asyncio
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.set_alpn_protocols(["h2"])
    return Pool(url.hostname, url.port or 443, context, configuration.tls_server_name, health)


def _watch_event(line: bytes) -> WatchEvent:
    data = json.loads(line)
    event_type, obj = str(data.get("type") or ""), data.get("object") or {}
    if event_type == "ERROR":
        raise error_from_status(int(obj.get("code") or 500), obj)
    return WatchEvent(event_type, obj)
