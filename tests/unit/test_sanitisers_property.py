"""Property tests: the sanitisers give something the API server accepts, or None, for any string."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from controllers.secretdata import secret_data_key, secret_name

KEY = re.compile(r"[-._a-zA-Z0-9]+")
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*")

# Plenty of the characters that matter (separators, dots, case) mixed with arbitrary unicode.
tricky = st.text(alphabet=st.sampled_from("aZ09.-_ @%😄éİ\n\t/"), max_size=300)
anything = st.one_of(st.text(max_size=400), tricky)


@given(anything)
@example(".")
@example("..")
@example("..hidden")
@example("x" * 300)
def test_data_key_is_valid_or_none(label: str) -> None:
    key = secret_data_key(label)
    if key is not None:
        assert KEY.fullmatch(key)
        assert len(key) <= 253
        assert key != "." and not key.startswith("..")


@given(anything)
def test_valid_data_keys_are_kept(label: str) -> None:
    key = secret_data_key(label)
    if key is not None:
        assert secret_data_key(key) == key  # sanitising is idempotent


@given(anything)
@example("Foo..Bar")
@example("a.-b")
@example("-" * 300 + "a")
def test_secret_name_is_a_dns_subdomain_or_none(name: str) -> None:
    result = secret_name(name)
    if result is not None:
        assert DNS_SUBDOMAIN.fullmatch(result)
        assert len(result) <= 253
        assert secret_name(result) == result
