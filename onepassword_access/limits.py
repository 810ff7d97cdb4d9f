"""How much opsync accepts from 1Password, whatever the backend (Connect or the SDK).

One item must not be able to exhaust opsync's memory (the chart's limit is 256 MiB) and so take every other
tenant's Secrets down with it, in a crash loop since it would be reconciled first again after a restart.
Every Connect answer is read against one of these bounds and refused, unread beyond the bound, when it is
larger (``onepassword_access.client``). The SDK's native core reads its answers itself, so ``sdk`` can only
refuse what it is handed (an item, a file) before building anything from it; docs/security.md has the table.

A Secret holds at most 1 MiB (the API server's limit), so nothing larger than that can become one: a file
larger than ``MAX_FILE_BYTES`` is refused from its metadata, before it is downloaded. An item's JSON carries
names, ids and sections besides its values, hence a looser bound; listings grow with the number of vaults
or items and get the loosest.
"""

from __future__ import annotations

from typing import Final

MIB: Final = 1024 * 1024
MAX_FILE_BYTES: Final = 1 * MIB
"""A file's content; larger cannot fit in a Secret."""
MAX_ITEM_BYTES: Final = 4 * MIB
"""One item's JSON (fields, sections, file metadata). An item of 100,000 fields is about 8 MiB."""
MAX_LIST_BYTES: Final = 16 * MIB
"""A listing of vaults or of a vault's item summaries (tens of thousands of items)."""
MAX_OTHER_BYTES: Final = 64 * 1024
"""Anything else: ``/health``, ``/heartbeat``, error bodies."""
