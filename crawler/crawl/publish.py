"""The end of a run: record where it stands (its manifest, or a shard's record), and publish it.

An unsharded run publishes itself (``crawl.scheduler``); a shard records itself done and, when it
is the last, publishes the whole run (``finish_shard``); ``consolidate`` publishes a sharded run
whose last shard could not. The manifest's account of the crawl is made here (``_manifest``).
"""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any

from crawler.aws.s3 import ConditionalObjects
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import Config, OutputSettings
from crawler.crawl.runs import AccountSummary
from crawler.crawl.shards import (
    DONE,
    PUBLISH_CLAIM,
    Shard,
    check_agreement,
    expected_accounts,
    missing_shards,
    shard_count,
)
from crawler.errors import UsageError
from crawler.outcomes import AccountOutcome, JobOutcome
from crawler.store.dataset import (
    INTERRUPTED,
    RUN_UNIT,
    ClaimUnsupported,
    Dataset,
    DatasetError,
    lease_store,
    sharded_runs,
)
from crawler.store.lease import Lease, acquire_lease

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """The result of a crawl, for the command line and for callers of the library."""

    run_id: str
    snapshot_date: date
    root: str
    organization_id: str | None
    manifest: dict[str, Any]
    accounts: list[AccountSummary] = field(default_factory=list)
    #: True when this run finished an earlier, unfinished attempt (same run id).
    resumed: bool = False
    #: The shard this process crawled, when the run is sharded.
    shard: Shard | None = None
    #: False for a shard that staged its accounts and left the publish to the last shard.
    published: bool = True
    #: The shards that were not done when this one finished (it did not publish).
    waiting_for: tuple[int, ...] = ()

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table in the published snapshot."""
        return {name: table["rows"] for name, table in self.manifest.get("tables", {}).items()}

    @property
    def complete(self) -> bool:
        """True when nothing was missing: every account entered, every entity's job completed."""
        return self.manifest.get("errors", 0) == 0


def session_factory(config: Config) -> SessionFactory:
    return SessionFactory(config.aws, config.assume_role, config.concurrency)


def objects_for(root: str, factory: SessionFactory | None = None) -> ConditionalObjects | None:
    """The conditional S3 writes an output on S3 needs (claims, leases), from ``factory`` (or the standard
    chain's); None for any other output."""
    if not root.startswith("s3://"):
        return None
    return (factory or SessionFactory.default()).s3_objects()


@dataclass(frozen=True)
class RunJournal:
    """Where a run records its state before it publishes: the run manifest, or the shard's record."""

    dataset: Dataset
    shard: Shard | None

    def write(self, document: dict[str, Any]) -> None:
        """Record ``document`` (status and what is known so far); a shard's record also carries how the
        dataset's files are written, which ``consolidate`` needs."""
        if self.shard is None:
            self.dataset.write_run_manifest(document)
            return
        output = self.dataset.settings
        self.dataset.record_shard(self.shard.name, {
            **document, "shard": {"index": self.shard.index, "count": self.shard.count},
            "output": {"compression": output.compression, "compression_level": output.compression_level,
                       "max_rows_per_file": output.max_rows_per_file, "row_group_rows": output.row_group_rows}})


def finish_shard(dataset: Dataset, shard: Shard, document: dict[str, Any], summaries: list[AccountSummary],
                 organization_id: str | None, lease: Lease | None = None) -> RunSummary:
    """Record the shard done; publish the run if every shard is done and no other shard claimed it first."""
    RunJournal(dataset, shard).write({
        **document, "status": DONE, "account_ids": [summary.account_id for summary in summaries]})
    records = dataset.shard_records()
    check_agreement(records, shard, str(document["config_digest"]))
    waiting = missing_shards(records, shard.count)
    summary = RunSummary(dataset.run_id, dataset.snapshot_date, dataset.root, organization_id, document, summaries,
                         bool(document.get("resumed")), shard=shard, published=False,
                         waiting_for=tuple(waiting))
    if waiting:
        log.info("shard %s done; waiting for shards %s: the last to finish publishes", shard,
                 ", ".join(map(str, waiting)))
        return summary
    try:
        claimed = dataset.claim(PUBLISH_CLAIM, {"shard": shard.index, "claimed_at": datetime.now(timezone.utc)})
    except ClaimUnsupported as error:  # shards cannot agree here on who publishes: a person does
        log.warning("every shard of run %s is done, but %s: publish it with access-crawler consolidate %s "
                    "--snapshot %s --run-id %s", dataset.run_id, error, dataset.root, dataset.snapshot_date,
                    dataset.run_id)
        return summary
    if not claimed:
        log.info("shard %s done; another shard is publishing run %s", shard, dataset.run_id)
        return summary
    if lease is not None:
        lease.confirm()
    manifest = publish_shards(dataset, records)
    log.info("run %s published by shard %s", dataset.run_id, shard)
    return replace(summary, manifest=manifest, published=True)


