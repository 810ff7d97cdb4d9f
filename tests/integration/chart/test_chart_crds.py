"""The chart's CRDs: real files equal to the repository's ``crds/``, rendered as templates Helm upgrades and keeps.

Helm installs a chart's ``crds/`` folder only when a CRD is absent and never upgrades it, so the chart renders
its CRDs as templates instead (``templates/crds.yaml`` over ``files/crds/``). Adopting a CRD that 1Password's
chart left, and upgrading it, is ``test_migration.py``'s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controllers.resources import ONEPASSWORDACCESSPOLICIES
from opsync.envtest import ControlPlane
from opsync.resources import CRDS
from tests.integration.chart.test_chart import CHART, CommandError, helm, of_kind, render

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SHIPPED = CHART / "files" / "crds"
KEEP = {"helm.sh/resource-policy": "keep"}


def test_the_chart_holds_real_copies_of_the_repository_crds() -> None:
    links = [str(p.relative_to(CHART)) for p in CHART.rglob("*") if p.is_symlink()]
    assert links == [], "packagers and Flux drop symlinks from a chart"
    repository = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in SHIPPED.glob("*.yaml")}
    assert shipped.keys() == repository.keys(), "run `make chart-crds`"
    for name, content in repository.items():
        assert shipped[name] == content, f"files/crds/{name} differs from crds/{name}: run `make chart-crds`"
    assert not (CHART / "crds").exists(), "a crds/ folder would be installed once and never upgraded"


async def test_the_crds_render_as_kept_templates_labelled_for_the_release() -> None:
    rendered = {c["metadata"]["name"]: c for c in of_kind(await render(), "CustomResourceDefinition")}

    repository = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    assert set(rendered) == {c["metadata"]["name"] for c in repository}
    for crd in repository:
        shipped = rendered[crd["metadata"]["name"]]
        meta = shipped["metadata"]
        assert meta.pop("annotations") == KEEP, "helm uninstall must leave the CRDs, and every item"
        labels = meta.pop("labels")
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "opsync"
        assert shipped == crd, "the template changed the CRD itself"


async def test_crds_install_false_renders_none() -> None:
    assert of_kind(await render({"crds": {"install": False}}), "CustomResourceDefinition") == []


async def test_on_a_cluster_without_the_crds_access_policies_come_with_the_first_upgrade() -> None:
    policy = {"name": "team-a", "namespaces": {"names": ["team-a"]}, "vaults": [{"vault": "k8s"}]}
    async with ControlPlane(crds=[], logs_root=REPO / ".envtest-logs") as plane, await plane.client() as kube:
        target = [f"--kubeconfig={plane.kubeconfig_path}", "--namespace=opsync-system", "--set=replicas=0"]
        with pytest.raises(CommandError, match="ensure CRDs are installed first"):  # what docs/helm.md says
            await helm(
                "install", "opsync", str(CHART), *target, "--create-namespace", "-f", "-", stdin=policies(policy)
            )
        await helm("install", "opsync", str(CHART), *target, "--create-namespace")
        await helm("upgrade", "opsync", str(CHART), *target, "-f", "-", stdin=policies(policy))

        assert (await kube.get(ONEPASSWORDACCESSPOLICIES, "team-a"))["spec"]["vaults"] == [{"vault": "k8s"}]
        crd = await kube.get(CRDS, "onepassworditems.onepassword.com")
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "opsync"


def policies(*entries: dict[str, object]) -> str:
    return yaml.safe_dump({"accessPolicies": list(entries)})
