"""Helpers for tests of the crawl: settings pointed at the simulator, reading the dataset back."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from crawler.settings import AdvisorSettings, AwsSettings, ConcurrencySettings, Config, OutputSettings

SIM_PROFILE = "sim"
TRUTH_KEYS = ("account_id", "entity_arn", "service_namespace")


def crawl_config(output: Path, **sections: Any) -> Config:
    """Settings for a crawl of the simulated organization through the ``sim`` profile, fast polling."""
    config = Config(aws=AwsSettings(profile=SIM_PROFILE, region="us-east-1"),
                    advisor=AdvisorSettings(poll_interval_seconds=0.05, max_poll_interval_seconds=0.5),
                    concurrency=ConcurrencySettings(accounts=4, max_attempts=4),
                    output=OutputSettings(path=str(output)))
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
