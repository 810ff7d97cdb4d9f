"""Property tests: the sanitisers give something the API server accepts, or None, for any string."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from controllers.desired import desired_secret
from controllers.sanitisers import is_valid_secret_key, is_valid_secret_name, secret_data_key, secret_name
from controllers.secretdata import InvalidSecretError, ItemField, ItemFile, ItemInput, ItemUrl, build_secret_data

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


# --- whole items: every key made is valid, every label left out is reported, and no value is ever quoted ---------

VALUE_MARK = "§"  # never in labels below, so a value found in a warning is a leak
labels = st.one_of(st.text(max_size=40).filter(lambda s: VALUE_MARK not in s), tricky)
values = st.text(alphabet="0123456789abc", max_size=8).map(lambda v: VALUE_MARK + v)


@given(
    urls=st.lists(st.tuples(labels, values, st.booleans()), max_size=5),
    fields=st.lists(st.tuples(labels, values), max_size=8),
    files=st.lists(st.tuples(labels, st.binary(max_size=8)), max_size=3),
    allow_empty=st.booleans(),
)
def test_item_data_has_only_valid_keys_and_reports_what_it_skips(
    urls: list[tuple[str, str, bool]], fields: list[tuple[str, str]], files: list[tuple[str, bytes]], allow_empty: bool
) -> None:
    item = ItemInput(
        id="i",
        vault_id="v",
        version=1,
        urls=tuple(ItemUrl(href, label, primary) for label, href, primary in urls),
        fields=tuple(ItemField(label, value) for label, value in fields),
        files=tuple(ItemFile(str(n), name) for n, (name, _) in enumerate(files)),
        file_contents={str(n): content for n, (_, content) in enumerate(files)},
    )
    built = build_secret_data(item, allow_empty=allow_empty)
    for key in built.data:
        assert is_valid_secret_key(key) and secret_data_key(key) == key
    text = " ".join(built.warnings)
    assert VALUE_MARK not in text
    for label, _ in fields:
        if secret_data_key(label) is None and label.strip():
            assert repr(label) in text  # skipped with a warning that names it


@given(anything)
@example("..")
@example("-")
def test_a_desired_secret_has_a_valid_name_or_is_refused(name: str) -> None:
    item = ItemInput(id="i", vault_id="v", version=1, fields=(ItemField("k", "v"),))
    try:
        desired = desired_secret(name=name, namespace="default", item=item)
    except InvalidSecretError as err:
        assert secret_name(name) is None
        assert "cannot be made a valid Secret name" in str(err)
    else:
        assert is_valid_secret_name(desired.secret["metadata"]["name"])
