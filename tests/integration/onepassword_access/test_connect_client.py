"""``ConnectClient`` against the in-process emulator: reads, typed errors, retries, timeouts, TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from onepassword_access import (
    BadRequestError,
    CertificateError,
    ConnectClient,
    ConnectError,
    ConnectTimeoutError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TooLargeError,
    UnauthorizedError,
    UnreachableError,
)
from onepassword_access.client import Exchange
from onepassword_access.emulator import Emulator
from opsync import __version__
from tests.support.waiting import eventually

DATA = Path(__file__).resolve().parents[2] / "data" / "connect-emulator.yaml"
TOKEN = "full-token"
FAST = RetryPolicy(attempts=4, total=10, backoff=0.01, max_backoff=0.05)
VAULT = "/v1/vaults/{vault}"
ITEM = "/v1/vaults/{vault}/items/{item}"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(DATA) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(emu.url, TOKEN, retry=FAST, timeout=5) as connect:
        yield connect


def count(emu: Emulator, route: str, method: str = "GET") -> int:
    return emu.request_counts[f"{method} {route}"]


async def test_reads_vaults_items_and_files(emu: Emulator, client: ConnectClient) -> None:
    assert {v.name for v in await client.list_vaults()} == {"Demo", "Other", "Twin", "twin"}
    (demo,) = await client.list_vaults(name="DEMO")
    assert (await client.get_vault(demo.id)).content_version == demo.content_version > 0
    assert len(await client.list_items(demo.id, title="DUPLICATE")) == 2
    (summary,) = await client.list_items(demo.id, tag="k8s")
    item = await client.get_item(demo.id, summary.id)
    assert (item.title, item.version, item.tags) == ("db-credentials", 1, ["k8s", "team-a"])
    assert {f.label: f.value for f in item.fields}["password"] == "hunter2-db"
    otp = next(f for f in item.fields if f.type == "OTP")
    assert otp.totp is not None and otp.totp.isdigit()
    assert [(u.label, u.primary) for u in item.urls] == [("website", True), ("backup", False)]
    (file,) = item.files
    assert await client.get_file_content(file.content_path) == b"demo certificate\n"
    assert await client.get_file_content(file.content_path.lstrip("/")) == b"demo certificate\n"
    binary = await client.get_item(demo.id, (await client.list_items(demo.id, title="binary"))[0].id)
    contents = [await client.get_file_content(f.content_path) for f in binary.files]
    assert contents == [b"\x00\x01\x02\xfd\xfe\xff", b""]


async def test_titles_with_quotes_and_url_characters_are_found(emu: Emulator, client: ConnectClient) -> None:
    title = 'say "hi" & +1 #2 %20 \\o/'
    emu.add_item("Demo", {"title": title})
    (found,) = await client.list_items(emu.vault_id("Demo"), title=title)
    assert found.title == title


async def test_requests_carry_the_user_agent_and_read_the_server_version(emu: Emulator, client: ConnectClient) -> None:
    await client.get_vault(emu.vault_id("Demo"))
    assert emu.store.activity[0]["actor"]["userAgent"] == f"opsync/{__version__}"
    assert client.server_version == "1.8.1"
    assert (await client.health()).version == "1.8.1"
    await client.heartbeat()


async def test_client_errors_are_typed_and_never_retried(emu: Emulator, client: ConnectClient) -> None:
    demo, other = emu.vault_id("Demo"), emu.vault_id("Other")
    with pytest.raises(NotFoundError, match=f"status 404: item {'z' * 26} not found"):
        await client.get_item(demo, "z" * 26)
    with pytest.raises(BadRequestError, match="Invalid Vault UUID"):
        await client.get_vault("Demo")
    async with ConnectClient(emu.url, "reader-token", retry=FAST) as reader:
        with pytest.raises(ForbiddenError, match="does not have access"):
            await reader.get_vault(other)
        assert [v.name for v in await reader.list_vaults()] == ["Demo"]
    async with ConnectClient(emu.url, "wrong-token", retry=FAST) as stranger:
        with pytest.raises(UnauthorizedError, match="Invalid bearer token") as caught:
            await stranger.list_vaults()
    assert caught.value.status == 401
    assert count(emu, ITEM) == 1
    assert count(emu, VAULT) == 2
    assert count(emu, "/v1/vaults") == 2


async def test_5xx_is_retried_until_it_succeeds(emu: Emulator, client: ConnectClient) -> None:
    await emu.set_faults(status=503, count=2)
    assert (await client.get_vault(emu.vault_id("Demo"))).name == "Demo"
    assert count(emu, VAULT) == 3


async def test_a_file_not_synced_yet_is_retried(emu: Emulator, client: ConnectClient) -> None:
    item = emu.get_item("Demo", "db-credentials")
    await emu.set_faults(status=500, count=1, match="/content$", message="failed to initiate, review service logs")
    assert await client.get_file_content(item.files[0].content_path) == b"demo certificate\n"
    assert count(emu, "/v1/vaults/{vault}/items/{item}/files/{file}/content") == 2


async def test_retries_stop_after_the_configured_attempts(emu: Emulator, client: ConnectClient) -> None:
    await emu.set_faults(status=500, message="Something went wrong")
    with pytest.raises(ServerError, match="status 500: Something went wrong"):
        await client.get_vault(emu.vault_id("Demo"))
    assert count(emu, VAULT) == FAST.attempts


async def test_429_waits_for_retry_after(emu: Emulator, client: ConnectClient) -> None:
    await emu.set_faults(status=429, retry_after=0.05, count=1)
    await client.get_vault(emu.vault_id("Demo"))
    assert count(emu, VAULT) == 2


async def test_429_asking_for_longer_than_the_budget_fails_at_once(emu: Emulator, client: ConnectClient) -> None:
    await emu.set_faults(status=429, retry_after=60)
    with pytest.raises(RateLimitedError) as caught:
        await client.get_vault(emu.vault_id("Demo"))
    assert caught.value.retry_after == 60
    assert count(emu, VAULT) == 1  # the 60 s wait it asked for is past the 10 s budget: no retry


async def test_each_request_has_a_timeout(emu: Emulator) -> None:
    await emu.set_faults(latency=5)
    policy = RetryPolicy(attempts=2, total=10, backoff=0.01)
    async with ConnectClient(emu.url, TOKEN, retry=policy, timeout=0.2) as slow:
        with pytest.raises(ConnectTimeoutError, match=r"no answer within 0\.2s"):
            await slow.get_vault(emu.vault_id("Demo"))
    assert count(emu, VAULT) == 2


async def test_retries_stay_within_the_total_time(emu: Emulator) -> None:
    await emu.set_faults(latency=5)
    policy = RetryPolicy(attempts=10, total=0.3, backoff=0.01)
    async with ConnectClient(emu.url, TOKEN, retry=policy, timeout=5) as slow:
        with pytest.raises(ConnectTimeoutError, match=r"no answer within 0\.3s"):
            await slow.get_vault(emu.vault_id("Demo"))
    assert count(emu, VAULT) == 1


async def test_a_refused_connection_is_unreachable_until_the_server_is_back(
    emu: Emulator, client: ConnectClient
) -> None:
    demo = emu.vault_id("Demo")
    await client.get_vault(demo)  # a pooled connection exists: the outage must break it too
    await emu.set_faults(outage="refuse")
    with pytest.raises(UnreachableError, match="cannot reach Connect") as caught:
        await client.get_vault(demo)
    assert caught.value.status is None
    await emu.clear_faults()
    assert (await client.get_vault(demo)).id == demo
    assert count(emu, VAULT) == 2


async def test_a_503_outage_is_a_server_error(emu: Emulator, client: ConnectClient) -> None:
    await emu.set_faults(outage="503")
    with pytest.raises(ServerError):
        await client.list_vaults()
    with pytest.raises(ServerError):
        await client.heartbeat()
    assert count(emu, "/heartbeat") == 1  # probes are not retried


@pytest.mark.parametrize(
    ("body", "problem"),
    [("<html>oops</html>", "not JSON"), ('{"id": 1}', "unexpected answer"), ("", "not JSON")],
)
async def test_invalid_bodies_are_typed_errors(emu: Emulator, client: ConnectClient, body: str, problem: str) -> None:
    await emu.set_faults(body=body, status=200)
    with pytest.raises(InvalidResponseError, match=problem):
        await client.get_item(emu.vault_id("Demo"), "z" * 26)
    assert count(emu, ITEM) == 1


async def test_the_token_never_shows(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    token = "secret-token-value-4711"
    errors: list[BaseException] = []
    async with ConnectClient(emu.url, token, retry=FAST, timeout=0.2) as client:
        assert token not in repr(client)
        for faults in ({}, {"status": 500}, {"latency": 1}, {"body": "<html>", "status": 200}):
            await emu.set_faults(**faults)
            try:
                await client.list_vaults()
            except ConnectError as err:
                errors.append(err)
        await emu.set_faults(outage="refuse")
        with pytest.raises(UnreachableError) as unreachable:
            await client.list_vaults()
        errors.append(unreachable.value)
    assert len(errors) == 5
    for error in errors:
        text = "".join(traceback.format_exception(error)) + repr(error) + repr(vars(error))
        assert token not in text
    assert caplog.records  # the retries were logged...
    for record in caplog.records:
        assert token not in record.getMessage() + repr(vars(record))  # ...without the token


def test_bad_settings_are_refused_without_echoing_the_token() -> None:
    with pytest.raises(ValueError, match="http"):
        ConnectClient("ftp://connect", "t")
    with pytest.raises(ValueError) as credentials:
        ConnectClient("http://user:hunter2@connect:8080", "t")
    assert "hunter2" not in str(credentials.value)
    with pytest.raises(ValueError) as caught:
        ConnectClient("http://connect:8080", "secret\nvalue")
    assert "secret" not in str(caught.value)
    assert ConnectClient("http://connect:8080/", " token\n").url == "http://connect:8080"


async def _openssl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "openssl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()


@pytest.fixture
async def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1."""
    files = {name: tmp_path / name for name in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr")}
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    await _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(files["ca.key"]),
        "-out",
        str(files["ca.pem"]),
        "-days",
        "1",
        "-subj",
        "/CN=opsync test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    await _openssl(
        "req", *ec, "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]), "-subj", "/CN=127.0.0.1"
    )
    extensions = tmp_path / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    await _openssl(
        "x509",
        "-req",
        "-in",
        str(files["server.csr"]),
        "-CA",
        str(files["ca.pem"]),
        "-CAkey",
        str(files["ca.key"]),
        "-CAcreateserial",
        "-out",
        str(files["server.pem"]),
        "-days",
        "1",
        "-extfile",
        str(extensions),
    )
    return files


