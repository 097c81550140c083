"""Account discovery against the simulated organization, the pure transforms, and the account filters."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from crawler.aws.calls import PacedCalls
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import AccountFilter, OrganizationSettings, StaticAccount, TagFilter
from crawler.crawl.scheduler import discover
from crawler.sim import FaultPlan, OrgSpec, RequestFaults, SimulatedOrganization
from crawler.sources.organizations import (
    DISCOVERY_THREADS,
    MALFORMED_ATTEMPTS,
    Account,
    Discovery,
    DiscoveryError,
    OrganizationTree,
    account_from_aws,
    account_matches,
    chain_from_paths,
    discover_accounts,
    select_accounts,
    static_accounts,
)
from tests.helpers import crawl_config

#: 26 accounts: more than one page of 20, so empty pages show up; the management account id starts with zeros.
SPEC = OrgSpec(accounts=25, entities=8, seed=11)
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})
ONE_RETRY = Config(retries={"total_max_attempts": 2, "mode": "standard"})


@pytest.fixture
def start_org(make_org: Any) -> Any:
    """Start the 26-account organization (in process) with the given options; stopped after the test."""
    return lambda **options: make_org(SPEC, **options)


def expected_account(sim: SimulatedOrganization, account_id: str) -> Account:
    """What discovery must find for an account, from the simulator's model."""
    model = sim.model.accounts[account_id].account
    return Account(id=account_id, name=model.name, email=model.email, arn=model.arn, state=model.state,
                   ou_path="/".join(sim.model.ou_path_names(model.parent_id)),
                   ou_path_ids="/".join(sim.model.ou_path_ids(model.parent_id)),
                   joined_at=model.joined, tags=tuple(sorted(model.tags.items())),
                   ou_names=tuple(sim.model.ou_path_names(model.parent_id)))


def paced(client: Any, patience: float = 0.0) -> PacedCalls:
    """Discovery's calls through ``client``: paced at a rate that never holds them back, throttling
    waited out for ``patience`` seconds after botocore's retries."""
    return PacedCalls(client, RateLimiter(1000.0), patience=patience)


def management_calls(sim: SimulatedOrganization, operation: str) -> int:
    """Requests the management account made to ``operation``."""
    return sim.state.calls[(sim.management_account_id, operation)]


# -- discovery against the simulator -----------------------------------------------------------
@pytest.mark.parametrize("account_paths", [True, False], ids=["paths", "tree-walk"])
@pytest.mark.parametrize("empty_pages", [True, False], ids=["empty-pages", "full-pages"])
def test_discovery_equals_the_model(start_org: Any, account_paths: bool, empty_pages: bool) -> None:
    sim = start_org(account_paths=account_paths, empty_pages=empty_pages)
    discovery = discover_accounts(paced(sim.client("organizations")))
    assert discovery.organization_id == sim.model.id
    assert discovery.management_account_id == sim.management_account_id
    assert discovery.accounts == tuple(expected_account(sim, account_id) for account_id in sorted(sim.model.accounts))
    assert (management_calls(sim, "ListAccountsForParent") > 0) is not account_paths
    assert management_calls(sim, "ListAccounts") == (3 if empty_pages else 2)  # pages of 20, the empty one followed


def test_discovery_keeps_leading_zeros_and_finds_the_suspended_account(start_org: Any) -> None:
    sim = start_org()
    discovery = discover_accounts(paced(sim.client("organizations")))
    management = next(account for account in discovery.accounts if account.id == sim.management_account_id)
    assert management.id.startswith("00") and len(management.id) == 12
    assert (management.ou_path, management.ou_path_ids) == ("Root", sim.model.root.id)
    suspended = [account.id for account in discovery.accounts if account.state == "SUSPENDED"]
    assert suspended == [sim.member_account_ids[-1]]
    assert all(account.joined_at and account.joined_at.utcoffset() == timedelta(0) for account in discovery.accounts)


def test_default_selection_drops_the_suspended_account(start_org: Any) -> None:
    sim = start_org()
    selected = select_accounts(discover_accounts(paced(sim.client("organizations"))), OrganizationSettings())
    assert [account.id for account in selected] == sorted(set(sim.model.accounts) - {sim.member_account_ids[-1]})


# -- discovery errors -------------------------------------------------------------------------------
def test_member_account_is_denied(start_org: Any) -> None:
    sim = start_org()
    member = sim.member_account_ids[0]
    client = sim.client("organizations", session=sim.assume(member), config=NO_RETRY)
    with pytest.raises(DiscoveryError, match="AccessDeniedException") as caught:
        discover_accounts(paced(client))
    assert caught.value.code == "AccessDeniedException"
    assert "management account or a delegated administrator" in str(caught.value)


def test_account_outside_the_organization_is_refused(start_org: Any) -> None:
    start_org()
    outsider = boto3.client("organizations", region_name="us-east-1", config=NO_RETRY)  # tests/conftest.py keys
    with pytest.raises(DiscoveryError, match="AWSOrganizationsNotInUseException") as caught:
        discover_accounts(paced(outsider))
    assert caught.value.code == "AWSOrganizationsNotInUseException"


