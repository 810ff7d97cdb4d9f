"""The Connect emulator behaves like the real server (docs/connect-emulator.md), as seen over HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from onepassword_access.emulator import Emulator

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data" / "connect-emulator.yaml"


class Http:
    """Raw HTTP against the emulator, so every header and status is visible."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu

    async def __call__(
        self, method: str, path: str, *, token: str | None = "full-token", body: object = None, raw_query: str = ""
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        url = URL(self.emu.url + path + (f"?{raw_query}" if raw_query else ""), encoded=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, url, headers=headers, json=body) as response:
            data = await response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, (await response.json() if kind.startswith("application/json") else data), response


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(DATA, admin=True) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, emu)


def ids(emu: Emulator, vault: str, item: str | None = None) -> str:
    path = f"/v1/vaults/{emu.vault_id(vault)}"
    return path + f"/items/{emu.get_item(vault, item).id}" if item else path


async def test_tokens_are_required_on_v1_only(emu: Emulator, http: Http) -> None:
    for token in (None, "wrong"):
        status, body, response = await http("GET", "/v1/vaults", token=token)
        assert (status, body) == (401, {"status": 401, "message": "Invalid bearer token"})
        assert response.headers["1Password-Connect-Version"] == "1.8.1"
    status, body, _ = await http("GET", "/heartbeat", token=None)
    assert (status, body) == (200, b".")
    status, health, _ = await http("GET", "/health", token=None)
    assert (status, health["name"], health["version"]) == (200, "1Password Connect API", "1.8.1")
    status, metrics, response = await http("GET", "/metrics", token=None)
    assert status == 200 and b'connect_emulator_requests_total{route="GET /health"} 1' in metrics
    assert response.headers["Content-Type"].startswith("text/plain")


async def test_scope_hides_and_forbids_other_vaults(emu: Emulator, http: Http) -> None:
    status, vaults, _ = await http("GET", "/v1/vaults", token="reader-token")
    assert (status, [v["name"] for v in vaults]) == (200, ["Demo"])
    for path in (ids(emu, "Other"), ids(emu, "Other") + "/items", ids(emu, "Other", "other-item")):
        status, body, _ = await http("GET", path, token="reader-token")
        assert (status, body["message"]) == (403, "Authorization: token does not have access to vault")


async def test_malformed_ids_are_400_and_unknown_ones_404(emu: Emulator, http: Http) -> None:
    missing = "z" * 26
    demo_item = ids(emu, "Demo", "db-credentials")
    cases = {
        "/v1/vaults/Demo": (400, "Invalid Vault UUID"),
        f"/v1/vaults/{missing}": (404, f"vault {missing} not found"),
        ids(emu, "Demo") + "/items/db-credentials": (400, "Invalid Item UUID"),
        ids(emu, "Demo") + f"/items/{missing}": (404, f"item {missing} not found"),
        demo_item + "/files/ca.pem": (400, "Invalid File UUID"),
        demo_item + f"/files/{missing}/content": (404, f"file {missing} not found"),
    }
    for path, (status, message) in cases.items():
        assert (await http("GET", path))[:2] == (status, {"status": status, "message": message}), path
    status, body, response = await http("GET", "/v1/nothing-here")
    assert (status, body) == (404, b"404 page not found")
    assert response.headers["1Password-Connect-Version"] == "1.8.1"


@pytest.mark.parametrize(
    "query",
    [
        "filter=title+eq+%22db-credentials%22",
        "filter=title%20eq%20%22DB-Credentials%22",
        "filter=tag+eq+%22team-a%22",
        'filter=title co "creden"',
    ],
)
async def test_item_filters_accept_every_client_encoding(emu: Emulator, http: Http, query: str) -> None:
    status, items, _ = await http("GET", ids(emu, "Demo") + "/items", raw_query=query.replace(" ", "%20"))
    assert (status, [i["title"] for i in items]) == (200, ["db-credentials"])
    assert {"fields", "sections", "files"}.isdisjoint(items[0])  # summaries


