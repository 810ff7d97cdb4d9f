"""A values file written for 1Password's ``connect`` chart, given to opsync's chart (issue 13).

Every value of that chart must mean the same here, be refused by ``helm install`` with a message naming it and
what to use instead, or be documented in docs/helm.md as having no effect (Connect's own settings while this
chart does not deploy Connect). The table below renders the connect chart's own ``values.yaml``, its
``ci/*.yaml`` files (read from ``../shared/upstream`` beside the repository, never copied) and the cases issue 13
found broken, with the real helm; what is accepted is applied to the real API server, whose controllers make
the Deployments' pods (they stay Pending: there is no kubelet). The connect chart's ``values.yaml`` is also
installed with ``helm install``. A last test checks that docs/helm.md names every value of the connect chart.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, PODS, SERVICEACCOUNTS, KubeObject
from tests.integration.chart.test_chart import (
    CHART,
    CommandError,
    container,
    env_of,
    expected_grants,
    granted,
    helm,
    kubectl,
    of_kind,
    one,
    operator_cluster_role,
    render_text,
)
from tests.support.upstream import CONNECT_CHART
from tests.support.upstream import upstream as shared_upstream
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
HELM_DOC = REPO / "docs" / "helm.md"
RELEASE = "opsync"


def upstream(name: str) -> dict[str, Any]:
    """A values file of the connect chart 2.4.1, as 1Password ships it."""
    values: dict[str, Any] = yaml.safe_load((shared_upstream() / CONNECT_CHART / name).read_text()) or {}
    return values


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, maps merged key by key (as helm merges ``-f`` files)."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


Check = Callable[[list[KubeObject], str], None]


@dataclass(frozen=True)
class Case:
    """A values file and what must come of it: refused with ``refused`` in helm's error, else ``check``."""

    id: str
    values: Callable[[], dict[str, Any]]
    refused: str = ""
    check: Check | None = None
    existing: tuple[KubeObject, ...] = field(default=())
    """Objects the user made beforehand (created in the release namespace before applying)."""


def deployments(objects: list[KubeObject]) -> dict[str, KubeObject]:
    return {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}


def pod_spec(objects: list[KubeObject], name: str) -> KubeObject:
    spec: KubeObject = deployments(objects)[name]["spec"]["template"]["spec"]
    return spec


# checks of accepted cases


def connect_only(objects: list[KubeObject], namespace: str) -> None:
    # The connect chart's own defaults: Connect and no operator (operator.create: false), as there.
    assert set(deployments(objects)) == {"onepassword-connect"}
    api, sync = pod_spec(objects, "onepassword-connect")["containers"]
    assert (api["image"], sync["image"]) == (
        "docker.io/1password/connect-api:1.8.2",
        "docker.io/1password/connect-sync:1.8.2",
    )
    service = one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("connect-sync", 8081), ("connect-api", 8080)]
    # No opsync in the release: a policy admitting only opsync would admit nobody.
    assert of_kind(objects, "NetworkPolicy") == []


def connect_and_operator(objects: list[KubeObject], namespace: str) -> None:
    assert set(deployments(objects)) == {"onepassword-connect", "onepassword-connect-operator"}
    operator = pod_spec(objects, "onepassword-connect-operator")
    assert operator["serviceAccountName"] == "onepassword-connect-operator"
    assert one(objects, "ServiceAccount")["metadata"]["name"] == "onepassword-connect-operator"
    env = env_of(objects_without_connect(objects))
    assert env["OP_CONNECT_HOST"] == "http://onepassword-connect:8080"
    assert (env["POLLING_INTERVAL"], env["AUTO_RESTART"], env["WATCH_NAMESPACE"]) == ("600", "false", "")
    assert operator_cluster_role(objects)["metadata"]["name"] == "onepassword-connect-operator"
    assert granted(objects, "onepassword-connect-operator", namespace) == expected_grants([], namespace)
    # Connect admits opsync's pods only.
    (policy,) = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "onepassword-connect"]
    (rule,) = policy["spec"]["ingress"]
    opsync_labels = deployments(objects)["onepassword-connect-operator"]["spec"]["template"]["metadata"]["labels"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= opsync_labels.items()
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "onepassword-connect"}


def objects_without_connect(objects: list[KubeObject]) -> list[KubeObject]:
    return [o for o in objects if not (o["kind"] == "Deployment" and o["metadata"]["name"] == "onepassword-connect")]


