"""IAM access advisor as the simulator answers it, through real boto3 clients.

Every answer is compared with the ground truth the generator computed from the model
(:mod:`crawler.sim.truth`), or with the model itself, never with the simulator's own code.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization
from crawler.sim.generator import ORG_ACCESS_ROLE
from crawler.sim.model import TRACKING_PERIOD_DAYS, AccountModel, Entity
from crawler.sim.policies import grants_of_document
from crawler.sim.reports import ServiceReport
from crawler.sim.truth import entity_reports
from tests.sim.helpers import all_pages, crawlable, error_of

ENTITY_TYPES = ("USER", "ROLE", "GROUP", "POLICY")
GRANULARITIES = ("SERVICE_LEVEL", "ACTION_LEVEL")
SORT_KEYS = ("SERVICE_NAMESPACE_ASCENDING", "SERVICE_NAMESPACE_DESCENDING",
             "LAST_AUTHENTICATED_TIME_ASCENDING", "LAST_AUTHENTICATED_TIME_DESCENDING")
DETAIL_LISTS = {"UserDetailList": ("USER", "UserName"), "GroupDetailList": ("GROUP", "GroupName"),
                "RoleDetailList": ("ROLE", "RoleName"), "Policies": ("POLICY", "PolicyName")}
FILTER_LISTS = {"User": "UserDetailList", "Group": "GroupDetailList", "Role": "RoleDetailList",
                "LocalManagedPolicy": "Policies", "AWSManagedPolicy": "Policies"}
TINY_ORG = OrgSpec(accounts=2, entities=8, seed=3)


# -- helpers ---------------------------------------------------------------------------------
def utc(value: datetime | None) -> datetime | None:
    """A timestamp from boto3 as an aware UTC datetime (None stays None)."""
    return value.astimezone(timezone.utc) if value is not None else None


def start_job(iam: Any, arn: str, granularity: str = "SERVICE_LEVEL") -> str:
    """GenerateServiceLastAccessedDetails; the JobId."""
    return iam.generate_service_last_accessed_details(Arn=arn, Granularity=granularity)["JobId"]


def job_pages(iam: Any, arn: str, granularity: str = "SERVICE_LEVEL", max_items: int = 100) -> list[dict[str, Any]]:
    """Generate a job and read every page of it (jobs finish at once without faults)."""
    pages = all_pages(iam.get_service_last_accessed_details, JobId=start_job(iam, arn, granularity),
                      MaxItems=max_items)
    assert {page["JobStatus"] for page in pages} == {"COMPLETED"}
    return pages


def job_items(iam: Any, arn: str, granularity: str = "SERVICE_LEVEL", max_items: int = 100) -> list[dict[str, Any]]:
    """Every ServicesLastAccessed item of a fresh job."""
    return [item for page in job_pages(iam, arn, granularity, max_items) for item in page["ServicesLastAccessed"]]


def truth_of(sim: SimulatedOrganization, arn: str, action_level: bool = False) -> list[ServiceReport]:
    """The ground-truth report of one entity."""
    return next(reports for entity, reports in entity_reports(sim.model, action_level=action_level)
                if entity.arn == arn)


def pick(sim: SimulatedOrganization, entity_type: str,
         wanted: Callable[[list[ServiceReport]], bool] = lambda reports: True, action_level: bool = False) -> Entity:
    """The first entity of a type in a crawlable account whose ground truth satisfies ``wanted``."""
    accounts = set(crawlable(sim))
    return next(entity for entity, reports in entity_reports(sim.model, action_level=action_level)
                if entity.account_id in accounts and entity.type == entity_type and wanted(reports))


def used_and_unused(reports: list[ServiceReport]) -> bool:
    """A report with at least one service used and one never used."""
    return any(report.last_authenticated for report in reports) and any(
        report.last_authenticated is None for report in reports)


def used_count(report: ServiceReport) -> int:
    """How many principals of a report used its service."""
    return sum(1 for _arn, when in report.entities if when is not None)


def entity_columns(entity_type: str, arn: str, name: str, path: str) -> dict[str, Any]:
    """The entity columns of the ground-truth rows."""
    return {"account_id": arn.split(":")[4], "entity_type": entity_type, "entity_arn": arn,
            "entity_name": name, "entity_path": path}


def model_columns(entity: Entity) -> dict[str, Any]:
    """Entity columns of a model entity."""
    return entity_columns(entity.type, entity.arn, entity.name, entity.path)


def service_row(columns: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """A ``service_last_accessed`` row from one ServicesLastAccessed item."""
    return {**columns, "service_namespace": item["ServiceNamespace"], "service_name": item["ServiceName"],
            "last_authenticated": utc(item.get("LastAuthenticated")),
            "last_authenticated_entity": item.get("LastAuthenticatedEntity"),
            "last_authenticated_region": item.get("LastAuthenticatedRegion"),
            "total_authenticated_entities": item.get("TotalAuthenticatedEntities")}


def action_rows_of(columns: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """``action_last_accessed`` rows from one ServicesLastAccessed item."""
    return [{**columns, "service_namespace": item["ServiceNamespace"], "action_name": action["ActionName"],
             "last_accessed_time": utc(action.get("LastAccessedTime")),
             "last_accessed_entity": action.get("LastAccessedEntity"),
             "last_accessed_region": action.get("LastAccessedRegion")}
            for action in item.get("TrackedActionsLastAccessed", [])]


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    """Sort key of a ground-truth row."""
    return row["entity_arn"], row["service_namespace"], row.get("action_name", "")


def rows_of(rows: Iterable[dict[str, Any]], arns: set[str]) -> list[dict[str, Any]]:
    """Ground-truth rows of some entities, sorted."""
    return sorted((row for row in rows if row["entity_arn"] in arns), key=row_key)


@pytest.fixture
def member(small_org: SimulatedOrganization) -> str:
    """The first crawlable member account of ``small_org``."""
    return crawlable(small_org)[0]


@pytest.fixture
def iam(small_org: SimulatedOrganization, member: str) -> Any:
    """An IAM client in ``member`` through the crawler role."""
    return small_org.assume(member).client("iam")


# -- 1. GenerateServiceLastAccessedDetails ---------------------------------------------------
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
def test_generate_returns_a_job_of_the_asked_granularity(small_org: SimulatedOrganization, entity_type: str,
                                                         granularity: str) -> None:
    entity = pick(small_org, entity_type)
    iam = small_org.assume(entity.account_id).client("iam")

    job_id = start_job(iam, entity.arn, granularity)

    assert len(job_id) == 36
    assert iam.get_service_last_accessed_details(JobId=job_id)["JobType"] == granularity


@pytest.mark.parametrize("arn", [
    "arn:aws:iam::123:user/someone",
    "arn:aws:s3:::some-bucket-name",
    "arn:aws:iam::{account}:instance-profile/web",
    "arn:aws:iam::{other}:role/AccessCrawlerRole",
], ids=["short-account", "not-iam", "instance-profile", "other-account"])
def test_generate_rejects_an_invalid_arn(small_org: SimulatedOrganization, member: str, iam: Any, arn: str) -> None:
    other = next(account for account in crawlable(small_org) if account != member)

    with pytest.raises(ClientError) as raised:
        start_job(iam, arn.format(account=member, other=other))

    assert error_of(raised.value)[:2] == ("InvalidInput", 400)


@pytest.mark.parametrize("kind", ["user/people", "role", "group", "policy"])
def test_generate_for_a_missing_entity_is_no_such_entity(member: str, iam: Any, kind: str) -> None:
    with pytest.raises(ClientError) as raised:
        start_job(iam, f"arn:aws:iam::{member}:{kind}/nobody-here")

    assert error_of(raised.value)[:2] == ("NoSuchEntity", 404)


def test_generate_rejects_an_unknown_granularity(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        start_job(iam, small_org.role_arn(member), "RESOURCE_LEVEL")

    assert error_of(raised.value)[:2] == ("InvalidInput", 400)


# -- 2. GetServiceLastAccessedDetails ----------------------------------------------------------
@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
def test_all_pages_equal_the_ground_truth(small_org: SimulatedOrganization, entity_type: str) -> None:
    """Same services in namespace order, same last use (exact UTC times), no keys where never used."""
    entity = pick(small_org, entity_type, used_and_unused)
    reports = truth_of(small_org, entity.arn)
    iam = small_org.assume(entity.account_id).client("iam")

    items = job_items(iam, entity.arn, max_items=3)

    namespaces = [item["ServiceNamespace"] for item in items]
    assert namespaces == sorted(namespaces) == [report.namespace for report in reports]
    assert [service_row(model_columns(entity), item) for item in items] == rows_of(
        small_org.service_rows(), {entity.arn})
    last_use_keys = {"LastAuthenticated", "LastAuthenticatedEntity", "LastAuthenticatedRegion",
                     "TotalAuthenticatedEntities"}
    for item, report in zip(items, reports, strict=True):
        assert (last_use_keys <= set(item)) if report.last_authenticated else not (last_use_keys & set(item))


def test_a_page_may_be_short_while_truncated(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    """IAM may return fewer than MaxItems with IsTruncated true; the simulator does it on purpose."""
    pages = job_pages(iam, small_org.role_arn(member, ORG_ACCESS_ROLE), max_items=10)

    assert all(len(page["ServicesLastAccessed"]) <= 10 for page in pages)
    assert any(page["IsTruncated"] and len(page["ServicesLastAccessed"]) < 10 for page in pages)


@pytest.mark.parametrize("max_items", [7, 1000])
def test_admin_role_lists_every_service_across_pages(small_org: SimulatedOrganization, member: str, iam: Any,
                                                     max_items: int) -> None:
    arn = small_org.role_arn(member, ORG_ACCESS_ROLE)

    namespaces = [item["ServiceNamespace"] for item in job_items(iam, arn, max_items=max_items)]

    assert len(namespaces) > 300
    assert namespaces == [report.namespace for report in truth_of(small_org, arn)]
    assert namespaces == sorted(set(namespaces)) == sorted(small_org.catalog.namespaces)


@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
def test_action_level_tracked_actions_equal_the_ground_truth(small_org: SimulatedOrganization,
                                                             entity_type: str) -> None:
    entity = pick(small_org, entity_type, lambda reports: any(report.actions for report in reports),
                  action_level=True)
    iam = small_org.assume(entity.account_id).client("iam")

    items = job_items(iam, entity.arn, "ACTION_LEVEL", max_items=5)

    columns = model_columns(entity)
    rows = sorted((row for item in items for row in action_rows_of(columns, item)), key=row_key)
    assert rows == rows_of(small_org.action_rows(), {entity.arn})
    assert [service_row(columns, item) for item in items] == rows_of(small_org.service_rows(), {entity.arn})


def test_tracked_actions_only_for_services_that_track_actions(small_org: SimulatedOrganization, member: str,
                                                              iam: Any) -> None:
    items = job_items(iam, small_org.role_arn(member, ORG_ACCESS_ROLE), "ACTION_LEVEL")

    with_actions = {item["ServiceNamespace"] for item in items if "TrackedActionsLastAccessed" in item}
    assert with_actions == {service.namespace for service in small_org.catalog.tracked()}
    for item in items:
        service = small_org.catalog.get(item["ServiceNamespace"])
        assert service is not None
        assert sorted(action["ActionName"] for action in item.get("TrackedActionsLastAccessed", [])) == sorted(
            service.tracked_actions)


def test_service_level_has_no_tracked_actions(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    items = job_items(iam, small_org.role_arn(member, ORG_ACCESS_ROLE), "SERVICE_LEVEL")

    assert not any("TrackedActionsLastAccessed" in item for item in items)


@pytest.mark.parametrize("marker", ["not-a-marker", "other-job"])
def test_a_foreign_marker_is_invalid_input(small_org: SimulatedOrganization, member: str, iam: Any,
                                           marker: str) -> None:
    arn = small_org.role_arn(member, ORG_ACCESS_ROLE)
    if marker == "other-job":
        marker = iam.get_service_last_accessed_details(JobId=start_job(iam, arn), MaxItems=2)["Marker"]

    with pytest.raises(ClientError) as raised:
        iam.get_service_last_accessed_details(JobId=start_job(iam, arn), Marker=marker)

    assert error_of(raised.value)[:2] == ("InvalidInput", 400)


# -- MaxItems bounds, for every paginated access-advisor read ---------------------------------
def _last_accessed(sim: SimulatedOrganization, account: str) -> Callable[..., Any]:
    iam = sim.assume(account).client("iam")
    job_id = start_job(iam, sim.role_arn(account, ORG_ACCESS_ROLE))
    return lambda **params: iam.get_service_last_accessed_details(JobId=job_id, **params)


def _with_entities(sim: SimulatedOrganization, account: str) -> Callable[..., Any]:
    policy, report = next((entity, reports[0]) for entity, reports in entity_reports(sim.model)
                          if entity.account_id == account and entity.type == "POLICY" and reports
                          and len(reports[0].entities) >= 2)
    iam = sim.assume(account).client("iam")
    job_id = start_job(iam, policy.arn)
    return lambda **params: iam.get_service_last_accessed_details_with_entities(
        JobId=job_id, ServiceNamespace=report.namespace, **params)


def _organizations_report(sim: SimulatedOrganization, account: str) -> Callable[..., Any]:
    iam = sim.client("iam")
    job_id = iam.generate_organizations_access_report(EntityPath=root_path(sim))["JobId"]
    return lambda **params: iam.get_organizations_access_report(JobId=job_id, **params)


def _authorization_details(sim: SimulatedOrganization, account: str) -> Callable[..., Any]:
    return sim.assume(account).client("iam").get_account_authorization_details


PAGED_READS = {"GetServiceLastAccessedDetails": _last_accessed,
               "GetServiceLastAccessedDetailsWithEntities": _with_entities,
               "GetOrganizationsAccessReport": _organizations_report,
               "GetAccountAuthorizationDetails": _authorization_details}


@pytest.mark.parametrize("operation", PAGED_READS)
def test_max_items_must_be_1_to_1000(small_org: SimulatedOrganization, member: str, operation: str) -> None:
    read = PAGED_READS[operation](small_org, member)

    answers = [read(MaxItems=1), read(MaxItems=1000)]
    with pytest.raises(ClientError) as raised:
        read(MaxItems=1001)

    assert answers[0]["IsTruncated"] and not answers[1]["IsTruncated"]
    assert error_of(raised.value)[:2] == ("InvalidInput", 400)


def test_max_items_zero_is_refused_by_botocore(small_org: SimulatedOrganization, member: str) -> None:
    read = _last_accessed(small_org, member)

    with pytest.raises(ParamValidationError):
        read(MaxItems=0)


# -- 3. the whole organization against the ground truth ---------------------------------------
def authorization_entities(iam: Any) -> list[dict[str, Any]]:
    """Users, groups, roles and customer-managed policies of an account, as entity columns."""
    pages = all_pages(iam.get_account_authorization_details, MaxItems=7,
                      Filter=["User", "Group", "Role", "LocalManagedPolicy"])
    return [entity_columns(entity_type, item["Arn"], item[name_key], item["Path"])
            for page in pages for list_name, (entity_type, name_key) in DETAIL_LISTS.items()
            for item in page[list_name]]


def crawl_account(iam: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Service rows, action rows and entity ARNs of one account, as a crawler would gather them."""
    services: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    arns = set()
    for columns in authorization_entities(iam):
        arns.add(columns["entity_arn"])
        services += [service_row(columns, item) for item in job_items(iam, columns["entity_arn"])]
        actions += [row for item in job_items(iam, columns["entity_arn"], "ACTION_LEVEL")
                    for row in action_rows_of(columns, item)]
    return services, actions, arns


