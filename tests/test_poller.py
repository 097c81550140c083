"""The poller every kind of asynchronous job runs on (here through access advisor's adapter): bounded where AWS
gives no end."""
from __future__ import annotations

import threading
from pathlib import Path

from crawler.aws.calls import AccountCalls
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import AdvisorSettings, EntitySettings
from crawler.sim import FaultPlan, OrgSpec
from crawler.sources.advisor import FAILED, AccountAdvisor
from crawler.sources.inventory import entities_of, get_authorization_details
from crawler.sources.poller import MAX_LOST_JOBS, READ
from tests.helpers import crawl_config


def test_jobs_that_no_session_outlives_are_recorded_after_a_bounded_number_of_generations(
        crawl_org, tmp_path: Path) -> None:  # noqa: ANN001
    """Sessions of 2 s renew long before a job of 30 s is done: every renewal makes the jobs in flight
    unreadable, found before their read or by it. Each such loss counts: after MAX_LOST_JOBS
    regenerations the job is recorded as failed, not generated again for ever."""
    sim = crawl_org(OrgSpec(accounts=1, entities=8, seed=5), FaultPlan.uniform(session_seconds=2, job_seconds=30))
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    calls = AccountCalls(factory.enter_account(sim.member_account_ids[0]), "iam", RateLimiter(None))
    entities = entities_of(get_authorization_details(calls, EntitySettings()))
    stop = threading.Event()
    watchdog = threading.Timer(60, stop.set)  # a regression loops: stop it, and the outcomes say skipped
    watchdog.start()
    try:
        outcomes = AccountAdvisor(calls, AdvisorSettings(poll_interval_seconds=0.1, max_poll_interval_seconds=0.3),
                                  len(entities), stop=stop).run(entities)
    finally:
        watchdog.cancel()

    assert {outcome.outcome for outcome in outcomes} == {FAILED}
    assert {(outcome.attempts, outcome.failures[-1].stage) for outcome in outcomes} == {(MAX_LOST_JOBS + 1, READ)}
