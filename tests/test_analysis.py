"""The analysis library answers the review's questions exactly as the simulator's model says.

One seeded organization is crawled twice per module (snapshots A and B, action level), with
job failures and stuck jobs in two accounts during A and deliberate changes between A and B.
Every expected answer comes from the simulator's model and ground truth (the dataset is read
back only for each entity's job outcome and ``collected_at``, the moment the window ends).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import shutil
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from crawler import analysis
from crawler.config.settings import AdvisorSettings, OrganizationsAccessSettings, OutputSettings
from crawler.crawl.scheduler import run_crawl
from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization
from crawler.sim.generator import principal_grants
from crawler.sim.model import Entity, InlinePolicy, OrganizationModel, ServiceActivity, Use
from crawler.sim.truth import service_rows
from crawler.store import schema
from tests.conftest import isolate_aws
from tests.helpers import SIM_PROFILE, crawl_config, crawlable, read_rows

SPEC = OrgSpec(accounts=5, entities=14, seed=3, accounts_without_crawler_role=1)
DAY_A, DAY_B = date(2026, 9, 30), date(2026, 10, 31)
DAYS = 90
WINDOW = timedelta(days=DAYS)
NO_DATA = ("failed", "timed_out", "skipped")
OWN_ROLES = ("AccessCrawlerRole", "OrganizationAccountAccessRole")


@dataclass
class Review:
    """The crawled dataset and what the organization looked like at each snapshot."""

    root: Path
    sim: SimulatedOrganization
    model_a: OrganizationModel
    failing: str
    stuck: str
    clean: str
    deleted: str
    added: str
    regranted: str
    added_namespace: str
    activity_role: str
    made_old: str
    made_recent: str

    @property
    def model_b(self) -> OrganizationModel:
        """The organization at snapshot B (the simulator's live model)."""
        return self.sim.model

    @functools.cached_property
    def truth_a(self) -> list[dict[str, Any]]:
        """The service-level ground truth at snapshot A."""
        return service_rows(self.model_a)

    @functools.cached_property
    def truth_b(self) -> list[dict[str, Any]]:
        """The service-level ground truth at snapshot B."""
        return service_rows(self.model_b)


# -- the crawled organization ----------------------------------------------------------------
def fake_aws(patch: pytest.MonkeyPatch, home: Path, sim: SimulatedOrganization) -> None:
    """What conftest's fake_aws_environment does per test, for the module: fake credentials, the sim profile."""
    isolate_aws(patch, *sim.write_aws_config(home, profile=SIM_PROFILE))


def crawl(root: Path, day: date) -> None:
    """An action-level crawl of the sim profile publishing snapshot ``day``."""
    advisor = AdvisorSettings(granularity="ACTION_LEVEL", job_retries=1, job_timeout_seconds=1.0,
                              poll_interval_seconds=0.05, max_poll_interval_seconds=0.5)
    config = crawl_config(root, advisor=advisor)
    run_crawl(replace(config, output=OutputSettings(path=str(root), snapshot_date=day)))


def changeable_roles(model: OrganizationModel, account_id: str) -> list[Entity]:
    """Roles whose changes touch no other entity's report: no customer-managed policy attached."""
    return sorted((entity for entity in model.accounts[account_id].entities
                   if entity.type == "ROLE" and not entity.is_service_linked and entity.name not in OWN_ROLES
                   and all(":iam::aws:policy/" in arn for arn in entity.attached)), key=lambda entity: entity.name)


def change_activity(sim: SimulatedOrganization, role: Entity) -> tuple[str, str]:
    """Move one recently used service of ``role`` out of the window and one unused service into it."""
    activity = sim.model.accounts[role.account_id].activity[role.arn]
    as_of = sim.model.as_of
    recent = sorted(ns for ns, use in activity.items() if use.use.time >= as_of - WINDOW + timedelta(days=5))[0]
    grants = principal_grants(sim.model.accounts[role.account_id], role, sim.catalog)
    unused = sorted(ns for ns in grants if ns not in activity)[0]
    activity[recent] = ServiceActivity(Use(as_of - timedelta(days=200), "us-east-1"))
    activity[unused] = ServiceActivity(Use(as_of - timedelta(days=1), "eu-west-1"))
    return recent, unused


def change_grants(sim: SimulatedOrganization, role: Entity) -> str:
    """Replace the role's inline policy by one granting a service it did not have; returns that namespace."""
    grants = principal_grants(sim.model.accounts[role.account_id], role, sim.catalog)
    namespace = next(ns for ns in ("sqs", "sns", "kinesis", "firehose") if ns not in grants)
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": f"{namespace}:*",
                                                        "Resource": "*"}]}
    iam = sim.assume(role.account_id).client("iam")
    for policy in role.inline_policies:
        iam.delete_role_policy(RoleName=role.name, PolicyName=policy.name)
    iam.put_role_policy(RoleName=role.name, PolicyName="analysis-added", PolicyDocument=json.dumps(document))
    role.inline_policies = [InlinePolicy("analysis-added", document)]
    return namespace


