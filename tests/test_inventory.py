"""The inventory: GetAccountAuthorizationDetails pages -> entities (pure), the entity filters, and the paginated
call against the simulated organization."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crawler.aws.calls import AccountCalls
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import EntitySettings
from crawler.sim import OrgSpec
from crawler.sources.inventory import Entity, entities_of, get_authorization_details, select_entities
from tests.helpers import crawl_config

ACCOUNT = "111122223333"
PLUS_TWO = timezone(timedelta(hours=2))


def arn(kind: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{ACCOUNT}:{kind}{path}{name}"


AWS_ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
AWS_SUPPORT = "arn:aws:iam::aws:policy/aws-service-role/AWSSupportServiceRolePolicy"
AWS_UNATTACHED = "arn:aws:iam::aws:policy/ReadOnlyAccess"
AWS_NO_COUNT = "arn:aws:iam::aws:policy/job-function/ViewOnlyAccess"
SLR_PATH = "/aws-service-role/support.amazonaws.com/"
CUSTOMER_POLICY = arn("policy", "deploy-policy", "/teams/")

DETAILS: dict[str, list[dict[str, Any]]] = {
    "UserDetailList": [
        {"UserName": "alice", "UserId": "AIDAALICE", "Arn": arn("user", "alice", "/people/"), "Path": "/people/",
         "CreateDate": datetime(2023, 1, 2, 3, 4, 5),  # naive: UTC by AWS convention
         "GroupList": ["ops", "devs"],
         "Tags": [{"Key": "team", "Value": "web"}, {"Key": "env", "Value": "prod"}, {"Key": "cost", "Value": "1"}],
         "AttachedManagedPolicies": [{"PolicyName": "deploy-policy", "PolicyArn": CUSTOMER_POLICY},
                                     {"PolicyName": "AdministratorAccess", "PolicyArn": AWS_ADMIN}],
         "UserPolicyList": [{"PolicyName": "zeta", "PolicyDocument": {}}, {"PolicyName": "alpha",
                                                                          "PolicyDocument": {}}],
         "PermissionsBoundary": {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": CUSTOMER_POLICY}},
        {"UserName": "bob", "UserId": "AIDABOB", "Arn": arn("user", "bob"), "Path": "/",
         "CreateDate": datetime(2023, 6, 1, 12, 0, tzinfo=PLUS_TWO), "GroupList": ["devs"]},
        {"UserName": "carol", "Arn": arn("user", "carol")},  # no Path, id, dates or groups at all
    ],
    "GroupDetailList": [
        {"GroupName": "devs", "GroupId": "AGPADEVS", "Arn": arn("group", "devs"), "Path": "/",
         "CreateDate": datetime(2022, 5, 5, tzinfo=timezone.utc),
         "AttachedManagedPolicies": [{"PolicyName": "deploy-policy", "PolicyArn": CUSTOMER_POLICY}],
         "GroupPolicyList": [{"PolicyName": "devs-inline", "PolicyDocument": {}}]},
        {"GroupName": "ops", "GroupId": "AGPAOPS", "Arn": arn("group", "ops"), "Path": "/",
         "CreateDate": datetime(2022, 5, 6, tzinfo=timezone.utc)},
        {"GroupName": "empty", "GroupId": "AGPAEMPTY", "Arn": arn("group", "empty"), "Path": "/",
         "CreateDate": datetime(2022, 5, 7, tzinfo=timezone.utc)},
    ],
    "RoleDetailList": [
        {"RoleName": "app-server", "RoleId": "AROAAPP", "Arn": arn("role", "app-server", "/app/"), "Path": "/app/",
         "CreateDate": datetime(2021, 3, 3, tzinfo=timezone.utc),
         "RoleLastUsed": {"LastUsedDate": datetime(2024, 2, 29, 23, 30, tzinfo=PLUS_TWO), "Region": "eu-west-1"},
         "Tags": [{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}],
         "PermissionsBoundary": {"PermissionsBoundaryArn": CUSTOMER_POLICY}},
        {"RoleName": "AWSServiceRoleForSupport", "RoleId": "AROASLR",
         "Arn": arn("role", "AWSServiceRoleForSupport", SLR_PATH), "Path": SLR_PATH,
         "CreateDate": datetime(2020, 1, 1, tzinfo=timezone.utc), "RoleLastUsed": {},
         "AttachedManagedPolicies": [{"PolicyName": "AWSSupportServiceRolePolicy", "PolicyArn": AWS_SUPPORT}]},
        {"RoleName": "super-admin-role", "RoleId": "AROAADMIN", "Arn": arn("role", "super-admin-role"), "Path": "/",
         "CreateDate": datetime(2020, 1, 2, tzinfo=timezone.utc)},
    ],
    "Policies": [
        {"PolicyName": "deploy-policy", "PolicyId": "ANPADEPLOY", "Arn": CUSTOMER_POLICY, "Path": "/teams/",
         "CreateDate": datetime(2021, 1, 1, tzinfo=timezone.utc), "AttachmentCount": 0},  # unattached: kept
        {"PolicyName": "AdministratorAccess", "PolicyId": "ANPAADMIN", "Arn": AWS_ADMIN, "Path": "/",
         "CreateDate": datetime(2015, 2, 6, tzinfo=timezone.utc), "AttachmentCount": 1},
        {"PolicyName": "AWSSupportServiceRolePolicy", "PolicyId": "ANPASUPPORT", "Arn": AWS_SUPPORT,
         "Path": "/aws-service-role/", "CreateDate": datetime(2015, 2, 6, tzinfo=timezone.utc),
         "AttachmentCount": 3},
        {"PolicyName": "ReadOnlyAccess", "PolicyId": "ANPAREAD", "Arn": AWS_UNATTACHED, "Path": "/",
         "CreateDate": datetime(2015, 2, 6, tzinfo=timezone.utc), "AttachmentCount": 0},
        {"PolicyName": "ViewOnlyAccess", "PolicyId": "ANPAVIEW", "Arn": AWS_NO_COUNT, "Path": "/job-function/",
         "CreateDate": datetime(2015, 2, 6, tzinfo=timezone.utc)},
    ],
}


def by_name(entities: list[Entity]) -> dict[str, Entity]:
    return {entity.name: entity for entity in entities}


# -- entities_of ----------------------------------------------------------------------------------------------


def test_entities_of_keeps_every_entity_but_unattached_aws_managed_policies_sorted_by_arn() -> None:
    entities = entities_of(DETAILS)

    arns = [entity.arn for entity in entities]
    assert arns == sorted(arns)
    assert set(arns) == {arn("user", "alice", "/people/"), arn("user", "bob"), arn("user", "carol"),
                         arn("group", "devs"), arn("group", "ops"), arn("group", "empty"),
                         arn("role", "app-server", "/app/"), arn("role", "AWSServiceRoleForSupport", SLR_PATH),
                         arn("role", "super-admin-role"), CUSTOMER_POLICY, AWS_ADMIN, AWS_SUPPORT}


@pytest.mark.parametrize(("name", "expected_type"), [
    ("alice", "USER"), ("devs", "GROUP"), ("app-server", "ROLE"), ("deploy-policy", "POLICY"),
    ("AdministratorAccess", "POLICY")])
def test_entities_of_types_every_kind(name: str, expected_type: str) -> None:
    assert by_name(entities_of(DETAILS))[name].type == expected_type


def test_a_user_has_its_fields_sorted() -> None:
    alice = by_name(entities_of(DETAILS))["alice"]

    assert alice == Entity(
        type="USER", arn=arn("user", "alice", "/people/"), name="alice", id="AIDAALICE", path="/people/",
        create_date=datetime(2023, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        tags=(("cost", "1"), ("env", "prod"), ("team", "web")),
        attached_policy_arns=tuple(sorted((CUSTOMER_POLICY, AWS_ADMIN))), inline_policy_names=("alpha", "zeta"),
        permissions_boundary_arn=CUSTOMER_POLICY, group_names=("devs", "ops"))


def test_a_user_without_optional_fields_gets_defaults() -> None:
    carol = by_name(entities_of(DETAILS))["carol"]

    assert (carol.id, carol.path, carol.create_date, carol.tags, carol.group_names) == (None, "/", None, (), ())
    assert (carol.attached_policy_arns, carol.inline_policy_names, carol.permissions_boundary_arn) == ((), (), None)


def test_group_members_come_from_the_users_group_lists() -> None:
    entities = by_name(entities_of(DETAILS))

    assert entities["devs"].member_names == ("alice", "bob")
    assert entities["ops"].member_names == ("alice",)
    assert entities["empty"].member_names == ()
    assert entities["devs"].attached_policy_arns == (CUSTOMER_POLICY,)
    assert entities["devs"].inline_policy_names == ("devs-inline",)


def test_roles_carry_last_used_tags_boundary_and_the_service_linked_flag() -> None:
    entities = by_name(entities_of(DETAILS))
    app, slr, admin = entities["app-server"], entities["AWSServiceRoleForSupport"], entities["super-admin-role"]

    assert app.role_last_used == datetime(2024, 2, 29, 21, 30, tzinfo=timezone.utc)
    assert app.role_last_used_region == "eu-west-1"
    assert app.tags == (("a", "1"), ("b", "2"))
    assert app.permissions_boundary_arn == CUSTOMER_POLICY
    assert (app.is_service_linked, slr.is_service_linked, admin.is_service_linked) == (False, True, False)
    assert (slr.role_last_used, slr.role_last_used_region) == (None, None)
    assert (admin.role_last_used, admin.role_last_used_region) == (None, None)


def test_policies_are_flagged_aws_managed_by_arn() -> None:
    entities = by_name(entities_of(DETAILS))

    assert entities["deploy-policy"].is_aws_managed is False
    assert entities["AdministratorAccess"].is_aws_managed is True
    assert entities["AWSSupportServiceRolePolicy"].is_aws_managed is True
    assert entities["deploy-policy"].path == "/teams/"


@pytest.mark.parametrize(("name", "expected"), [
    ("alice", datetime(2023, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),  # naive -> UTC
    ("bob", datetime(2023, 6, 1, 10, 0, tzinfo=timezone.utc)),  # +02:00 -> converted
    ("devs", datetime(2022, 5, 5, tzinfo=timezone.utc)),
])
def test_create_dates_become_tz_aware_utc(name: str, expected: datetime) -> None:
    moment = by_name(entities_of(DETAILS))[name].create_date

    assert moment == expected
    assert moment is not None and moment.tzinfo == timezone.utc


def test_every_timestamp_is_utc() -> None:
    moments = [moment for entity in entities_of(DETAILS) for moment in (entity.create_date, entity.role_last_used)
               if moment is not None]

    assert moments
    assert all(moment.tzinfo == timezone.utc for moment in moments)


def test_another_partitions_aws_managed_policies_are_recognised() -> None:
    details = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [], "Policies": [
        {"PolicyName": "AdministratorAccess", "Arn": "arn:aws-cn:iam::aws:policy/AdministratorAccess",
         "AttachmentCount": 2},
        {"PolicyName": "ReadOnlyAccess", "Arn": "arn:aws-cn:iam::aws:policy/ReadOnlyAccess", "AttachmentCount": 0}]}

    entities = entities_of(details)

    assert [(entity.name, entity.is_aws_managed) for entity in entities] == [("AdministratorAccess", True)]


# -- select_entities ------------------------------------------------------------------------------------------

#: The inventory without AWS-managed policies (their selection is tested on its own below).
OWN = [entity for entity in entities_of(DETAILS) if not entity.is_aws_managed]
ALL_OWN = {entity.name for entity in OWN}


@pytest.mark.parametrize(("settings", "expected"), [
    pytest.param(EntitySettings(), ALL_OWN, id="defaults"),
    pytest.param(EntitySettings(types=("ROLE",)), {"app-server", "AWSServiceRoleForSupport", "super-admin-role"},
                 id="roles"),
    pytest.param(EntitySettings(types=("USER", "GROUP")), {"alice", "bob", "carol", "devs", "ops", "empty"},
                 id="users-groups"),
    pytest.param(EntitySettings(types=("POLICY",)), {"deploy-policy"}, id="policies"),
    pytest.param(EntitySettings(path_prefix="/people/"), {"alice"}, id="path"),
    pytest.param(EntitySettings(path_prefix="/aws-service-role/"), {"AWSServiceRoleForSupport"}, id="slr-path"),
    pytest.param(EntitySettings(path_prefix="/app"), {"app-server"}, id="path-is-a-plain-prefix"),
    pytest.param(EntitySettings(include_names=("^a",)), {"alice", "app-server"}, id="include-anchored"),
    pytest.param(EntitySettings(include_names=("admin",)), {"super-admin-role"}, id="include-searches-inside"),
    pytest.param(EntitySettings(include_names=("^app-", "-role$")), {"app-server", "super-admin-role"},
                 id="include-any-of"),
    pytest.param(EntitySettings(include_names=("ALICE",)), set(), id="include-case-sensitive"),
    pytest.param(EntitySettings(exclude_names=("o",)), {"alice", "devs", "empty", "app-server"},
                 id="exclude-searches-inside"),
    pytest.param(EntitySettings(include_names=("^a",), exclude_names=("server",)), {"alice"},
                 id="exclude-beats-include"),
    pytest.param(EntitySettings(service_linked_roles=False), ALL_OWN - {"AWSServiceRoleForSupport"},
                 id="no-service-linked"),
    pytest.param(EntitySettings(types=("ROLE",), service_linked_roles=False, include_names=("Support",)), set(),
                 id="no-service-linked-even-when-included"),
])
def test_select_entities(settings: EntitySettings, expected: set[str]) -> None:
    selected = select_entities(OWN, settings)

    assert {entity.name for entity in selected} == expected
    assert selected == [entity for entity in OWN if entity in selected]  # order kept


def test_aws_managed_policies_are_selected_whatever_the_types_when_asked_for() -> None:
    settings = EntitySettings(types=("ROLE",), aws_managed_policies=True)

    selected = select_entities(entities_of(DETAILS), settings)

    assert {entity.name for entity in selected} == {"app-server", "AWSServiceRoleForSupport", "super-admin-role",
                                                    "AdministratorAccess", "AWSSupportServiceRolePolicy"}


def test_aws_managed_policies_follow_the_path_and_name_filters() -> None:
    settings = EntitySettings(aws_managed_policies=True, path_prefix="/aws-service-role/", include_names=("Support",))

    selected = select_entities(entities_of(DETAILS), settings)

    assert {entity.name for entity in selected} == {"AWSServiceRoleForSupport", "AWSSupportServiceRolePolicy"}


def test_aws_managed_policies_are_dropped_unless_asked_for() -> None:
    selected = select_entities(entities_of(DETAILS), EntitySettings(aws_managed_policies=False))

    assert not [entity.name for entity in selected if entity.is_aws_managed]


# -- get_authorization_details against the simulator -----------------------------------------------------------

SPEC = OrgSpec(accounts=1, entities=14, seed=3)


class RecordingCall:
    """The rate-limited IAM calls of one account, remembering the arguments of each."""

    def __init__(self, call: AccountCalls) -> None:
        self.call = call
        self.arguments: list[dict[str, Any]] = []

    def __call__(self, operation: str, **arguments: Any) -> dict[str, Any]:
        assert operation == "get_account_authorization_details"
        self.arguments.append(arguments)
        return self.call(operation, **arguments)


@pytest.fixture
def simulated(crawl_org: Any, tmp_path: Path) -> tuple[Any, str, RecordingCall]:
    """The simulator, a member account, and IAM calls in it through the crawler's own session."""
    sim = crawl_org(SPEC)
    config = crawl_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    account_id = sim.member_account_ids[0]
    session = factory.enter_account(account_id)
    return sim, account_id, RecordingCall(AccountCalls(session, "iam", RateLimiter(None)))


