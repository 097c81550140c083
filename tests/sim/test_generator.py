"""The synthetic organization generator and its ground truth (no moto involved)."""
from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import botocore.session
import pytest
from botocore.model import ListShape, Shape

from crawler.sim import OrgSpec, generate
from crawler.sim.catalog import load_catalog
from crawler.sim.generator import (
    HOSTILE_ACCOUNT_NAMES,
    HOSTILE_IAM_NAMES,
    HOSTILE_OU_NAMES,
    HOSTILE_PATHS,
    HOSTILE_POLICY_PATHS,
    HOSTILE_TAG_KEYS,
    HOSTILE_TAG_VALUES,
    IAM_NAME_MAX,
    principal_grants,
)
from crawler.sim.model import TRACKING_PERIOD_DAYS, Entity, OrganizationModel
from crawler.sim.truth import entity_reports, principals_of, service_rows, write_ground_truth

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def org() -> OrganizationModel:
    return generate(OrgSpec(accounts=30, entities=20, seed=7, as_of=AS_OF))


def test_same_spec_gives_the_same_organization() -> None:
    spec = OrgSpec(accounts=6, entities=12, seed=3, as_of=AS_OF)
    first, second = generate(spec), generate(spec)
    assert list(first.accounts) == list(second.accounts)
    assert service_rows(first) == service_rows(second)
    assert [e.id for m in first.accounts.values() for e in m.entities] == \
        [e.id for m in second.accounts.values() for e in m.entities]


def test_another_seed_gives_another_organization() -> None:
    first = generate(OrgSpec(accounts=6, entities=12, seed=3, as_of=AS_OF))
    second = generate(OrgSpec(accounts=6, entities=12, seed=4, as_of=AS_OF))
    assert list(first.accounts) != list(second.accounts)


def test_management_plus_members_with_one_suspended(org: OrganizationModel) -> None:
    states = Counter(model.account.state for model in org.accounts.values())
    assert len(org.accounts) == 31
    assert states == {"ACTIVE": 30, "SUSPENDED": 1}
    assert org.management_account_id in org.accounts


def test_account_ids_are_twelve_digit_strings_some_with_leading_zeros(org: OrganizationModel) -> None:
    ids = list(org.accounts)
    assert all(isinstance(i, str) and len(i) == 12 and i.isdigit() for i in ids)
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("00") for i in ids)


def test_ous_nest_at_least_three_deep(org: OrganizationModel) -> None:
    depths = [len(org.ou_path_ids(model.account.parent_id)) - 1 for model in org.accounts.values()]
    assert max(depths) >= 3
    assert org.ou_path_names(org.root.id) == ["Root"]


def test_accounts_have_names_emails_and_tags(org: OrganizationModel) -> None:
    for model in org.accounts.values():
        assert model.account.name and "@" in model.account.email
        assert {"env", "team"} <= set(model.account.tags)


@pytest.mark.parametrize("entities", [8, 20, 50])
def test_every_account_has_exactly_the_entities_asked(entities: int) -> None:
    org = generate(OrgSpec(accounts=3, entities=entities, seed=1, as_of=AS_OF))
    assert {len(model.entities) for model in org.accounts.values()} == {entities}


def test_every_kind_of_entity_is_present(org: OrganizationModel) -> None:
    for model in org.accounts.values():
        kinds = Counter(entity.type for entity in model.entities)
        assert set(kinds) == {"USER", "ROLE", "GROUP", "POLICY"}
        assert any(entity.is_service_linked for entity in model.entities)
        assert any(entity.inline_policies for entity in model.entities)
        assert any(entity.attached for entity in model.entities if entity.type != "POLICY")
        groups = [entity for entity in model.entities if entity.type == "GROUP"]
        users = {entity.name: entity for entity in model.entities if entity.type == "USER"}
        for group in groups:
            assert all(group.name in users[member].groups for member in group.members)


