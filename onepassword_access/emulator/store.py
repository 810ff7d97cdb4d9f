"""The emulator's in-memory state: vaults, items, file contents, token grants and the activity log.

Every method is synchronous, so each runs atomically on the event loop. Each write bumps the item's
``version`` and ``updatedAt`` and the vault's ``contentVersion``, as Connect does.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from onepassword_access.emulator.data import EmulatorData, FieldSpec, ItemSpec, TokenSpec, VaultSpec
from onepassword_access.emulator.items import Doc, new_id, normalise, rfc3339, stable_id
from onepassword_access.paths import looks_like_id

_SEED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # seeded objects are created one second apart, in file order
EDITOR = stable_id("emulator", "user").upper()  # lastEditedBy: an opaque uppercase user id
_ACTIVITY_KEPT = 10_000


@dataclass
class VaultState:
    """A vault: its served document, its items (stored documents) and their files' bytes."""

    doc: Doc
    items: dict[str, Doc] = field(default_factory=dict)
    contents: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (item id, file id) -> bytes

    @property
    def id(self) -> str:
        """The vault id."""
        return str(self.doc["id"])


@dataclass(frozen=True)
class Grant:
    """What one token may do: per vault id ``r`` or ``rw``; ``default`` for vaults not listed."""

    name: str
    actor_id: str
    vaults: Mapping[str, str]
    default: str | None

    def access(self, vault_id: str) -> str | None:
        """``r``, ``rw`` or None (no access)."""
        return self.vaults.get(vault_id, self.default)


