"""``GetAccountAuthorizationDetails`` paginated with ``MaxItems``/``Marker`` (moto returns
everything in one page, which would hide a client that stops after the first)."""
from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.iam.models import IAMBackend, ManagedPolicy

from crawler.sim.advisor import decode_marker, encode_marker, max_items
from crawler.sim.state import SimState

FILTERS = ("User", "Role", "Group", "LocalManagedPolicy", "AWSManagedPolicy")
LISTS = {"User": "UserDetailList", "Group": "GroupDetailList", "Role": "RoleDetailList",
         "LocalManagedPolicy": "Policies", "AWSManagedPolicy": "Policies"}


def get_account_authorization_details(response: Any, state: SimState) -> ActionResult:
    """Users, groups, roles and managed policies, in that order, ``MaxItems`` at a time."""
    iam: IAMBackend = response.backend
    wanted = response._get_param("Filter") or list(FILTERS)
    items = _inventory(iam, [kind for kind in FILTERS if kind in wanted])
    offset = decode_marker(response._get_param("Marker"), "authorization:" + iam.account_id)
    page = items[offset:offset + max_items(response)]
    result: dict[str, Any] = {name: [] for name in dict.fromkeys(LISTS.values())}
    for kind, item in page:
        result[LISTS[kind]].append(PolicyDetail(item) if LISTS[kind] == "Policies" else item)
    following = offset + len(page)
    result["IsTruncated"] = following < len(items)
    if result["IsTruncated"]:
        result["Marker"] = encode_marker("authorization:" + iam.account_id, following)
    return ActionResult(result)


class PolicyDetail:
    """A managed policy as ``ManagedPolicyDetail``: moto's serializer finds no ``PolicyName`` or
    ``PolicyId`` on its ``ManagedPolicy`` (they are ``name`` and ``id``) and would leave them out."""

    def __init__(self, policy: ManagedPolicy) -> None:
        self._policy = policy
        self.policy_name = policy.name
        self.policy_id = policy.id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)


def _inventory(iam: IAMBackend, kinds: list[str]) -> list[tuple[str, Any]]:
    aws_managed = {policy.arn for policy in iam.aws_managed_policies}
    sources = {
        "User": sorted(iam.users.values(), key=lambda user: user.name),
        "Group": sorted(iam.groups.values(), key=lambda group: group.name),
        "Role": sorted(iam.roles.values(), key=lambda role: role.name),
        "LocalManagedPolicy": sorted((p for p in iam.managed_policies.values() if p.arn not in aws_managed),
                                     key=lambda policy: policy.arn),
        "AWSManagedPolicy": sorted((p for p in iam.managed_policies.values() if p.arn in aws_managed),
                                   key=lambda policy: policy.arn),
    }
    return [(kind, item) for kind in ("User", "Group", "Role", "LocalManagedPolicy", "AWSManagedPolicy")
            if kind in kinds for item in sources[kind]]
