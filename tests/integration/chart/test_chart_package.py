"""The chart as a package and the conventions platform teams expect of it, rendered and applied to the real API
server: the packaged chart (``make chart``) installs; rbac.create and the aggregated editor/viewer roles;
extraArgs, extraEnv, extraVolumes/Mounts, topologySpreadConstraints, priorityClassName, podLabels;
serviceMonitor relabelings; ``helm test`` running ``opsync check`` as the operator's ServiceAccount, and
``opsync check --as`` judging that ServiceAccount by impersonation.

The prometheus-operator CRDs are not part of this repository: a stand-in CRD (any spec accepted) lets the
API server store the ServiceMonitor and PrometheusRule; their fields are checked on the rendered objects.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from onepassword_access.emulator import Emulator
from opsync import __version__
from opsync.client import Client, NotFoundError
from opsync.envtest import ControlPlane
from opsync.resources import CLUSTERROLES, DEPLOYMENTS, KubeObject
from tests.integration.chart.test_chart import (
    CHART,
    RELEASE,
    TOKEN_FILE,
    CommandError,
    container,
    helm,
    installed_chart,
    kubectl,
    of_kind,
    one,
    render,
)
from tests.integration.chart.test_permissions import run_check
from tests.support.harness import TOKEN, emulator_data
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

PRIORITY_CLASS = "opsync-test-critical"
CONVENTIONS: dict[str, Any] = {
    "replicas": 2,
    "extraArgs": ["--workers=8"],
    "extraEnv": [{"name": "OPSYNC_EXTRA", "value": "yes"}],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "priorityClassName": PRIORITY_CLASS,
    "podLabels": {"team": "platform"},
    "metrics": {
        "serviceMonitor": {
            "enabled": True,
            "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
            "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "python_gc_.*", "action": "drop"}],
        }
    },
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}


def stand_in_crd(kind: str, plural: str) -> KubeObject:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List", "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


@pytest.fixture
async def monitoring_crds(control_plane: ControlPlane) -> None:
    """Installed once and kept: removing CRDs makes the garbage collector pause to resync for every test."""
    crds = [stand_in_crd("ServiceMonitor", "servicemonitors"), stand_in_crd("PrometheusRule", "prometheusrules")]
    admin = control_plane.kubeconfig_path
    await kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(crds))
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    await kubectl(admin, "wait", "--for=condition=Established", "--timeout=60s", *names)


async def can(kubeconfig: str, user: str, verb: str, resource: str, namespace: str) -> bool:
    """``kubectl auth can-i`` for ``user`` (by impersonation, as admin)."""
    try:
        await kubectl(kubeconfig, "auth", "can-i", verb, resource, f"--as={user}", f"--namespace={namespace}")
    except CommandError:
        return False
    return True


# the package


async def test_the_packaged_chart_carries_the_project_version_and_installs(
    control_plane: ControlPlane, kube: Client, namespace: str, tmp_path: Path
) -> None:
    await helm("package", str(CHART), f"--version={__version__}", f"--app-version={__version__}", f"-d={tmp_path}")
    package = tmp_path / f"opsync-{__version__}.tgz"
    with tarfile.open(package) as archive:
        names = archive.getnames()
        meta = yaml.safe_load(archive.extractfile("opsync/Chart.yaml").read())  # type: ignore[union-attr]
    assert (meta["version"], meta["appVersion"]) == (__version__, __version__)
    # The CRDs (templates rendered from files/crds/) and the dashboard are inside, as files.
    assert "opsync/files/crds/onepassword.com_onepassworditems.yaml" in names
    assert "opsync/templates/crds.yaml" in names
    assert "opsync/dashboards/opsync.json" in names

    target = [f"--kubeconfig={control_plane.kubeconfig_path}", f"--namespace={namespace}"]
    # The control plane's CRDs are shared with other tests: left out here (test_chart_crds.py adopts them).
    await helm("install", RELEASE, str(package), *target, "--set=replicas=0", "--set=crds.install=false")
    deployment = await kube.get(DEPLOYMENTS, RELEASE, namespace)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/opsync/opsync:{__version__}"
    status = await helm("status", RELEASE, *target, "-o=json")
    assert yaml.safe_load(status.stdout)["info"]["status"] == "deployed"
    await helm("uninstall", RELEASE, *target)
    with pytest.raises(NotFoundError):
        await kube.get(CLUSTERROLES, f"{namespace}-{RELEASE}")


def test_make_chart_packages_with_the_project_version() -> None:
    makefile = (CHART.parents[1] / "Makefile").read_text()
    assert "package charts/opsync --version $(VERSION) --app-version $(VERSION) --destination dist" in makefile


# conventions


async def test_extra_args_env_volumes_spread_priority_and_pod_labels_reach_the_api_server(
    control_plane: ControlPlane, kube: Client, namespace: str, monitoring_crds: None
) -> None:
    objects = await render(CONVENTIONS, namespace=namespace)
    operator, pod = container(objects), one(objects, "Deployment")["spec"]["template"]
    assert operator["args"][-1] == "--workers=8"
    assert {"name": "OPSYNC_EXTRA", "value": "yes"} in operator["env"]
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in operator["volumeMounts"]
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}} in pod["spec"]["volumes"]
    selector = one(objects, "Deployment")["spec"]["selector"]
    assert pod["spec"]["topologySpreadConstraints"] == [
        {**CONVENTIONS["topologySpreadConstraints"][0], "labelSelector": selector}
    ]
    assert pod["spec"]["priorityClassName"] == PRIORITY_CLASS
    assert pod["metadata"]["labels"]["team"] == "platform"
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    service_monitor = CONVENTIONS["metrics"]["serviceMonitor"]
    assert endpoint["relabelings"] == service_monitor["relabelings"]
    assert endpoint["metricRelabelings"] == service_monitor["metricRelabelings"]
    assert endpoint["honorLabels"] is True

    admin = control_plane.kubeconfig_path
    priority = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": PRIORITY_CLASS},
                "value": 1000000}  # fmt: skip
    await kubectl(admin, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(priority))
    async with installed_chart(control_plane, namespace, CONVENTIONS) as chart:
        stored = (await kube.get(DEPLOYMENTS, RELEASE, namespace))["spec"]["template"]
        # What the API server kept (it drops or refuses what a Deployment cannot hold).
        assert stored["spec"]["topologySpreadConstraints"] == pod["spec"]["topologySpreadConstraints"]
        assert stored["spec"]["priorityClassName"] == PRIORITY_CLASS
        assert stored["metadata"]["labels"]["team"] == "platform"
        assert stored["spec"]["containers"][0]["args"] == operator["args"]
        assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in stored["spec"]["containers"][0][
            "volumeMounts"
        ]
        kinds = {o["kind"] for o in chart.objects}
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "PodDisruptionBudget"} <= kinds
        assert "Warning" not in chart.warnings


async def test_rbac_create_false_leaves_every_role_to_the_platform_team() -> None:
    objects = await render({"rbac": {"create": False}})
    assert not {o["kind"] for o in objects} & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert one(objects, "ServiceAccount")  # still created, for the platform team's bindings
    assert len(of_kind(await render({"rbac": {"aggregateClusterRoles": False}}), "ClusterRole")) == 1


async def test_namespace_editors_and_viewers_get_onepassworditems_through_aggregation(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    admin = control_plane.kubeconfig_path
    bindings = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{user}-{role}", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
        for user, role in (("erin-editor", "edit"), ("vic-viewer", "view"))
    ]  # fmt: skip
    await kubectl(admin, "apply", "-f", "-", stdin=yaml.safe_dump_all(bindings))
    async with installed_chart(control_plane, namespace, {"replicas": 0}) as chart:
        assert {o["metadata"]["name"] for o in of_kind(chart.objects, "ClusterRole")} >= {
            f"{namespace}-{RELEASE}-edit",
            f"{namespace}-{RELEASE}-view",
        }

        async def aggregated() -> bool:
            return await can(admin, "erin-editor", "create", "onepassworditems.onepassword.com", namespace)

        await eventually(aggregated, timeout=60, message="the edit role never gained OnePasswordItems")
        assert await can(admin, "erin-editor", "delete", "onepassworditems.onepassword.com", namespace)
        assert await can(admin, "vic-viewer", "list", "onepassworditems.onepassword.com", namespace)
        assert not await can(admin, "vic-viewer", "create", "onepassworditems.onepassword.com", namespace)
        # Neither may read the Secrets opsync writes through these roles (view never grants Secrets).
        assert not await can(admin, "vic-viewer", "get", "secrets", namespace)

    async def gone() -> bool:
        return not await can(admin, "erin-editor", "create", "onepassworditems.onepassword.com", namespace)

    await eventually(gone, timeout=60, message="uninstalling left OnePasswordItems in the edit role")


# helm test and opsync check --as


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [{"title": "db", "fields": [{"label": "password", "value": "one"}]}]
    async with Emulator(emulator_data({"k8s": items})) as emu:
        yield emu


def check_environment(test_pod: KubeObject, namespace: str, kubeconfig: str, token: Path) -> dict[str, str]:
    """The test Pod's environment as the kubelet would give it, plus a kubeconfig and the token's path."""
    env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"] if "value" in e}
    assert env["OP_CONNECT_TOKEN_FILE"] == TOKEN_FILE
    return {**env, "POD_NAMESPACE": namespace, "KUBECONFIG": kubeconfig, "OP_CONNECT_TOKEN_FILE": str(token)}


async def test_helm_test_runs_opsync_check_as_the_operator_and_check_as_judges_it_by_impersonation(
    control_plane: ControlPlane, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    values = {"replicas": 0, "watchNamespace": [namespace], "connect": {"host": emulator.url}}
    async with installed_chart(control_plane, namespace, values) as chart:
        deployment = one(chart.objects, "Deployment")["spec"]["template"]["spec"]
        test_pods = [p for p in of_kind(chart.objects, "Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test"]
        assert len(test_pods) == 1
        test_pod = test_pods[0]
        check, operator = test_pod["spec"]["containers"][0], deployment["containers"][0]
        # The operator's identity, image, flags, environment and files, running `check` instead of `run`.
        assert test_pod["spec"]["serviceAccountName"] == deployment["serviceAccountName"] == chart.service_account
        assert check["image"] == operator["image"]
        assert check["args"] == ["check", *operator["args"][1:]]
        assert (check["env"], check["volumeMounts"]) == (operator["env"], operator["volumeMounts"])
        assert test_pod["spec"]["volumes"] == deployment["volumes"]
        assert test_pod["spec"]["restartPolicy"] == "Never"

        token = tmp_path / "token"
        token.write_text(TOKEN)
        flags = check["args"][1:]
        # What `helm test` runs: the check as the ServiceAccount itself.
        code, table = await run_check(check_environment(test_pod, namespace, chart.kubeconfig, token), *flags)
        assert code == 0, table
        # The same from an admin's kubeconfig, judging the ServiceAccount by impersonation.
        account = f"system:serviceaccount:{namespace}:{chart.service_account}"
        admin_env = check_environment(test_pod, namespace, control_plane.kubeconfig_path, token)
        code, as_table = await run_check(admin_env, *flags, f"--as={account}")
        assert code == 0, as_table
        assert as_table.pop("kubernetes: identity") == ("ok", f"{account} (impersonated)")
        assert as_table == table
        # --as really judges the user named: a ServiceAccount with no RBAC fails where the admin passes.
        nobody = f"system:serviceaccount:{namespace}:nobody"
        code, nobody_table = await run_check(admin_env, *flags, f"--as={nobody}")
        assert code == 1
        assert nobody_table["kubernetes: secrets"][0] == "FAIL"
        assert nobody_table["kubernetes: secrets"][1].startswith(f"missing: get in {namespace}")
        code, _ = await run_check(admin_env, *flags)
        assert code == 0
