"""Item paths parse like the Go operator's ``ParseVaultAndItemFromPath``; ids look like Go's ``IsValidClientUUID``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from onepassword_access.paths import ItemPath, ItemPathError, go_quote, looks_like_id, parse_item_path

GO_FORMAT = "Must be of the format: `vaults/{vault_id}/items/{item_id}`"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("vaults/Demo/items/db-credentials", ItemPath("Demo", "db-credentials")),
        (
            "vaults/hfnjvi6aymbsnfc2xeeoheizda/items/wepiqdxdzncjtnvmv5fegud4qy",
            ItemPath("hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"),
        ),
        ("vaults/My Vault/items/api key (prod)", ItemPath("My Vault", "api key (prod)")),
        ("vaults/ Demo /items/x", ItemPath(" Demo ", "x")),  # kept verbatim, as Go does
    ],
)
def test_valid_paths_split_into_vault_and_item(path: str, expected: ItemPath) -> None:
    parsed = parse_item_path(path)
    assert parsed == expected
    assert str(parsed) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "vaults/Demo/items",
        "vaults/Demo/items/a/b",
        "/vaults/Demo/items/x",
        "vault/Demo/items/x",
        "vaults/Demo/item/x",
        "Vaults/Demo/items/x",
        "vaults//items/x",
        "vaults/Demo/items/",
        "vaults/   /items/x",
        "vaults/Demo/items/\t",
    ],
)
def test_other_shapes_are_refused_with_the_go_message(path: str) -> None:
    with pytest.raises(ItemPathError) as caught:
        parse_item_path(path)
    assert str(caught.value) == f"{go_quote(path)} is not an acceptable path for One Password item. {GO_FORMAT}"
    assert caught.value.path == path


def test_the_path_in_the_message_is_quoted_like_go() -> None:
    with pytest.raises(ItemPathError) as caught:
        parse_item_path('a "quoted"\\path\n\x00é😀')
    assert str(caught.value).startswith('"a \\"quoted\\"\\\\path\\n\\x00é😀" is not an acceptable path')


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("wepiqdxdzncjtnvmv5fegud4qy", True),
        ("test26charlongitemtitle123", True),  # a title can look like an id: resolvers fall back to titles
        ("WEPIQDXDZNCJTNVMV5FEGUD4QY", False),  # uppercase ids are not ids
        ("wepiqdxdzncjtnvmv5fegud4q", False),
        ("wepiqdxdzncjtnvmv5fegud4qyy", False),
        ("wepiqdxdzncjtnvmv5fegud4q-", False),
        ("wepiqdxdzncjtnvmv5fegud4q\n", False),
        ("\uff57epiqdxdzncjtnvmv5fegud4qy", False),  # no Unicode look-alikes (a fullwidth w)
    ],
)
def test_looks_like_id(value: str, expected: bool) -> None:
    assert looks_like_id(value) is expected


@given(st.one_of(st.text(), st.builds(lambda v, i: f"vaults/{v}/items/{i}", st.text(), st.text())))
def test_parsing_never_crashes(path: str) -> None:
    try:
        parsed = parse_item_path(path)
    except ItemPathError as err:
        assert go_quote(path) in str(err)
    else:
        assert str(parsed) == path
        assert "/" not in parsed.vault + parsed.item
        assert parsed.vault.strip()
        assert parsed.item.strip()


def _crd_item_path_pattern() -> re.Pattern[str]:
    crd = yaml.safe_load((Path(__file__).parents[3] / "crds" / "onepassword.com_onepassworditems.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    pattern: str = schema["properties"]["spec"]["properties"]["itemPath"]["pattern"]
    # The API server matches with Go's RE2, where "$" is the end of the text (Python's also before a final "\n").
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


SCHEMA = _crd_item_path_pattern()
segments = st.text(max_size=12) | st.sampled_from(["", " ", "\t", "\n", "a/b", "Demo", "wepiqdxdzncjtnvmv5fegud4qy"])


@given(st.one_of(st.text(), st.builds(lambda v, i: f"vaults/{v}/items/{i}", segments, segments)))
def test_the_parser_accepts_a_subset_of_what_the_crd_schema_lets_through(path: str) -> None:
    """What the schema refuses never reaches opsync; what it lets through but the parser refuses (blank
    segments) becomes ``InvalidItemPath``, never a lookup."""
    schema_accepts = SCHEMA.fullmatch(path) is not None
    try:
        parse_item_path(path)
    except ItemPathError:
        if schema_accepts:
            _, vault, _, item = path.split("/")
            assert not vault.strip() or not item.strip()
    else:
        assert schema_accepts


@given(segments.filter(lambda s: "/" not in s and s.strip()), segments.filter(lambda s: "/" not in s and s.strip()))
def test_any_vault_and_item_without_slashes_round_trip(vault: str, item: str) -> None:
    assert parse_item_path(str(ItemPath(vault, item))) == ItemPath(vault, item)
