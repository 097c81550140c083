"""The pure row transforms: outcomes built by hand -> rows with exactly each table's columns, in UTC."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from crawler.outcomes import Failure
from crawler.sources.advisor import COMPLETED, DELETED, FAILED, SKIPPED, TIMED_OUT, EntityOutcome
from crawler.sources.inventory import Entity
from crawler.sources.organizations import Account
from crawler.sources.rows import (
    AccountResult,
    RunContext,
    accessor_rows,
    account_row,
    account_tables,
    action_rows,
    entity_row,
    error_row,
    policy_rows,
    service_rows,
    utc,
)
from crawler.store.schema import PARTITION_COLUMN, RUN_TABLES, TABLES

#: The tables an account's rows fill (the Organizations view belongs to the run: crawler.sources.organizations_view).
ACCOUNT_TABLES = set(TABLES) - {"organizations_access"} - RUN_TABLES

PLUS_TWO = timezone(timedelta(hours=2))
ACCOUNT_ID = "000123456789"
ACCOUNT = Account(
    id=ACCOUNT_ID, name="payments-prod", email="aws+payments@example.com",
    arn=f"arn:aws:organizations::000000000001:account/o-abcdefghij/{ACCOUNT_ID}", state="ACTIVE",
    ou_path="Root/Workloads/Prod", ou_path_ids="r-ab12/ou-ab12-aaaaaaaa/ou-ab12-bbbbbbbb",
    joined_at=datetime(2024, 5, 26, 12, 33, 34, tzinfo=PLUS_TWO), tags=(("env", "prod"), ("team", "web")))
CONTEXT = RunContext("run-1", "o-abcdefghij", ACCOUNT)
STARTED = datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc)
FINISHED = datetime(2025, 1, 1, 10, 5)  # naive: UTC


def make_entity(name: str = "app-server", kind: str = "ROLE", **changes: Any) -> Entity:
    fields: dict[str, Any] = dict(
        type=kind, arn=f"arn:aws:iam::{ACCOUNT_ID}:{kind.lower()}/app/{name}", name=name, id=f"AROA{name.upper()}",
        path="/app/", create_date=datetime(2021, 3, 3, 3, 0), tags=(("a", "1"), ("b", "2")),
        attached_policy_arns=(f"arn:aws:iam::{ACCOUNT_ID}:policy/deploy",), inline_policy_names=("inline",),
        permissions_boundary_arn=f"arn:aws:iam::{ACCOUNT_ID}:policy/boundary", group_names=(), member_names=(),
        role_last_used=datetime(2024, 2, 29, 23, 30, tzinfo=PLUS_TWO), role_last_used_region="eu-west-1")
    fields.update(changes)
    return Entity(**fields)


S3: dict[str, Any] = {
    "ServiceNamespace": "s3", "ServiceName": "Amazon S3",
    "LastAuthenticated": datetime(2024, 6, 1, 12, 0, tzinfo=PLUS_TWO),
    "LastAuthenticatedEntity": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server",
    "LastAuthenticatedRegion": "eu-west-1", "TotalAuthenticatedEntities": 3,
    "TrackedActionsLastAccessed": [
        {"ActionName": "GetObject", "LastAccessedTime": datetime(2024, 6, 1, 9, 0),
         "LastAccessedEntity": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server", "LastAccessedRegion": "eu-west-1"},
        {"ActionName": "PutObject"}]}
EC2_NEVER_USED: dict[str, Any] = {
    "ServiceNamespace": "ec2", "ServiceName": "Amazon EC2", "TotalAuthenticatedEntities": 0}
LAMBDA_NULL: dict[str, Any] = {
    "ServiceNamespace": "lambda", "ServiceName": "AWS Lambda", "LastAuthenticated": None,
    "TrackedActionsLastAccessed": None}
ACCESSORS: dict[str, list[dict[str, Any]]] = {
    "s3": [{"EntityInfo": {"Arn": f"arn:aws:iam::{ACCOUNT_ID}:user/alice", "Name": "alice", "Type": "USER",
                           "Id": "AIDAALICE", "Path": "/"},
            "LastAuthenticated": datetime(2024, 6, 1, 12, 0, tzinfo=PLUS_TWO)}],
    "ec2": [{"EntityInfo": {"Arn": f"arn:aws:iam::{ACCOUNT_ID}:role/ops"}}]}
POLICIES: list[dict[str, Any]] = [
    {"ServiceNamespace": "s3", "Policies": [
        {"PolicyName": "deploy", "PolicyType": "MANAGED", "PolicyArn": f"arn:aws:iam::{ACCOUNT_ID}:policy/deploy"},
        {"PolicyName": "inline", "PolicyType": "INLINE", "EntityType": "ROLE", "EntityName": "app-server"}]},
    {"ServiceNamespace": "ec2", "Policies": []}]


def completed(entity: Entity | None = None, **changes: Any) -> EntityOutcome:
    outcome = EntityOutcome(
        entity or make_entity(), outcome=COMPLETED, job_id="job-1", job_created_at=datetime(2025, 1, 1, 10, 1),
        collected_at=datetime(2025, 1, 1, 12, 2, tzinfo=PLUS_TWO), attempts=1,
        services=[S3, EC2_NEVER_USED, LAMBDA_NULL], accessors=ACCESSORS, policies=POLICIES)
    return replace(outcome, **changes)


def failure(stage: str = "read_job", code: str = "JobFailed", message: str = "the job failed",
            entity: Entity | None = None, occurred_at: datetime | None = None) -> Failure:
    return Failure(stage, code, message, attempts=2, entity_arn=(entity or make_entity()).arn,
                   occurred_at=occurred_at or datetime(2025, 1, 1, 10, 3))


def not_completed(kind: str, failures: list[Failure], **changes: Any) -> EntityOutcome:
    # services/accessors/policies left over from an earlier attempt must still give no rows
    return completed(outcome=kind, collected_at=None, failures=failures, **changes)


def at_level(action_level: bool) -> RunContext:
    """The account's context, its jobs run at ACTION_LEVEL or not."""
    return replace(CONTEXT, action_level=action_level)


