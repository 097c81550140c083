"""Names from AWS are untrusted: an organization whose names AWS accepts but naive code breaks on
(``OrgSpec(hostile_names=True)``) is carried exactly by the simulator, in process and over HTTP, and
a crawl of it stores every name exactly, writes only under its output root, and lists and logs safely.

One crawl serves most tests here (a crawl takes seconds): the first test that asks for it runs it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from crawler.aws.sessions import SessionFactory
from crawler.config.settings import AccountFilter, AdvisorSettings, LoggingSettings, OrganizationSettings
from crawler.crawl.scheduler import RunSummary, discover, run_crawl
from crawler.listing import format_accounts, visible
from crawler.log import close_logging, configure_logging
from crawler.sim import OrgSpec, SimulatedOrganization
from crawler.sim.generator import HOSTILE_ACCOUNT_NAMES, HOSTILE_IAM_NAMES, HOSTILE_OU_NAMES, HOSTILE_PATHS
from crawler.sim.model import Entity, OrganizationModel
from crawler.sources.organizations import Account, Discovery, select_accounts
from crawler.store import schema
from tests.helpers import crawl_config, crawlable, project, read_rows
from tests.sim.helpers import all_pages
from tests.test_scheduler import SERVICE_COLUMNS, truth

#: 13 members: the 12 hostile account names on ACTIVE accounts, the last member SUSPENDED.
SPEC = OrgSpec(accounts=13, entities=12, seed=5, hostile_names=True)
TOP_LEVEL = {*schema.TABLES, "runs", "_logs", "_staging", "_leases"}
PARTITION = re.compile(r"snapshot_date=(\d{4}-\d{2}-\d{2})")
LOG_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}Z ")
#: What a one-line display must not contain: control and format characters, line and paragraph separators.
INVISIBLE = ("Cc", "Cf", "Zl", "Zp")


@dataclass
class HostileCrawl:
    """A finished crawl of the hostile organization and what surrounded it."""

    model: OrganizationModel
    truth: list[dict[str, Any]]
    crawlable: set[str]
    summary: RunSummary
    root: Path
    discovery: Discovery
    outside_before: dict[str, list[str]]
    outside_after: dict[str, list[str]]


_CRAWLS: dict[str, HostileCrawl] = {}


@pytest.fixture
def hostile(crawl_org, tmp_path_factory: pytest.TempPathFactory, fake_aws_environment: Path,
            monkeypatch: pytest.MonkeyPatch) -> HostileCrawl:
    """The crawl of the hostile organization (run once, by the first test that asks), from an empty
    working directory."""
    if "crawl" not in _CRAWLS:
        monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
        _CRAWLS["crawl"] = run_hostile_crawl(crawl_org, tmp_path_factory.mktemp("hostile"), fake_aws_environment)
    return _CRAWLS["crawl"]


def run_hostile_crawl(crawl_org, parent: Path, aws_home: Path) -> HostileCrawl:  # noqa: ANN001 - the fixture
    """Start the organization, crawl it into ``parent/out`` with file logging, discover it for listings;
    note what the parent, the AWS config directory and the working directory hold before and after."""
    sim = crawl_org(SPEC)
    root = parent / "out"
    watched = {"parent": parent, "aws_home": aws_home, "cwd": Path.cwd()}
    before = listings(watched)
    config = crawl_config(root)
    configure_logging(config.logging, config.output.path)
    try:
        summary = run_crawl(config)
    finally:
        close_logging()
    discovery = discover(config, SessionFactory(config.aws, config.assume_role, config.concurrency))
    return HostileCrawl(sim.model, truth(sim.service_rows(), crawlable(sim)), crawlable(sim), summary, root,
                        discovery, before, listings(watched))


def listings(directories: dict[str, Path]) -> dict[str, list[str]]:
    """The sorted entries of each directory."""
    return {name: sorted(os.listdir(path)) for name, path in directories.items()}


def entities_by_arn(model: OrganizationModel) -> dict[str, Entity]:
    """Every entity of the organization, by ARN."""
    return {entity.arn: entity for account in model.accounts.values() for entity in account.entities}


def ou_names(model: OrganizationModel, account_id: str) -> list[str]:
    """The OU names from the root down to the account's OU."""
    return model.ou_path_names(model.accounts[account_id].account.parent_id)