async def test_vault_filters_and_bad_filters(emu: Emulator, http: Http) -> None:
    for attribute in ("name", "title"):
        status, vaults, _ = await http("GET", "/v1/vaults", raw_query=f"filter={attribute}+eq+%22twin%22")
        assert (status, sorted(v["id"] for v in vaults)) == (
            200,
            ["twin1111111111111111111111", "twin2222222222222222222222"],
        )
    status, items, _ = await http("GET", ids(emu, "Demo") + "/items", raw_query="filter=title+eq+%22nothing%22")
    assert (status, items) == (200, [])
    status, body, _ = await http("GET", ids(emu, "Demo") + "/items", raw_query="filter=title+eq+%27x%27")
    assert status == 400 and body["status"] == 400


async def test_item_documents_look_like_connect_s(emu: Emulator, http: Http) -> None:
    status, item, _ = await http("GET", ids(emu, "Demo", "db-credentials"))
    assert status == 200
    assert item["createdAt"].endswith("Z") and item["version"] == 1 and item["lastEditedBy"].isupper()
    by_label = {f["label"]: f for f in item["fields"]}
    assert by_label["username"]["id"] == "username" and by_label["password"]["purpose"] == "PASSWORD"
    assert by_label["otp"]["type"] == "OTP" and len(by_label["otp"]["totp"]) == 6
    assert by_label["host"]["section"] == {"id": item["sections"][0]["id"]}
    (file,) = item["files"]
    assert file["content_path"] == ids(emu, "Demo", "db-credentials") + f"/files/{file['id']}/content"
    status, summary, _ = await http("GET", ids(emu, "Other", "other-item"))
    assert "tags" not in summary and "urls" not in summary and "favorite" not in summary  # Go omits empty values


async def test_files_inline_and_as_content(emu: Emulator, http: Http) -> None:
    item_path = ids(emu, "Demo", "binary")
    status, files, _ = await http("GET", item_path + "/files", raw_query="inline_files=true")
    assert status == 200
    assert [base64.b64decode(f["content"]) for f in files] == [b"\x00\x01\x02\xfd\xfe\xff", b""]
    status, plain, _ = await http("GET", item_path + f"/files/{files[0]['id']}")
    assert status == 200 and "content" not in plain and plain["size"] == 6
    status, data, response = await http("GET", files[0]["content_path"])
    assert (status, data) == (200, b"\x00\x01\x02\xfd\xfe\xff")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == 'attachment; filename="key.bin"'


async def test_inlining_large_files_is_413() -> None:
    data = {
        "tokens": [{"token": "t"}],
        "settings": {"maxInlineFileSizeKb": 0},
        "vaults": [{"name": "V", "items": [{"title": "f", "files": [{"name": "a", "content": "x"}]}]}],
    }
    async with Emulator(data) as emu, aiohttp.ClientSession() as session:
        status, body, _ = await Http(session, emu)(
            "GET", ids(emu, "V", "f") + "/files", token="t", raw_query="inline_files=true"
        )
    assert status == 413 and "/content endpoint" in body["message"]