def active_members(sim: SimulatedOrganization) -> list[str]:
    """ACTIVE member accounts, as Organizations lists them to the operator."""
    pages = sim.client("organizations").get_paginator("list_accounts").paginate()
    return [account["Id"] for page in pages for account in page["Accounts"]
            if account["State"] == "ACTIVE" and account["Id"] != sim.management_account_id]


@pytest.mark.parametrize("as_of_days_ago", [None, 120], ids=["as-of-now", "as-of-120-days-ago"])
def test_crawl_of_every_member_account_equals_the_ground_truth(make_org: Callable[..., SimulatedOrganization],
                                                               as_of_days_ago: int | None) -> None:
    """Also with ``as_of`` in the past: the tracking period is counted from the model's ``as_of``."""
    as_of = None if as_of_days_ago is None else datetime.now(timezone.utc) - timedelta(days=as_of_days_ago)
    sim = make_org(OrgSpec(accounts=4, entities=12, seed=5, accounts_without_crawler_role=1, as_of=as_of))
    services: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    arns: set[str] = set()
    skipped = set()

    for account_id in active_members(sim):
        try:
            iam = sim.assume(account_id).client("iam")
        except ClientError as error:
            assert error.response["Error"]["Code"] == "AccessDenied"
            skipped.add(account_id)
            continue
        account_services, account_actions, account_arns = crawl_account(iam)
        services += account_services
        actions += account_actions
        arns |= account_arns

    assert skipped == {a for a in sim.member_account_ids if not sim.model.accounts[a].has_crawler_role}
    assert arns == {entity.arn for account_id in crawlable(sim) for entity in sim.model.accounts[account_id].entities}
    assert sorted(services, key=row_key) == rows_of(sim.service_rows(), arns)
    assert sorted(actions, key=row_key) == rows_of(sim.action_rows(), arns)


