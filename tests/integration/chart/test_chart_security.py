"""The chart's defence in depth on the real API server (issue 16): its ValidatingAdmissionPolicy lets opsync's
ServiceAccount write only the Secrets opsync manages, of the allowed types, in its namespaces, although its
RBAC allows more; and its Lease permissions name opsync's Lease only.

``test_chart_identity`` runs opsync itself under the same chart (policy on by default) and proves that it
never meets a refusal.
"""

from __future__ import annotations

from typing import Any

import pytest

from controllers.constants import MANAGED_LABEL, MANAGED_LABEL_VALUE
from opsync.client import ApiError, Client
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS, KubeObject
from tests.integration.chart.test_chart import CommandError, allowed, installed_chart, one, render
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

MANAGED = {MANAGED_LABEL: MANAGED_LABEL_VALUE}


def secret(name: str, labels: dict[str, str] | None = None, type_: str = "Opaque", **extra: Any) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels or {}, **extra},
        "type": type_,
        "data": {},
    }


async def refusal(write: Any) -> str:
    """The admission message of a refused write (raises if the write went through)."""
    try:
        await write
    except ApiError as err:
        return err.message
    raise AssertionError("the API server accepted the write")


async def test_the_admission_policy_confines_the_service_account_to_managed_secrets(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    async with (
        installed_chart(control_plane, namespace) as chart,  # cluster-wide: RBAC allows every Secret
        await Client.from_kubeconfig(chart.kubeconfig) as opsync,
    ):

        async def unmanaged_refused() -> bool:
            try:
                await opsync.create(SECRETS, secret("probe"), namespace)
            except ApiError as err:
                return "opsync may only write Secrets labelled opsync.dev/managed=true" in err.message
            await kube.delete(SECRETS, "probe", namespace)  # the policy is not loaded yet
            return False

        await eventually(unmanaged_refused, timeout=30, message="the admission policy never applied")

        await opsync.create(SECRETS, secret("managed", MANAGED), namespace)  # what opsync writes: allowed
        message = await refusal(
            opsync.create(
                SECRETS,
                secret(
                    "token",
                    MANAGED,
                    "kubernetes.io/service-account-token",
                    annotations={"kubernetes.io/service-account.name": "default"},
                ),
                namespace,
            )
        )
        assert "only write Secrets of the types a OnePasswordItem may ask for" in message
        message = await refusal(opsync.create(SECRETS, secret("system", MANAGED), "kube-system"))
        assert "may not write Secrets in this namespace" in message

        # someone else's Secret: neither deleted, nor adopted by labelling it
        await kube.create(SECRETS, secret("users"), namespace)
        assert "labelled opsync.dev/managed=true" in await refusal(opsync.delete(SECRETS, "users", namespace))
        users = await opsync.get(SECRETS, "users", namespace)
        users["metadata"]["labels"] = MANAGED
        assert "only update Secrets it manages" in await refusal(opsync.replace(SECRETS, users))

        # a Secret 1Password's operator made may be taken over (labelled on the way)
        gone = secret("go-made", annotations={"operator.1password.io/item-path": "vaults/v/items/i"})
        await kube.create(SECRETS, gone, namespace)
        taken = await opsync.get(SECRETS, "go-made", namespace)
        taken["metadata"]["labels"] = MANAGED
        await opsync.replace(SECRETS, taken)
        await opsync.delete(SECRETS, "managed", namespace)


async def test_with_watched_namespaces_the_policy_refuses_every_other_namespace(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    values = {"watchNamespace": [namespace]}
    async with installed_chart(control_plane, namespace, values) as chart:
        policy = next(o for o in chart.objects if o["kind"] == "ValidatingAdmissionPolicy")
        assert f'request.namespace in ["{namespace}"]' in [v["expression"] for v in policy["spec"]["validations"]]


async def test_the_lease_permissions_name_opsyncs_lease_only(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    async with (
        installed_chart(control_plane, namespace) as chart,
        await Client.from_kubeconfig(chart.kubeconfig) as opsync,
    ):
        lease = ("coordination.k8s.io", "leases")
        assert await allowed(opsync, (*lease, "update"), namespace, "c26807fd.onepassword.com")
        assert not await allowed(opsync, (*lease, "update"), namespace, "another-controllers-lease")
        assert not await allowed(opsync, (*lease, "get"), namespace, "another-controllers-lease")
        assert await allowed(opsync, (*lease, "create"), namespace)


def connect_egress(objects: list[KubeObject]) -> list[KubeObject]:
    """The peers of the NetworkPolicy's egress rule for Connect (the last one: after DNS and the API)."""
    rules = one(objects, "NetworkPolicy")["spec"]["egress"]
    peers: list[KubeObject] = rules[2]["to"]
    return peers


CONNECT_PODS = {"matchLabels": {"app": "onepassword-connect"}}


def pods_in(namespace: str) -> list[KubeObject]:
    named = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return [{"podSelector": CONNECT_PODS, "namespaceSelector": named}]


@pytest.mark.parametrize(
    ("host", "extra", "peers"),
    [
        (
            "http://onepassword-connect.onepassword:8080",
            {},
            pods_in("onepassword"),
        ),
        (
            "https://connect.vault-ns.svc.cluster.local:8443",
            {},
            pods_in("vault-ns"),
        ),
        (
            "http://onepassword-connect:8080",
            {},
            pods_in("opsync-system"),
        ),
        ("https://10.1.2.3:8443", {}, [{"ipBlock": {"cidr": "10.1.2.3/32"}}]),
        ("https://connect.example.com", {"cidr": "203.0.113.0/24"}, [{"ipBlock": {"cidr": "203.0.113.0/24"}}]),
    ],
    ids=["service-in-namespace", "service-fqdn", "service-in-release-namespace", "ip", "external-cidr"],
)
async def test_the_network_policy_lets_opsync_reach_connect_only(
    host: str, extra: dict[str, Any], peers: list[KubeObject]
) -> None:
    """Issue 16: egress on Connect's port was open to any address; now it reaches Connect's pods or its CIDR."""
    values = {"connect": {"host": host}, "networkPolicy": {"enabled": True, "connect": extra}}
    assert connect_egress(await render(values)) == peers


async def test_a_connect_the_network_policy_cannot_place_is_refused_with_what_to_set() -> None:
    with pytest.raises(CommandError) as refused:
        await render({"connect": {"host": "https://connect.example.com"}, "networkPolicy": {"enabled": True}})
    assert "set networkPolicy.connect.cidr" in refused.value.stderr
