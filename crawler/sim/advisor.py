"""IAM access-advisor operations that moto lacks, answered from moto's stored IAM data.

Each handler takes the moto ``IamResponse`` being served (for its parameters, account and
access key) and the running :class:`SimState`, and returns a plain dict that moto serializes
with botocore's IAM model. Jobs are bound to the STS session (access key) that made them.
"""
from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from moto.iam.models import IAMBackend, ManagedPolicy

from crawler.sim.faults import chance
from crawler.sim.policies import Grants, grants_of_document, merge_grants
from crawler.sim.reports import ServiceReport, build_report
from crawler.sim.state import Job, SimError, SimState

ARN_PATTERN = re.compile(r"^arn:(?P<partition>aws[\w-]*):iam::(?P<account>\d{12}|aws):"
                         r"(?P<kind>user|role|group|policy)(?P<path>/(?:.*/)?)(?P<name>[^/]+)$")
ENTITY_TYPES = {"user": "USER", "role": "ROLE", "group": "GROUP", "policy": "POLICY"}
MAX_NAMESPACES = 200
POLICIES_PAGE = 50
#: The HTTP status of each answer a read of another session's job can get.
OTHER_SESSION_STATUS = {"NoSuchEntity": 404, "AccessDenied": 403, "InvalidInput": 400}


@dataclass
class ResolvedEntity:
    """An entity found in moto's IAM backend, with what access advisor needs of it."""

    arn: str
    type: str
    grants: Grants
    principals: list[str]


# -- request helpers -------------------------------------------------------------------
def invalid(message: str) -> SimError:
    """An ``InvalidInput`` answer."""
    return SimError("InvalidInput", message, 400)


def no_such_entity(message: str) -> SimError:
    """A ``NoSuchEntity`` answer."""
    return SimError("NoSuchEntity", message, 404)


def max_items(response: Any, default: int = 100) -> int:
    """``MaxItems`` validated to 1..1000."""
    value = response._get_param("MaxItems")
    count = default if value in (None, "") else int(value)
    if not 1 <= count <= 1000:
        raise invalid("1 validation error detected: Value at 'maxItems' failed to satisfy constraint: "
                      "Member must have value between 1 and 1000")
    return count


def encode_marker(job_id: str, offset: int) -> str:
    """An opaque pagination marker."""
    return base64.urlsafe_b64encode(f"{job_id}:{offset}".encode()).decode()


def decode_marker(marker: str | None, job_id: str) -> int:
    """The offset a marker stands for; ``InvalidInput`` when it is not one of ours."""
    if not marker:
        return 0
    try:
        owner, _, offset = base64.urlsafe_b64decode(marker.encode()).decode().rpartition(":")
        if owner == job_id:
            return int(offset)
    except ValueError:
        pass
    raise invalid("Invalid Marker.")