def test_suspended_account_cannot_be_assumed(make_org: Callable[..., SimulatedOrganization]) -> None:
    sim = make_org(OrgSpec(accounts=3, entities=8, seed=5))
    suspended = next(a for a in sim.member_account_ids if sim.model.accounts[a].account.state == "SUSPENDED")

    with pytest.raises(ClientError) as raised:
        sim.assume(suspended)

    assert error_of(raised.value)[:2] == ("AccessDenied", 403)


# -- 4. job states -------------------------------------------------------------------------------
def test_job_is_in_progress_then_completed(make_org: Callable[..., SimulatedOrganization]) -> None:
    sim = make_org(TINY_ORG, FaultPlan.uniform(job_seconds=0.5))
    account = crawlable(sim)[0]
    iam = sim.assume(account).client("iam")
    job_id = start_job(iam, sim.role_arn(account))

    first = iam.get_service_last_accessed_details(JobId=job_id)
    deadline = time.monotonic() + 5
    answer = first
    while answer["JobStatus"] == "IN_PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = iam.get_service_last_accessed_details(JobId=job_id)

    assert first["JobStatus"] == "IN_PROGRESS"
    assert first["ServicesLastAccessed"] == [] and "JobCompletionDate" not in first
    assert answer["JobStatus"] == "COMPLETED"
    assert answer["ServicesLastAccessed"] and answer["JobCompletionDate"] >= answer["JobCreationDate"]


