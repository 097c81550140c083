"""Faults a crawl of a real organization meets: each one survived, recorded, and nothing else lost."""
from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from crawler.config.settings import ConcurrencySettings, LoggingSettings, OrganizationsAccessSettings, OutputSettings
from crawler.crawl.scheduler import run_crawl
from crawler.errors import Interrupted
from crawler.sim import FaultPlan, OrgSpec, RequestFaults
from crawler.store.dataset import DatasetError, read_manifest
from tests.helpers import crawl_config, crawlable, project, read_rows

SPEC = OrgSpec(accounts=3, entities=8, seed=17)
COLUMNS = ("account_id", "entity_arn", "service_namespace", "last_authenticated", "last_authenticated_entity")
ORGANIZATIONS_CALLS = ("DescribeOrganization", "ListAccounts", "ListRoots", "ListOrganizationalUnitsForParent",
                       "ListTagsForResource")


def assert_equals_truth(sim, root: Path, accounts: set[str]) -> None:  # noqa: ANN001
    """The published service rows of ``accounts`` are exactly the ground truth."""
    rows = [row for row in read_rows(root, "service_last_accessed") if row["account_id"] in accounts]
    truth = [row for row in sim.service_rows() if row["account_id"] in accounts]
    assert project(rows, COLUMNS) == project(truth, COLUMNS)


@pytest.mark.slow
def test_a_30_second_throttling_storm_costs_time_not_entities(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(replace(SPEC, accounts=2), FaultPlan.uniform(throttle_storm_seconds=30))
    summary = run_crawl(crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=3)))
    assert summary.complete, read_rows(tmp_path, "errors")
    assert sum(sim.state.throttled.values()) > 0
    assert_equals_truth(sim, tmp_path, crawlable(sim))


def test_organizations_throttling_during_discovery_is_retried(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    management = sim.faults.account(sim.management_account_id)
    for operation in ORGANIZATIONS_CALLS:
        management.operations[operation] = RequestFaults(throttle_rate=0.25)
    summary = run_crawl(crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=10)))
    assert summary.complete and sim.state.throttled[sim.management_account_id] > 0
    assert {row["account_id"] for row in read_rows(tmp_path, "accounts")} == crawlable(sim)


@pytest.mark.parametrize("answer", ["AccessDenied", "InvalidInput"])
def test_jobs_of_an_expired_session_are_generated_again_whatever_iam_answers(crawl_org, tmp_path: Path,
                                                                             answer: str) -> None:
    """Sessions of 3 s expire several times during the crawl. IAM may answer a read of a job made by
    the previous session with another error than NoSuchEntity: the job is generated again all the same."""
    sim = crawl_org(SPEC, FaultPlan.uniform(session_seconds=3, job_seconds=1.5, other_session_job_error=answer))

    summary = run_crawl(crawl_config(tmp_path))

    assert summary.complete, read_rows(tmp_path, "errors")
    assert_equals_truth(sim, tmp_path, crawlable(sim))
    sessions = Counter(session.account_id for session in sim.state.sessions.values())
    assert all(sessions[account_id] >= 2 for account_id in crawlable(sim)), "every account's session was renewed"
    assert any(event.kind == "other_session_job" for event in sim.state.events), "old jobs were read"
    assert max(row["job_attempts"] for row in read_rows(tmp_path, "entities")) > 1


def test_a_slow_organizations_api_costs_time_not_the_crawl(crawl_org, tmp_path: Path) -> None:
    """Organizations answers 2 requests a second and TooManyRequestsException beyond: discovery and the
    Organizations view (its SCP listings) pace their calls and wait the throttling out, and publish everything."""
    sim = crawl_org(SPEC, FaultPlan.uniform(organizations_rate=2.0, organizations_burst=2))
    view = OrganizationsAccessSettings(enabled=True, per_policy=True)

    summary = run_crawl(crawl_config(tmp_path, organizations_access=view))

    assert summary.complete, read_rows(tmp_path, "errors")
    assert {row["account_id"] for row in read_rows(tmp_path, "accounts")} == crawlable(sim)
    assert_equals_truth(sim, tmp_path, crawlable(sim))
    assert {row["policy_id"] is None for row in read_rows(tmp_path, "organizations_access")} == {True, False}
    throttled = {event.operation for event in sim.state.events if event.kind == "throttled"}
    assert throttled and throttled <= set(ORGANIZATIONS_CALLS) | {"ListAccountsForParent", "ListPolicies",
                                                                 "ListTargetsForPolicy"}


def test_a_stop_while_organizations_throttles_the_discovery_is_an_interruption(crawl_org, tmp_path: Path) -> None:
    """Throttling is not waited out once the crawl is stopped: the run ends interrupted (exit 130), not failed."""
    sim = crawl_org(SPEC)
    sim.faults.account(sim.management_account_id).operations["ListAccounts"] = RequestFaults(throttle_rate=1.0)
    stop = threading.Event()
    stop.set()

    with pytest.raises(Interrupted) as raised:
        run_crawl(crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=2)), stop=stop, run_id="stopped")

    assert raised.value.exit_code == 130
    assert read_manifest(str(tmp_path), "stopped")["status"] == "interrupted"
    assert not (tmp_path / "accounts").exists()


def test_assume_role_denied_by_policy_is_recorded_per_account(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    denied = sorted(crawlable(sim) - {sim.management_account_id})[0]
    sim.faults.account(denied).deny_assume_role = True
    summary = run_crawl(crawl_config(tmp_path))
    accounts = {row["account_id"]: row for row in read_rows(tmp_path, "accounts")}
    assert (accounts[denied]["outcome"], accounts[denied]["error_code"]) == ("failed", "AccessDenied")
    assert [(row["account_id"], row["stage"]) for row in read_rows(tmp_path, "errors")] == [(denied, "assume_role")]
    assert not summary.complete and summary.manifest["accounts"]["failed_ids"] == [denied]
    assert_equals_truth(sim, tmp_path, crawlable(sim) - {denied})


def test_an_output_that_cannot_be_written_fails_before_any_aws_call(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory", encoding="utf-8")
    with pytest.raises(DatasetError, match="not writable"):
        run_crawl(crawl_config(blocked / "out"))
    assert not sim.state.calls


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KiB tmpfs (needs root to mount; skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_stops_the_run_and_a_rerun_resumes_it(crawl_org, small_disk: Path) -> None:
    sim = crawl_org(replace(SPEC, accounts=4, entities=10))
    output = small_disk / "out"
    config = replace(crawl_config(output), logging=LoggingSettings(file_enabled=False),
                     concurrency=ConcurrencySettings(accounts=1),
                     output=OutputSettings(path=str(output), compression="none"))
    with pytest.raises(DatasetError, match="resume"):
        run_crawl(config, run_id="full-disk")
    # "interrupted" when the disk still had room for the manifest, else the "running" one stays: both resume.
    assert read_manifest(str(output), "full-disk")["status"] in ("interrupted", "running")
    staged = len(list((output / "_staging").glob("*/full-disk/*/DONE")))
    assert 1 <= staged < len(crawlable(sim))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    summary = run_crawl(config)
    assert summary.resumed and summary.run_id == "full-disk" and summary.complete
    assert_equals_truth(sim, output, crawlable(sim))
