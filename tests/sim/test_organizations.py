"""Organizations as AWS answers it today: MaxResults 1..20, empty pages, State and Paths, the OU tree."""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from crawler.sim import SimulatedOrganization
from tests.sim.helpers import NO_RETRY


def pages(call: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following NextToken by hand until it is absent."""
    collected = [call(**kwargs)]
    while collected[-1].get("NextToken"):
        collected.append(call(NextToken=collected[-1]["NextToken"], **kwargs))
    return collected


def listed_accounts(organizations: Any, page_size: int) -> list[dict[str, Any]]:
    """ListAccounts to the end."""
    return [account for page in pages(organizations.list_accounts, MaxResults=page_size)
            for account in page["Accounts"]]


def expected_path(sim: SimulatedOrganization, account_id: str) -> str:
    """``o-.../r-.../ou-.../<account id>/`` from the model."""
    parent = sim.model.accounts[account_id].account.parent_id
    return "/".join([sim.model.id, *sim.model.ou_path_ids(parent), account_id]) + "/"


def test_max_results_over_20_is_refused(small_org: SimulatedOrganization) -> None:
    with pytest.raises(ClientError) as caught:
        small_org.client("organizations", config=NO_RETRY).list_accounts(MaxResults=21)
    assert caught.value.response["Error"]["Code"] == "InvalidInputException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_list_accounts_has_empty_pages_with_a_next_token(small_org: SimulatedOrganization, page_size: int) -> None:
    listing = pages(small_org.client("organizations").list_accounts, MaxResults=page_size)
    assert any(page["Accounts"] == [] and page.get("NextToken") for page in listing)


@pytest.mark.parametrize("page_size", [1, 2, 3, 20])
def test_following_next_token_yields_every_account_once(small_org: SimulatedOrganization, page_size: int) -> None:
    ids = [account["Id"] for account in listed_accounts(small_org.client("organizations"), page_size)]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(small_org.model.accounts)


def test_paginator_yields_every_account_once(small_org: SimulatedOrganization) -> None:
    paginator = small_org.client("organizations").get_paginator("list_accounts")
    ids = [account["Id"] for page in paginator.paginate(PaginationConfig={"PageSize": 2})
           for account in page["Accounts"]]
    assert sorted(ids) == sorted(small_org.model.accounts)


def test_no_empty_pages_when_disabled(make_org) -> None:
    sim = make_org(empty_pages=False)
    listing = pages(sim.client("organizations").list_accounts, MaxResults=2)
    assert all(page["Accounts"] for page in listing)
    assert sorted(account["Id"] for page in listing for account in page["Accounts"]) == sorted(sim.model.accounts)


def test_accounts_carry_state_and_never_status(small_org: SimulatedOrganization) -> None:
    accounts = listed_accounts(small_org.client("organizations"), 20)
    assert all("Status" not in account for account in accounts)
    assert {account["Id"]: account["State"] for account in accounts} == {
        account_id: model.account.state for account_id, model in small_org.model.accounts.items()}
    assert {account["State"] for account in accounts} == {"ACTIVE", "SUSPENDED"}


def test_accounts_carry_their_paths(small_org: SimulatedOrganization) -> None:
    for account in listed_accounts(small_org.client("organizations"), 20):
        assert account["Paths"] == [expected_path(small_org, account["Id"])]


def test_paths_left_out_when_disabled(make_org) -> None:
    sim = make_org(account_paths=False)
    organizations = sim.client("organizations")
    assert all("Paths" not in account for account in listed_accounts(organizations, 20))
    assert "Paths" not in organizations.describe_account(AccountId=sim.management_account_id)["Account"]


def test_describe_account_has_state_and_no_status(small_org: SimulatedOrganization) -> None:
    organizations = small_org.client("organizations")
    for account_id, model in small_org.model.accounts.items():
        account = organizations.describe_account(AccountId=account_id)["Account"]
        assert "Status" not in account
        assert (account["Id"], account["Name"], account["State"]) == (account_id, model.account.name,
                                                                      model.account.state)
        assert account["Paths"] == [expected_path(small_org, account_id)]


def walk(organizations: Any, parent_id: str, names: list[str], found: dict[str, list[str]]) -> None:
    """Record the OU names above every account under ``parent_id`` (one item a page)."""
    for page in pages(organizations.list_accounts_for_parent, ParentId=parent_id, MaxResults=1):
        for account in page["Accounts"]:
            found[account["Id"]] = names
    for page in pages(organizations.list_organizational_units_for_parent, ParentId=parent_id, MaxResults=1):
        for unit in page["OrganizationalUnits"]:
            walk(organizations, unit["Id"], [*names, unit["Name"]], found)


def test_ou_tree_walk_reaches_every_account_with_its_ou_names(small_org: SimulatedOrganization) -> None:
    organizations = small_org.client("organizations")
    roots = organizations.list_roots()["Roots"]
    assert [root["Id"] for root in roots] == [small_org.model.root.id]
    found: dict[str, list[str]] = {}
    walk(organizations, roots[0]["Id"], ["Root"], found)
    assert found == {account_id: small_org.model.ou_path_names(model.account.parent_id)
                     for account_id, model in small_org.model.accounts.items()}


def test_ou_tree_is_at_least_three_deep(small_org: SimulatedOrganization) -> None:
    organizations = small_org.client("organizations")
    found: dict[str, list[str]] = {}
    walk(organizations, small_org.model.root.id, ["Root"], found)
    assert max(len(names) - 1 for names in found.values()) >= 3  # e.g. Workloads/Prod/Payments


def test_account_tags_are_the_model_tags(small_org: SimulatedOrganization) -> None:
    organizations = small_org.client("organizations")
    for account_id, model in small_org.model.accounts.items():
        tags = organizations.list_tags_for_resource(ResourceId=account_id)["Tags"]
        assert {tag["Key"]: tag["Value"] for tag in tags} == model.account.tags


def test_member_account_may_not_list_accounts(small_org: SimulatedOrganization) -> None:
    member = next(account_id for account_id in small_org.member_account_ids
                  if small_org.model.accounts[account_id].account.state == "ACTIVE")
    organizations = small_org.client("organizations", session=small_org.assume(member), config=NO_RETRY)
    with pytest.raises(ClientError) as caught:
        organizations.list_accounts()
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