def model_arns(sim: Any, account_id: str, types: tuple[str, ...]) -> set[str]:
    return {entity.arn for entity in sim.model.accounts[account_id].entities if entity.type in types}


def test_every_page_is_read(simulated: tuple[Any, str, RecordingCall]) -> None:
    sim, account_id, call = simulated
    expected = model_arns(sim, account_id, ("USER", "ROLE", "GROUP", "POLICY"))

    details = get_authorization_details(call, EntitySettings(), page_size=3)

    assert sorted(entity.arn for entity in entities_of(details)) == sorted(expected)
    assert len(call.arguments) == -(-len(expected) // 3)  # ceil: three per page, every page asked for
    assert all(arguments["MaxItems"] == 3 for arguments in call.arguments)
    assert "Marker" not in call.arguments[0]
    markers = [arguments["Marker"] for arguments in call.arguments[1:]]
    assert len(set(markers)) == len(markers)


@pytest.mark.parametrize(("settings", "expected_filter"), [
    (EntitySettings(), ["User", "Role", "Group", "LocalManagedPolicy"]),
    (EntitySettings(types=("ROLE",)), ["Role"]),
    (EntitySettings(types=("GROUP", "USER")), ["Group", "User"]),
    (EntitySettings(types=("POLICY",)), ["LocalManagedPolicy"]),
    (EntitySettings(types=("ROLE",), aws_managed_policies=True), ["Role", "AWSManagedPolicy"]),
])
def test_the_filter_follows_the_entity_types(simulated: tuple[Any, str, RecordingCall], settings: EntitySettings,
                                             expected_filter: list[str]) -> None:
    sim, account_id, call = simulated

    details = get_authorization_details(call, settings, page_size=4)

    assert {tuple(arguments["Filter"]) for arguments in call.arguments} == {tuple(expected_filter)}
    own = {entity.arn for entity in entities_of(details) if not entity.is_aws_managed}
    assert own == model_arns(sim, account_id, settings.types)


def test_aws_managed_policies_come_back_when_asked_for_and_only_attached_ones_stay(
        simulated: tuple[Any, str, RecordingCall]) -> None:
    sim, account_id, call = simulated
    model = sim.model.accounts[account_id]
    aws_managed = {policy.arn for policy in model.managed_policies.values() if policy.aws_managed}
    attached = {policy for entity in model.entities for policy in entity.attached} & aws_managed

    details = get_authorization_details(call, replace(EntitySettings(), aws_managed_policies=True), page_size=5)

    assert {policy["Arn"] for policy in details["Policies"]} >= aws_managed
    assert {entity.arn for entity in entities_of(details) if entity.is_aws_managed} == attached
    assert attached and attached != aws_managed  # the seed has both kinds
