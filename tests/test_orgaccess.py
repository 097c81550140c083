"""The Organizations view against the simulator: every report of the root, every OU and every selected
account, row for row, every page, per SCP, the report limit waited out, failures recorded as data."""
from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from crawler.analysis import AnalysisError, load
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import AdvisorSettings, Config, OrganizationsAccessSettings, OutputSettings
from crawler.crawl.scheduler import RunSummary, discover, reusable_accounts, run_crawl
from crawler.progress import Progress
from crawler.sim import FaultPlan, OrgSpec, SimulatedOrganization
from crawler.sim.model import OrganizationModel
from crawler.sim.org_report import MAX_RUNNING_REPORTS, entity_paths
from crawler.sources.organizations_view import LIMIT_EXCEEDED, account_of_path, crawl_organizations_access
from crawler.store.dataset import RUN_UNIT, Dataset
from crawler.store.verify import verify_snapshot
from tests.helpers import crawl_config, project, read_rows

SPEC = OrgSpec(accounts=4, entities=10, seed=23)
#: Small pages: a report of the simulator's catalog (370 services) takes four.
PAGE_SIZE = 100
COMPARED = ("target_path", "policy_id", "service_namespace", "last_authenticated_at", "region",
            "last_authenticated_entity_path", "last_authenticated_account_id", "total_authenticated_entities")
GENERATE, READ = "iam:GenerateOrganizationsAccessReport", "iam:GetOrganizationsAccessReport"
#: An SCP that allows three services (and so lists only them in its reports).
SCP_DOCUMENT = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:*", "ec2:Describe*", "iam:Get*"], "Resource": "*"}]}


def view_config(output: Path, **view: Any) -> Config:
    """A crawl of the simulator with the Organizations view on, reading small pages."""
    advisor = AdvisorSettings(poll_interval_seconds=0.05, max_poll_interval_seconds=0.2, page_size=PAGE_SIZE)
    return crawl_config(output, advisor=advisor,
                        organizations_access=OrganizationsAccessSettings(enabled=True, **view))


def selected_accounts(sim: SimulatedOrganization) -> set[str]:
    """What a default crawl selects: the ACTIVE accounts."""
    return {account_id for account_id, model in sim.model.accounts.items() if model.account.state == "ACTIVE"}


def target_paths(sim: SimulatedOrganization) -> dict[str, list[str]]:
    """Every path a crawl reports on (root, every OU, every selected account) -> the accounts below it."""
    selected = selected_accounts(sim)
    return {path: accounts for path, accounts in entity_paths(sim.model).items()
            if not path.rsplit("/", 1)[-1].isdigit() or path.rsplit("/", 1)[-1] in selected}


def truth_row(org: OrganizationModel, path: str, accounts: list[str], namespace: str,
              policy_id: str | None) -> tuple[Any, ...]:
    """What a report on ``path`` says of ``namespace``, computed from the accounts' activity."""
    latest: tuple[datetime, str, str] | None = None
    users = set()
    for account_id in accounts:
        for activity in org.accounts[account_id].activity.values():
            use = activity.get(namespace)
            if use is None or use.use.time < org.tracking_cutoff:
                continue
            users.add(account_id)
            if latest is None or use.use.time > latest[0]:
                latest = (use.use.time, use.use.region, account_id)
    if latest is None:
        return (path, policy_id, namespace, None, None, None, None, None)
    parent = org.accounts[latest[2]].account.parent_id
    entity_path = "/".join([org.id, *org.ou_path_ids(parent), latest[2]])
    return (path, policy_id, namespace, latest[0], latest[1], entity_path, latest[2], len(users))


def truth(sim: SimulatedOrganization, namespaces: list[str], paths: dict[str, list[str]],
          policy_id: str | None = None) -> list[tuple[Any, ...]]:
    """The ground truth of the reports on ``paths``, projected like :data:`COMPARED`."""
    rows = [truth_row(sim.model, path, accounts, namespace, policy_id)
            for path, accounts in paths.items() for namespace in namespaces]
    return sorted(rows, key=repr)


def calls(sim: SimulatedOrganization, action: str) -> int:
    """How often the crawl called ``action``."""
    return sum(count for request, count in sim.state.requests.items() if request.action == action)


