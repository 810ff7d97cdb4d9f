"""controllers.shaping: each shaping field, the rules where two meet (docs/shaping.md), and properties."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.constants import EXTRA_ITEMS_ANNOTATION, ConditionReason
from controllers.desired import SecretMetadata, data_version, desired_from_existing, desired_secret, opi_metadata
from controllers.merge import plan_update
from controllers.sanitisers import is_valid_secret_key
from controllers.secretdata import InvalidSecretError, ItemField, ItemFile, ItemInput, ItemUrl, build_secret_data
from controllers.shaping import (
    FieldNotFoundError,
    InvalidSpecError,
    KeyConflictError,
    Shaping,
    item_paths,
    shape,
    shaping_of,
    source_data,
)
from controllers.templating import TemplateError

DB = ItemInput(
    id="db",
    vault_id="v",
    version=3,
    title="Database",
    urls=(ItemUrl("https://db.example", "website", True),),
    fields=(
        ItemField("username", "app"),
        ItemField("password", "pw-main"),
        ItemField("host", "primary.example", "primary"),
        ItemField("host", "replica.example", "replica"),
    ),
    files=(ItemFile("f1", "ca.pem"),),
    file_contents={"f1": b"CERT"},
)
CACHE = ItemInput(id="cache", vault_id="v", version=7, fields=(ItemField("password", "pw-cache"),))


def shaped(spec: dict[str, Any], *extra: ItemInput, **kwargs: Any) -> dict[str, str]:
    shaping = shaping_of(spec)
    assert shaping is not None
    result = shape(shaping, DB, list(extra), secret_type="", labels={}, annotations={}, **kwargs)
    return {key: value.decode() for key, value in result.data.items()}


def test_an_item_without_shaping_fields_is_not_shaped() -> None:
    assert shaping_of({"itemPath": "vaults/v/items/i"}) is None
    assert shaping_of(None) is None
    assert shaping_of({"itemPath": "vaults/v/items/i", "onlyMapped": False}) is not None


def test_field_mapping_renames_listed_and_keeps_the_others() -> None:
    data = shaped({"fieldMapping": {"password": "DB_PASSWORD", "ca.pem": "ca.crt", "website": "url"}})
    assert data == {
        "url": "https://db.example",
        "username": "app",
        "DB_PASSWORD": "pw-main",
        "host": "replica.example",
        "ca.crt": "CERT",
    }


def test_only_mapped_keeps_only_the_mapped() -> None:
    assert shaped({"fieldMapping": {"password": "DB_PASSWORD"}, "onlyMapped": True}) == {"DB_PASSWORD": "pw-main"}


def test_section_prefix_keeps_same_labels_apart() -> None:
    data = shaped({"sections": "prefix"})
    assert data["primary-host"] == "primary.example"
    assert data["replica-host"] == "replica.example"
    assert "host" not in data
    assert data["username"] == "app"  # no section, no prefix


def test_section_prefix_is_sanitised_with_the_same_rules() -> None:
    item = ItemInput(id="i", vault_id="v", version=1, fields=(ItemField("first host", "h", "Main DB!"),))
    result = source_data(item, source="the item", mapping={}, section_prefix=True)
    assert result.data == {"Main-DB--first-host": b"h"}  # "Main DB!-first host", sanitised as one label


def test_section_prefix_leaves_unlabelled_fields_out_as_before() -> None:
    item = ItemInput(id="i", vault_id="v", version=1, fields=(ItemField("", "x", "s"), ItemField("k", "v", "s")))
    assert source_data(item, source="the item", mapping={}, section_prefix=True).data == {"s-k": b"v"}


def test_a_prefix_making_an_invalid_key_is_refused() -> None:
    item = ItemInput(id="i", vault_id="v", version=1, fields=(ItemField(".hidden", "x"),))
    with pytest.raises(InvalidSpecError, match=r"'\.\.hidden'"):
        source_data(item, source="the item", mapping={}, prefix=".")


def test_mapping_by_section_picks_one_field() -> None:
    assert shaped({"fieldMapping": {"replica/host": "REPLICA"}, "onlyMapped": True}) == {"REPLICA": "replica.example"}


def test_unknown_label_in_field_mapping() -> None:
    with pytest.raises(FieldNotFoundError, match="'nope'") as err:
        shaped({"fieldMapping": {"nope": "X", "password": "P"}})
    assert err.value.reason is ConditionReason.FIELD_NOT_FOUND


def test_a_mapped_key_clashing_with_another_entry_is_a_conflict() -> None:
    with pytest.raises(KeyConflictError, match="'username'"):
        shaped({"fieldMapping": {"password": "username"}})
    with pytest.raises(KeyConflictError, match="'same'"):
        shaped({"fieldMapping": {"password": "same", "username": "same"}})
    # unless the other entry is left out
    assert shaped({"fieldMapping": {"password": "username"}, "onlyMapped": True}) == {"username": "pw-main"}


def test_extra_items_merge_after_the_main_one_with_prefix() -> None:
    spec = {"extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "cache-"}], "onlyMapped": False}
    data = shaped(spec, CACHE)
    assert data["cache-password"] == "pw-cache"
    assert data["password"] == "pw-main"


def test_prefix_does_not_apply_to_mapped_keys() -> None:
    spec = {"extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "c-", "fieldMapping": {"password": "P"}}]}
    assert shaped(spec, CACHE)["P"] == "pw-cache"


def test_two_items_giving_a_key_is_a_conflict_naming_it() -> None:
    with pytest.raises(KeyConflictError) as err:
        shaped({"extraItems": [{"itemPath": "vaults/v/items/cache"}]}, CACHE)
    assert "'password'" in str(err.value) and "spec.extraItems[0]" in str(err.value)
    assert "pw-" not in str(err.value)


def test_template_sees_items_sections_urls_files_and_metadata() -> None:
    template = (
        "{{ fields.username }} {{ sections.replica.host }} {{ url }} {{ files['ca.pem'] }} "
        "{{ item.title }} {{ item.version }} {{ items[1].fields.password }}"
    )
    spec = {"extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "c-"}], "template": {"data": {"T": template}}}
    assert shaped(spec, CACHE)["T"] == "app replica.example https://db.example CERT Database 3 pw-cache"


def test_template_replaces_a_default_key_with_a_warning() -> None:
    shaping = shaping_of({"template": {"data": {"username": "{{ fields.username | upper }}"}}})
    assert shaping is not None
    result = shape(shaping, DB, [], secret_type="", labels={}, annotations={})
    assert result.data["username"] == b"APP"
    assert any("'username'" in warning for warning in result.warnings)


def test_template_and_field_mapping_on_one_key_is_a_conflict() -> None:
    with pytest.raises(KeyConflictError, match="'P'"):
        shaped({"fieldMapping": {"password": "P"}, "template": {"data": {"P": "x"}}})


def test_template_syntax_errors_are_found_when_the_spec_is_read() -> None:
    with pytest.raises(TemplateError, match=r"'K'.*line 2"):
        shaping_of({"template": {"data": {"K": "a\n{% if %}"}}})


def test_template_type_and_top_level_type_must_agree() -> None:
    shaping = shaping_of({"template": {"type": "kubernetes.io/basic-auth"}})
    assert shaping is not None
    assert shape(shaping, DB, [], secret_type="", labels={}, annotations={}).secret_type == "kubernetes.io/basic-auth"
    same = shape(shaping, DB, [], secret_type="kubernetes.io/basic-auth", labels={}, annotations={})
    assert same.secret_type == "kubernetes.io/basic-auth"
    with pytest.raises(InvalidSpecError, match="disagree"):
        shape(shaping, DB, [], secret_type="Opaque", labels={}, annotations={})


def test_metadata_precedence_and_copy_item_labels() -> None:
    opi = {"metadata": {"labels": {"argocd.argoproj.io/instance": "app", "team": "item"}}}
    spec = {
        "secretMetadata": {"labels": {"team": "spec", "a": "1"}, "annotations": {"note": "spec"}},
        "template": {"metadata": {"labels": {"a": "template"}, "annotations": {"note": "template"}}},
    }
    base = opi_metadata(opi)
    for copy, expected in ((True, {"argocd.argoproj.io/instance": "app", "team": "spec", "a": "template"}),
                           (False, {"team": "spec", "a": "template"})):  # fmt: skip
        shaping = shaping_of({**spec, "copyItemLabels": copy})
        assert shaping is not None
        result = shape(shaping, DB, [], secret_type="", labels=base.labels, annotations=base.annotations)
        assert result.labels == expected
        assert result.annotations == {"note": "template"}


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"fieldMapping": {"password": "bad key"}}, "'bad key'"),
        ({"template": {"data": {"..x": "v"}}}, "'..x'"),
        ({"extraItems": [{"itemPath": "nope"}]}, "extraItems[0].itemPath"),
        ({"extraItems": [{"itemPath": "vaults/v/items/i", "prefix": "a b"}]}, "extraItems[0].prefix"),
        ({"secretMetadata": {"labels": {"opsync.dev/managed": "false"}}}, "'opsync.dev/managed'"),
        ({"secretMetadata": {"annotations": {"operator.1password.io/item-version": "9"}}}, "item-version"),
        ({"sections": "suffix"}, "spec.sections"),
        ({"onlyMapped": "maybe"}, "spec.onlyMapped"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidSpecError) as err:
        shaping_of(spec)
    assert named in str(err.value)
    assert err.value.reason is ConditionReason.INVALID_SPEC


def test_item_paths_of_a_spec() -> None:
    spec = {"itemPath": "vaults/v/items/a", "extraItems": [{"itemPath": "vaults/v/items/b"}, "junk", {}]}
    assert item_paths(spec) == ["vaults/v/items/a", "vaults/v/items/b"]
    assert item_paths({"extraItems": "junk"}) == []


# --- The desired Secret: versions of every item, byte-for-byte the Go Secret without shaping ------------------


def test_desired_secret_records_extra_item_versions() -> None:
    shaping = shaping_of({"extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "c-"}]})
    desired = desired_secret(name="app", namespace="ns", item=DB, shaping=shaping, extra_items=[CACHE])
    annotations = desired.secret["metadata"]["annotations"]
    assert annotations["operator.1password.io/item-version"] == "3"
    assert json.loads(annotations[EXTRA_ITEMS_ANNOTATION]) == {"vaults/v/items/cache": 7}
    assert annotations["opsync.dev/data-version"] == "vaults/v/items/db@3,vaults/v/items/cache@7"


def test_a_change_of_an_extra_item_is_an_update_not_a_repair() -> None:
    shaping = shaping_of({"extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "c-"}]})
    before = desired_secret(name="app", namespace="ns", item=DB, shaping=shaping, extra_items=[CACHE]).secret
    rotated = replace(CACHE, version=8, fields=(ItemField("password", "pw-cache-2"),))
    after = desired_secret(name="app", namespace="ns", item=DB, shaping=shaping, extra_items=[rotated])
    update = plan_update(before, after)
    assert update is not None and update.reason == "update"
    assert update.secret["metadata"]["annotations"]["opsync.dev/data-version"].endswith("cache@8")


def test_a_shaped_secret_is_trusted_without_its_items_only_as_opsync_wrote_it() -> None:
    spec = {
        "extraItems": [{"itemPath": "vaults/v/items/cache", "prefix": "c-"}],
        "template": {"data": {"url": "postgres://{{ fields.password }}"}, "metadata": {"labels": {"tier": "db"}}},
        "secretMetadata": {"annotations": {"team": "a"}},
    }
    shaping = shaping_of(spec)
    assert shaping is not None
    metadata = SecretMetadata({"app": "x"}, {})
    written = desired_secret(
        name="app", namespace="ns", item=DB, metadata=metadata, shaping=shaping, extra_items=[CACHE]
    ).secret
    existing = {**written, "metadata": {**written["metadata"], "resourceVersion": "7"}}

    def trusted(secret: dict[str, Any], shaping: Any = shaping, **changes: Any) -> Any:
        return desired_from_existing(secret, name="app", namespace="ns", metadata=metadata, shaping=shaping, **changes)

    same = trusted(existing)
    assert same is not None and plan_update(existing, same) is None
    # the spec's metadata (not the items') is recomputed: another label asked for is an update of metadata only
    relabelled = trusted(existing, shaping_of({**spec, "template": {**spec["template"], "metadata": {}}}))
    assert relabelled is not None and plan_update(existing, relabelled) is not None
    assert relabelled.secret["data"] == existing["data"]
    # not one recorded version per extra item, garbled, edited by hand, or unshaped now: fetch the items
    assert trusted(existing, shaping_of({**spec, "extraItems": []})) is None
    assert trusted(existing, None) is None
    annotations = existing["metadata"]["annotations"]
    garbled = {
        **existing,
        "metadata": {**existing["metadata"], "annotations": {**annotations, EXTRA_ITEMS_ANNOTATION: "["}},
    }
    assert trusted(garbled) is None
    edited = {**existing, "data": {**existing["data"], "url": base64.b64encode(b"edited").decode()}}
    assert trusted(edited) is None
    assert trusted(existing, allow_empty=True) is None


def test_an_unshaped_secret_has_no_shaping_traces() -> None:
    desired = desired_secret(name="app", namespace="ns", item=DB, metadata=SecretMetadata({"l": "1"}, {}))
    annotations = desired.secret["metadata"]["annotations"]
    assert EXTRA_ITEMS_ANNOTATION not in annotations
    assert annotations["opsync.dev/data-version"] == data_version(DB.path, "3")
    data = {key: base64.b64decode(value) for key, value in desired.secret["data"].items()}
    assert data == build_secret_data(DB).data


def test_a_typed_shaped_secret_is_still_validated() -> None:
    shaping = shaping_of({"onlyMapped": True, "template": {"type": "kubernetes.io/tls"}})
    with pytest.raises(InvalidSecretError, match=r"tls\.crt"):
        desired_secret(name="app", namespace="ns", item=DB, shaping=shaping)


# --- Properties -------------------------------------------------------------------------------------------------

labels = st.text(alphabet=st.sampled_from("ab .-_/😄"), min_size=0, max_size=6)
values = st.text(alphabet="xyz", min_size=0, max_size=4).map(lambda v: "§" + v)
items = st.builds(
    lambda urls, fields: ItemInput(
        id="i",
        vault_id="v",
        version=1,
        urls=tuple(ItemUrl(href, label, primary) for label, href, primary in urls),
        fields=tuple(ItemField(label, value, section) for label, value, section in fields),
    ),
    st.lists(st.tuples(labels, values, st.booleans()), max_size=3),
    st.lists(st.tuples(labels, values, st.sampled_from(["", "s1", "s 2"])), max_size=6),
)


@given(items, st.booleans())
def test_no_shaping_gives_the_go_data(item: ItemInput, allow_empty: bool) -> None:
    assert (
        source_data(item, source="x", mapping={}, allow_empty=allow_empty).data
        == build_secret_data(item, allow_empty=allow_empty).data
    )
    result = shape(Shaping(), item, [], secret_type="", labels={"a": "b"}, annotations={}, allow_empty=allow_empty)
    assert result.data == build_secret_data(item, allow_empty=allow_empty).data
    assert result.labels == {"a": "b"}


@given(items, st.dictionaries(labels, st.sampled_from(["K1", "K2", "k.3"]), max_size=3), st.booleans(), st.booleans())
def test_shaped_keys_are_valid_and_errors_never_quote_values(
    item: ItemInput, mapping: dict[str, str], only_mapped: bool, section_prefix: bool
) -> None:
    try:
        result = source_data(item, source="x", mapping=mapping, only_mapped=only_mapped, section_prefix=section_prefix)
    except (FieldNotFoundError, KeyConflictError) as err:
        assert "§" not in str(err)
        return
    assert all(is_valid_secret_key(key) for key in result.data)
    assert "§" not in " ".join(result.warnings)
    if only_mapped:
        assert set(result.data) <= set(mapping.values())
    for target in result.mapped:
        assert target in mapping.values()


@given(items, items, st.text(alphabet="ab-", max_size=3))
def test_merging_never_overwrites(main: ItemInput, extra: ItemInput, prefix: str) -> None:
    spec = Shaping.model_validate({"extraItems": [{"itemPath": "vaults/v/items/e", "prefix": prefix}]})
    first = build_secret_data(main).data
    second = {prefix + key: value for key, value in build_secret_data(extra).data.items()}
    try:
        result = shape(spec, main, [extra], secret_type="", labels={}, annotations={})
    except KeyConflictError as err:
        clashes = sorted(first.keys() & second.keys())
        assert clashes and all(repr(key) in str(err) for key in clashes)
        assert "§" not in str(err)
        return
    assert result.data == {**first, **second}
    assert len(result.data) == len(first) + len(second)
