"""``AssumeRole`` that fails like AWS: moto lets anyone assume any role, even a missing one."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from moto.core.responses import ActionResult
from moto.iam.models import Role, iam_backends

from crawler.sim.state import Session, SimError, SimState

SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
ROLE_ARN = re.compile(r"^arn:(?P<partition>aws[\w-]*):iam::(?P<account>\d{12}):role/(?:.*/)?(?P<name>[^/]+)$")
CHAINED_MAX_SECONDS = 3600


def assume_role(response: Any, state: SimState) -> ActionResult:
    """Check the role, the account and the trust policy, then issue a session."""
    role_arn = response._get_param("RoleArn") or ""
    session_name = response._get_param("RoleSessionName") or ""
    duration = response._get_int_param("DurationSeconds", 3600)
    external_id = response._get_param("ExternalId")
    caller_key = response.get_access_key()
    caller = state.sessions.get(caller_key)
    _validate(session_name, duration, caller is not None)
    match = ROLE_ARN.match(role_arn)
    if match is None:
        raise SimError("ValidationError", f"{role_arn} is invalid", 400)
    caller_arn = caller.role_arn if caller else _user_arn(response.current_account, caller_key, match["partition"])
    denied = SimError("AccessDenied", f"User: {caller_arn} is not authorized to perform: sts:AssumeRole "
                      f"on resource: {role_arn}", 403)
    role = _find_role(match["account"], match["partition"], role_arn)
    account = state.org.accounts.get(match["account"])
    if role is None or account is None or account.account.state != "ACTIVE":
        raise denied
    if state.faults.for_account(match["account"]).deny_assume_role:
        state.record("assume_role_denied", match["account"], "AssumeRole", role_arn)
        raise denied
    if not trusts(json.loads(role.assume_role_policy_document or "{}"), response.current_account, caller_arn,
                  external_id):
        raise denied
    if duration > int(role.max_session_duration or 3600):
        raise SimError("ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration "
                       "set for this role.", 400)
    lifetime = state.faults.for_account(match["account"]).session_seconds or duration
    assumed = response.backend.assume_role(region_name=response.region, role_session_name=session_name,
                                           role_arn=role_arn, policy=response._get_param("Policy"),
                                           duration=lifetime, external_id=external_id)
    state.sessions[assumed.access_key_id] = Session(match["account"], assumed.arn, role_arn,
                                                    assumed.expiration.replace(tzinfo=timezone.utc),
                                                    chained=caller is not None)
    return ActionResult({"Credentials": assumed,
                         "AssumedRoleUser": {"AssumedRoleId": assumed.user_id, "Arn": assumed.arn},
                         "PackedPolicySize": 6})


def _validate(session_name: str, duration: int, chained: bool) -> None:
    if not SESSION_NAME.match(session_name):
        raise SimError("ValidationError", f"1 validation error detected: Value '{session_name}' at "
                       "'roleSessionName' failed to satisfy constraint: Member must satisfy regular "
                       "expression pattern: [\\w+=,.@-]*", 400)
    if not 900 <= duration <= 43200:
        raise SimError("ValidationError", f"1 validation error detected: Value '{duration}' at "
                       "'durationSeconds' failed to satisfy constraint: Member must have value between "
                       "900 and 43200", 400)
    if chained and duration > CHAINED_MAX_SECONDS:
        raise SimError("ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit "
                       "for roles assumed by role chaining.", 400)


def _find_role(account_id: str, partition: str, role_arn: str) -> Role | None:
    if account_id not in iam_backends:
        return None
    return next((role for role in iam_backends[account_id][partition].roles.values() if role.arn == role_arn), None)


def _user_arn(account_id: str, access_key: str, partition: str) -> str:
    user = iam_backends[account_id][partition].get_user_from_access_key_id(access_key)
    return user.arn if user else f"arn:{partition}:iam::{account_id}:root"


def trusts(policy: dict[str, Any], caller_account: str, caller_arn: str, external_id: str | None) -> bool:
    """Whether a trust policy lets the caller assume the role (principals and sts:ExternalId)."""
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if statement.get("Effect") != "Allow" or not {"sts:AssumeRole", "sts:*", "*"} & set(actions):
            continue
        principals = statement.get("Principal", {})
        aws = principals.get("AWS", []) if isinstance(principals, dict) else principals
        aws = aws if isinstance(aws, list) else [aws]
        if not any(_principal_matches(p, caller_account, caller_arn) for p in aws):
            continue
        wanted = statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
        if wanted is None or wanted == external_id:
            return True
    return False


def _principal_matches(principal: str, caller_account: str, caller_arn: str) -> bool:
    if principal in ("*", caller_arn, caller_account):
        return True
    return principal.endswith(f":iam::{caller_account}:root")


def session_expired(state: SimState, access_key: str) -> bool:
    """Whether the request's credentials belong to an expired assumed-role session."""
    session = state.sessions.get(access_key)
    return session is not None and session.expiration <= datetime.now(timezone.utc)


