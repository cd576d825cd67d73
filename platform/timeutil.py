"""The one UTC helper: every timestamp the platform makes or reads is timezone-aware UTC.

Standard library only, so the CLI may import it too.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime | None) -> datetime | None:
    """``ts`` in UTC; a naive timestamp (SQLite drops the zone) is taken to be UTC already."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