def tag_rows(tags: dict[str, str]) -> list[dict[str, str]]:
    """Tags as the dataset stores them: key/value structs sorted by key."""
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def raw_strings(root: Path, table: str, column: str) -> list[bytes]:
    """A string column exactly as stored in the Parquet files, as UTF-8 bytes."""
    column_data = ds.dataset(root / table, format="parquet", partitioning="hive").to_table(columns=[column])
    return [value for value in column_data.column(column).cast(pa.binary()).to_pylist() if value is not None]


# -- the simulator carries the names exactly -------------------------------------------------------
def authorization_details(iam: Any) -> dict[str, list[dict[str, Any]]]:
    """Every page of GetAccountAuthorizationDetails, following Marker."""
    pages = all_pages(iam.get_account_authorization_details)
    return {key: [item for page in pages for item in page.get(key, [])]
            for key in ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")}


def served_entities(details: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[Any, ...]]:
    """ARN -> (name, path, tags, inline policy names) of every user, group, role and customer policy."""
    served: dict[str, tuple[Any, ...]] = {}
    for kind, key in (("User", "UserDetailList"), ("Group", "GroupDetailList"), ("Role", "RoleDetailList")):
        for item in details[key]:
            served[item["Arn"]] = (item[f"{kind}Name"], item["Path"],
                                   {tag["Key"]: tag["Value"] for tag in item.get("Tags", [])},
                                   sorted(policy["PolicyName"] for policy in item.get(f"{kind}PolicyList", [])))
    for policy in details["Policies"]:
        if ":iam::aws:policy/" not in policy["Arn"]:
            served[policy["Arn"]] = (policy["PolicyName"], policy["Path"], {}, [])
    return served


def modelled_entities(entities: list[Entity]) -> dict[str, tuple[Any, ...]]:
    """ARN -> (name, path, tags, inline policy names) as generated."""
    return {entity.arn: (entity.name, entity.path, entity.tags if entity.type in ("USER", "ROLE") else {},
                         sorted(policy.name for policy in entity.inline_policies)) for entity in entities}


def served_ou_names(organizations: Any, parent_id: str) -> Iterator[tuple[str, str]]:
    """(id, name) of every OU below ``parent_id``, through ListOrganizationalUnitsForParent."""
    pages = organizations.get_paginator("list_organizational_units_for_parent").paginate(ParentId=parent_id)
    for unit in (unit for page in pages for unit in page["OrganizationalUnits"]):
        yield unit["Id"], unit["Name"]
        yield from served_ou_names(organizations, unit["Id"])


def assert_served_exactly(sim: SimulatedOrganization) -> None:
    """boto3 reads back every OU, account and IAM name, path and tag exactly as generated."""
    organizations = sim.client("organizations")
    assert dict(served_ou_names(organizations, sim.model.root.id)) == {ou.id: ou.name for ou in sim.model.ous}
    pages = organizations.get_paginator("list_accounts").paginate()
    listed = {item["Id"]: (item["Name"], item["Email"]) for page in pages for item in page["Accounts"]}
    assert listed == {i: (m.account.name, m.account.email) for i, m in sim.model.accounts.items()}
    for account_id, model in sim.model.accounts.items():
        tags = organizations.list_tags_for_resource(ResourceId=account_id)["Tags"]
        assert {tag["Key"]: tag["Value"] for tag in tags} == model.account.tags
        if account_id in crawlable(sim):
            iam = sim.client("iam", session=sim.assume(account_id))
            assert served_entities(authorization_details(iam)) == modelled_entities(model.entities)


def test_the_simulator_serves_hostile_names_exactly_in_process() -> None:
    sim = SimulatedOrganization(SPEC)
    with sim.in_process():
        assert_served_exactly(sim)


def test_the_simulator_serves_hostile_names_exactly_over_http() -> None:
    sim = SimulatedOrganization(SPEC)
    with sim.serve(port=0):
        assert sim.endpoint_url and sim.endpoint_url.startswith("http://127.0.0.1:")
        assert_served_exactly(sim)


# -- the crawl stores them exactly -------------------------------------------------------------------
def test_the_crawl_completes_and_equals_the_ground_truth(hostile: HostileCrawl) -> None:
    assert hostile.summary.complete
    rows = read_rows(hostile.root, "service_last_accessed")
    assert project(rows, SERVICE_COLUMNS) == project(hostile.truth, SERVICE_COLUMNS)
    assert {row["entity_name"] for row in rows} >= set(HOSTILE_IAM_NAMES), "the hostile names were crawled"
    assert {row["entity_path"] for row in rows} >= set(HOSTILE_PATHS)


def test_entity_names_paths_and_tags_are_stored_exactly(hostile: HostileCrawl) -> None:
    entities = entities_by_arn(hostile.model)
    rows = read_rows(hostile.root, "entities")
    assert {row["entity_arn"] for row in rows} == {arn for arn, e in entities.items() if e.account_id in
                                                   hostile.crawlable}
    for row in rows:
        entity = entities[row["entity_arn"]]
        assert (row["entity_name"], row["entity_path"], row["tags"]) == \
            (entity.name, entity.path, tag_rows(entity.tags) if entity.type in ("USER", "ROLE") else [])
        assert row["inline_policy_names"] == sorted(policy.name for policy in entity.inline_policies)
        assert (row["group_names"], row["member_names"]) == (sorted(entity.groups), sorted(entity.members))
    assert {row["entity_name"] for row in rows} >= set(HOSTILE_IAM_NAMES)


def test_account_names_ou_paths_and_tags_are_stored_exactly(hostile: HostileCrawl) -> None:
    rows = read_rows(hostile.root, "accounts")
    assert {row["account_id"] for row in rows} == hostile.crawlable
    for row in rows:
        account = hostile.model.accounts[row["account_id"]].account
        names = ou_names(hostile.model, account.id)
        assert (row["account_name"], row["account_email"], row["tags"]) == \
            (account.name, account.email, tag_rows(account.tags))
        assert row["ou_path"] == "/".join(names)
        assert row["ou_path_ids"] == "/".join(hostile.model.ou_path_ids(account.parent_id))
    assert {row["account_name"] for row in rows} >= set(HOSTILE_ACCOUNT_NAMES)
    stored = set(raw_strings(hostile.root, "accounts", "ou_path"))
    assert stored == {row["ou_path"].encode("utf-8") for row in rows}, "UTF-8, not normalized or re-encoded"


def test_an_ou_name_with_a_slash_makes_the_stored_path_ambiguous(hostile: HostileCrawl) -> None:
    """Documented, not a failure: ``ou_path`` joins names with "/", and an OU name may contain "/"."""
    paths = {row["account_id"]: row["ou_path"] for row in read_rows(hostile.root, "accounts")}
    ambiguous = [i for i, path in paths.items() if len(path.split("/")) != len(ou_names(hostile.model, i))]
    assert ambiguous and all(any("/" in name for name in ou_names(hostile.model, i)) for i in ambiguous)


# -- nothing outside the output root ----------------------------------------------------------------------
def test_nothing_is_written_outside_the_output_root(hostile: HostileCrawl) -> None:
    assert hostile.outside_after == {**hostile.outside_before, "parent": ["out"]}
    assert hostile.outside_before["parent"] == hostile.outside_before["cwd"] == []
    root = hostile.root.resolve()
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = Path(directory, name)
            assert not path.is_symlink() and path.resolve().is_relative_to(root), path


def test_the_output_root_holds_only_the_expected_entries(hostile: HostileCrawl) -> None:
    entries = set(os.listdir(hostile.root))
    assert set(schema.TABLES) | {"runs"} <= entries <= TOP_LEVEL
    for table in schema.TABLES:
        for partition in os.listdir(hostile.root / table):
            match = PARTITION.fullmatch(partition)
            assert match and date.fromisoformat(match[1]) == hostile.summary.snapshot_date, partition
            assert all(re.fullmatch(r"part-\d{5}\.parquet", name) for name in os.listdir(hostile.root / table /
                                                                                         partition))
    assert os.listdir(hostile.root / "runs") == [f"{hostile.summary.run_id}.json"]
    assert os.listdir(hostile.root / "_leases") == [], "the run released its lease"


# -- listing and logging ----------------------------------------------------------------------------------
def test_csv_listing_parses_back_to_the_names_escaped_as_in_the_table(hostile: HostileCrawl) -> None:
    text = format_accounts(hostile.discovery.accounts, "csv")
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [record["id"] for record in records] == [account.id for account in hostile.discovery.accounts]
    for record in records:
        account = hostile.model.accounts[record["id"]].account
        assert (record["name"], record["email"], record["ou_path"]) == \
            (visible(account.name), visible(account.email), visible("/".join(ou_names(hostile.model, account.id))))
        assert json.loads(record["tags"]) == {visible(key): visible(value) for key, value in account.tags.items()}


def test_json_listing_parses_back_to_the_exact_names(hostile: HostileCrawl) -> None:
    records = json.loads(format_accounts(hostile.discovery.accounts, "json"))
    assert len(records) == len(hostile.model.accounts)
    for record in records:
        account = hostile.model.accounts[record["id"]].account
        assert (record["name"], record["email"], record["tags"]) == (account.name, account.email, account.tags)
        assert record["ou_path"] == "/".join(ou_names(hostile.model, account.id))


def test_table_listing_has_one_line_per_account_and_nothing_invisible(hostile: HostileCrawl) -> None:
    accounts: tuple[Account, ...] = hostile.discovery.accounts
    text = format_accounts(accounts, "table")
    lines = text.splitlines()  # splits at U+2028, U+2029, \r, \v, \f, \x1c-\x1e and \x85 too
    assert len(lines) == len(accounts) + 2 == text.count("\n"), "header, rule, one line per account"
    assert not [c for c in text.replace("\n", "") if unicodedata.category(c) in INVISIBLE]
    assert [line.split(" ", 1)[0] for line in lines[2:]] == [account.id for account in accounts]
    assert "\\u202e" in text and "\\n" in text and "\\x00" in text, "escaped visibly"


def test_the_log_has_one_record_per_line(hostile: HostileCrawl) -> None:
    text = (hostile.root / "_logs" / "access-crawler.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines and len(lines) == text.count("\n")
    assert [line for line in lines if not LOG_TIMESTAMP.match(line)] == []


def test_failed_jobs_of_hostile_entities_are_logged_one_json_record_per_line(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=2, entities=12, seed=5, hostile_names=True))
    victim = sorted(crawlable(sim) - {sim.management_account_id})[0]
    sim.faults.account(victim).job_failure_rate = 1.0
    config = crawl_config(tmp_path, advisor=AdvisorSettings(job_retries=1, poll_interval_seconds=0.05),
                          logging=LoggingSettings(json=True))
    configure_logging(config.logging, config.output.path)
    try:
        summary = run_crawl(config)
    finally:
        close_logging()
    failed = {row["entity_arn"] for row in read_rows(tmp_path, "errors")}
    assert not summary.complete and failed and failed <= set(entities_by_arn(sim.model))
    assert {arn.rsplit("/", 1)[1] for arn in failed} & set(HOSTILE_IAM_NAMES)
    text = (tmp_path / "_logs" / "access-crawler.log").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == text.count("\n")
    assert all(any(arn in record["message"] for record in records) for arn in failed)


# -- OU name paths in filters: names compared level by level, "\/" for a slash inside a name -----------
def test_an_ou_name_path_filter_matches_only_that_ou(hostile: HostileCrawl) -> None:
    slashed = next(ou for ou in hostile.model.ous if ou.name == "Security/Audit")
    wanted = [*hostile.model.ou_path_names(slashed.parent_id), "Security"]
    settings = OrganizationSettings(include=AccountFilter(ous=("/".join(wanted),)))
    selected = {account.id for account in select_accounts(hostile.discovery, settings)}
    under = {i for i in hostile.crawlable if ou_names(hostile.model, i)[:len(wanted)] == wanted}
    assert selected == under == set()


def test_every_hostile_ou_name_is_in_the_crawled_organization(hostile: HostileCrawl) -> None:
    assert {ou.name for ou in hostile.model.ous} == set(HOSTILE_OU_NAMES)
    discovered = {account.ou_path for account in hostile.discovery.accounts}
    assert discovered == {"/".join(ou_names(hostile.model, i)) for i in hostile.model.accounts}


def test_an_escaped_slash_names_an_ou_whose_name_contains_one(hostile: HostileCrawl) -> None:
    slashed = next(ou for ou in hostile.model.ous if ou.name == "Security/Audit")
    wanted = [*hostile.model.ou_path_names(slashed.parent_id), "Security/Audit"]
    escaped = "/".join(name.replace("\\", "\\\\").replace("/", "\\/") for name in wanted)
    settings = OrganizationSettings(include=AccountFilter(ous=(escaped,)))
    selected = {account.id for account in select_accounts(hostile.discovery, settings)}
    active = {account.id for account in hostile.discovery.accounts if account.state == "ACTIVE"}
    under = {i for i in active if ou_names(hostile.model, i)[:len(wanted)] == wanted}
    assert under and selected == under