def custom_env_vars_quoted(objects: list[KubeObject], namespace: str) -> None:
    env = container(objects)["env"]
    custom = {e["name"]: e["value"] for e in env if "value" in e}
    assert {k: custom[k] for k in ("CUSTOM_TEST_VAR", "ANOTHER_CUSTOM_VAR", "NUMERIC_CUSTOM_VAR")} == {
        "CUSTOM_TEST_VAR": "test-value-123",
        "ANOTHER_CUSTOM_VAR": "another-value-456",
        "NUMERIC_CUSTOM_VAR": "123",
    }


def numbers_become_strings(objects: list[KubeObject], namespace: str) -> None:
    env = {e["name"]: e for e in container(objects)["env"]}
    names = ("PORT", "BIG", "RATIO", "DEBUG", "OFF", "ZERO", "EMPTY")
    assert [env[n]["value"] for n in names] == ["8080", "1234567890", "1.5", "true", "false", "0", ""]
    assert env["FROM_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "k"}}


def pull_secrets_by_name(objects: list[KubeObject], namespace: str) -> None:
    assert pod_spec(objects, RELEASE)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


def common_labels_everywhere(objects: list[KubeObject], namespace: str) -> None:
    assert all(o["metadata"]["labels"].get("team") == "platform" for o in objects), [
        o["kind"] for o in objects if o["metadata"]["labels"].get("team") != "platform"
    ]


def helm_test_runs_check(objects: list[KubeObject], namespace: str) -> None:
    """acceptanceTests.enabled has no effect: the chart's own `helm test` pod, `opsync check`, is there anyway."""
    (pod,) = [p for p in of_kind(objects, "Pod") if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert pod["spec"]["containers"][0]["args"][0] == "check"


def connect_url(expected: str) -> Check:
    def check(objects: list[KubeObject], namespace: str) -> None:
        assert env_of(objects)["OP_CONNECT_HOST"] == expected

    return check


def for_people(o: KubeObject) -> bool:
    """A ClusterRole aggregated into the built-in admin/edit/view roles (rbac.aggregateClusterRoles): for people,
    not opsync's own, so none of the connect chart's RBAC toggles covers it."""
    labels = o["metadata"].get("labels") or {}
    return o["kind"] == "ClusterRole" and any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels)


def no_rbac_objects_of(*kinds: str, names: Mapping[str, str] | None = None) -> Check:
    def check(objects: list[KubeObject], namespace: str) -> None:
        assert not [o for o in objects if o["kind"] in kinds and not for_people(o)]
        for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
            wanted = (names or {}).get(binding["kind"])
            if wanted:
                assert binding["roleRef"]["name"] == wanted

    return check


def no_rbac_at_all(objects: list[KubeObject], namespace: str) -> None:
    """rbac.create=false (issue 20) wins over the connect chart's toggles and over manageConnect's Role."""
    assert not [o["metadata"]["name"] for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert {"name": "MANAGE_CONNECT", "value": "true"} in container(objects_without_connect(objects))["env"]


def rbac_names(objects: list[KubeObject], namespace: str) -> None:
    rbac = [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/") and not for_people(o)]
    names = {(o["kind"], o["metadata"]["name"]) for o in rbac}
    assert names == {
        ("ClusterRole", "my-role"),
        ("ClusterRoleBinding", "my-binding"),
        ("Role", "opsync"),
        ("RoleBinding", "my-rolebinding"),
        ("Role", "opsync-leader-election"),
        ("RoleBinding", "my-rolebinding-leader-election"),
    }
    assert granted(objects, RELEASE, namespace) == expected_grants([namespace], namespace)


def budget(**expected: Any) -> Check:
    def check(objects: list[KubeObject], namespace: str) -> None:
        spec = one(objects, "PodDisruptionBudget")["spec"]
        assert {k: v for k, v in spec.items() if k != "selector"} == expected

    return check


def own_service_account(objects: list[KubeObject], namespace: str) -> None:
    assert of_kind(objects, "ServiceAccount") == []
    assert pod_spec(objects, RELEASE)["serviceAccountName"] == "team-sa"
    assert granted(objects, "team-sa", namespace) == expected_grants([], namespace)


def operator_block_names(objects: list[KubeObject], namespace: str) -> None:
    assert set(deployments(objects)) == {"my-operator"}
    assert one(objects, "PodDisruptionBudget")["metadata"]["name"] == "my-operator"
    assert container(objects)["imagePullPolicy"] == "Always"
    assert container(objects)["image"].startswith("ghcr.io/opsync/opsync:")


def connect_deployed(objects: list[KubeObject], namespace: str) -> None:
    assert set(deployments(objects)) == {"onepassword-connect", RELEASE}
    secret = next(s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "op-credentials")
    assert list(secret["data"]) == ["1password-credentials.json"]
    api, sync = pod_spec(objects, "onepassword-connect")["containers"]
    assert {"name": "OP_HTTPS_PORT", "value": "8443"} in api["env"]
    assert api["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "EXTRA", "value": "1"} in api["env"] and {"name": "EXTRA", "value": "1"} in sync["env"]
    volumes = {v["name"]: v for v in pod_spec(objects, "onepassword-connect")["volumes"]}
    assert volumes["tls-cert"]["secret"]["secretName"] == "op-connect-tls"
    assert env_of(objects_without_connect(objects))["OP_CONNECT_HOST"] == "https://onepassword-connect:8443"
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    assert policies["onepassword-connect"]["ingress"][0]["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert policies["onepassword-connect"]["ingress"][0]["from"][1] == {"namespaceSelector": {}}
    # opsync's own policy sends it to those pods.
    assert policies[RELEASE]["egress"][2] == {
        "ports": [{"port": 8443, "protocol": "TCP"}],
        "to": [{"podSelector": {"matchLabels": {"app": "onepassword-connect"}}}],
    }
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def connect_chart_settings(objects: list[KubeObject], namespace: str) -> None:
    connect = deployments(objects)["onepassword-connect"]
    pod = connect["spec"]["template"]["spec"]
    assert connect["spec"]["replicas"] == 2
    assert connect["spec"]["template"]["metadata"]["labels"]["version"] == "1.8.2"  # the connect chart's appVersion
    assert [c["name"] for c in pod["containers"]] == ["connect-api", "connect-sync", "profiler-data"]
    api = pod["containers"][0]
    assert {"name": "OP_LOG_LEVEL", "value": "debug"} in api["env"] and {
        "name": "OP_HTTP_PORT",
        "value": "9090",
    } in api["env"]
    assert "livenessProbe" not in api and api["readinessProbe"]["httpGet"]["port"] == 9090
    assert pod["serviceAccountName"] == "connect-sa" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shared-data"]["persistentVolumeClaim"] == {"claimName": "connect-data"}
    assert volumes["credentials"]["secret"]["secretName"] == "my-credentials"
    service = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "onepassword-connect")
    assert (service["spec"]["type"], service["spec"]["loadBalancerSourceRanges"]) == ("LoadBalancer", ["10.0.0.0/8"])
    assert service["metadata"]["annotations"] == {"lb": "internal"}
    accounts = {a["metadata"]["name"]: a for a in of_kind(objects, "ServiceAccount")}
    assert accounts["connect-sa"]["metadata"]["annotations"] == {"role": "x"}
    secret = next(s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "my-credentials")
    assert secret["data"] == {"1password-credentials.json": "e30="}
    assert env_of(objects_without_connect(objects))["OP_CONNECT_HOST"] == "http://onepassword-connect:9090"


def connect_autoscaled(objects: list[KubeObject], namespace: str) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["annotations"] == {"a": "b"}
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "onepassword-connect"},
        "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
            }
        ],
    }


