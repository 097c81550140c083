"""Write a generated organization straight into moto's backends.

Creating thousands of roles through boto3 takes a minute; writing moto's model objects
directly takes a fraction of a second. This module is the one place that knows how moto
stores Organizations and IAM data, which is why ``setup.cfg`` pins moto's minor version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from moto.iam.models import AWSManagedPolicy, Group, IAMBackend, ManagedPolicy, Role, User, iam_backends
from moto.organizations.models import (
    FakeAccount,
    FakeOrganizationalUnit,
    OrganizationsBackend,
    organizations_backends,
)
from moto.sts.models import sts_backends

from crawler.sim.model import AccountModel, Entity, OrganizationModel

REGION = "us-east-1"


@dataclass(frozen=True)
class Credentials:
    """Long-term keys of the operator user in the management account."""

    access_key_id: str
    secret_access_key: str


def naive(moment: datetime) -> datetime:
    """moto keeps naive UTC datetimes."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def reset_backends() -> None:
    """Forget everything moto holds for IAM, STS and Organizations."""
    for backends in (iam_backends, sts_backends, organizations_backends):
        backends.reset()
    organizations_backends.master_accounts.clear()


def load_organization(org: OrganizationModel) -> Credentials:
    """Write ``org`` into moto and return the operator's credentials."""
    _load_organizations(org)
    for model in org.accounts.values():
        _load_account(_iam(model.account.id, org.partition), model)
    return _operator_credentials(org)


def _iam(account_id: str, partition: str) -> IAMBackend:
    return iam_backends[account_id][partition]


def _org_backend(org: OrganizationModel) -> OrganizationsBackend:
    return organizations_backends[org.management_account_id][org.partition]


def _load_organizations(org: OrganizationModel) -> None:
    backend = _org_backend(org)
    backend.create_organization(region=REGION, FeatureSet="ALL")
    fake_org = backend.org
    assert fake_org is not None
    old_root_id = fake_org.root_id
    fake_org.id, fake_org.root_id = org.id, org.root.id
    fake_org.master_account_email = org.accounts[org.management_account_id].account.email
    for unit in backend.ou:
        if unit.id == old_root_id:
            unit.id, unit.organization_id = org.root.id, org.id
    for policy in backend.policies:
        policy.organization_id = org.id
    for ou in org.ous:
        fake_ou = FakeOrganizationalUnit(fake_org, Name=ou.name, ParentId=ou.parent_id)
        fake_ou.id = ou.id
        backend.ou.append(fake_ou)
    backend.accounts.clear()
    for model in org.accounts.values():
        backend.accounts.append(_fake_account(fake_org, model))
        if model.account.id != org.management_account_id:
            organizations_backends.master_accounts[model.account.id] = (org.management_account_id, org.partition)
    _attach_full_access(backend)


#: The SCP AWS attaches to the root, every OU and every account while SCPs are enabled.
FULL_ACCESS_POLICY_ID = "p-FullAWSAccess"


def _attach_full_access(backend: OrganizationsBackend) -> None:
    """Attach FullAWSAccess to every root, OU and account, as AWS does, on both sides of moto's link
    (moto attached it to the accounts it made itself, which the simulated ones replaced)."""
    policy = next((policy for policy in backend.policies if policy.id == FULL_ACCESS_POLICY_ID), None)
    if policy is None:
        return
    policy.attachments = [*backend.ou, *backend.accounts]
    for target in policy.attachments:
        target.attached_policies = [*(p for p in target.attached_policies if p is not policy), policy]


def _fake_account(fake_org: object, model: AccountModel) -> FakeAccount:
    account = model.account
    fake = FakeAccount.__new__(FakeAccount)  # skip __init__: it draws an id and creates a role elsewhere
    fake.type = "ACCOUNT"
    fake.region = REGION
    fake.organization_id = fake_org.id  # type: ignore[attr-defined]
    fake.master_account_id = fake_org.master_account_id  # type: ignore[attr-defined]
    fake.create_account_status_id = "car-" + account.id
    fake.id = account.id
    fake.name = account.name
    fake.email = account.email
    fake.create_time = naive(account.joined)
    fake.status = account.state
    fake.state = account.state
    fake.joined_method = "CREATED"
    fake.parent_id = account.parent_id
    fake.attached_policies = []
    fake.tags = dict(account.tags)
    return fake


