"""Timestamps as the Kubernetes API writes them: RFC 3339 in UTC with a ``Z``.

``metav1.Time`` (conditions, Events, annotations) has whole seconds; ``metav1.MicroTime`` (Leases) has
microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as a ``metav1.Time``: ``2024-05-01T12:00:00Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as a ``metav1.MicroTime``: ``2024-05-01T12:00:00.000000Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