def result(*outcomes: EntityOutcome, **changes: Any) -> AccountResult:
    return replace(AccountResult(ACCOUNT, f"arn:aws:iam::{ACCOUNT_ID}:role/AccessCrawlerRole", STARTED, FINISHED,
                                 outcomes=outcomes), **changes)


EVERY_KIND = result(
    completed(),
    completed(make_entity("devs", "GROUP", member_names=("alice", "bob"), role_last_used=None,
                          role_last_used_region=None, tags=())),
    not_completed(FAILED, [failure("generate_job", "Throttling", "slow down"), failure()]),
    not_completed(TIMED_OUT, [failure("read_job", "JobTimedOut", "still IN_PROGRESS")], entity=make_entity("slow")),
    not_completed(DELETED, [failure("generate_job", "NoSuchEntity", "gone")], entity=make_entity("gone")),
    not_completed(SKIPPED, [], entity=make_entity("skipped")),
    failure=Failure("inventory", "AccessDenied", "no", occurred_at=datetime(2025, 1, 1, 10, 4, tzinfo=PLUS_TWO)))

RESULTS = [
    pytest.param(EVERY_KIND, id="every-outcome-and-an-account-failure"),
    pytest.param(result(completed()), id="ok"),
    pytest.param(result(skipped=True), id="skipped-account"),
    pytest.param(result(failure=Failure("assume_role", "AccessDenied", "not authorized")), id="failed-account"),
    pytest.param(replace(result(completed()), account=Account(ACCOUNT_ID, "", None, None, None, None, None, None, ()),
                         role_arn=None), id="static-account"),
]


