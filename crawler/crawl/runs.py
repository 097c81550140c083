"""Runs of a snapshot: start a new one, or resume one that never published.

A run writes ``runs/<run_id>.json`` with status ``running`` before it enters any account and
stages each account as soon as it is done. If the process dies (crash, ``kill -9``, reboot)
or is interrupted, the next run for the same snapshot date finds that run and resumes it:
same run id, accounts already staged kept, the rest crawled. ``--resume`` also finds one of
an earlier date (a crawl that crashed before midnight and is resumed after).

A run plans under the lease of its snapshot date (:mod:`crawler.store.lease`), so it only ever
resumes a run that no live process holds.
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from crawler.config.loader import config_digest
from crawler.config.settings import Config
from crawler.crawl.shards import Shard, default_run_id
from crawler.errors import UsageError
from crawler.store.dataset import (
    PUBLISHED,
    DatasetError,
    abandoned_runs,
    lease_store,
    read_manifest,
    remove_staged_run,
    staged_dates,
    staged_run_date,
    unfinished_runs,
)
from crawler.store.lease import WHOLE_RUN, Lease, LeaseHeld, ObjectConditions, acquire_lease
from crawler.store.run_rows import SUPERSEDED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountSummary:
    """What staging one account produced (the rows themselves are on disk, not in memory)."""

    account_id: str
    outcome: str
    rows: dict[str, int] = field(default_factory=dict)
    entities: Counter[str] = field(default_factory=Counter)
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as staged beside the account's rows."""
        return {"account_id": self.account_id, "outcome": self.outcome, "rows": dict(self.rows),
                "entities": dict(self.entities), "error_code": self.error_code}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> AccountSummary:
        """A summary staged by an earlier attempt of the run."""
        return cls(str(document["account_id"]), str(document["outcome"]), dict(document.get("rows") or {}),
                   Counter(document.get("entities") or {}), document.get("error_code"))


@dataclass(frozen=True)
class RunPlan:
    """Which run this is: its id, its snapshot date, when it started, whether it resumes an earlier attempt."""

    run_id: str
    snapshot_date: date
    started_at: datetime
    resumed: bool = False
    #: What the plan decided that the log should say (an unfinished run resumed or ignored).
    notes: tuple[str, ...] = ()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261130T101500Z-3f9a1c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def lease_run(config: Config, resume: bool = False, run_id: str | None = None, shard: Shard | None = None,
              wait: float | None = None, stop: threading.Event | None = None,
              objects: ObjectConditions | None = None) -> tuple[RunPlan, Lease]:
    """Take the lease of the run's snapshot date, then plan the run under it (see :func:`plan_run`).

    Planning under the lease is what keeps a run from resuming another process's live run. The
    date is planned once before the lease (to know which lease) and again under it; should they
    differ (another run published meanwhile), the lease is given back and it starts over.
    LeaseHeld when a live run holds the lease (after ``wait`` seconds, if given).
    """
    member = shard.name if shard is not None else WHOLE_RUN
    for _ in range(PLAN_ATTEMPTS):
        draft = plan_run(config, resume, run_id, shard=shard)
        store = lease_store(config.output.path, draft.snapshot_date, objects)
        lease = acquire_lease(store, draft.snapshot_date, member, draft.run_id if shard else None, wait, stop)
        try:
            plan = plan_run(config, resume, run_id, shard=shard)
            if plan.snapshot_date == draft.snapshot_date:
                lease.bind(plan.run_id)
                for note in plan.notes:
                    log.warning("%s", note)
                return plan, lease
        except BaseException:
            lease.release()
            raise
        lease.release()
    raise UsageError(f"the snapshot to write under {config.output.path} kept changing while the run was planned: "
                     "another run is publishing; try again")


#: Times :func:`lease_run` plans again when the snapshot date changed under it.
PLAN_ATTEMPTS = 3


def plan_run(config: Config, resume: bool = False, run_id: str | None = None,
             now: datetime | None = None, shard: Shard | None = None) -> RunPlan:
    """Resume the newest unfinished run of the snapshot (of any date with ``resume``), or plan a new one.

    Only reads: call it under the snapshot's lease (:func:`lease_run`) before acting on it. An
    unfinished run started with a different configuration is never mixed with this one:
    ``resume`` refuses it (UsageError), a plain run starts afresh and says so. A shard joins the
    run its shards share (``run_id``, or one named for the date and the shard count). A run id
    already published is never written again (UsageError).
    """
    now = now or datetime.now(timezone.utc)
    snapshot_date = config.output.snapshot_date or now.date()
    if shard is not None:
        if run_id is not None and config.output.snapshot_date is None:
            # a shard started (or retried) after midnight joins the date its run was started on
            snapshot_date = staged_run_date(config.output.path, run_id) or snapshot_date
        shared = run_id or default_run_id(snapshot_date, shard.count)
        refuse_published(config.output.path, shared)
        return RunPlan(shared, snapshot_date, now)
    if run_id is not None:
        refuse_published(config.output.path, run_id)
    wanted = None if resume and config.output.snapshot_date is None else snapshot_date
    digest = config_digest(config)
    notes: tuple[str, ...] = ()
    for previous in unfinished_runs(config.output.path, wanted)[:1]:
        if previous.get("config_digest") != digest:
            if resume:
                raise UsageError(f"run {previous['run_id']} under {config.output.path} was started with a different "
                                 "configuration: resume it with that configuration, or run without --resume")
            notes = (f"ignoring unfinished run {previous['run_id']}: it was started with a different configuration "
                     f"(its staging stays until access-crawler prune {config.output.path} removes it)",)
            break
        note = (f"resuming unfinished run {previous['run_id']} of snapshot {previous['snapshot_date']} "
                f"(started {previous.get('started_at')})")
        return RunPlan(str(previous["run_id"]), date.fromisoformat(str(previous["snapshot_date"])),
                       datetime.fromisoformat(str(previous["started_at"])), resumed=True, notes=(note,))
    if resume:
        notes = (*notes, f"no unfinished run to resume under {config.output.path}: starting a new run")
    return RunPlan(run_id or new_run_id(now), snapshot_date, now, notes=notes)


def refuse_published(root: str, run_id: str) -> None:
    """UsageError if run ``run_id`` has published a snapshot under ``root``: its files are not to be rewritten."""
    try:
        status = read_manifest(root, run_id).get("status")
    except DatasetError:
        return  # no manifest (or none readable): the run never published
    if status in (PUBLISHED, SUPERSEDED):
        raise UsageError(f"run {run_id} under {root} is already published: crawl again under another run id "
                         "(--run-id)")


@dataclass(frozen=True)
class PrunedRun:
    """A staged run ``prune_staging`` looked at: removed, or why not."""

    snapshot_date: date
    run_id: str | None
    outcome: str


def prune_staging(root: str, dry_run: bool = False, objects: ObjectConditions | None = None) -> list[PrunedRun]:
    """Remove the staging of runs that will never resume or publish, date by date, under each date's lease.

    Kept: the run a plain run of the date would resume, and sharded runs not published yet. A date
    whose lease a live run holds is skipped (and said so). With ``dry_run``, only lists them.
    """
    pruned = []
    for day in staged_dates(root):
        try:
            lease = acquire_lease(lease_store(root, day, objects), day)
        except LeaseHeld as error:
            pruned.append(PrunedRun(day, None, f"skipped: {error}"))
            continue
        try:
            for run_id in abandoned_runs(root, day):
                if not dry_run:
                    remove_staged_run(root, day, run_id)
                pruned.append(PrunedRun(day, run_id, "would remove" if dry_run else "removed"))
        finally:
            lease.release()
    return pruned
