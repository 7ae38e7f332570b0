"""The one clock every time-dependent rule reads.

Production reads the system clock. With CROWDLINE_SANDBOX=1 the clock is the system clock
plus an offset (or a frozen instant) stored in the database, so every web and job process
sees the same simulated time. Tests install a ManualClock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from flask import current_app, g, has_request_context

_EXTENSION = "crowdline.clock"


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock tests move by hand; it starts at a fixed instant and never moves by itself."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, instant: datetime) -> datetime:
        self._now = instant.astimezone(UTC)
        return self._now


class SandboxClock:
    """System time shifted (or frozen) by the row in `clock_state`; shared by all processes."""

    def now(self) -> datetime:
        if has_request_context() and "sandbox_now" in g:
            return g.sandbox_now
        from marketplace.database import db
        from marketplace.models import ClockState

        real = datetime.now(UTC)
        state = db.session.get(ClockState, 1)
        if state is None:
            value = real
        elif state.frozen_at is not None:
            value = state.frozen_at
        else:
            value = real + timedelta(seconds=state.offset_seconds)
        if has_request_context():
            g.sandbox_now = value  # one consistent instant per request
        return value

    def forget(self) -> None:
        if has_request_context():
            g.pop("sandbox_now", None)


def install(app, clock: Clock) -> None:
    app.extensions[_EXTENSION] = clock


def current() -> Clock:
    return current_app.extensions[_EXTENSION]


def now() -> datetime:
    """The current instant, timezone-aware UTC, from the installed clock."""
    return current().now()
