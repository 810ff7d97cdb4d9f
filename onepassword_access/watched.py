"""Files opsync re-reads when they change: the token files and the CA bundle, mounted from Secrets.

A Secret volume is updated by swapping a symlink, so a file's identity (inode), size and modification time
together tell a change; a stat is cheap enough to do on the event loop now and then.
"""

from __future__ import annotations

import os
from pathlib import Path

RELOAD_CHECK = 1.0
"""Seconds between checks of a watched file for changes."""


class WatchedFile:
    """A file whose changes are noticed by its identity (a Secret volume swaps a symlink), size and mtime."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_ino, found.st_size, found.st_mtime_ns

    def changed(self) -> str | None:
        """The file's new text when it changed since last seen, else None (also when it cannot be read)."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return None
        try:
            text = Path(self.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        self._seen = identity
        return text
