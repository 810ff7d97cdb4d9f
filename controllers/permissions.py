"""Every Kubernetes permission ``opsync run`` needs, as data.

The one list: ``opsync check`` makes a SelfSubjectAccessReview per entry, and the Helm chart's rules
(``charts/opsync/templates/rbac.yaml``) grant exactly these, which ``tests/integration/chart/test_chart.py`` enforces.
Compared with the Go operator's ClusterRole this drops everything it never used (services, configmaps,
replicasets, servicemonitors...), adds StatefulSets, DaemonSets, CronJobs and Argo Rollouts, which opsync also
syncs and restarts, and reads (never writes) Jobs and Pods, which only keep a Secret they use from deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controllers.crdschema import ITEMS_CRD


class Scope(StrEnum):
    """Where a permission is needed."""

    WATCHED = "watched"
    """In every watched namespace (``WATCH_NAMESPACE``), or cluster-wide when all namespaces are watched."""
    WATCHED_BY_NAME = "watched-by-name"
    """The watched Namespace objects themselves. With ``WATCH_NAMESPACE`` set, opsync lists and watches each one
    by name (``fieldSelector=metadata.name=<ns>``), which RBAC grants with ``resourceNames``; otherwise all."""
    CLUSTER = "cluster"
    """Always cluster-wide: the resource is cluster-scoped (a ClusterRole, even when namespaces are listed)."""
    LEADER_ELECTION = "leader-election"
    """In the namespace of the leader-election Lease, only with ``--leader-elect``."""
    LEADER_ELECTION_LEASE = "leader-election-lease"
    """As ``LEADER_ELECTION``, on the Lease named ``--leader-election-id`` only (``resourceNames``; a
    ``create`` cannot be limited so, as its name is not known when it is authorized)."""
    OPERATOR_NAMESPACE = "operator-namespace"
    """In the namespace opsync runs in (``POD_NAMESPACE``)."""


@dataclass(frozen=True, slots=True)
class Permission:
    """Verbs on one resource (or subresource) of one API group, where ``scope`` says, for the reason ``why``."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope = Scope.WATCHED
    subresource: str = ""
    why: str = ""
    names: tuple[str, ...] = ()
    """Only these objects (RBAC ``resourceNames``); empty: all of them."""

    @property
    def display(self) -> str:
        """``deployments.apps``, ``onepassworditems.onepassword.com/status``, ``secrets``."""
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{name}/{self.subresource}" if self.subresource else name


REQUIRED: tuple[Permission, ...] = (
    Permission(
        "onepassword.com",
        "onepassworditems",
        ("get", "list", "watch", "patch"),
        why="read OnePasswordItems; remove the Go operator's finalizer",
    ),
    Permission("onepassword.com", "onepassworditems", ("patch",), subresource="status", why="report Ready"),
    Permission(
        "onepassword.com",
        "onepassworditems",
        ("update",),
        subresource="finalizers",
        why="blockOwnerDeletion on a Secret's owner reference, where OwnerReferencesPermissionEnforcement is on",
    ),
    Permission(
        "",
        "secrets",
        ("get", "list", "watch", "create", "update", "delete"),
        why="write the Secrets; get checks who owns an existing Secret before taking it over",
    ),
    Permission(
        "apps",
        "deployments",
        ("get", "list", "watch", "patch"),
        why="read item annotations and Secret references; restart; remove the Go operator's finalizer",
    ),
    Permission("apps", "statefulsets", ("get", "list", "watch", "patch"), why="as deployments"),
    Permission("apps", "daemonsets", ("get", "list", "watch", "patch"), why="as deployments"),
    Permission("batch", "cronjobs", ("get", "list", "watch", "patch"), why="as deployments (the jobTemplate)"),
    Permission(
        "argoproj.io",
        "rollouts",
        ("get", "list", "watch", "patch"),
        why="as deployments (spec.restartAt); unused while the Argo Rollouts CRD is not installed",
    ),
    Permission("batch", "jobs", ("list", "watch"), why="Jobs using a Secret keep it from being deleted"),
    Permission(
        "",
        "pods",
        ("list", "watch"),
        why="bare Pods using a Secret keep it from being deleted (the cache keeps the spec of bare Pods only)",
    ),
    Permission("", "events", ("create", "patch"), why="report failures and restarts"),
    Permission(
        "",
        "namespaces",
        ("get", "list", "watch"),
        scope=Scope.WATCHED_BY_NAME,
        why="auto-restart annotations and labels of the watched Namespaces",
    ),
    Permission(
        "onepassword.com",
        "onepasswordaccesspolicies",
        ("get", "list", "watch"),
        scope=Scope.CLUSTER,
        why="which namespaces may sync which vaults",
    ),
    Permission("coordination.k8s.io", "leases", ("create",), scope=Scope.LEADER_ELECTION, why="leader election"),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get",),
        scope=Scope.CLUSTER,
        names=(ITEMS_CRD,),
        why="read the OnePasswordItem CRD's schema at start-up, to warn when it is older than opsync's",
    ),
    Permission(
        "coordination.k8s.io",
        "leases",
        ("get", "update"),
        scope=Scope.LEADER_ELECTION_LEASE,
        why="leader election, on opsync's Lease only",
    ),
)

MANAGE_CONNECT: tuple[Permission, ...] = (
    Permission(
        "",
        "services",
        ("get", "create"),
        scope=Scope.OPERATOR_NAMESPACE,
        why="MANAGE_CONNECT=true: create Connect's Service when absent (never updated)",
    ),
    Permission(
        "apps",
        "deployments",
        ("get", "create"),
        scope=Scope.OPERATOR_NAMESPACE,
        why="MANAGE_CONNECT=true: create Connect's Deployment when absent (never updated)",
    ),
)
"""Needed besides ``REQUIRED`` only with ``MANAGE_CONNECT=true`` (``controllers.connect_setup``)."""
