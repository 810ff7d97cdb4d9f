"""Contract: the emulator answers as the official Connect spec says, and the official Python SDK and our
client read the same things from it.

The spec is ``tests/data/connect-openapi.yaml`` (see tests/data/README.md), with its documented errata
(docs/connect-emulator.md) patched in memory here: field type ``OTP`` (the spec says ``TOTP``), the ``totp``
property of OTP fields, and files endpoints whose ids are 26-character ids, not ``format: uuid``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import yaml
from onepasswordconnectsdk.client import new_client
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from yarl import URL

from onepassword_access import ConnectBackend, ConnectClient, ItemResolver, RetryPolicy
from onepassword_access.emulator import Emulator

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SPEC_HOST = "http://localhost:8080"  # the spec's server; requests are validated as if sent there
OTP_ITEM = "db-credentials"


def load_spec(*, errata: bool = True) -> OpenAPI:
    spec = yaml.safe_load((DATA_DIR / "connect-openapi.yaml").read_text())
    if errata:
        patch_errata(spec)
    return OpenAPI.from_dict(spec)


def patch_errata(spec: dict[str, Any]) -> None:
    """The spec's known errors, corrected as docs/connect-emulator.md describes."""
    field = spec["components"]["schemas"]["Field"]["properties"]
    field["type"]["enum"].append("OTP")
    field["totp"] = {"type": "string", "readOnly": True}
    for path, item in spec["paths"].items():
        if "/files" in path:
            for operation in [item, *(v for k, v in item.items() if k in ("get", "put", "post"))]:
                for parameter in operation.get("parameters", []):
                    parameter["schema"].pop("format", None)


@dataclass
class Exchange:
    """One request to the emulator and its answer."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes


class Recorder:
    """Sends requests to the emulator and keeps them for validation."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu
        self.exchanges: list[Exchange] = []

    async def __call__(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "full-token",
        query: dict[str, str] | None = None,
        body: object = None,
    ) -> Exchange:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = URL(self.emu.url + path).with_query(query or {})
        async with self.session.request(method, url, headers=headers, json=body) as response:
            exchange = Exchange(
                method,
                path,
                query or {},
                response.status,
                response.content_type,
                dict(response.headers),
                await response.read(),
            )
        self.exchanges.append(exchange)
        return exchange


def validate(spec: OpenAPI, exchange: Exchange) -> None:
    request = MockRequest(SPEC_HOST, exchange.method, exchange.path, args=exchange.query)
    response = MockResponse(exchange.body, exchange.status, exchange.headers, exchange.content_type)
    spec.validate_response(request, response)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(DATA_DIR / "connect-emulator.yaml") as emulator:
        yield emulator


@pytest.fixture
async def record(emu: Emulator) -> AsyncIterator[Recorder]:
    async with aiohttp.ClientSession() as session:
        yield Recorder(session, emu)


