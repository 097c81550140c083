"""Pure transforms: what AWS said about an account and its entities -> rows of every table.

:data:`ACCOUNT_TABLES` lists the per-account tables, each with the pure function of the account's
context and result that makes its rows; :func:`account_tables` makes them all. Rows are plain dicts
keyed by the column names of :mod:`crawler.store.schema`. Nothing here calls AWS or writes files;
every timestamp leaves here tz-aware in UTC.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from crawler.aws.timestamps import utc
from crawler.outcomes import AccountOutcome, Failure
from crawler.sources.account_result import AccountResult, RunContext
from crawler.sources.advisor import COMPLETED, DELETED, FAILED, TIMED_OUT, EntityOutcome

Row = dict[str, Any]
#: How one table's rows of an account are made: a pure function of the account's context and result.
TableRows = Callable[[RunContext, AccountResult], Iterable[Row]]


def _entity_keys(context: RunContext, outcome: EntityOutcome) -> dict[str, Any]:
    entity = outcome.entity
    return {**context.keys(), "entity_type": entity.type, "entity_arn": entity.arn, "entity_name": entity.name,
            "entity_path": entity.path}


def service_rows(context: RunContext, outcome: EntityOutcome) -> Iterator[dict[str, Any]]:
    """One row per service of a completed job."""
    keys = {"run_id": context.run_id, "collected_at": utc(outcome.collected_at), **_entity_keys(context, outcome)}
    for service in outcome.services:
        yield {**keys, "service_namespace": service["ServiceNamespace"], "service_name": service.get("ServiceName"),
               "last_authenticated": utc(service.get("LastAuthenticated")),
               "last_authenticated_entity": service.get("LastAuthenticatedEntity"),
               "last_authenticated_region": service.get("LastAuthenticatedRegion"),
               "total_authenticated_entities": service.get("TotalAuthenticatedEntities")}


def action_rows(context: RunContext, outcome: EntityOutcome) -> Iterator[dict[str, Any]]:
    """One row per tracked action of a completed action-level job."""
    keys = {"run_id": context.run_id, "collected_at": utc(outcome.collected_at), **_entity_keys(context, outcome)}
    for service in outcome.services:
        for action in service.get("TrackedActionsLastAccessed") or []:
            yield {**keys, "service_namespace": service["ServiceNamespace"],
                   "service_name": service.get("ServiceName"), "action_name": action["ActionName"],
                   "last_accessed_time": utc(action.get("LastAccessedTime")),
                   "last_accessed_entity": action.get("LastAccessedEntity"),
                   "last_accessed_region": action.get("LastAccessedRegion")}


def entity_row(context: RunContext, outcome: EntityOutcome) -> dict[str, Any]:
    """The entity's inventory fields and its job outcome."""
    entity = outcome.entity
    completed = outcome.outcome == COMPLETED
    last_failure = next((failure for failure in reversed(outcome.failures) if failure.stage != "policies"), None)
    return {
        **{key: value for key, value in _entity_keys(context, outcome).items()},
        "entity_id": entity.id, "create_date": utc(entity.create_date), "tags": _tags(entity.tags),
        "attached_policy_arns": list(entity.attached_policy_arns),
        "inline_policy_names": list(entity.inline_policy_names),
        "permissions_boundary_arn": entity.permissions_boundary_arn, "group_names": list(entity.group_names),
        "member_names": list(entity.member_names), "is_service_linked": entity.is_service_linked,
        "is_aws_managed": entity.is_aws_managed, "role_last_used": utc(entity.role_last_used),
        "role_last_used_region": entity.role_last_used_region, "job_outcome": outcome.outcome,
        "job_id": outcome.job_id, "job_created_at": utc(outcome.job_created_at),
        "collected_at": utc(outcome.collected_at), "job_attempts": outcome.attempts,
        "services_granted": len(outcome.services) if completed else None,
        "services_used": sum(1 for s in outcome.services if s.get("LastAuthenticated")) if completed else None,
        "error_code": last_failure.code if last_failure and not completed else None,
        "error_message": last_failure.message if last_failure and not completed else None,
    }


def accessor_rows(context: RunContext, outcome: EntityOutcome) -> Iterator[dict[str, Any]]:
    """Who used each service of a group or policy (entity_service_access)."""
    for namespace, items in sorted(outcome.accessors.items()):
        for item in items:
            info = item.get("EntityInfo") or {}
            yield {"run_id": context.run_id, "collected_at": utc(outcome.collected_at),
                   "organization_id": context.organization_id, "account_id": context.account.id,
                   "entity_type": outcome.entity.type, "entity_arn": outcome.entity.arn,
                   "service_namespace": namespace, "accessor_arn": info["Arn"], "accessor_name": info.get("Name"),
                   "accessor_type": info.get("Type"), "accessor_id": info.get("Id"),
                   "accessor_path": info.get("Path"), "last_authenticated": utc(item.get("LastAuthenticated"))}