@pytest.mark.parametrize("read", ["get_service_last_accessed_details",
                                  "get_service_last_accessed_details_with_entities"])
def test_failed_job_reports_an_error(make_org: Callable[..., SimulatedOrganization], read: str) -> None:
    sim = make_org(TINY_ORG, FaultPlan.uniform(job_failure_rate=1.0))
    account = crawlable(sim)[0]
    iam = sim.assume(account).client("iam")
    params = {"ServiceNamespace": "iam"} if read.endswith("entities") else {}

    answer = getattr(iam, read)(JobId=start_job(iam, sim.role_arn(account)), **params)

    assert answer["JobStatus"] == "FAILED"
    assert answer["Error"]["Code"] and answer["Error"]["Message"]
    assert answer["JobCompletionDate"] >= answer["JobCreationDate"]
    assert not answer.get("ServicesLastAccessed") and not answer.get("EntityDetailsList")


# -- 5. jobs belong to the session that made them ------------------------------------------------
@pytest.mark.parametrize("other_session_name", ["sim-test", "another-session"])
def test_job_is_not_readable_from_another_session(small_org: SimulatedOrganization, member: str,
                                                  other_session_name: str) -> None:
    maker = small_org.assume(member).client("iam")
    other = small_org.assume(member, session_name=other_session_name).client("iam")
    job_id = start_job(maker, small_org.role_arn(member))

    with pytest.raises(ClientError) as raised:
        other.get_service_last_accessed_details(JobId=job_id)

    assert error_of(raised.value)[:2] == ("NoSuchEntity", 404)
    assert maker.get_service_last_accessed_details(JobId=job_id)["JobStatus"] == "COMPLETED"


