"""Every shaping example of docs/shaping.md (examples/shaping/, one per 1Password operator issue) applied to
the real API server with the Connect emulator serving examples/shaping/emulator-data.yaml: the Secret a
user gets, and that ``opsync render -f`` shows the same Secret before it is applied."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers import render
from controllers.config import Settings
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from tests.support.harness import run_operator
from tests.support.objects import wait_for_data

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "shaping"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nZmFrZSBrZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
POSTGRES = {"username": "app", "password": "p@ss:w0rd", "database": "orders"}
REDIS = {"password": "redis-pw-0b1d", "host": "redis.example.internal"}
AUTH = base64.b64encode(b"robot:reg-pw-5e6f").decode()

# issue -> (example file, {Secret name: data}), and what else the Secret must carry
EXPECTED: dict[int, tuple[str, dict[str, dict[str, str]]]] = {
    69: (
        "issue-69-individual-fields.yaml",
        {"app1-token": {"APP1_API_TOKEN": "tok-7f3a"}, "app2-token": {"APP2_API_TOKEN": "tok-7f3a"}},
    ),
    273: (
        "issue-273-rename-keys.yaml",
        {"app-config": {"api-token": "tok-7f3a", "DB_PASSWORD": "dbpw-51c2", "debug": "false"}},
    ),
    128: (
        "issue-128-argocd-ssh-key.yaml",
        {"private-repo": {"sshPrivateKey": KEY, "url": "git@github.com:example/private-repo.git", "type": "git"}},
    ),
    169: (
        "issue-169-composed-values.yaml",
        {
            "orders-db": {
                "DATABASE_URL": "postgresql://app:p%40ss%3Aw0rd@db.example.internal:5432/orders",
                "config.yaml": (
                    "database:\n  host: db.example.internal\n  port: 5432\n  user: app\n  password: p@ss:w0rd\n"
                ),
            }
        },
    ),
    59: (
        "issue-59-several-items.yaml",
        {
            "orders-backend": {
                **POSTGRES,
                "host": "db.example.internal",
                "port": "5432",
                "redis-password": "redis-pw-0b1d",
                "redis-host": "redis.example.internal",
                "SMTP_USER": "mailer",
                "SMTP_PASSWORD": "smtp-pw-9e4f",
            }
        },
    ),
    83: (
        "issue-83-section-prefix.yaml",
        {
            "two-databases": {
                "primary-host": "primary.db.example.internal",
                "primary-password": "primary-pw-1a2b",
                "replica-host": "replica.db.example.internal",
                "replica-password": "replica-pw-3c4d",
            }
        },
    ),
    134: (
        "issue-134-field-of-one-section.yaml",
        {
            "replica-credentials": {
                "REPLICA_HOST": "replica.db.example.internal",
                "REPLICA_PASSWORD": "replica-pw-3c4d",
            }
        },
    ),
    197: (
        "issue-197-dockerconfigjson.yaml",
        {
            "registry-pull": {
                ".dockerconfigjson": json.dumps(
                    {"auths": {"registry.example.com": {"username": "robot", "password": "reg-pw-5e6f", "auth": AUTH}}},
                    separators=(",", ":"),
                )
            }
        },
    ),
    96: ("issue-96-no-item-labels.yaml", {"untracked-secret": REDIS}),
    114: ("issue-114-secret-labels.yaml", {"labelled-secret": REDIS}),
    144: ("issue-144-secret-annotations.yaml", {"annotated-secret": REDIS}),
}


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


@pytest.fixture
def connect_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "emulator-data.yaml").read_text())
    return data


def test_every_issue_has_a_documented_example() -> None:
    page = (EXAMPLES.parents[1] / "docs" / "shaping.md").read_text()
    files = {path.name for path in EXAMPLES.glob("issue-*.yaml")}
    assert files == {name for name, _ in EXPECTED.values()}
    for issue, (name, _) in EXPECTED.items():
        assert f"#{issue}" in page, f"docs/shaping.md does not mention #{issue}"
        assert name in page, f"docs/shaping.md does not show examples/shaping/{name}"
    shown = yaml.safe_load(page.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert shown == documents("issue-128-argocd-ssh-key.yaml")[0], "the page's example is not the file's"


@pytest.mark.parametrize("issue", sorted(EXPECTED))
async def test_example(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, issue: int
) -> None:
    name, expected = EXPECTED[issue]
    async with run_operator(control_plane, emulator, namespaces=[namespace]):
        for doc in documents(name):
            await kube.create(ONEPASSWORDITEMS, doc, namespace)
        secrets = {secret: await wait_for_data(kube, namespace, secret, data) for secret, data in expected.items()}

    # what `opsync render -f` shows is what was applied
    settings = Settings.model_validate({"connect_host": emulator.url, "connect_token": emulator.token})
    args = argparse.Namespace(
        item_path=None,
        filename=EXAMPLES / name,
        name=None,
        namespace=namespace,
        type="",
        show_values=True,
        allow_empty_values=False,
    )
    for rendered, _ in await render.render_all(args, settings):
        applied = secrets[rendered["metadata"]["name"]]
        assert rendered["data"] == applied["data"]
        assert rendered["type"] == applied["type"]
        assert rendered["metadata"]["labels"].items() <= applied["metadata"]["labels"].items()
    args.show_values = False
    for hidden, _ in await render.render_all(args, settings):
        sizes = {key: len(value.encode()) for key, value in expected[hidden["metadata"]["name"]].items()}
        assert hidden["data"] == {key: f"<hidden: {size} bytes>" for key, size in sizes.items()}

    secret = next(iter(secrets.values()))
    labels, annotations = secret["metadata"]["labels"], secret["metadata"]["annotations"]
    if issue == 128:
        assert labels["argocd.argoproj.io/secret-type"] == "repository"
    if issue == 197:
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
    if issue == 96:
        assert "argocd.argoproj.io/instance" not in labels
    if issue == 114:
        assert labels["app.kubernetes.io/part-of"] == "orders"
        assert labels["team"] == "payments"
    if issue == 144:
        assert annotations["argocd.argoproj.io/compare-options"] == "IgnoreExtraneous"
        assert annotations["kubed.appscode.com/sync"] == "true"
