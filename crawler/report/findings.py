"""What the review shows, gathered from :mod:`crawler.analysis` and nowhere else.

:func:`gather_findings` asks the analysis library its questions about one snapshot (and, for the
trend, about every published snapshot up to it) and keeps the answers as DataFrames that the
HTML page, the workbook and the CSV files all render: one set of numbers for every format.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crawler import analysis
from crawler.outcomes import AccountOutcome
from crawler.report.markup import ARN, COUNT, DATE, KEY, SHARE, TEXT

#: Upper edges (days since last use) of the age histogram's buckets; the review window is added.
AGE_EDGES = (30, 90, 180, 365, analysis.TRACKING_PERIOD_DAYS)
NEVER_USED = "never used in tracking period"
NOT_CRAWLED = AccountOutcome.NOT_CRAWLED


@dataclass(frozen=True, eq=False)
class Findings:
    """The answers a quarterly review needs about one snapshot, each a DataFrame (or a few numbers)."""

    root: str
    snapshot_date: dt.date
    days: int
    #: label, value and kind (count, share, date, text) of each organization-wide figure.
    summary: list[tuple[str, Any, str]]
    accounts: pd.DataFrame
    unused_services: pd.DataFrame
    stale_entities: pd.DataFrame
    widest_gaps: pd.DataFrame
    failed_accounts: pd.DataFrame
    unknown_entities: pd.DataFrame
    last_use_ages: pd.DataFrame
    trend: pd.DataFrame
    granularity: str | None
    #: The Organizations view per (target, SCP): services allowed, used, unused (None: not crawled).
    scps: pd.DataFrame | None = None


def gather_findings(root: str | os.PathLike[str], snapshot: dt.date | None = None,
                    days: int = analysis.DEFAULT_DAYS) -> Findings:
    """Open the snapshot (None: the latest published) and collect every finding of the review."""
    snap = analysis.open_snapshot(root, snapshot)
    accounts = analysis.account_summary(snap, days)
    unused = analysis.unused_services(snap, days)
    stale = analysis.stale_entities(snap, days)
    return Findings(
        root=os.fspath(root), snapshot_date=snap.date, days=days,
        summary=organization_summary(snap.date, days, accounts),
        accounts=accounts, unused_services=services_held_unused(unused),
        stale_entities=stale[stale["status"] == analysis.STALE].reset_index(drop=True),
        widest_gaps=analysis.widest_gaps(snap, days), failed_accounts=failed_accounts(snap, accounts),
        unknown_entities=unknown_entities(snap, unused), last_use_ages=last_use_ages(snap, days),
        trend=trend(root, snap.date, accounts, days), granularity=snap.granularity,
        scps=scp_findings(root, snap.date, days))


def scp_findings(root: str | os.PathLike[str], snapshot: dt.date, days: int) -> pd.DataFrame | None:
    """The Organizations view summed per (target, SCP), or None when the snapshot was crawled without it."""
    try:
        return analysis.scp_summary(analysis.scp_review(root, snapshot, days))
    except analysis.NoOrganizationsView:
        return None


def organization_summary(snapshot_date: dt.date, days: int, accounts: pd.DataFrame) -> list[tuple[str, Any, str]]:
    """The organization-wide figures: accounts by outcome, entities, granted services and how many are unused."""
    outcomes = accounts["outcome"].astype(str).value_counts()
    granted = int(accounts["services_granted"].sum())
    unused = int(accounts["services_unused"].sum())
    return [
        ("snapshot", snapshot_date, DATE),
        ("review window (days)", days, COUNT),
        ("accounts crawled", int(outcomes.get(AccountOutcome.OK, 0)), COUNT),
        ("accounts failed", int(outcomes.get(AccountOutcome.FAILED, 0)), COUNT),
        ("accounts skipped", int(outcomes.get(AccountOutcome.SKIPPED, 0)), COUNT),
        ("entities", int(accounts["entities"].sum()), COUNT),
        ("entities without data (unknown)", int(accounts["entities_unknown"].sum()), COUNT),
        ("granted services (entity x service)", granted, COUNT),
        ("granted services used", int(accounts["services_used"].sum()), COUNT),
        ("granted services unused", unused, COUNT),
        ("granted services of too-new entities", int(accounts["services_too_new"].sum()), COUNT),
        ("share of granted services unused", share_of(unused, granted), SHARE),
        ("stale users and roles", int(accounts["stale_entities"].sum()), COUNT),
    ]


def share_of(part: int, whole: int) -> float:
    """``part / whole``, NaN when ``whole`` is 0."""
    return part / whole if whole else float("nan")


def overall_share_unused(accounts: pd.DataFrame) -> float:
    """Unused granted services over all granted services of an account summary."""
    return share_of(int(accounts["services_unused"].sum()), int(accounts["services_granted"].sum()))


def services_held_unused(unused: pd.DataFrame) -> pd.DataFrame:
    """One row per service: how many entities (and in how many accounts) hold it unused; most first."""
    rows = unused[unused["status"] == analysis.UNUSED].astype(
        {"service_namespace": str, "service_name": object})
    grouped = rows.groupby("service_namespace").agg(
        service_name=("service_name", "first"), entities=("entity_arn", "nunique"),
        accounts=("account_id", "nunique"))
    grouped = grouped.reset_index().sort_values(["entities", "service_namespace"], ascending=[False, True])
    return grouped[["service_namespace", "service_name", "entities", "accounts"]].reset_index(drop=True)


def failed_accounts(snap: analysis.Snapshot, accounts: pd.DataFrame) -> pd.DataFrame:
    """Accounts not crawled (failed or skipped), with the AWS error that stopped them."""
    missing = accounts[accounts["outcome"].astype(str).isin(NOT_CRAWLED)][["account_id", "account_name", "outcome"]]
    errors = snap.accounts[["account_id", "error_code", "error_message"]]
    return missing.merge(errors, on="account_id", how="left").astype(
        {"account_name": object, "outcome": object, "error_code": object}).reset_index(drop=True)


def unknown_entities(snap: analysis.Snapshot, unused: pd.DataFrame) -> pd.DataFrame:
    """Entities whose access-advisor job did not complete (so never counted unused), with why."""
    unknown = unused[unused["status"] == analysis.UNKNOWN][
        ["account_id", "account_name", "entity_type", "entity_arn", "entity_name"]]
    outcomes = snap.entities[["entity_arn", "job_outcome", "error_code", "error_message"]]
    merged = unknown.merge(outcomes, on="entity_arn", how="left")
    return merged.astype({"account_name": object, "entity_type": object, "job_outcome": object,
                          "error_code": object}).reset_index(drop=True)


def age_edges(days: int) -> list[int]:
    """The histogram's bucket edges in days: the fixed ones and the review window."""
    return sorted({*AGE_EDGES, days})


