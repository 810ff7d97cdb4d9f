"""``opsync run`` with a bad setting exits with status 2 and one line naming the setting, before any I/O.

Runs the real command in a subprocess (no cluster needed: the settings are checked first), one case per
kind of setting; every rule of each setting is in ``tests/unit/operator/test_config.py``. The Go operator crashed,
fell back silently or trimmed nothing for several of these (docs/compatibility.md, deliberate differences).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-t0ken-value"
BASE_ENV = {"OP_CONNECT_HOST": "http://127.0.0.1:1", "OP_CONNECT_TOKEN": TOKEN}
UNSET = ""  # an environment value of UNSET removes the variable
CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    # id, environment changes, flags, the setting the message must start with
    ("polling-interval-0", {"POLLING_INTERVAL": "0"}, [], "POLLING_INTERVAL"),
    ("polling-interval-not-a-number", {"POLLING_INTERVAL": "ten"}, [], "POLLING_INTERVAL"),
    ("auto-restart-maybe", {"AUTO_RESTART": "maybe"}, [], "AUTO_RESTART"),
    ("watch-namespace-invalid-name", {"WATCH_NAMESPACE": "default,Team_A"}, [], "WATCH_NAMESPACE"),
    ("watch-namespace-selector-invalid", {"WATCH_NAMESPACE_SELECTOR": "team in ()"}, [], "WATCH_NAMESPACE_SELECTOR"),
    (
        "watch-namespace-and-selector",
        {"WATCH_NAMESPACE": "team-a", "WATCH_NAMESPACE_SELECTOR": "sync=true"},
        [],
        "WATCH_NAMESPACE_SELECTOR",
    ),
    ("connect-host-without-scheme", {"OP_CONNECT_HOST": "onepassword-connect:8080"}, [], "OP_CONNECT_HOST"),
    ("connect-host-bad-port", {"OP_CONNECT_HOST": "http://connect:99999"}, [], "OP_CONNECT_HOST"),
    ("connect-host-backslash", {"OP_CONNECT_HOST": "http://connect\\evil"}, [], "OP_CONNECT_HOST"),
    ("connect-host-with-credentials", {"OP_CONNECT_HOST": f"http://user:{TOKEN}@connect"}, [], "OP_CONNECT_HOST"),
    ("connect-host-missing", {"OP_CONNECT_HOST": UNSET}, [], "OP_CONNECT_HOST"),
    ("token-missing", {"OP_CONNECT_TOKEN": UNSET}, [], "OP_CONNECT_TOKEN"),
    ("token-two-words", {"OP_CONNECT_TOKEN": f"{TOKEN} {TOKEN}"}, [], "OP_CONNECT_TOKEN"),
    ("token-control-character", {"OP_CONNECT_TOKEN": f"{TOKEN}\x7f"}, [], "OP_CONNECT_TOKEN"),
    (
        "token-file-missing",
        {"OP_CONNECT_TOKEN": UNSET, "OP_CONNECT_TOKEN_FILE": "/nonexistent/token"},
        [],
        "OP_CONNECT_TOKEN_FILE",
    ),
    ("service-account-and-connect", {"OP_SERVICE_ACCOUNT_TOKEN": "ops_" + TOKEN}, [], "OP_SERVICE_ACCOUNT_TOKEN"),
    # the real 1Password SDK refuses these offline, in milliseconds (nothing listens anywhere here)
    (
        "service-account-token-malformed",
        {"OP_CONNECT_HOST": UNSET, "OP_CONNECT_TOKEN": UNSET, "OP_SERVICE_ACCOUNT_TOKEN": "ops_" + TOKEN},
        [],
        "OP_SERVICE_ACCOUNT_TOKEN",
    ),
    (
        "service-account-token-not-a-token",
        {"OP_CONNECT_HOST": UNSET, "OP_CONNECT_TOKEN": UNSET, "OP_SERVICE_ACCOUNT_TOKEN": TOKEN},
        [],
        "OP_SERVICE_ACCOUNT_TOKEN",
    ),
    ("manage-connect-not-a-bool", {"MANAGE_CONNECT": "maybe"}, [], "MANAGE_CONNECT"),
    ("workers-0", {}, ["--workers=0"], "--workers"),
    ("workers-not-a-number", {}, ["--workers=many"], "--workers"),
    ("log-level", {}, ["--log-level=loud"], "--log-level"),
    ("log-format", {}, ["--log-format=xml"], "--log-format"),
    ("metrics-bind-address", {}, ["--metrics-bind-address=8080"], "--metrics-bind-address"),
    ("leader-elect-not-a-bool", {}, ["--leader-elect=sure"], "--leader-elect"),
]


# A kubeconfig that loads (nothing listens there): a setting the check missed would get past loading it and
# fail later, with a traceback and status 1.
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: kube-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bad-config") / "kubeconfig"
    path.write_text(KUBECONFIG)
    return str(path)


def environment(changes: dict[str, str], kubeconfig: str) -> dict[str, str]:
    """This process's environment without opsync settings, plus ``BASE_ENV`` and ``changes``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OP_", "WATCH_NAMESPACE", "POLLING_INTERVAL", "AUTO_RESTART", "MANAGE_CONNECT"))
    }
    env.update(BASE_ENV, KUBECONFIG=kubeconfig)
    for key, value in changes.items():
        if value == UNSET:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.mark.parametrize(("env", "argv", "setting"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_setting_exits_2_naming_it(
    kubeconfig: str, env: dict[str, str], argv: list[str], setting: str, tmp_path: Path
) -> None:
    args = ["run", "--metrics-bind-address=0", "--health-probe-bind-address=0", *argv]
    opsync = OpsyncProcess(args, environment(env, kubeconfig), tmp_path / "stdout", stderr=tmp_path / "stderr")
    await opsync.start()
    try:
        code = await opsync.wait()
    finally:
        await opsync.kill()
    err, stdout = opsync.errors(), opsync.output()
    assert code == 2, err
    assert err.startswith(f"opsync: invalid configuration: {setting}: "), err
    assert err.count("\n") == 1, "one line, no traceback"
    assert "Traceback" not in err and stdout == ""
    assert TOKEN not in err
