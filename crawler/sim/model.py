"""The synthetic organization as plain data: what the generator draws and the loader writes.

Nothing here talks to moto or boto3. Times are timezone-aware UTC datetimes at whole
seconds, account ids are 12-character strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

EntityType = Literal["USER", "ROLE", "GROUP", "POLICY"]

#: Access advisor's tracking period: older activity is reported as "not accessed".
TRACKING_PERIOD_DAYS = 400


@dataclass(frozen=True)
class OrganizationalUnit:
    """An OU (or the root, whose ``parent_id`` is None)."""

    id: str
    name: str
    parent_id: str | None
    arn: str


@dataclass(frozen=True)
class Account:
    """A member (or the management) account of the organization."""

    id: str
    name: str
    email: str
    state: str
    parent_id: str
    tags: dict[str, str]
    joined: datetime
    arn: str


@dataclass(frozen=True)
class InlinePolicy:
    """A policy embedded in a user, group or role."""

    name: str
    document: dict[str, Any]


@dataclass
class Entity:
    """An IAM user, role, group or customer-managed policy of one account.

    ``attached`` holds managed policy ARNs; ``groups`` (users) and ``members`` (groups)
    hold names. A POLICY entity keeps its own document in ``document``.
    """

    account_id: str
    type: EntityType
    name: str
    path: str
    arn: str
    id: str
    create_date: datetime
    tags: dict[str, str] = field(default_factory=dict)
    inline_policies: list[InlinePolicy] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    document: dict[str, Any] | None = None
    description: str = ""
    permissions_boundary: str | None = None
    trust_policy: dict[str, Any] | None = None

    @property
    def is_service_linked(self) -> bool:
        """Service-linked roles live under ``/aws-service-role/``."""
        return self.type == "ROLE" and self.path.startswith("/aws-service-role/")


@dataclass(frozen=True)
class ManagedPolicy:
    """A managed policy present in an account (customer-managed or AWS-managed)."""

    arn: str
    name: str
    path: str
    document: dict[str, Any]
    aws_managed: bool


@dataclass(frozen=True)
class Use:
    """One principal's most recent use of a service or action."""

    time: datetime
    region: str


@dataclass
class ServiceActivity:
    """A principal's most recent use of one service, and of its tracked actions."""

    use: Use
    actions: dict[str, Use] = field(default_factory=dict)


@dataclass
class AccountModel:
    """Everything of one account: its entities, policies and principals' activity."""

    account: Account
    entities: list[Entity] = field(default_factory=list)
    managed_policies: dict[str, ManagedPolicy] = field(default_factory=dict)
    #: principal ARN (user or role) -> namespace -> activity
    activity: dict[str, dict[str, ServiceActivity]] = field(default_factory=dict)
    has_crawler_role: bool = True

    def entity(self, arn: str) -> Entity:
        """The entity with this ARN (KeyError when absent)."""
        for entity in self.entities:
            if entity.arn == arn:
                return entity
        raise KeyError(arn)


@dataclass
class OrganizationModel:
    """The whole synthetic organization."""

    id: str
    arn: str
    root: OrganizationalUnit
    management_account_id: str
    ous: list[OrganizationalUnit]
    accounts: dict[str, AccountModel]
    as_of: datetime
    seed: int
    partition: str = "aws"
    crawler_role_name: str = "AccessCrawlerRole"
    operator_user_name: str = "access-crawler-operator"
    hub_role_name: str = "AccessCrawlerHub"

    @property
    def tracking_cutoff(self) -> datetime:
        """The start of access advisor's tracking period, counted from ``as_of``: older use is
        reported as "not accessed" (by the live simulator and the ground truth alike)."""
        return self.as_of - timedelta(days=TRACKING_PERIOD_DAYS)

    def ou_path_ids(self, parent_id: str) -> list[str]:
        """Ids from the root down to ``parent_id``."""
        by_id = {ou.id: ou for ou in [self.root, *self.ous]}
        chain = []
        current: str | None = parent_id
        while current is not None:
            chain.append(current)
            current = by_id[current].parent_id
        return list(reversed(chain))

    def ou_path_names(self, parent_id: str) -> list[str]:
        """Names from the root down to ``parent_id`` (the root is named ``Root``)."""
        by_id = {ou.id: ou for ou in [self.root, *self.ous]}
        return [by_id[ou_id].name for ou_id in self.ou_path_ids(parent_id)]
