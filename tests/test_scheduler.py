"""End to end: crawls of seeded simulated organizations equal the simulator's ground truth."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from crawler.config.settings import (
    AdvisorSettings,
    AssumeRoleSettings,
    ConcurrencySettings,
    OrganizationSettings,
    StaticAccount,
)
from crawler.crawl.scheduler import run_crawl
from crawler.sim import FaultPlan, OrgSpec
from crawler.store import schema
from tests.helpers import crawl_config, crawlable, project, read_rows, stop_after_first_account

SERVICE_COLUMNS = ("account_id", "entity_type", "entity_arn", "entity_name", "entity_path", "service_namespace",
                   "service_name", "last_authenticated", "last_authenticated_entity", "last_authenticated_region",
                   "total_authenticated_entities")
ACTION_COLUMNS = ("account_id", "entity_type", "entity_arn", "entity_name", "entity_path", "service_namespace",
                  "action_name", "last_accessed_time", "last_accessed_entity", "last_accessed_region")
SPEC = OrgSpec(accounts=4, entities=14, seed=11)


def truth(rows: list[dict], accounts: set[str]) -> list[dict]:
    """Ground-truth rows of ``accounts``."""
    return [row for row in rows if row["account_id"] in accounts]


def test_service_level_dataset_equals_ground_truth(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    summary = run_crawl(crawl_config(tmp_path))
    rows = read_rows(tmp_path, "service_last_accessed")
    assert project(rows, SERVICE_COLUMNS) == project(truth(sim.service_rows(), crawlable(sim)), SERVICE_COLUMNS)
    assert summary.complete
    assert any(row["last_authenticated"] is None for row in rows), "never-used services must be null, not dropped"
    assert max(len([r for r in rows if r["entity_arn"] == arn]) for arn in {r["entity_arn"] for r in rows}) > 300, \
        "the admin role's 370 services span many pages"


def test_action_level_dataset_equals_ground_truth(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    run_crawl(crawl_config(tmp_path, advisor=AdvisorSettings(granularity="ACTION_LEVEL", poll_interval_seconds=0.05)))
    rows = read_rows(tmp_path, "action_last_accessed")
    assert project(rows, ACTION_COLUMNS) == project(truth(sim.action_rows(), crawlable(sim)), ACTION_COLUMNS)
    services = read_rows(tmp_path, "service_last_accessed")
    assert project(services, SERVICE_COLUMNS) == project(truth(sim.service_rows(), crawlable(sim)), SERVICE_COLUMNS)


def test_entities_and_accounts_tables_record_every_entity_and_account(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    summary = run_crawl(crawl_config(tmp_path))
    entities = read_rows(tmp_path, "entities")
    expected = {entity.arn for account_id in crawlable(sim) for entity in sim.model.accounts[account_id].entities}
    assert {row["entity_arn"] for row in entities} == expected
    assert {row["job_outcome"] for row in entities} == {"completed"}
    accounts = {row["account_id"]: row for row in read_rows(tmp_path, "accounts")}
    assert set(accounts) == crawlable(sim)
    assert all(row["outcome"] == "ok" and row["entity_count"] == row["entities_completed"] for row in accounts.values())
    management = accounts[sim.management_account_id]
    assert management["ou_path"] == "Root" and management["organization_id"] == sim.model.id
    assert read_rows(tmp_path, "errors") == []
    assert summary.manifest["accounts"]["ok"] == len(crawlable(sim))


def test_account_without_the_role_is_recorded_and_the_rest_completes(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(replace(SPEC, accounts_without_crawler_role=1))
    summary = run_crawl(crawl_config(tmp_path))
    missing = next(account_id for account_id, model in sim.model.accounts.items() if not model.has_crawler_role)
    accounts = {row["account_id"]: row for row in read_rows(tmp_path, "accounts")}
    assert accounts[missing]["outcome"] == "failed" and accounts[missing]["error_code"] == "AccessDenied"
    errors = read_rows(tmp_path, "errors")
    assert [(row["account_id"], row["stage"], row["error_code"]) for row in errors] == \
        [(missing, "assume_role", "AccessDenied")]
    rows = read_rows(tmp_path, "service_last_accessed")
    assert project(rows, SERVICE_COLUMNS) == project(truth(sim.service_rows(), crawlable(sim)), SERVICE_COLUMNS)
    assert not summary.complete and summary.manifest["accounts"]["failed_ids"] == [missing]


def test_suspended_account_selected_by_state_is_recorded_as_failed(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    suspended = next(i for i, m in sim.model.accounts.items() if m.account.state == "SUSPENDED")
    config = crawl_config(tmp_path, organization=OrganizationSettings(states=("ACTIVE", "SUSPENDED")))
    run_crawl(config)
    accounts = {row["account_id"]: row for row in read_rows(tmp_path, "accounts")}
    assert accounts[suspended]["state"] == "SUSPENDED" and accounts[suspended]["outcome"] == "failed"


def test_static_account_list_needs_no_organizations_access(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    member = sorted(crawlable(sim) - {sim.management_account_id})[0]
    static = OrganizationSettings(source="static", accounts=(StaticAccount(member, "from-config"),))
    run_crawl(crawl_config(tmp_path, organization=static))
    accounts = read_rows(tmp_path, "accounts")
    assert [(row["account_id"], row["account_name"], row["organization_id"]) for row in accounts] == \
        [(member, "from-config", None)]
    assert not [operation for (_, operation) in sim.state.calls if operation.startswith("List")
                and operation != "ListPoliciesGrantingServiceAccess"]
    rows = read_rows(tmp_path, "service_last_accessed")
    assert project(rows, SERVICE_COLUMNS) == project(truth(sim.service_rows(), {member}), SERVICE_COLUMNS)


def test_external_id_and_hub_role_chaining(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(replace(SPEC, external_id="quarterly-review-7"))
    hub = sim.role_arn(sim.management_account_id, sim.model.hub_role_name)
    without = run_crawl(crawl_config(tmp_path / "without"))
    assert without.manifest["accounts"]["ok"] == 0
    chained = AssumeRoleSettings(external_id="quarterly-review-7", hub_role_arn=hub)
    summary = run_crawl(crawl_config(tmp_path / "with", assume_role=chained))
    assert summary.complete and summary.manifest["accounts"]["ok"] == len(crawlable(sim))


def test_drilldowns_fill_their_tables(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    advisor = AdvisorSettings(entity_details=True, policies_granting_access=True, poll_interval_seconds=0.05)
    summary = run_crawl(crawl_config(tmp_path, advisor=advisor))
    assert summary.complete
    accessors = read_rows(tmp_path, "entity_service_access")
    assert accessors and {row["entity_type"] for row in accessors} <= {"GROUP", "POLICY"}
    used = {(row["entity_arn"], row["service_namespace"]) for row in read_rows(tmp_path, "service_last_accessed")
            if row["last_authenticated"] is not None and row["entity_type"] in ("GROUP", "POLICY")}
    assert {(row["entity_arn"], row["service_namespace"]) for row in accessors} == used
    policies = read_rows(tmp_path, "policies_granting_access")
    granted = {(row["entity_arn"], row["service_namespace"]) for row in read_rows(tmp_path, "service_last_accessed")
               if row["entity_type"] != "POLICY"}
    assert {(row["entity_arn"], row["service_namespace"]) for row in policies} == granted
    assert sim is not None


def test_schema_is_the_same_in_every_run_and_for_empty_tables(crawl_org, tmp_path: Path) -> None:
    crawl_org(SPEC)
    run_crawl(crawl_config(tmp_path))
    for table, expected in schema.TABLES.items():
        files = sorted((tmp_path / table).glob("snapshot_date=*/*.parquet"))
        assert files, table
        for path in files:
            actual = pq.read_schema(path)
            assert actual.remove_metadata().equals(expected.remove_metadata()), (table, actual)


def test_rerun_replaces_the_snapshot_and_readers_agree(crawl_org, tmp_path: Path) -> None:
    crawl_org(SPEC)
    first = run_crawl(crawl_config(tmp_path))
    second = run_crawl(crawl_config(tmp_path))
    rows = read_rows(tmp_path, "service_last_accessed")
    assert len(rows) == first.rows["service_last_accessed"] == second.rows["service_last_accessed"]
    assert {row["run_id"] for row in rows} == {second.run_id}
    frame = pd.read_parquet(tmp_path / "service_last_accessed")
    assert len(frame) == len(rows) and str(frame["last_authenticated"].dtype) == "datetime64[us, UTC]"
    files = f"{tmp_path}/service_last_accessed/**/*.parquet"
    count, accounts = duckdb.sql(f"select count(*), count(distinct account_id) "
                                 f"from read_parquet('{files}', hive_partitioning=true)").fetchall()[0]
    assert count == len(rows) and accounts == len({row["account_id"] for row in rows})
    assert all(len(row["account_id"]) == 12 for row in rows)


@pytest.mark.parametrize("faults, outcome", [
    (dict(job_failure_rate=1.0), "failed"),
    (dict(stuck_job_rate=1.0), "timed_out"),
    (dict(deleted_entity_rate=1.0), "deleted"),
])
def test_job_faults_are_recorded_per_entity(crawl_org, tmp_path: Path, faults: dict, outcome: str) -> None:
    sim = crawl_org(SPEC)
    victim = sorted(crawlable(sim) - {sim.management_account_id})[0]
    for name, value in faults.items():
        setattr(sim.faults.account(victim), name, value)
    advisor = AdvisorSettings(job_retries=1, job_timeout_seconds=1.0, poll_interval_seconds=0.05)
    summary = run_crawl(crawl_config(tmp_path, advisor=advisor))
    entities = read_rows(tmp_path, "entities")
    victims = [row for row in entities if row["account_id"] == victim]
    crawler_role = sim.role_arn(victim)
    assert {row["job_outcome"] for row in victims if row["entity_arn"] != crawler_role} == {outcome}
    others = [row for row in entities if row["account_id"] != victim]
    assert {row["job_outcome"] for row in others} == {"completed"}
    errors = [row for row in read_rows(tmp_path, "errors") if row["account_id"] == victim]
    if outcome == "deleted":
        assert errors == [] and summary.complete
        assert not [r for r in read_rows(tmp_path, "service_last_accessed")
                    if r["account_id"] == victim and r["entity_arn"] != crawler_role]
    else:
        failed = [row for row in victims if row["job_outcome"] == outcome]
        assert len(errors) == len(failed) and not summary.complete
        expected_code, attempts = ("ServiceFailure", 2) if outcome == "failed" else ("JobTimedOut", 1)
        assert {(row["error_code"], row["attempts"]) for row in errors} == {(expected_code, attempts)}
    rows = read_rows(tmp_path, "service_last_accessed")
    healthy = crawlable(sim) - {victim}
    assert project(truth(rows, healthy), SERVICE_COLUMNS) == \
        project(truth(sim.service_rows(), healthy), SERVICE_COLUMNS)


@pytest.mark.parametrize("faults", [
    dict(iam_rate=15.0, iam_burst=5.0),
    dict(error_rate=0.1),
    dict(session_seconds=2),
    dict(drop_rate=0.1),
], ids=["throttled", "server-errors", "short-sessions", "dropped-connections"])
def test_no_entity_is_lost_to_transient_faults(crawl_org, tmp_path: Path, faults: dict) -> None:
    sim = crawl_org(OrgSpec(accounts=2, entities=12, seed=4), FaultPlan.uniform(job_seconds=0.3, **faults))
    summary = run_crawl(crawl_config(tmp_path))
    rows = read_rows(tmp_path, "service_last_accessed")
    assert project(rows, SERVICE_COLUMNS) == project(truth(sim.service_rows(), crawlable(sim)), SERVICE_COLUMNS)
    assert summary.complete, read_rows(tmp_path, "errors")
    if "session_seconds" in faults:
        assert max(row["job_attempts"] for row in read_rows(tmp_path, "entities")) > 1, "jobs regenerated"


def test_a_stopped_crawl_publishes_nothing_and_keeps_finished_accounts_staged(crawl_org, tmp_path: Path) -> None:
    import threading

    from crawler.config.settings import ConcurrencySettings
    from crawler.errors import Interrupted
    from crawler.progress import Progress
    from crawler.store.dataset import Dataset, read_manifest

    sim = crawl_org(SPEC, FaultPlan.uniform(job_seconds=0.2))
    progress, stop = Progress(), threading.Event()
    stop_after_first_account(progress, stop)
    config = crawl_config(tmp_path, concurrency=ConcurrencySettings(accounts=1))
    with pytest.raises(Interrupted) as raised:
        run_crawl(config, progress=progress, stop=stop, run_id="stopped-run")
    assert raised.value.exit_code == 130
    manifest = read_manifest(str(tmp_path), "stopped-run")
    assert manifest["status"] == "interrupted"
    assert not (tmp_path / "service_last_accessed").exists()
    staged = Dataset(str(tmp_path), manifest_date(manifest), "stopped-run", config.output).staged_units()
    assert 1 <= len(staged) < len(crawlable(sim))


def manifest_date(manifest: dict):  # noqa: ANN201 - a date
    """The snapshot date of a manifest."""
    from datetime import date

    return date.fromisoformat(manifest["snapshot_date"])


def test_filters_choose_the_accounts_crawled(crawl_org, tmp_path: Path) -> None:
    from crawler.config.settings import AccountFilter, TagFilter

    sim = crawl_org(OrgSpec(accounts=8, entities=8, seed=11))
    accounts = {i: m.account for i, m in sim.model.accounts.items() if m.account.state == "ACTIVE"}
    in_workloads = {i for i, a in accounts.items() if sim.model.ou_path_names(a.parent_id)[:2] == ["Root", "Workloads"]}
    assert in_workloads and in_workloads != set(accounts), "the seed must give both kinds"
    excluded = sorted(in_workloads)[0]
    team = accounts[sorted(in_workloads)[-1]].tags["team"]
    settings = OrganizationSettings(include=AccountFilter(ous=("Root/Workloads",)),
                                    exclude=AccountFilter(account_ids=(excluded,)))
    run_crawl(crawl_config(tmp_path / "ou", organization=settings))
    assert {row["account_id"] for row in read_rows(tmp_path / "ou", "accounts")} == in_workloads - {excluded}
    by_tag = OrganizationSettings(include=AccountFilter(tags=(TagFilter("team", (team,)),)))
    run_crawl(crawl_config(tmp_path / "tag", organization=by_tag))
    assert {row["account_id"] for row in read_rows(tmp_path / "tag", "accounts")} == \
        {i for i, a in accounts.items() if a.tags.get("team") == team}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def test_concurrency_limits_are_respected_and_used(crawl_org, tmp_path: Path) -> None:
    """Accounts at once, jobs open per account and IAM calls in flight per account, as the
    simulator saw them, never exceed the settings, and reach them (the limits are not idle)."""
    sim = crawl_org(OrgSpec(accounts=6, entities=12, seed=5), FaultPlan.uniform(latency_ms=20, job_seconds=0.2))
    # A rate that never holds a call back: the limits below are then the only thing that does.
    limits = ConcurrencySettings(accounts=2, requests_per_second_per_account=1000.0, jobs_in_flight_per_account=3,
                                 parallel_calls_per_account=2, max_attempts=4)
    summary = run_crawl(crawl_config(tmp_path, concurrency=limits))

    crawled = crawlable(sim)
    assert summary.complete and summary.manifest["entities"] == {"completed": len(read_rows(tmp_path, "entities"))}
    state = sim.state
    assert set(state.iam_span) == crawled
    assert most_at_once(list(state.iam_span.values())) == limits.accounts
    assert max(state.peak_open_jobs[account] for account in crawled) == limits.jobs_in_flight_per_account
    assert max(state.peak_iam_in_flight[account] for account in crawled) == limits.parallel_calls_per_account
    assert all(state.open_jobs[account] == 0 for account in crawled)
