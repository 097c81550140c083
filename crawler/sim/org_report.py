"""The Organizations view of access advisor: ``GenerateOrganizationsAccessReport`` and
``GetOrganizationsAccessReport``, answered for the management account only."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.organizations.models import organizations_backends

from crawler.sim.advisor import decode_marker, encode_marker, find_job, invalid, max_items
from crawler.sim.faults import chance
from crawler.sim.model import OrganizationModel
from crawler.sim.policies import grants_of_document
from crawler.sim.state import Job, SimError, SimState

#: Organizations reports that may run at once before ReportGenerationLimitExceeded.
MAX_RUNNING_REPORTS = 8
SORT_KEYS = ("SERVICE_NAMESPACE_ASCENDING", "SERVICE_NAMESPACE_DESCENDING",
             "LAST_AUTHENTICATED_TIME_ASCENDING", "LAST_AUTHENTICATED_TIME_DESCENDING")


def entity_paths(org: OrganizationModel) -> dict[str, list[str]]:
    """Every valid entity path (root, OU, account) mapped to the accounts below it."""
    paths: dict[str, list[str]] = {}
    for model in org.accounts.values():
        ids = org.ou_path_ids(model.account.parent_id)
        prefix = org.id
        for unit_id in ids:
            prefix = f"{prefix}/{unit_id}"
            paths.setdefault(prefix, []).append(model.account.id)
        paths[f"{prefix}/{model.account.id}"] = [model.account.id]
    for unit in [org.root, *org.ous]:
        paths.setdefault(org.id + "/" + "/".join(org.ou_path_ids(unit.id)), [])
    return paths


def account_path(org: OrganizationModel, account_id: str) -> str:
    """``o-.../r-.../ou-.../<account id>``."""
    parent = org.accounts[account_id].account.parent_id
    return "/".join([org.id, *org.ou_path_ids(parent), account_id])


def generate_organizations_access_report(response: Any, state: SimState) -> dict[str, Any]:
    """Start a report on a root, OU or account path (management account only)."""
    org = state.org
    caller = response.current_account
    if caller != org.management_account_id:
        raise SimError("AccessDenied", f"Account {caller} is not the management account of "
                       f"organization {org.id}.", 403)
    path = (response._get_param("EntityPath") or "").rstrip("/")
    accounts = entity_paths(org).get(path)
    if accounts is None:
        raise invalid(f"EntityPath {path} is not valid.")
    with state.lock:
        running = sum(1 for job in state.jobs.values()
                      if job.kind == "organizations" and job.status(time.time()) == "IN_PROGRESS")
    if running >= MAX_RUNNING_REPORTS:
        raise SimError("ReportGenerationLimitExceeded", "Too many reports are being generated at once.", 409)
    policy_id = response._get_param("OrganizationsPolicyId")
    allowed = _allowed_namespaces(state, org, policy_id)
    created = datetime.now(timezone.utc).replace(microsecond=0)
    details = _access_details(state, org, accounts, allowed, org.tracking_cutoff)
    faults = state.faults.for_account(caller)
    job = Job(id=str(uuid.uuid4()), kind="organizations", account_id=caller, session_key=response.get_access_key(),
              arn=path, job_type="ORGANIZATIONS", created=created, ready_at=time.time() + faults.job_seconds,
              outcome=_outcome(state, caller, f"{path}|{policy_id or ''}"), access_details=details,
              services_accessible=len(allowed))
    with state.lock:
        state.jobs[job.id] = job
    return {"JobId": job.id}


def _outcome(state: SimState, caller: str, report: str) -> str:
    """COMPLETED, or FAILED / STUCK as the caller's faults draw it for this attempt of the report."""
    faults = state.faults.for_account(caller)
    attempt = state.next_attempt(caller, report)
    if chance(state.org.seed, "fail", report, attempt) < faults.job_failure_rate:
        state.record("job_failed", caller, "GenerateOrganizationsAccessReport", report)
        return "FAILED"
    if chance(state.org.seed, "stuck", report, attempt) < faults.stuck_job_rate:
        state.record("job_stuck", caller, "GenerateOrganizationsAccessReport", report)
        return "STUCK"
    return "COMPLETED"


def _allowed_namespaces(state: SimState, org: OrganizationModel, policy_id: str | None) -> list[str]:
    if not policy_id:
        return list(state.catalog.namespaces)
    backend = organizations_backends[org.management_account_id][org.partition]
    policy = next((policy for policy in backend.policies if policy.id == policy_id), None)
    if policy is None or policy.type != "SERVICE_CONTROL_POLICY":
        raise invalid(f"OrganizationsPolicyId {policy_id} is not a service control policy of the organization.")
    return sorted(grants_of_document(policy.content, state.catalog))


def _access_details(state: SimState, org: OrganizationModel, accounts: list[str], allowed: list[str],
                    cutoff: datetime) -> list[dict[str, Any]]:
    details = []
    for namespace in allowed:
        latest: tuple[datetime, str, str] | None = None
        users_by_account = set()
        for account_id in accounts:
            for activity in org.accounts[account_id].activity.values():
                use = activity.get(namespace)
                if use is None or use.use.time < cutoff:
                    continue
                users_by_account.add(account_id)
                if latest is None or use.use.time > latest[0]:
                    latest = (use.use.time, use.use.region, account_id)
        service = state.catalog.get(namespace)
        item: dict[str, Any] = {"ServiceName": service.name if service else namespace, "ServiceNamespace": namespace}
        if latest is not None:
            item.update({"LastAuthenticatedTime": latest[0], "Region": latest[1],
                         "EntityPath": account_path(org, latest[2]),
                         "TotalAuthenticatedEntities": len(users_by_account)})
        details.append(item)
    return details


def get_organizations_access_report(response: Any, state: SimState) -> dict[str, Any]:
    """A page of an Organizations report, sorted as asked."""
    job = find_job(response, state, "organizations")
    asked = max_items(response)
    sort_key = response._get_param("SortKey") or "SERVICE_NAMESPACE_ASCENDING"
    if sort_key not in SORT_KEYS:
        raise invalid(f"SortKey {sort_key} is not valid.")
    status = job.status(time.time())
    result: dict[str, Any] = {"JobStatus": status, "JobCreationDate": job.created}
    if status == "FAILED":
        result.update({"JobCompletionDate": job.completed, "IsTruncated": False,
                       "ErrorDetails": {"Code": "ServiceFailure", "Message": "The report failed to complete."}})
        return result
    if status != "COMPLETED":
        result["IsTruncated"] = False
        return result
    details = _sorted(job.access_details, sort_key)
    accessed = sum(1 for item in details if "LastAuthenticatedTime" in item)
    offset = decode_marker(response._get_param("Marker"), job.id + sort_key)
    page = details[offset:offset + asked]
    result.update({"JobCompletionDate": job.completed, "NumberOfServicesAccessible": job.services_accessible,
                   "NumberOfServicesNotAccessed": job.services_accessible - accessed, "AccessDetails": page,
                   "IsTruncated": offset + len(page) < len(details)})
    if result["IsTruncated"]:
        result["Marker"] = encode_marker(job.id + sort_key, offset + len(page))
    return result


def _sorted(details: list[dict[str, Any]], sort_key: str) -> list[dict[str, Any]]:
    descending = sort_key.endswith("DESCENDING")
    if sort_key.startswith("SERVICE_NAMESPACE"):
        return sorted(details, key=lambda item: item["ServiceNamespace"], reverse=descending)
    never = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(details, key=lambda item: (item.get("LastAuthenticatedTime", never), item["ServiceNamespace"]),
                  reverse=descending)