async def test_tls_with_a_custom_ca(tls_files: dict[str, Path]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["server.pem"], tls_files["server.key"])
    async with Emulator(DATA, ssl_context=context) as emu:
        assert emu.url.startswith("https://")
        async with ConnectClient(emu.url, TOKEN, retry=FAST, ca_file=str(tls_files["ca.pem"])) as trusting:
            assert len(await trusting.list_vaults()) == 4
        async with ConnectClient(emu.url, TOKEN, retry=FAST) as distrusting:
            with pytest.raises(CertificateError, match="TLS verification failed") as caught:
                await distrusting.list_vaults()
        assert not caught.value.transient
        assert count(emu, "/v1/vaults") == 1


@pytest.fixture(autouse=True)
def _log_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="onepassword_access")


async def test_observers_see_every_attempt_and_no_answer_as_none(emu: Emulator) -> None:
    seen: list[Exchange] = []
    async with ConnectClient(emu.url, TOKEN, retry=FAST, timeout=5, observers=[seen.append]) as client:
        demo = emu.vault_id("Demo")
        await emu.set_faults(status=500, count=1)
        await client.get_vault(demo)  # one failed attempt, one retry
        await emu.set_faults(outage="refuse")
        with pytest.raises(UnreachableError):
            await client.heartbeat()  # a probe: one attempt, no answer
    path = f"/v1/vaults/{demo}"
    assert seen == [Exchange("GET", path, 500), Exchange("GET", path, 200), Exchange("GET", "/heartbeat", None)]