@pytest.mark.parametrize("operation", ["ListAccounts", "ListTagsForResource"])
def test_throttling_beyond_the_patience_is_reported(start_org: Any, operation: str) -> None:
    sim = start_org()
    sim.faults.account(sim.management_account_id).operations[operation] = RequestFaults(throttle_rate=1.0)
    with pytest.raises(DiscoveryError, match="TooManyRequestsException") as caught:
        discover_accounts(paced(sim.client("organizations", config=ONE_RETRY), patience=3.0))
    assert caught.value.code == "TooManyRequestsException" and "throttle_patience_seconds" in str(caught.value)
    # botocore retried once, twice: before and after the patience's first pause (2 s), then discovery
    # gave up (tags: a few accounts at once, then it stops)
    calls = management_calls(sim, operation)
    assert calls == 4 if operation == "ListAccounts" else (calls % 4 == 0 and 4 <= calls <= 4 * DISCOVERY_THREADS)


def test_a_slow_organizations_api_costs_time_not_the_discovery(crawl_org: Any, tmp_path: Any) -> None:
    """Organizations answers 2 requests a second and TooManyRequestsException beyond: discovery paces
    its calls with an adaptive limiter and waits the throttling out, as IAM calls do."""
    sim = crawl_org(OrgSpec(accounts=8, entities=8, seed=11),
                    FaultPlan.uniform(organizations_rate=2.0, organizations_burst=2))
    config = crawl_config(tmp_path)

    discovery = discover(config, SessionFactory(config.aws, config.assume_role, config.concurrency))

    assert discovery.accounts == tuple(expected_account(sim, account_id) for account_id in sorted(sim.model.accounts))
    assert sim.state.throttled[sim.management_account_id] > 0


def test_malformed_answers_are_retried_then_reported(start_org: Any) -> None:
    sim = start_org()
    sim.faults.account(sim.management_account_id).operations["ListAccounts"] = RequestFaults(malformed_rate=1.0)
    with pytest.raises(DiscoveryError, match="malformed"):
        discover_accounts(paced(sim.client("organizations", config=NO_RETRY)))
    assert management_calls(sim, "ListAccounts") == MALFORMED_ATTEMPTS


def test_unreachable_endpoint_is_a_discovery_error() -> None:
    def unreachable(operation: str, **arguments: Any) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://organizations.us-east-1.amazonaws.com/")

    with pytest.raises(DiscoveryError, match="not reachable"):
        discover_accounts(unreachable)


# -- pure transforms ------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "state"), [
    ({"State": "ACTIVE"}, "ACTIVE"),
    ({"Status": "SUSPENDED"}, "SUSPENDED"),
    ({"State": "PENDING_CLOSURE", "Status": "ACTIVE"}, "PENDING_CLOSURE"),
    ({}, None),
])
def test_state_falls_back_to_status_only_without_state(fields: dict[str, str], state: str | None) -> None:
    assert account_from_aws({"Id": "000000000042", "Name": "n", **fields}).state == state


def test_account_from_aws_places_the_account_and_keeps_text() -> None:
    tree = OrganizationTree(names={"r-ab12": "Root", "ou-ab12-aaaaaaaa": "Work\nloads"})
    joined = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    item = {"Id": "000000000042", "Name": " odd\tname ", "State": "ACTIVE", "JoinedTimestamp": joined,
            "Paths": ["o-abcdefghij/r-ab12/ou-ab12-aaaaaaaa/000000000042/", "o-abcdefghij/r-ab12/000000000042/"]}
    account = account_from_aws(item, tree, [{"Key": "z", "Value": "1"}, {"Key": "a", "Value": ""}])
    assert (account.name, account.ou_path, account.ou_path_ids) == (" odd\tname ", "Root/Work\nloads",
                                                                    "r-ab12/ou-ab12-aaaaaaaa")
    assert account.joined_at == datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc)
    assert account.tags == (("a", ""), ("z", "1"))


@pytest.mark.parametrize(("paths", "chain"), [
    (["o-abcdefghij/r-ab12/000000000042/"], ("r-ab12",)),
    (["o-abcdefghij/r-ab12/ou-ab12-aaaaaaaa/ou-ab12-bbbbbbbb/000000000042/"],
     ("r-ab12", "ou-ab12-aaaaaaaa", "ou-ab12-bbbbbbbb")),
    (["o-abcdefghij/r-ab12/ou-ab12-aaaaaaaa/000000000042/", "o-abcdefghij/r-ab12/000000000042/"],
     ("r-ab12", "ou-ab12-aaaaaaaa")),
    ([], None),
    (["garbage"], None),
    (["o-abcdefghij/r-ab12/999999999999/"], None),
])
def test_chain_from_paths(paths: list[str], chain: tuple[str, ...] | None) -> None:
    assert chain_from_paths({"Id": "000000000042", "Paths": paths}) == chain


def test_account_without_place_has_no_ou_path() -> None:
    account = account_from_aws({"Id": "000000000042", "Name": "n", "State": "ACTIVE"})
    assert (account.ou_path, account.ou_path_ids, account.tags, account.joined_at) == (None, None, (), None)


