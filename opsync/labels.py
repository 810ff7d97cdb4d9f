"""Kubernetes label selectors (the structured ``LabelSelector`` form), matched locally."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class InvalidSelectorError(ValueError):
    """A selector the API server would refuse (unknown operator, values where none are allowed...)."""


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy ``selector`` (``matchLabels`` and ``matchExpressions``, ANDed).

    As in Kubernetes, an empty selector matches everything and a missing one (None) matches nothing.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise InvalidSelectorError(f"unknown label selector operator {operator!r}")
        if operator in ("In", "NotIn") and not values:
            raise InvalidSelectorError(f"operator {operator} needs at least one value")
        if not ok:
            return False
    return True
