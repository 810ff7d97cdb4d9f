"""The emulator's building blocks: filters, JSON Patch, generated values, TOTP codes, ids, data files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from onepassword_access.emulator.data import EmulatorData, parse_data
from onepassword_access.emulator.items import (
    ApiProblem,
    apply_patch,
    generate_value,
    normalise,
    render,
    rfc3339,
    stable_id,
    totp_code,
)
from onepassword_access.emulator.scim import parse_filter
from onepassword_access.emulator.store import Store
from onepassword_access.paths import looks_like_id

RECORD: dict[str, list[str]] = {"title": ["Item Title"], "tag": ["k8s", "Team-A"]}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ('title eq "Item Title"', True),
        ('title eq "item title"', True),  # eq ignores case
        ('title eq "Item"', False),
        ('title co "em tit"', True),
        ('title sw "item"', True),
        ('tag eq "team-a"', True),
        ('tag eq "team"', False),
        ('title eq "x" or tag eq "k8s"', True),
        ('title eq "x" and tag eq "k8s"', False),
        ('title eq "x" and tag eq "y" or tag eq "k8s"', True),  # and binds tighter
        ('TITLE EQ "item title"', True),
    ],
)
def test_filters(text: str, matches: bool) -> None:
    assert parse_filter(text, ("title", "tag"))(RECORD) is matches


def test_filter_values_unescape_quotes_and_backslashes() -> None:
    assert parse_filter(r'title eq "say \"hi\" \\o/"', ("title",))({"title": ['say "hi" \\o/']})


@pytest.mark.parametrize(
    "text", ['title eq "x', "title eq x", 'name eq "x"', 'title gt "x"', 'title eq "x" nand', 'title eq "x" and', "'x'"]
)
def test_bad_filters_are_400(text: str) -> None:
    with pytest.raises(ApiProblem) as caught:
        parse_filter(text, ("title", "tag"))
    assert caught.value.status == 400


def stored() -> dict[str, object]:
    return normalise(
        {
            "title": "t",
            "category": "LOGIN",
            "fields": [
                {"label": "username", "value": "u", "purpose": "USERNAME"},
                {"id": "customfieldidcustomfieldid", "label": "host", "value": "h", "type": "string"},
            ],
        },
        item_id="i" * 26,
        vault_id="v" * 26,
        existing=None,
    )


def test_writes_are_normalised_as_connect_does() -> None:
    doc = stored()
    fields = doc["fields"]
    assert isinstance(fields, list)
    assert fields[0]["id"] == "username"  # built-in ids for built-in purposes
    assert fields[1]["type"] == "STRING"  # lowercase types are accepted
    assert doc["vault"] == {"id": "v" * 26}


@pytest.mark.parametrize("category", ["DOCUMENT", "CUSTOM", "NOPE", ""])
def test_categories_that_cannot_be_created_are_400(category: str) -> None:
    with pytest.raises(ApiProblem, match="Invalid item category"):
        normalise({"title": "t", "category": category}, item_id="i" * 26, vault_id="v" * 26, existing=None)


def test_generated_values_follow_the_recipe() -> None:
    value, entropy = generate_value({"length": 12, "characterSets": ["DIGITS"], "excludeCharacters": "0123"})
    assert len(value) == 12
    assert set(value) <= set("456789")
    assert entropy == pytest.approx(12 * 2.585, rel=0.01)
    doc = normalise(
        {"category": "PASSWORD", "fields": [{"purpose": "PASSWORD", "generate": True}]},
        item_id="i" * 26,
        vault_id="v" * 26,
        existing=None,
    )
    field = doc["fields"][0]
    assert len(field["value"]) == 32 and field["entropy"] > 100 and "generate" not in field
    with pytest.raises(ApiProblem):
        generate_value({"length": 65})


def test_patch_addresses_fields_by_id() -> None:
    doc = stored()
    patched = apply_patch(
        doc,
        [
            {"op": "replace", "path": "/fields/username/value", "value": "new-user"},
            {"op": "remove", "path": "/fields/customfieldidcustomfieldid"},
            {"op": "add", "path": "/fields", "value": {"label": "added", "value": "a"}},
            {"op": "replace", "path": "/title", "value": "renamed"},
            {"op": "add", "path": "/tags/-", "value": "new-tag"},
        ],
    )
    assert patched["title"] == "renamed"
    assert patched["tags"] == ["new-tag"]
    assert [f.get("label") for f in patched["fields"]] == ["username", "added"]
    assert patched["fields"][0]["value"] == "new-user"
    assert doc["title"] == "t"  # the stored item is untouched until the write is committed


def test_patch_can_replace_every_field_or_the_whole_item() -> None:
    doc = stored()
    assert apply_patch(doc, [{"op": "add", "path": "/fields", "value": [{"label": "x"}]}])["fields"] == [{"label": "x"}]
    whole = apply_patch(doc, [{"op": "replace", "path": "/", "value": {"title": "new", "category": "LOGIN"}}])
    assert whole["title"] == "new" and whole["id"] == "i" * 26


@pytest.mark.parametrize(
    "operations",
    [
        {"op": "add"},
        [{"op": "move", "path": "/title"}],
        [{"op": "replace", "path": "/version", "value": 3}],
        [{"op": "remove", "path": "/fields/nosuchfield"}],
        [{"op": "replace", "path": "/nosuch/deep", "value": 1}],
        [{"op": "replace", "path": "title", "value": 1}],
    ],
)
def test_bad_patches_are_400(operations: object) -> None:
    with pytest.raises(ApiProblem) as caught:
        apply_patch(stored(), operations)
    assert caught.value.status == 400


@pytest.mark.parametrize(("now", "code"), [(59, "94287082"), (1111111109, "07081804"), (2000000000, "69279037")])
def test_totp_codes_match_rfc_6238(now: int, code: str) -> None:
    uri = "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=8"
    assert totp_code(uri, now) == code


def test_unusable_otp_values_give_no_code() -> None:
    assert totp_code("otpauth://totp/x", 0) is None
    assert totp_code("not base32 !", 0) is None
    assert totp_code("JBSWY3DPEHPK3PXP", 0) is not None


def test_rendering_leaves_out_empty_values_and_adds_totp() -> None:
    doc = normalise(
        {
            "title": "",
            "category": "LOGIN",
            "fields": [{"label": "otp", "type": "OTP", "value": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"}],
        },
        item_id="i" * 26,
        vault_id="v" * 26,
        existing=None,
    )
    doc["version"] = 0
    out = render(doc, summary=False, now=0)
    assert "tags" not in out and "favorite" not in out and "urls" not in out
    assert out["title"] == "" and out["version"] == 0
    assert out["fields"][0]["totp"].isdigit()
    assert "fields" not in render(doc, summary=True, now=0)


def test_ids_and_timestamps_look_like_connect_s() -> None:
    assert looks_like_id(stable_id("vault", "Demo"))
    assert stable_id("vault", "Demo") == stable_id("vault", "Demo") != stable_id("vault", "demo")
    assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05Z"
    assert rfc3339(datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == "2024-01-02T03:04:05.12Z"


def test_seeded_data_is_deterministic() -> None:
    data = {"tokens": [{"token": "t"}], "vaults": [{"name": "V", "items": [{"title": "a"}, {"title": "a"}]}]}
    first, second = Store(parse_data(data)), Store(parse_data(data))
    assert [v.items.keys() for v in first.vaults.values()] == [v.items.keys() for v in second.vaults.values()]
    (vault,) = first.vaults.values()
    a, b = vault.items.values()
    assert a["id"] != b["id"]
    assert a["createdAt"] < b["createdAt"]  # file order is creation order


@pytest.mark.parametrize(
    "data",
    [
        {"vaults": []},  # no token
        {"tokens": [{"token": "t"}], "vaults": [{"name": "V", "items": [{"title": "x", "colour": "red"}]}]},
        {"tokens": [{"token": "t"}], "vaults": [{"name": "V", "items": [{"title": "x", "files": [{"name": "f"}]}]}]},
        {"tokens": [{"token": "t", "vaults": {"V": "write"}}]},
    ],
)
def test_bad_data_files_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EmulatorData.model_validate(data)


def test_tokens_must_name_existing_vaults() -> None:
    with pytest.raises(KeyError):
        Store(parse_data({"tokens": [{"token": "t", "vaults": {"Nope": "r"}}]}))
