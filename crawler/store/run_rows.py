"""Rows of the ``crawl_runs`` table, made from run manifests when a snapshot is published (pure functions).

A snapshot's ``crawl_runs`` partition holds one row per run of its date: the run it publishes
(``published``), runs that published the date before (``superseded``) and runs that never
published (``running``, ``interrupted``, ``failed``), so SQL users pick the published run with
a join instead of reading JSON manifests.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from crawler.outcomes import AccountOutcome, RunStatus

#: The status of a manifest whose date was published again by a later run.
SUPERSEDED = RunStatus.SUPERSEDED


def crawl_runs_rows(published: Mapping[str, Any], table_rows: Mapping[str, int],
                    others: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows for the run publishing ``published`` (with ``table_rows``) and the date's ``others``.

    Every other run that had published the date is marked superseded by this one.
    """
    run_id = str(published["run_id"])
    rows = [run_row(published, RunStatus.PUBLISHED, None, table_rows)]
    for document in others:
        status = str(document.get("status") or "unknown")
        if status in (RunStatus.PUBLISHED, SUPERSEDED):
            rows.append(run_row(document, SUPERSEDED, document.get("superseded_by") or run_id))
        else:
            rows.append(run_row(document, status, None))
    return rows


def run_row(document: Mapping[str, Any], status: str, superseded_by: str | None,
            table_rows: Mapping[str, int] | None = None) -> dict[str, Any]:
    """One run manifest as a ``crawl_runs`` row (its own table rows when ``table_rows`` is None)."""
    accounts = _mapping(document.get("accounts"))
    entities = _mapping(document.get("entities"))
    if table_rows is None:
        table_rows = {name: int(entry.get("rows", 0)) for name, entry in (document.get("tables") or {}).items()
                      if isinstance(entry, Mapping)}
    shards = document.get("shards") or []
    return {
        "run_id": str(document["run_id"]), "status": status, "superseded_by": superseded_by,
        "started_at": _instant(document.get("started_at")), "finished_at": _instant(document.get("finished_at")),
        "published_at": _instant(document.get("published_at")),
        "config_digest": _text(document.get("config_digest")), "tool_version": _text(document.get("version")),
        "organization_id": _text(document.get("organization_id")), "granularity": _text(document.get("granularity")),
        "resumed": document.get("resumed") if isinstance(document.get("resumed"), bool) else None,
        "shards": int((shards[0].get("shard") or {}).get("count", len(shards))) if shards else None,
        "accounts_selected": _count(accounts.get("selected")), "accounts_ok": _count(accounts.get(AccountOutcome.OK)),
        "accounts_failed": _count(accounts.get(AccountOutcome.FAILED)),
        "accounts_skipped": _count(accounts.get(AccountOutcome.SKIPPED)),
        "entities": _count(sum(count for count in entities.values() if _count(count) is not None)),
        "entities_missing": _count(document.get("entities_missing")), "errors": _count(document.get("errors")),
        "table_rows": [{"table": name, "rows": int(rows)} for name, rows in sorted(table_rows.items())
                       if name != "crawl_runs"],
    }


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _instant(text: Any) -> datetime | None:
    """An ISO time with its offset as an aware datetime; None for anything else (a manifest is not trusted)."""
    try:
        parsed = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