async def exercise(emu: Emulator, call: Recorder) -> None:
    """Every endpoint, for each status the spec documents for it."""
    demo, other = emu.vault_id("Demo"), emu.vault_id("Other")
    missing = "z" * 26
    item = emu.get_item("Demo", OTP_ITEM)
    vault_path, item_path = f"/v1/vaults/{demo}", f"/v1/vaults/{demo}/items/{item.id}"
    file_path = f"{item_path}/files/{item.files[0].id}"
    await call("GET", "/heartbeat", token=None)
    await call("GET", "/health", token=None)
    await call("GET", "/metrics", token=None)
    await call("GET", "/v1/activity", query={"limit": "5", "offset": "1"})
    for token in ("full-token", "wrong"):
        await call("GET", "/v1/vaults", token=token)
        await call("GET", "/v1/vaults", token=token, query={"filter": 'name eq "Demo"'})
        await call("GET", "/v1/activity", token=token)
    for token in ("full-token", "wrong", "reader-token"):
        await call("GET", f"/v1/vaults/{other}", token=token)
    await call("GET", f"/v1/vaults/{missing}")
    await call("GET", f"{vault_path}/items")
    await call("GET", f"{vault_path}/items", query={"filter": 'title eq "duplicate"'})
    await call("GET", f"{vault_path}/items", token="wrong")
    await call("GET", f"/v1/vaults/{missing}/items")
    for token in ("full-token", "wrong", "other-token"):
        await call("GET", item_path, token=token)
        await call("GET", file_path, token=token, query={"inline_files": "true"})
    for token in ("full-token", "wrong"):  # the spec documents no 403 for these two
        await call("GET", f"{item_path}/files", token=token, query={"inline_files": "true"})
        await call("GET", f"{file_path}/content", token=token)
    await call("GET", f"{vault_path}/items/{missing}")
    await call("GET", f"{item_path}/files/{missing}")
    await call("GET", f"{item_path}/files/{missing}/content")
    new = {
        "vault": {"id": demo},
        "title": "contract",
        "category": "LOGIN",
        "fields": [
            {"purpose": "PASSWORD", "generate": True},
            {"label": "otp", "type": "OTP", "value": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"},
        ],
    }
    created = await call("POST", f"{vault_path}/items", body=new)
    created_path = f"{vault_path}/items/{yaml.safe_load(created.body)['id']}"
    for token in ("wrong", "other-token"):
        await call("POST", f"{vault_path}/items", token=token, body=new)
        await call("PUT", created_path, token=token, body=new)
        await call("PATCH", created_path, token=token, body=[])
        await call("DELETE", created_path, token=token)
    await call("POST", f"{vault_path}/items", body={**new, "category": "DOCUMENT"})
    await call("POST", f"/v1/vaults/{missing}/items", body=new)
    await call("PUT", created_path, body={**new, "title": "replaced"})
    await call("PUT", created_path, body={**new, "category": "NOPE"})
    await call("PUT", f"{vault_path}/items/{missing}", body=new)
    await call(
        "PATCH",
        created_path,
        body=[
            {"op": "replace", "path": "/title", "value": "patched"},
            {"op": "add", "path": "/fields", "value": {"label": "n", "value": "v"}},
        ],
    )
    await call("PATCH", created_path, body=[])
    await call("PATCH", f"{vault_path}/items/{missing}", body=[])
    await call("DELETE", created_path)
    await call("DELETE", created_path)


async def test_every_answer_matches_the_spec(emu: Emulator, record: Recorder) -> None:
    spec = load_spec()
    await exercise(emu, record)
    statuses = {(e.method, e.status) for e in record.exchanges}
    assert statuses >= {("GET", s) for s in (200, 401, 403, 404)} | {("POST", 400), ("PUT", 400), ("DELETE", 204)}
    for exchange in record.exchanges:
        try:
            validate(spec, exchange)
        except OpenAPIError as err:
            pytest.fail(f"{exchange.method} {exchange.path} {exchange.query} -> {exchange.status}: {err!r}")


async def test_413_matches_the_spec() -> None:
    data = {
        "tokens": [{"token": "t"}],
        "settings": {"maxInlineFileSizeKb": 0},
        "vaults": [{"name": "V", "items": [{"title": "f", "files": [{"name": "a", "content": "x"}]}]}],
    }
    async with Emulator(data) as emu, aiohttp.ClientSession() as session:
        item = emu.get_item("V", "f")
        exchange = await Recorder(session, emu)(
            "GET", f"/v1/vaults/{item.vault.id}/items/{item.id}/files", token="t", query={"inline_files": "true"}
        )
    assert exchange.status == 413
    validate(load_spec(), exchange)


async def test_the_unpatched_spec_rejects_otp_fields(emu: Emulator, record: Recorder) -> None:
    """The validation is live: the spec's own error (TOTP for OTP) is caught without the errata."""
    item = emu.get_item("Demo", OTP_ITEM)
    exchange = await record("GET", f"/v1/vaults/{item.vault.id}/items/{item.id}")
    with pytest.raises(OpenAPIError):
        validate(load_spec(errata=False), exchange)
    broken = copy.deepcopy(exchange)
    broken.body = broken.body.replace(b'"version": 1', b'"version": "1"')
    with pytest.raises(OpenAPIError):
        validate(load_spec(), broken)


# --- the same reads through the official SDK and through our client ----------------------------------------


@dataclass(frozen=True)
class ReadItem:
    id: str
    title: str
    values: dict[str, str]


class Reader(Protocol):
    async def vault_names(self) -> set[str]: ...
    async def item_by_id(self, vault_id: str, item_id: str) -> ReadItem: ...
    async def item_by_title(self, vault: str, title: str) -> ReadItem: ...
    async def first_file(self, vault_id: str, item_id: str, tmp_path: Path) -> bytes: ...


class SdkReader:
    """``onepasswordconnectsdk``'s sync client, in a thread (the emulator shares this event loop)."""

    def __init__(self, url: str, token: str) -> None:
        self.sdk = new_client(url, token)

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    async def vault_names(self) -> set[str]:
        return {v.name for v in await self._run(self.sdk.get_vaults)}

    @staticmethod
    def _read(item: Any) -> ReadItem:
        return ReadItem(item.id, item.title, {f.label: f.value for f in item.fields})

    async def item_by_id(self, vault_id: str, item_id: str) -> ReadItem:
        return self._read(await self._run(lambda: self.sdk.get_item_by_id(item_id, vault_id)))

    async def item_by_title(self, vault: str, title: str) -> ReadItem:
        return self._read(await self._run(lambda: self.sdk.get_item(title, vault)))

    async def first_file(self, vault_id: str, item_id: str, tmp_path: Path) -> bytes:
        file = (await self._run(lambda: self.sdk.get_files(item_id, vault_id)))[0]
        await self._run(lambda: self.sdk.download_file(file.id, item_id, vault_id, str(tmp_path)))
        content: bytes = await self._run(
            lambda: self.sdk.get_file_content(file.id, item_id, vault_id, file.content_path)
        )
        assert (tmp_path / file.name).read_bytes() == content
        return content


class OpsyncReader:
    """``ConnectClient`` and ``ItemResolver``."""

    def __init__(self, client: ConnectClient) -> None:
        self.client = client
        self.resolver = ItemResolver(ConnectBackend(client))

    async def vault_names(self) -> set[str]:
        return {v.name for v in await self.client.list_vaults()}

    @staticmethod
    def _read(item: Any) -> ReadItem:
        return ReadItem(item.id, item.title, {f.label: f.value for f in item.fields})

    async def item_by_id(self, vault_id: str, item_id: str) -> ReadItem:
        return self._read(await self.client.get_item(vault_id, item_id))

    async def item_by_title(self, vault: str, title: str) -> ReadItem:
        return self._read((await self.resolver.resolve(f"vaults/{vault}/items/{title}")).item)

    async def first_file(self, vault_id: str, item_id: str, tmp_path: Path) -> bytes:
        item = await self.client.get_item(vault_id, item_id)
        return await self.client.get_file_content(item.files[0].content_path)


@pytest.fixture(params=["onepasswordconnectsdk", "opsync"])
async def reader(request: pytest.FixtureRequest, emu: Emulator) -> AsyncIterator[Reader]:
    if request.param == "opsync":
        async with ConnectClient(emu.url, "full-token", retry=RetryPolicy(attempts=1)) as client:
            yield OpsyncReader(client)
    else:
        yield SdkReader(emu.url, "full-token")


async def test_lists_vaults(emu: Emulator, reader: Reader) -> None:
    assert await reader.vault_names() == {"Demo", "Other", "Twin", "twin"}


async def test_reads_an_item_by_id_and_by_title(emu: Emulator, reader: Reader) -> None:
    expected = emu.get_item("Demo", OTP_ITEM)
    by_id = await reader.item_by_id(expected.vault.id, expected.id)
    assert (by_id.id, by_id.title) == (expected.id, OTP_ITEM)
    assert by_id.values["password"] == "hunter2-db"
    assert by_id.values["otp"].startswith("otpauth://")
    assert await reader.item_by_title("Demo", OTP_ITEM) == by_id
    long_title = await reader.item_by_title("Demo", "test26charlongitemtitle123")  # looks like an id
    assert long_title.values["which"] == "title26"


async def test_downloads_a_file(emu: Emulator, reader: Reader, tmp_path: Path) -> None:
    item = emu.get_item("Demo", OTP_ITEM)
    assert await reader.first_file(item.vault.id, item.id, tmp_path) == b"demo certificate\n"
