"""Every injected fault, as the exact AWS error code and HTTP status a real boto3 client sees."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from crawler.sim import AccountFaults, FaultPlan, OrgSpec, RequestFaults, SimulatedOrganization
from tests.sim.helpers import NO_RETRY, crawlable, failure_of

#: botocore raises ResponseParserError for bad XML; its JSON parser raises plain Python errors.
PARSE_ERRORS = (ResponseParserError, AttributeError, TypeError, ValueError)


def outcome(call: Callable[[], Any]) -> str:
    """``"ok"`` or the error code of one call."""
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "ok"


def member_iam(sim: SimulatedOrganization, account_id: str) -> Any:
    """An IAM client in a member account through the crawler role, without retries."""
    return sim.client("iam", session=sim.assume(account_id), config=NO_RETRY)


def user_arn(sim: SimulatedOrganization, account_id: str) -> str:
    """The first generated user of an account."""
    return next(entity.arn for entity in sim.model.accounts[account_id].entities if entity.type == "USER")


def authorization_arns(iam: Any) -> set[str]:
    """Every user, group, role and policy ARN of GetAccountAuthorizationDetails, all pages."""
    arns: set[str] = set()
    for page in iam.get_paginator("get_account_authorization_details").paginate():
        for key in ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"):
            arns.update(item["Arn"] for item in page[key])
    return arns


# -- IAM throttling ----------------------------------------------------------------------
def test_iam_burst_beyond_the_bucket_is_throttled_in_that_account_only(small_org: SimulatedOrganization) -> None:
    limited, other = crawlable(small_org)[:2]
    small_org.faults.account(limited).iam_rate = 5
    small_org.faults.account(limited).iam_burst = 5
    limited_iam, other_iam = member_iam(small_org, limited), member_iam(small_org, other)
    started = time.monotonic()
    outcomes = [outcome(limited_iam.list_roles) for _ in range(20)]
    elapsed = time.monotonic() - started
    assert 5 <= outcomes.count("ok") <= 5 + 5 * elapsed + 1
    assert set(outcomes) == {"ok", "Throttling"}
    assert small_org.state.throttled[limited] == outcomes.count("Throttling")
    assert failure_of(limited_iam.list_roles)[:3] == ("Throttling", 400, "Rate exceeded")
    assert [outcome(other_iam.list_roles) for _ in range(20)] == ["ok"] * 20
    assert small_org.state.throttled[other] == 0


def test_iam_steady_calls_are_accepted_at_most_at_the_configured_rate(make_org) -> None:
    rate, burst = 5, 5
    sim = make_org()
    account_id = crawlable(sim)[0]
    sim.faults.account(account_id).iam_rate = rate
    sim.faults.account(account_id).iam_burst = burst
    iam = member_iam(sim, account_id)
    started = time.monotonic()
    accepted = 0
    while time.monotonic() - started < 2.0:
        accepted += outcome(iam.list_users) == "ok"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    assert accepted <= rate * elapsed + burst + 1
    assert accepted >= burst + rate  # the bucket refills


def test_throttle_storm_throttles_every_iam_call_then_recovers(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    small_org.faults.account(account_id).throttle_storm_seconds = 1.0
    iam = member_iam(small_org, account_id)
    started = time.monotonic()
    during = [outcome(iam.list_roles) for _ in range(5)]
    assert time.monotonic() - started < 1.0
    assert during == ["Throttling"] * 5
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    assert [outcome(iam.list_roles) for _ in range(3)] == ["ok"] * 3


# -- latency -------------------------------------------------------------------------------
def timed(call: Callable[[], Any]) -> float:
    """Seconds one call takes."""
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_organizations_beyond_its_rate_is_too_many_requests_and_iam_is_not_slowed(make_org) -> None:
    sim = make_org(faults=FaultPlan.uniform(organizations_rate=2, organizations_burst=3))
    organizations, iam = sim.client("organizations", config=NO_RETRY), sim.client("iam", config=NO_RETRY)

    started = time.monotonic()
    outcomes = [outcome(organizations.list_roots) for _ in range(12)]
    elapsed = time.monotonic() - started

    assert 3 <= outcomes.count("ok") <= 3 + 2 * elapsed + 1
    assert set(outcomes) == {"ok", "TooManyRequestsException"}
    assert sim.state.throttled[sim.management_account_id] == outcomes.count("TooManyRequestsException")
    assert [outcome(iam.list_roles) for _ in range(12)] == ["ok"] * 12


def test_latency_delays_every_call(make_org) -> None:
    sim = make_org(faults=FaultPlan.uniform(latency_ms=200))
    iam = sim.client("iam", config=NO_RETRY)
    organizations = sim.client("organizations", config=NO_RETRY)
    assert timed(iam.list_users) >= 0.2
    assert timed(organizations.list_roots) >= 0.2


def test_latency_per_operation_applies_to_that_operation_only(make_org) -> None:
    sim = make_org(faults=FaultPlan.uniform(operations={"ListRoles": RequestFaults(latency_ms=300)}))
    iam = sim.client("iam", config=NO_RETRY)
    iam.list_users()
    assert timed(iam.list_roles) >= 0.3
    assert timed(iam.list_users) < 0.2


# -- server errors, throttling and malformed answers -------------------------------------
OPERATOR_CALLS = {
    "iam": lambda sim: sim.client("iam", config=NO_RETRY).list_roles,
    "organizations": lambda sim: sim.client("organizations", config=NO_RETRY).list_accounts,
}


@pytest.mark.parametrize(("service", "code"), [("iam", "ServiceFailure"), ("organizations", "ServiceException")])
def test_error_rate_gives_the_service_5xx(make_org, service: str, code: str) -> None:
    sim = make_org(faults=FaultPlan.uniform(error_rate=1.0))
    assert failure_of(OPERATOR_CALLS[service](sim))[:2] == (code, 500)
    assert [event.kind for event in sim.state.events] == ["server_error"]


def test_organizations_throttle_rate_per_operation(make_org) -> None:
    faults = FaultPlan()
    sim = make_org(faults=faults)
    faults.account(sim.management_account_id).operations["ListAccounts"] = RequestFaults(throttle_rate=1.0)
    organizations = sim.client("organizations", config=NO_RETRY)
    code, status, message = failure_of(organizations.list_accounts)
    assert (code, status) == ("TooManyRequestsException", 400)
    assert "rate limit" in message
    assert organizations.list_roots()["Roots"]
    assert organizations.describe_organization()["Organization"]["Id"] == sim.model.id
    assert organizations.describe_account(AccountId=sim.management_account_id)["Account"]


@pytest.mark.parametrize(("service", "expected"), [("iam", ResponseParserError), ("organizations", PARSE_ERRORS)])
def test_malformed_answer_is_a_parsing_error(make_org, service: str, expected: Any) -> None:
    sim = make_org(faults=FaultPlan.uniform(malformed_rate=1.0))
    with pytest.raises(expected):
        OPERATOR_CALLS[service](sim)()
    assert [event.kind for event in sim.state.events] == ["malformed"]


# -- access-advisor jobs -----------------------------------------------------------------
def test_stuck_job_stays_in_progress(make_org) -> None:
    sim = make_org(faults=FaultPlan.uniform(stuck_job_rate=1.0, job_seconds=0))
    account_id = crawlable(sim)[0]
    iam = member_iam(sim, account_id)
    arn = user_arn(sim, account_id)
    job_id = iam.generate_service_last_accessed_details(Arn=arn)["JobId"]
    time.sleep(0.1)
    for _ in range(3):
        answer = iam.get_service_last_accessed_details(JobId=job_id)
        assert answer["JobStatus"] == "IN_PROGRESS"
        assert answer["ServicesLastAccessed"] == []
    stuck = [event for event in sim.state.events if event.kind == "job_stuck"]
    assert [(event.account_id, event.detail) for event in stuck] == [(account_id, arn)]


def test_deleted_entity_is_no_such_entity_and_gone_from_the_inventory(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    small_org.faults.account(account_id).deleted_entity_rate = 1.0
    iam = member_iam(small_org, account_id)
    arn = user_arn(small_org, account_id)
    assert arn in authorization_arns(iam)
    assert failure_of(lambda: iam.generate_service_last_accessed_details(Arn=arn))[:2] == ("NoSuchEntity", 404)
    assert arn not in authorization_arns(iam)
    deleted = [event for event in small_org.state.events if event.kind == "entity_deleted"]
    assert [(event.account_id, event.detail) for event in deleted] == [(account_id, arn)]
    assert arn in small_org.state.deleted


def test_deletion_fault_spares_the_crawlers_own_role(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    small_org.faults.account(account_id).deleted_entity_rate = 1.0
    iam = member_iam(small_org, account_id)
    crawler_role = small_org.role_arn(account_id)
    assert iam.generate_service_last_accessed_details(Arn=crawler_role)["JobId"]
    assert crawler_role in authorization_arns(iam)


def test_delete_entity_removes_a_role_now(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    iam = member_iam(small_org, account_id)
    arn = next(entity.arn for entity in small_org.model.accounts[account_id].entities
               if entity.type == "ROLE" and entity.name != small_org.model.crawler_role_name)
    assert small_org.delete_entity(arn) is True
    assert arn not in authorization_arns(iam)
    assert failure_of(lambda: iam.generate_service_last_accessed_details(Arn=arn))[:2] == ("NoSuchEntity", 404)
    assert small_org.delete_entity(arn) is False


# -- determinism ---------------------------------------------------------------------------
def failed_entities(seed: int, reverse: bool = False) -> set[str]:
    """Entities whose first job fails in a fresh organization with ``job_failure_rate=0.5``
    (jobs requested in model order, or in reverse)."""
    sim = SimulatedOrganization(OrgSpec(accounts=2, entities=16, seed=seed),
                                FaultPlan(default=AccountFaults(job_failure_rate=0.5)))
    with sim.in_process():
        account_id = crawlable(sim)[0]
        iam = member_iam(sim, account_id)
        failed = set()
        entities = sim.model.accounts[account_id].entities
        for entity in reversed(entities) if reverse else entities:
            job_id = iam.generate_service_last_accessed_details(Arn=entity.arn)["JobId"]
            if iam.get_service_last_accessed_details(JobId=job_id)["JobStatus"] == "FAILED":
                failed.add(entity.arn)
        assert failed == {event.detail for event in sim.state.events if event.kind == "job_failed"}
    return failed


def test_job_failures_are_the_same_for_the_same_seed_in_any_order() -> None:
    first = failed_entities(seed=21)
    assert 0 < len(first) < 16
    assert failed_entities(seed=21, reverse=True) == first


@pytest.mark.parametrize("mode", ["in_process", "served"])
def test_dropped_connection_loses_the_answer_after_the_action_ran(mode: str) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    sim = SimulatedOrganization(OrgSpec(accounts=2, entities=8, seed=3))
    runner = sim.in_process() if mode == "in_process" else sim.serve(port=0)
    with runner:
        member = sorted(crawlable(sim))[-1]
        sim.faults.account(member).operations["GenerateServiceLastAccessedDetails"] = RequestFaults(drop_rate=1.0)
        iam = member_iam(sim, member)
        with pytest.raises((ConnectionClosedError, EndpointConnectionError, ReadTimeoutError)):
            iam.generate_service_last_accessed_details(Arn=user_arn(sim, member))
        assert len(sim.state.jobs) == 1, "the job was created before the answer was lost"
        assert [event.kind for event in sim.state.events].count("dropped") == 1