async def test_answers_beyond_their_bound_are_refused_without_reading_them_whole() -> None:
    """Issue 16: a file larger than a Secret can hold, announced or streamed without a length (or with a
    wrong one), is refused once the bound is passed; the connection is dropped rather than drained."""
    sent: list[int] = []

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length
        await response.prepare(request)
        chunk = b"x" * (256 * 1024)
        try:
            for _ in range(40):  # 10 MiB if read whole
                await response.write(chunk)
                sent.append(len(chunk))
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def announced(_request: web.Request) -> web.Response:
        return web.Response(body=b"y" * (2 * 1024 * 1024))

    app = web.Application()
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/announced", announced)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ConnectClient(f"http://127.0.0.1:{port}", TOKEN, retry=FAST, timeout=5) as connect:
            for path in ("/streamed", "/announced"):
                with pytest.raises(TooLargeError) as refused:
                    await connect.get_file_content(path)
                assert "larger than opsync accepts (1 MiB)" in str(refused.value)
            assert await connect.get_file_content("/announced", limit=4 * 1024 * 1024) == b"y" * (2 * 1024 * 1024)
    finally:
        await runner.cleanup()
    assert sum(sent) < 10 * 1024 * 1024


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` as a Secret volume update does: a new file swapped in at once."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    staged.replace(path)


async def test_a_rotated_token_file_is_used_without_a_restart(emu: Emulator, tmp_path: Path) -> None:
    """Issue 16: the token file was read once, so a rotated token needed a restart."""
    token_file = tmp_path / "token"
    token_file.write_text("revoked-token\n")
    async with ConnectClient(emu.url, "revoked-token", retry=FAST, timeout=5, token_file=str(token_file)) as client:
        with pytest.raises(UnauthorizedError):
            await client.list_vaults()
        replace_file(token_file, TOKEN + "\n")

        async def works() -> bool:
            try:
                return bool(await client.list_vaults())
            except UnauthorizedError:
                return False

        await eventually(works, timeout=10, message="the rotated token was not picked up")
        replace_file(token_file, "")  # half-written or emptied: the last good token stays in use
        client._checked = 0.0  # the next request looks at the file again
        assert await works()


async def test_a_changed_ca_bundle_is_used_without_a_restart(tls_files: dict[str, Path], tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["server.pem"], tls_files["server.key"])
    other = tmp_path / "other-ca"
    other.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1")
    await _openssl(
        "req", "-x509", *ec, "-keyout", str(other / "ca.key"), "-out", str(other / "ca.pem"), "-subj", "/CN=other"
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_text((other / "ca.pem").read_text())
    async with (
        Emulator(DATA, ssl_context=context) as emu,
        ConnectClient(emu.url, TOKEN, retry=FAST, timeout=5, ca_file=str(bundle)) as client,
    ):
        with pytest.raises(CertificateError):
            await client.list_vaults()
        replace_file(bundle, tls_files["ca.pem"].read_text())

        async def works() -> bool:
            try:
                return bool(await client.list_vaults())
            except CertificateError:
                return False

        await eventually(works, timeout=10, message="the new CA bundle was not picked up")
