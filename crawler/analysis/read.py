"""Reading the published dataset: snapshots, tables and one snapshot's tables together.

Only the files a published run manifest lists are read, only that run's rows and only the
columns asked for. The constants every part of :mod:`crawler.analysis` shares live here.
"""
from __future__ import annotations

import datetime as dt
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from crawler.errors import CrawlerError
from crawler.outcomes import JobOutcome
from crawler.store import schema
from crawler.store.dataset import (
    PUBLISHED,
    STORAGE_ERRORS,
    DatasetError,
    all_manifests,
    open_filesystem,
    resolve_manifest_path,
)
from crawler.store.published import choose_published, manifest_date, published_dates

#: Access advisor's tracking period: a use older than this is reported as "not used".
TRACKING_PERIOD_DAYS = 400
DEFAULT_DAYS = 90
COMPLETED = JobOutcome.COMPLETED
#: Job outcomes that leave an entity without access data ("deleted" needs none: the entity is gone).
WITHOUT_DATA = JobOutcome.WITHOUT_DATA
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
    return published_dates(_published_manifests(os.fspath(root)))


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
    manifest = manifest_for(os.fspath(root), snapshot)
    return read_table(os.fspath(root), manifest, table, accounts, columns)


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
    manifest = manifest_for(path, snapshot)
    tables = {name: read_table(path, manifest, table, accounts, None) for name, table in (
        ("services", "service_last_accessed"), ("actions", "action_last_accessed"), ("entities", "entities"),
        ("accounts", "accounts"), ("errors", "errors"))}
    return Snapshot(root=path, date=_manifest_date(manifest), run_id=str(manifest["run_id"]),
                    granularity=manifest.get("granularity"), **tables)


def _published_manifests(root: str) -> list[dict[str, Any]]:
    """The published manifests under ``root``; AnalysisError for one whose snapshot date is not a date."""
    try:
        manifests = [manifest for manifest in all_manifests(root) if manifest.get("status") == PUBLISHED]
    except DatasetError as error:
        raise AnalysisError(str(error)) from error
    for manifest in manifests:
        _manifest_date(manifest)
    return manifests


def _manifest_date(manifest: dict[str, Any]) -> dt.date:
    day = manifest_date(manifest)
    if day is None:
        raise AnalysisError(f"the manifest of run {manifest.get('run_id')} has snapshot_date "
                            f"{manifest.get('snapshot_date')!r}, not a date (YYYY-MM-DD): access-crawler verify "
                            "checks a snapshot")
    return day


def manifest_for(root: str, snapshot: dt.date | str | None) -> dict[str, Any]:
    """The manifest of the published snapshot asked for (None: the latest snapshot date published), as every
    reader picks it (:mod:`crawler.store.published`); the latest publish wins when a date was rerun."""
    published = _published_manifests(root)
    available = published_dates(published)
    if not available:
        raise AnalysisError(f"no published snapshot under {root}: has a crawl published there yet?")
    wanted = available[-1] if snapshot is None else _as_date(snapshot)
    if wanted not in available:
        listed = ", ".join(day.isoformat() for day in available)
        raise AnalysisError(f"no published snapshot {wanted.isoformat()} under {root}; published: {listed}")
    chosen = choose_published(published, wanted)
    assert chosen is not None  # the date is one of the published dates
    return dict(chosen)

def _as_date(snapshot: dt.date | str) -> dt.date:
    if isinstance(snapshot, dt.datetime):
        raise AnalysisError(f"snapshot must be a date or 'YYYY-MM-DD', not a datetime ({snapshot})")
    if isinstance(snapshot, dt.date):
        return snapshot
    try:
        return dt.date.fromisoformat(str(snapshot))
    except ValueError as error:
        raise AnalysisError(f"snapshot {snapshot!r} is not a date (YYYY-MM-DD)") from error


