"""Pure transforms: what AWS said about an account and its entities -> rows of every table.

Rows are plain dicts keyed by the column names of :mod:`crawler.store.schema`. Nothing here calls
AWS or writes files; every timestamp leaves here tz-aware in UTC.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crawler.aws.timestamps import utc
from crawler.outcomes import AccountOutcome, Failure
from crawler.sources.advisor import COMPLETED, DELETED, FAILED, TIMED_OUT, EntityOutcome
from crawler.sources.organizations import Account


@dataclass(frozen=True)
class RunContext:
    """The columns every row of one account shares."""

    run_id: str
    organization_id: str | None
    account: Account

    def keys(self) -> dict[str, Any]:
        """run_id, organization_id, account_id, account_name, ou_path."""
        return {"run_id": self.run_id, "organization_id": self.organization_id, "account_id": self.account.id,
                "account_name": self.account.name, "ou_path": self.account.ou_path}


@dataclass(frozen=True)
class AccountResult:
    """Everything the crawl learnt about one account."""

    account: Account
    role_arn: str | None
    started_at: datetime
    finished_at: datetime
    outcomes: Sequence[EntityOutcome] = ()
    failure: Failure | None = None
    skipped: bool = False


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


def account_tables(context: RunContext, result: AccountResult, action_level: bool) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows for one account."""
    tables: dict[str, list[dict[str, Any]]] = {
        "service_last_accessed": [], "action_last_accessed": [], "entities": [], "entity_service_access": [],
        "policies_granting_access": [], "accounts": [account_row(context, result)], "errors": []}
    for outcome in result.outcomes:
        tables["entities"].append(entity_row(context, outcome))
        tables["errors"].extend(error_row(context.run_id, context.organization_id, context.account.id, failure)
                                for failure in outcome.failures)
        if outcome.outcome != COMPLETED:
            continue
        tables["service_last_accessed"].extend(service_rows(context, outcome))
        if action_level:
            tables["action_last_accessed"].extend(action_rows(context, outcome))
        tables["entity_service_access"].extend(accessor_rows(context, outcome))
        tables["policies_granting_access"].extend(policy_rows(context, outcome))
    if result.failure is not None:
        tables["errors"].append(error_row(context.run_id, context.organization_id, context.account.id,
                                          result.failure))
    return tables


def _tags(tags: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags]