def policy_rows(context: RunContext, outcome: EntityOutcome) -> Iterator[dict[str, Any]]:
    """The policies granting each service of an entity (policies_granting_access)."""
    for granting in outcome.policies:
        for policy in granting.get("Policies") or []:
            yield {"run_id": context.run_id, "organization_id": context.organization_id,
                   "account_id": context.account.id, "entity_type": outcome.entity.type,
                   "entity_arn": outcome.entity.arn, "service_namespace": granting["ServiceNamespace"],
                   "policy_name": policy["PolicyName"], "policy_type": policy.get("PolicyType"),
                   "policy_arn": policy.get("PolicyArn"), "policy_owner_type": policy.get("EntityType"),
                   "policy_owner_name": policy.get("EntityName")}


def error_row(run_id: str, organization_id: str | None, account_id: str | None, failure: Failure) -> dict[str, Any]:
    """One recorded failure."""
    return {"run_id": run_id, "organization_id": organization_id, "account_id": account_id,
            "entity_arn": failure.entity_arn, "stage": failure.stage, "error_code": failure.code,
            "error_message": failure.message, "attempts": failure.attempts, "occurred_at": utc(failure.occurred_at)}


def account_row(context: RunContext, result: AccountResult) -> dict[str, Any]:
    """The account, its outcome and counts."""
    account, outcomes = result.account, result.outcomes
    outcome = AccountOutcome.SKIPPED if result.skipped else \
        AccountOutcome.FAILED if result.failure else AccountOutcome.OK
    return {
        "run_id": context.run_id, "organization_id": context.organization_id, "account_id": account.id,
        "account_name": account.name, "account_email": account.email, "account_arn": account.arn,
        "ou_path": account.ou_path, "ou_path_ids": account.ou_path_ids, "state": account.state,
        "joined_at": utc(account.joined_at), "tags": _tags(account.tags), "outcome": outcome,
        "error_code": result.failure.code if result.failure else None,
        "error_message": result.failure.message if result.failure else None, "role_arn": result.role_arn,
        "entity_count": len(outcomes),
        "entities_completed": sum(1 for item in outcomes if item.outcome == COMPLETED),
        "entities_failed": sum(1 for item in outcomes if item.outcome in (FAILED, TIMED_OUT)),
        "entities_deleted": sum(1 for item in outcomes if item.outcome == DELETED),
        "started_at": utc(result.started_at), "finished_at": utc(result.finished_at),
    }


def account_rows(context: RunContext, result: AccountResult) -> Iterator[Row]:
    """accounts: the account's one row."""
    yield account_row(context, result)


def entity_rows(context: RunContext, result: AccountResult) -> Iterator[Row]:
    """entities: one row per entity, whatever its job's outcome."""
    for outcome in result.outcomes:
        yield entity_row(context, outcome)


def error_rows(context: RunContext, result: AccountResult) -> Iterator[Row]:
    """errors: every entity's recorded failures, then the account's own."""
    failures = [failure for outcome in result.outcomes for failure in outcome.failures]
    if result.failure is not None:
        failures.append(result.failure)
    for failure in failures:
        yield error_row(context.run_id, context.organization_id, context.account.id, failure)


def of_completed_jobs(rows: Callable[[RunContext, EntityOutcome], Iterable[Row]]) -> TableRows:
    """The table whose rows ``rows`` makes of each completed job (a job that did not complete has no data)."""
    def table(context: RunContext, result: AccountResult) -> Iterator[Row]:
        for outcome in result.outcomes:
            if outcome.outcome == COMPLETED:
                yield from rows(context, outcome)
    return table


def at_action_level(rows: TableRows) -> TableRows:
    """The table ``rows`` makes when the account's jobs ran at ACTION_LEVEL, empty otherwise."""
    def table(context: RunContext, result: AccountResult) -> Iterable[Row]:
        return rows(context, result) if context.action_level else ()
    return table


#: Every per-account table and how its rows are made: a pure function of (context, result). A new
#: per-account table is its schema (crawler.store.schema), a module with its function, and one entry here.
ACCOUNT_TABLES: tuple[tuple[str, TableRows], ...] = (
    ("service_last_accessed", of_completed_jobs(service_rows)),
    ("action_last_accessed", at_action_level(of_completed_jobs(action_rows))),
    ("entities", entity_rows),
    ("entity_service_access", of_completed_jobs(accessor_rows)),
    ("policies_granting_access", of_completed_jobs(policy_rows)),
    ("accounts", account_rows),
    ("errors", error_rows),
)


def account_tables(context: RunContext, result: AccountResult) -> dict[str, list[Row]]:
    """Every table's rows for one account, as :data:`ACCOUNT_TABLES` makes them."""
    return {table: list(rows(context, result)) for table, rows in ACCOUNT_TABLES}


def _tags(tags: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags]
