"""How ``opsync run`` reaches Connect: a custom CA from its settings, and the plain-HTTP warning.

``test_connect_client.py`` checks ``ConnectClient(ca_file=...)`` itself; these tests go through the settings
(``OP_CONNECT_CA_FILE``, ``SSL_CERT_FILE``) and ``controllers.main``, as the operator does at start-up.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controllers import config, main
from onepassword_access import CertificateError
from onepassword_access.emulator import Emulator
from tests.integration.onepassword_access.test_connect_client import tls_files  # noqa: F401 - a fixture (a throwaway CA and a server certificate)
from tests.support.harness import TOKEN, emulator_data

VAULT = "k8s"


def settings(environ: dict[str, str]) -> config.Settings:
    parser = argparse.ArgumentParser()
    main.configure_parser(parser)
    return config.load_settings(parser.parse_args([]), {"OP_CONNECT_TOKEN": TOKEN, **environ})


@pytest.fixture
async def https_emulator(tls_files: dict[str, Path]) -> AsyncIterator[Emulator]:  # noqa: F811 - the fixture
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["server.pem"], tls_files["server.key"])
    data = emulator_data({VAULT: [{"title": "db", "fields": [{"label": "password", "value": "pw"}]}]})
    async with Emulator(data, ssl_context=context) as emu:
        yield emu


@pytest.mark.parametrize("variable", ["OP_CONNECT_CA_FILE", "SSL_CERT_FILE"])
async def test_connect_over_tls_with_the_configured_ca(
    https_emulator: Emulator,
    tls_files: dict[str, Path],  # noqa: F811 - the fixture
    variable: str,
) -> None:
    trusting = settings({"OP_CONNECT_HOST": https_emulator.url, variable: str(tls_files["ca.pem"])})
    async with main.connect_client(trusting) as connect:
        assert [vault.name for vault in await connect.list_vaults()] == [VAULT]


async def test_without_the_ca_the_certificate_is_refused_clearly(https_emulator: Emulator) -> None:
    async with main.connect_client(settings({"OP_CONNECT_HOST": https_emulator.url})) as connect:
        with pytest.raises(CertificateError, match="TLS verification failed") as caught:
            await connect.list_vaults()
    assert "certificate" in str(caught.value).lower()
    assert TOKEN not in str(caught.value)
    assert not https_emulator.request_counts  # nothing, the token least of all, was sent


def start_up_warnings(
    host: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[str]:
    """The warnings ``opsync run`` logs when started against ``host`` (it then stops: no kubeconfig)."""
    monkeypatch.setattr(main, "setup_logging", lambda *_args: None)  # keep pytest's log capture in place
    for name, value in {
        "OP_CONNECT_HOST": host,
        "OP_CONNECT_TOKEN": TOKEN,
        "KUBECONFIG": str(tmp_path / "missing-kubeconfig"),
    }.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    main.configure_parser(parser)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert main.main(parser.parse_args(["--metrics-bind-address=0", "--health-probe-bind-address=0"])) == 2
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "plain HTTP" in r.getMessage()]


def test_plain_http_to_a_remote_connect_warns_once_at_start_up(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    warnings = start_up_warnings("http://onepassword-connect:8080", caplog, monkeypatch, tmp_path)
    assert len(warnings) == 1
    assert "http://onepassword-connect:8080" in warnings[0] and TOKEN not in warnings[0]


@pytest.mark.parametrize(
    "host", ["http://localhost:8080", "http://127.0.0.5:8080", "http://[::1]:8080", "https://connect.example"]
)
def test_loopback_or_https_connect_does_not_warn(
    host: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert start_up_warnings(host, caplog, monkeypatch, tmp_path) == []
