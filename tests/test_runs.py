"""Runs of a snapshot: new, resumed (same date or, with --resume, any date), never mixed across configs."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawler.config.settings import AdvisorSettings, ConcurrencySettings, Config, OutputSettings
from crawler.crawl.runs import plan_run
from crawler.crawl.scheduler import run_crawl
from crawler.errors import Interrupted, UsageError
from crawler.progress import Progress
from crawler.sim import OrgSpec
from crawler.store.dataset import RUNNING, Dataset
from tests.helpers import crawl_config, read_rows

DAY_ONE = datetime(2026, 11, 29, 23, 50, tzinfo=timezone.utc)
DAY_TWO = datetime(2026, 11, 30, 0, 20, tzinfo=timezone.utc)


def unfinished(config: Config, run_id: str, when: datetime) -> None:
    """Leave behind a run that started at ``when`` and never published (one account staged)."""
    from crawler.config.loader import config_digest

    dataset = Dataset(config.output.path, when.date(), run_id, config.output)
    dataset.write_run_manifest({"status": RUNNING, "config_digest": config_digest(config),
                                "started_at": when.isoformat()})
    dataset.stage("001234567000", {"accounts": []})


def test_a_fresh_output_gets_a_new_run(tmp_path: Path) -> None:
    plan = plan_run(Config(output=OutputSettings(path=str(tmp_path))), now=DAY_TWO)
    assert not plan.resumed and plan.snapshot_date == DAY_TWO.date() and plan.run_id.startswith("20261130T002000Z-")


def test_a_plain_run_resumes_only_its_own_snapshot_date(tmp_path: Path) -> None:
    config = Config(output=OutputSettings(path=str(tmp_path)))
    unfinished(config, "yesterday", DAY_ONE)
    assert not plan_run(config, now=DAY_TWO).resumed
    plan = plan_run(config, resume=True, now=DAY_TWO)
    assert (plan.run_id, plan.snapshot_date, plan.resumed) == ("yesterday", DAY_ONE.date(), True)
    assert plan.started_at == DAY_ONE


def test_a_run_of_the_same_date_resumes_by_itself(tmp_path: Path) -> None:
    config = Config(output=OutputSettings(path=str(tmp_path)))
    unfinished(config, "earlier", DAY_TWO)
    plan = plan_run(config, now=DAY_TWO.replace(hour=5))
    assert plan.resumed and plan.run_id == "earlier"


def test_an_unfinished_run_of_another_configuration_is_never_mixed_in(tmp_path: Path) -> None:
    config = Config(output=OutputSettings(path=str(tmp_path)))
    unfinished(config, "other-config", DAY_TWO)
    changed = replace(config, advisor=AdvisorSettings(granularity="ACTION_LEVEL"))
    assert not plan_run(changed, now=DAY_TWO).resumed
    with pytest.raises(UsageError, match="different configuration"):
        plan_run(changed, resume=True, now=DAY_TWO)


def test_a_resumed_run_keeps_finished_accounts_and_retries_failed_ones(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=4, entities=8, seed=2))
    accounts = sorted(i for i, m in sim.model.accounts.items() if m.account.state == "ACTIVE")
    failing, finished_first = accounts[0], accounts[1]
    sim.faults.account(failing).deny_assume_role = True
    progress, stop = Progress(), threading.Event()

    def stop_after_two_accounts() -> None:
        while progress.snapshot().get("accounts_done", 0) < 2:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_after_two_accounts, daemon=True).start()
    config = crawl_config(tmp_path, concurrency=ConcurrencySettings(accounts=1))
    with pytest.raises(Interrupted):
        run_crawl(config, progress=progress, stop=stop, run_id="first-attempt")
    sim.faults.account(failing).deny_assume_role = False
    generated_before = sim.state.calls[(finished_first, "GenerateServiceLastAccessedDetails")]
    summary = run_crawl(config)
    assert summary.resumed and summary.run_id == "first-attempt" and summary.complete
    assert sim.state.calls[(finished_first, "GenerateServiceLastAccessedDetails")] == generated_before, \
        "a staged account is not crawled again"
    outcomes = {row["account_id"]: row["outcome"] for row in read_rows(tmp_path, "accounts")}
    assert outcomes == dict.fromkeys(accounts, "ok")


# -- abandoned staging --------------------------------------------------------------------------------
def staged_run_ids(root: Path, day: datetime) -> list[str]:
    return sorted(path.name for path in (root / "_staging" / day.date().isoformat()).glob("*"))


def leave_staging(tmp_path: Path) -> Config:
    """Staging of DAY_TWO: two unfinished runs (the newer resumable), a sharded run waiting for consolidate,
    a directory without a manifest; and a staged run of DAY_ONE that a later publish made stale."""
    config = Config(output=OutputSettings(path=str(tmp_path)))
    unfinished(config, "older", DAY_TWO.replace(hour=1))
    unfinished(config, "newer", DAY_TWO.replace(hour=2))
    sharded = Dataset(str(tmp_path), DAY_TWO.date(), "array-1", config.output)
    sharded.record_shard("0-of-2", {"status": "done"})
    Dataset(str(tmp_path), DAY_TWO.date(), "orphan", config.output).stage("001234567000", {"accounts": []})
    published = Dataset(str(tmp_path), DAY_ONE.date(), "later", config.output)
    published.publish({"started_at": DAY_ONE.replace(minute=55).isoformat()})
    unfinished(config, "stale", DAY_ONE)  # started before "later", left behind by a crash
    return config


def test_prune_removes_only_the_staging_that_can_never_resume(tmp_path: Path) -> None:
    from crawler.crawl.runs import prune_staging

    leave_staging(tmp_path)

    listed = prune_staging(str(tmp_path), dry_run=True)
    assert staged_run_ids(tmp_path, DAY_TWO) == ["array-1", "newer", "older", "orphan"], "a dry run removes nothing"
    pruned = prune_staging(str(tmp_path))

    assert [(item.snapshot_date, item.run_id, item.outcome) for item in pruned] == [
        (DAY_ONE.date(), "stale", "removed"), (DAY_TWO.date(), "older", "removed"),
        (DAY_TWO.date(), "orphan", "removed")]
    assert [item.run_id for item in listed] == [item.run_id for item in pruned]
    assert staged_run_ids(tmp_path, DAY_TWO) == ["array-1", "newer"]
    assert not (tmp_path / "_staging" / DAY_ONE.date().isoformat()).exists()
    assert plan_run(Config(output=OutputSettings(path=str(tmp_path))), now=DAY_TWO.replace(hour=3)).run_id == "newer"


def test_prune_skips_a_date_a_live_run_is_writing(tmp_path: Path) -> None:
    from crawler.crawl.runs import prune_staging
    from crawler.store.dataset import lease_store
    from crawler.store.lease import acquire_lease

    leave_staging(tmp_path)
    lease = acquire_lease(lease_store(str(tmp_path), DAY_TWO.date()), DAY_TWO.date())

    pruned = prune_staging(str(tmp_path))

    assert [item.run_id for item in pruned if item.snapshot_date == DAY_TWO.date()] == [None]
    assert "skipped: snapshot 2026-11-30 is being written" in pruned[-1].outcome
    assert staged_run_ids(tmp_path, DAY_TWO) == ["array-1", "newer", "older", "orphan"]
    lease.release()


def test_a_publish_removes_the_staging_of_its_date_that_can_no_longer_resume(crawl_org, tmp_path: Path) -> None:
    crawl_org(OrgSpec(accounts=2, entities=8, seed=3))
    config = crawl_config(tmp_path, DAY_TWO.date())
    unfinished(config, "abandoned", DAY_TWO.replace(hour=0, minute=1))
    other = replace(config, entities=replace(config.entities, aws_managed_policies=True))

    summary = run_crawl(other)  # another configuration: ignores "abandoned", crawls anew, publishes

    assert summary.run_id != "abandoned" and not summary.resumed
    assert not (tmp_path / "_staging").exists() or staged_run_ids(tmp_path, DAY_TWO) == []
