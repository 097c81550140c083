"""Access-advisor jobs of one account: every page, faults turned into recorded outcomes."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crawler.aws.calls import AccountCalls
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import AdvisorSettings, ConcurrencySettings, EntitySettings
from crawler.crawl.scheduler import run_crawl
from crawler.progress import Progress
from crawler.sim import FaultPlan, OrgSpec, RequestFaults
from crawler.sources.advisor import COMPLETED, FAILED, AccountAdvisor
from crawler.sources.inventory import entities_of, get_authorization_details
from tests.helpers import crawl_config, project, read_rows

SPEC = OrgSpec(accounts=2, entities=10, seed=21)
COLUMNS = ("entity_arn", "service_namespace", "last_authenticated", "last_authenticated_entity",
           "total_authenticated_entities")


def advise(sim, tmp_path: Path, account_id: str, settings: AdvisorSettings, window: int = 4,  # noqa: ANN001, ANN201
           parallel_calls: int = 4, rate: float | None = None):
    """Run the advisor over every entity of one account; return (outcomes, progress counters)."""
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    calls = AccountCalls(factory.enter_account(account_id), "iam", RateLimiter(rate))
    entities = entities_of(get_authorization_details(calls, EntitySettings()))
    progress = Progress()
    outcomes = AccountAdvisor(calls, settings, window, progress, parallel_calls=parallel_calls).run(entities)
    return outcomes, progress.snapshot()


def assert_services_are_the_truth(sim: Any, account_id: str, outcomes: list[Any]) -> None:
    """Every page of every job's services equals the simulator's ground truth for the account."""
    got = [{"entity_arn": o.entity.arn, "service_namespace": s["ServiceNamespace"],
            "last_authenticated": s.get("LastAuthenticated"),
            "last_authenticated_entity": s.get("LastAuthenticatedEntity"),
            "total_authenticated_entities": s.get("TotalAuthenticatedEntities")} for o in outcomes for s in o.services]
    expected = [row for row in sim.service_rows() if row["account_id"] == account_id]
    assert project(got, COLUMNS) == project(expected, COLUMNS)


@pytest.mark.parametrize("page_size, window, parallel_calls", [(25, 1, 1), (1000, 8, 4), (100, 3, 8)])
def test_every_page_of_every_job_is_read(crawl_org, tmp_path: Path, page_size: int, window: int,
                                         parallel_calls: int) -> None:
    sim = crawl_org(SPEC)
    account_id = sim.member_account_ids[0]
    settings = AdvisorSettings(page_size=page_size, poll_interval_seconds=0.02)
    outcomes, counters = advise(sim, tmp_path, account_id, settings, window, parallel_calls)
    assert {outcome.outcome for outcome in outcomes} == {COMPLETED}
    assert_services_are_the_truth(sim, account_id, outcomes)
    assert max(len(outcome.services) for outcome in outcomes) > 300
    assert counters.get("jobs_in_flight", 0) == 0 and counters["entities_done"] == len(outcomes)


def test_jobs_that_take_time_are_polled_until_complete(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan.uniform(job_seconds=0.5))
    outcomes, _ = advise(sim, tmp_path, sim.member_account_ids[0],
                         AdvisorSettings(poll_interval_seconds=0.1, max_poll_interval_seconds=0.2))
    assert {outcome.outcome for outcome in outcomes} == {COMPLETED}
    assert all(outcome.collected_at and outcome.job_created_at and outcome.collected_at >= outcome.job_created_at
               for outcome in outcomes)


def test_the_first_read_learns_how_long_jobs_take(crawl_org, tmp_path: Path) -> None:
    """Jobs take 0.3 s and the first read starts at 0.05 s: without learning, each job would be
    read about five times (0.05, +0.075, +0.11, +0.17, ...); learning, most are read once."""
    sim = crawl_org(OrgSpec(accounts=1, entities=40, seed=21), FaultPlan.uniform(job_seconds=0.3))
    account_id = sim.member_account_ids[0]
    settings = AdvisorSettings(poll_interval_seconds=0.05, max_poll_interval_seconds=2.0)

    outcomes, _ = advise(sim, tmp_path, account_id, settings, window=4, rate=1000.0)  # the rate never holds a read

    assert {outcome.outcome for outcome in outcomes} == {COMPLETED}
    reads = sim.state.calls[(account_id, "GetServiceLastAccessedDetails")]
    assert len(outcomes) >= 40
    assert reads < 2 * len(outcomes)


def test_a_malformed_answer_is_recorded_and_the_crawl_goes_on(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    victim = sim.member_account_ids[0]
    sim.faults.account(victim).operations["GetServiceLastAccessedDetails"] = RequestFaults(malformed_rate=1.0)
    summary = run_crawl(crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=2)))
    entities = read_rows(tmp_path, "entities")
    assert {row["job_outcome"] for row in entities if row["account_id"] == victim} == {FAILED}
    assert {row["job_outcome"] for row in entities if row["account_id"] != victim} == {COMPLETED}
    errors = read_rows(tmp_path, "errors")
    assert errors and {(row["account_id"], row["stage"]) for row in errors} == {(victim, "read_job")}
    assert not summary.complete


def test_a_throttling_storm_costs_no_entity(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan.uniform(throttle_storm_seconds=2.0))
    summary = run_crawl(crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=10)))
    assert summary.complete, read_rows(tmp_path, "errors")
    assert sum(sim.state.throttled.values()) > 0
    active = {i for i, m in sim.model.accounts.items() if m.account.state == "ACTIVE"}
    expected = [row for row in sim.service_rows() if row["account_id"] in active]
    assert project(read_rows(tmp_path, "service_last_accessed"), COLUMNS) == project(expected, COLUMNS)


def test_failed_jobs_are_generated_again_within_the_retry_budget(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan.uniform(job_failure_rate=0.5))
    outcomes, _ = advise(sim, tmp_path, sim.member_account_ids[0],
                         AdvisorSettings(job_retries=6, poll_interval_seconds=0.02))
    assert max(outcome.attempts for outcome in outcomes) > 1
    assert all(outcome.attempts <= 7 for outcome in outcomes)
    failed = [outcome for outcome in outcomes if outcome.outcome == FAILED]
    assert all(outcome.attempts == 7 and outcome.failures[-1].code == "ServiceFailure" for outcome in failed)


def test_jobs_made_before_a_renewal_are_generated_again_when_their_read_is_denied(crawl_org, tmp_path: Path) -> None:
    """Sessions of 3 s renew during the jobs; IAM answers AccessDenied (not NoSuchEntity) to a read of
    a job made by the previous session, as it sometimes does: the job is generated again, none fails."""
    sim = crawl_org(SPEC, FaultPlan.uniform(session_seconds=3, job_seconds=1.5, other_session_job_error="AccessDenied"))
    account_id = sim.member_account_ids[0]
    settings = AdvisorSettings(poll_interval_seconds=0.1, max_poll_interval_seconds=0.5)

    outcomes, counters = advise(sim, tmp_path, account_id, settings)

    assert [outcome.failures for outcome in outcomes if outcome.outcome != COMPLETED] == []
    assert max(outcome.attempts for outcome in outcomes) > 1
    assert any(event.kind == "other_session_job" for event in sim.state.events)
    assert_services_are_the_truth(sim, account_id, outcomes)
    assert counters.get("jobs_in_flight", 0) == 0


def test_nothing_is_read_after_a_stop(crawl_org, tmp_path: Path) -> None:
    import threading

    sim = crawl_org(SPEC)
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    calls = AccountCalls(factory.enter_account(sim.member_account_ids[0]), "iam", RateLimiter(None))
    entities = entities_of(get_authorization_details(calls, EntitySettings()))
    stop = threading.Event()
    stop.set()
    outcomes = AccountAdvisor(calls, replace(AdvisorSettings()), 4, stop=stop).run(entities)
    assert {outcome.outcome for outcome in outcomes} == {"skipped"}
