"""The review's questions: unused services, stale entities, per-account summary, widest gaps,
and what changed between two snapshots."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crawler.analysis.read import (
    CHANGES,
    COMPARE_COLUMNS,
    COMPLETED,
    DEFAULT_DAYS,
    GAP_COLUMNS,
    PRINCIPALS,
    STALE,
    STALE_COLUMNS,
    SUMMARY_COLUMNS,
    TOO_NEW,
    UNKNOWN,
    UNUSED,
    UNUSED_COLUMNS,
    WITHOUT_DATA,
    Snapshot,
    categorize,
    check_days,
    manifest_for,
    read_table,
)
from crawler.outcomes import AccountOutcome, JobOutcome


#: Access advisor's tracking period: a use older than this is reported as "not used".
# -- judging services and entities ----------------------------------------------------------
def _judge_services(snap: Snapshot, window: pd.Timedelta) -> pd.DataFrame:
    """Service rows of entities whose job completed, with ``used`` (within the window before the
    entity's collected_at), ``too_new`` (created inside the window, or when unknown) and ``days_since_use``."""
    entities = snap.entities
    completed = entities.loc[entities["job_outcome"] == COMPLETED,
                             ["account_id", "entity_arn", "create_date", "is_service_linked"]]
    services = snap.services.merge(completed, on=["account_id", "entity_arn"], how="inner", validate="many_to_one")
    start = services["collected_at"] - window
    return services.assign(
        used=services["last_authenticated"] >= start,
        too_new=~(services["create_date"] <= start),
        days_since_use=(services["collected_at"] - services["last_authenticated"]) / pd.Timedelta(days=1))


def _entities_without_data(entities: pd.DataFrame) -> pd.DataFrame:
    return entities[entities["job_outcome"].isin(WITHOUT_DATA)]


def _statuses(flags: pd.Series, when_true: str, when_false: str) -> pd.Series:
    return flags.map({True: when_true, False: when_false}).astype(object)


def _stack(judged: pd.DataFrame, unknown: pd.DataFrame, columns: list[str], sort: list[str],
           statuses: tuple[str, ...]) -> pd.DataFrame:
    """``judged`` rows, then ``unknown`` ones with status "unknown" and null in the columns they lack
    (of ``judged``'s types), under ``columns``, sorted by ``sort``; status categorical of ``statuses``."""
    nulls = {column: pd.Series(index=unknown.index, dtype=judged[column].dtype)
             for column in columns if column not in unknown.columns and column != "status"}
    unknown = unknown.assign(**nulls, status=UNKNOWN)
    stacked = pd.concat([judged[columns], unknown[columns]], ignore_index=True)
    stacked["status"] = pd.Categorical(stacked["status"], categories=statuses)
    return categorize(stacked.sort_values(sort, ignore_index=True, kind="stable"))


def unused_services(snap: Snapshot, days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """Every granted service not used within ``days`` before its entity's ``collected_at``.

    One row per (entity, service) of an entity whose job completed and that did not use the
    service in the window: status "unused", or "too_new" when the entity was created less than
    ``days`` before collected_at (or its creation date is unknown). Plus one row per entity whose
    job did not complete (failed, timed_out, skipped) with null service columns and status
    "unknown": an entity without data is never reported unused. ``days_since_use`` is NaN when
    the service was not used within the tracking period.
    """
    window = check_days(days)
    judged = _judge_services(snap, window)
    unused = judged[~judged["used"]]
    unused = unused.assign(status=_statuses(unused["too_new"], TOO_NEW, UNUSED))
    unknown = _entities_without_data(snap.entities)
    return _stack(unused, unknown, UNUSED_COLUMNS, ["account_id", "entity_arn", "service_namespace"],
                  (UNUSED, TOO_NEW, UNKNOWN))


def stale_entities(snap: Snapshot, days: float = DEFAULT_DAYS, include_service_linked: bool = False) -> pd.DataFrame:
    """Users and roles that used no service within ``days`` before their ``collected_at``.

    Status "stale", or "too_new" when created less than ``days`` before collected_at; a role
    whose RoleLastUsed falls in the window is in use and never listed. Plus "unknown" rows for
    users and roles whose job did not complete. Service-linked roles (which only their service
    may delete) are left out unless ``include_service_linked``.
    """
    window = check_days(days)
    principals = snap.entities[snap.entities["entity_type"].isin(PRINCIPALS)]
    if not include_service_linked:
        principals = principals[~principals["is_service_linked"]]
    usage = snap.services.groupby("entity_arn", observed=True).agg(
        last_used=("last_authenticated", "max"), services_granted=("service_namespace", "size"))
    completed = principals[principals["job_outcome"] == COMPLETED].drop(columns=["services_granted"]).merge(
        usage, left_on="entity_arn", right_index=True, how="left")
    completed["services_granted"] = completed["services_granted"].fillna(0).astype("Int32")
    start = completed["collected_at"] - window
    in_use = (completed["last_used"] >= start) | (completed["role_last_used"] >= start)
    stale = completed[~in_use]
    stale = stale.assign(status=_statuses(~(stale["create_date"] <= start[~in_use]), TOO_NEW, STALE))
    unknown = _entities_without_data(principals)
    return _stack(stale, unknown, STALE_COLUMNS, ["account_id", "entity_arn"], (STALE, TOO_NEW, UNKNOWN))


def account_summary(snap: Snapshot, days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """One row per account of the accounts table: its outcome and what its entities use.

    ``services_granted`` counts (entity, service) pairs of entities whose job completed,
    ``services_used`` those used within ``days``, ``services_unused`` those reported "unused"
    and ``services_too_new`` those of too-new entities; ``share_unused`` is services_unused /
    services_granted (NaN when nothing is granted). ``entities_unknown`` counts entities whose
    job did not complete; ``stale_entities`` the users and roles reported "stale".
    """
    window = check_days(days)
    judged = _judge_services(snap, window)
    services = judged.assign(unused=~judged["used"] & ~judged["too_new"],
                             young=~judged["used"] & judged["too_new"]).groupby("account_id", observed=True).agg(
        services_granted=("used", "size"), services_used=("used", "sum"), services_unused=("unused", "sum"),
        services_too_new=("young", "sum"))
    entities = snap.entities.assign(unknown=snap.entities["job_outcome"].isin(WITHOUT_DATA)).groupby(
        "account_id", observed=True).agg(entities=("entity_arn", "size"), entities_unknown=("unknown", "sum"))
    stale = stale_entities(snap, days)
    stale_counts = stale[stale["status"] == STALE].groupby("account_id", observed=True).size().rename("stale_entities")
    summary = snap.accounts[["account_id", "account_name", "outcome"]]
    for counts in (entities, services, stale_counts):
        summary = summary.merge(counts, left_on="account_id", right_index=True, how="left")
    counted = [column for column in SUMMARY_COLUMNS[3:] if column != "share_unused"]
    summary[counted] = summary[counted].fillna(0).astype("int64")
    granted = summary["services_granted"].where(summary["services_granted"] > 0)
    summary["share_unused"] = (summary["services_unused"] / granted).astype("float64")
    return categorize(summary[SUMMARY_COLUMNS].sort_values("account_id", ignore_index=True))


def widest_gaps(snap: Snapshot, days: float = DEFAULT_DAYS, top: int = 20) -> pd.DataFrame:
    """The ``top`` entities with the most granted services not used within ``days``.

    ``unused`` = services_granted - services_used; ``too_new`` says the entity is younger than
    the window (its gap is not proven yet). Entities whose job did not complete are not ranked.
    """
    window = check_days(days)
    judged = _judge_services(snap, window)
    gaps = judged.groupby(["account_id", "entity_type", "entity_arn", "entity_name"], observed=True).agg(
        services_granted=("used", "size"), services_used=("used", "sum"), too_new=("too_new", "first"))
    gaps = gaps.reset_index()
    gaps["unused"] = gaps["services_granted"] - gaps["services_used"]
    gaps = gaps[gaps["unused"] > 0].sort_values(["unused", "services_granted", "entity_arn"],
                                                ascending=[False, False, True], ignore_index=True)
    return categorize(gaps[GAP_COLUMNS].head(top).reset_index(drop=True))


# -- two snapshots ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Side:
    """What ``compare`` needs of one snapshot."""

    accounts_ok: frozenset[str]
    entities: pd.DataFrame
    services: pd.DataFrame


def _read_side(root: str, snapshot: dt.date | str, window: pd.Timedelta) -> _Side:
    manifest = manifest_for(root, snapshot)
    accounts = read_table(root, manifest, "accounts", None, ["account_id", "outcome"])
    entities = read_table(root, manifest, "entities", None, ["account_id", "entity_arn", "job_outcome"])
    services = read_table(root, manifest, "service_last_accessed", None,
                           ["account_id", "entity_arn", "service_namespace", "last_authenticated", "collected_at"])
    used = services["last_authenticated"] >= services["collected_at"] - window
    services = services.assign(used=used, service_namespace=services["service_namespace"].astype(object))
    return _Side(frozenset(accounts.loc[accounts["outcome"] == AccountOutcome.OK, "account_id"]), entities,
                 services[["account_id", "entity_arn", "service_namespace", "used"]])


def _entity_changes(before: _Side, after: _Side, accounts: frozenset[str]) -> pd.DataFrame:
    keys = ["account_id", "entity_arn"]
    present = [side.entities.loc[side.entities["account_id"].isin(accounts)
                                 & (side.entities["job_outcome"] != JobOutcome.DELETED), keys]
               for side in (before, after)]
    merged = present[0].merge(present[1], on=keys, how="outer", indicator=True)
    change = merged["_merge"].astype(str).map({"left_only": "entity_removed", "right_only": "entity_added"})
    return merged.assign(change=change, service_namespace=None).dropna(subset=["change"])[COMPARE_COLUMNS]


def _completed_arns(side: _Side, accounts: frozenset[str]) -> set[str]:
    entities = side.entities
    return set(entities.loc[entities["account_id"].isin(accounts) & (entities["job_outcome"] == COMPLETED),
                            "entity_arn"])


def _service_changes(before: _Side, after: _Side, accounts: frozenset[str]) -> pd.DataFrame:
    judged = _completed_arns(before, accounts) & _completed_arns(after, accounts)
    sides = [side.services[side.services["entity_arn"].isin(judged)] for side in (before, after)]
    merged = sides[0].merge(sides[1], on=["account_id", "entity_arn", "service_namespace"], how="outer",
                            suffixes=("_before", "_after"), indicator=True)
    origin = merged["_merge"].astype(str)
    both = origin == "both"
    used_before, used_after = merged["used_before"].eq(True), merged["used_after"].eq(True)
    change = np.select([origin == "right_only", origin == "left_only", both & used_before & ~used_after,
                        both & ~used_before & used_after],
                       ["service_added", "service_removed", "became_unused", "used_again"], default="")
    return merged.assign(change=change)[lambda frame: frame["change"] != ""][COMPARE_COLUMNS]


def compare(root: str | os.PathLike[str], snapshot_a: dt.date | str, snapshot_b: dt.date | str,
            days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """What changed from snapshot ``a`` to snapshot ``b``: entities added or removed, services
    granted or taken away, and services that became unused or were used again (within ``days``).

    Only accounts crawled successfully in both snapshots are compared, and services only of
    entities whose job completed in both: what one snapshot does not know is not a change.
    Entity changes have a null service_namespace.
    """
    window = check_days(days)
    path = os.fspath(root)
    before, after = _read_side(path, snapshot_a, window), _read_side(path, snapshot_b, window)
    accounts = before.accounts_ok & after.accounts_ok
    changes = pd.concat([_entity_changes(before, after, accounts), _service_changes(before, after, accounts)],
                        ignore_index=True)
    changes["change"] = pd.Categorical(changes["change"], categories=CHANGES)
    changes = changes.astype({"account_id": "str", "entity_arn": "str", "service_namespace": object})
    return categorize(changes.sort_values(COMPARE_COLUMNS, ignore_index=True, na_position="first"))
