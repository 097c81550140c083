"""Runs of a snapshot: new, resumed (same date or, with --resume, any date), never mixed across configs."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawler.dataset import RUNNING, Dataset
from crawler.errors import Interrupted, UsageError
from crawler.progress import Progress
from crawler.runs import plan_run
from crawler.scheduler import run_crawl
from crawler.settings import AdvisorSettings, ConcurrencySettings, Config, OutputSettings
from crawler.sim import OrgSpec
from tests.helpers import crawl_config, read_rows

DAY_ONE = datetime(2026, 11, 29, 23, 50, tzinfo=timezone.utc)
DAY_TWO = datetime(2026, 11, 30, 0, 20, tzinfo=timezone.utc)


def unfinished(config: Config, run_id: str, when: datetime) -> None:
    """Leave behind a run that started at ``when`` and never published (one account staged)."""
    from crawler.config import config_digest

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
