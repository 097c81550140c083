"""The IAM entities of one account, from ``GetAccountAuthorizationDetails`` (paginated to the end).

One paginated call gives users, groups, roles (with RoleLastUsed, tags and boundaries, which
``ListRoles`` leaves out) and managed policies. ``get_authorization_details`` is the AWS edge;
``entities_of`` and ``select_entities`` are pure.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crawler.aws.calls import marker_pages
from crawler.aws.timestamps import utc
from crawler.config.settings import EntitySettings

SERVICE_LINKED_PATH = "/aws-service-role/"
#: GetAccountAuthorizationDetails filter names of each entity type.
FILTERS = {"USER": ("User",), "ROLE": ("Role",), "GROUP": ("Group",), "POLICY": ("LocalManagedPolicy",)}
AWS_MANAGED_FILTER = "AWSManagedPolicy"


@dataclass(frozen=True)
class Entity:
    """A user, role, group or managed policy as the inventory found it."""

    type: str
    arn: str
    name: str
    id: str | None
    path: str
    create_date: datetime | None
    tags: tuple[tuple[str, str], ...] = ()
    attached_policy_arns: tuple[str, ...] = ()
    inline_policy_names: tuple[str, ...] = ()
    permissions_boundary_arn: str | None = None
    group_names: tuple[str, ...] = ()
    member_names: tuple[str, ...] = ()
    is_service_linked: bool = False
    is_aws_managed: bool = False
    role_last_used: datetime | None = None
    role_last_used_region: str | None = None


Call = Callable[..., dict[str, Any]]


def get_authorization_details(call: Call, settings: EntitySettings, page_size: int = 1000) -> dict[str, list]:
    """Every page of GetAccountAuthorizationDetails for the configured types (``call`` is rate-limited)."""
    filters = [name for entity_type in settings.types for name in FILTERS[entity_type]]
    if settings.aws_managed_policies:
        filters.append(AWS_MANAGED_FILTER)
    details: dict[str, list] = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [], "Policies": []}
    for page in marker_pages(call, "get_account_authorization_details", Filter=filters, MaxItems=page_size):
        for key, items in details.items():
            items.extend(page.get(key, []))
    return details


def entities_of(details: dict[str, list], aws_managed_arn_prefix: str = ":iam::aws:policy/") -> list[Entity]:
    """The entities of an account's authorization details, sorted by ARN."""
    members: dict[str, list[str]] = {}
    for user in details["UserDetailList"]:
        for group in user.get("GroupList", []):
            members.setdefault(group, []).append(user["UserName"])
    entities = [_user(user) for user in details["UserDetailList"]]
    entities += [_role(role) for role in details["RoleDetailList"]]
    entities += [_group(group, sorted(members.get(group["GroupName"], []))) for group in details["GroupDetailList"]]
    entities += [_policy(policy, aws_managed_arn_prefix) for policy in details["Policies"]
                 if aws_managed_arn_prefix not in policy["Arn"] or policy.get("AttachmentCount", 0) > 0]
    return sorted(entities, key=lambda entity: entity.arn)


def select_entities(entities: Iterable[Entity], settings: EntitySettings) -> list[Entity]:
    """The entities the configuration asks for."""
    include = [re.compile(pattern) for pattern in settings.include_names]
    exclude = [re.compile(pattern) for pattern in settings.exclude_names]
    selected = []
    for entity in entities:
        if entity.is_aws_managed:
            if not settings.aws_managed_policies:
                continue
        elif entity.type not in settings.types:
            continue
        if not entity.path.startswith(settings.path_prefix):
            continue
        if entity.is_service_linked and not settings.service_linked_roles:
            continue
        if include and not any(pattern.search(entity.name) for pattern in include):
            continue
        if any(pattern.search(entity.name) for pattern in exclude):
            continue
        selected.append(entity)
    return selected


def _user(user: dict[str, Any]) -> Entity:
    return Entity(
        type="USER", arn=user["Arn"], name=user["UserName"], id=user.get("UserId"), path=user.get("Path", "/"),
        create_date=utc(user.get("CreateDate")), tags=_tags(user.get("Tags")),
        attached_policy_arns=_attached(user), inline_policy_names=_inline(user.get("UserPolicyList")),
        permissions_boundary_arn=_boundary(user), group_names=tuple(sorted(user.get("GroupList", []))))


def _role(role: dict[str, Any]) -> Entity:
    last_used = role.get("RoleLastUsed") or {}
    path = role.get("Path", "/")
    return Entity(
        type="ROLE", arn=role["Arn"], name=role["RoleName"], id=role.get("RoleId"), path=path,
        create_date=utc(role.get("CreateDate")), tags=_tags(role.get("Tags")),
        attached_policy_arns=_attached(role), inline_policy_names=_inline(role.get("RolePolicyList")),
        permissions_boundary_arn=_boundary(role), is_service_linked=path.startswith(SERVICE_LINKED_PATH),
        role_last_used=utc(last_used.get("LastUsedDate")), role_last_used_region=last_used.get("Region"))


def _group(group: dict[str, Any], members: list[str]) -> Entity:
    return Entity(
        type="GROUP", arn=group["Arn"], name=group["GroupName"], id=group.get("GroupId"),
        path=group.get("Path", "/"), create_date=utc(group.get("CreateDate")),
        attached_policy_arns=_attached(group), inline_policy_names=_inline(group.get("GroupPolicyList")),
        member_names=tuple(members))


def _policy(policy: dict[str, Any], aws_managed_arn_prefix: str) -> Entity:
    return Entity(
        type="POLICY", arn=policy["Arn"], name=policy["PolicyName"], id=policy.get("PolicyId"),
        path=policy.get("Path", "/"), create_date=utc(policy.get("CreateDate")),
        is_aws_managed=aws_managed_arn_prefix in policy["Arn"])


def _tags(tags: list[dict[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((tag["Key"], tag["Value"]) for tag in tags or []))


def _attached(detail: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(policy["PolicyArn"] for policy in detail.get("AttachedManagedPolicies", [])))


def _inline(policies: list[dict[str, Any]] | None) -> tuple[str, ...]:
    return tuple(sorted(policy["PolicyName"] for policy in policies or []))


def _boundary(detail: dict[str, Any]) -> str | None:
    return (detail.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
