"""Helpers for tests of the crawl: settings pointed at the simulator, reading the dataset back."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from crawler.config.settings import AdvisorSettings, AwsSettings, ConcurrencySettings, Config, OutputSettings
from crawler.sim import OrgSpec
from crawler.store import schema
from crawler.store.dataset import latest_manifest, open_filesystem

SIM_PROFILE = "sim"
TRUTH_KEYS = ("account_id", "entity_arn", "service_namespace")


def crawl_config(output: Path | str, snapshot_date: date | None = None, **sections: Any) -> Config:
    """Settings for a crawl of the simulated organization through the ``sim`` profile, fast polling,
    into ``output`` (a directory or a URI such as ``s3://bucket/prefix``)."""
    config = Config(aws=AwsSettings(profile=SIM_PROFILE, region="us-east-1"),
                    advisor=AdvisorSettings(poll_interval_seconds=0.05, max_poll_interval_seconds=0.5),
                    concurrency=ConcurrencySettings(accounts=4, max_attempts=4),
                    output=OutputSettings(path=str(output), snapshot_date=snapshot_date))
    return replace(config, **sections)


def crawlable(sim: Any) -> set[str]:
    """Accounts a default crawl of a SimulatedOrganization can enter: ACTIVE, with the crawler role."""
    return {account_id for account_id, model in sim.model.accounts.items()
            if model.account.state == "ACTIVE" and model.has_crawler_role}


def read_rows(root: str | Path, table: str) -> list[dict[str, Any]]:
    """Every row of a published table (all snapshots), as dicts, partition column included."""
    dataset = ds.dataset(Path(root) / table, format="parquet", partitioning="hive")
    return dataset.to_table().to_pylist()


def project(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Rows reduced to ``columns``, sorted: for comparing the dataset with the ground truth."""
    return sorted((tuple(row[column] for column in columns) for row in rows), key=repr)


#: Columns that differ between two crawls of the same organization: which run and job, and when.
RUN_COLUMNS = ("run_id", "collected_at", "job_id", "job_created_at", "started_at", "finished_at", "occurred_at",
               "published_at", "superseded_by", "resumed", "config_digest", "shards")


def published_tables(root: str) -> dict[str, list[dict[str, Any]]]:
    """Every table of the latest published snapshot under ``root`` (a path or URI), read through its
    manifest, without the columns that differ between runs; rows sorted."""
    manifest = latest_manifest(root)
    assert manifest is not None, f"nothing published under {root}"
    filesystem, base = open_filesystem(root)
    tables = {}
    for table in schema.TABLES:
        rows = []
        for entry in manifest["tables"][table]["files"]:
            rows.extend(pq.read_table(f"{base}/{entry['path']}", filesystem=filesystem).to_pylist())
        tables[table] = sorted((same_in_every_crawl(row) for row in rows), key=repr)
    return tables


def same_in_every_crawl(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without what differs between two crawls of the same organization: the run, the jobs,
    the times, and the crawler role's own RoleLastUsed (each crawl assumes it anew)."""
    kept = {key: value for key, value in row.items() if key not in RUN_COLUMNS}
    if row.get("entity_name") == CRAWLER_ROLE and "role_last_used" in kept:
        kept["role_last_used"] = kept["role_last_used_region"] = "used by the crawl itself"
    return kept


CRAWLER_ROLE = OrgSpec().crawler_role_name


def stop_after_first_account(progress: Any, stop: Any) -> None:
    """Set ``stop`` (a threading.Event) as soon as ``progress`` counts one account done, from a thread."""

    def watch() -> None:
        while not progress.snapshot().get("accounts_done"):
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
