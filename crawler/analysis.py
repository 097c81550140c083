"""The questions of a quarterly access review, answered in pandas over the published dataset.

Every read starts from a published run manifest (``runs/<run_id>.json`` with status
"published"): only the files it lists, only the columns asked for and only that run's rows are
read, so a snapshot still being written, or one whose run never published, is never seen.

"Unused" is exact, never a guess: a service is unused only when the entity's access-advisor
job completed and the service's last use is older than ``days`` before that job's completion
(``collected_at``, not today). An entity younger than the window is "too_new" (it has not been
watched for ``days`` yet); an entity whose job did not complete is "unknown" (no data is not
"unused"). ``days`` may not exceed access advisor's 400-day tracking period, beyond which a
missing last use proves nothing. ``docs/analysis.md`` is the analyst's guide.
"""
from __future__ import annotations

import datetime as dt
import json
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from crawler import schema
from crawler.dataset import PUBLISHED, RUN_ID_PATTERN, RUNS_DIR, STORAGE_ERRORS, open_filesystem, read_manifest
from crawler.errors import CrawlerError

#: Access advisor's tracking period: a use older than this is reported as "not used".
TRACKING_PERIOD_DAYS = 400
DEFAULT_DAYS = 90
COMPLETED = "completed"
#: Job outcomes that leave an entity without access data ("deleted" needs none: the entity is gone).
WITHOUT_DATA = ("failed", "timed_out", "skipped")
PRINCIPALS = ("USER", "ROLE")
UNUSED, TOO_NEW, UNKNOWN, STALE = "unused", "too_new", "unknown", "stale"
CHANGES = ("entity_added", "entity_removed", "service_added", "service_removed", "became_unused", "used_again")
#: Low-cardinality text columns, returned as pandas categoricals.
CATEGORICAL = ("run_id", "organization_id", "account_name", "ou_path", "entity_type", "service_namespace",
               "service_name", "action_name", "last_authenticated_region", "last_accessed_region",
               "role_last_used_region", "job_outcome", "outcome", "state", "stage", "error_code", "policy_type",
               "accessor_type", "change")
#: IAM's size limit of a customer-managed policy document (characters, whitespace excluded).
MANAGED_POLICY_MAX_CHARACTERS = 6144

UNUSED_COLUMNS = ["account_id", "account_name", "entity_type", "entity_arn", "entity_name", "service_namespace",
                  "service_name", "last_authenticated", "collected_at", "days_since_use", "status",
                  "create_date", "is_service_linked"]
STALE_COLUMNS = ["account_id", "account_name", "entity_type", "entity_arn", "entity_name", "create_date",
                 "last_used", "role_last_used", "services_granted", "status", "collected_at", "is_service_linked"]
SUMMARY_COLUMNS = ["account_id", "account_name", "outcome", "entities", "entities_unknown", "services_granted",
                   "services_used", "share_unused", "stale_entities", "services_unused", "services_too_new"]
GAP_COLUMNS = ["account_id", "entity_type", "entity_arn", "entity_name", "services_granted", "services_used",
               "unused", "too_new"]
COMPARE_COLUMNS = ["change", "account_id", "entity_arn", "service_namespace"]


class AnalysisError(CrawlerError):
    """The question cannot be answered exactly: no such snapshot, entity or column, or a bad argument."""


# -- reading the published dataset -------------------------------------------------------
def snapshots(root: str | os.PathLike[str]) -> list[dt.date]:
    """The dates of the published snapshots under ``root``, ascending."""
    return sorted({_manifest_date(manifest) for manifest in _published_manifests(os.fspath(root))})


