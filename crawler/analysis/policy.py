"""A least-privilege starting point for one entity: what it used, as an IAM policy document,
and what could not be judged."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crawler.analysis.read import (
    COMPLETED,
    DEFAULT_DAYS,
    MANAGED_POLICY_MAX_CHARACTERS,
    AnalysisError,
    Snapshot,
    check_days,
)


#: Access advisor's tracking period: a use older than this is reported as "not used".
# -- least privilege ------------------------------------------------------------------------
@dataclass(frozen=True)
class LeastPrivilege:
    """A suggested policy for one entity: what it used within the window, and what was not judged."""

    entity_arn: str
    services_used: list[str]
    actions_used: list[str]
    policy: dict[str, Any]
    not_judged: list[str]


@dataclass(frozen=True)
class _ServiceGrant:
    """What the document keeps of one used service, and why (narrowed, no_tracking, untracked_use)."""

    namespace: str
    policy_actions: list[str]
    actions_used: list[str]
    basis: str


def least_privilege(snap: Snapshot, entity_arn: str, days: float = DEFAULT_DAYS) -> LeastPrivilege:
    """The smallest policy access advisor can justify for ``entity_arn``, and what it cannot judge.

    Services used within ``days`` before collected_at are kept: narrowed to the tracked actions
    used where action-level data exists and explains the service's last use, as ``namespace:*``
    otherwise. ``not_judged`` says, in words, what the data cannot show (untracked actions,
    iam:PassRole, resources, a young entity). AnalysisError for an entity not in the snapshot
    or whose job did not complete.
    """
    window = check_days(days)
    entity = _completed_entity(snap, entity_arn)
    start = entity["collected_at"] - window
    services = snap.services[snap.services["entity_arn"] == entity_arn]
    used = services[services["last_authenticated"] >= start].sort_values("service_namespace")
    actions = snap.actions[snap.actions["entity_arn"] == entity_arn]
    grants = [_service_grant(str(namespace), last, actions[actions["service_namespace"] == namespace], start)
              for namespace, last in zip(used["service_namespace"], used["last_authenticated"], strict=True)]
    policy_actions = sorted({action for grant in grants for action in grant.policy_actions})
    statements = [{"Effect": "Allow", "Action": policy_actions, "Resource": "*"}] if policy_actions else []
    policy = {"Version": "2012-10-17", "Statement": statements}
    granted = {str(namespace) for namespace in services["service_namespace"]}
    return LeastPrivilege(
        entity_arn=entity_arn, services_used=[grant.namespace for grant in grants],
        actions_used=sorted(action for grant in grants for action in grant.actions_used), policy=policy,
        not_judged=_not_judged(grants, granted, entity, days, snap.granularity, policy))


def _completed_entity(snap: Snapshot, entity_arn: str) -> pd.Series:
    rows = snap.entities[snap.entities["entity_arn"] == entity_arn]
    if rows.empty:
        raise AnalysisError(f"no entity {entity_arn} in snapshot {snap.date} under {snap.root} "
                            f"(or its account was filtered out)")
    entity = rows.iloc[0]
    if entity["job_outcome"] != COMPLETED:
        code = "no error code" if pd.isna(entity["error_code"]) else entity["error_code"]
        raise AnalysisError(f"no access data for {entity_arn} in snapshot {snap.date}: its job "
                            f"{entity['job_outcome']} ({code}); nothing can be judged until a crawl completes it")
    return entity


def _service_grant(namespace: str, last_authenticated: pd.Timestamp, tracked: pd.DataFrame,
                   start: pd.Timestamp) -> _ServiceGrant:
    """Narrow a used service to its used tracked actions when they explain its last use."""
    if tracked.empty:
        return _ServiceGrant(namespace, [f"{namespace}:*"], [], "no_tracking")
    in_window = tracked[tracked["last_accessed_time"] >= start]
    used = sorted(f"{namespace}:{name}" for name in in_window["action_name"].astype(str))
    latest = tracked["last_accessed_time"].max()
    if pd.isna(latest) or latest < last_authenticated:
        return _ServiceGrant(namespace, [f"{namespace}:*"], used, "untracked_use")
    return _ServiceGrant(namespace, used, used, "narrowed")


def _not_judged(grants: list[_ServiceGrant], granted: set[str], entity: pd.Series, days: float,
                granularity: str | None, policy: dict[str, Any]) -> list[str]:
    """The reasons, in words, why the document may be too narrow or too wide."""
    by_basis = {basis: sorted(grant.namespace for grant in grants if grant.basis == basis)
                for basis in ("no_tracking", "untracked_use", "narrowed")}
    kept = ", ".join(f"{namespace}:*" for namespace in by_basis["no_tracking"])
    reasons = []
    if by_basis["no_tracking"] and granularity == "SERVICE_LEVEL":
        reasons.append(f"the snapshot was crawled at SERVICE_LEVEL, so no action was judged: kept {kept} "
                       f"(crawl with advisor.granularity: ACTION_LEVEL to narrow them)")
    elif by_basis["no_tracking"]:
        reasons.append(f"access advisor tracks none of the actions granted in {', '.join(by_basis['no_tracking'])}: "
                       f"kept {kept}")
    if by_basis["untracked_use"]:
        reasons.append(f"{', '.join(by_basis['untracked_use'])} last used through an action access advisor does "
                       f"not track (the service's last use is later than every tracked action's): kept "
                       f"{', '.join(f'{namespace}:*' for namespace in by_basis['untracked_use'])}")
    if by_basis["narrowed"]:
        reasons.append(f"{', '.join(by_basis['narrowed'])} narrowed to the tracked actions used within {days:g} days; "
                       f"access advisor tracks only some actions of a service, so an untracked action the entity "
                       f"needs (data events, for one) is not in the document: check CloudTrail before applying it")
    if "iam" in granted:
        reasons.append("iam:PassRole is never tracked by access advisor: if the entity passes roles to AWS "
                       "services, add iam:PassRole for those roles")
    reasons.append("resources and conditions are not judged: access advisor records neither, so the document "
                   "allows every resource (\"Resource\": \"*\")")
    reasons.extend(_age_and_size_reasons(grants, entity, days, policy))
    return reasons


def _age_and_size_reasons(grants: list[_ServiceGrant], entity: pd.Series, days: float,
                          policy: dict[str, Any]) -> list[str]:
    reasons = []
    created = entity["create_date"]
    if pd.isna(created) or created > entity["collected_at"] - pd.Timedelta(days=days):
        when = "on an unknown date" if pd.isna(created) else f"on {created.date().isoformat()}"
        reasons.append(f"the entity was created {when}, less than {days:g} days before its data was collected: "
                       f"it may not yet have used every service it needs")
    if not grants:
        reasons.append(f"no service was used within {days:g} days: the document allows nothing")
    size = len(json.dumps(policy, separators=(",", ":")))
    if size > MANAGED_POLICY_MAX_CHARACTERS:
        reasons.append(f"the document is {size:,} characters, more than the {MANAGED_POLICY_MAX_CHARACTERS:,} IAM "
                       f"allows a managed policy: split it")
    return reasons
