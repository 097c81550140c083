"""Which snapshot, and which run of it, is published: the one rule every reader follows.

``verify``, ``report``, :mod:`crawler.analysis`, a resumed run and the SQL examples
(``crawler/sql``) all pick the same snapshot. The default is the latest snapshot date that has a
published run; within a date, the run published last (a republish marks the earlier manifests
``superseded``, and until it has, the newest publish wins). These functions are pure: the
manifests are read by :func:`crawler.store.dataset.scan_manifests`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

#: The status of the run whose rows a snapshot holds.
PUBLISHED = "published"


def manifest_date(document: Mapping[str, Any]) -> date | None:
    """The manifest's snapshot date, if it is a date written as YYYY-MM-DD (None otherwise)."""
    text = document.get("snapshot_date")
    try:
        parsed = date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.isoformat() == text else None


def published(documents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The manifests of published runs (with a valid snapshot date)."""
    return [document for document in documents
            if document.get("status") == PUBLISHED and manifest_date(document) is not None]


def published_dates(documents: Iterable[Mapping[str, Any]]) -> list[date]:
    """The snapshot dates with a published run, ascending."""
    return sorted({day for document in published(documents) if (day := manifest_date(document)) is not None})


def choose_published(documents: Iterable[Mapping[str, Any]],
                     snapshot_date: date | None = None) -> Mapping[str, Any] | None:
    """The published manifest of ``snapshot_date`` (None: the latest date published), or None if there is none."""
    runs = published(documents)
    dates = published_dates(runs)
    wanted = snapshot_date if snapshot_date is not None else (dates[-1] if dates else None)
    candidates = [document for document in runs if manifest_date(document) == wanted]
    return max(candidates, default=None,
               key=lambda document: (str(document.get("published_at", "")), str(document.get("run_id", ""))))
