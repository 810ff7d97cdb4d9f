"""The Helm chart ``charts/opsync``: rendered by helm, checked object by object, applied to a real API server.

- Rendering tests run ``helm lint``/``helm template`` (the binaries ``make envtest`` provides) with several value
  sets and assert on the parsed objects.
- The RBAC the chart grants its ServiceAccount is compared, exactly, with what opsync needs
  (``controllers.permissions.REQUIRED``) and with the reviewed list in ``tests/data/expected-rbac.yaml``.
- Control-plane tests apply the rendered manifests (server-side, as admin) and prove, as the chart's
  ServiceAccount, that each granted verb works and that nothing outside the watched namespaces does.

Other tests can install the chart with ``installed_chart(control_plane, namespace, values)``: it yields an
``InstalledChart`` whose ``kubeconfig`` acts as opsync's ServiceAccount (``from test_chart import installed_chart``
works from this folder; pass ``{"replicas": 0}`` when opsync runs in the test process instead).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.constants import DEFAULT_LEADER_ELECTION_ID
from controllers.permissions import MANAGE_CONNECT, REQUIRED, Scope
from opsync import __version__
from opsync.client import Client, ForbiddenError, NotFoundError
from opsync.envtest import ControlPlane, find_assets
from opsync.resources import (
    CLUSTERROLES,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    SECRETS,
    SELF_SUBJECT_ACCESS_REVIEWS,
    KubeObject,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "opsync"
EXPECTED_RBAC = REPO / "tests" / "data" / "expected-rbac.yaml"
KUBE_VERSION = "1.37.2"
RELEASE = "opsync"
RELEASE_NAMESPACE = "opsync-system"
COMMAND_TIMEOUT = 120.0
TOKEN_FILE = "/var/run/secrets/opsync/connect/token"

Grant = tuple[str, str, str, tuple[str, ...]]  # apiGroup, resource, verb, resourceNames
CLUSTER_SCOPED = frozenset({"namespaces", "onepasswordaccesspolicies", "customresourcedefinitions"})
WATCHED = "WATCHED"  # in expected-rbac.yaml's resourceNames: the watchNamespace list


# running helm and kubectl


class CommandError(Exception):
    """A helm or kubectl command exited non-zero; ``stderr`` says why."""

    def __init__(self, argv: Iterable[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited with {returncode}: {stderr.strip()}")
        self.stderr = stderr


@dataclass(frozen=True)
class Output:
    stdout: str
    stderr: str


def binary(name: str) -> str:
    """helm or kubectl from the envtest assets folder (``make envtest`` puts them next to kube-apiserver)."""
    path = find_assets() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: run `make envtest`")
    return str(path)


async def run(argv: list[str], *, stdin: str = "", env: Mapping[str, str] | None = None) -> Output:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            stdout, stderr = await process.communicate(stdin.encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise CommandError(argv, process.returncode or 0, stderr.decode())
    return Output(stdout.decode(), stderr.decode())


async def helm(*args: str, stdin: str = "") -> Output:
    """Run helm with throwaway cache/config/data folders, so nothing of the user's helm setup leaks in."""
    with tempfile.TemporaryDirectory(prefix="opsync-helm-") as home:
        env = {**os.environ, **{f"HELM_{part}_HOME": f"{home}/{part.lower()}" for part in ("CACHE", "CONFIG", "DATA")}}
        return await run([binary("helm"), *args], stdin=stdin, env=env)


async def kubectl(kubeconfig: str, *args: str, stdin: str = "") -> Output:
    return await run([binary("kubectl"), f"--kubeconfig={kubeconfig}", *args], stdin=stdin)


async def render_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
    include_crds: bool = False,
) -> str:
    args = ["template", release, str(CHART), f"--namespace={namespace}", f"--kube-version={KUBE_VERSION}", "-f", "-"]
    if include_crds:
        args.append("--include-crds")
    return (await helm(*args, stdin=yaml.safe_dump(dict(values or {})))).stdout


async def render(values: Mapping[str, Any] | None = None, **options: Any) -> list[KubeObject]:
    """The chart's objects for ``values`` (``release``, ``namespace``, ``include_crds`` as ``render_text``)."""
    return [doc for doc in yaml.safe_load_all(await render_text(values, **options)) if doc]