def _load_account(iam: IAMBackend, model: AccountModel) -> None:
    for policy in model.managed_policies.values():
        _put_managed_policy(iam, model, policy.arn)
    by_type: dict[str, list[Entity]] = {"USER": [], "GROUP": [], "ROLE": [], "POLICY": []}
    for entity in model.entities:
        by_type[entity.type].append(entity)
    for entity in by_type["GROUP"]:
        _put_group(iam, entity)
    for entity in by_type["USER"]:
        _put_user(iam, entity)
    for entity in by_type["ROLE"]:
        _put_role(iam, entity, model)


def _put_managed_policy(iam: IAMBackend, model: AccountModel, arn: str) -> None:
    source = model.managed_policies[arn]
    entity = next((e for e in model.entities if e.type == "POLICY" and e.arn == arn), None)
    cls = AWSManagedPolicy if source.aws_managed else ManagedPolicy
    policy = cls(source.name, account_id=iam.account_id, region=REGION, path=source.path,
                 document=json.dumps(source.document),
                 description=entity.description if entity else None,
                 create_date=naive(entity.create_date) if entity else None,
                 update_date=naive(entity.create_date) if entity else None)
    if entity is not None:
        policy.id = entity.id
    iam.managed_policies[policy.arn] = policy
    if source.aws_managed:
        iam.aws_managed_policies.append(policy)


def _put_group(iam: IAMBackend, entity: Entity) -> None:
    group = Group(iam.account_id, REGION, entity.name, entity.path)
    group.id, group.create_date = entity.id, naive(entity.create_date)
    _put_policies(iam, group, entity)
    iam.groups[entity.name] = group


def _put_user(iam: IAMBackend, entity: Entity) -> None:
    user = User(iam.account_id, REGION, entity.name, entity.path)
    user.id, user.create_date = entity.id, naive(entity.create_date)
    _put_policies(iam, user, entity)
    iam.users[entity.name] = user
    iam.tagger.tag_resource(user.arn, [{"Key": k, "Value": v} for k, v in entity.tags.items()])
    for group_name in entity.groups:
        iam.groups[group_name].users.append(user)


def _put_role(iam: IAMBackend, entity: Entity, model: AccountModel) -> None:
    role = Role(account_id=iam.account_id, partition=iam.partition, role_id=entity.id, name=entity.name,
                assume_role_policy_document=json.dumps(entity.trust_policy or {}), path=entity.path,
                permissions_boundary=entity.permissions_boundary, description=entity.description,
                tags=[{"Key": k, "Value": v} for k, v in entity.tags.items()], max_session_duration="3600",
                linked_service=entity.path.split("/")[2] if entity.is_service_linked else None)
    role.create_date = naive(entity.create_date)
    last_use = max((activity.use for activity in model.activity.get(entity.arn, {}).values()),
                   key=lambda use: use.time, default=None)
    if last_use is not None:
        role.last_used, role.last_used_region = naive(last_use.time), last_use.region
    _put_policies(iam, role, entity)
    iam.roles[entity.id] = role


def _put_policies(iam: IAMBackend, owner: Group | User | Role, entity: Entity) -> None:
    for inline in entity.inline_policies:
        owner.policies[inline.name] = json.dumps(inline.document)
    for arn in entity.attached:
        iam.managed_policies[arn].attach_to(owner)


def _operator_credentials(org: OrganizationModel) -> Credentials:
    """Create the operator's access key, derived from the seed so a restarted sim keeps it."""
    iam = _iam(org.management_account_id, org.partition)
    key = iam.create_access_key(user_name=org.operator_user_name, prefix="AKIA")
    del iam.access_keys[key.physical_resource_id]
    digest = hashlib.sha256(f"access-crawler-sim:{org.seed}:{org.id}".encode()).hexdigest().upper()
    key.access_key_id = "AKIA" + digest[:16]
    key.secret_access_key = digest[16:56].lower()
    iam.access_keys[key.physical_resource_id] = key
    return Credentials(key.access_key_id, key.secret_access_key)
