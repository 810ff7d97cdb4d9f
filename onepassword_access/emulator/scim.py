"""The SCIM-style ``filter`` query of list endpoints: ``title eq "x"``, ``tag co "y"``, joined by and/or.

Comparisons ignore case (as Connect's ``eq`` on names); ``and`` binds tighter than ``or``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from onepassword_access.emulator.items import ApiProblem

Record = Mapping[str, Iterable[str]]  # attribute -> its values (an item has one title, many tags)
Predicate = Callable[[Record], bool]

_TERM = re.compile(r'\s*([A-Za-z]+)\s+(eq|co|sw)\s+"((?:[^"\\]|\\.)*)"\s*', re.IGNORECASE)
_JOIN = re.compile(r"(and|or)\s", re.IGNORECASE)
_ESCAPE = re.compile(r"\\(.)")
_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda have, want: have == want,
    "co": lambda have, want: want in have,
    "sw": lambda have, want: have.startswith(want),
}


def parse_filter(text: str, attributes: Iterable[str]) -> Predicate:
    """A predicate for ``text``; raises ``ApiProblem(400)`` for a filter that does not parse."""
    allowed = {a.lower() for a in attributes}
    groups: list[list[tuple[str, str, str]]] = [[]]
    position = 0
    while True:
        term = _TERM.match(text, position)
        if term is None or term.group(1).lower() not in allowed:
            raise ApiProblem(400, f"Invalid filter query: {text}")
        attribute, op, value = term.group(1).lower(), term.group(2).lower(), _ESCAPE.sub(r"\1", term.group(3))
        groups[-1].append((attribute, op, value.casefold()))
        position = term.end()
        if position == len(text):
            break
        join = _JOIN.match(text, position)
        if join is None:
            raise ApiProblem(400, f"Invalid filter query: {text}")
        if join.group(1).lower() == "or":
            groups.append([])
        position = join.end()

    def matches(record: Record) -> bool:
        return any(all(_term(record, *term) for term in group) for group in groups)

    return matches


def _term(record: Record, attribute: str, op: str, value: str) -> bool:
    return any(_OPS[op](have.casefold(), value) for have in record.get(attribute, ()))
