"""Kubernetes label selectors (the structured ``LabelSelector`` form), matched locally."""

from __future__ import annotations

import re
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


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")
_REQUIREMENT = re.compile(
    r"\s*(?:(?P<absent>!)\s*(?P<akey>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|!=|=)\s*(?P<value>[^\s!=,()]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)"
)


def validate_selector_string(text: str) -> str:
    """``text`` stripped if it is a label selector the API server accepts (``env=prod``, ``tier!=db``, ``team``,
    ``!legacy``, ``env in (a,b)``, ``env notin (c)``, comma-separated); else ``InvalidSelectorError``.

    Checked locally so that a bad setting stops opsync at start-up with a message, not a failing watch."""
    selector = text.strip()
    if not selector:
        raise InvalidSelectorError("is empty")
    position = 0
    while position < len(selector):
        match = _REQUIREMENT.match(selector, position)
        if match is None or match.end() == position:
            raise InvalidSelectorError(f"cannot parse {selector[position:]!r} as a label requirement")
        key = match["akey"] or match["key"]
        if not _KEY.fullmatch(key):
            raise InvalidSelectorError(f"{key!r} is not a label key")
        values = [match["value"]] if match["op"] else []
        if match["setop"]:
            values = [v.strip() for v in match["values"].split(",")]
            if not any(values):
                raise InvalidSelectorError(f"{match['setop']} needs at least one value")
        for value in values:
            if len(value) > 63 or not _VALUE.fullmatch(value):
                raise InvalidSelectorError(f"{value!r} is not a label value")
        position = match.end()
        if selector[match.end() - 1 : match.end()] == "," and position == len(selector):
            raise InvalidSelectorError("ends with a comma")
    return selector