# reading rendered objects


def of_kind(objects: Iterable[KubeObject], kind: str) -> list[KubeObject]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[KubeObject], kind: str) -> KubeObject:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_cluster_role(objects: Iterable[KubeObject]) -> KubeObject:
    """The ClusterRole the chart binds to opsync's ServiceAccount (not the aggregated ones for people)."""
    objects = list(objects)
    bound = one(objects, "ClusterRoleBinding")["roleRef"]["name"]
    return next(o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"] == bound)


def container(objects: Iterable[KubeObject]) -> KubeObject:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return dict(only)


def env_of(objects: Iterable[KubeObject]) -> dict[str, Any]:
    """The operator container's environment: name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects).get("env", [])}


# RBAC


def expand(rules: Iterable[Mapping[str, Any]], watched: Iterable[str] = ()) -> set[Grant]:
    """Every (apiGroup, resource, verb, resourceNames) a list of PolicyRules grants (``WATCHED`` in
    resourceNames stands for the names in ``watched``)."""
    grants: set[Grant] = set()
    for rule in rules:
        assert not rule.get("nonResourceURLs"), f"opsync needs no non-resource URLs: {rule}"
        listed = rule.get("resourceNames") or ()
        names = tuple(sorted({n for name in listed for n in (watched if name == WATCHED else [name])}))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.update((group, resource, verb, names) for verb in rule["verbs"])
    return grants


@dataclass(frozen=True)
class Grants:
    cluster: set[Grant]
    namespaces: dict[str, set[Grant]]  # namespace -> what Roles grant there


def granted(objects: list[KubeObject], service_account: str, namespace: str) -> Grants:
    """What the rendered bindings give ``namespace/service_account``."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("rules") or []
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    cluster: set[Grant] = set()
    by_namespace: dict[str, set[Grant]] = defaultdict(set)
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        where = binding["metadata"].get("namespace")
        rules = roles[(ref["kind"], where if ref["kind"] == "Role" else None, ref["name"])]
        (cluster if binding["kind"] == "ClusterRoleBinding" else by_namespace[where]).update(expand(rules))
    return Grants(cluster, dict(by_namespace))


def expected_grants(
    watched: list[str], release_namespace: str = RELEASE_NAMESPACE, *, manage_connect: bool = False
) -> Grants:
    """The reviewed RBAC (tests/data/expected-rbac.yaml) for a watchNamespace list, leader election on."""
    reviewed_all = yaml.safe_load(EXPECTED_RBAC.read_text())
    reviewed = reviewed_all["namespaced" if watched else "clusterWide"]
    by_namespace: dict[str, set[Grant]] = defaultdict(set)
    for name in watched:
        by_namespace[name] |= expand(reviewed["watched"])
    by_namespace[release_namespace] |= expand(reviewed["release"])
    if manage_connect:
        by_namespace[release_namespace] |= expand(reviewed_all["manageConnect"]["release"])
    return Grants(expand(reviewed["cluster"], watched), dict(by_namespace))


def required_grants(
    watched: list[str], release_namespace: str = RELEASE_NAMESPACE, *, manage_connect: bool = False
) -> Grants:
    """What ``controllers.permissions`` says opsync needs (``REQUIRED``, and ``MANAGE_CONNECT`` with
    ``manage_connect``), placed as the chart must grant it."""
    cluster: set[Grant] = set()
    by_namespace: dict[str, set[Grant]] = defaultdict(set)
    for permission in (*REQUIRED, *(MANAGE_CONNECT if manage_connect else ())):
        resource = f"{permission.resource}/{permission.subresource}" if permission.subresource else permission.resource
        grants = {(permission.group, resource, verb, tuple(sorted(permission.names))) for verb in permission.verbs}
        match permission.scope:
            case Scope.LEADER_ELECTION | Scope.OPERATOR_NAMESPACE:
                by_namespace[release_namespace] |= grants
            case Scope.LEADER_ELECTION_LEASE:
                lease = (DEFAULT_LEADER_ELECTION_ID,)
                by_namespace[release_namespace] |= {(group, res, verb, lease) for group, res, verb, _ in grants}
            case Scope.WATCHED if watched:
                for name in watched:
                    by_namespace[name] |= grants
            case Scope.WATCHED_BY_NAME if watched:
                cluster |= {(group, res, verb, tuple(sorted(set(watched)))) for group, res, verb, _ in grants}
            case _:  # cluster-scoped, or every namespace
                cluster |= grants
    return Grants(cluster, dict(by_namespace))


async def allowed(client: Client, grant: tuple[str, str, str], namespace: str = "", name: str = "") -> bool:
    """Whether ``client``'s identity may do ``(apiGroup, resource[/subresource], verb)`` (SelfSubjectAccessReview)."""
    group, resource, verb = grant
    resource, _, subresource = resource.partition("/")
    attributes = {
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "verb": verb,
        "namespace": namespace,
        "name": name,
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    result = await client.create(SELF_SUBJECT_ACCESS_REVIEWS, review)
    return bool(result["status"]["allowed"])


# installing the chart on the test control plane


@dataclass(frozen=True)
class InstalledChart:
    """The chart applied to the control plane."""

    release: str
    namespace: str
    service_account: str
    kubeconfig: str
    """A kubeconfig acting as the chart's ServiceAccount: what opsync runs as."""
    objects: list[KubeObject]
    """The applied objects, as rendered."""
    warnings: str
    """What the API server warned about while applying (kubectl's stderr)."""


@asynccontextmanager
async def installed_chart(
    control_plane: ControlPlane, namespace: str, values: Mapping[str, Any] | None = None, *, release: str = RELEASE
) -> AsyncIterator[InstalledChart]:
    """Render the chart into ``namespace`` and apply it (server-side, as admin); delete what it made on exit.

    The watched namespaces must exist. Without a kubelet the Deployment's pods never start; opsync itself can
    run in the test process with ``kubeconfig``. Access policies in ``values`` apply to the whole cluster
    while the block runs. The CRDs are left out (``crds.install=false``): the control plane has them, shared.
    """
    text = await render_text({"crds": {"install": False}, **(values or {})}, release=release, namespace=namespace)
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    admin = control_plane.kubeconfig_path
    applied = await kubectl(admin, "apply", "--server-side", "--field-manager=opsync-chart-test", "-f", "-", stdin=text)
    try:
        kubeconfig = await asyncio.to_thread(control_plane.service_account_kubeconfig, namespace, account)
        yield InstalledChart(release, namespace, account, kubeconfig, objects, applied.stderr)
    finally:
        await kubectl(admin, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text)


@asynccontextmanager
async def extra_namespaces(kube: Client, count: int) -> AsyncIterator[list[str]]:
    names = [f"chart-extra-{secrets.token_hex(3)}" for _ in range(count)]
    for name in names:
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield names
    finally:
        for name in names:
            await kube.delete(NAMESPACES, name)


# rendering


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watchNamespace": ["team-a", "team-b"], "replicas": 3},
        {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "networkPolicy": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        {"operator": {"watchNamespace": ["x"], "token": {"value": "t"}}},
        {"connect": {"create": True, "credentials": "{}", "tls": {"enabled": True}}, "manageConnect": True},
    ],
    ids=["default", "namespaced-ha", "monitoring", "operator-block", "connect-create"],
)
async def test_helm_lint_passes_strictly(values: dict[str, Any]) -> None:
    output = await helm("lint", "--strict", str(CHART), "-f", "-", stdin=yaml.safe_dump(values))
    assert "0 chart(s) failed" in output.stdout


async def test_defaults_run_opsync_cluster_wide_with_the_token_as_a_file() -> None:
    objects = await render()
    app_version = chart_meta()["appVersion"]

    assert app_version == __version__
    operator = container(objects)
    assert operator["image"] == f"ghcr.io/opsync/opsync:{app_version}"
    assert operator["args"] == [
        "run",
        "--leader-elect",
        f"--leader-election-namespace={RELEASE_NAMESPACE}",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8080",
        "--log-format=json",
        "--log-level=info",
    ]
    env = env_of(objects)
    assert env == {
        "OP_CONNECT_HOST": "http://onepassword-connect:8080",
        "OP_CONNECT_TOKEN_FILE": TOKEN_FILE,
        "WATCH_NAMESPACE": "",
        "POLLING_INTERVAL": "600",
        "AUTO_RESTART": "false",
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    token_volume = next(v for v in pod["volumes"] if v["name"] == "connect-token")
    assert token_volume["secret"]["secretName"] == "onepassword-token"
    assert token_volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "connect-token")
    assert f"{mount['mountPath']}/token" == TOKEN_FILE
    assert mount["readOnly"] is True
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in operator["ports"]} == {"metrics": 8080, "health": 8081}
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert one(objects, "ServiceAccount")["metadata"]["name"] == pod["serviceAccountName"] == RELEASE
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Secret", "OnePasswordAccessPolicy"}