def add_user(sim: SimulatedOrganization, account_id: str) -> str:
    """A new user with an inline policy; returns its ARN."""
    iam = sim.assume(account_id).client("iam")
    user = iam.create_user(UserName="analysis-new-user")["User"]
    iam.put_user_policy(UserName="analysis-new-user", PolicyName="queues", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}))
    return str(user["Arn"])


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Review:
    """Crawl snapshot A (job failures in one account, stuck jobs in another), change the
    organization, crawl snapshot B."""
    root, home = tmp_path_factory.mktemp("review"), tmp_path_factory.mktemp("review-aws")
    sim = SimulatedOrganization(SPEC)
    with pytest.MonkeyPatch.context() as patch, sim.in_process():
        fake_aws(patch, home, sim)
        failing, stuck, clean = sorted(crawlable(sim) - {sim.management_account_id})
        sim.faults.account(failing).job_failure_rate = 0.6
        sim.faults.account(stuck).stuck_job_rate = 0.3
        crawl(root, DAY_A)
        model_a = copy.deepcopy(sim.model)
        sim.faults.account(failing).job_failure_rate = 0.0
        sim.faults.account(stuck).stuck_job_rate = 0.0
        activity_role, regranted, deleted = pick_roles(sim, clean)
        made_old, made_recent = change_activity(sim, activity_role)
        added_namespace = change_grants(sim, regranted)
        assert sim.delete_entity(deleted.arn)
        added = add_user(sim, clean)
        crawl(root, DAY_B)
    return Review(root, sim, model_a, failing, stuck, clean, deleted.arn, added, regranted.arn, added_namespace,
                  activity_role.arn, made_old, made_recent)


def pick_roles(sim: SimulatedOrganization, account_id: str) -> tuple[Entity, Entity, Entity]:
    """A role with used and unused services, another with an inline policy, and a third."""
    roles = changeable_roles(sim.model, account_id)
    model = sim.model.accounts[account_id]
    start = sim.model.as_of - WINDOW + timedelta(days=5)
    active = next(role for role in roles
                  if any(use.use.time >= start for use in model.activity.get(role.arn, {}).values())
                  and len(principal_grants(model, role, sim.catalog)) > len(model.activity[role.arn]))
    regranted = next(role for role in roles if role is not active and role.inline_policies)
    deleted = next(role for role in roles if role not in (active, regranted))
    return active, regranted, deleted


# -- expectations from the model ---------------------------------------------------------------
def entity_rows(root: Path, day: date) -> dict[str, dict[str, Any]]:
    """The raw entities rows of a snapshot by ARN: job outcome and collected_at."""
    return {row["entity_arn"]: row for row in read_rows(root, "entities")
            if str(row["snapshot_date"]) == day.isoformat()}


def ok_accounts(root: Path, day: date) -> set[str]:
    """Accounts whose crawl succeeded in a snapshot (raw accounts rows)."""
    return {row["account_id"] for row in read_rows(root, "accounts")
            if str(row["snapshot_date"]) == day.isoformat() and row["outcome"] == "ok"}


def model_entities(model: OrganizationModel) -> dict[str, Entity]:
    """Every entity of the model by ARN."""
    return {entity.arn: entity for account in model.accounts.values() for entity in account.entities}


def used_within(last: datetime | None, collected_at: datetime) -> bool:
    """Whether a use falls in the window that ends at ``collected_at``."""
    return last is not None and last >= collected_at - WINDOW


