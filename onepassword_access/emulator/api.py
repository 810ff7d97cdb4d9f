"""The Connect REST API handlers: ``/v1/...``, ``/heartbeat``, ``/health`` and ``/metrics``.

Checks run in Connect's order: token (401), id shape (400), existence (404), token scope (403), write
access (401, or 403 if configured). Failures raise ``ApiProblem``, answered as ``{status, message}``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from onepassword_access.emulator.items import ApiProblem, Doc, apply_patch, render
from onepassword_access.emulator.scim import parse_filter
from onepassword_access.emulator.store import Grant, Store, VaultState
from onepassword_access.paths import looks_like_id

VAULT = "/v1/vaults/{vault}"
ITEM = VAULT + "/items/{item}"
FILE = ITEM + "/files/{file}"
_TOO_LARGE = (
    "File is too large to inline in request. "
    "Use the /v1/vaults/{vaultUUID}/items/{itemUUID}/files/{fileUUID}/content endpoint instead."
)


class ConnectApi:
    """Serves one ``Store``. ``metrics`` renders the ``/metrics`` text."""

    def __init__(self, store: Store, metrics: Callable[[], str]) -> None:
        self.store = store
        self._metrics = metrics

    def add_routes(self, app: web.Application) -> None:
        """Register every endpoint of the Connect API on ``app``."""
        router = app.router
        router.add_get("/v1/vaults", self.list_vaults)
        router.add_get(VAULT, self.get_vault)
        router.add_get(VAULT + "/items", self.list_items)
        router.add_post(VAULT + "/items", self.create_item)
        router.add_get(ITEM, self.get_item)
        router.add_put(ITEM, self.replace_item)
        router.add_patch(ITEM, self.patch_item)
        router.add_delete(ITEM, self.delete_item)
        router.add_get(ITEM + "/files", self.list_files)
        router.add_get(FILE, self.get_file)
        router.add_get(FILE + "/content", self.file_content)
        router.add_get("/v1/activity", self.activity)
        router.add_get("/heartbeat", self.heartbeat)
        router.add_get("/health", self.health)
        router.add_get("/metrics", self.metrics)

    # --- access checks -----------------------------------------------------------------------------------

    def _grant(self, request: web.Request) -> Grant:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = self.store.grants.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            raise ApiProblem(401, "Invalid bearer token")
        return grant

    def _vault(self, request: web.Request, grant: Grant, action: str = "READ") -> VaultState:
        vault_id = request.match_info["vault"]
        if not looks_like_id(vault_id):
            raise ApiProblem(400, "Invalid Vault UUID")
        vault = self.store.vaults.get(vault_id)
        if vault is None:
            raise ApiProblem(404, f"vault {vault_id} not found")
        access = grant.access(vault_id)
        if access is None:
            self._audit(request, grant, action, vault, result="DENY")
            raise ApiProblem(403, "Authorization: token does not have access to vault")
        if action != "READ" and access != "rw":
            self._audit(request, grant, action, vault, result="DENY")
            raise ApiProblem(
                self.store.settings.read_only_write_status,
                "Unauthorized Request, token does not have write access to the Vault",
            )
        return vault

    @staticmethod
    def _item(request: web.Request, vault: VaultState) -> Doc:
        item_id = request.match_info["item"]
        if not looks_like_id(item_id):
            raise ApiProblem(400, "Invalid Item UUID")
        if item_id not in vault.items:
            raise ApiProblem(404, f"item {item_id} not found")
        return vault.items[item_id]

    @staticmethod
    def _file(request: web.Request, item: Doc) -> Doc:
        file_id = request.match_info["file"]
        if not looks_like_id(file_id):
            raise ApiProblem(400, "Invalid File UUID")
        for file in item["files"]:
            if file["id"] == file_id:
                return dict(file)
        raise ApiProblem(404, f"file {file_id} not found")

    def _audit(
        self,
        request: web.Request,
        grant: Grant,
        action: str,
        vault: VaultState,
        *,
        item: Doc | None = None,
        result: str = "SUCCESS",
    ) -> None:
        actor = {"userAgent": request.headers.get("User-Agent", ""), "requestIp": request.remote or ""}
        self.store.record(grant, actor=actor, action=action, result=result, vault_id=vault.id, item=item)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise ApiProblem(400, "Invalid request body: expected JSON") from None

    # --- vaults ------------------------------------------------------------------------------------------

    async def list_vaults(self, request: web.Request) -> web.Response:
        """``GET /v1/vaults[?filter=name eq "x"]``: the vaults in the token's scope."""
        grant = self._grant(request)
        wanted = _filter(request, ("name", "title"))
        vaults = [
            v.doc
            for v in self.store.vaults.values()
            if grant.access(v.id) is not None and wanted({"name": [v.doc["name"]], "title": [v.doc["name"]]})
        ]
        return web.json_response(vaults)

    async def get_vault(self, request: web.Request) -> web.Response:
        """``GET /v1/vaults/{id}``."""
        grant = self._grant(request)
        vault = self._vault(request, grant)
        self._audit(request, grant, "READ", vault)
        return web.json_response(vault.doc)

    # --- items -------------------------------------------------------------------------------------------

    async def list_items(self, request: web.Request) -> web.Response:
        """``GET /v1/vaults/{id}/items[?filter=title eq "x"]``: summaries, as a bare array."""
        vault = self._vault(request, self._grant(request))
        wanted = _filter(request, ("title", "tag"))
        now = time.time()
        return web.json_response(
            [
                render(doc, summary=True, now=now)
                for doc in vault.items.values()
                if wanted({"title": [doc["title"]], "tag": doc.get("tags", [])})
            ]
        )

    async def get_item(self, request: web.Request) -> web.Response:
        """``GET /v1/vaults/{id}/items/{id}``: the full item."""
        grant = self._grant(request)
        vault = self._vault(request, grant)
        item = self._item(request, vault)
        self._audit(request, grant, "READ", vault, item=item)
        return web.json_response(render(item, summary=False, now=time.time()))

    async def create_item(self, request: web.Request) -> web.Response:
        """``POST /v1/vaults/{id}/items``: 200 with the created item."""
        grant = self._grant(request)
        vault = self._vault(request, grant, "CREATE")
        item = self.store.create(vault, await self._body(request))
        self._audit(request, grant, "CREATE", vault, item=item)
        return web.json_response(render(item, summary=False, now=time.time()))

    async def replace_item(self, request: web.Request) -> web.Response:
        """``PUT``: the whole item replaced."""
        grant = self._grant(request)
        vault = self._vault(request, grant, "UPDATE")
        item = self._item(request, vault)
        item = self.store.replace(vault, item["id"], await self._body(request))
        self._audit(request, grant, "UPDATE", vault, item=item)
        return web.json_response(render(item, summary=False, now=time.time()))

    async def patch_item(self, request: web.Request) -> web.Response:
        """``PATCH``: JSON Patch operations; an empty list changes nothing."""
        grant = self._grant(request)
        vault = self._vault(request, grant, "UPDATE")
        item = self._item(request, vault)
        operations = await self._body(request)
        if operations != []:
            item = self.store.replace(vault, item["id"], apply_patch(item, operations))
        self._audit(request, grant, "UPDATE", vault, item=item)
        return web.json_response(render(item, summary=False, now=time.time()))

    async def delete_item(self, request: web.Request) -> web.Response:
        """``DELETE``: 204."""
        grant = self._grant(request)
        vault = self._vault(request, grant, "DELETE")
        item = self._item(request, vault)
        self.store.delete(vault, item["id"])
        self._audit(request, grant, "DELETE", vault, item=item)
        return web.Response(status=204)

    # --- files -------------------------------------------------------------------------------------------

    def _inline(self, request: web.Request, vault: VaultState, item: Doc, file: Doc) -> Doc:
        if request.query.get("inline_files", "").lower() != "true":
            return file
        if file["size"] > self.store.settings.max_inline_file_size_kb * 1024:
            raise ApiProblem(413, _TOO_LARGE)
        return {**file, "content": base64.b64encode(vault.contents[(item["id"], file["id"])]).decode()}

    async def list_files(self, request: web.Request) -> web.Response:
        """``GET .../files[?inline_files=true]``."""
        grant = self._grant(request)
        vault = self._vault(request, grant)
        item = self._item(request, vault)
        self._audit(request, grant, "READ", vault, item=item)
        return web.json_response([self._inline(request, vault, item, dict(f)) for f in item["files"]])

    async def get_file(self, request: web.Request) -> web.Response:
        """``GET .../files/{id}[?inline_files=true]``."""
        grant = self._grant(request)
        vault = self._vault(request, grant)
        item = self._item(request, vault)
        file = self._file(request, item)
        self._audit(request, grant, "READ", vault, item=item)
        return web.json_response(self._inline(request, vault, item, file))

    async def file_content(self, request: web.Request) -> web.Response:
        """``GET .../files/{id}/content``: the raw bytes, as an attachment."""
        grant = self._grant(request)
        vault = self._vault(request, grant)
        item = self._item(request, vault)
        file = self._file(request, item)
        self._audit(request, grant, "READ", vault, item=item)
        name = file["name"].replace("\\", "\\\\").replace('"', '\\"')
        return web.Response(
            body=vault.contents[(item["id"], file["id"])],
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # --- activity and operations -------------------------------------------------------------------------

    async def activity(self, request: web.Request) -> web.Response:
        """``GET /v1/activity?limit=&offset=``: newest first, with ``Content-Range``."""
        self._grant(request)
        try:
            limit = int(request.query.get("limit", "50"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise ApiProblem(400, "Invalid limit or offset") from None
        if limit < 0 or offset < 0:
            raise ApiProblem(400, "Invalid limit or offset")
        records = list(self.store.activity)
        page = records[offset : offset + limit]
        return web.json_response(page, headers={"Content-Range": f"{offset + 1}-{offset + len(page)}/{len(records)}"})

    async def heartbeat(self, request: web.Request) -> web.Response:
        """``/heartbeat``: ``.``; no token needed."""
        return web.Response(text=".")

    async def health(self, request: web.Request) -> web.Response:
        """``/health``: name, version and dependencies; no token needed."""
        return web.json_response(
            {
                "name": "1Password Connect API",
                "version": self.store.settings.version,
                "dependencies": [
                    {"service": "sqlite", "status": "ACTIVE", "message": "Connected to the emulator's in-memory store"},
                    {"service": "sync", "status": "ACTIVE"},
                    {"service": "account_data", "status": "SYNCED"},
                ],
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """``/metrics``: Prometheus text; no token needed."""
        return web.Response(body=self._metrics().encode(), headers={"Content-Type": "text/plain; version=0.0.4"})


def _filter(request: web.Request, attributes: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    """The ``filter`` query as a predicate (aiohttp has already decoded ``+`` and ``%20`` to spaces)."""
    text = request.query.get("filter", "").strip()
    return parse_filter(text, attributes) if text else lambda _: True
