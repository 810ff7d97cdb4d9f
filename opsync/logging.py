"""Structured logging: JSON lines (or a console format for humans) with per-reconcile context.

``setup_logging()`` configures the root logger once per process. Code logs through the standard
``logging`` module; fields come from two places:

* the *context* (``log_context(controller=..., key=..., reconcileID=...)``), kept in a ``ContextVar`` so
  every line written while a reconcile runs carries them, including lines from libraries;
* ``extra={...}`` on a single call, e.g. ``log.info("updated secret", extra={"secret": "ns/name"})``.

This module cannot tell a secret from any other string: callers must never pass secret values, tokens or
other confidential data as messages, fields or exception text.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "console", "auto"]

_context: ContextVar[Mapping[str, str]] = ContextVar("opsync_log_context", default=MappingProxyType({}))

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_CONTEXT_ATTR = "opsync_context"

# Python names plus zap's (controller-runtime's --zap-log-level), so operators can keep their habits.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
}


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (in this task and the tasks it starts)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    """The fields ``log_context`` has set for the running task."""
    return _context.get()


def parse_level(level: str | int) -> int:
    """A ``logging`` level from a name (``debug``, ``info``, ``warn``/``warning``, ``error``, zap's names) or
    a zap verbosity (a positive integer means debug)."""
    if isinstance(level, int) or level.strip().isdigit():
        return logging.DEBUG if int(level) > 0 else logging.INFO
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warn, error") from None


class _ContextFilter(logging.Filter):
    """Stamps the caller's context on the record while still in the caller's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _CONTEXT_ATTR, _context.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, _CONTEXT_ATTR, {}))
    fields.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k != _CONTEXT_ATTR)
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``setup_logging`` installs (a class of its own so a second call can find and replace it)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, context and extra fields, ``error``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``ts LEVEL logger msg key=value...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}  {record.getMessage()}"
        if pairs:
            line = f"{line}  {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def setup_logging(level: str | int = "info", fmt: LogFormat = "auto") -> None:
    """Send every log line to stderr in ``fmt`` (``auto``: console on a terminal, JSON otherwise).

    Calling it again replaces the previous configuration.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; use json, console or auto")
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    # A probe every few seconds would otherwise drown the operator's own lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