def expected_unused(review: Review, entities: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(entity, service, status) of every granted service the ground truth says was not used in the window (A)."""
    created = {arn: entity.create_date for arn, entity in model_entities(review.model_a).items()}
    expected = set()
    for row in review.truth_a:
        entity = entities.get(row["entity_arn"])
        if entity is None or entity["job_outcome"] != "completed":
            continue
        if not used_within(row["last_authenticated"], entity["collected_at"]):
            young = created[row["entity_arn"]] > entity["collected_at"] - WINDOW
            expected.add((row["entity_arn"], row["service_namespace"], "too_new" if young else "unused"))
    return expected


def generator_unused(review: Review, arn: str, collected_at: datetime) -> set[str]:
    """The services the generator granted a user or role and did not use within the window."""
    entity = model_entities(review.model_a)[arn]
    account = review.model_a.accounts[entity.account_id]
    activity = account.activity.get(arn, {})
    used = {ns for ns, use in activity.items() if used_within(use.use.time, collected_at)}
    return set(principal_grants(account, entity, review.sim.catalog)) - used


def expected_policy_actions(review: Review, entity: Entity, collected_at: datetime) -> list[str]:
    """The policy the model justifies: used tracked actions when they explain the service's last use."""
    account = review.model_a.accounts[entity.account_id]
    activity = account.activity.get(entity.arn, {})
    actions: set[str] = set()
    for namespace, tracked in principal_grants(account, entity, review.sim.catalog).items():
        service = activity.get(namespace)
        if service is None or not used_within(service.use.time, collected_at):
            continue
        latest = max((use.time for use in service.actions.values()), default=None)
        if not tracked or latest is None or latest < service.use.time:
            actions.add(f"{namespace}:*")
        else:
            actions.update(f"{namespace}:{name}" for name, use in service.actions.items()
                           if used_within(use.time, collected_at))
    return sorted(actions)


def statuses(frame: pd.DataFrame, *columns: str) -> set[tuple[Any, ...]]:
    """Rows of ``frame`` as tuples of ``columns``, nulls as None."""
    return {tuple(None if pd.isna(value) else value for value in row)
            for row in frame[list(columns)].itertuples(index=False)}


@pytest.fixture(scope="module")
def snap_a(review: Review) -> analysis.Snapshot:
    """Snapshot A, opened once."""
    return analysis.open_snapshot(review.root, DAY_A)


# -- loading -----------------------------------------------------------------------------------------
def test_snapshots_are_the_published_dates_ascending(review: Review) -> None:
    assert analysis.snapshots(review.root) == [DAY_A, DAY_B]


def test_load_reads_the_latest_snapshot_with_exact_types(review: Review) -> None:
    frame = analysis.load(review.root)
    assert set(frame["snapshot_date"]) == {DAY_B} and all(type(day) is date for day in frame["snapshot_date"])
    assert pd.api.types.is_string_dtype(frame["account_id"]) and set(frame["account_id"].str.len()) == {12}
    assert str(frame["last_authenticated"].dtype) == "datetime64[us, UTC]"
    assert str(frame["collected_at"].dtype) == "datetime64[us, UTC]"
    for column in ("entity_type", "service_namespace", "service_name", "last_authenticated_region"):
        assert isinstance(frame[column].dtype, pd.CategoricalDtype), column
    crawled = ok_accounts(review.root, DAY_B)
    expected = {(row["entity_arn"], row["service_namespace"]) for row in review.truth_b
                if row["account_id"] in crawled and row["entity_arn"] != review.deleted}
    added = {(review.added, "sqs")}
    assert set(zip(frame["entity_arn"], frame["service_namespace"].astype(str), strict=True)) == expected | added


def test_load_takes_a_date_or_text_accounts_and_columns(review: Review) -> None:
    by_text = analysis.load(review.root, "entities", snapshot=DAY_A.isoformat(), accounts=[review.clean],
                            columns=["entity_arn", "job_outcome", "create_date"])
    by_date = analysis.load(review.root, "entities", snapshot=DAY_A, accounts=review.clean,
                            columns=["entity_arn", "job_outcome", "create_date"])
    pd.testing.assert_frame_equal(by_text, by_date)
    assert list(by_text.columns) == ["entity_arn", "job_outcome", "create_date", "snapshot_date"]
    assert set(by_text["entity_arn"]) == {entity.arn for entity in review.model_a.accounts[review.clean].entities}
    assert isinstance(by_text["job_outcome"].dtype, pd.CategoricalDtype)


@pytest.mark.parametrize("call, message", [
    (lambda root: analysis.load(root, snapshot="2026-01-01"), "published: 2026-09-30, 2026-10-31"),
    (lambda root: analysis.load(root, snapshot="yesterday"), "not a date"),
    (lambda root: analysis.load(root, "nonsense"), "unknown table"),
    (lambda root: analysis.load(root, columns=["account_id", "colour"]), "no column colour"),
    (lambda root: analysis.load(root, accounts=[1234567000]), "account ids are text"),
    (lambda root: analysis.open_snapshot(root, date(2027, 1, 1)), "no published snapshot 2027-01-01"),
])
def test_questions_that_cannot_be_answered_are_clear_errors(review: Review, call: Any, message: str) -> None:
    with pytest.raises(analysis.AnalysisError, match=message):
        call(review.root)


def test_only_what_a_manifest_published_is_ever_read(review: Review, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(review.root, root)
    table = root / "service_last_accessed"
    stray = sorted((table / f"snapshot_date={DAY_A}").glob("*.parquet"))[0]
    shutil.copy(stray, table / f"snapshot_date={DAY_B}" / "part-00099.parquet")  # not in B's manifest
    unpublished = table / "snapshot_date=2030-01-01"
    unpublished.mkdir()
    shutil.copy(stray, unpublished / "part-00000.parquet")
    (root / "runs" / "unfinished.json").write_text(json.dumps(
        {"run_id": "unfinished", "snapshot_date": "2030-01-01", "status": "running"}), encoding="utf-8")
    assert analysis.snapshots(root) == [DAY_A, DAY_B]
    assert len(analysis.load(root)) == len(analysis.load(review.root))
    with pytest.raises(analysis.AnalysisError, match="no published snapshot 2030-01-01"):
        analysis.load(root, snapshot="2030-01-01")
    for part in (table / f"snapshot_date={DAY_B}").glob("part-0000*.parquet"):
        shutil.copy(stray, part)  # a later run replaced the partition and crashed before its manifest
    with pytest.raises(analysis.AnalysisError, match="no longer holds the rows"):
        analysis.load(root)


# -- unused services -------------------------------------------------------------------------------------
def test_unused_services_equal_the_ground_truth(review: Review, snap_a: analysis.Snapshot) -> None:
    unused = analysis.unused_services(snap_a, DAYS)
    judged = unused[unused["status"] != "unknown"]
    expected = expected_unused(review, entity_rows(review.root, DAY_A))
    assert statuses(judged, "entity_arn", "service_namespace", "status") == expected
    assert {"USER", "ROLE", "GROUP", "POLICY"} <= set(judged["entity_type"])
    assert list(unused.columns[:11]) == ["account_id", "account_name", "entity_type", "entity_arn", "entity_name",
                                         "service_namespace", "service_name", "last_authenticated", "collected_at",
                                         "days_since_use", "status"]


def test_unused_services_of_each_principal_are_those_the_generator_never_used(
        review: Review, snap_a: analysis.Snapshot) -> None:
    unused = analysis.unused_services(snap_a, DAYS)
    principals = [row for row in entity_rows(review.root, DAY_A).values()
                  if row["entity_type"] in ("USER", "ROLE") and row["job_outcome"] == "completed"]
    assert len(principals) > 20
    for row in principals:
        reported = set(unused.loc[unused["entity_arn"] == row["entity_arn"], "service_namespace"].astype(str))
        assert reported == generator_unused(review, row["entity_arn"], row["collected_at"]), row["entity_arn"]


def test_days_since_use_is_measured_to_collected_at(snap_a: analysis.Snapshot) -> None:
    unused = analysis.unused_services(snap_a, DAYS)
    used_long_ago = unused[unused["last_authenticated"].notna()]
    assert not used_long_ago.empty and (used_long_ago["days_since_use"] > DAYS).all()
    expected = (used_long_ago["collected_at"] - used_long_ago["last_authenticated"]).dt.total_seconds() / 86400
    assert (used_long_ago["days_since_use"] - expected).abs().max() < 1e-9
    assert unused.loc[unused["last_authenticated"].isna(), "days_since_use"].isna().all()


def shifted(snap: analysis.Snapshot, by: timedelta) -> analysis.Snapshot:
    """The snapshot as if crawled ``by`` earlier: every timestamp moved back."""
    def shift(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(**{column: frame[column] - by for column in frame.columns
                               if isinstance(frame[column].dtype, pd.DatetimeTZDtype)})
    return replace(snap, services=shift(snap.services), actions=shift(snap.actions), entities=shift(snap.entities))


def test_the_window_ends_at_collected_at_not_today(snap_a: analysis.Snapshot) -> None:
    earlier = shifted(snap_a, timedelta(days=150))
    for question, columns in ((analysis.unused_services, ("entity_arn", "service_namespace", "status")),
                              (analysis.stale_entities, ("entity_arn", "status"))):
        assert statuses(question(earlier, DAYS), *columns) == statuses(question(snap_a, DAYS), *columns)
    admin = next(arn for arn in snap_a.services["entity_arn"] if arn.endswith("/OrganizationAccountAccessRole"))
    now, then = analysis.least_privilege(snap_a, admin, DAYS), analysis.least_privilege(earlier, admin, DAYS)
    assert (now.policy, now.actions_used) == (then.policy, then.actions_used) and now.services_used


def test_young_entities_are_too_new_never_unused(review: Review, snap_a: analysis.Snapshot) -> None:
    unused = analysis.unused_services(snap_a, DAYS)
    entities = entity_rows(review.root, DAY_A)
    created = {arn: entity.create_date for arn, entity in model_entities(review.model_a).items()}
    young = {arn for arn, row in entities.items()
             if row["job_outcome"] == "completed" and created[arn] > row["collected_at"] - WINDOW}
    too_new = unused[unused["status"] == "too_new"]
    assert young and set(too_new["entity_arn"]) <= young
    assert not young & set(unused.loc[unused["status"] == "unused", "entity_arn"])


def test_entities_without_data_are_unknown_never_unused(review: Review, snap_a: analysis.Snapshot) -> None:
    entities = entity_rows(review.root, DAY_A)
    without_data = {arn for arn, row in entities.items() if row["job_outcome"] in NO_DATA}
    outcomes = {row["job_outcome"] for row in entities.values() if row["entity_arn"] in without_data}
    assert outcomes == {"failed", "timed_out"}, "the faults should leave both kinds of entity without data"
    unused = analysis.unused_services(snap_a, DAYS)
    unknown = unused[unused["status"] == "unknown"]
    assert sorted(unknown["entity_arn"]) == sorted(without_data)
    assert unknown["service_namespace"].isna().all() and unknown["last_authenticated"].isna().all()
    assert not without_data & set(unused.loc[unused["status"] != "unknown", "entity_arn"])
    denied = next(account_id for account_id, model in review.model_a.accounts.items() if not model.has_crawler_role)
    assert denied not in set(unused["account_id"])


# -- stale entities, accounts, gaps ------------------------------------------------------------------------
def expected_stale(review: Review, include_service_linked: bool) -> set[tuple[str, str]]:
    """(user or role, status) of principals the generator gave no use within the window, and unknown ones."""
    entities, models = entity_rows(review.root, DAY_A), model_entities(review.model_a)
    expected = set()
    for arn, row in entities.items():
        entity = models[arn]
        if entity.type not in ("USER", "ROLE") or (entity.is_service_linked and not include_service_linked):
            continue
        if row["job_outcome"] in NO_DATA:
            expected.add((arn, "unknown"))
            continue
        activity = review.model_a.accounts[entity.account_id].activity.get(arn, {})
        assumed_by_the_crawl = entity.name == review.model_a.crawler_role_name  # RoleLastUsed: now
        if not assumed_by_the_crawl and not any(used_within(use.use.time, row["collected_at"])
                                                for use in activity.values()):
            young = entity.create_date > row["collected_at"] - WINDOW
            expected.add((arn, "too_new" if young else "stale"))
    return expected


@pytest.mark.parametrize("include_service_linked", [False, True])
def test_stale_entities_are_the_principals_the_generator_gave_no_use(
        review: Review, snap_a: analysis.Snapshot, include_service_linked: bool) -> None:
    stale = analysis.stale_entities(snap_a, DAYS, include_service_linked=include_service_linked)
    assert statuses(stale, "entity_arn", "status") == expected_stale(review, include_service_linked)
    assert {"stale", "unknown"} <= set(stale["status"])
    if not include_service_linked:
        assert not stale["entity_arn"].str.contains("/aws-service-role/").any()


def test_a_new_user_without_use_is_too_new_to_be_stale(review: Review) -> None:
    stale = analysis.stale_entities(analysis.open_snapshot(review.root, DAY_B), DAYS)
    assert ("analysis-new-user", "too_new") in statuses(stale, "entity_name", "status")
    assert not (stale["status"] == "unknown").any(), "no faults during snapshot B"


def test_account_summary_counts_equal_the_ground_truth(review: Review, snap_a: analysis.Snapshot) -> None:
    summary = analysis.account_summary(snap_a, DAYS).set_index("account_id")
    entities = entity_rows(review.root, DAY_A)
    unused = expected_unused(review, entities)
    stale = expected_stale(review, include_service_linked=False)
    for account_id in crawlable(review.sim):
        arns = {arn for arn, row in entities.items() if row["account_id"] == account_id}
        granted = [row for row in review.truth_a
                   if row["entity_arn"] in arns and entities[row["entity_arn"]]["job_outcome"] == "completed"]
        not_used = [item for item in unused if item[0] in arns]
        row = summary.loc[account_id]
        assert (row["outcome"], row["entities"], row["services_granted"]) == ("ok", len(arns), len(granted))
        assert row["entities_unknown"] == sum(entities[arn]["job_outcome"] in NO_DATA for arn in arns)
        assert row["services_used"] == len(granted) - len(not_used)
        assert row["services_unused"] == sum(item[2] == "unused" for item in not_used)
        assert math.isclose(row["share_unused"], row["services_unused"] / len(granted))
        assert row["stale_entities"] == sum(status == "stale" for arn, status in stale if arn in arns)
    denied = summary.loc[[account_id for account_id in summary.index if account_id not in crawlable(review.sim)]]
    assert list(denied["outcome"]) == ["failed"] and list(denied["entities"]) == [0]
    assert denied["share_unused"].isna().all()


def test_widest_gaps_rank_entities_by_services_granted_but_unused(review: Review, snap_a: analysis.Snapshot) -> None:
    gaps = analysis.widest_gaps(snap_a, DAYS, top=5)
    unused = expected_unused(review, entity_rows(review.root, DAY_A))
    per_entity = pd.Series([arn for arn, _, _ in unused]).value_counts()
    assert len(gaps) == 5 and list(gaps["unused"]) == sorted(per_entity.nlargest(5), reverse=True)
    for row in gaps.itertuples():
        assert row.unused == per_entity[row.entity_arn] == row.services_granted - row.services_used


# -- two snapshots --------------------------------------------------------------------------------------------
def expected_changes(review: Review) -> set[tuple[str, str, str, str | None]]:
    """What changed from A to B by the ground truth of each, for entities judged in both."""
    before, after = entity_rows(review.root, DAY_A), entity_rows(review.root, DAY_B)
    accounts = ok_accounts(review.root, DAY_A) & ok_accounts(review.root, DAY_B)
    both = {arn for arn in before.keys() & after.keys() if before[arn]["account_id"] in accounts
            and before[arn]["job_outcome"] == after[arn]["job_outcome"] == "completed"}
    flags = [{(row["account_id"], row["entity_arn"], row["service_namespace"]):
              used_within(row["last_authenticated"], side[row["entity_arn"]]["collected_at"])
              for row in truth if row["entity_arn"] in both}
             for truth, side in ((review.truth_a, before), (review.truth_b, after))]
    changes: set[tuple[str, str, str, str | None]] = {
        ("entity_removed", review.clean, review.deleted, None), ("entity_added", review.clean, review.added, None)}
    changes |= {("service_removed", *key) for key in flags[0].keys() - flags[1].keys()}
    changes |= {("service_added", *key) for key in flags[1].keys() - flags[0].keys()}
    for key in flags[0].keys() & flags[1].keys():
        if flags[0][key] != flags[1][key]:
            changes.add(("became_unused" if flags[0][key] else "used_again", *key))
    return changes


def test_compare_reports_exactly_what_changed_between_snapshots(review: Review) -> None:
    changes = analysis.compare(review.root, DAY_A, DAY_B, DAYS)
    found = statuses(changes, "change", "account_id", "entity_arn", "service_namespace")
    assert found == expected_changes(review)
    clean = review.clean
    assert {("became_unused", clean, review.activity_role, review.made_old),
            ("used_again", clean, review.activity_role, review.made_recent),
            ("service_added", clean, review.regranted, review.added_namespace)} <= found
    assert any(change == "service_removed" and arn == review.regranted for change, _, arn, _ in found)
    unjudged = {arn for arn, row in entity_rows(review.root, DAY_A).items() if row["job_outcome"] in NO_DATA}
    assert unjudged and not unjudged & set(changes["entity_arn"])
    assert list(changes["change"].cat.categories) == list(analysis.CHANGES)


# -- least privilege --------------------------------------------------------------------------------------------
def narrowable_principal(review: Review) -> tuple[Entity, datetime]:
    """A completed user or role whose policy mixes narrowed actions and kept services."""
    for arn, row in sorted(entity_rows(review.root, DAY_A).items()):
        entity = model_entities(review.model_a)[arn]
        if entity.type in ("USER", "ROLE") and row["job_outcome"] == "completed":
            actions = expected_policy_actions(review, entity, row["collected_at"])
            if any(action.endswith(":*") for action in actions) and not all(a.endswith(":*") for a in actions):
                return entity, row["collected_at"]
    raise AssertionError("seed has no principal with both narrowed and kept services")


def test_least_privilege_keeps_exactly_the_actions_used(review: Review, snap_a: analysis.Snapshot) -> None:
    entity, collected_at = narrowable_principal(review)
    answer = analysis.least_privilege(snap_a, entity.arn, DAYS)
    document = json.loads(json.dumps(answer.policy))
    assert document["Version"] == "2012-10-17" and len(document["Statement"]) == 1
    statement = document["Statement"][0]
    assert (statement["Effect"], statement["Resource"]) == ("Allow", "*")
    assert statement["Action"] == expected_policy_actions(review, entity, collected_at)
    assert answer.services_used == sorted({action.split(":")[0] for action in statement["Action"]})
    assert set(answer.actions_used) >= {action for action in statement["Action"] if not action.endswith(":*")}
    assert any("narrowed to the tracked actions" in reason for reason in answer.not_judged)


def test_least_privilege_names_what_access_advisor_cannot_judge(snap_a: analysis.Snapshot) -> None:
    admin = snap_a.entities[(snap_a.entities["entity_name"] == "OrganizationAccountAccessRole")
                            & (snap_a.entities["job_outcome"] == "completed")]["entity_arn"].iloc[0]
    answer = analysis.least_privilege(snap_a, admin, DAYS)
    assert any("iam:PassRole" in reason for reason in answer.not_judged)
    assert any("Resource" in reason for reason in answer.not_judged)


def test_least_privilege_refuses_entities_it_cannot_judge(review: Review, snap_a: analysis.Snapshot) -> None:
    with pytest.raises(analysis.AnalysisError, match="no entity"):
        analysis.least_privilege(snap_a, "arn:aws:iam::000000000000:role/nobody")
    failed = next(arn for arn, row in entity_rows(review.root, DAY_A).items() if row["job_outcome"] == "failed")
    with pytest.raises(analysis.AnalysisError, match="no access data"):
        analysis.least_privilege(snap_a, failed)


@pytest.mark.parametrize("days", [0, -1, 401, "90"])
def test_windows_beyond_the_tracking_period_are_refused(snap_a: analysis.Snapshot, days: Any) -> None:
    with pytest.raises(analysis.AnalysisError, match="tracking period"):
        analysis.unused_services(snap_a, days)


# -- SQL -----------------------------------------------------------------------------------------------------------
def run_sql(root: Path, name: str, day: date | None) -> pd.DataFrame:
    """One of the shipped example queries, run by DuckDB over the dataset."""
    connection = duckdb.connect()
    connection.execute(f"SET VARIABLE root = '{root}'")
    connection.execute(f"SET VARIABLE days = {DAYS}")
    if day is not None:
        connection.execute(f"SET VARIABLE snapshot_date = DATE '{day.isoformat()}'")
    connection.execute(analysis.example_setup())
    return connection.sql(analysis.example_queries()[name]).df()


def test_the_example_queries_are_shipped() -> None:
    queries = analysis.example_queries()
    assert set(queries) == {"unused_services", "stale_entities", "account_summary"}
    assert all("SET VARIABLE root" in text for text in queries.values())


@pytest.mark.parametrize("day", [DAY_A, None])
def test_example_sql_gives_the_pandas_answers(review: Review, day: date | None) -> None:
    snap = analysis.open_snapshot(review.root, day)
    keys = {"unused_services": ("entity_arn", "service_namespace", "status", "last_authenticated"),
            "stale_entities": ("entity_arn", "status", "services_granted", "last_used", "role_last_used"),
            "account_summary": ("account_id", "outcome", "entities", "entities_unknown", "services_granted",
                                "services_used", "stale_entities", "services_unused", "services_too_new")}
    answers = {"unused_services": analysis.unused_services(snap, DAYS),
               "stale_entities": analysis.stale_entities(snap, DAYS),
               "account_summary": analysis.account_summary(snap, DAYS)}
    for name, columns in keys.items():
        sql = run_sql(review.root, name, day)
        for column in columns:
            if isinstance(sql[column].dtype, pd.DatetimeTZDtype):
                sql[column] = sql[column].dt.tz_convert("UTC")
        assert statuses(sql, *columns) == statuses(answers[name], *columns), name
    sql_summary = run_sql(review.root, "account_summary", day).set_index("account_id")["share_unused"]
    pandas_summary = answers["account_summary"].set_index("account_id")["share_unused"]
    pd.testing.assert_series_equal(sql_summary.astype(float), pandas_summary, check_names=False, check_index_type=False)
    sql_unused = run_sql(review.root, "unused_services", day)
    assert sorted(sql_unused["days_since_use"].dropna()) == pytest.approx(
        sorted(answers["unused_services"]["days_since_use"].dropna()))


def test_every_table_can_be_loaded(review: Review) -> None:
    for table in schema.TABLES:
        frame = analysis.load(review.root, table, snapshot=DAY_A)
        assert list(frame.columns) == [*schema.TABLES[table].names, "snapshot_date"]


# -- SCP reviews (the Organizations view) -----------------------------------------------------------
def test_scp_review_judges_every_service_of_every_report_to_its_completion(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=4, entities=8, seed=31))
    config = crawl_config(tmp_path, organizations_access=OrganizationsAccessSettings(enabled=True, per_policy=True))
    run_crawl(config)
    raw = read_rows(tmp_path, "organizations_access")

    review = analysis.scp_review(tmp_path, days=30)

    expected = {(row["target_path"], row["policy_id"], row["service_namespace"]):
                "used" if row["last_authenticated_at"] is not None
                and row["last_authenticated_at"] >= row["collected_at"] - timedelta(days=30) else "unused"
                for row in raw}
    assert {(row.target_path, None if pd.isna(row.policy_id) else row.policy_id, row.service_namespace): row.status
            for row in review.itertuples()} == expected
    assert {"used", "unused"} <= set(expected.values()) and review["policy_id"].notna().any()
    never = review[review["last_authenticated_at"].isna()]
    assert (never["status"] == "unused").all() and never["days_since_use"].isna().all()
    assert set(review["target_path"]) >= {f"{sim.model.id}/{sim.model.root.id}"}

    summary = analysis.scp_summary(review)
    counted: dict[tuple[str, Any], dict[str, int]] = {}
    for (path, policy, _), status in expected.items():
        counted.setdefault((path, policy), {"used": 0, "unused": 0})[status] += 1
    assert {(row.target_path, None if pd.isna(row.policy_id) else row.policy_id):
            {"used": row.services_used, "unused": row.services_unused} for row in summary.itertuples()} == counted
    assert (summary["services_allowed"] == summary["services_used"] + summary["services_unused"]).all()
    assert list(summary["services_unused"]) == sorted(summary["services_unused"], reverse=True)


def test_scp_review_lists_failed_reports_as_unknown_and_needs_the_view(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=2, entities=8, seed=32), FaultPlan())
    run_crawl(crawl_config(tmp_path / "without"))
    with pytest.raises(analysis.AnalysisError, match="no Organizations view"):
        analysis.scp_review(tmp_path / "without")
    sim.faults.account(sim.management_account_id).deny_assume_role = True
    run_crawl(crawl_config(tmp_path / "denied", organizations_access=OrganizationsAccessSettings(enabled=True)))

    review = analysis.scp_review(tmp_path / "denied")

    assert list(review["status"]) == ["unknown"] and list(review["error_code"]) == ["AccessDenied"]