@pytest.mark.parametrize(("answer", "status"), [("AccessDenied", 403), ("InvalidInput", 400)])
def test_another_sessions_job_can_answer_another_error(small_org: SimulatedOrganization, member: str,
                                                       answer: str, status: int) -> None:
    """Real IAM does not always answer NoSuchEntity for a job of another session: the simulator can
    answer otherwise, for that case only (an unknown JobId stays NoSuchEntity)."""
    small_org.faults.account(member).other_session_job_error = answer
    maker = small_org.assume(member).client("iam")
    other = small_org.assume(member, session_name="another-session").client("iam")
    job_id = start_job(maker, small_org.role_arn(member))

    with pytest.raises(ClientError) as raised:
        other.get_service_last_accessed_details(JobId=job_id)
    with pytest.raises(ClientError) as unknown:
        other.get_service_last_accessed_details(JobId="0" * 36)

    assert error_of(raised.value)[:2] == (answer, status)
    assert error_of(unknown.value)[:2] == ("NoSuchEntity", 404)
    assert maker.get_service_last_accessed_details(JobId=job_id)["JobStatus"] == "COMPLETED"


# -- 6. GetServiceLastAccessedDetailsWithEntities -------------------------------------------------
def entity_details(iam: Any, job_id: str, namespace: str) -> list[dict[str, Any]]:
    """Every EntityDetailsList item of one service, one item per page."""
    pages = all_pages(iam.get_service_last_accessed_details_with_entities, JobId=job_id,
                      ServiceNamespace=namespace, MaxItems=1)
    return [item for page in pages for item in page["EntityDetailsList"]]


def several_principals_used(reports: list[ServiceReport]) -> bool:
    """Some service used by two principals, and some used by one but not all."""
    return any(used_count(report) >= 2 for report in reports) and any(
        0 < used_count(report) < len(report.entities) for report in reports)


@pytest.mark.parametrize("entity_type", ["GROUP", "POLICY"])
def test_with_entities_lists_principals_newest_first(small_org: SimulatedOrganization, entity_type: str) -> None:
    """For every service of the job: the ground truth's principals, used ones newest first, then
    the ones that never used it; EntityInfo names each principal as the model does."""
    entity = pick(small_org, entity_type, several_principals_used)
    model = small_org.model.accounts[entity.account_id]
    iam = small_org.assume(entity.account_id).client("iam")
    job_id = start_job(iam, entity.arn)

    for report in truth_of(small_org, entity.arn):
        details = entity_details(iam, job_id, report.namespace)

        assert [(item["EntityInfo"]["Arn"], utc(item.get("LastAuthenticated"))) for item in details] == list(
            report.entities)
        times = [utc(item.get("LastAuthenticated")) for item in details]
        used = [when for when in times if when is not None]
        assert used == sorted(used, reverse=True) and times == used + [None] * (len(times) - len(used))
        for item in details:
            principal = model.entity(item["EntityInfo"]["Arn"])
            assert item["EntityInfo"] == {"Arn": principal.arn, "Name": principal.name, "Type": principal.type,
                                          "Id": principal.id, "Path": principal.path}


def model_principals(model: AccountModel, entity: Entity) -> set[str]:
    """From the model: a group's members, or the users and roles holding a policy (through groups too)."""
    users = [user for user in model.entities if user.type == "USER"]
    if entity.type == "GROUP":
        return {user.arn for user in users if entity.name in user.groups}
    groups = {group.name for group in model.entities if group.type == "GROUP" and entity.arn in group.attached}
    return {holder.arn for holder in model.entities if holder.type in ("USER", "ROLE") and entity.arn in holder.attached
            } | {user.arn for user in users if groups & set(user.groups)}


@pytest.mark.parametrize("entity_type", ["GROUP", "POLICY"])
def test_with_entities_lists_group_members_or_policy_holders(small_org: SimulatedOrganization,
                                                             entity_type: str) -> None:
    entity = pick(small_org, entity_type, several_principals_used)
    iam = small_org.assume(entity.account_id).client("iam")
    namespace = truth_of(small_org, entity.arn)[0].namespace

    details = entity_details(iam, start_job(iam, entity.arn), namespace)

    assert len(details) >= 2
    assert {item["EntityInfo"]["Arn"] for item in details} == model_principals(
        small_org.model.accounts[entity.account_id], entity)


# -- 7. ListPoliciesGrantingServiceAccess ---------------------------------------------------------
def granting_policies(model: AccountModel, user: Entity, namespace: str, sim: SimulatedOrganization) -> list[dict]:
    """From the model: the user's and its groups' policies granting ``namespace``, managed ones once."""
    owners = [("USER", user)] + [("GROUP", group) for group in model.entities
                                  if group.type == "GROUP" and group.name in user.groups]
    inline, managed = [], {}
    for owner_type, owner in owners:
        inline += [{"PolicyName": policy.name, "PolicyType": "INLINE", "EntityType": owner_type,
                    "EntityName": owner.name}
                   for policy in owner.inline_policies if namespace in grants_of_document(policy.document, sim.catalog)]
        managed.update({arn: {"PolicyName": model.managed_policies[arn].name, "PolicyType": "MANAGED",
                              "PolicyArn": arn}
                        for arn in owner.attached
                        if namespace in grants_of_document(model.managed_policies[arn].document, sim.catalog)})
    return inline + list(managed.values())


