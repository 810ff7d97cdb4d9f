"""The fault suite's one invariant, checked the same way after every fault; and opsync as a process.

    async with SecretGuard(kube, namespace, emulator) as guard:   # snapshot + watch every Secret
        ...  # the fault, and whatever the test does during it
        await guard.converged()                                  # everything back in sync, nothing broken

While the guard is open it watches every Secret of the namespace (its own informer on the test's admin
client, independent of opsync's) and records a violation whenever

- a managed Secret (label ``opsync.dev/managed=true``) is deleted, unless the test said it deletes or edits
  it itself (``tampered``);
- a managed Secret is emptied or holds data that is not the data of its item at some version the test saw:
  the data at the snapshot, the item's current data in the emulator, or data recorded by ``item_changed``;
- a managed Secret goes back to an older item version than it held before (a stale writer);
- a Secret that was not managed at the snapshot is changed or deleted at all.

``converged`` then waits until every Secret opsync should make (one per OnePasswordItem, one per workload
``item-name``) holds exactly its item's current data and version, no other managed Secret exists (no
orphans), every OnePasswordItem is ``Ready=True`` for its current generation, and unmanaged Secrets still
have the resourceVersion and data of the snapshot; and it fails with every violation seen meanwhile.

"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from controllers.constants import ITEM_PATH_ANNOTATION, ITEM_VERSION_ANNOTATION, MANAGED_LABEL, MANAGED_LABEL_VALUE
from controllers.desired import WORKLOAD_KINDS, operator_annotations
from controllers.resources import ONEPASSWORDITEMS
from controllers.secretdata import build_secret_data, item_input_from_connect
from controllers.status import ready_of
from controllers.workloads import annotated_secret
from onepassword_access.emulator import Emulator
from onepassword_access.paths import parse_item_path
from opsync.client import Client, NotFoundError
from opsync.informer import Informer
from opsync.resources import SECRETS, KubeObject
from tests.support.waiting import eventually

Data = dict[str, str]  # a Secret's data as the API serves it (base64 values)


def is_managed(secret: KubeObject) -> bool:
    """Whether the Secret carries opsync's managed label."""
    return (secret["metadata"].get("labels") or {}).get(MANAGED_LABEL) == MANAGED_LABEL_VALUE


def item_data(emulator: Emulator, path: str) -> tuple[Data, str]:
    """The Secret data (base64, as served) and the version opsync should write for the item at ``path`` now."""
    ref = parse_item_path(path)
    item = emulator.get_item(ref.vault, ref.item)
    if item.files:
        raise AssertionError("the invariant checker supports items without files only")
    built = build_secret_data(item_input_from_connect(item, {}))
    return {key: base64.b64encode(value).decode() for key, value in built.data.items()}, str(item.version)


