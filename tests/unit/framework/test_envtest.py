"""Where opsync.envtest finds its binaries, what it says when they are missing, and how it tells a server died."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsync.envtest import COMPONENTS, EnvtestError, PortTakenError, _Process, find_assets
from tests.support.waiting import eventually


def binaries(folder: Path, names: tuple[str, ...] = COMPONENTS) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A cache root with nothing in it and no asset variables set."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("OPSYNC_ENVTEST_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "opsync" / "envtest"


def test_kubebuilder_assets_wins_over_opsync_assets(
    no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubebuilder = binaries(tmp_path / "kb")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(kubebuilder))
    monkeypatch.setenv("OPSYNC_ENVTEST_ASSETS", str(binaries(tmp_path / "ours")))
    assert find_assets() == kubebuilder


def test_a_named_folder_without_the_binaries_is_an_error(
    no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSYNC_ENVTEST_ASSETS", str(binaries(tmp_path / "partial", ("etcd",))))
    with pytest.raises(EnvtestError, match=r"lacks kube-apiserver, kube-controller-manager: run `make envtest`"):
        find_assets()


def test_the_newest_complete_cached_version_is_used(no_env: Path) -> None:
    binaries(no_env / "1.9.0")
    newest = binaries(no_env / "1.37.2")
    binaries(no_env / "1.38.0", ("etcd",))  # incomplete: ignored
    assert find_assets() == newest


def test_without_binaries_the_error_says_how_to_get_them(no_env: Path) -> None:
    with pytest.raises(EnvtestError, match="run `make envtest`"):
        find_assets()


async def test_a_server_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    server = _Process("kube-apiserver", ["sh", "-c", "exit 3"], tmp_path / "kube-apiserver.log")
    assert server.exited() is None  # not started is not dead
    await server.start()
    await eventually(lambda: server.exited() is not None, timeout=10, message="the exit was never seen")
    assert server.exited() == f"kube-apiserver exited with code 3; its log is {tmp_path / 'kube-apiserver.log'}"
    with pytest.raises(EnvtestError, match="exited with code 3"):
        server.check_running()
    await server.stop()


@pytest.mark.parametrize(
    ("output", "error"), [("bind: address already in use", PortTakenError), ("boom", EnvtestError)]
)
async def test_a_server_that_lost_its_port_is_told_apart(tmp_path: Path, output: str, error: type[Exception]) -> None:
    server = _Process("etcd", ["sh", "-c", f"echo '{output}'; exit 1"], tmp_path / "etcd.log")
    await server.start()
    await eventually(lambda: server.exited() is not None, timeout=10, message="the exit was never seen")
    with pytest.raises(EnvtestError) as raised:
        server.check_running()
    assert type(raised.value) is error
    await server.stop()