def user_sharing_policies_with_groups(sim: SimulatedOrganization) -> Entity:
    """A user in a group with inline policies, holding a managed policy its group holds too."""
    for account_id in crawlable(sim):
        entities = sim.model.accounts[account_id].entities
        for user in (entity for entity in entities if entity.type == "USER"):
            groups = [group for group in entities if group.type == "GROUP" and group.name in user.groups]
            if any(group.inline_policies for group in groups) and any(
                    set(user.attached) & set(group.attached) for group in groups):
                return user
    raise AssertionError("no such user in this organization")


def policy_key(policy: dict[str, str]) -> tuple[str, ...]:
    """Sort key of a PolicyGrantingServiceAccess item."""
    return policy["PolicyType"], policy["PolicyName"], policy.get("PolicyArn", ""), policy.get("EntityName", "")


def test_policies_granting_access_of_a_user_include_its_groups(small_org: SimulatedOrganization) -> None:
    user = user_sharing_policies_with_groups(small_org)
    model = small_org.model.accounts[user.account_id]
    namespaces = [report.namespace for report in truth_of(small_org, user.arn)][:20] + ["translate"]
    iam = small_org.assume(user.account_id).client("iam")

    pages = all_pages(iam.list_policies_granting_service_access, Arn=user.arn, ServiceNamespaces=namespaces)

    entries = [entry for page in pages for entry in page["PoliciesGrantingServiceAccess"]]
    assert [entry["ServiceNamespace"] for entry in entries] == namespaces
    for entry in entries:
        expected = granting_policies(model, user, entry["ServiceNamespace"], small_org)
        assert sorted(entry["Policies"], key=policy_key) == sorted(expected, key=policy_key)
    listed = [policy for entry in entries for policy in entry["Policies"]]
    assert any(policy["PolicyType"] == "INLINE" and policy["EntityType"] == "GROUP" for policy in listed)
    assert any(policy["PolicyType"] == "MANAGED" and "EntityType" not in policy for policy in listed)


def test_managed_policy_of_user_and_group_is_listed_once(small_org: SimulatedOrganization) -> None:
    user = user_sharing_policies_with_groups(small_org)
    iam = small_org.assume(user.account_id).client("iam")
    namespaces = [report.namespace for report in truth_of(small_org, user.arn)][:50]

    entries = iam.list_policies_granting_service_access(Arn=user.arn, ServiceNamespaces=namespaces)[
        "PoliciesGrantingServiceAccess"]

    for entry in entries:
        arns = [policy["PolicyArn"] for policy in entry["Policies"] if policy["PolicyType"] == "MANAGED"]
        assert len(arns) == len(set(arns)), entry["ServiceNamespace"]


def test_policies_granting_access_needs_a_namespace(small_org: SimulatedOrganization) -> None:
    user = user_sharing_policies_with_groups(small_org)
    iam = small_org.assume(user.account_id).client("iam")

    with pytest.raises(ParamValidationError):
        iam.list_policies_granting_service_access(Arn=user.arn, ServiceNamespaces=[])


def test_policies_granting_access_takes_at_most_200_namespaces(small_org: SimulatedOrganization) -> None:
    user = user_sharing_policies_with_groups(small_org)
    iam = small_org.assume(user.account_id).client("iam")

    with pytest.raises(ClientError) as raised:
        iam.list_policies_granting_service_access(Arn=user.arn, ServiceNamespaces=list(
            small_org.catalog.namespaces[:201]))

    assert error_of(raised.value)[:2] == ("InvalidInput", 400)


def test_200_namespaces_are_paginated_in_request_order(small_org: SimulatedOrganization) -> None:
    user = user_sharing_policies_with_groups(small_org)
    iam = small_org.assume(user.account_id).client("iam")
    namespaces = list(reversed(small_org.catalog.namespaces[:200]))

    pages = all_pages(iam.list_policies_granting_service_access, Arn=user.arn, ServiceNamespaces=namespaces)

    assert len(pages) > 1 and all(page["Marker"] for page in pages[:-1])
    assert [entry["ServiceNamespace"] for page in pages for entry in page["PoliciesGrantingServiceAccess"]] == (
        namespaces)


# -- 8. GetAccountAuthorizationDetails ------------------------------------------------------------
def authorization_items(iam: Any, max_items: int = 100, **params: Any) -> dict[str, list[dict[str, Any]]]:
    """Every item of every page, per detail list."""
    pages = all_pages(iam.get_account_authorization_details, MaxItems=max_items, **params)
    return {name: [item for page in pages for item in page[name]] for name in DETAIL_LISTS}


def model_inventory(model: AccountModel) -> dict[str, list[str]]:
    """ARNs per detail list from the model (customer-managed policies only)."""
    by_type = {entity_type: list_name for list_name, (entity_type, _key) in DETAIL_LISTS.items()}
    inventory: dict[str, list[str]] = {name: [] for name in DETAIL_LISTS}
    for entity in model.entities:
        inventory[by_type[entity.type]].append(entity.arn)
    return {name: sorted(arns) for name, arns in inventory.items()}