async def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    objects = await render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(objects)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # A read-only root needs one writable place: /tmp, in memory.
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"
    assert {"name": "tmp", "mountPath": "/tmp"} in container(objects)["volumeMounts"]
    assert all(set(v) - {"name"} <= {"emptyDir", "secret"} for v in pod["volumes"])
    # The image's user is the one the pod runs as.
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    assert (int(user[1]), int(user[2])) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])


@pytest.mark.parametrize("watched", [[], ["team-a", "team-b"]], ids=["cluster-wide", "namespaced"])
async def test_the_granted_rbac_is_exactly_what_opsync_needs_and_the_reviewed_list(watched: list[str]) -> None:
    objects = await render({"watchNamespace": watched})

    rendered = granted(objects, RELEASE, RELEASE_NAMESPACE)
    assert rendered == required_grants(watched)
    assert rendered == expected_grants(watched)


@pytest.mark.parametrize(
    "values",
    [{"manageConnect": True}, {"customEnvVars": [{"name": "MANAGE_CONNECT", "value": "true"}]}],
    ids=["value", "env-var"],
)
async def test_manage_connect_adds_exactly_its_permissions_in_the_release_namespace(values: dict[str, Any]) -> None:
    objects = await render(values)

    rendered = granted(objects, RELEASE, RELEASE_NAMESPACE)
    assert rendered == required_grants([], manage_connect=True)
    assert rendered == expected_grants([], manage_connect=True)
    assert [e for e in container(objects)["env"] if e["name"] == "MANAGE_CONNECT"] == [
        {"name": "MANAGE_CONNECT", "value": "true"}
    ]
    assert rendered != granted(await render(), RELEASE, RELEASE_NAMESPACE)