async def test_writes_bump_item_and_vault_versions(emu: Emulator, http: Http) -> None:
    vault_path = ids(emu, "Demo")
    content_version = (await http("GET", vault_path))[1]["contentVersion"]
    new = {
        "vault": {"id": emu.vault_id("Demo")},
        "title": "new",
        "category": "PASSWORD",
        "tags": ["x"],
        "fields": [
            {"purpose": "PASSWORD", "generate": True, "recipe": {"length": 20}},
            {"label": "note", "type": "string", "value": "v"},
        ],
    }
    status, created, _ = await http("POST", vault_path + "/items", body=new)
    assert status == 200 and created["version"] == 1 and len(created["id"]) == 26
    assert len(created["fields"][0]["value"]) == 20 and created["fields"][0]["id"] == "password"
    item_path = f"{vault_path}/items/{created['id']}"
    status, replaced, _ = await http("PUT", item_path, body={**created, "title": "replaced"})
    assert (status, replaced["title"], replaced["version"]) == (200, "replaced", 2)
    note = created["fields"][1]["id"]
    patch = [{"op": "replace", "path": f"/fields/{note}/value", "value": "patched"}]
    status, patched, _ = await http("PATCH", item_path, body=patch)
    assert (status, patched["fields"][1]["value"], patched["version"]) == (200, "patched", 3)
    assert patched["updatedAt"] >= replaced["updatedAt"] >= created["createdAt"] == patched["createdAt"]
    status, unchanged, _ = await http("PATCH", item_path, body=[])
    assert (status, unchanged["version"]) == (200, 3)
    status, vault, _ = await http("GET", vault_path)
    assert vault["contentVersion"] == content_version + 3 and vault["items"] == 8
    assert (await http("DELETE", item_path))[0] == 204
    assert (await http("GET", item_path))[0] == 404
    status, vault, _ = await http("GET", vault_path)
    assert vault["contentVersion"] == content_version + 4 and vault["items"] == 7


async def test_refused_writes(emu: Emulator, http: Http) -> None:
    vault_path = ids(emu, "Demo")
    status, body, _ = await http(
        "POST",
        vault_path + "/items",
        token="reader-token",
        body={"title": "x", "category": "LOGIN", "vault": {"id": emu.vault_id("Demo")}},
    )
    assert (status, body["message"]) == (401, "Unauthorized Request, token does not have write access to the Vault")
    for category in ("DOCUMENT", "CUSTOM"):
        status, body, _ = await http("POST", vault_path + "/items", body={"title": "x", "category": category})
        assert (status, body["message"]) == (400, "Invalid item category")
    status, _, _ = await http("PATCH", ids(emu, "Demo", "tie"), body=[{"op": "replace", "path": "/id", "value": "x"}])
    assert status == 400


async def test_read_only_writes_can_answer_403() -> None:
    data = {
        "tokens": [{"token": "t", "vaults": {"V": "r"}}],
        "settings": {"readOnlyWriteStatus": 403},
        "vaults": [{"name": "V", "items": [{"title": "i"}]}],
    }
    async with Emulator(data) as emu, aiohttp.ClientSession() as session:
        status, _, _ = await Http(session, emu)("DELETE", ids(emu, "V", "i"), token="t")
    assert status == 403


async def test_activity_is_paged_newest_first(emu: Emulator, http: Http) -> None:
    item_path = ids(emu, "Demo", "tie")
    for _ in range(3):
        await http("GET", item_path)
    await http("GET", ids(emu, "Other"), token="reader-token")  # denied
    status, page, response = await http("GET", "/v1/activity", raw_query="limit=2&offset=0")
    assert status == 200 and response.headers["Content-Range"] == "1-2/4"
    assert (page[0]["result"], page[0]["resource"]["type"], page[0]["actor"]["jti"]) == ("DENY", "VAULT", "reader")
    assert (page[1]["action"], page[1]["resource"]["item"]["id"]) == ("READ", item_path.rsplit("/", 1)[1])
    assert (await http("GET", "/v1/activity", raw_query="limit=x"))[0] == 400