@pytest.mark.parametrize("max_items", [3, 1000])
def test_authorization_details_pages_hold_every_entity(small_org: SimulatedOrganization, member: str, iam: Any,
                                                       max_items: int) -> None:
    pages = all_pages(iam.get_account_authorization_details, MaxItems=max_items,
                      Filter=["User", "Group", "Role", "LocalManagedPolicy"])

    found = {name: sorted(item["Arn"] for page in pages for item in page[name]) for name in DETAIL_LISTS}
    assert found == model_inventory(small_org.model.accounts[member])
    assert all(sum(len(page[name]) for name in DETAIL_LISTS) <= max_items for page in pages)
    assert (len(pages) > 1) == (max_items < 1000)


@pytest.mark.parametrize("kind", FILTER_LISTS)
def test_authorization_details_filter(small_org: SimulatedOrganization, member: str, iam: Any, kind: str) -> None:
    model = small_org.model.accounts[member]

    items = authorization_items(iam, max_items=3, Filter=[kind])

    expected = model_inventory(model)[FILTER_LISTS[kind]]
    if kind == "AWSManagedPolicy":
        expected = sorted(arn for arn, policy in model.managed_policies.items() if policy.aws_managed)
    assert {name: sorted(item["Arn"] for item in found) for name, found in items.items()} == {
        name: expected if name == FILTER_LISTS[kind] else [] for name in DETAIL_LISTS}


