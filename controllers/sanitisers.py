"""Sanitisers: the Secret name and data keys the API server accepts, made from 1Password titles and labels.

They follow the Go operator's ``formatSecretName`` and ``formatSecretDataName`` (see docs/compatibility.md)
with its sharp edge fixed: a sanitiser returns a name or key the API server accepts, or None, never ``.``,
``..x`` or ``a..b``, which the Go operator sends and the API server refuses with the whole Secret.
Pure functions.
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 253
MAX_NAME_LENGTH = 253
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_KEY_INVALID_RUN = re.compile(r"[^-._a-zA-Z0-9]+")
_KEY_INVALID_ENDS = re.compile(r"\A[^-._a-zA-Z0-9]+|[^-._a-zA-Z0-9]+\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_NAME_INVALID_RUN = re.compile(r"[^-.a-z0-9]+")


def is_valid_secret_key(key: str) -> bool:
    """Whether the API server accepts ``key`` as a Secret data key (Kubernetes ``IsConfigMapKey``)."""
    return len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key) is not None and key != "." and not key.startswith("..")


def is_valid_secret_name(name: str) -> bool:
    """Whether ``name`` is a DNS-1123 subdomain, as Secret names must be."""
    return len(name) <= MAX_NAME_LENGTH and _DNS_SUBDOMAIN.fullmatch(name) is not None


def secret_data_key(label: str) -> str | None:
    """The Secret data key for a field label, URL label or file name (Go ``formatSecretDataName``), or None.

    A valid key is kept as is (case too). Otherwise invalid characters at both ends are dropped, every other
    run of them becomes one ``-`` and the result is cut to 253 characters: ``"first host"`` → ``first-host``,
    ``"😄 ice-cream type"`` → ``ice-cream-type``. None when nothing usable is left or the result is still not a
    valid key (``.``, ``..x``: the Go operator sends those and the API server refuses the whole Secret).
    """
    if is_valid_secret_key(label):
        return label
    key = _KEY_INVALID_RUN.sub("-", _KEY_INVALID_ENDS.sub("", label))[:MAX_KEY_LENGTH]
    return key if is_valid_secret_key(key) else None


def secret_name(name: str) -> str | None:
    """The Secret name for an OnePasswordItem name or ``item-name`` value (Go ``formatSecretName``), or None.

    A valid DNS-1123 subdomain is kept. Otherwise: lower-case, every run of characters outside ``[-.a-z0-9]``
    becomes ``-``, cut to 253, ``-`` and ``.`` trimmed from both ends (``"My Secret!"`` → ``my-secret``). Then,
    unlike the Go operator, dot-separated parts are repaired so the API server accepts the result: empty parts
    are dropped and ``-`` trimmed from each (``"Foo..Bar"`` → ``foo.bar``, ``"a.-b"`` → ``a.b``). None when
    nothing usable is left.
    """
    if is_valid_secret_name(name):
        return name
    # Go lower-cases rune by rune (simple case mapping): "İ" becomes "i", not Python's two-character "i̇".
    lowered = "".join(char.lower()[0] for char in name)
    go_result = _NAME_INVALID_RUN.sub("-", lowered)[:MAX_NAME_LENGTH].strip("-.")
    repaired = ".".join(part.strip("-") for part in go_result.split(".") if part.strip("-"))
    return repaired if is_valid_secret_name(repaired) else None
