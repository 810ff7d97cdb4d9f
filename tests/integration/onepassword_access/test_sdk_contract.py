"""Contract: ``SdkBackend`` against a real 1Password account. Opt-in: needs ``OP_SERVICE_ACCOUNT_TOKEN``.

Everything else about service accounts is tested through the SDK's published Python layer with the emulator
in place of its native core, never against 1Password itself. With a service account, this checks that the
real core answers as the emulated one does where opsync depends on it:

    OP_SERVICE_ACCOUNT_TOKEN=ops_... [OPSYNC_CONTRACT_ITEM=vaults/<vault>/items/<item>] \\
        .venv/bin/pytest tests/integration/onepassword_access/test_sdk_contract.py

It only reads (one vault listing, item listings, item and file reads), a few dozen calls of the account's
hourly quota. ``OPSYNC_CONTRACT_ITEM`` names an item to resolve and turn into a Secret (default: the first
item of the first vault the token reads).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from controllers.secretdata import build_secret_data, item_input_from_connect
from onepassword_access import ItemResolver, SdkBackend
from opsync import __version__

TOKEN = os.environ.get("OP_SERVICE_ACCOUNT_TOKEN", "")
# The one place a skip is right: without an account there is nothing to check against.
pytestmark = pytest.mark.skipif(not TOKEN, reason="set OP_SERVICE_ACCOUNT_TOKEN to run the contract against 1Password")


async def test_the_real_core_answers_as_the_emulated_one() -> None:
    calls: Counter[str] = Counter()
    backend = SdkBackend(TOKEN, integration_version=__version__, on_call=lambda op, outcome: calls.update([op]))
    await backend.authenticate()
    vaults = await backend.list_vaults()
    assert vaults, "the service account reads no vault"
    path = os.environ.get("OPSYNC_CONTRACT_ITEM", "")
    if not path:
        vault = vaults[0]
        first = next(iter(await backend._active_overviews(vault.id)), None)
        assert first is not None, f"vault {vault.name!r} holds no item; set OPSYNC_CONTRACT_ITEM"
        path = f"vaults/{vault.id}/items/{first.id}"
    resolved = await ItemResolver(backend).resolve(path)
    build_secret_data(item_input_from_connect(resolved.item, resolved.files))  # the real item makes a Secret
    assert resolved.version > 0 and resolved.item.created_at is not None
    assert set(resolved.files) == {f.id for f in resolved.item.files}

    tracked = {resolved.vault_id: {resolved.item.id}}
    first_poll = await backend.poll(tracked)
    assert not first_poll.errors, first_poll.errors
    assert backend.versions(resolved.vault_id) == {resolved.item.id: resolved.version}
    calls.clear()
    quiet = await backend.poll(tracked)
    assert not quiet.errors and not quiet.changes  # nothing changed in between (a busy vault may fail this)
    assert calls == {"VaultsList": 1}