async def test_without_leader_election_there_is_no_lease_access() -> None:
    objects = await render({"leaderElection": False})

    assert "--leader-elect" not in container(objects)["args"]
    assert RELEASE_NAMESPACE not in granted(objects, RELEASE, RELEASE_NAMESPACE).namespaces


async def test_watch_namespace_scopes_rbac_to_those_namespaces() -> None:
    objects = await render({"watchNamespace": ["team-a", "{{ .Release.Namespace }}"]})

    assert env_of(objects)["WATCH_NAMESPACE"] == f"team-a,{RELEASE_NAMESPACE}"
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(objects, "Role")} == {
        ("team-a", RELEASE),
        (RELEASE_NAMESPACE, RELEASE),
        (RELEASE_NAMESPACE, f"{RELEASE}-leader-election"),
    }
    # Cluster-wide: only access policies, the watched Namespace objects and the OnePasswordItem CRD, by name.
    rules = operator_cluster_role(objects)["rules"]
    assert {(rule["resources"][0], tuple(rule.get("resourceNames", ()))) for rule in rules} == {
        ("onepasswordaccesspolicies", ()),
        ("namespaces", ("team-a", RELEASE_NAMESPACE)),
        ("customresourcedefinitions", ("onepassworditems.onepassword.com",)),
    }


async def test_a_namespace_selector_is_passed_on_with_cluster_wide_rbac() -> None:
    objects = await render({"watchNamespaceSelector": "opsync.dev/sync=true"})

    env = env_of(objects)
    assert (env["WATCH_NAMESPACE_SELECTOR"], env["WATCH_NAMESPACE"]) == ("opsync.dev/sync=true", "")
    # Any namespace may come to match: the cluster-wide grants, exactly (tests/data/expected-rbac.yaml).
    rendered = granted(objects, RELEASE, RELEASE_NAMESPACE)
    assert rendered == required_grants([]) == expected_grants([])
    assert "WATCH_NAMESPACE_SELECTOR" not in env_of(await render())


