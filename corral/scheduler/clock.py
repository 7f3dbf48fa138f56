"""The scheduler's clock, injected so that keep-alive expiry can be tested without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic seconds for deadlines (keep-alive expiry, load durations) and the wall
    clock for what the API shows (``expires_at``, ``loaded_at``)."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock: ``time.monotonic`` (the event loop's clock too) and UTC now."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)
