"""Timestamps in UTC: what every row, account and entity of the crawler carries."""
from __future__ import annotations

from datetime import datetime, timezone


def utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC: botocore's timestamps are tz-aware; a naive one is UTC by AWS convention."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
