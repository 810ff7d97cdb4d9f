"""controllers.render: which OnePasswordItems ``opsync render`` renders, from a path or a file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controllers.render import RenderError, items_of


def args(**values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {"item_path": None, "filename": None, "name": None, "type": ""}
    return argparse.Namespace(**{**defaults, **values})


def test_an_item_path_renders_one_unshaped_item() -> None:
    [item] = items_of(args(item_path="vaults/v/items/i", name="n", type="kubernetes.io/tls"))
    assert item == {"metadata": {"name": "n"}, "spec": {"itemPath": "vaults/v/items/i"}, "type": "kubernetes.io/tls"}


def test_a_file_renders_its_onepassworditems_only(tmp_path: Path) -> None:
    path = tmp_path / "items.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        "apiVersion: onepassword.com/v1\nkind: OnePasswordItem\nmetadata: {name: a}\n"
        "spec: {itemPath: vaults/v/items/a}\n"
    )
    assert [item["metadata"]["name"] for item in items_of(args(filename=path))] == ["a"]


@pytest.mark.parametrize("content", [None, "apiVersion: v1\nkind: ConfigMap\n", "key: [unclosed"])
def test_unusable_input_is_refused(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "items.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RenderError):
        items_of(args(filename=path))
    with pytest.raises(RenderError, match="item path or -f"):
        items_of(args())