def crawl(sim: SimulatedOrganization, config: Config) -> tuple[RunSummary, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run a crawl; its summary, its organizations_access rows and its errors rows."""
    sim.state.requests.clear()
    summary = run_crawl(config)
    root = config.output.path
    return summary, read_rows(root, "organizations_access"), read_rows(root, "errors")


def view_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in errors if row["stage"] == "organizations_access"]


@pytest.fixture
def sim(crawl_org: Callable[..., SimulatedOrganization]) -> SimulatedOrganization:
    return crawl_org(SPEC)


# -- rows -------------------------------------------------------------------------------------------
def test_rows_equal_the_simulators_truth_for_the_root_every_ou_and_every_selected_account(
        sim: SimulatedOrganization, tmp_path: Path) -> None:
    summary, rows, errors = crawl(sim, view_config(tmp_path))

    paths = target_paths(sim)
    assert project(rows, COMPARED) == truth(sim, list(sim.catalog.namespaces), paths)
    assert {row["target_path"] for row in rows} == set(paths)
    assert summary.complete and view_errors(errors) == []
    assert summary.rows["organizations_access"] == len(rows)


def test_targets_carry_their_type_name_and_ou_path(sim: SimulatedOrganization, tmp_path: Path) -> None:
    _, rows, _ = crawl(sim, view_config(tmp_path))

    model = sim.model
    units = {unit.id: unit for unit in [model.root, *model.ous]}
    expected = {(("ROOT" if unit.parent_id is None else "ORGANIZATIONAL_UNIT"), unit.id, unit.name,
                 "/".join(model.ou_path_names(unit.id))) for unit in units.values()}
    expected |= {("ACCOUNT", account_id, model.accounts[account_id].account.name,
                  "/".join(model.ou_path_names(model.accounts[account_id].account.parent_id)))
                 for account_id in selected_accounts(sim)}
    assert {(row["target_type"], row["target_id"], row["target_name"], row["target_ou_path"])
            for row in rows} == expected
    assert all(row["policy_id"] is None and row["policy_name"] is None for row in rows)


def test_rows_keep_the_reports_times_and_ids(sim: SimulatedOrganization, tmp_path: Path) -> None:
    _, rows, _ = crawl(sim, view_config(tmp_path))

    assert all(row["collected_at"].tzinfo is not None and row["job_created_at"] <= row["collected_at"]
               for row in rows)
    assert all(row["organization_id"] == sim.model.id and len(row["job_id"]) == 36 for row in rows)
    assert {len({row["job_id"] for row in rows if row["target_path"] == path}) for path in target_paths(sim)} == {1}
    used = [row for row in rows if row["last_authenticated_at"] is not None]
    assert used and all(row["last_authenticated_at"].microsecond == 0 for row in used)


def test_every_page_of_every_report_is_read(sim: SimulatedOrganization, tmp_path: Path) -> None:
    _, rows, _ = crawl(sim, view_config(tmp_path))

    reports = len(target_paths(sim))
    pages_per_report = -(-len(sim.catalog.namespaces) // PAGE_SIZE)
    assert pages_per_report > 3
    assert len(rows) == reports * len(sim.catalog.namespaces)
    assert calls(sim, READ) >= reports * pages_per_report
    assert calls(sim, GENERATE) == reports


def test_a_snapshot_with_the_view_verifies_and_loads(sim: SimulatedOrganization, tmp_path: Path) -> None:
    summary, rows, _ = crawl(sim, view_config(tmp_path))

    assert verify_snapshot(str(tmp_path)).ok
    frame = load(tmp_path, "organizations_access")
    assert len(frame) == len(rows) == summary.rows["organizations_access"]
    assert str(frame["last_authenticated_at"].dtype) == "datetime64[us, UTC]"
    with pytest.raises(AnalysisError, match="no account_id column"):
        load(tmp_path, "organizations_access", accounts=[sim.management_account_id])


def test_a_snapshot_without_the_view_verifies_and_loads_an_empty_table(sim: SimulatedOrganization,
                                                                       tmp_path: Path) -> None:
    crawl(sim, crawl_config(tmp_path))

    assert verify_snapshot(str(tmp_path)).ok
    assert load(tmp_path, "organizations_access").empty


# -- per SCP -----------------------------------------------------------------------------------------
def attach_scp(sim: SimulatedOrganization, targets: list[str]) -> str:
    """Create the SCP of :data:`SCP_DOCUMENT`, attach it to ``targets`` (ids); its id."""
    client = sim.client("organizations")
    policy = client.create_policy(Name="three-services", Description="test", Type="SERVICE_CONTROL_POLICY",
                                  Content=json.dumps(SCP_DOCUMENT))["Policy"]["PolicySummary"]
    for target in targets:
        client.attach_policy(PolicyId=policy["Id"], TargetId=target)
    return str(policy["Id"])


def attached_scps(sim: SimulatedOrganization, target_id: str) -> list[str]:
    client = sim.client("organizations")
    answer = client.list_policies_for_target(TargetId=target_id, Filter="SERVICE_CONTROL_POLICY")
    return [policy["Id"] for policy in answer["Policies"]]


def test_per_policy_adds_one_report_per_scp_attached_to_each_target(sim: SimulatedOrganization,
                                                                     tmp_path: Path) -> None:
    unit = next(unit for unit in sim.model.ous if unit.name == "Prod")
    account_id = sorted(selected_accounts(sim))[0]
    policy_id = attach_scp(sim, [unit.id, account_id])

    _, rows, errors = crawl(sim, view_config(tmp_path, per_policy=True))

    paths = target_paths(sim)
    scp_rows = [row for row in rows if row["policy_id"] == policy_id]
    scp_paths = {path: accounts for path, accounts in paths.items() if path.endswith((f"/{unit.id}", f"/{account_id}"))}
    assert project(scp_rows, COMPARED) == truth(sim, ["ec2", "iam", "s3"], scp_paths, policy_id)
    assert {row["policy_name"] for row in scp_rows} == {"three-services"}
    others = {(path, policy) for path in paths for policy in attached_scps(sim, path.rsplit("/", 1)[-1])}
    reported = {(row["target_path"], row["policy_id"]) for row in rows if row["policy_id"] is not None}
    assert reported == others and view_errors(errors) == []
    assert project([row for row in rows if row["policy_id"] is None], COMPARED) == truth(
        sim, list(sim.catalog.namespaces), paths)


# -- the report limit ---------------------------------------------------------------------------------
def test_report_generation_limit_exceeded_is_waited_out(crawl_org: Callable[..., SimulatedOrganization],
                                                        tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    sim.faults.account(sim.management_account_id).job_seconds = 2
    config = view_config(tmp_path, reports_in_flight=len(target_paths(sim)))
    assert len(target_paths(sim)) > MAX_RUNNING_REPORTS

    summary, rows, errors = crawl(sim, config)

    assert calls(sim, GENERATE) > len(target_paths(sim)), "some were refused and asked again"
    assert view_errors(errors) == [] and summary.complete
    assert project(rows, COMPARED) == truth(sim, list(sim.catalog.namespaces), target_paths(sim))


def test_reports_outstanding_when_the_credentials_are_renewed_are_generated_again(
        crawl_org: Callable[..., SimulatedOrganization], tmp_path: Path) -> None:
    """A JobId belongs to the role session that made it: after a renewal the report is made again."""
    sim = crawl_org(SPEC)
    faults = sim.faults.account(sim.management_account_id)
    faults.session_seconds, faults.job_seconds = 3, 0.4

    summary, rows, errors = crawl(sim, view_config(tmp_path))

    assert calls(sim, GENERATE) > len(target_paths(sim))
    assert view_errors(errors) == []
    assert project(rows, COMPARED) == truth(sim, list(sim.catalog.namespaces), target_paths(sim))


def test_reports_of_an_expired_session_are_generated_again_when_their_read_is_denied(
        crawl_org: Callable[..., SimulatedOrganization], tmp_path: Path) -> None:
    """Sessions of 3 s expire several times while reports run, and IAM answers a read of a report of
    the previous session with AccessDenied, not NoSuchEntity: the report is generated again all the same."""
    sim = crawl_org(SPEC)
    faults = sim.faults.account(sim.management_account_id)
    faults.session_seconds, faults.job_seconds, faults.other_session_job_error = 3, 0.5, "AccessDenied"

    summary, rows, errors = crawl(sim, view_config(tmp_path))

    assert view_errors(errors) == [] and summary.complete
    assert project(rows, COMPARED) == truth(sim, list(sim.catalog.namespaces), target_paths(sim))
    assert calls(sim, GENERATE) > len(target_paths(sim))
    assert any(event.operation == "GetOrganizationsAccessReport" for event in sim.state.events
               if event.kind == "other_session_job"), "reports of an old session were read"


def test_a_staged_view_is_kept_for_the_resumed_run(sim: SimulatedOrganization, tmp_path: Path) -> None:
    dataset = Dataset(str(tmp_path), date(2026, 11, 30), "run-1", OutputSettings())
    dataset.stage(RUN_UNIT, {"organizations_access": [], "errors": []}, {"unit": RUN_UNIT, "errors": 0})

    reused = reusable_accounts(dataset, [])

    assert reused == {} and dataset.staged_units() == {RUN_UNIT}


# -- failures are data ------------------------------------------------------------------------------
def test_a_management_account_that_cannot_be_entered_is_an_error_and_the_crawl_publishes(
        crawl_org: Callable[..., SimulatedOrganization], tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan())
    sim.faults.account(sim.management_account_id).deny_assume_role = True

    summary, rows, errors = crawl(sim, view_config(tmp_path))

    recorded = view_errors(errors)
    assert rows == [] and len(recorded) == 1 and recorded[0]["error_code"] == "AccessDenied"
    assert recorded[0]["account_id"] == sim.management_account_id
    assert summary.manifest["status"] == "published" and not summary.complete
    assert summary.manifest["errors"] == len(errors)
    assert summary.manifest["accounts"]["ok"] == len(selected_accounts(sim)) - 1


def test_failed_reports_are_generated_again_and_lose_nothing(crawl_org: Callable[..., SimulatedOrganization],
                                                            tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan())
    sim.faults.account(sim.management_account_id).job_failure_rate = 0.5

    summary, rows, errors = crawl(sim, view_config(tmp_path))

    assert any(event.kind == "job_failed" for event in sim.state.events), "some reports failed first"
    assert calls(sim, GENERATE) > len(target_paths(sim))
    recorded = view_errors(errors)
    # a report failing more often than advisor.job_retries allows is an error, and only then
    failed_paths = {row["entity_arn"] for row in recorded}
    assert all(row["error_code"] == "ServiceFailure" for row in recorded)
    complete = {path: accounts for path, accounts in target_paths(sim).items() if path not in failed_paths}
    assert project(rows, COMPARED) == truth(sim, list(sim.catalog.namespaces), complete)
    assert summary.manifest["errors"] == len(errors)


def test_a_report_that_always_fails_is_recorded_after_its_retries(crawl_org: Callable[..., SimulatedOrganization],
                                                                 tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan())
    sim.faults.account(sim.management_account_id).job_failure_rate = 1.0
    config = view_config(tmp_path)

    summary, rows, errors = crawl(sim, config)

    recorded = view_errors(errors)
    assert rows == [] and {row["entity_arn"] for row in recorded} == set(target_paths(sim))
    assert {(row["error_code"], row["attempts"]) for row in recorded} == {
        ("ServiceFailure", config.advisor.job_retries + 1)}
    assert calls(sim, GENERATE) == len(target_paths(sim)) * (config.advisor.job_retries + 1)
    assert summary.manifest["status"] == "published" and not summary.complete


def test_reports_still_running_at_the_timeout_are_errors(crawl_org: Callable[..., SimulatedOrganization],
                                                         tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    sim.faults.account(sim.management_account_id).job_seconds = 60
    config = view_config(tmp_path)
    config = replace(config, advisor=replace(config.advisor, job_timeout_seconds=0.3))

    _, rows, errors = crawl(sim, config)

    recorded = view_errors(errors)
    assert rows == []
    assert {row["entity_arn"] for row in recorded} == set(target_paths(sim))
    codes = Counter(row["error_code"] for row in recorded)
    # The timed-out reports keep running in IAM: once the limit is reached, the others are refused
    # for longer than the timeout too.
    assert codes == {"JobTimedOut": MAX_RUNNING_REPORTS, LIMIT_EXCEEDED: len(target_paths(sim)) - MAX_RUNNING_REPORTS}


def test_a_caller_outside_the_management_account_is_recorded_not_raised(sim: SimulatedOrganization,
                                                                       tmp_path: Path) -> None:
    config = view_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    discovery = discover(config, factory)
    member = sorted(selected_accounts(sim) - {sim.management_account_id})[0]
    not_management = replace(discovery, management_account_id=member)
    accounts = [account for account in discovery.accounts if account.id in selected_accounts(sim)]

    tables = crawl_organizations_access(config, factory, not_management, accounts, "run-1", Progress(),
                                        threading.Event())

    assert tables["organizations_access"] == []
    assert {row["entity_arn"] for row in tables["errors"]} == set(target_paths(sim))
    assert {(row["error_code"], row["stage"], row["account_id"]) for row in tables["errors"]} == {
        ("AccessDenied", "organizations_access", member)}


def test_a_stopped_crawl_makes_no_report(sim: SimulatedOrganization, tmp_path: Path) -> None:
    config = view_config(tmp_path)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    discovery = discover(config, factory)
    stop = threading.Event()
    stop.set()
    sim.state.requests.clear()

    tables = crawl_organizations_access(config, factory, discovery, discovery.accounts, "run-1", Progress(), stop)

    assert tables == {"organizations_access": [], "errors": []}
    assert calls(sim, GENERATE) == 0


# -- off by default ---------------------------------------------------------------------------------
def test_the_view_is_off_by_default(sim: SimulatedOrganization, tmp_path: Path) -> None:
    summary, rows, _ = crawl(sim, crawl_config(tmp_path))

    assert Config().organizations_access == OrganizationsAccessSettings(enabled=False, per_policy=False)
    assert rows == [] and summary.rows["organizations_access"] == 0
    assert calls(sim, GENERATE) == 0 and calls(sim, READ) == 0


@pytest.mark.parametrize(("path", "account_id"), [
    ("o-abcdefghij/r-ab12/ou-ab12-cdefghij/001234567000", "001234567000"),
    ("o-abcdefghij/r-ab12/001234567000/", "001234567000"),
    ("o-abcdefghij/r-ab12/ou-ab12-cdefghij", None),
    (None, None),
])
def test_the_account_of_an_entity_path(path: str | None, account_id: str | None) -> None:
    assert account_of_path(path) == account_id