async def test_several_replicas_elect_a_leader_and_get_a_disruption_budget() -> None:
    objects = await render({"replicas": 3})

    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert "--leader-elect" in container(objects)["args"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": one(objects, "Deployment")["spec"]["selector"], "maxUnavailable": 1}
    with pytest.raises(CommandError, match="leaderElection cannot be false with replicas > 1"):
        await render({"replicas": 3, "leaderElection": False})
    assert of_kind(await render({"replicas": 3, "pdb": {"enabled": False}}), "PodDisruptionBudget") == []


# A values file written for 1Password's connect chart (its operator block, connect 2.x key names).
CONNECT_CHART_VALUES: dict[str, Any] = {
    "operator": {
        "create": True,
        "authMethod": "connect",
        "applicationName": "onepassword-connect-operator",
        "imageRepository": "docker.io/1password/onepassword-operator",
        "version": "1.12.0",
        "imagePullPolicy": "IfNotPresent",
        "imagePullSecrets": [{"name": "regcred"}],
        "replicas": 2,
        "autoRestart": True,
        "pollingInterval": 60,
        "watchNamespace": ["team-a", "{{ .Release.Namespace }}"],
        "token": {"name": "op-token", "key": "credential"},
        "serviceAccountToken": {"name": "onepassword-service-account-token", "key": "token"},
        "serviceAccount": {
            "create": "{{ .Values.operator.create }}",
            "annotations": {"team": "platform"},
            "name": "onepassword-connect-operator",
        },
        "roleBinding": {"create": "{{ .Values.operator.create }}", "name": "onepassword-connect-operator"},
        "clusterRole": {"create": "{{ .Values.operator.create }}", "name": "onepassword-connect-operator"},
        "logLevel": "debug",
        "enableAnnotations": True,
        "allowEmptyValues": True,
        "customEnvVars": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "tls": {"trust": {"secret": "connect-ca"}},
        "probes": {
            "port": 9091,
            "liveness": {"create": True, "failureThreshold": 5, "periodSeconds": 30, "initialDelaySeconds": 10},
            "readiness": {"create": False},
        },
        "resources": {"limits": {"memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "annotations": {"deploy": "annotation"},
        "labels": {"deploy": "label"},
        "podAnnotations": {"pod": "annotation"},
        "podLabels": {"pod": "label"},
        "hpa": {"enabled": False},
        "pdb": {"enabled": True, "maxUnavailable": 1, "minAvailable": 0},
    }
}


async def test_a_connect_chart_operator_block_configures_opsync() -> None:
    objects = await render(CONNECT_CHART_VALUES)

    env = env_of(objects)
    assert env["WATCH_NAMESPACE"] == f"team-a,{RELEASE_NAMESPACE}"
    assert (env["POLLING_INTERVAL"], env["AUTO_RESTART"]) == ("60", "true")
    assert env["SSL_CERT_FILE"] == "/tls/trust/tls.crt"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    operator = container(objects)
    assert {
        "--log-level=debug",
        "--enable-annotations",
        "--allow-empty-values",
        "--health-probe-bind-address=:9091",
    } <= set(operator["args"])
    # opsync's image, not the Go operator's the block names.
    assert operator["image"].startswith("ghcr.io/opsync/opsync:")
    assert {"name": "tls-trust", "mountPath": "/tls/trust", "readOnly": True} in operator["volumeMounts"]
    assert operator["livenessProbe"]["failureThreshold"] == 5
    assert "readinessProbe" not in operator
    assert operator["resources"]["limits"] == {"memory": "512Mi"}
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["annotations"] == {"deploy": "annotation"}
    assert deployment["metadata"]["labels"]["deploy"] == "label"
    assert pod["metadata"]["annotations"] == {"pod": "annotation"}
    assert pod["metadata"]["labels"]["pod"] == "label"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "onepassword-connect-operator"
    assert (spec["nodeSelector"], spec["priorityClassName"]) == (
        {"kubernetes.io/os": "linux"},
        "system-cluster-critical",
    )
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["tolerations"][0]["key"] == "infra"
    token = next(v for v in spec["volumes"] if v["name"] == "connect-token")["secret"]
    assert (token["secretName"], token["items"]) == ("op-token", [{"key": "credential", "path": "token"}])
    assert one(objects, "ServiceAccount")["metadata"]["annotations"] == {"team": "platform"}
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert granted(objects, "onepassword-connect-operator", RELEASE_NAMESPACE) == expected_grants(
        ["team-a", RELEASE_NAMESPACE]
    )


async def test_the_operator_block_overrides_top_level_keys_even_with_false_and_zero() -> None:
    values = {
        "pollingInterval": 30,
        "autoRestart": True,
        "logLevel": "warn",
        "connect": {"host": "https://connect.example:8443"},
        "operator": {"pollingInterval": 90, "autoRestart": False, "probes": {"readiness": {"create": False}}},
    }
    objects = await render(values)

    env = env_of(objects)
    assert (env["POLLING_INTERVAL"], env["AUTO_RESTART"]) == ("90", "false")
    assert env["OP_CONNECT_HOST"] == "https://connect.example:8443"  # not in the block: the top level stands
    assert "--log-level=warn" in container(objects)["args"]
    assert "readinessProbe" not in container(objects)
    assert "livenessProbe" in container(objects)  # nested maps merge key by key


async def test_a_service_account_without_operator_create_is_not_created() -> None:
    values = {
        "connect": {"create": True},
        "operator": {"create": False, "serviceAccount": {"create": "{{ .Values.operator.create }}"}},
    }

    objects = await render(values)
    assert of_kind(objects, "ServiceAccount") == []
    assert [d["metadata"]["name"] for d in of_kind(objects, "Deployment")] == ["onepassword-connect"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"authMethod": "password"}}, "authMethod"),
        ({"operator": {"pollingRate": 60}}, "pollingRate"),  # a typo of pollingInterval
        ({"pollingInterval": 0}, "pollingInterval"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"connect": {"host": "onepassword-connect:8080"}}, "connect.host must be a bare host name"),
        ({"connect": {"create": True, "replica": 2}}, "at '/connect': additional properties 'replica' not allowed"),
        ({"accessPolicies": [{"name": "p", "namespaces": {"names": ["a"]}, "vaults": []}]}, "vaults"),
        (
            {"watchNamespace": ["a"], "watchNamespaceSelector": "sync=true"},
            "watchNamespace and watchNamespaceSelector are both set",
        ),
    ],
    ids=[
        "unknown-auth-method",
        "unknown-key",
        "polling-interval",
        "log-format",
        "connect-host",
        "connect-unknown-key",
        "empty-vaults",
        "namespace-list-and-selector",
    ],
)
async def test_invalid_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError) as refused:
        await render(values)

    assert message in refused.value.stderr