def load(root: str | os.PathLike[str], table: str = "service_last_accessed",
         snapshot: dt.date | str | None = None, accounts: str | Iterable[str] | None = None,
         columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One table of a published snapshot as a DataFrame.

    ``snapshot`` is a date or "YYYY-MM-DD" (None: the latest published); ``accounts`` keeps only
    those account ids (text, as written: ``"001234567000"``); ``columns`` reads only those columns.
    Timestamps are tz-aware UTC, low-cardinality text is categorical, account_id stays text and
    ``snapshot_date`` (a ``datetime.date``) is always added. AnalysisError for an unknown snapshot
    (with the published ones), table or column.
    """
    manifest = _manifest_for(os.fspath(root), snapshot)
    return _read_table(os.fspath(root), manifest, table, accounts, columns)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One published snapshot in memory: the five tables a review needs, as DataFrames."""

    root: str
    date: dt.date
    services: pd.DataFrame
    actions: pd.DataFrame
    entities: pd.DataFrame
    accounts: pd.DataFrame
    errors: pd.DataFrame
    run_id: str = ""
    #: SERVICE_LEVEL or ACTION_LEVEL, as the run was configured (None when the manifest does not say).
    granularity: str | None = None


def open_snapshot(root: str | os.PathLike[str], snapshot: dt.date | str | None = None,
                  accounts: str | Iterable[str] | None = None) -> Snapshot:
    """Read a published snapshot (None: the latest) of ``accounts`` (None: all) into a :class:`Snapshot`."""
    path = os.fspath(root)
    manifest = _manifest_for(path, snapshot)
    tables = {name: _read_table(path, manifest, table, accounts, None) for name, table in (
        ("services", "service_last_accessed"), ("actions", "action_last_accessed"), ("entities", "entities"),
        ("accounts", "accounts"), ("errors", "errors"))}
    return Snapshot(root=path, date=_manifest_date(manifest), run_id=str(manifest["run_id"]),
                    granularity=manifest.get("granularity"), **tables)


def _published_manifests(root: str) -> list[dict[str, Any]]:
    filesystem, base = open_filesystem(root)
    try:
        listing = filesystem.get_file_info(pafs.FileSelector(f"{base}/{RUNS_DIR}", allow_not_found=True))
    except STORAGE_ERRORS as error:
        raise AnalysisError(f"cannot list the run manifests under {root}: {error}") from error
    run_ids = [info.base_name.removesuffix(".json") for info in listing
               if info.type == pafs.FileType.File and info.base_name.endswith(".json")]
    manifests = [read_manifest(root, run_id) for run_id in run_ids if RUN_ID_PATTERN.fullmatch(run_id)]
    return [manifest for manifest in manifests if manifest.get("status") == PUBLISHED]


def _manifest_date(manifest: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(str(manifest["snapshot_date"]))


def _manifest_for(root: str, snapshot: dt.date | str | None) -> dict[str, Any]:
    """The manifest of the published snapshot asked for; the latest publish wins when a date was rerun."""
    published = _published_manifests(root)
    available = sorted({_manifest_date(manifest) for manifest in published})
    if not available:
        raise AnalysisError(f"no published snapshot under {root}: has a crawl published there yet?")
    wanted = available[-1] if snapshot is None else _as_date(snapshot)
    if wanted not in available:
        listed = ", ".join(day.isoformat() for day in available)
        raise AnalysisError(f"no published snapshot {wanted.isoformat()} under {root}; published: {listed}")
    candidates = [manifest for manifest in published if _manifest_date(manifest) == wanted]
    return max(candidates, key=lambda doc: (str(doc.get("published_at", "")), str(doc.get("run_id", ""))))


def _as_date(snapshot: dt.date | str) -> dt.date:
    if isinstance(snapshot, dt.datetime):
        raise AnalysisError(f"snapshot must be a date or 'YYYY-MM-DD', not a datetime ({snapshot})")
    if isinstance(snapshot, dt.date):
        return snapshot
    try:
        return dt.date.fromisoformat(str(snapshot))
    except ValueError as error:
        raise AnalysisError(f"snapshot {snapshot!r} is not a date (YYYY-MM-DD)") from error


def _read_table(root: str, manifest: dict[str, Any], table: str, accounts: str | Iterable[str] | None,
                columns: Sequence[str] | None) -> pd.DataFrame:
    """The rows of ``table`` that the manifest's run wrote, from the files the manifest lists only."""
    wanted = _columns_of(table, columns)
    entry = (manifest.get("tables") or {}).get(table)
    if entry is None:
        raise AnalysisError(f"the manifest of run {manifest.get('run_id')} lists no table {table}")
    filesystem, base = open_filesystem(root)
    paths = [f"{base}/{part['path']}" for part in entry["files"]]
    condition = ds.field("run_id") == str(manifest["run_id"])
    if accounts is not None:
        condition &= ds.field("account_id").isin(_account_ids(accounts))
    try:
        dataset = ds.dataset(paths, schema=schema.TABLES[table], format="parquet", filesystem=filesystem)
        arrow_table = dataset.to_table(columns=wanted, filter=condition)
    except STORAGE_ERRORS as error:
        raise AnalysisError(f"cannot read {table} of snapshot {manifest.get('snapshot_date')} under {root} "
                            f"(access-crawler verify checks it): {error}") from error
    if arrow_table.num_rows == 0 and accounts is None and entry.get("rows"):
        raise AnalysisError(f"{table} of snapshot {manifest.get('snapshot_date')} no longer holds the rows of "
                            f"run {manifest.get('run_id')}: a later run replaced it without publishing")
    frame = arrow_table.to_pandas(types_mapper=_nullable_integers)
    frame[schema.PARTITION_COLUMN] = pd.Series([_manifest_date(manifest)] * len(frame), index=frame.index,
                                               dtype=object)
    return _categorize(frame)


def _columns_of(table: str, columns: Sequence[str] | None) -> list[str]:
    if table not in schema.TABLES:
        raise AnalysisError(f"unknown table {table!r}; tables are {', '.join(sorted(schema.TABLES))}")
    names = schema.TABLES[table].names
    if columns is None:
        return list(names)
    if isinstance(columns, str):
        columns = [columns]
    unknown = [column for column in columns if column not in names and column != schema.PARTITION_COLUMN]
    if unknown:
        raise AnalysisError(f"{table} has no column {', '.join(unknown)}; its columns are {', '.join(names)}")
    return [column for column in dict.fromkeys(columns) if column != schema.PARTITION_COLUMN]


def _account_ids(accounts: str | Iterable[str]) -> list[str]:
    ids = [accounts] if isinstance(accounts, str) else list(accounts)
    wrong = [account for account in ids if not isinstance(account, str)]
    if wrong:
        raise AnalysisError(f"account ids are text (a number loses leading zeros): got {wrong[0]!r}")
    return ids


def _nullable_integers(kind: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    """int32 columns as pandas' nullable Int32, so a null count stays an integer column."""
    return pd.Int32Dtype() if kind == pa.int32() else None


def _categorize(frame: pd.DataFrame) -> pd.DataFrame:
    for column in CATEGORICAL:
        if column in frame.columns and not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype("category")
    return frame


# -- judging services and entities ----------------------------------------------------------
def _check_days(days: float) -> pd.Timedelta:
    if isinstance(days, bool) or not isinstance(days, numbers.Real) or not 0 < days <= TRACKING_PERIOD_DAYS:
        raise AnalysisError(f"days must be more than 0 and at most {TRACKING_PERIOD_DAYS} (access advisor's "
                            f"tracking period: older use is reported as never used), not {days!r}")
    return pd.Timedelta(days=days)


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
    return _categorize(stacked.sort_values(sort, ignore_index=True, kind="stable"))


def unused_services(snap: Snapshot, days: float = DEFAULT_DAYS) -> pd.DataFrame:
    """Every granted service not used within ``days`` before its entity's ``collected_at``.

    One row per (entity, service) of an entity whose job completed and that did not use the
    service in the window: status "unused", or "too_new" when the entity was created less than
    ``days`` before collected_at (or its creation date is unknown). Plus one row per entity whose
    job did not complete (failed, timed_out, skipped) with null service columns and status
    "unknown": an entity without data is never reported unused. ``days_since_use`` is NaN when
    the service was not used within the tracking period.
    """
    window = _check_days(days)
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
    window = _check_days(days)
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
    window = _check_days(days)
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
    return _categorize(summary[SUMMARY_COLUMNS].sort_values("account_id", ignore_index=True))


def widest_gaps(snap: Snapshot, days: float = DEFAULT_DAYS, top: int = 20) -> pd.DataFrame:
    """The ``top`` entities with the most granted services not used within ``days``.

    ``unused`` = services_granted - services_used; ``too_new`` says the entity is younger than
    the window (its gap is not proven yet). Entities whose job did not complete are not ranked.
    """
    window = _check_days(days)
    judged = _judge_services(snap, window)
    gaps = judged.groupby(["account_id", "entity_type", "entity_arn", "entity_name"], observed=True).agg(
        services_granted=("used", "size"), services_used=("used", "sum"), too_new=("too_new", "first"))
    gaps = gaps.reset_index()
    gaps["unused"] = gaps["services_granted"] - gaps["services_used"]
    gaps = gaps[gaps["unused"] > 0].sort_values(["unused", "services_granted", "entity_arn"],
                                                ascending=[False, False, True], ignore_index=True)
    return _categorize(gaps[GAP_COLUMNS].head(top).reset_index(drop=True))


# -- two snapshots ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Side:
    """What ``compare`` needs of one snapshot."""

    accounts_ok: frozenset[str]
    entities: pd.DataFrame
    services: pd.DataFrame


def _read_side(root: str, snapshot: dt.date | str, window: pd.Timedelta) -> _Side:
    manifest = _manifest_for(root, snapshot)
    accounts = _read_table(root, manifest, "accounts", None, ["account_id", "outcome"])
    entities = _read_table(root, manifest, "entities", None, ["account_id", "entity_arn", "job_outcome"])
    services = _read_table(root, manifest, "service_last_accessed", None,
                           ["account_id", "entity_arn", "service_namespace", "last_authenticated", "collected_at"])
    used = services["last_authenticated"] >= services["collected_at"] - window
    services = services.assign(used=used, service_namespace=services["service_namespace"].astype(object))
    return _Side(frozenset(accounts.loc[accounts["outcome"] == "ok", "account_id"]), entities,
                 services[["account_id", "entity_arn", "service_namespace", "used"]])


def _entity_changes(before: _Side, after: _Side, accounts: frozenset[str]) -> pd.DataFrame:
    keys = ["account_id", "entity_arn"]
    present = [side.entities.loc[side.entities["account_id"].isin(accounts)
                                 & (side.entities["job_outcome"] != "deleted"), keys] for side in (before, after)]
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
    window = _check_days(days)
    path = os.fspath(root)
    before, after = _read_side(path, snapshot_a, window), _read_side(path, snapshot_b, window)
    accounts = before.accounts_ok & after.accounts_ok
    changes = pd.concat([_entity_changes(before, after, accounts), _service_changes(before, after, accounts)],
                        ignore_index=True)
    changes["change"] = pd.Categorical(changes["change"], categories=CHANGES)
    changes = changes.astype({"account_id": "str", "entity_arn": "str", "service_namespace": object})
    return _categorize(changes.sort_values(COMPARE_COLUMNS, ignore_index=True, na_position="first"))


# -- least privilege ------------------------------------------------------------------------
@dataclass(frozen=True)
class LeastPrivilege:
    """A suggested policy for one entity: what it used within the window, and what was not judged."""

    entity_arn: str
    services_used: list[str]
    actions_used: list[str]
    policy: dict[str, Any]
    not_judged: list[str]


@dataclass(frozen=True)
class _ServiceGrant:
    """What the document keeps of one used service, and why (narrowed, no_tracking, untracked_use)."""

    namespace: str
    policy_actions: list[str]
    actions_used: list[str]
    basis: str


def least_privilege(snap: Snapshot, entity_arn: str, days: float = DEFAULT_DAYS) -> LeastPrivilege:
    """The smallest policy access advisor can justify for ``entity_arn``, and what it cannot judge.

    Services used within ``days`` before collected_at are kept: narrowed to the tracked actions
    used where action-level data exists and explains the service's last use, as ``namespace:*``
    otherwise. ``not_judged`` says, in words, what the data cannot show (untracked actions,
    iam:PassRole, resources, a young entity). AnalysisError for an entity not in the snapshot
    or whose job did not complete.
    """
    window = _check_days(days)
    entity = _completed_entity(snap, entity_arn)
    start = entity["collected_at"] - window
    services = snap.services[snap.services["entity_arn"] == entity_arn]
    used = services[services["last_authenticated"] >= start].sort_values("service_namespace")
    actions = snap.actions[snap.actions["entity_arn"] == entity_arn]
    grants = [_service_grant(str(namespace), last, actions[actions["service_namespace"] == namespace], start)
              for namespace, last in zip(used["service_namespace"], used["last_authenticated"], strict=True)]
    policy_actions = sorted({action for grant in grants for action in grant.policy_actions})
    statements = [{"Effect": "Allow", "Action": policy_actions, "Resource": "*"}] if policy_actions else []
    policy = {"Version": "2012-10-17", "Statement": statements}
    granted = {str(namespace) for namespace in services["service_namespace"]}
    return LeastPrivilege(
        entity_arn=entity_arn, services_used=[grant.namespace for grant in grants],
        actions_used=sorted(action for grant in grants for action in grant.actions_used), policy=policy,
        not_judged=_not_judged(grants, granted, entity, days, snap.granularity, policy))


def _completed_entity(snap: Snapshot, entity_arn: str) -> pd.Series:
    rows = snap.entities[snap.entities["entity_arn"] == entity_arn]
    if rows.empty:
        raise AnalysisError(f"no entity {entity_arn} in snapshot {snap.date} under {snap.root} "
                            f"(or its account was filtered out)")
    entity = rows.iloc[0]
    if entity["job_outcome"] != COMPLETED:
        code = "no error code" if pd.isna(entity["error_code"]) else entity["error_code"]
        raise AnalysisError(f"no access data for {entity_arn} in snapshot {snap.date}: its job "
                            f"{entity['job_outcome']} ({code}); nothing can be judged until a crawl completes it")
    return entity


def _service_grant(namespace: str, last_authenticated: pd.Timestamp, tracked: pd.DataFrame,
                   start: pd.Timestamp) -> _ServiceGrant:
    """Narrow a used service to its used tracked actions when they explain its last use."""
    if tracked.empty:
        return _ServiceGrant(namespace, [f"{namespace}:*"], [], "no_tracking")
    in_window = tracked[tracked["last_accessed_time"] >= start]
    used = sorted(f"{namespace}:{name}" for name in in_window["action_name"].astype(str))
    latest = tracked["last_accessed_time"].max()
    if pd.isna(latest) or latest < last_authenticated:
        return _ServiceGrant(namespace, [f"{namespace}:*"], used, "untracked_use")
    return _ServiceGrant(namespace, used, used, "narrowed")


def _not_judged(grants: list[_ServiceGrant], granted: set[str], entity: pd.Series, days: float,
                granularity: str | None, policy: dict[str, Any]) -> list[str]:
    """The reasons, in words, why the document may be too narrow or too wide."""
    by_basis = {basis: sorted(grant.namespace for grant in grants if grant.basis == basis)
                for basis in ("no_tracking", "untracked_use", "narrowed")}
    kept = ", ".join(f"{namespace}:*" for namespace in by_basis["no_tracking"])
    reasons = []
    if by_basis["no_tracking"] and granularity == "SERVICE_LEVEL":
        reasons.append(f"the snapshot was crawled at SERVICE_LEVEL, so no action was judged: kept {kept} "
                       f"(crawl with advisor.granularity: ACTION_LEVEL to narrow them)")
    elif by_basis["no_tracking"]:
        reasons.append(f"access advisor tracks none of the actions granted in {', '.join(by_basis['no_tracking'])}: "
                       f"kept {kept}")
    if by_basis["untracked_use"]:
        reasons.append(f"{', '.join(by_basis['untracked_use'])} last used through an action access advisor does "
                       f"not track (the service's last use is later than every tracked action's): kept "
                       f"{', '.join(f'{namespace}:*' for namespace in by_basis['untracked_use'])}")
    if by_basis["narrowed"]:
        reasons.append(f"{', '.join(by_basis['narrowed'])} narrowed to the tracked actions used within {days:g} days; "
                       f"access advisor tracks only some actions of a service, so an untracked action the entity "
                       f"needs (data events, for one) is not in the document: check CloudTrail before applying it")
    if "iam" in granted:
        reasons.append("iam:PassRole is never tracked by access advisor: if the entity passes roles to AWS "
                       "services, add iam:PassRole for those roles")
    reasons.append("resources and conditions are not judged: access advisor records neither, so the document "
                   "allows every resource (\"Resource\": \"*\")")
    reasons.extend(_age_and_size_reasons(grants, entity, days, policy))
    return reasons


def _age_and_size_reasons(grants: list[_ServiceGrant], entity: pd.Series, days: float,
                          policy: dict[str, Any]) -> list[str]:
    reasons = []
    created = entity["create_date"]
    if pd.isna(created) or created > entity["collected_at"] - pd.Timedelta(days=days):
        when = "on an unknown date" if pd.isna(created) else f"on {created.date().isoformat()}"
        reasons.append(f"the entity was created {when}, less than {days:g} days before its data was collected: "
                       f"it may not yet have used every service it needs")
    if not grants:
        reasons.append(f"no service was used within {days:g} days: the document allows nothing")
    size = len(json.dumps(policy, separators=(",", ":")))
    if size > MANAGED_POLICY_MAX_CHARACTERS:
        reasons.append(f"the document is {size:,} characters, more than the {MANAGED_POLICY_MAX_CHARACTERS:,} IAM "
                       f"allows a managed policy: split it")
    return reasons


# -- SQL ------------------------------------------------------------------------------------
def example_queries() -> dict[str, str]:
    """The example DuckDB queries shipped in ``crawler/sql``, by name: unused_services,
    stale_entities, account_summary. Each reads only the published snapshot; set the variables
    its header names first (``SET VARIABLE root = 'out';``)."""
    folder = resources.files("crawler").joinpath("sql")
    return {entry.name.removesuffix(".sql"): entry.read_text("utf-8")
            for entry in sorted(folder.iterdir(), key=lambda item: item.name) if entry.name.endswith(".sql")}