def read_table(root: str, manifest: dict[str, Any], table: str, accounts: str | Iterable[str] | None,
                columns: Sequence[str] | None) -> pd.DataFrame:
    """The rows of ``table`` that the manifest's run wrote, from the files the manifest lists only."""
    wanted = _columns_of(table, columns)
    entry = (manifest.get("tables") or {}).get(table)
    if entry is None:
        raise AnalysisError(f"the manifest of run {manifest.get('run_id')} lists no table {table}")
    filesystem, base = open_filesystem(root)
    paths = _listed_files(base, manifest, table, entry)
    condition = ds.field("run_id") == str(manifest["run_id"])
    if accounts is not None:
        if "account_id" not in schema.TABLES[table].names:
            raise AnalysisError(f"{table} has no account_id column: it cannot be limited to accounts")
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
    frame = _with_a_chunk(arrow_table.to_pandas(types_mapper=_nullable_integers))
    frame[schema.PARTITION_COLUMN] = pd.Series([_manifest_date(manifest)] * len(frame), index=frame.index,
                                               dtype=object)
    return categorize(frame)


def _listed_files(base: str, manifest: dict[str, Any], table: str, entry: dict[str, Any]) -> list[str]:
    """Where the files the manifest lists for ``table`` are read: only in the table's partition of the snapshot."""
    day = _manifest_date(manifest)
    try:
        return [resolve_manifest_path(base, part.get("path") if isinstance(part, dict) else part, table, day)
                for part in entry["files"]]
    except ValueError as error:
        raise AnalysisError(f"the manifest of run {manifest.get('run_id')} lists a file outside the snapshot, "
                            f"not read: {error} (access-crawler verify checks a snapshot)") from error


def _with_a_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` whose Arrow-backed text columns hold at least one (empty) chunk.

    pyarrow gives the columns of a table without rows no chunk at all, and pandas cannot merge
    two such columns (ArrowInvalid): a snapshot without accounts would stop every review.
    """
    if len(frame) == 0:
        for column, dtype in frame.dtypes.items():
            if isinstance(dtype, pd.StringDtype):
                frame[column] = pd.array([], dtype=dtype)
    return frame


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


def categorize(frame: pd.DataFrame) -> pd.DataFrame:
    """Low-cardinality text columns of ``frame`` as pandas categoricals."""
    for column in CATEGORICAL:
        if column in frame.columns and not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype("category")
    return frame


# -- SQL ------------------------------------------------------------------------------------
def example_queries() -> dict[str, str]:
    """The example DuckDB queries shipped in ``crawler/sql``, by name: unused_services,
    stale_entities, account_summary. Each reads only the published snapshot: set the variables
    its header names (``SET VARIABLE root = 'out';``), run :func:`example_setup` once, then the query."""
    return {name: text for name, text in _sql_files().items() if name != SQL_SETUP}


def example_setup() -> str:
    """``crawler/sql/published.sql``: the views the example queries read (the published run, its rows, the
    window), picking the run by the rule every reader follows (:mod:`crawler.store.published`)."""
    return _sql_files()[SQL_SETUP]


#: The shipped SQL file the example queries need first.
SQL_SETUP = "published"


def _sql_files() -> dict[str, str]:
    folder = resources.files("crawler").joinpath("sql")
    return {entry.name.removesuffix(".sql"): entry.read_text("utf-8")
            for entry in sorted(folder.iterdir(), key=lambda item: item.name) if entry.name.endswith(".sql")}


def check_days(days: float) -> pd.Timedelta:
    """The window of ``days`` as a Timedelta; AnalysisError outside access advisor's tracking period."""
    if isinstance(days, bool) or not isinstance(days, numbers.Real) or not 0 < days <= TRACKING_PERIOD_DAYS:
        raise AnalysisError(f"days must be more than 0 and at most {TRACKING_PERIOD_DAYS} (access advisor's "
                            f"tracking period: older use is reported as never used), not {days!r}")
    return pd.Timedelta(days=days)