async def test_a_service_account_token_is_a_file_and_no_connect_is_configured() -> None:
    """The connect chart's operator values for a service account (authMethod, serviceAccountToken)."""
    values = {"operator": {"authMethod": "service-account", "serviceAccountToken": {"name": "sa", "key": "credential"}}}
    objects = await render(values)

    env = env_of(objects)
    assert env["OP_SERVICE_ACCOUNT_TOKEN_FILE"] == "/var/run/secrets/opsync/service-account/token"
    assert not {"OP_CONNECT_HOST", "OP_CONNECT_TOKEN_FILE", "OP_SERVICE_ACCOUNT_TOKEN"} & set(env)
    volume = next(v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "sa"
    assert volume["secret"]["items"] == [{"key": "credential", "path": "token"}]
    assert of_kind(objects, "Secret") == []

    token = "ops_example-service-account-token"
    with_value = await render({"authMethod": "service-account", "serviceAccountToken": {"value": token}})
    secret = one(with_value, "Secret")
    assert secret["metadata"]["name"] == "onepassword-service-account-token" and list(secret["data"]) == ["token"]
    assert token not in yaml.safe_dump(one(with_value, "Deployment"))


async def test_a_token_value_creates_its_secret_and_never_reaches_the_environment() -> None:
    token = "example-connect-token"
    objects = await render({"token": {"name": "op", "key": "jwt", "value": token}})

    secret = one(objects, "Secret")
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == ("op", RELEASE_NAMESPACE)
    assert list(secret["data"]) == ["jwt"]
    assert token not in yaml.safe_dump(one(objects, "Deployment"))
    assert "OP_CONNECT_TOKEN" not in env_of(objects)
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = await render({"token": {"name": "op", "key": "jwt", "value": token + "2"}})
    assert one(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"] != annotations


async def test_service_monitor_and_network_policy_select_the_metrics_endpoint() -> None:
    values = {
        "connect": {"host": "https://connect.example:8443"},
        "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}],
        },
    }
    objects = await render(values)

    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert service["spec"]["ports"][0]["port"] == 9090
    assert "--metrics-bind-address=:9090" in container(objects)["args"]

    policy = one(objects, "NetworkPolicy")["spec"]
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}],
        }
    ]
    egress_ports = [{p["port"] for p in rule["ports"]} for rule in policy["egress"]]
    assert egress_ports == [{53}, {443, 6443}, {8443}]  # DNS, the API server, Connect