def test_service_linked_roles_live_under_aws_service_role(org: OrganizationModel) -> None:
    linked = [e for m in org.accounts.values() for e in m.entities if e.is_service_linked]
    assert linked and all(e.path.startswith("/aws-service-role/") and e.arn.count("/") >= 3 for e in linked)


def test_admin_like_entities_are_granted_over_three_hundred_services(org: OrganizationModel) -> None:
    catalog = load_catalog()
    for model in org.accounts.values():
        admin = next(e for e in model.entities if e.name == "OrganizationAccountAccessRole")
        assert len(principal_grants(model, admin, catalog)) >= 300


def test_granted_namespaces_come_from_the_catalog(org: OrganizationModel) -> None:
    namespaces = set(load_catalog().namespaces)
    assert {row["service_namespace"] for row in service_rows(org)} <= namespaces


def test_most_granted_services_were_never_used_within_the_tracking_period(org: OrganizationModel) -> None:
    rows = service_rows(org)
    never = sum(1 for row in rows if row["last_authenticated"] is None)
    recent = sum(1 for row in rows if row["last_authenticated"] and AS_OF - row["last_authenticated"] < timedelta(7))
    assert never / len(rows) > 0.6
    assert recent > 0


def test_use_older_than_the_tracking_period_is_stored_but_not_reported(org: OrganizationModel) -> None:
    cutoff = AS_OF - timedelta(days=TRACKING_PERIOD_DAYS)
    old = [(arn, ns) for m in org.accounts.values() for arn, services in m.activity.items()
           for ns, activity in services.items() if activity.use.time < cutoff]
    assert old, "the generator should draw some use older than 400 days"
    reported = {(row["entity_arn"], row["service_namespace"]): row for row in service_rows(org)}
    for key in old:
        assert reported[key]["last_authenticated"] is None


def test_reports_are_consistent(org: OrganizationModel) -> None:
    for entity, reports in entity_reports(org, action_level=True):
        model = org.accounts[entity.account_id]
        principals = set(principals_of(model, entity))
        assert [r.namespace for r in reports] == sorted(r.namespace for r in reports)
        for report in reports:
            used = report.last_authenticated is not None
            assert used == (report.last_authenticated_entity is not None) == (report.last_authenticated_region
                                                                               is not None)
            if used:
                assert report.last_authenticated_entity in principals
                assert 1 <= report.total_authenticated_entities <= len(principals)
                assert report.last_authenticated <= AS_OF
                assert report.last_authenticated >= entity_created(org, report.last_authenticated_entity)
            for action in report.actions or ():
                if action.last_accessed_time is not None:
                    assert used and action.last_accessed_time <= report.last_authenticated


def entity_created(org: OrganizationModel, arn: str) -> datetime:
    account_id = arn.split(":")[4]
    return org.accounts[account_id].entity(arn).create_date


def test_group_reports_take_the_newest_use_of_their_members(org: OrganizationModel) -> None:
    checked = 0
    for entity, reports in entity_reports(org):
        if entity.type != "GROUP":
            continue
        model = org.accounts[entity.account_id]
        for report in reports:
            uses = [model.activity.get(member, {}).get(report.namespace) for member in principals_of(model, entity)]
            times = [u.use.time for u in uses if u and u.use.time >= AS_OF - timedelta(days=TRACKING_PERIOD_DAYS)]
            assert report.last_authenticated == (max(times) if times else None)
            checked += 1
    assert checked


def test_action_level_data_only_for_tracking_services(org: OrganizationModel) -> None:
    catalog = load_catalog()
    for _entity, reports in entity_reports(org, action_level=True):
        for report in reports:
            service = catalog.get(report.namespace)
            assert (report.actions is not None) == service.tracks_actions
            assert all(a.action_name != "PassRole" for a in report.actions or ())