def publish_shards(dataset: Dataset, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a sharded run from what its done shards recorded and staged: one snapshot of the whole run.

    DatasetError when an account a shard selected is not staged.
    """
    expected = expected_accounts(records)
    staged = {unit: document for unit, document in dataset.staged_summaries().items() if unit != RUN_UNIT}
    missing = expected - set(staged)
    if missing:
        raise DatasetError(f"run {dataset.run_id}: accounts {', '.join(sorted(missing))} were selected by a shard "
                           "but are not staged")
    for unit in sorted(set(staged) - expected):  # staged by an attempt of a shard that no longer selects it
        log.warning("account staged but selected by no shard: not published", extra={"account_id": unit})
        dataset.discard(unit)
    summaries = [AccountSummary.from_dict(staged[unit]) for unit in sorted(expected)]
    first = min(records, key=lambda record: str(record.get("started_at")))
    header = {key: first.get(key) for key in ("tool", "version", "config_digest", "config_source", "started_at",
                                               "partition")}
    header["caller_arn"] = sorted({str(record.get("caller_arn")) for record in records})
    document = {**header, **run_manifest(str(first.get("granularity")), first.get("organization_id"), summaries,
                              dataset.staged_rows(RUN_UNIT)),
                "resumed": any(record.get("resumed") for record in records),
                "shards": [{key: record.get(key) for key in ("shard", "caller_arn", "started_at", "finished_at")}
                           | {"accounts": len(record.get("account_ids") or ())} for record in records]}
    return dataset.publish(document, staged_by(summaries, dataset, dataset.is_staged(RUN_UNIT)))


def staged_by(summaries: list[AccountSummary], dataset: Dataset, with_run_unit: bool) -> dict[str, dict[str, int]]:
    """What a run staged, unit by unit (its accounts' summaries, and the run's own unit when it has one)."""
    staged = {summary.account_id: dict(summary.rows) for summary in summaries}
    if with_run_unit:
        staged[RUN_UNIT] = dataset.staged_rows(RUN_UNIT)
    return staged


def consolidate(root: str, snapshot_date: date, run_id: str | None = None) -> dict[str, Any]:
    """Publish the sharded run of ``snapshot_date`` under ``root`` whose shards are all done.

    For a run whose last shard could not publish (it died after recording itself done). UsageError
    when there is no such run, several (name one with ``run_id``), or shards are not done yet.
    """
    run_id = run_id or _only_sharded_run(root, snapshot_date)
    objects = objects_for(root)
    probe = Dataset(root, snapshot_date, run_id, OutputSettings(path=root), objects)
    records = probe.shard_records()
    if not records:
        raise UsageError(f"run {run_id} of snapshot {snapshot_date} under {root} has no shard records")
    waiting = missing_shards(records, shard_count(records))
    if waiting:
        raise UsageError(f"run {run_id}: shards {', '.join(map(str, waiting))} of {shard_count(records)} are not "
                         "done; run them (with the same --run-id) first")
    lease = acquire_lease(lease_store(root, snapshot_date, objects), snapshot_date)
    try:
        with contextlib.suppress(ClaimUnsupported):  # consolidating is a person's decision: no claim needed
            if not probe.claim(PUBLISH_CLAIM, {"consolidate": True, "claimed_at": datetime.now(timezone.utc)}):
                log.warning("run %s: a shard claimed its publish but did not finish it; publishing it now", run_id)
        output = {key: value for key, value in (records[0].get("output") or {}).items() if value is not None}
        dataset = Dataset(root, snapshot_date, run_id, OutputSettings(path=root, **output), objects)
        return publish_shards(dataset, records)
    finally:
        lease.release()


def _only_sharded_run(root: str, snapshot_date: date) -> str:
    runs = sharded_runs(root, snapshot_date)
    if len(runs) != 1:
        raise UsageError(f"{len(runs)} sharded runs of snapshot {snapshot_date} under {root} are waiting to be "
                         "published" + (f" ({', '.join(runs)}): name one with --run-id" if runs else ""))
    return runs[0]


def run_manifest(granularity: str, organization_id: str | None, summaries: list[AccountSummary],
              run_rows: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The manifest's account of the crawl: outcomes per account and entity, recorded errors."""
    outcomes = Counter(summary.outcome for summary in summaries)
    staged_rows: Counter[str] = Counter(run_rows)
    for summary in summaries:
        staged_rows.update(summary.rows)
    entities: Counter[str] = Counter()
    for summary in summaries:
        entities.update(summary.entities)
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(), "organization_id": organization_id,
        "granularity": granularity,
        "accounts": {"selected": len(summaries),
                     **{outcome: outcomes.get(outcome, 0) for outcome in (AccountOutcome.OK, AccountOutcome.FAILED,
                                                                         AccountOutcome.SKIPPED, INTERRUPTED)},
                     "failed_ids": [summary.account_id for summary in summaries
                                    if summary.outcome != AccountOutcome.OK]},
        "entities": dict(sorted(entities.items())),
        "entities_missing": sum(entities.get(outcome, 0) for outcome in JobOutcome.WITHOUT_DATA),
        "errors": (run_rows or {}).get("errors", 0) + sum(summary.rows.get("errors", 0) for summary in summaries),
        "staged_rows": dict(sorted(staged_rows.items())),
    }