def connect_monitored(objects: list[KubeObject], namespace: str) -> None:
    monitor = one(objects, "ServiceMonitor")
    service = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "onepassword-connect")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "connect-api-https", "path": "/metrics", "params": {"a": ["b"]}, "interval": "30s"}
    ]
    assert "connect-api-https" in [p["name"] for p in service["spec"]["ports"]]
    # opsync's metrics Service is not selected.
    metrics = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == f"{RELEASE}-metrics")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()


def only_opsync(objects: list[KubeObject], namespace: str) -> None:
    assert set(deployments(objects)) == {RELEASE}
    assert not [o for o in objects if o["metadata"]["name"].startswith(("onepassword-connect", "op-credentials"))]


def opsync_env(objects: list[KubeObject]) -> dict[str, str]:
    deployment = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == RELEASE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def uses_a_service_account_token(objects: list[KubeObject], namespace: str) -> None:
    """authMethod: service-account: the SDK with the token as a file, no Connect settings."""
    only_opsync(objects, namespace)
    env = opsync_env(objects)
    assert "OP_SERVICE_ACCOUNT_TOKEN_FILE" in env
    assert "OP_CONNECT_HOST" not in env


def makes_the_service_account_token_secret(objects: list[KubeObject], namespace: str) -> None:
    uses_a_service_account_token(objects, namespace)
    secrets = [s["metadata"]["name"] for s in of_kind(objects, "Secret")]
    assert "onepassword-service-account-token" in secrets


