"""Connect's JSON objects parse with every property the operator needs, and tolerate what newer servers add."""

from __future__ import annotations

from datetime import UTC, datetime

from onepassword_access.models import FieldType, File, Item, ItemCategory, ItemSummary, Vault, VaultType

FULL_ITEM = {
    "id": "wepiqdxdzncjtnvmv5fegud4qy",
    "title": "db-credentials",
    "vault": {"id": "hfnjvi6aymbsnfc2xeeoheizda"},
    "category": "LOGIN",
    "urls": [{"label": "website", "primary": True, "href": "https://db.example.internal"}],
    "tags": ["k8s"],
    "version": 7,
    "state": "ARCHIVED",
    "createdAt": "2024-01-02T03:04:05Z",
    "updatedAt": "2024-03-04T05:06:07.123456789Z",
    "lastEditedBy": "DOIHOHSV2NHK5HMSOLCWJUXFDM",
    "sections": [{"id": "Section_47DC", "label": "database"}],
    "fields": [
        {
            "id": "password",
            "type": "CONCEALED",
            "purpose": "PASSWORD",
            "label": "password",
            "value": "Z9g",
            "entropy": 130.07,
        },
        {
            "id": "TOTP_j5xk",
            "type": "OTP",
            "label": "otp",
            "value": "otpauth://totp/demo?secret=JBSW",
            "totp": "134253",
        },
        {"id": "k4yq", "section": {"id": "Section_47DC"}, "type": "STRING", "label": "host", "value": "db"},
    ],
    "files": [
        {
            "id": "fooaktb2fvbvdkarwm2crklmei",
            "name": "ca.pem",
            "size": 1289,
            "content_path": "/v1/vaults/h/items/w/files/f/content",
            "section": {"id": "Section_47DC"},
        }
    ],
}


def test_a_full_item_keeps_what_the_operator_uses() -> None:
    item = Item.model_validate(FULL_ITEM)
    assert item.version == 7
    assert item.state == "ARCHIVED"
    assert item.tags == ["k8s"]
    assert item.urls[0].label == "website"
    assert item.urls[0].primary
    assert item.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert item.updated_at is not None and item.updated_at.microsecond == 123456
    assert item.fields[1].type == FieldType.OTP
    assert item.fields[1].totp == "134253"
    assert item.fields[2].section is not None and item.fields[2].section.id == "Section_47DC"
    assert item.files[0].content_path.endswith("/content")
    assert item.files[0].size == 1289


def test_unknown_enum_values_and_keys_are_accepted_and_kept() -> None:
    item = Item.model_validate(
        {
            **FULL_ITEM,
            "category": "CRYPTO_WALLET",
            "newThing": {"a": 1},
            "fields": [{"id": "x", "type": "PASSKEY", "purpose": "LOGIN_CODE", "value": "v"}],
        }
    )
    assert item.category == "CRYPTO_WALLET"
    assert item.fields[0].type == "PASSKEY"
    assert item.fields[0].purpose == "LOGIN_CODE"
    assert item.to_wire()["newThing"] == {"a": 1}
    assert Item.model_validate(FULL_ITEM).category is ItemCategory.LOGIN


def test_only_ids_are_required() -> None:
    summary = ItemSummary.model_validate({"id": "a" * 26, "vault": {"id": "b" * 26}})
    assert (summary.title, summary.tags, summary.urls, summary.version, summary.state) == ("", [], [], 0, None)
    vault = Vault.model_validate({"id": "c" * 26, "type": "SHARED_SOMEHOW"})
    assert (vault.content_version, vault.type) == (0, "SHARED_SOMEHOW")
    assert Vault.model_validate({"id": "c" * 26, "type": "EVERYONE"}).type is VaultType.EVERYONE


def test_timestamps_without_an_offset_are_utc() -> None:
    summary = ItemSummary.model_validate(
        {"id": "a" * 26, "vault": {"id": "b" * 26}, "createdAt": "2021-04-10T17:20:05.98944527"}
    )
    assert summary.created_at is not None and summary.created_at.tzinfo is not None


def test_wire_names_round_trip() -> None:
    wire = Item.model_validate(FULL_ITEM).to_wire()
    assert wire["files"][0]["content_path"] == FULL_ITEM["files"][0]["content_path"]  # type: ignore[index]
    assert wire["lastEditedBy"] == "DOIHOHSV2NHK5HMSOLCWJUXFDM"
    assert wire["createdAt"] == "2024-01-02T03:04:05Z"
    assert Item.model_validate(wire) == Item.model_validate(FULL_ITEM)


def test_inline_file_content_is_decoded() -> None:
    file = File.model_validate({"id": "f" * 26, "name": "a.txt", "content": "aGVsbG8="})
    assert file.content == b"hello"


def test_secret_values_stay_out_of_reprs() -> None:
    item = Item.model_validate(FULL_ITEM)
    text = repr(item) + str(item)
    assert "Z9g" not in text
    assert "134253" not in text
    assert "password" in text  # labels are not secret
