"""Structured logging: JSON lines with context fields, console format, levels."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from opsync.logging import current_context, log_context, parse_level, setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_context_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    log = logging.getLogger("opsync.test")
    with log_context(controller="items", key="ns/a", reconcileID="r1"):
        log.info("updated %s", "secret", extra={"secret": "ns/a"})
    log.debug("not shown at info")
    (entry,) = lines(capsys.readouterr().err)
    assert entry["msg"] == "updated secret"
    assert entry["level"] == "info"
    assert entry["logger"] == "opsync.test"
    assert str(entry["ts"]).endswith("Z")
    assert (entry["controller"], entry["key"], entry["reconcileID"], entry["secret"]) == ("items", "ns/a", "r1", "ns/a")


@pytest.mark.usefixtures("restore_root")
def test_exceptions_are_logged_in_the_error_field(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "json")
    try:
        raise ValueError("bad input")
    except ValueError:
        logging.getLogger("opsync.test").exception("failed")
    (entry,) = lines(capsys.readouterr().err)
    assert entry["level"] == "error"
    assert "ValueError: bad input" in str(entry["error"])


@pytest.mark.usefixtures("restore_root")
def test_console_format_and_reconfiguration(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    setup_logging("warn", "console")  # replaces, does not add, the handler
    log = logging.getLogger("opsync.test")
    with log_context(controller="items"):
        log.warning("slow")
    log.info("hidden")
    err = capsys.readouterr().err
    assert err.count("slow") == 1
    assert "WARNING" in err and "controller=items" in err
    assert "hidden" not in err


async def test_context_is_per_task() -> None:
    seen: dict[str, str | None] = {}

    async def worker(name: str) -> None:
        with log_context(key=name):
            await asyncio.sleep(0)
            seen[name] = current_context().get("key")

    await asyncio.gather(worker("a"), worker("b"))
    assert seen == {"a": "a", "b": "b"}
    assert "key" not in current_context()


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("debug", logging.DEBUG),
        ("INFO", logging.INFO),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
        ("panic", logging.CRITICAL),
        ("2", logging.DEBUG),
        (0, logging.INFO),
    ],
)
def test_levels(name: str | int, level: int) -> None:
    assert parse_level(name) == level


def test_unknown_level_and_format_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_level("loud")
    with pytest.raises(ValueError):
        setup_logging("info", "xml")  # type: ignore[arg-type]