def every_value(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from every_value(item)
    elif isinstance(value, list):
        for item in value:
            yield from every_value(item)
    else:
        yield value


# -- columns and types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action_level", [True, False])
@pytest.mark.parametrize("account_result", RESULTS)
def test_every_row_has_exactly_the_columns_of_its_table(account_result: AccountResult, action_level: bool) -> None:
    tables = account_tables(at_level(action_level), account_result)

    assert set(tables) == ACCOUNT_TABLES
    for table, rows in tables.items():
        columns = set(TABLES[table].names)
        assert PARTITION_COLUMN not in columns
        for row in rows:
            assert set(row) == columns, table


def test_every_table_gets_rows_from_the_richest_result() -> None:
    tables = account_tables(at_level(True), EVERY_KIND)

    assert {table: bool(rows) for table, rows in tables.items()} == {table: True for table in ACCOUNT_TABLES}


@pytest.mark.parametrize("action_level", [True, False])
@pytest.mark.parametrize("account_result", RESULTS)
def test_every_row_converts_to_its_arrow_schema(account_result: AccountResult, action_level: bool) -> None:
    tables = account_tables(at_level(action_level), account_result)

    for table, rows in tables.items():
        converted = pa.Table.from_pylist(rows, schema=TABLES[table])
        assert converted.num_rows == len(rows)
        assert converted.to_pylist() == rows


@pytest.mark.parametrize("account_result", RESULTS)
def test_every_timestamp_leaves_tz_aware_in_utc(account_result: AccountResult) -> None:
    tables = account_tables(at_level(True), account_result)

    moments = [value for rows in tables.values() for row in rows for value in every_value(row)
               if isinstance(value, datetime)]
    assert moments
    assert all(moment.tzinfo == timezone.utc for moment in moments)


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(2024, 6, 1, 12, 0), datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)),
    (datetime(2024, 6, 1, 12, 0, tzinfo=PLUS_TWO), datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)),
    (datetime(2024, 6, 1, 0, 30, tzinfo=PLUS_TWO), datetime(2024, 5, 31, 22, 30, tzinfo=timezone.utc)),
    (datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc), datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)),
    (None, None),
])
def test_timestamps_become_utc(moment: datetime | None, expected: datetime | None) -> None:
    outcome = completed(services=[{**S3, "LastAuthenticated": moment}], collected_at=moment or STARTED)

    row = next(service_rows(CONTEXT, outcome))

    assert row["last_authenticated"] == expected
    assert utc(moment) == expected
    if expected is not None:
        assert row["last_authenticated"].tzinfo == timezone.utc
        assert row["collected_at"] == expected


# -- service and action rows ----------------------------------------------------------------------------------------


def test_service_rows_one_per_service_never_used_ones_kept_with_null() -> None:
    rows = list(service_rows(CONTEXT, completed()))

    assert [row["service_namespace"] for row in rows] == ["s3", "ec2", "lambda"]
    s3, ec2, lam = rows
    assert s3 == {
        "run_id": "run-1", "collected_at": datetime(2025, 1, 1, 10, 2, tzinfo=timezone.utc),
        "organization_id": "o-abcdefghij", "account_id": ACCOUNT_ID, "account_name": "payments-prod",
        "ou_path": "Root/Workloads/Prod", "entity_type": "ROLE",
        "entity_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server", "entity_name": "app-server",
        "entity_path": "/app/", "service_namespace": "s3", "service_name": "Amazon S3",
        "last_authenticated": datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc),
        "last_authenticated_entity": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server",
        "last_authenticated_region": "eu-west-1", "total_authenticated_entities": 3}
    assert (ec2["last_authenticated"], ec2["last_authenticated_entity"], ec2["last_authenticated_region"]) == (
        None, None, None)
    assert ec2["total_authenticated_entities"] == 0
    assert lam["last_authenticated"] is None


def test_action_rows_one_per_tracked_action() -> None:
    rows = list(action_rows(CONTEXT, completed()))

    assert [(row["service_namespace"], row["action_name"]) for row in rows] == [("s3", "GetObject"),
                                                                                 ("s3", "PutObject")]
    get, put = rows
    assert get["last_accessed_time"] == datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)
    assert (get["last_accessed_entity"], get["last_accessed_region"]) == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server", "eu-west-1")
    assert (put["last_accessed_time"], put["last_accessed_entity"], put["last_accessed_region"]) == (None, None, None)
    assert get["service_name"] == "Amazon S3"


@pytest.mark.parametrize(("action_level", "expected"), [(True, 2), (False, 0)])
def test_action_rows_only_at_action_level(action_level: bool, expected: int) -> None:
    tables = account_tables(at_level(action_level), result(completed()))

    assert len(tables["action_last_accessed"]) == expected
    assert len(tables["service_last_accessed"]) == 3


# -- entity rows ----------------------------------------------------------------------------------------------------


