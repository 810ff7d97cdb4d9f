"""``Emulator``: the Connect emulator as an object (in tests and benchmarks) and its admin API.

``async with Emulator(data) as emu`` serves on ``emu.url`` (127.0.0.1, a free port by default) until the
block ends. Faults are switched at run time with ``await emu.set_faults(...)`` or ``PUT /__admin/faults``;
items are edited with ``emu.update_item(...)`` or ``POST /__admin/items``; ``emu.request_counts`` counts
requests by route (``"GET /v1/vaults/{vault}/items/{item}"``). ``emu.sdk_core`` serves the same store to the
1Password SDK in place of its native core (``onepassword_access.emulator.sdk_core``). The ``/__admin`` API
needs no token, so it is served only with ``admin=True``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from pydantic import ValidationError

from onepassword_access.emulator.api import ConnectApi
from onepassword_access.emulator.data import EmulatorData, ItemSpec, load_data, parse_data
from onepassword_access.emulator.faults import FaultInjector, Faults, error_response
from onepassword_access.emulator.items import ApiProblem, render
from onepassword_access.emulator.sdk_core import CoreError, EmulatedCore, service_account_token
from onepassword_access.emulator.store import Store, TokenEnd
from onepassword_access.models import Item

ADMIN = "/__admin"


class Emulator:
    """A 1Password Connect emulator serving ``data`` (an ``EmulatorData``, its mapping, or a file path)."""

    def __init__(
        self,
        data: EmulatorData | Mapping[str, Any] | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.request_counts: Counter[str] = Counter()
        """Requests received per route, faults included (admin requests are not counted)."""
        self._source = data
        self._admin = admin
        self._ssl = ssl_context
        self._injector = FaultInjector(seed)
        self.sdk_core = EmulatedCore(lambda: self.store, self._injector, self.request_counts)
        """The SDK-core mode: the same store and faults behind the 1Password SDK (``sdk_core.installed()``);
        its invocations are counted in ``request_counts`` as ``"SDK <name>"``."""
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._outage_timer: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load the data and start listening."""
        source = self._source
        data = (
            await asyncio.to_thread(load_data, source)
            if isinstance(source, str | Path)
            else parse_data(source if isinstance(source, EmulatorData) else dict(source))
        )
        self._store = Store(data)
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._version_header)
        ConnectApi(self._store, self._metrics).add_routes(app)
        if self._admin:
            self._add_admin_routes(app)
        # Cancel a handler when its client hangs up (injected latency must not outlive the request), and do
        # not wait long for in-flight handlers at shutdown.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await self._listen()

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        timer = self._outage_timer
        self._cancel_outage_timer()
        if timer is not None:
            await asyncio.gather(timer, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[-1][1])

    @property
    def url(self) -> str:
        """Where the emulator serves, e.g. ``http://127.0.0.1:41234``."""
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    @property
    def store(self) -> Store:
        """The data being served (started emulators only)."""
        if self._store is None:
            raise RuntimeError("the emulator is not started")
        return self._store

    @property
    def token(self) -> str:
        """The first token of the data file (the usual one in tests)."""
        return next(iter(self.store.grants))

    def service_account_token(self, token: str | None = None) -> str:
        """The service-account token the SDK-core mode accepts for a data-file token (default: the first)."""
        return service_account_token(token or self.token)

    def end_token(self, token: str | None = None, how: TokenEnd = "revoked") -> None:
        """Revoke a data-file token (default: the first), or let it expire: Connect answers 401 and the SDK
        core refuses it from then on."""
        self.store.end_token(token or self.token, how)

    # --- faults ------------------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._injector.faults

    async def set_faults(self, faults: Faults | None = None, /, **settings: Any) -> Faults:
        """Replace the faults (``Faults`` or its fields as keywords); no argument clears them."""
        return await self._apply(faults or Faults(**settings), keep=None)

    async def clear_faults(self) -> None:
        """Serve normally again."""
        await self.set_faults()

    async def _apply(self, faults: Faults, keep: RequestHandler | None) -> Faults:
        """Put ``faults`` in force; a refused outage closes every connection but ``keep`` (an admin request's)."""
        if self._outage_timer is not asyncio.current_task():
            self._cancel_outage_timer()
        self._injector.set(faults)
        if faults.outage == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
            assert self._runner is not None and self._runner.server is not None
            for connection in self._runner.server.connections:
                if connection is not keep:
                    connection.force_close()
        elif faults.outage != "refuse" and self._site is None and self._runner is not None:
            await self._listen()
        if faults.outage and faults.outage_seconds:
            self._outage_timer = asyncio.create_task(self._end_outage(faults.outage_seconds))
        return faults

    async def _end_outage(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._apply(self.faults.model_copy(update={"outage": None, "outage_seconds": None}), keep=None)

    def _cancel_outage_timer(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None

    # --- data --------------------------------------------------------------------------------------------

    def get_item(self, vault: str, item: str) -> Item:
        """An item by vault name or id and item title or id, as Connect serves it."""
        state = self.store.vault(vault)
        return Item.model_validate(render(self.store.item(state, item), summary=False, now=time.time()))

    def vault_id(self, vault: str) -> str:
        """The id of a vault given by name (or id)."""
        return self.store.vault(vault).id

    def update_item(
        self,
        vault: str,
        item: str,
        *,
        fields: Mapping[str, str] | None = None,
        tags: list[str] | None = None,
        files: Mapping[str, bytes | str] | None = None,
    ) -> Item:
        """Set field values by label (missing fields are added), tags and file contents by name, in one
        write (one version bump), as a change made in 1Password would."""
        state = self.store.vault(vault)
        contents = {name: data.encode() if isinstance(data, str) else data for name, data in (files or {}).items()}
        doc = self.store.set_values(state, self.store.item(state, item), fields=fields, tags=tags, files=contents)
        return self.get_item(state.id, doc["id"])

    def add_item(self, vault: str, spec: ItemSpec | Mapping[str, Any]) -> Item:
        """Add an item described as in the data file."""
        state = self.store.vault(vault)
        spec = spec if isinstance(spec, ItemSpec) else ItemSpec.model_validate(spec)
        return self.get_item(state.id, self.store.add_item(state, spec)["id"])

    def delete_item(self, vault: str, item: str) -> None:
        """Delete an item by title or id."""
        state = self.store.vault(vault)
        self.store.delete(state, self.store.item(state, item)["id"])

    def _metrics(self) -> str:
        lines = [
            "# HELP connect_emulator_requests_total Requests received by the emulator, by route.",
            "# TYPE connect_emulator_requests_total counter",
        ]
        for route, count in sorted(self.request_counts.items()):
            label = route.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'connect_emulator_requests_total{{route="{label}"}} {count}')
        return "\n".join(lines) + "\n"

    # --- HTTP plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith(ADMIN + "/"):
                return await handler(request)
            resource = request.match_info.route.resource
            self.request_counts[f"{request.method} {resource.canonical if resource else request.path}"] += 1
            injector = self._injector
            if injector.faults.outage == "503":
                return error_response(503, "Service Unavailable")
            if injector.applies(request.path):
                if injector.faults.latency:
                    await asyncio.sleep(injector.faults.latency)
                broken = injector.take()
                if broken is not None:
                    return broken
            return await handler(request)
        except ApiProblem as problem:
            return error_response(problem.status, problem.message)
        except web.HTTPNotFound:
            return web.Response(status=404, text="404 page not found")  # Go's router answers so
        except web.HTTPMethodNotAllowed:
            return web.Response(status=405, text="405 method not allowed")

    async def _version_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["1Password-Connect-Version"] = self.store.settings.version

    # --- admin API ---------------------------------------------------------------------------------------

    def _add_admin_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_get(ADMIN + "/faults", self._get_faults)
        router.add_put(ADMIN + "/faults", self._put_faults)
        router.add_delete(ADMIN + "/faults", self._put_faults)
        router.add_post(ADMIN + "/items", self._post_item)
        router.add_delete(ADMIN + "/items", self._delete_item)
        router.add_post(ADMIN + "/sdk-core/{call}", self._sdk_core_call)
        router.add_get(ADMIN + "/requests", self._get_requests)
        router.add_delete(ADMIN + "/requests", self._reset_requests)

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.model_dump())

    async def _put_faults(self, request: web.Request) -> web.Response:
        """PUT: the new faults (JSON object of ``Faults`` fields); DELETE: none."""
        try:
            faults = Faults.model_validate(await request.json()) if request.method == "PUT" else Faults()
        except (ValueError, ValidationError) as err:
            raise ApiProblem(400, f"invalid faults: {err}") from None
        if faults.outage == "refuse" and faults.outage_seconds is None:
            raise ApiProblem(
                400, "a refused outage set over HTTP needs outage_seconds: the port it closes is the admin API's own"
            )
        await self._apply(faults, keep=request.protocol if isinstance(request.protocol, RequestHandler) else None)
        response = web.json_response(faults.model_dump())
        if faults.outage == "refuse":
            response.force_close()
        return response

    async def _post_item(self, request: web.Request) -> web.Response:
        """``{"vault", "item", "fields": {label: value}, "tags": [...], "files": {name: text},
        "filesBase64": {name: base64}}``: one write to an existing item."""
        try:
            body = await request.json()
            vault, item = str(body["vault"]), str(body["item"])
            files: dict[str, bytes | str] = {
                **body.get("files", {}),
                **{name: base64.b64decode(data) for name, data in body.get("filesBase64", {}).items()},
            }
            updated = self.update_item(vault, item, fields=body.get("fields"), tags=body.get("tags"), files=files)
        except KeyError as err:
            raise ApiProblem(404, f"not found: {err}") from None
        except (ValueError, TypeError, AttributeError) as err:
            raise ApiProblem(400, f"invalid item update: {err}") from None
        return web.json_response(updated.to_wire())

    async def _delete_item(self, request: web.Request) -> web.Response:
        try:
            self.delete_item(request.query["vault"], request.query["item"])
        except KeyError as err:
            raise ApiProblem(404, f"not found: {err}") from None
        return web.Response(status=204)

    async def _sdk_core_call(self, request: web.Request) -> web.Response:
        """The SDK-core mode for another process (``init_client``, ``invoke``, ``release_client``):
        ``{"argument": <the JSON text the SDK passes>}`` -> ``{"answer": <text>}`` or ``{"error": <the core's
        msg>}``. ``tests/sdk_core_proxy`` puts it behind the SDK of an ``opsync run`` process."""
        call = request.match_info["call"]
        try:
            argument = str((await request.json())["argument"])
        except (ValueError, KeyError, TypeError):
            raise ApiProblem(400, 'expected {"argument": "..."}') from None
        try:
            if call == "init_client":
                answer = await self.sdk_core.init_client(argument)
            elif call == "invoke":
                answer = await self.sdk_core.invoke(argument)
            elif call == "release_client":
                self.sdk_core.release_client(argument)
                answer = ""
            else:
                raise ApiProblem(404, f"no SDK-core call {call!r}")
        except CoreError as err:
            return web.json_response({"error": err.msg})
        return web.json_response({"answer": answer})

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.request_counts))

    async def _reset_requests(self, request: web.Request) -> web.Response:
        self.request_counts.clear()
        return web.Response(status=204)