def test_authorization_details_roles(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    """RoleLastUsed is the generator's last use (the crawler role's is set by AssumeRole, so skipped)."""
    model = small_org.model.accounts[member]

    roles = authorization_items(iam, Filter=["Role"])["RoleDetailList"]

    assert any(role["Arn"] in model.activity for role in roles)
    for role in roles:
        entity = model.entity(role["Arn"])
        assert (role["RoleName"], role["RoleId"], role["Path"]) == (entity.name, entity.id, entity.path)
        assert {tag["Key"]: tag["Value"] for tag in role.get("Tags", [])} == entity.tags
        assert sorted(p["PolicyArn"] for p in role["AttachedManagedPolicies"]) == sorted(entity.attached)
        assert sorted(p["PolicyName"] for p in role["RolePolicyList"]) == sorted(
            p.name for p in entity.inline_policies)
        if entity.name == small_org.model.crawler_role_name:
            continue
        last = max((use.use for use in model.activity.get(entity.arn, {}).values()), key=lambda use: use.time,
                   default=None)
        used = role.get("RoleLastUsed", {})
        assert (utc(used.get("LastUsedDate")), used.get("Region")) == (
            (last.time, last.region) if last else (None, None))


def test_authorization_details_users(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    model = small_org.model.accounts[member]

    users = authorization_items(iam, Filter=["User"])["UserDetailList"]

    assert users and any(user["GroupList"] for user in users)
    for user in users:
        entity = model.entity(user["Arn"])
        assert (user["UserName"], user["UserId"], user["Path"]) == (entity.name, entity.id, entity.path)
        assert sorted(user["GroupList"]) == sorted(entity.groups)
        assert sorted(p["PolicyArn"] for p in user["AttachedManagedPolicies"]) == sorted(entity.attached)
        assert sorted(p["PolicyName"] for p in user["UserPolicyList"]) == sorted(
            p.name for p in entity.inline_policies)
        assert {tag["Key"]: tag["Value"] for tag in user.get("Tags", [])} == entity.tags


def test_authorization_details_groups_and_policies(small_org: SimulatedOrganization, member: str, iam: Any) -> None:
    model = small_org.model.accounts[member]

    items = authorization_items(iam, Filter=["Group", "LocalManagedPolicy"])

    for group in items["GroupDetailList"]:
        entity = model.entity(group["Arn"])
        assert (group["GroupName"], group["GroupId"]) == (entity.name, entity.id)
        assert sorted(p["PolicyArn"] for p in group["AttachedManagedPolicies"]) == sorted(entity.attached)
    for policy in items["Policies"]:
        entity = model.entity(policy["Arn"])
        assert (policy["PolicyName"], policy["PolicyId"], policy["Path"]) == (entity.name, entity.id, entity.path)
        default = next(version for version in policy["PolicyVersionList"] if version["IsDefaultVersion"])
        assert default["Document"] == entity.document


# -- 9. Organizations access reports --------------------------------------------------------------
def root_path(sim: SimulatedOrganization) -> str:
    """``o-.../r-...``."""
    return f"{sim.model.id}/{sim.model.root.id}"


def account_entity_path(sim: SimulatedOrganization, account_id: str) -> str:
    """``o-.../r-.../ou-.../<account>`` from the model."""
    parent = sim.model.accounts[account_id].account.parent_id
    return "/".join([sim.model.id, *sim.model.ou_path_ids(parent), account_id])


def report_path(sim: SimulatedOrganization, target: str) -> str:
    """The root, the OU holding most accounts below the root, or one member account."""
    if target == "root":
        return root_path(sim)
    if target == "account":
        return account_entity_path(sim, crawlable(sim)[0])
    counts: dict[str, int] = defaultdict(int)
    for account_id in sim.model.accounts:
        for unit_id in sim.model.ou_path_ids(sim.model.accounts[account_id].account.parent_id)[1:]:
            counts[unit_id] += 1
    unit_id = max(counts, key=lambda unit: (counts[unit], unit))
    return "/".join([sim.model.id, *sim.model.ou_path_ids(unit_id)])


def expected_access(sim: SimulatedOrganization, path: str) -> dict[str, tuple[datetime, int, set[tuple[str, str]]]]:
    """From the model: per namespace used under ``path``, its last use, the number of accounts
    that used it and the (account path, region) pairs of that last use."""
    cutoff = sim.model.as_of - timedelta(days=TRACKING_PERIOD_DAYS)
    uses: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for account_id, model in sim.model.accounts.items():
        where = account_entity_path(sim, account_id)
        if not (where + "/").startswith(path + "/"):
            continue
        for activity in model.activity.values():
            for namespace, used in activity.items():
                if used.use.time >= cutoff:
                    uses[namespace].append((used.use.time, where, used.use.region))
    expected = {}
    for namespace, found in uses.items():
        latest = max(when for when, _where, _region in found)
        expected[namespace] = (latest, len({where for _when, where, _region in found}),
                               {(where, region) for when, where, region in found if when == latest})
    return expected


def organizations_report(iam: Any, path: str, max_items: int = 50, **params: Any) -> list[dict[str, Any]]:
    """Generate a report on ``path`` and read every page of it."""
    job_id = iam.generate_organizations_access_report(EntityPath=path)["JobId"]
    pages = all_pages(iam.get_organizations_access_report, JobId=job_id, MaxItems=max_items, **params)
    assert {page["JobStatus"] for page in pages} == {"COMPLETED"}
    return pages


@pytest.mark.parametrize("target", ["root", "ou", "account"])
def test_organizations_report_counts_and_details(small_org: SimulatedOrganization, target: str) -> None:
    path = report_path(small_org, target)
    expected = expected_access(small_org, path)

    pages = organizations_report(small_org.client("iam"), path, max_items=50)

    details = [item for page in pages for item in page["AccessDetails"]]
    services = len(small_org.catalog.namespaces)
    assert len(pages) > 1 and all(len(page["AccessDetails"]) <= 50 for page in pages)
    assert sorted(item["ServiceNamespace"] for item in details) == sorted(small_org.catalog.namespaces)
    for page in pages:
        assert page["NumberOfServicesAccessible"] == services
        assert page["NumberOfServicesNotAccessed"] == services - len(expected)
    accessed = {item["ServiceNamespace"]: item for item in details if "LastAuthenticatedTime" in item}
    assert expected and set(accessed) == set(expected)
    for namespace, (latest, accounts, last_uses) in expected.items():
        item = accessed[namespace]
        assert (utc(item["LastAuthenticatedTime"]), item["TotalAuthenticatedEntities"]) == (latest, accounts)
        assert (item["EntityPath"], item["Region"]) in last_uses


@pytest.mark.parametrize("sort_key", SORT_KEYS)
def test_organizations_report_sort_keys(small_org: SimulatedOrganization, sort_key: str) -> None:
    descending = sort_key.endswith("DESCENDING")

    pages = organizations_report(small_org.client("iam"), root_path(small_org), max_items=40, SortKey=sort_key)

    details = [item for page in pages for item in page["AccessDetails"]]
    namespaces = [item["ServiceNamespace"] for item in details]
    times = [item["LastAuthenticatedTime"].astimezone(timezone.utc) for item in details
             if "LastAuthenticatedTime" in item]
    assert sorted(namespaces) == sorted(small_org.catalog.namespaces)
    if sort_key.startswith("SERVICE_NAMESPACE"):
        assert namespaces == sorted(namespaces, reverse=descending)
    else:
        assert times and times == sorted(times, reverse=descending)


def test_organizations_report_most_recent_first(small_org: SimulatedOrganization) -> None:
    pages = organizations_report(small_org.client("iam"), root_path(small_org),
                                 SortKey="LAST_AUTHENTICATED_TIME_DESCENDING")

    first = pages[0]["AccessDetails"][0]
    latest = max(latest for latest, _count, _uses in expected_access(small_org, root_path(small_org)).values())
    assert utc(first["LastAuthenticatedTime"]) == latest


def test_organizations_report_is_refused_to_a_member_account(small_org: SimulatedOrganization, member: str,
                                                             iam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        iam.generate_organizations_access_report(EntityPath=root_path(small_org))

    assert error_of(raised.value)[:2] == ("AccessDenied", 403)


@pytest.mark.parametrize("mangle", [
    lambda sim: f"{sim.model.id}/r-zzzz",
    lambda sim: "o-aaaaaaaaaa/" + sim.model.root.id,
    lambda sim: f"{root_path(sim)}/ou-{sim.model.root.id[2:]}-zzzzzzzz",
    lambda sim: f"{root_path(sim)}/999999999999",
    lambda sim: f"{root_path(sim)}/{crawlable(sim)[0]}",
], ids=["unknown-root", "other-organization", "unknown-ou", "unknown-account", "account-without-its-ous"])
def test_organizations_report_rejects_an_invalid_path(small_org: SimulatedOrganization,
                                                      mangle: Callable[[SimulatedOrganization], str]) -> None:
    with pytest.raises(ClientError) as raised:
        small_org.client("iam").generate_organizations_access_report(EntityPath=mangle(small_org))

    assert error_of(raised.value)[:2] == ("InvalidInput", 400)