def test_entity_row_of_a_completed_job() -> None:
    row = entity_row(CONTEXT, completed())

    assert row["job_outcome"] == COMPLETED
    assert (row["services_granted"], row["services_used"]) == (3, 1)
    assert (row["error_code"], row["error_message"]) == (None, None)
    assert (row["job_id"], row["job_attempts"]) == ("job-1", 1)
    assert row["job_created_at"] == datetime(2025, 1, 1, 10, 1, tzinfo=timezone.utc)
    assert row["collected_at"] == datetime(2025, 1, 1, 10, 2, tzinfo=timezone.utc)
    assert row["create_date"] == datetime(2021, 3, 3, 3, 0, tzinfo=timezone.utc)
    assert row["role_last_used"] == datetime(2024, 2, 29, 21, 30, tzinfo=timezone.utc)
    assert row["role_last_used_region"] == "eu-west-1"
    assert row["tags"] == [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]
    assert row["attached_policy_arns"] == [f"arn:aws:iam::{ACCOUNT_ID}:policy/deploy"]
    assert row["inline_policy_names"] == ["inline"]
    assert row["permissions_boundary_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:policy/boundary"
    assert (row["group_names"], row["member_names"]) == ([], [])
    assert (row["is_service_linked"], row["is_aws_managed"]) == (False, False)
    assert (row["entity_id"], row["entity_type"], row["entity_name"], row["entity_path"]) == (
        "AROAAPP-SERVER", "ROLE", "app-server", "/app/")


def test_entity_row_of_a_group_lists_its_members_and_of_a_user_its_groups() -> None:
    group = entity_row(CONTEXT, completed(make_entity("devs", "GROUP", member_names=("alice", "bob"))))
    user = entity_row(CONTEXT, completed(make_entity("alice", "USER", group_names=("devs", "ops"))))

    assert group["member_names"] == ["alice", "bob"]
    assert user["group_names"] == ["devs", "ops"]


def test_a_completed_job_with_no_services_granted_counts_zero_not_null() -> None:
    row = entity_row(CONTEXT, completed(services=[]))

    assert (row["services_granted"], row["services_used"]) == (0, 0)


NOT_COMPLETED = [
    pytest.param(FAILED, [failure("generate_job", "Throttling", "slow down"), failure("read_job", "JobFailed", "x")],
                 ("JobFailed", "x"), id="failed"),
    pytest.param(TIMED_OUT, [failure("read_job", "JobTimedOut", "still IN_PROGRESS after 600 s")],
                 ("JobTimedOut", "still IN_PROGRESS after 600 s"), id="timed-out"),
    pytest.param(DELETED, [failure("generate_job", "NoSuchEntity", "The role cannot be found")],
                 ("NoSuchEntity", "The role cannot be found"), id="deleted"),
    pytest.param(SKIPPED, [], (None, None), id="skipped"),
]


@pytest.mark.parametrize(("kind", "failures", "error"), NOT_COMPLETED)
def test_entity_row_of_a_job_that_did_not_complete(kind: str, failures: list[Failure],
                                                   error: tuple[str | None, str | None]) -> None:
    row = entity_row(CONTEXT, not_completed(kind, failures))

    assert row["job_outcome"] == kind
    assert (row["services_granted"], row["services_used"]) == (None, None)
    assert (row["error_code"], row["error_message"]) == error
    assert row["collected_at"] is None


@pytest.mark.parametrize(("kind", "failures", "error"), NOT_COMPLETED)
def test_a_job_that_did_not_complete_gives_no_access_rows_but_its_errors(
        kind: str, failures: list[Failure], error: tuple[str | None, str | None]) -> None:
    tables = account_tables(at_level(True), result(not_completed(kind, failures)))

    assert [row["job_outcome"] for row in tables["entities"]] == [kind]
    for table in ("service_last_accessed", "action_last_accessed", "entity_service_access",
                  "policies_granting_access"):
        assert tables[table] == [], table
    assert [(row["stage"], row["error_code"]) for row in tables["errors"]] == [(f.stage, f.code) for f in failures]


def test_a_failure_looking_up_policies_does_not_undo_a_completed_job() -> None:
    outcome = completed(failures=[failure("policies", "AccessDenied", "no ListPoliciesGrantingServiceAccess")])

    tables = account_tables(at_level(False), result(outcome))

    (row,) = tables["entities"]
    assert (row["job_outcome"], row["services_granted"], row["error_code"]) == (COMPLETED, 3, None)
    assert len(tables["service_last_accessed"]) == 3
    assert [(row["stage"], row["error_code"]) for row in tables["errors"]] == [("policies", "AccessDenied")]


# -- accessors, policies, errors ------------------------------------------------------------------------------------


def test_accessor_rows_one_per_accessor_sorted_by_namespace() -> None:
    rows = list(accessor_rows(CONTEXT, completed(make_entity("devs", "GROUP"))))

    assert [(row["service_namespace"], row["accessor_arn"]) for row in rows] == [
        ("ec2", f"arn:aws:iam::{ACCOUNT_ID}:role/ops"), ("s3", f"arn:aws:iam::{ACCOUNT_ID}:user/alice")]
    ec2, s3 = rows
    assert (s3["accessor_name"], s3["accessor_type"], s3["accessor_id"], s3["accessor_path"]) == (
        "alice", "USER", "AIDAALICE", "/")
    assert s3["last_authenticated"] == datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
    assert (ec2["accessor_name"], ec2["last_authenticated"]) == (None, None)
    assert s3["entity_type"] == "GROUP"


def test_policy_rows_one_per_granting_policy() -> None:
    rows = list(policy_rows(CONTEXT, completed()))

    assert rows == [
        {"run_id": "run-1", "organization_id": "o-abcdefghij", "account_id": ACCOUNT_ID, "entity_type": "ROLE",
         "entity_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server", "service_namespace": "s3",
         "policy_name": "deploy", "policy_type": "MANAGED", "policy_arn": f"arn:aws:iam::{ACCOUNT_ID}:policy/deploy",
         "policy_owner_type": None, "policy_owner_name": None},
        {"run_id": "run-1", "organization_id": "o-abcdefghij", "account_id": ACCOUNT_ID, "entity_type": "ROLE",
         "entity_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/app/app-server", "service_namespace": "s3",
         "policy_name": "inline", "policy_type": "INLINE", "policy_arn": None, "policy_owner_type": "ROLE",
         "policy_owner_name": "app-server"}]


def test_error_row() -> None:
    row = error_row("run-1", None, None, Failure("discover", "AccessDeniedException", "no", attempts=3,
                                                 occurred_at=datetime(2025, 1, 1, 12, 0, tzinfo=PLUS_TWO)))

    assert row == {"run_id": "run-1", "organization_id": None, "account_id": None, "entity_arn": None,
                   "stage": "discover", "error_code": "AccessDeniedException", "error_message": "no", "attempts": 3,
                   "occurred_at": datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc)}
    assert set(row) == set(TABLES["errors"].names)