def last_use_ages(snap: analysis.Snapshot, days: int) -> pd.DataFrame:
    """How long ago each granted (entity, service) pair was last used, in buckets of days, and how many
    were never used in the tracking period: differences of the analysis' ``services_used`` at each edge."""
    edges = age_edges(days)
    summaries = [analysis.account_summary(snap, edge) for edge in edges]
    used_within = [int(summary["services_used"].sum()) for summary in summaries]
    granted = int(summaries[-1]["services_granted"].sum())
    counts = [used - earlier for used, earlier in zip(used_within, [0, *used_within[:-1]], strict=True)]
    return pd.DataFrame({"last_used_ago": [*_bucket_labels(edges), NEVER_USED],
                         "services": [*counts, granted - used_within[-1]]})


def _bucket_labels(edges: Sequence[int]) -> list[str]:
    lows = [0, *edges[:-1]]
    return [f"{low}-{high} days" for low, high in zip(lows, edges, strict=True)]


def trend(root: str | os.PathLike[str], current: dt.date, accounts: pd.DataFrame, days: int) -> pd.DataFrame:
    """Share of granted services unused in every published snapshot up to ``current`` (whose account
    summary is ``accounts``), oldest first."""
    earlier = [day for day in analysis.snapshots(root) if day < current]
    shares = [overall_share_unused(analysis.account_summary(analysis.open_snapshot(root, day), days))
              for day in earlier]
    return pd.DataFrame({"snapshot_date": [*earlier, current],
                         "share_unused": [*shares, overall_share_unused(accounts)]})


#: Kinds of the columns the findings' tables hold (for formatting in every output format).
COLUMN_KINDS = {
    "share_unused": SHARE, "entities": COUNT, "entities_unknown": COUNT, "services_granted": COUNT,
    "services_used": COUNT, "services_unused": COUNT, "services_too_new": COUNT, "stale_entities": COUNT,
    "accounts": COUNT, "unused": COUNT, "services": COUNT, "create_date": DATE, "last_used": DATE,
    "role_last_used": DATE, "collected_at": DATE, "snapshot_date": DATE, "entity_arn": ARN,
    "account_id": KEY, "entity_type": KEY, "outcome": KEY, "job_outcome": KEY, "service_namespace": KEY,
    "error_code": KEY, "services_allowed": COUNT,
    "target_type": KEY, "target_path": ARN,
}


def column_kind(name: str) -> str:
    """How a findings column is formatted: count, share, date or text."""
    return COLUMN_KINDS.get(name, TEXT)
