"""Item paths (``vaults/<vault>/items/<item>``) and the "looks like an id" rule, as the Go operator has them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"[a-z0-9]{26}")
_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def looks_like_id(value: str) -> bool:
    """True for exactly 26 characters of ``[a-z0-9]``: how every Connect client tells an id from a title."""
    return _ID.fullmatch(value) is not None


def go_quote(value: str) -> str:
    """``value`` quoted like Go's ``%q`` (``strconv.Quote``), so error texts match the Go operator's."""
    out = []
    for char in value:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


class ItemPathError(ValueError):
    """An item path not of the form ``vaults/<vault>/items/<item>``; the text is the Go operator's."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{go_quote(path)} is not an acceptable path for One Password item. "
            "Must be of the format: `vaults/{vault_id}/items/{item_id}`"
        )
        self.path = path


@dataclass(frozen=True, slots=True)
class ItemPath:
    """A vault and an item, each an id or a title."""

    vault: str
    item: str

    def __str__(self) -> str:
        return f"vaults/{self.vault}/items/{self.item}"


def parse_item_path(path: str) -> ItemPath:
    """Split ``vaults/<vault>/items/<item>``: exactly four ``/``-separated segments, none empty or blank.

    Raises ``ItemPathError`` otherwise. (The Go operator accepts empty segments and fails later, at lookup;
    rejecting them here gives the same message earlier.)
    """
    segments = path.split("/")
    if (
        len(segments) == 4
        and segments[0] == "vaults"
        and segments[2] == "items"
        and all(segment.strip() for segment in segments)
    ):
        return ItemPath(segments[1], segments[3])
    raise ItemPathError(path)