def test_ground_truth_is_written_as_json_lines(tmp_path, org: OrganizationModel) -> None:
    written = write_ground_truth(org, tmp_path)
    lines = written["service_last_accessed"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(service_rows(org))
    first = json.loads(lines[0])
    assert set(first) >= {"account_id", "entity_arn", "service_namespace", "last_authenticated"}
    assert written["action_last_accessed"].exists() and written["entities"].exists()


def test_too_few_entities_are_refused() -> None:
    with pytest.raises(ValueError, match="entities"):
        generate(OrgSpec(accounts=1, entities=3))


# -- hostile names -------------------------------------------------------------------------
HOSTILE = OrgSpec(accounts=13, entities=20, seed=7, as_of=AS_OF, hostile_names=True)


@pytest.fixture(scope="module")
def hostile_org() -> OrganizationModel:
    return generate(HOSTILE)


def names_of(org: OrganizationModel) -> list[object]:
    """Every name the generator draws: OUs, accounts (name, email, tags), entities (name, path, tags,
    inline policy names, groups)."""
    return [[(ou.id, ou.name) for ou in org.ous],
            [(model.account.name, model.account.email, model.account.tags) for model in org.accounts.values()],
            [(e.arn, e.name, e.path, e.tags, [p.name for p in e.inline_policies], e.groups, e.members)
             for model in org.accounts.values() for e in model.entities]]


def test_hostile_names_are_the_same_for_the_same_seed(hostile_org: OrganizationModel) -> None:
    assert names_of(generate(HOSTILE)) == names_of(hostile_org)
    assert names_of(generate(replace(HOSTILE, seed=8))) != names_of(hostile_org)


def test_hostile_names_change_nothing_but_names(hostile_org: OrganizationModel) -> None:
    plain = generate(replace(HOSTILE, hostile_names=False))
    assert list(plain.accounts) == list(hostile_org.accounts)
    assert [ou.id for ou in plain.ous] == [ou.id for ou in hostile_org.ous]
    assert [(e.id, e.type, e.create_date, len(e.attached)) for m in plain.accounts.values() for e in m.entities] == \
        [(e.id, e.type, e.create_date, len(e.attached)) for m in hostile_org.accounts.values() for e in m.entities]
    assert [(r["entity_type"], r["service_namespace"], r["last_authenticated"]) for r in service_rows(plain)] == \
        [(r["entity_type"], r["service_namespace"], r["last_authenticated"]) for r in service_rows(hostile_org)]


def test_hostile_names_leave_the_crawlers_own_entities_alone(hostile_org: OrganizationModel) -> None:
    for account_id, model in hostile_org.accounts.items():
        by_name = {(e.type, e.name): e for e in model.entities}
        for key in [("ROLE", HOSTILE.crawler_role_name), ("ROLE", "OrganizationAccountAccessRole")] + \
                ([("ROLE", HOSTILE.hub_role_name), ("USER", "access-crawler-operator")]
                 if account_id == hostile_org.management_account_id else []):
            assert by_name[key].path == "/" and by_name[key].arn.endswith(f":{key[0].lower()}/{key[1]}")


def test_every_hostile_name_is_used(hostile_org: OrganizationModel) -> None:
    entities = [e for m in hostile_org.accounts.values() for e in m.entities]
    assert {ou.name for ou in hostile_org.ous} == set(HOSTILE_OU_NAMES)
    assert {m.account.name for m in hostile_org.accounts.values()} >= set(HOSTILE_ACCOUNT_NAMES)
    for kind in ("USER", "ROLE", "GROUP", "POLICY"):
        names = {e.name for e in entities if e.type == kind}
        assert names >= set(HOSTILE_IAM_NAMES) and max(map(len, names)) == IAM_NAME_MAX[kind], kind
    assert {e.path for e in entities if e.type != "POLICY"} >= set(HOSTILE_PATHS)
    assert {e.path for e in entities if e.type == "POLICY"} >= set(HOSTILE_POLICY_PATHS)
    accounts = [m.account for m in hostile_org.accounts.values()]
    assert {key for account in accounts for key in account.tags} >= set(HOSTILE_TAG_KEYS)
    assert {value for account in accounts for value in account.tags.values()} >= set(HOSTILE_TAG_VALUES)
    assert {value for e in entities for value in e.tags.values()} >= set(HOSTILE_TAG_VALUES)


def aws_fullmatch(pattern: str, text: str) -> bool:
    """Whether ``text`` matches a botocore shape's (Java) pattern: ``\\w`` and ``\\s`` are ASCII there; the
    Unicode classes ``\\p{L}``, ``\\p{Z}``, ``\\p{N}`` (which ``re`` lacks; they only appear inside one bracket
    expression) are checked by category: such characters become ``a``, which the bracket then admits."""
    categories = re.findall(r"\\p\{(\w)\}", pattern)
    if categories:
        pattern = re.sub(r"\\p\{\w\}", "", pattern).replace("[", "[a", 1)
        text = "".join("a" if unicodedata.category(c)[0] in categories else c for c in text)
    return re.fullmatch(pattern, text, flags=re.ASCII) is not None


@functools.cache
def aws_field(service: str, operation: str, *members: str) -> Shape:
    """The shape of an input member of an AWS operation (``Tags``, ``Key``: a list's member's member)."""
    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    for member in members:
        shape = shape.member if isinstance(shape, ListShape) else shape
        shape = shape.members[member]
    return shape


def assert_valid(shape: Shape, text: str) -> None:
    """``text`` fits the shape's pattern and length (min, max: characters)."""
    meta = shape.metadata
    assert meta.get("min", 0) <= len(text) <= meta["max"], (shape.name, text)
    assert aws_fullmatch(meta["pattern"], text), (shape.name, meta["pattern"], text)


CREATE = {"USER": ("CreateUser", "UserName"), "ROLE": ("CreateRole", "RoleName"),
          "GROUP": ("CreateGroup", "GroupName"), "POLICY": ("CreatePolicy", "PolicyName")}


def test_aws_fullmatch_reads_the_patterns_like_aws() -> None:
    tag_value = aws_field("iam", "CreateUser", "Tags", "Value").metadata["pattern"]
    assert aws_fullmatch(tag_value, "\u6771\u4eac a\u2028b =1+1") and not aws_fullmatch(tag_value, "a\nb")
    assert not aws_fullmatch(tag_value, "\U0001F310") and not aws_fullmatch(tag_value, "\u202e")
    name = aws_field("iam", "CreateUser", "UserName").metadata["pattern"]
    assert aws_fullmatch(name, "a,b=c.d@e-f+g_1")
    assert not aws_fullmatch(name, "\u00e9") and not aws_fullmatch(name, "a/b")


def test_hostile_organization_fits_the_aws_patterns(hostile_org: OrganizationModel) -> None:
    for ou in hostile_org.ous:
        assert_valid(aws_field("organizations", "CreateOrganizationalUnit", "Name"), ou.name)
    for model in hostile_org.accounts.values():
        assert_valid(aws_field("organizations", "CreateAccount", "AccountName"), model.account.name)
        assert_valid(aws_field("organizations", "CreateAccount", "Email"), model.account.email)
        for key, value in model.account.tags.items():
            assert_valid(aws_field("organizations", "CreateAccount", "Tags", "Key"), key)
            assert_valid(aws_field("organizations", "CreateAccount", "Tags", "Value"), value)
        for entity in model.entities:
            assert_entity_valid(entity)


def assert_entity_valid(entity: Entity) -> None:
    """The entity's name, path, inline policy names and tags fit what IAM's Create* calls accept."""
    operation, name_member = CREATE[entity.type]
    assert_valid(aws_field("iam", operation, name_member), entity.name)
    assert_valid(aws_field("iam", operation, "Path"), entity.path)
    for inline in entity.inline_policies:
        assert_valid(aws_field("iam", "PutRolePolicy", "PolicyName"), inline.name)
    for key, value in entity.tags.items():
        assert_valid(aws_field("iam", "CreateUser", "Tags", "Key"), key)
        assert_valid(aws_field("iam", "CreateUser", "Tags", "Value"), value)