def page_size(job_id: str, offset: int, asked: int) -> int:
    """IAM may return fewer items than asked while IsTruncated is true: so do we, sometimes."""
    if asked > 1 and chance(job_id, offset) < 0.3:
        return max(1, asked // 2)
    return asked


# -- entity resolution -------------------------------------------------------------------
def resolve(iam: IAMBackend, arn: str, state: SimState) -> ResolvedEntity:
    """Find the entity an ARN names in the caller's account, with its grants and principals."""
    match = ARN_PATTERN.match(arn or "")
    if match is None:
        raise invalid(f"ARN {arn} is not valid.")
    kind, name = match["kind"], match["name"]
    if match["account"] not in (iam.account_id, "aws") or (match["account"] == "aws" and kind != "policy"):
        raise invalid(f"ARN {arn} is not valid.")
    catalog = state.catalog
    if kind == "user":
        user = iam.users.get(name)
        if user is None or user.arn != arn:
            raise no_such_entity(f"The user with name {name} cannot be found.")
        groups = [group for group in iam.groups.values() if user in group.users]
        return ResolvedEntity(arn, "USER", merge_grants([_owner_grants(user, catalog)]
                                                        + [_owner_grants(group, catalog) for group in groups]), [arn])
    if kind == "role":
        role = next((role for role in iam.roles.values() if role.arn == arn), None)
        if role is None:
            raise no_such_entity(f"The role with name {name} cannot be found.")
        return ResolvedEntity(arn, "ROLE", _owner_grants(role, catalog), [arn])
    if kind == "group":
        group = iam.groups.get(name)
        if group is None or group.arn != arn:
            raise no_such_entity(f"The group with name {name} cannot be found.")
        return ResolvedEntity(arn, "GROUP", _owner_grants(group, catalog), [user.arn for user in group.users])
    policy = iam.managed_policies.get(arn)
    if policy is None:
        raise no_such_entity(f"Policy {arn} was not found.")
    return ResolvedEntity(arn, "POLICY", grants_of_document(_default_document(policy), catalog),
                          _policy_holders(iam, arn))


def _owner_grants(owner: Any, catalog: Any) -> Grants:
    documents = list(owner.policies.values()) + [_default_document(policy)
                                                 for policy in owner.managed_policies.values()]
    return merge_grants(grants_of_document(document, catalog) for document in documents)


def _default_document(policy: ManagedPolicy) -> str:
    version = next(version for version in policy.versions if version.is_default)
    return version.document


def _policy_holders(iam: IAMBackend, arn: str) -> list[str]:
    holders = {owner.arn for owner in [*iam.users.values(), *iam.roles.values()] if arn in owner.managed_policies}
    for group in iam.groups.values():
        if arn in group.managed_policies:
            holders.update(user.arn for user in group.users)
    return sorted(holders)


def entity_info(iam: IAMBackend, arn: str) -> dict[str, str]:
    """``EntityInfo`` of a user or role principal."""
    owners = [(user, "USER") for user in iam.users.values()] + [(role, "ROLE") for role in iam.roles.values()]
    for owner, kind in owners:
        if owner.arn == arn:
            return {"Arn": arn, "Name": owner.name, "Type": kind, "Id": owner.id, "Path": owner.path}
    return {"Arn": arn, "Name": arn.rsplit("/", 1)[-1], "Type": "USER", "Id": "", "Path": "/"}


# -- GenerateServiceLastAccessedDetails -------------------------------------------------
def generate_service_last_accessed_details(response: Any, state: SimState) -> dict[str, Any]:
    """Start a job for one entity; the report is fixed when the job starts."""
    iam: IAMBackend = response.backend
    arn = response._get_param("Arn")
    granularity = response._get_param("Granularity") or "SERVICE_LEVEL"
    if granularity not in ("SERVICE_LEVEL", "ACTION_LEVEL"):
        raise invalid(f"Granularity {granularity} is not valid.")
    account_id = iam.account_id
    faults = state.faults.for_account(account_id)
    _maybe_delete(iam, arn, state, faults.deleted_entity_rate)
    entity = resolve(iam, arn, state)
    attempt = state.next_attempt(account_id, arn)
    outcome = "COMPLETED"
    if chance(state.org.seed, "fail", arn, attempt) < faults.job_failure_rate:
        outcome = "FAILED"
        state.record("job_failed", account_id, "GenerateServiceLastAccessedDetails", arn)
    elif chance(state.org.seed, "stuck", arn, attempt) < faults.stuck_job_rate:
        outcome = "STUCK"
        state.record("job_stuck", account_id, "GenerateServiceLastAccessedDetails", arn)
    created = datetime.now(timezone.utc).replace(microsecond=0)
    cutoff = state.org.tracking_cutoff
    activity = state.org.accounts[account_id].activity if account_id in state.org.accounts else {}
    reports = build_report(entity.grants, entity.principals, activity, state.catalog, cutoff,
                           action_level=granularity == "ACTION_LEVEL")
    job = Job(id=str(uuid.uuid4()), kind="entity", account_id=account_id, session_key=response.get_access_key(),
              arn=arn, job_type=granularity, created=created, ready_at=time.time() + faults.job_seconds,
              outcome=outcome, reports=reports,
              entity_info={principal: entity_info(iam, principal) for principal in entity.principals})
    with state.lock:
        state.jobs[job.id] = job
    state.job_opened(account_id)
    return {"JobId": job.id}


def _maybe_delete(iam: IAMBackend, arn: str, state: SimState, rate: float) -> None:
    """Delete the entity now if the fault draws it; the crawler's own roles are never drawn."""
    if not rate or arn in state.deleted or chance(state.org.seed, "delete", arn) >= rate:
        return
    if arn.rsplit("/", 1)[-1] in (state.org.crawler_role_name, state.org.hub_role_name):
        return
    if delete_entity(iam, arn):
        state.deleted.add(arn)
        state.record("entity_deleted", iam.account_id, "GenerateServiceLastAccessedDetails", arn)


def delete_entity(iam: IAMBackend, arn: str) -> bool:
    """Remove a user, role, group or customer-managed policy from moto, as if deleted in AWS."""
    for user_name, user in list(iam.users.items()):
        if user.arn == arn:
            for group in iam.groups.values():
                if user in group.users:
                    group.users.remove(user)
            del iam.users[user_name]
            return True
    for role_id, role in list(iam.roles.items()):
        if role.arn == arn:
            del iam.roles[role_id]
            return True
    for group_name, group in list(iam.groups.items()):
        if group.arn == arn:
            del iam.groups[group_name]
            return True
    if arn in iam.managed_policies:
        for owner in [*iam.users.values(), *iam.roles.values(), *iam.groups.values()]:
            owner.managed_policies.pop(arn, None)
        del iam.managed_policies[arn]
        return True
    return False


# -- reading jobs --------------------------------------------------------------------------
def find_job(response: Any, state: SimState, kind: str) -> Job:
    """The caller's job; a job made by another STS session cannot be read (see :func:`other_session`)."""
    job_id = response._get_param("JobId")
    job = state.jobs.get(job_id)
    if job is None or job.kind != kind:
        raise no_such_entity(f"Job {job_id} was not found in this session.")
    if job.session_key != response.get_access_key():
        raise other_session(response, state, job_id)
    return job


def other_session(response: Any, state: SimState, job_id: str) -> SimError:
    """What reading a job of another STS session answers: the caller's account's
    ``other_session_job_error`` (NoSuchEntity unless a test asks for another answer)."""
    account_id, action = response.current_account, response._get_action()
    state.record("other_session_job", account_id, action, job_id)
    code = state.faults.for_account(account_id).other_session_job_error
    if code == "NoSuchEntity":
        return no_such_entity(f"Job {job_id} was not found in this session.")
    session = state.sessions.get(response.get_access_key())
    caller = session.arn if session else response.current_account
    return SimError(code, f"User: {caller} is not authorized to perform: iam:{action} "
                    f"on job {job_id}", OTHER_SESSION_STATUS.get(code, 400))


def get_service_last_accessed_details(response: Any, state: SimState) -> dict[str, Any]:
    """A page of a job's services, sorted by namespace."""
    job = find_job(response, state, "entity")
    asked = max_items(response)
    status = job.status(time.time())
    state.job_read(job, status)
    result: dict[str, Any] = {"JobStatus": status, "JobType": job.job_type, "JobCreationDate": job.created,
                              "ServicesLastAccessed": []}
    if status == "IN_PROGRESS":
        result["IsTruncated"] = False
        return result
    result["JobCompletionDate"] = job.completed
    if status == "FAILED":
        result["Error"] = {"Code": "ServiceFailure", "Message": "The job failed to complete. Try again."}
        result["IsTruncated"] = False
        return result
    offset = decode_marker(response._get_param("Marker"), job.id)
    size = page_size(job.id, offset, asked)
    page = job.reports[offset:offset + size]
    result["ServicesLastAccessed"] = [_service_item(report) for report in page]
    _truncate(result, job.id, offset + len(page), len(job.reports))
    return result


def _truncate(result: dict[str, Any], job_id: str, next_offset: int, total: int) -> None:
    result["IsTruncated"] = next_offset < total
    if next_offset < total:
        result["Marker"] = encode_marker(job_id, next_offset)


def _service_item(report: ServiceReport) -> dict[str, Any]:
    item: dict[str, Any] = {"ServiceName": report.name, "ServiceNamespace": report.namespace}
    _put(item, "LastAuthenticated", report.last_authenticated)
    _put(item, "LastAuthenticatedEntity", report.last_authenticated_entity)
    _put(item, "LastAuthenticatedRegion", report.last_authenticated_region)
    _put(item, "TotalAuthenticatedEntities", report.total_authenticated_entities)
    if report.actions:
        item["TrackedActionsLastAccessed"] = [_action_item(action) for action in report.actions]
    return item


def _action_item(action: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"ActionName": action.action_name}
    _put(item, "LastAccessedEntity", action.last_accessed_entity)
    _put(item, "LastAccessedTime", action.last_accessed_time)
    _put(item, "LastAccessedRegion", action.last_accessed_region)
    return item


def _put(item: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        item[key] = value


def get_service_last_accessed_details_with_entities(response: Any, state: SimState) -> dict[str, Any]:
    """Which users and roles used one service of a job, newest first."""
    job = find_job(response, state, "entity")
    namespace = response._get_param("ServiceNamespace")
    asked = max_items(response)
    status = job.status(time.time())
    result: dict[str, Any] = {"JobStatus": status, "JobCreationDate": job.created, "EntityDetailsList": []}
    if status != "COMPLETED":
        if status == "FAILED":
            result["JobCompletionDate"] = job.completed
            result["Error"] = {"Code": "ServiceFailure", "Message": "The job failed to complete. Try again."}
        result["IsTruncated"] = False
        return result
    result["JobCompletionDate"] = job.completed
    report = next((report for report in job.reports if report.namespace == namespace), None)
    if report is None:
        raise invalid(f"Service namespace {namespace} is not in the report of job {job.id}.")
    offset = decode_marker(response._get_param("Marker"), job.id + namespace)
    page = report.entities[offset:offset + asked]
    result["EntityDetailsList"] = [
        {"EntityInfo": job.entity_info[arn], **({"LastAuthenticated": when} if when else {})} for arn, when in page]
    _truncate(result, job.id + namespace, offset + len(page), len(report.entities))
    return result


# -- ListPoliciesGrantingServiceAccess --------------------------------------------------
def list_policies_granting_service_access(response: Any, state: SimState) -> dict[str, Any]:
    """Per namespace asked, the policies of a user, group or role that grant it."""
    iam: IAMBackend = response.backend
    arn = response._get_param("Arn")
    namespaces = response._get_param("ServiceNamespaces") or []
    if not 1 <= len(namespaces) <= MAX_NAMESPACES:
        raise invalid(f"ServiceNamespaces must hold between 1 and {MAX_NAMESPACES} namespaces.")
    entity = resolve(iam, arn, state)
    if entity.type == "POLICY":
        raise invalid(f"ARN {arn} is not valid: give a user, group or role.")
    owners = _policy_owners(iam, arn, entity.type)
    entries = [{"ServiceNamespace": namespace, "Policies": _granting(owners, namespace, state)}
               for namespace in namespaces]
    offset = decode_marker(response._get_param("Marker"), "policies:" + arn)
    page = entries[offset:offset + POLICIES_PAGE]
    result: dict[str, Any] = {"PoliciesGrantingServiceAccess": page}
    _truncate(result, "policies:" + arn, offset + len(page), len(entries))
    return result


def _policy_owners(iam: IAMBackend, arn: str, entity_type: str) -> list[tuple[str, Any]]:
    if entity_type == "USER":
        user = next(user for user in iam.users.values() if user.arn == arn)
        return [("USER", user)] + [("GROUP", group) for group in iam.groups.values() if user in group.users]
    if entity_type == "ROLE":
        return [("ROLE", next(role for role in iam.roles.values() if role.arn == arn))]
    return [("GROUP", next(group for group in iam.groups.values() if group.arn == arn))]


def _granting(owners: list[tuple[str, Any]], namespace: str, state: SimState) -> list[dict[str, str]]:
    """The policies of the owners granting ``namespace``; a managed policy attached to a user and
    to one of its groups is listed once (AWS names it by ARN only, so twice would be a duplicate)."""
    policies = []
    managed_seen: set[str] = set()
    for owner_type, owner in owners:
        for name, document in sorted(owner.policies.items()):
            if namespace in grants_of_document(document, state.catalog):
                policies.append({"PolicyName": name, "PolicyType": "INLINE",
                                 "EntityType": owner_type, "EntityName": owner.name})
        for policy_arn, policy in sorted(owner.managed_policies.items()):
            if policy_arn in managed_seen:
                continue
            if namespace in grants_of_document(_default_document(policy), state.catalog):
                managed_seen.add(policy_arn)
                policies.append({"PolicyName": policy.name, "PolicyType": "MANAGED", "PolicyArn": policy_arn})
    return policies