async def test_injected_faults_over_the_admin_api(emu: Emulator, http: Http) -> None:
    status, faults, _ = await http("PUT", "/__admin/faults", body={"status": 503, "count": 1})
    assert (status, faults["status"]) == (200, 503)
    assert (await http("GET", "/v1/vaults"))[:2] == (503, {"status": 503, "message": "Service Unavailable"})
    assert (await http("GET", "/v1/vaults"))[0] == 200
    await http("PUT", "/__admin/faults", body={"status": 429, "retry_after": 2, "match": "/items"})
    assert (await http("GET", "/v1/vaults"))[0] == 200  # not matched
    status, _, response = await http("GET", ids(emu, "Demo") + "/items")
    assert (status, response.headers["Retry-After"]) == (429, "2")
    await http("PUT", "/__admin/faults", body={"body": "<html>proxy</html>", "content_type": "text/html"})
    assert (await http("GET", "/v1/vaults"))[:2] == (200, b"<html>proxy</html>")
    assert (await http("DELETE", "/__admin/faults"))[1] == (await http("GET", "/__admin/faults"))[1]
    assert (await http("GET", "/v1/vaults"))[0] == 200
    assert (await http("PUT", "/__admin/faults", body={"latency": -1}))[0] == 400
    assert (await http("PUT", "/__admin/faults", body={"outage": "refuse"}))[0] == 400  # could not be lifted
    status, counts, _ = await http("GET", "/__admin/requests")
    assert counts["GET /v1/vaults"] == 5 and not any("__admin" in route for route in counts)
    assert (await http("DELETE", "/__admin/requests"))[0] == 204
    assert emu.request_counts == {}


async def test_a_fraction_of_requests_can_fail(emu: Emulator, http: Http) -> None:
    await emu.set_faults(status=500, rate=0.5)
    statuses = [(await http("GET", "/v1/vaults"))[0] for _ in range(40)]
    assert set(statuses) == {200, 500}


async def test_a_refused_outage_over_http_ends_by_itself(emu: Emulator, http: Http) -> None:
    status, _, _ = await http("PUT", "/__admin/faults", body={"outage": "refuse", "outage_seconds": 0.3})
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await http("GET", "/heartbeat")
    await until_answers(emu.url)


async def test_items_are_edited_over_the_admin_api(emu: Emulator, http: Http) -> None:
    update = {
        "vault": "Demo",
        "item": "db-credentials",
        "fields": {"password": "rotated", "extra": "new"},
        "tags": ["rotated"],
        "filesBase64": {"ca.pem": base64.b64encode(b"new ca").decode()},
    }
    status, item, _ = await http("POST", "/__admin/items", body=update)
    assert (status, item["version"], item["tags"]) == (200, 2, ["rotated"])
    assert {f["label"]: f["value"] for f in item["fields"]}["extra"] == "new"
    assert (await http("GET", item["files"][0]["content_path"]))[1] == b"new ca"
    assert (await http("POST", "/__admin/items", body={"vault": "Nope", "item": "x"}))[0] == 404
    assert (await http("DELETE", "/__admin/items", raw_query="vault=Demo&item=db-credentials"))[0] == 204
    assert (await http("GET", ids(emu, "Demo") + f"/items/{item['id']}"))[0] == 404


async def test_the_admin_api_is_off_unless_asked_for() -> None:
    async with Emulator(DATA) as emu, aiohttp.ClientSession() as session:
        assert (await Http(session, emu)("GET", "/__admin/faults"))[0] == 404


async def test_the_example_data_file_has_a_complete_demo_item() -> None:
    async with Emulator(REPO / "examples" / "emulator-data.yaml") as emu:
        item = emu.get_item("Demo", "db-credentials")
    assert {f.label for f in item.fields} >= {"username", "password", "one-time password"}
    assert item.urls[0].href and item.tags and item.files
    assert next(f for f in item.fields if f.type == "OTP").totp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_answers(url: str, timeout: float = 20.0) -> None:
    """Poll ``/heartbeat`` until it answers 200 (connection errors mean "not yet")."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/heartbeat") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def test_the_command_serves_a_data_file_until_terminated() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opsync",
        "connect-emulator",
        "--data",
        str(REPO / "examples" / "emulator-data.yaml"),
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until_answers(f"http://127.0.0.1:{port}")
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/v1/vaults", headers={"Authorization": "Bearer demo-operator-token"}
            ) as response,
        ):
            assert [v["name"] for v in await response.json()] == ["Demo"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    assert b"demo-operator-token" not in stderr


async def test_the_command_refuses_a_bad_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "data.yaml"
    bad.write_text("tokens: []\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opsync",
        "connect-emulator",
        "--data",
        str(bad),
        "--port",
        str(free_port()),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"tokens" in stderr