# -- filters -------------------------------------------------------------------------------------------
def make_account(account_id: str, name: str, ou_path: str, ou_path_ids: str, state: str | None = "ACTIVE",
                 **tags: str) -> Account:
    """An account for the filter tests."""
    return Account(id=account_id, name=name, email=None, arn=None, state=state, ou_path=ou_path,
                   ou_path_ids=ou_path_ids, joined_at=None, tags=tuple(sorted(tags.items())),
                   ou_names=tuple(ou_path.split("/")) if ou_path else ())


ACCOUNTS = (
    make_account("000000000001", "payments-prod", "Root/Workloads/Prod/Payments",
                 "r-ab12/ou-ab12-work0001/ou-ab12-prod0001/ou-ab12-paym0001", env="prod", team="payments"),
    make_account("000000000002", "web-dev", "Root/Workloads/Dev", "r-ab12/ou-ab12-work0001/ou-ab12-dev00001",
                 env="dev", team="web"),
    make_account("000000000003", "Sandbox-alice", "Root/WorkloadsX", "r-ab12/ou-ab12-wrkx0001", owner="alice"),
    make_account("000000000004", "old-prod", "Root/Suspended", "r-ab12/ou-ab12-susp0001", "SUSPENDED", env="prod"),
    make_account("100000000000", "management", "Root", "r-ab12", env="management"),
)
DISCOVERY = Discovery("o-abcdefghij", "100000000000", ACCOUNTS)


@pytest.mark.parametrize(("account_filter", "matched"), [
    (AccountFilter(), []),
    (AccountFilter(account_ids=("000000000002", "999999999999")), ["000000000002"]),
    (AccountFilter(ous=("ou-ab12-work0001",)), ["000000000001", "000000000002"]),
    (AccountFilter(ous=("ou-ab12-prod0001",)), ["000000000001"]),
    (AccountFilter(ous=("r-ab12",)), [account.id for account in ACCOUNTS]),
    (AccountFilter(ous=("Root/Workloads",)), ["000000000001", "000000000002"]),
    (AccountFilter(ous=("Root/Workloads/Prod/Payments",)), ["000000000001"]),
    (AccountFilter(ous=("Root/Work",)), []),
    (AccountFilter(ous=("Root",)), [account.id for account in ACCOUNTS]),
    (AccountFilter(ous=("Workloads",)), []),
    (AccountFilter(tags=(TagFilter("env", ("prod", "dev")),)), ["000000000001", "000000000002", "000000000004"]),
    (AccountFilter(tags=(TagFilter("env", ("prod",)),)), ["000000000001", "000000000004"]),
    (AccountFilter(tags=(TagFilter("owner"),)), ["000000000003"]),
    (AccountFilter(tags=(TagFilter("env", ("Prod",)),)), []),
    (AccountFilter(names=("*-prod",)), ["000000000001", "000000000004"]),
    (AccountFilter(names=("sandbox-*",)), []),  # case-sensitive
    (AccountFilter(names=("Sandbox-*",)), ["000000000003"]),
    (AccountFilter(account_ids=("100000000000",), names=("web-*",)), ["000000000002", "100000000000"]),
])
def test_account_matches(account_filter: AccountFilter, matched: list[str]) -> None:
    assert [account.id for account in ACCOUNTS if account_matches(account, account_filter)] == matched


@pytest.mark.parametrize(("settings", "selected"), [
    (OrganizationSettings(), ["000000000001", "000000000002", "000000000003", "100000000000"]),
    (OrganizationSettings(states=("ACTIVE", "SUSPENDED")), [account.id for account in ACCOUNTS]),
    (OrganizationSettings(include=AccountFilter(tags=(TagFilter("env", ("prod",)),))), ["000000000001"]),
    (OrganizationSettings(include=AccountFilter(ous=("Root/Workloads",)),
                          exclude=AccountFilter(names=("web-*",))), ["000000000001"]),
    (OrganizationSettings(exclude=AccountFilter(account_ids=("100000000000",), ous=("ou-ab12-wrkx0001",))),
     ["000000000001", "000000000002"]),
])
def test_select_accounts(settings: OrganizationSettings, selected: list[str]) -> None:
    assert [account.id for account in select_accounts(DISCOVERY, settings)] == selected


def test_static_accounts_make_no_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("static accounts must not call AWS")

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", refuse)
    settings = OrganizationSettings(source="static", accounts=(
        StaticAccount("000000000002", "b", tags=(("z", "1"), ("a", "2"))),
        StaticAccount("000000000001"),
        StaticAccount("000000000002", "duplicate")),
        exclude=AccountFilter(tags=(TagFilter("z", ("1",)),)))
    discovery = static_accounts(settings)
    assert (discovery.organization_id, discovery.management_account_id) == (None, None)
    assert [(account.id, account.name, account.state, account.tags) for account in discovery.accounts] == [
        ("000000000001", "", None, ()), ("000000000002", "b", None, (("a", "2"), ("z", "1")))]
    assert [account.id for account in select_accounts(discovery, settings)] == ["000000000001"]