class SecretGuard:
    """Watches a namespace's Secrets during a fault and checks the invariant (see the module docstring)."""

    def __init__(self, kube: Client, namespace: str, emulator: Emulator) -> None:
        self.kube = kube
        self.namespace = namespace
        self.emulator = emulator
        self.violations: list[str] = []
        self.managed: dict[str, KubeObject] = {}
        """The managed Secrets at the snapshot, by name."""
        self.unmanaged: dict[str, KubeObject] = {}
        """The other Secrets at the snapshot, by name."""
        self._allowed: dict[str, list[Data]] = {}  # Secret name -> data it may hold
        self._versions: dict[str, int] = {}  # Secret name -> newest item version it held
        self._tampered: set[str] = set()
        self._informer = Informer(kube, SECRETS, namespaces=[namespace])
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._informer.run(self._stopping), name="secret guard")
        if not await self._informer.wait_for_sync(30):
            raise AssertionError("the Secret guard's informer did not sync")
        for secret in self._informer.list(self.namespace):
            name = secret["metadata"]["name"]
            if is_managed(secret):
                self.managed[name] = secret
                self._allow(name, secret.get("data") or {})
            else:
                self.unmanaged[name] = secret
        self.item_changed()
        self._informer.add_handler(self)  # replays the snapshot as adds: checked like any other event
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    # what the test tells the guard

    def tampered(self, name: str) -> None:
        """The test deletes or edits managed Secret ``name`` itself: that is no violation (``converged``
        still checks that opsync put it back)."""
        self._tampered.add(name)

    def item_changed(self) -> None:
        """Record the current data of every managed Secret's item as allowed (call after changing items, so
        a Secret briefly holding a version the emulator has moved past is no violation)."""
        for secret in self._informer.list(self.namespace):
            path = _path(secret)
            if is_managed(secret) and path:
                self._allow(secret["metadata"]["name"], item_data(self.emulator, path)[0])

    # informer events (ResourceEventHandler)

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        self._check(obj)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        name = new["metadata"]["name"]
        if name in self.unmanaged:
            self.violations.append(f"unmanaged Secret {name} was changed (resourceVersion {_rv(old)} -> {_rv(new)})")
        self._check(new)

    def on_delete(self, obj: KubeObject) -> None:
        name = obj["metadata"]["name"]
        if name in self.unmanaged:
            self.violations.append(f"unmanaged Secret {name} was deleted")
        elif is_managed(obj) and name not in self._tampered:
            self.violations.append(f"managed Secret {name} was deleted")

    def _check(self, secret: KubeObject) -> None:
        name = secret["metadata"]["name"]
        path = _path(secret)
        if not is_managed(secret) or not path or name in self._tampered:
            return
        data = secret.get("data") or {}
        try:
            current, _ = item_data(self.emulator, path)
        except Exception:  # the item is gone from the emulator: only data seen before is allowed
            current = None
        if current is not None:
            self._allow(name, current)
        if not data and current:
            self.violations.append(f"managed Secret {name} was emptied")
        elif data not in self._allowed.get(name, []):
            keys = sorted(data)
            self.violations.append(f"managed Secret {name} got data that no version of its item had (keys {keys})")
        version = int((secret["metadata"].get("annotations") or {}).get(ITEM_VERSION_ANNOTATION) or 0)
        newest = self._versions.get(name, 0)
        if version < newest:
            self.violations.append(f"managed Secret {name} went back from item version {newest} to {version}")
        self._versions[name] = max(version, newest)

    def _allow(self, name: str, data: Mapping[str, str]) -> None:
        allowed = self._allowed.setdefault(name, [])
        if dict(data) not in allowed:
            allowed.append(dict(data))

    # the final check

    async def expected(self) -> dict[str, str]:
        """The Secrets opsync should make now: name -> item path (an item wins over workload annotations)."""
        wanted: dict[str, str] = {}
        for kind in WORKLOAD_KINDS:
            try:
                listed = (await self.kube.list(kind, self.namespace))["items"]
            except NotFoundError:  # an optional kind whose CRD is not installed (Argo Rollouts): none exist
                continue
            for workload in listed:
                name = annotated_secret(workload)
                path = operator_annotations(workload).get(ITEM_PATH_ANNOTATION)
                if name and path and not workload["metadata"].get("deletionTimestamp"):
                    wanted.setdefault(name, path)
        for opi in (await self.kube.list(ONEPASSWORDITEMS, self.namespace))["items"]:
            wanted[opi["metadata"]["name"]] = opi["spec"]["itemPath"]
        return wanted

    async def problems(self) -> list[str]:
        """What is not converged yet (empty when everything is)."""
        found: list[str] = []
        secrets = {s["metadata"]["name"]: s for s in (await self.kube.list(SECRETS, self.namespace))["items"]}
        wanted = await self.expected()
        for name, path in sorted(wanted.items()):
            secret = secrets.get(name)
            data, version = item_data(self.emulator, path)
            if secret is None:
                found.append(f"Secret {name} is missing")
            elif (secret.get("data") or {}) != data:
                found.append(f"Secret {name} does not hold its item's current data")
            elif (secret["metadata"].get("annotations") or {}).get(ITEM_VERSION_ANNOTATION) != version:
                found.append(f"Secret {name} does not name item version {version}")
        orphans = sorted(name for name, s in secrets.items() if is_managed(s) and name not in wanted)
        found += [f"managed Secret {name} is an orphan (no item or workload asks for it)" for name in orphans]
        for name, before in self.unmanaged.items():
            after = secrets.get(name)
            if after is None or _rv(after) != _rv(before) or after.get("data") != before.get("data"):
                found.append(f"unmanaged Secret {name} was touched")
        for opi in (await self.kube.list(ONEPASSWORDITEMS, self.namespace))["items"]:
            ready = ready_of(opi)
            generation = opi["metadata"].get("generation")
            if ready is None or ready["status"] != "True" or ready.get("observedGeneration") != generation:
                found.append(f"OnePasswordItem {opi['metadata']['name']} is not Ready: {ready}")
        return found

    async def converged(self, timeout: float = 60.0) -> None:
        """Wait until everything is in sync (see the module docstring); fail on any violation seen."""
        last: dict[str, list[str]] = {}

        async def in_sync() -> bool:
            last["problems"] = await self.problems()
            return not last["problems"] or bool(self.violations)

        try:
            await eventually(in_sync, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"did not converge within {timeout:g}s: {last['problems']}") from None
        assert not self.violations, self.violations

    def assert_safe(self) -> None:
        """No violation so far (for checks in the middle of a fault)."""
        assert not self.violations, self.violations


def _path(secret: KubeObject) -> str:
    return str((secret["metadata"].get("annotations") or {}).get(ITEM_PATH_ANNOTATION) or "")


def _rv(obj: KubeObject) -> str:
    return str(obj["metadata"].get("resourceVersion"))
