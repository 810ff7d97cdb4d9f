"""A clock for tests."""

from __future__ import annotations


class FakeClock:
    """Returns ``now`` when called; move it with ``advance`` (or by setting ``now``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
        return self.now