def test_an_account_failure_is_an_error_row_without_an_entity() -> None:
    tables = account_tables(at_level(False), result(failure=Failure("assume_role", "AccessDenied", "not authorized")))

    assert [(row["account_id"], row["entity_arn"], row["stage"], row["error_code"]) for row in tables["errors"]] == [
        (ACCOUNT_ID, None, "assume_role", "AccessDenied")]


# -- account rows ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "outcome", "error"), [
    ({}, "ok", (None, None)),
    ({"failure": Failure("assume_role", "AccessDenied", "not authorized")}, "failed", ("AccessDenied",
                                                                                      "not authorized")),
    ({"skipped": True}, "skipped", (None, None)),
])
def test_account_outcome(changes: dict[str, Any], outcome: str, error: tuple[str | None, str | None]) -> None:
    row = account_row(CONTEXT, result(**changes))

    assert row["outcome"] == outcome
    assert (row["error_code"], row["error_message"]) == error


def test_account_row_counts_and_fields() -> None:
    row = account_row(CONTEXT, EVERY_KIND)

    assert (row["entity_count"], row["entities_completed"], row["entities_failed"], row["entities_deleted"]) == (
        6, 2, 2, 1)
    assert row == {**row, "run_id": "run-1", "organization_id": "o-abcdefghij", "account_id": ACCOUNT_ID,
                   "account_name": "payments-prod", "account_email": "aws+payments@example.com",
                   "account_arn": ACCOUNT.arn, "ou_path": "Root/Workloads/Prod",
                   "ou_path_ids": "r-ab12/ou-ab12-aaaaaaaa/ou-ab12-bbbbbbbb", "state": "ACTIVE",
                   "joined_at": datetime(2024, 5, 26, 10, 33, 34, tzinfo=timezone.utc),
                   "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "web"}],
                   "role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/AccessCrawlerRole", "started_at": STARTED,
                   "finished_at": datetime(2025, 1, 1, 10, 5, tzinfo=timezone.utc)}


def test_an_account_without_entities_counts_zero() -> None:
    row = account_row(CONTEXT, result())

    assert (row["entity_count"], row["entities_completed"], row["entities_failed"], row["entities_deleted"]) == (
        0, 0, 0, 0)


def test_account_tables_has_one_account_row_and_one_entity_row_per_outcome() -> None:
    tables = account_tables(at_level(True), EVERY_KIND)

    assert len(tables["accounts"]) == 1
    assert [row["entity_name"] for row in tables["entities"]] == [o.entity.name for o in EVERY_KIND.outcomes]
    assert len(tables["service_last_accessed"]) == 6  # two completed jobs, three services each
    assert len(tables["errors"]) == 5  # four entity failures and the account's
