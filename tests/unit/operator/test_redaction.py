"""Secret-bearing types redact themselves (issue 16): reprs end up in logs, tracebacks and assertion messages."""

from __future__ import annotations

import base64

from controllers.desired import DesiredSecret, desired_secret
from controllers.secretdata import ItemField, ItemFile, ItemInput, SecretData
from controllers.secrets import WriteResult
from onepassword_access.models import Item
from onepassword_access.resolve import ResolvedItem

VALUE = "s3cr3t-value-3f9a"
FILE = b"s3cr3t-file-77c1"
EXTRA = "s3cr3t-unknown-key-value-d41e"


def visible(obj: object) -> str:
    return repr(obj) + str(obj)


def assert_redacted(obj: object) -> None:
    text = visible(obj)
    for secret in (VALUE, FILE.decode(), EXTRA, base64.b64encode(VALUE.encode()).decode()):
        assert secret not in text, f"{type(obj).__name__} shows a secret: {text}"


def connect_item() -> Item:
    return Item.model_validate(
        {
            "id": "i" * 26,
            "title": "db",
            "vault": {"id": "v" * 26, "futureKey": EXTRA},
            "fields": [{"id": "password", "label": "password", "value": VALUE, "otherKey": EXTRA}],
            "files": [{"id": "f", "name": "key.pem", "content": base64.b64encode(FILE).decode()}],
            "newTopLevelKey": EXTRA,
        }
    )


def test_connect_models_hide_values_and_unknown_keys_but_name_them() -> None:
    item = connect_item()
    assert_redacted(item)
    assert "unknown_keys=['newTopLevelKey']" in repr(item)
    assert_redacted(item.fields[0])
    assert_redacted(item.vault)


def test_resolved_items_item_inputs_and_secrets_hide_their_contents() -> None:
    item = connect_item()
    assert_redacted(ResolvedItem(item=item, vault_id=item.vault.id, files={"f": FILE}))
    field = ItemField("password", VALUE)
    assert_redacted(field)
    assert "password" in repr(field)
    source = ItemInput(
        "i" * 26, "v" * 26, 1, fields=(field,), files=(ItemFile("f", "key.pem"),), file_contents={"f": FILE}
    )
    assert_redacted(source)
    assert_redacted(SecretData({"password": VALUE.encode()}))
    desired = desired_secret(name="db", namespace="ns", item=source)
    assert isinstance(desired, DesiredSecret)
    assert_redacted(desired)
    assert_redacted(WriteResult(desired.secret, "create", data_changed=True))
