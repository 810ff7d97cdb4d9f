"""The operator's own resource kinds: the CRDs it serves (``crds/``).

The framework's ``opsync.resources`` holds the built-in Kubernetes kinds only; these belong to the operator.
"""

from __future__ import annotations

from opsync.resources import Resource

ONEPASSWORDITEMS = Resource("onepassword.com", "v1", "OnePasswordItem", "onepassworditems")
ONEPASSWORDACCESSPOLICIES = Resource(
    "onepassword.com", "v1alpha1", "OnePasswordAccessPolicy", "onepasswordaccesspolicies", namespaced=False
)
ROLLOUTS = Resource("argoproj.io", "v1alpha1", "Rollout", "rollouts")
"""Argo Rollouts' workload kind: restarted like the built-in ones; its CRD may be missing (then none exist)."""