ACCESS_POLICIES = [
    {"name": "team-a-apps", "namespaces": {"names": ["team-a"]}, "vaults": [{"vault": "apps", "tags": ["team-a"]}]},
    {
        "name": "shared",
        "namespaces": {"selector": {"matchLabels": {"opsync.dev/shared": "true"}}},
        "vaults": [{"vault": "shared", "titlePrefix": "public-"}],
    },
]


async def test_access_policies_from_values_become_objects() -> None:
    objects = await render({"accessPolicies": ACCESS_POLICIES})

    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "OnePasswordAccessPolicy")}
    assert set(policies) == {"team-a-apps", "shared"}
    assert all(
        p["apiVersion"] == "onepassword.com/v1alpha1" and "namespace" not in p["metadata"] for p in policies.values()
    )
    assert policies["shared"]["spec"] == {k: v for k, v in ACCESS_POLICIES[1].items() if k != "name"}


# on the control plane


async def test_applied_cluster_wide_the_service_account_can_do_exactly_what_opsync_needs(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    await kube.patch(
        NAMESPACES, namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    async with (
        extra_namespaces(kube, 1) as (elsewhere,),
        installed_chart(control_plane, namespace) as chart,
        await control_plane.service_account_client(namespace, chart.service_account) as opsync,
    ):
        assert "PodSecurity" not in chart.warnings
        expected = expected_grants([], namespace)
        for group, resource, verb, names in expected.cluster:
            # Namespaced kinds in all namespaces at once and in one the chart never heard of.
            for where in ("",) if resource in CLUSTER_SCOPED else ("", elsewhere):
                for name in names or ("",):
                    assert await allowed(opsync, (group, resource, verb), where, name), (resource, verb, where, name)
        for group, resource, verb, names in expected.namespaces[namespace]:
            for name in names or ("",):  # the Lease by name
                assert await allowed(opsync, (group, resource, verb), namespace, name)
                assert not await allowed(opsync, (group, resource, verb), elsewhere, name)  # its own namespace only
        for never in (
            ("", "pods", "get"),
            ("", "pods", "delete"),
            ("batch", "jobs", "patch"),
            ("", "configmaps", "get"),
            ("", "services", "list"),
            ("apps", "replicasets", "list"),
            ("", "secrets", "deletecollection"),
            ("", "secrets", "patch"),
            ("apps", "deployments", "update"),
            ("rbac.authorization.k8s.io", "roles", "create"),
            ("onepassword.com", "onepassworditems", "create"),
            ("onepassword.com", "onepasswordaccesspolicies", "update"),
        ):
            assert not await allowed(opsync, never, elsewhere), never

        # The restricted Pod Security Standard admits the operator's pods.
        selector = f"app.kubernetes.io/instance={chart.release}"

        async def pod_created() -> bool:
            return bool((await kube.list(PODS, namespace, label_selector=selector))["items"])

        await eventually(pod_created)


async def test_applied_namespaced_the_service_account_cannot_read_secrets_elsewhere(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    async with extra_namespaces(kube, 3) as (team_a, team_b, elsewhere):
        values = {"watchNamespace": [team_a, team_b]}
        async with (
            installed_chart(control_plane, namespace, values) as chart,
            await control_plane.service_account_client(namespace, chart.service_account) as opsync,
        ):
            expected = expected_grants([team_a, team_b], namespace)
            for watched in (team_a, team_b):
                for group, resource, verb, _ in expected.namespaces[watched]:
                    assert await allowed(opsync, (group, resource, verb), watched), (resource, verb, watched)
            for group, resource, verb, names in expected.cluster:
                for name in names or ("",):
                    assert await allowed(opsync, (group, resource, verb), name=name), (resource, verb, name)

            secret_verbs = [("", "secrets", verb) for verb in ("get", "list", "watch", "create", "update", "delete")]
            for grant in secret_verbs:
                for where in (namespace, elsewhere, ""):  # the release namespace, another one, all at once
                    assert not await allowed(opsync, grant, where), (grant, where)
            for grant in (
                ("apps", "deployments", "list"),
                ("onepassword.com", "onepassworditems", "list"),
                ("", "events", "create"),
            ):
                assert not await allowed(opsync, grant, elsewhere), grant
            # Namespaces: only the watched ones' own objects, and no listing of them all.
            assert await allowed(opsync, ("", "namespaces", "get"), team_a, name=team_a)
            assert not await allowed(opsync, ("", "namespaces", "get"), elsewhere, name=elsewhere)
            assert not await allowed(opsync, ("", "namespaces", "list"))
            assert not await allowed(opsync, ("", "namespaces", "watch"), name=elsewhere)

            # Real calls, not just reviews.
            await kube.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, elsewhere)
            assert (await opsync.list(SECRETS, team_a))["items"] == []
            assert (await opsync.get(NAMESPACES, team_b))["metadata"]["name"] == team_b
            # A list by name is authorized as a request for that name (what opsync's Namespace informers send).
            by_name = await opsync.list(NAMESPACES, field_selector=f"metadata.name={team_a}")
            assert [n["metadata"]["name"] for n in by_name["items"]] == [team_a]
            with pytest.raises(ForbiddenError):
                await opsync.list(NAMESPACES, field_selector=f"metadata.name={elsewhere}")
            with pytest.raises(ForbiddenError):
                await opsync.list(NAMESPACES)
            with pytest.raises(ForbiddenError):
                await opsync.get(SECRETS, "s", elsewhere)
            with pytest.raises(ForbiddenError):
                await opsync.list(SECRETS)


async def test_the_crds_and_access_policies_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    # Server-side dry run: other tests share this cluster, and a policy would make it deny by default.
    text = await render_text({"accessPolicies": ACCESS_POLICIES}, include_crds=True)
    documents = [
        d
        for d in yaml.safe_load_all(text)
        if d and d["kind"] in ("CustomResourceDefinition", "OnePasswordAccessPolicy")
    ]
    output = await kubectl(
        control_plane.kubeconfig_path,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=opsync-chart-test",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(documents),
    )

    assert "onepasswordaccesspolicy.onepassword.com/team-a-apps serverside-applied (server dry run)" in output.stdout
    assert "onepasswordaccesspolicy.onepassword.com/shared serverside-applied (server dry run)" in output.stdout


async def test_helm_installs_and_uninstalls_the_release(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    # The CRDs exist already, without Helm's ownership (the control plane installed them): left to their owner.
    # Adopting them is test_chart_crds.py's.
    target = [f"--kubeconfig={control_plane.kubeconfig_path}", f"--namespace={namespace}"]
    await helm("install", RELEASE, str(CHART), *target, "--set=crds.install=false")
    cluster_role = f"{namespace}-{RELEASE}"

    assert (await kube.get(DEPLOYMENTS, RELEASE, namespace))["spec"]["replicas"] == 1
    assert (await kube.get(CLUSTERROLES, cluster_role))["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    await helm("uninstall", RELEASE, *target)
    with pytest.raises(NotFoundError):
        await kube.get(CLUSTERROLES, cluster_role)