class Store:
    """Vaults and items, loaded from ``EmulatorData``."""

    def __init__(self, data: EmulatorData) -> None:
        self.settings = data.settings
        self.vaults: dict[str, VaultState] = {}
        self.activity: deque[Doc] = deque(maxlen=_ACTIVITY_KEPT)
        self._clock = 0
        for vault in data.vaults:
            self._seed_vault(vault)
        self.grants = {spec.token: self._grant(spec, i) for i, spec in enumerate(data.tokens)}

    # --- seeding -----------------------------------------------------------------------------------------

    def _seed_time(self, given: datetime | None) -> str:
        self._clock += 1
        moment = given if given is not None else _SEED_EPOCH + timedelta(seconds=self._clock)
        return rfc3339(moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC))

    def _seed_vault(self, spec: VaultSpec) -> None:
        vault_id = spec.id or stable_id("vault", spec.name)
        if not looks_like_id(vault_id) or vault_id in self.vaults:
            raise ValueError(f"vault {spec.name!r}: id {vault_id!r} is malformed or used twice")
        created = self._seed_time(spec.created_at)
        state = VaultState(
            {
                "id": vault_id,
                "name": spec.name,
                "description": spec.description,
                "type": spec.type,
                "attributeVersion": 1,
                "contentVersion": 1,
                "items": 0,
                "createdAt": created,
                "updatedAt": created,
            }
        )
        self.vaults[vault_id] = state
        for item in spec.items:
            self.add_item(state, item)

    def add_item(self, vault: VaultState, spec: ItemSpec) -> Doc:
        """Add an item described as in the data file (ids derived from the title when not given)."""
        rank = sum(1 for doc in vault.items.values() if doc["title"] == spec.title)
        item_id = spec.id or stable_id("item", vault.id, spec.title, str(rank))
        if not looks_like_id(item_id) or any(item_id in v.items for v in self.vaults.values()):
            raise ValueError(f"item {spec.title!r}: id {item_id!r} is malformed or used twice")
        sections = {s.label: {"id": s.id or _section_id(item_id, s.label), "label": s.label} for s in spec.sections}
        refs = {f.section for f in spec.fields if f.section} | {f.section for f in spec.files if f.section}
        for ref in sorted(refs):
            if ref not in sections and ref not in {s["id"] for s in sections.values()}:
                sections[ref] = {"id": _section_id(item_id, ref), "label": ref}
        by_ref = {key: s["id"] for s in sections.values() for key in (s["label"], s["id"])}
        body = {
            **spec.model_dump(by_alias=True, include={"title", "category", "tags", "favorite"}),
            "urls": [u.model_dump() for u in spec.urls],
            "sections": list(sections.values()),
            "fields": [_seed_field(f, item_id, i, by_ref) for i, f in enumerate(spec.fields)],
        }
        created = self._seed_time(spec.created_at)
        existing = {"createdAt": created, "version": 0}
        doc = normalise(body, item_id=item_id, vault_id=vault.id, existing=existing | {"category": spec.category})
        self._commit(vault, doc, at=created)
        for index, file in enumerate(spec.files):
            file_id = file.id or stable_id("file", item_id, file.name, str(index))
            self._attach(
                vault, doc, file_id=file_id, name=file.name, data=file.data(), section=by_ref.get(file.section or "")
            )
        return doc

    def _grant(self, spec: TokenSpec, index: int) -> Grant:
        vaults = {}
        for ref, access in spec.vaults.items():
            if ref != "*":
                vaults[self.vault(ref).id] = access
        name = spec.name or f"token-{index}"
        return Grant(name, str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsync-emulator/{name}")), vaults, spec.vaults.get("*"))

    # --- lookups -----------------------------------------------------------------------------------------

    def vault(self, ref: str) -> VaultState:
        """A vault by id or (case-insensitive) name, the oldest if several; KeyError if none."""
        if ref in self.vaults:
            return self.vaults[ref]
        matches = [state for state in self.vaults.values() if state.doc["name"].casefold() == ref.casefold()]
        if not matches:
            raise KeyError(f"no vault {ref!r}")
        return min(matches, key=lambda state: _age(state.doc))

    def item(self, vault: VaultState, ref: str) -> Doc:
        """An item by id or (case-insensitive) title, the oldest if several; KeyError if none."""
        if ref in vault.items:
            return vault.items[ref]
        matches = [doc for doc in vault.items.values() if doc["title"].casefold() == ref.casefold()]
        if not matches:
            raise KeyError(f"no item {ref!r} in vault {vault.doc['name']!r}")
        return min(matches, key=_age)

    # --- writes (the API's and the admin's) -----------------------------------------------------------------

    def create(self, vault: VaultState, body: object) -> Doc:
        """POST: a new item with a fresh id."""
        doc = normalise(body, item_id=new_id(), vault_id=vault.id, existing=None)
        return self._commit(vault, doc)

    def replace(self, vault: VaultState, item_id: str, body: object) -> Doc:
        """PUT (and PATCH after its operations): the item's content replaced, server-owned properties kept."""
        return self._commit(vault, normalise(body, item_id=item_id, vault_id=vault.id, existing=vault.items[item_id]))

    def delete(self, vault: VaultState, item_id: str) -> None:
        """DELETE: gone for good, with its files."""
        del vault.items[item_id]
        vault.contents = {key: data for key, data in vault.contents.items() if key[0] != item_id}
        self._bump_vault(vault, rfc3339(datetime.now(UTC)))

    def set_values(
        self,
        vault: VaultState,
        doc: Doc,
        *,
        fields: Mapping[str, str] | None = None,
        tags: list[str] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Doc:
        """Set field values by label (adding missing fields), tags, and file contents by name: one write."""
        body = {**doc, "fields": [dict(f) for f in doc.get("fields", [])]}
        for label, value in (fields or {}).items():
            field_doc = next((f for f in body["fields"] if f.get("label") == label), None)
            if field_doc is None:
                body["fields"].append({"label": label, "value": value, "type": "STRING"})
            else:
                field_doc["value"] = value
        if tags is not None:
            body["tags"] = tags
        doc = self.replace(vault, doc["id"], body)
        for name, data in (files or {}).items():
            current = next((f for f in doc["files"] if f["name"] == name), None)
            file_id = current["id"] if current else stable_id("file", doc["id"], name, str(len(doc["files"])))
            self._attach(vault, doc, file_id=file_id, name=name, data=data)
        return doc

    def _attach(
        self, vault: VaultState, doc: Doc, *, file_id: str, name: str, data: bytes, section: str | None = None
    ) -> None:
        """Add or replace a file's metadata and bytes (the item's version is not bumped again)."""
        meta: Doc = {
            "id": file_id,
            "name": name,
            "size": len(data),
            "content_path": f"/v1/vaults/{vault.id}/items/{doc['id']}/files/{file_id}/content",
        }
        if section:
            meta["section"] = {"id": section}
        doc["files"] = [f for f in doc["files"] if f["id"] != file_id] + [meta]
        vault.contents[(doc["id"], file_id)] = data

    def _commit(self, vault: VaultState, doc: Doc, *, at: str | None = None) -> Doc:
        now = at or rfc3339(datetime.now(UTC))
        doc["version"] = doc.get("version", 0) + 1
        doc.setdefault("createdAt", now)
        doc["updatedAt"] = now
        doc["lastEditedBy"] = EDITOR
        vault.items[doc["id"]] = doc
        self._bump_vault(vault, now)
        return doc

    def _bump_vault(self, vault: VaultState, now: str) -> None:
        vault.doc["contentVersion"] += 1
        vault.doc["items"] = len(vault.items)
        vault.doc["updatedAt"] = now

    # --- activity ----------------------------------------------------------------------------------------

    def record(
        self,
        grant: Grant,
        *,
        actor: Mapping[str, str],
        action: str,
        result: str,
        vault_id: str,
        item: Doc | None = None,
    ) -> None:
        """Log one API request for ``/v1/activity`` (newest first)."""
        resource: dict[str, Any] = {"type": "ITEM" if item else "VAULT", "vault": {"id": vault_id}}
        if item:
            resource |= {"item": {"id": item["id"]}, "itemVersion": item["version"]}
        self.activity.appendleft(
            {
                "requestId": str(uuid.uuid4()),
                "timestamp": rfc3339(datetime.now(UTC)),
                "action": action,
                "result": result,
                "resource": resource,
                "actor": {"id": grant.actor_id, "account": EDITOR, "jti": grant.name, **actor},
            }
        )


def _age(doc: Doc) -> tuple[datetime, str]:
    """Sort key of "the oldest": creation time, then id (as the resolver decides)."""
    return datetime.fromisoformat(doc["createdAt"]), doc["id"]


def _section_id(item_id: str, label: str) -> str:
    return "Section_" + stable_id("section", item_id, label).upper()


def _seed_field(spec: FieldSpec, item_id: str, index: int, sections: Mapping[str, str]) -> Doc:
    """A data-file field with a stable id (built-in ids for username, password and notes)."""
    doc: Doc = spec.model_dump(exclude={"section", "id"})
    doc["id"] = spec.id or stable_id("field", item_id, spec.label, str(index))
    if not spec.id and spec.purpose.upper() in ("USERNAME", "PASSWORD", "NOTES"):
        del doc["id"]  # normalise gives built-in ids
    if spec.section:
        doc["section"] = {"id": sections[spec.section]}
    return doc
