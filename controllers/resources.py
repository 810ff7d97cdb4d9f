"""The operator's own resource kinds: the CRDs it serves (``crds/``).

The framework's ``opsync.resources`` holds the built-in Kubernetes kinds only; these belong to the operator.
"""

from __future__ import annotations

from opsync.resources import Resource

ONEPASSWORDITEMS = Resource("onepassword.com", "v1", "OnePasswordItem", "onepassworditems")
ONEPASSWORDACCESSPOLICIES = Resource(
    "onepassword.com", "v1alpha1", "OnePasswordAccessPolicy", "onepasswordaccesspolicies", namespaced=False
)