def service_account(name: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}


CASES = [
    # The connect chart's files
    Case("connect-values.yaml", lambda: upstream("values.yaml"), check=connect_only),
    Case(
        "connect-values.yaml+operator",
        lambda: merged(upstream("values.yaml"), {"operator": {"create": True}}),
        check=connect_and_operator,
    ),
    Case("ci/with-connect-values.yaml", lambda: upstream("ci/with-connect-values.yaml"), check=custom_env_vars_quoted),
    Case(
        "ci/with-connect-sa-values.yaml",
        lambda: upstream("ci/with-connect-sa-values.yaml"),
        refused="connect.serviceAccount configures the Connect server, which this chart deploys only with "
        "connect.create: true",
    ),
    Case(
        "ci/with-service-account-values.yaml",
        lambda: upstream("ci/with-service-account-values.yaml"),
        check=uses_a_service_account_token,
    ),
    # What issue 13 found broken
    Case(
        "imagePullSecrets-names",
        lambda: {"operator": {"imagePullSecrets": ["regcred", {"name": "other"}]}},
        check=pull_secrets_by_name,
    ),
    Case("commonLabels", lambda: {"commonLabels": {"team": "platform"}}, check=common_labels_everywhere),
    Case("acceptanceTests", lambda: {"acceptanceTests": upstream("values.yaml")["acceptanceTests"]}),
    Case("acceptanceTests-enabled", lambda: {"acceptanceTests": {"enabled": True}}, check=helm_test_runs_check),
    Case(
        "bare-host",
        lambda: {"connect": {"host": "onepassword-connect"}},
        check=connect_url("http://onepassword-connect:8080"),
    ),
    Case(
        "bare-host-ports",
        lambda: {"connect": {"host": "connect.infra.svc", "api": {"httpPort": 9000}}},
        check=connect_url("http://connect.infra.svc:9000"),
    ),
    Case(
        "tls-enabled",
        lambda: {"connect": {"host": "onepassword-connect", "tls": {"enabled": True}}},
        check=connect_url("https://onepassword-connect:8443"),
    ),
    Case(
        "tls-enabled-http-url",
        lambda: {"connect": {"host": "http://onepassword-connect:8080", "tls": {"enabled": True}}},
        refused='connect.tls.enabled is true but connect.host is "http://onepassword-connect:8080": give https://',
    ),
    Case(
        "host-with-port-no-scheme",
        lambda: {"connect": {"host": "onepassword-connect:8080"}},
        refused="connect.host must be a bare host name (the port comes from connect.api.httpPort/httpsPort) or a URL",
    ),
    Case(
        "customEnvVars-numbers",
        lambda: {
            "operator": {
                "customEnvVars": [
                    {"name": "PORT", "value": 8080},
                    {"name": "BIG", "value": 1234567890},
                    {"name": "RATIO", "value": 1.5},
                    {"name": "DEBUG", "value": True},
                    {"name": "OFF", "value": False},
                    {"name": "ZERO", "value": 0},
                    {"name": "EMPTY"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ]
            }
        },
        check=numbers_become_strings,
    ),
    Case(
        "clusterRole-create-false",
        lambda: {"operator": {"clusterRole": {"create": False, "name": "their-role"}}},
        check=no_rbac_objects_of("ClusterRole", "Role", names={"ClusterRoleBinding": "their-role"}),
    ),
    Case(
        "rbac-create-false-with-manageConnect",
        lambda: {"rbac": {"create": False}, "manageConnect": True, "watchNamespace": ["{{ .Release.Namespace }}"]},
        check=no_rbac_at_all,
    ),
    Case(
        "roleBinding-create-false",
        lambda: {"operator": {"roleBinding": {"create": "false"}, "watchNamespace": ["{{ .Release.Namespace }}"]}},
        check=no_rbac_objects_of("RoleBinding"),
    ),
    Case(
        "clusterRoleBinding-create-false",
        lambda: {"operator": {"clusterRoleBinding": {"create": False}}},
        check=no_rbac_objects_of("ClusterRoleBinding"),
    ),
    Case(
        "rbac-names",
        lambda: {
            "operator": {
                "watchNamespace": ["{{ .Release.Namespace }}"],
                "clusterRole": {"name": "my-role"},
                "clusterRoleBinding": {"name": "my-binding"},
                "roleBinding": {"name": "my-rolebinding"},
            }
        },
        check=rbac_names,
    ),
    Case(
        "pdb-both",
        lambda: {"operator": {"pdb": {"enabled": True, "maxUnavailable": 1, "minAvailable": 1}}},
        refused="pdb.maxUnavailable (1) and pdb.minAvailable (1) are both set: a PodDisruptionBudget takes one; "
        "set the other to null or 0",
    ),
    Case(
        "pdb-connect-chart-defaults",
        lambda: {"operator": {"pdb": {"enabled": True, "maxUnavailable": 1, "minAvailable": 0}}},
        check=budget(maxUnavailable=1),
    ),
    Case(
        "pdb-minAvailable",
        lambda: {"operator": {"pdb": {"enabled": True, "maxUnavailable": 0, "minAvailable": "50%"}}},
        check=budget(minAvailable="50%"),
    ),
    Case(
        "serviceAccount-create-false",
        lambda: {"operator": {"serviceAccount": {"create": False}}},
        refused="serviceAccount.create is false: set serviceAccount.name to the ServiceAccount opsync should run as",
    ),
    Case(
        "serviceAccount-own",
        lambda: {"operator": {"serviceAccount": {"create": False, "name": "team-sa"}}},
        check=own_service_account,
        existing=(service_account("team-sa"),),
    ),
    # The rest of the operator block
    Case(
        "operator-applicationName-imagePullPolicy",
        lambda: {
            "operator": {
                "applicationName": "my-operator",
                "imagePullPolicy": "Always",
                "imageRepository": "docker.io/1password/onepassword-operator",
                "version": "1.12.0",
                "pdb": {"enabled": True},
            }
        },
        check=operator_block_names,
    ),
    Case(
        "operator-private-image",
        lambda: {"operator": {"imageRepository": "registry.example/1password/onepassword-operator"}},
        refused='operator.imageRepository "registry.example/1password/onepassword-operator": opsync runs its own '
        "image, not the Go operator's; set image.repository",
    ),
    Case(
        "operator-hpa",
        lambda: {"operator": {"hpa": {"enabled": True}}},
        refused="operator.hpa.enabled: only the replica holding the leader Lease works",
    ),
    Case(
        "operator-serviceAccountToken-value",
        lambda: {"operator": {"authMethod": "service-account", "serviceAccountToken": {"value": "ops_x"}}},
        check=makes_the_service_account_token_secret,
    ),
    Case(
        "nothing",
        lambda: {"operator": {"create": False}, "connect": {"create": False}},
        refused="operator.create and connect.create are both false",
    ),
    # connect.create: Connect next to opsync
    Case(
        "connect-create",
        lambda: {
            "connect": {
                "create": True,
                "credentials": '{"verifier": {}}',
                "tls": {"enabled": True},
                "customEnvVars": [{"name": "EXTRA", "value": 1}],
                "pdb": {"enabled": True, "maxUnavailable": 0, "minAvailable": 1},
                "networkPolicy": {"from": [{"namespaceSelector": {}}]},
            },
            "networkPolicy": {"enabled": True},
        },
        check=connect_deployed,
    ),
    Case(
        "connect-create-connect-chart-settings",
        lambda: {
            "connect": {
                "create": True,
                "replicas": 2,
                "version": "{{ .Chart.AppVersion }}",
                "serviceType": "LoadBalancer",
                "loadBalancerSourceRanges": ["10.0.0.0/8"],
                "serviceAnnotations": {"lb": "internal"},
                "serviceAccount": {"create": True, "name": "connect-sa", "annotations": {"role": "x"}},
                "credentialsName": "my-credentials",
                "credentials_base64": "e30=",
                "dataVolume": {"type": "persistentVolumeClaim", "values": {"claimName": "connect-data"}},
                "profiler": {"enabled": True},
                "probes": {"liveness": False},
                "imagePullSecrets": ["regcred"],
                "api": {"logLevel": "debug", "httpPort": 9090},
            }
        },
        check=connect_chart_settings,
    ),
    Case(
        "connect-create-credentials-twice",
        lambda: {"connect": {"create": True, "credentials": "{}", "credentials_base64": "e30="}},
        refused="connect.credentials and connect.credentials_base64 are both set: give only one",
    ),
    Case(
        "connect-ingress",
        lambda: {"connect": {"create": True, "ingress": {"enabled": True}}},
        refused="connect.ingress.enabled: opsync's chart keeps Connect inside the cluster",
    ),
    Case(
        "connect-hpa",
        lambda: {
            "connect": {
                "create": True,
                "hpa": {"enabled": True, "maxReplicas": 5, "avgMemoryUtilization": None, "annotations": {"a": "b"}},
            }
        },
        check=connect_autoscaled,
    ),
    Case(
        "connect-serviceMonitor",
        lambda: {
            "connect": {
                "create": True,
                "tls": {"enabled": True},
                "api": {"serviceMonitor": {"enabled": True, "params": {"a": ["b"]}}},
            }
        },
        check=connect_monitored,
    ),
    Case(
        "connect-settings-elsewhere",
        lambda: {"connect": {"create": False, "replicas": 3, "credentials": "{}"}},
        check=only_opsync,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_connect_chart_values(case: Case, control_plane: ControlPlane, kube: Client, namespace: str) -> None:
    values = case.values()
    if case.refused:
        with pytest.raises(CommandError) as refused:
            await render_text(values, release=RELEASE, namespace=namespace)
        assert case.refused in refused.value.stderr
        return

    text = await render_text(values, release=RELEASE, namespace=namespace)
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    if case.check is not None:
        case.check(objects, namespace)
    for existing in case.existing:
        await kube.create(SERVICEACCOUNTS, existing, namespace)
    admin = control_plane.kubeconfig_path
    # prometheus-operator's CRDs are not installed on the test API server. opsync's are, shared by the
    # session: deleting them below would delete every OnePasswordItem other tests rely on.
    text = yaml.safe_dump_all([o for o in objects if o["kind"] not in {"ServiceMonitor", "CustomResourceDefinition"}])
    await kubectl(admin, "apply", "--server-side", "--field-manager=opsync-chart-test", "-f", "-", stdin=text)
    try:
        # The API server took every object; its controllers make each Deployment's pods (Pending: no kubelet).
        for deployment in of_kind(objects, "Deployment"):
            labels = deployment["spec"]["selector"]["matchLabels"]
            selector = ",".join(f"{k}={v}" for k, v in labels.items())

            async def pod_made(selector: str = selector) -> bool:
                return bool((await kube.list(PODS, namespace, label_selector=selector))["items"])

            await eventually(pod_made, message=f"no pod for Deployment {deployment['metadata']['name']}")
    finally:
        await kubectl(admin, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text)


# every value of the connect chart is in docs/helm.md


def leaves(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values' leaves (an empty map or a list is a leaf)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path


def documented_keys() -> list[str]:
    """The keys in the first column of docs/helm.md's table of the connect chart's values."""
    text = HELM_DOC.read_text()
    start = text.index("### Every value of the connect chart")
    table = text[start:].split("\n\n", 2)[1]
    return [key for row in table.splitlines()[2:] for key in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def test_docs_say_what_every_value_of_the_connect_chart_does() -> None:
    documented = documented_keys()

    def covered(path: str) -> bool:
        return any(path == key or (key.endswith(".*") and path.startswith(key[:-1])) for key in documented)

    missing = [path for path in leaves(upstream("values.yaml")) if not covered(path)]
    assert missing == [], f"docs/helm.md does not say what these values of the connect chart do: {missing}"


async def test_helm_installs_the_connect_charts_values_file(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    # The control plane's CRDs are shared by the session, so this release leaves them alone.
    values = merged(upstream("values.yaml"), {"operator": {"create": True}, "crds": {"install": False}})
    target = [f"--kubeconfig={control_plane.kubeconfig_path}", f"--namespace={namespace}"]

    installed = await helm("install", RELEASE, str(CHART), *target, "-f", "-", stdin=yaml.safe_dump(values))
    try:
        assert (
            f"1Password Connect is deployed as {namespace}/onepassword-connect, reachable only from opsync"
            in installed.stdout
        )
        for name in ("onepassword-connect", "onepassword-connect-operator"):
            labels = (await kube.get(DEPLOYMENTS, name, namespace))["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == RELEASE
    finally:
        await helm("uninstall", RELEASE, *target)
