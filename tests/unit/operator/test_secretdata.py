"""Item → Secret: sanitisers, data precedence, metadata and merging.

"scenario N" comments name the Go operator's test scenarios (9.1 #4, 9.2 #16-27, #60), replayed here and listed in
docs/compatibility.md.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    DATA_VERSION_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_LABEL,
    OWNED_METADATA_ANNOTATION,
    ConditionReason,
)
from controllers.desired import (
    DesiredSecret,
    SecretMetadata,
    desired_secret,
    operator_annotations,
    opi_metadata,
    opi_owner_reference,
    secret_data_version,
    workload_metadata,
)
from controllers.merge import Ownership, merge_into, plan_update, secret_ownership
from controllers.sanitisers import is_valid_secret_key, secret_data_key, secret_name
from controllers.secretdata import (
    InvalidSecretError,
    ItemField,
    ItemFile,
    ItemInput,
    ItemUrl,
    SecretTooLargeError,
    SecretTypeImmutableError,
    build_secret_data,
    item_input_from_connect,
    validate_secret_data,
)
from onepassword_access.models import Item

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


def item(*fields: tuple[str, str], urls=(), files=(), contents=None, version=1, tags=()) -> ItemInput:
    return ItemInput(
        id=ITEM,
        vault_id=VAULT,
        version=version,
        tags=tuple(tags),
        urls=tuple(urls),
        fields=tuple(ItemField(label, value) for label, value in fields),
        files=tuple(files),
        file_contents=contents or {},
    )


def decoded(secret: dict) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


# --- sanitisers (scenarios 4 and 26) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("first host", "first-host"),
        ("AWS Access Key", "AWS-Access-Key"),
        ("😄 ice-cream type", "ice-cream-type"),
        ("label w%th invalid ch!rs-", "label-w-th-invalid-ch-rs-"),
        ("  password  ", "password"),
        ("api key (prod)", "api-key-prod"),
        ("a   b", "a-b"),
        ("private key", "private-key"),
        ("Section/Field", "Section-Field"),
        ("café", "caf"),
        ("naïve key", "na-ve-key"),
        ("user@name", "user-name"),
        ("-lead", "-lead"),
        (".dockerconfigjson", ".dockerconfigjson"),
        ("tls.crt", "tls.crt"),
        ("notesPlain", "notesPlain"),
        ("x" * 300, "x" * 253),
        ("", None),
        ("   ", None),
        ("###", None),
        ("@@@", None),
        ("%%%", None),
    ],
)
def test_data_key_examples_from_the_reference(label: str, key: str | None) -> None:
    assert secret_data_key(label) == key


@pytest.mark.parametrize("label", [".", "..", "..hidden", "😄..x", "...", "# .. #"])
def test_data_keys_the_api_server_refuses_are_skipped_not_sent(label: str) -> None:
    assert secret_data_key(label) is None


def test_long_and_invalid_labels_give_valid_keys() -> None:  # scenario 26
    assert is_valid_secret_key(secret_data_key("label w%th invalid ch!rs-") or "")
    long_key = secret_data_key("a" * 254)
    assert long_key is not None and is_valid_secret_key(long_key) and len(long_key) == 253


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("inV@l1d k8s secret%name", "inv-l1d-k8s-secret-name"),
        ("My_Secret", "my-secret"),
        ("My Secret!", "my-secret"),
        ("-foo-", "foo"),
        ("émoji😄name", "moji-name"),
        ("already.valid-name", "already.valid-name"),
        ("İstanbul", "istanbul"),  # Go's rune-wise lower-casing, not Python's two-character result
    ],
)
def test_secret_name_examples_from_the_reference(name: str, expected: str) -> None:
    assert secret_name(name) == expected


@pytest.mark.parametrize(("name", "expected"), [("Foo..Bar", "foo.bar"), ("a.-b", "a.b"), ("a-.b", "a.b")])
def test_secret_names_the_go_operator_leaves_invalid_are_repaired(name: str, expected: str) -> None:
    assert secret_name(name) == expected


@pytest.mark.parametrize("name", ["", "😄", "...", "-.-", "___"])
def test_secret_names_with_nothing_usable_are_none(name: str) -> None:
    assert secret_name(name) is None


# --- data (scenarios 19-25, 60) ---------------------------------------------------------------------------------


def test_field_labels_become_keys_with_case_preserved() -> None:  # scenario 4
    data = build_secret_data(item(("first host", "a"), ("AWS Access Key", "b"), ("😄 ice-cream type", "c"))).data
    assert data == {"first-host": b"a", "AWS-Access-Key": b"b", "ice-cream-type": b"c"}


def test_five_fields_make_five_keys() -> None:  # scenario 19
    fields = [(f"field{i}", f"value{i}") for i in range(5)]
    assert build_secret_data(item(*fields)).data == {f"field{i}": f"value{i}".encode() for i in range(5)}


@pytest.mark.parametrize(("allow_empty", "expected"), [(True, 4), (False, 2)])
def test_empty_values_only_with_allow_empty(allow_empty: bool, expected: int) -> None:  # scenarios 20, 21
    source = item(("username", "app"), ("password", "s3cret"), ("empty", ""), ("also empty", ""))
    data = build_secret_data(source, allow_empty=allow_empty).data
    assert len(data) == expected
    if allow_empty:
        assert data["empty"] == b"" and data["also-empty"] == b""


def test_primary_url_wins_and_other_labels_are_kept() -> None:  # scenario 23
    urls = [
        ItemUrl("https://other.example", "website"),
        ItemUrl("https://primary.example", "website", primary=True),
        ItemUrl("https://later.example", "website"),  # a non-primary never replaces a primary
        ItemUrl("https://support.example", "support"),
    ]
    data = build_secret_data(item(("username", "u"), ("password", "p"), urls=urls)).data
    assert len(data) == 4
    assert data["website"] == b"https://primary.example"
    assert data["support"] == b"https://support.example"


def test_without_a_primary_the_last_url_wins_and_unlabelled_urls_are_dropped() -> None:
    urls = [ItemUrl("https://a.example", "site"), ItemUrl("https://b.example", "site"), ItemUrl("https://x")]
    result = build_secret_data(item(urls=urls))
    assert result.data == {"site": b"https://b.example"}
    assert result.warnings == ()


def test_field_beats_url_with_the_same_key() -> None:  # scenario 24
    urls = [ItemUrl("https://db.example", "website", primary=True), ItemUrl("https://s.example", "support")]
    result = build_secret_data(item(("website", "from-field"), ("password", "p"), urls=urls))
    assert result.data == {"website": b"from-field", "support": b"https://s.example", "password": b"p"}
    assert any("'website'" in warning for warning in result.warnings)


def test_later_field_beats_earlier_field() -> None:  # issue #83: same label in two sections
    assert build_secret_data(item(("password", "first"), ("password", "second"))).data == {"password": b"second"}


def test_url_labels_that_sanitise_alike_have_a_defined_winner() -> None:
    forward = [ItemUrl("https://one.example", "my site"), ItemUrl("https://two.example", "my-site")]
    result = build_secret_data(item(urls=forward))
    assert result.data == {"my-site": b"https://two.example"}
    assert any("'my site'" in w and "'my-site'" in w for w in result.warnings)
    primary_first = [ItemUrl("https://one.example", "my site", primary=True), forward[1]]
    assert build_secret_data(item(urls=primary_first)).data == {"my-site": b"https://one.example"}


def test_unusable_labels_give_no_data() -> None:  # scenario 25
    labels = ["", "   ", "###", "@@@", "%%%"]
    files = [ItemFile(f"file{i}", label) for i, label in enumerate(labels)]
    contents = {f"file{i}": b"content" for i in range(len(labels))}
    result = build_secret_data(
        item(
            *[(label, "value") for label in labels],
            urls=[ItemUrl("https://x", label) for label in labels],
            files=files,
            contents=contents,
        )
    )
    assert result.data == {}
    assert len(result.warnings) == 3 * 3  # the non-blank labels of each kind are reported


def test_files_fill_free_keys_only() -> None:  # scenario 7: files only into free keys
    files = [ItemFile("f1", "server.crt"), ItemFile("f2", "password"), ItemFile("f3", "missing.txt")]
    contents = {"f1": b"dummy-cert-content", "f2": b"file wins?"}
    result = build_secret_data(item(("password", "field"), files=files, contents=contents))
    assert result.data == {"password": b"field", "server.crt": b"dummy-cert-content"}
    assert any("'password'" in w and "ignored" in w for w in result.warnings)
    assert any("'missing.txt'" in w and "not downloaded" in w for w in result.warnings)


def test_empty_file_only_with_allow_empty() -> None:
    source = item(files=[ItemFile("f1", "empty.txt")], contents={"f1": b""})
    assert build_secret_data(source).data == {}
    assert build_secret_data(source, allow_empty=True).data == {"empty.txt": b""}


def test_warnings_never_contain_values() -> None:
    urls = [ItemUrl("https://s3cr3t-url", "my site"), ItemUrl("https://s3cr3t-url-2", "my-site")]
    files = [ItemFile("f", "password")]
    source = item(
        ("password", "s3cr3t"), ("password", "s3cr3t-2"), urls=urls, files=files, contents={"f": b"s3cr3t-file"}
    )
    for warning in build_secret_data(source).warnings:
        assert "s3cr3t" not in warning


# --- the desired Secret (scenarios 16-18, 22, 26, 27) -----------------------------------------------------------


def opi(name="db", annotations=None, labels=None) -> dict:
    return {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "uid-opi",
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": {"itemPath": f"vaults/{VAULT}/items/{ITEM}"},
    }


def test_desired_secret_from_an_item() -> None:  # scenarios 16, 17, 22
    owner = opi_owner_reference(opi())
    desired = desired_secret(
        name="db",
        namespace="ns",
        item=item(("username", "app"), ("password", "pw"), version=7),
        metadata=opi_metadata(opi(annotations={AUTO_RESTART_ANNOTATION: "false"})),
        owner_references=[owner],
    )
    secret = desired.secret
    assert secret["metadata"]["name"] == "db" and secret["metadata"]["namespace"] == "ns"
    assert secret["type"] == "Opaque"
    assert decoded(secret) == {"username": b"app", "password": b"pw"}
    annotations = secret["metadata"]["annotations"]
    assert annotations[ITEM_PATH_ANNOTATION] == f"vaults/{VAULT}/items/{ITEM}"
    assert annotations[ITEM_VERSION_ANNOTATION] == "7"
    assert annotations[AUTO_RESTART_ANNOTATION] == "false"
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "name": "db",
            "uid": "uid-opi",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert secret["metadata"]["labels"][MANAGED_LABEL] == "true"


def test_name_is_sanitised_and_an_unusable_name_is_an_error() -> None:  # scenario 26
    assert (
        desired_secret(name="inV@l1d k8s secret%name", namespace="ns", item=item()).secret["metadata"]["name"]
        == "inv-l1d-k8s-secret-name"
    )
    with pytest.raises(InvalidSecretError) as caught:
        desired_secret(name="😄", namespace="ns", item=item())
    assert caught.value.reason is ConditionReason.INVALID_SECRET


def test_typed_secret_gets_its_type() -> None:  # scenario 27
    source = item(("tls.crt", "cert"), ("tls.key", "key"))
    assert desired_secret(name="t", namespace="ns", item=source, secret_type="kubernetes.io/tls").secret["type"] == (
        "kubernetes.io/tls"
    )


@pytest.mark.parametrize(
    ("secret_type", "keys", "missing"),
    [
        ("kubernetes.io/tls", ["tls.crt"], "tls.key"),
        ("kubernetes.io/tls", [], "tls.crt, tls.key"),
        ("kubernetes.io/dockerconfigjson", ["username"], ".dockerconfigjson"),
        ("kubernetes.io/basic-auth", ["token"], "username, password"),
        ("kubernetes.io/ssh-auth", ["private key"], "ssh-privatekey"),
    ],
)
def test_typed_secret_without_its_keys_is_refused_before_the_api_call(secret_type, keys, missing) -> None:
    with pytest.raises(InvalidSecretError) as caught:
        desired_secret(name="t", namespace="ns", item=item(*[(k, "v") for k in keys]), secret_type=secret_type)
    assert str(caught.value).endswith(f"missing: {missing}")
    assert secret_type in str(caught.value)


def test_basic_auth_needs_only_one_of_username_and_password() -> None:
    validate_secret_data("kubernetes.io/basic-auth", {"password": b"p"})
    validate_secret_data("kubernetes.io/ssh-auth", {"ssh-privatekey": b"k"})


def test_docker_config_must_be_a_json_object_and_the_message_hides_it() -> None:
    validate_secret_data("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b'{"auths": {}}'})
    with pytest.raises(InvalidSecretError) as caught:
        validate_secret_data("kubernetes.io/dockerconfigjson", {".dockerconfigjson": b"s3cr3t-not-json"})
    assert "JSON object" in str(caught.value) and "s3cr3t" not in str(caught.value)


def test_more_than_one_mebibyte_is_refused() -> None:
    validate_secret_data("Opaque", {"a": b"x" * (1024 * 1024)})
    with pytest.raises(SecretTooLargeError) as caught:
        desired_secret(name="big", namespace="ns", item=item(("a", "x" * (512 * 1024)), ("b", "y" * (512 * 1024 + 1))))
    assert caught.value.reason is ConditionReason.SECRET_TOO_LARGE


# --- metadata producers (scenarios 28-31) -----------------------------------------------------------------------


def test_opi_labels_are_copied_and_annotations_only_with_the_flag() -> None:
    source = opi(
        labels={"team": "a"}, annotations={"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    )
    assert opi_metadata(source) == SecretMetadata({"team": "a"}, {})
    assert opi_metadata(source, enable_annotations=True).annotations == {"note": "x"}


def test_invalid_auto_restart_on_an_opi_is_left_out_with_a_warning() -> None:
    metadata = opi_metadata(opi(annotations={AUTO_RESTART_ANNOTATION: "yes"}), enable_annotations=True)
    assert AUTO_RESTART_ANNOTATION not in metadata.annotations
    assert metadata.warnings and "'yes'" in metadata.warnings[0]
    assert opi_metadata(opi(annotations={AUTO_RESTART_ANNOTATION: "TRUE"})).annotations == {
        AUTO_RESTART_ANNOTATION: "TRUE"
    }


def deployment(meta_annotations=None, template_annotations=None) -> dict:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-web", "annotations": meta_annotations or {}},
        "spec": {"template": {"metadata": {"annotations": template_annotations or {}}, "spec": {}}},
    }


def test_operator_annotations_keep_operator_keys_only() -> None:  # scenario 28
    found = operator_annotations(
        deployment(
            {
                ITEM_PATH_ANNOTATION: "vaults/v/items/i",
                ITEM_NAME_ANNOTATION: "secret",
                "onepasswordconnect/vaultId": "v",
                "item-path": "x",
                AUTO_RESTART_ANNOTATION: "true",
                "operator.1password.io/last-restarted": "now",
                "operator.1password.io/inject": "app",
            }
        )
    )
    assert found == {
        ITEM_PATH_ANNOTATION: "vaults/v/items/i",
        ITEM_NAME_ANNOTATION: "secret",
        "operator.1password.io/inject": "app",
    }


def test_operator_annotations_metadata_first_then_template_never_mixed() -> None:  # scenarios 29-31
    both = deployment({ITEM_NAME_ANNOTATION: "meta"}, {ITEM_PATH_ANNOTATION: "p", ITEM_NAME_ANNOTATION: "tmpl"})
    assert operator_annotations(both) == {ITEM_NAME_ANNOTATION: "meta"}
    template_only = deployment({"other": "x"}, {ITEM_NAME_ANNOTATION: "tmpl"})
    assert operator_annotations(template_only) == {ITEM_NAME_ANNOTATION: "tmpl"}
    assert operator_annotations(deployment()) == {}
    assert workload_metadata(template_only) == SecretMetadata({}, {ITEM_NAME_ANNOTATION: "tmpl"})


def test_workload_made_secret_carries_its_annotations_overlaid_with_the_resolved_path() -> None:
    workload = deployment({ITEM_PATH_ANNOTATION: "vaults/Prod/items/db", ITEM_NAME_ANNOTATION: "db-secret"})
    desired = desired_secret(
        name="db-secret", namespace="ns", item=item(("a", "b")), metadata=workload_metadata(workload)
    ).secret
    annotations = desired["metadata"]["annotations"]
    assert annotations[ITEM_PATH_ANNOTATION] == f"vaults/{VAULT}/items/{ITEM}"
    assert annotations[ITEM_NAME_ANNOTATION] == "db-secret"
    assert set(desired["metadata"]["labels"]) == {MANAGED_LABEL}


# --- merging into an existing Secret (scenarios 18, 60, and the Go operator's wiping) ---------------------------


def desired_for(source: ItemInput, **kwargs) -> dict:
    return desired_secret(name="db", namespace="ns", item=source, **kwargs).secret


def needs_update(existing: dict, desired: dict) -> bool:
    """Whether the writer would write over ``existing`` (``merge.plan_update`` finds a difference)."""
    return plan_update(existing, DesiredSecret(desired)) is not None


def stored(secret: dict) -> dict:
    """What the API server returns: the object plus server-set metadata."""
    result = json.loads(json.dumps(secret))
    result["metadata"]["resourceVersion"] = "100"
    result["metadata"]["uid"] = "uid-secret"
    return result


def test_same_item_needs_no_update() -> None:
    desired = desired_for(item(("password", "p")))
    assert not needs_update(stored(desired), desired)


def test_new_version_updates_data_and_annotations() -> None:  # scenario 18
    existing = stored(desired_for(item(("password", "old"), version=1)))
    desired = desired_for(item(("password", "new"), ("extraField", "x"), version=2))
    assert needs_update(existing, desired)
    merged = merge_into(existing, desired)
    assert decoded(merged) == {"password": b"new", "extraField": b"x"}
    assert merged["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == "2"
    assert merged["metadata"]["resourceVersion"] == "100"
    assert not needs_update(merged, desired)


def test_data_from_an_older_version_of_the_same_item_is_never_written_over_newer() -> None:
    newer = stored(desired_for(item(("password", "v3"), version=3)))
    newer["data"]["extra"] = "eA=="  # even a hand edit waits for data at least as new
    assert not needs_update(newer, desired_for(item(("password", "v2"), version=2)))
    assert needs_update(newer, desired_for(item(("password", "v3"), version=3)))


def test_a_recreated_item_starts_again_at_version_one() -> None:
    newer = stored(desired_for(item(("password", "old"), version=7)))
    recreated = replace(item(("password", "new"), version=1), id="another-id")
    assert needs_update(newer, desired_for(recreated))


def test_allow_empty_toggle_drops_or_keeps_empty_keys() -> None:  # scenario 60
    source = item(("password", "p"), ("empty", ""), version=2)
    with_empty = stored(desired_for(source, allow_empty=True))
    merged = merge_into(with_empty, desired_for(source))
    assert decoded(merged) == {"password": b"p"}
    merged = merge_into(merged, desired_for(source, allow_empty=True))
    assert decoded(merged) == {"password": b"p", "empty": b""}


def test_manual_data_edits_are_repaired() -> None:
    desired = desired_for(item(("password", "p")))
    edited = stored(desired)
    edited["data"] = {"password": base64.b64encode(b"hacked").decode(), "extra": "eA=="}
    assert needs_update(edited, desired)
    assert decoded(merge_into(edited, desired)) == {"password": b"p"}


def test_foreign_labels_and_annotations_survive_and_stale_owned_ones_go() -> None:
    first = desired_for(item(("a", "b")), metadata=SecretMetadata({"team": "a", "tier": "1"}, {"note": "x"}))
    existing = stored(first)
    existing["metadata"]["labels"]["argocd.argoproj.io/instance"] = "app"
    existing["metadata"]["annotations"]["reloader.stakater.com/match"] = "true"
    assert not needs_update(existing, first)  # foreign keys alone never cause a write
    second = desired_for(item(("a", "b")), metadata=SecretMetadata({"team": "b"}, {}))
    merged = merge_into(existing, second)
    assert merged["metadata"]["labels"] == {"team": "b", MANAGED_LABEL: "true", "argocd.argoproj.io/instance": "app"}
    annotations = merged["metadata"]["annotations"]
    assert "note" not in annotations and annotations["reloader.stakater.com/match"] == "true"
    assert json.loads(annotations[OWNED_METADATA_ANNOTATION])["labels"] == [MANAGED_LABEL, "team"]


def test_producer_owner_references_become_the_desired_ones_and_others_are_kept() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"}
    stale = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "u2"}
    other = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "name": "argo", "uid": "u3"}
    existing = stored(desired_for(item(("a", "b")), owner_references=[stale, other]))
    desired = desired_for(item(("a", "b")), owner_references=[owner])
    assert needs_update(existing, desired)
    assert merge_into(existing, desired)["metadata"]["ownerReferences"] == [other, owner]
    assert not needs_update(merge_into(existing, desired), desired)


def test_type_cannot_change_but_empty_equals_opaque() -> None:
    existing = stored(desired_for(item(("a", "b"))))
    existing["type"] = ""
    assert not needs_update(existing, desired_for(item(("a", "b")), secret_type="Opaque"))
    with pytest.raises(SecretTypeImmutableError, match="secret type is immutable"):
        merge_into(existing, desired_for(item(("username", "b")), secret_type="kubernetes.io/basic-auth"))


def test_data_version_moves_only_with_the_data() -> None:
    existing = stored(desired_for(item(("a", "b"), version=1)))
    assert secret_data_version(existing) == f"vaults/{VAULT}/items/{ITEM}@1"
    same_data = merge_into(existing, desired_for(item(("a", "b"), version=2)))
    assert same_data["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == "2"
    assert secret_data_version(same_data) == f"vaults/{VAULT}/items/{ITEM}@1"
    new_data = merge_into(same_data, desired_for(item(("a", "c"), version=3)))
    assert secret_data_version(new_data) == f"vaults/{VAULT}/items/{ITEM}@3"


def test_ignore_secret_item_keeps_data_and_advances_the_version() -> None:
    existing = stored(desired_for(item(("password", "old"), version=1)))
    tagged = item(("password", "new"), version=2, tags=["operator.1password.io:ignore-secret"])
    assert tagged.ignores_secret
    merged = merge_into(existing, desired_for(tagged), keep_data=True)
    assert decoded(merged) == {"password": b"old"}
    assert merged["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == "2"
    assert secret_data_version(merged) == f"vaults/{VAULT}/items/{ITEM}@1"


def test_go_operator_secret_is_adopted() -> None:
    legacy = {
        "metadata": {
            "name": "db",
            "namespace": "ns",
            "labels": {"team": "a"},
            "annotations": {ITEM_PATH_ANNOTATION: f"vaults/{VAULT}/items/{ITEM}", ITEM_VERSION_ANNOTATION: "4"},
        },
        "type": "Opaque",
        "data": {"password": base64.b64encode(b"p").decode()},
    }
    assert secret_ownership(legacy) is Ownership.LEGACY
    assert secret_data_version(legacy) == f"vaults/{VAULT}/items/{ITEM}@4"
    merged = merge_into(legacy, desired_for(item(("password", "p"), version=4)))
    assert secret_ownership(merged) is Ownership.MANAGED
    assert merged["metadata"]["annotations"][DATA_VERSION_ANNOTATION] == f"vaults/{VAULT}/items/{ITEM}@4"
    assert merged["metadata"]["labels"]["team"] == "a"


def test_someone_elses_secret_is_foreign() -> None:
    assert secret_ownership({"metadata": {"name": "db", "annotations": {ITEM_PATH_ANNOTATION: "x"}}}) is (
        Ownership.FOREIGN
    )
    assert secret_ownership({"metadata": {"name": "db"}}) is Ownership.FOREIGN


def test_connect_item_adapter() -> None:
    connect = Item.model_validate(
        {
            "id": ITEM,
            "vault": {"id": VAULT},
            "version": 3,
            "tags": ["a"],
            "urls": [{"href": "https://db.example", "label": "website", "primary": True}, {"href": "https://x"}],
            "fields": [
                {"id": "password", "label": "password", "value": "p"},
                {"id": "notesPlain", "label": "notesPlain"},
            ],
            "files": [{"id": "f1", "name": "server.crt"}],
        }
    )
    source = item_input_from_connect(connect, {"f1": b"cert"})
    assert source.path == f"vaults/{VAULT}/items/{ITEM}" and source.version == 3 and source.tags == ("a",)
    assert build_secret_data(source).data == {
        "website": b"https://db.example",
        "password": b"p",
        "server.crt": b"cert",
    }


def test_only_data_secret_types_are_written() -> None:
    """Issue 16: with the Go operator's CRD (no enum) opsync itself refuses types that mint credentials."""
    for refused in ("kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token", "x/y"):
        with pytest.raises(InvalidSecretError, match=f"does not write Secrets of type {refused}"):
            desired_secret(name="s", namespace="ns", item=item(("a", "b")), secret_type=refused)


def test_kubernetes_annotations_are_never_copied() -> None:
    source = opi(
        annotations={
            "kubernetes.io/service-account.name": "admin",
            "kubernetes.io/service-account.uid": "1",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "node.k8s.io/x": "y",
            "example.com/kept": "yes",
            "notkubernetes.io/kept": "yes",
        }
    )
    assert opi_metadata(source, enable_annotations=True).annotations == {
        "example.com/kept": "yes",
        "notkubernetes.io/kept": "yes",
    }
