"""Kubernetes resource kinds and object keys, shared by the client, the cache and controllers.

Only built-in kinds live here; an operator defines its own CRD kinds (``controllers.resources``).

Objects are plain ``dict`` values decoded from the API server's JSON (``KubeObject``): no generated model
classes, so memory follows what is cached and code reads exactly the fields the API documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KubeObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource (group, version, kind, plural) and whether it lives in a namespace."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path: ``/api/v1/namespaces/ns/secrets/name/status`` and friends.

        ``namespace=None`` on a namespaced resource means "across all namespaces" (list and watch only).
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True, slots=True, order=True)
class NamespacedName:
    """The key of an object: what a work queue holds and what a reconciler receives."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def of(cls, obj: KubeObject) -> NamespacedName:
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace") or "", meta["name"])


SECRETS = Resource("", "v1", "Secret", "secrets")
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps")
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
EVENTS = Resource("", "v1", "Event", "events")
SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")
PODS = Resource("", "v1", "Pod", "pods")
DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments")
STATEFULSETS = Resource("apps", "v1", "StatefulSet", "statefulsets")
DAEMONSETS = Resource("apps", "v1", "DaemonSet", "daemonsets")
REPLICASETS = Resource("apps", "v1", "ReplicaSet", "replicasets")
JOBS = Resource("batch", "v1", "Job", "jobs")
CRONJOBS = Resource("batch", "v1", "CronJob", "cronjobs")
LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "Role", "roles")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings")
CLUSTERROLES = Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False)
CLUSTERROLEBINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
)
CRDS = Resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False)
SELF_SUBJECT_ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", namespaced=False
)
