"""AssumeRole fails like AWS: missing role, denied, suspended account, ExternalId, chaining, expiry."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from crawler.sim import OrgSpec, SimulatedOrganization
from tests.sim.helpers import NO_RETRY, crawlable, error_of, failure_of

HUB_ROLE = "AccessCrawlerHub"


def session_of(answer: dict[str, Any]) -> boto3.Session:
    """A boto3 session from an AssumeRole answer."""
    credentials = answer["Credentials"]
    return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                         aws_secret_access_key=credentials["SecretAccessKey"],
                         aws_session_token=credentials["SessionToken"], region_name="us-east-1")


def assume(sim: SimulatedOrganization, account_id: str, session: boto3.Session | None = None,
           **kwargs: Any) -> dict[str, Any]:
    """AssumeRole into the crawler role of ``account_id`` (as the operator unless ``session``)."""
    sts = sim.client("sts", session=session, config=NO_RETRY)
    return sts.assume_role(RoleArn=sim.role_arn(account_id), RoleSessionName="crawler", **kwargs)


def assume_error(sim: SimulatedOrganization, account_id: str, **kwargs: Any) -> tuple[str, int, str]:
    """The error code, HTTP status and message of a failing AssumeRole."""
    return failure_of(lambda: assume(sim, account_id, **kwargs))


def suspended_account(sim: SimulatedOrganization) -> str:
    """The generated SUSPENDED account."""
    return next(account_id for account_id, model in sim.model.accounts.items() if model.account.state == "SUSPENDED")


def test_assumed_session_lands_in_the_target_account(small_org: SimulatedOrganization) -> None:
    for account_id in crawlable(small_org):
        identity = small_org.client("sts", session=session_of(assume(small_org, account_id))).get_caller_identity()
        assert identity["Account"] == account_id
        assert identity["Arn"] == f"arn:aws:sts::{account_id}:assumed-role/AccessCrawlerRole/crawler"


def test_missing_crawler_role_is_access_denied(make_org) -> None:
    sim = make_org(OrgSpec(accounts=4, entities=14, seed=11, accounts_without_crawler_role=1))
    missing = [account_id for account_id, model in sim.model.accounts.items() if not model.has_crawler_role]
    assert len(missing) == 1
    code, status, message = assume_error(sim, missing[0])
    assert (code, status) == ("AccessDenied", 403)
    assert f"is not authorized to perform: sts:AssumeRole on resource: {sim.role_arn(missing[0])}" in message


def test_deny_assume_role_fault_is_access_denied_and_recorded(small_org: SimulatedOrganization) -> None:
    denied, other = crawlable(small_org)[:2]
    small_org.faults.account(denied).deny_assume_role = True
    assert assume_error(small_org, denied)[:2] == ("AccessDenied", 403)
    events = [event for event in small_org.state.events if event.kind == "assume_role_denied"]
    assert [(event.account_id, event.operation) for event in events] == [(denied, "AssumeRole")]
    assert assume(small_org, other)["AssumedRoleUser"]["Arn"].startswith(f"arn:aws:sts::{other}:")


def test_suspended_account_is_access_denied(small_org: SimulatedOrganization) -> None:
    assert assume_error(small_org, suspended_account(small_org))[:2] == ("AccessDenied", 403)


@pytest.mark.parametrize("external_id", [None, "wrong-id"])
def test_external_id_required_by_trust_policy(make_org, external_id: str | None) -> None:
    sim = make_org(OrgSpec(accounts=4, entities=14, seed=11, external_id="expected-id"))
    kwargs = {} if external_id is None else {"ExternalId": external_id}
    assert assume_error(sim, crawlable(sim)[0], **kwargs)[:2] == ("AccessDenied", 403)


def test_right_external_id_is_accepted(make_org) -> None:
    sim = make_org(OrgSpec(accounts=4, entities=14, seed=11, external_id="expected-id"))
    account_id = crawlable(sim)[0]
    assert assume(sim, account_id, ExternalId="expected-id")["AssumedRoleUser"]["Arn"].startswith(
        f"arn:aws:sts::{account_id}:assumed-role/")


def hub_session(sim: SimulatedOrganization) -> boto3.Session:
    """The operator's session through the hub role of the management account."""
    sts = sim.client("sts", config=NO_RETRY)
    answer = sts.assume_role(RoleArn=sim.role_arn(sim.management_account_id, HUB_ROLE), RoleSessionName="hub")
    return session_of(answer)


def test_chained_assume_role_over_one_hour_is_refused(small_org: SimulatedOrganization) -> None:
    with pytest.raises(ClientError) as caught:
        assume(small_org, crawlable(small_org)[0], session=hub_session(small_org), DurationSeconds=3601)
    code, status, message = error_of(caught.value)
    assert (code, status) == ("ValidationError", 400)
    assert "role chaining" in message


def test_chained_assume_role_for_one_hour_lands_in_the_member(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    answer = assume(small_org, account_id, session=hub_session(small_org), DurationSeconds=3600)
    identity = small_org.client("sts", session=session_of(answer)).get_caller_identity()
    assert identity["Account"] == account_id


def test_unchained_assume_role_may_last_one_hour(small_org: SimulatedOrganization) -> None:
    answer = assume(small_org, crawlable(small_org)[0], DurationSeconds=3600)
    assert answer["Credentials"]["Expiration"] > datetime.now(timezone.utc)


def test_short_session_is_answered_expired_token(small_org: SimulatedOrganization) -> None:
    account_id = crawlable(small_org)[0]
    small_org.faults.account(account_id).session_seconds = 1
    answer = assume(small_org, account_id)
    expiration = answer["Credentials"]["Expiration"]
    assert (expiration - datetime.now(timezone.utc)).total_seconds() <= 1.5
    session = session_of(answer)
    iam = small_org.client("iam", session=session, config=NO_RETRY)
    sts = small_org.client("sts", session=session, config=NO_RETRY)
    assert iam.list_roles()["Roles"]
    time.sleep(max(0.0, (expiration - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    for call in (iam.list_roles, sts.get_caller_identity):
        with pytest.raises(ClientError) as caught:
            call()
        assert error_of(caught.value)[0] == "ExpiredToken"
