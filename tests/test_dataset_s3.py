"""The dataset on S3 (moto's S3 server, reached through pyarrow's S3 filesystem as real S3 would be):
the same rows as on disk, staging, publish by manifest, replace, resume, an exclusive claim."""
from __future__ import annotations

import logging
import re
import threading
from datetime import date
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from crawler import analysis
from crawler.config.settings import ConcurrencySettings, OutputSettings
from crawler.crawl.scheduler import objects_for, run_crawl
from crawler.crawl.shards import Shard
from crawler.errors import Interrupted
from crawler.progress import Progress
from crawler.sim import FaultPlan, OrgSpec
from crawler.store import schema
from crawler.store.dataset import (
    Dataset,
    DatasetError,
    latest_manifest,
    open_filesystem,
    read_manifest,
    unfinished_runs,
)
from crawler.store.verify import verify_snapshot
from tests.cloudformation import as_list, load_template, policy_statements
from tests.helpers import crawl_config, crawlable, published_tables, stop_after_first_account

SNAPSHOT = date(2026, 11, 30)
SPEC = OrgSpec(accounts=4, entities=10, seed=21)


def output_at(root: str, **options: object) -> OutputSettings:
    return OutputSettings(path=root, snapshot_date=SNAPSHOT, **options)


def files_under(root: str, directory: str) -> list[str]:
    """Every object under ``directory`` of the dataset, relative to the root."""
    filesystem, base = open_filesystem(root)
    listing = filesystem.get_file_info(pafs.FileSelector(f"{base}/{directory}", recursive=True,
                                                         allow_not_found=True))
    return sorted(info.path.removeprefix(f"{base}/") for info in listing if info.type == pafs.FileType.File)


def test_a_crawl_to_s3_publishes_what_a_crawl_to_disk_does(crawl_org, make_s3_root, tmp_path: Path) -> None:
    crawl_org(SPEC)
    s3_root = make_s3_root()
    on_disk = run_crawl(crawl_config(tmp_path, SNAPSHOT))
    on_s3 = run_crawl(crawl_config(s3_root, SNAPSHOT))

    assert published_tables(s3_root) == published_tables(str(tmp_path))
    assert on_s3.rows == on_disk.rows and on_s3.manifest["status"] == "published"
    assert read_manifest(s3_root, on_s3.run_id)["tables"] == on_s3.manifest["tables"]
    assert verify_snapshot(s3_root, SNAPSHOT).ok
    assert files_under(s3_root, "_staging") == []
    services = analysis.load(s3_root, "service_last_accessed")
    assert len(services) == on_s3.rows["service_last_accessed"]
    assert set(services["account_id"]) == {summary.account_id for summary in on_s3.accounts if summary.outcome == "ok"}


def test_publishing_a_date_again_on_s3_replaces_its_files(crawl_org, make_s3_root, tmp_path: Path) -> None:
    crawl_org(SPEC)
    s3_root = make_s3_root()
    config = crawl_config(s3_root, SNAPSHOT)
    first = run_crawl(config, run_id="first")
    second = run_crawl(config, run_id="second")

    for table in schema.TABLES:
        named = [entry["path"] for entry in second.manifest["tables"][table]["files"]]
        assert files_under(s3_root, f"{table}/snapshot_date={SNAPSHOT}") == sorted(named)
        assert all("/part-second-" in path for path in named)
    assert latest_manifest(s3_root, SNAPSHOT)["run_id"] == "second"
    assert {**first.rows, "crawl_runs": 2} == second.rows and verify_snapshot(s3_root, SNAPSHOT).ok


def test_a_publish_that_dies_before_its_manifest_leaves_the_last_snapshot_whole(
        crawl_org, make_s3_root, tmp_path: Path) -> None:
    crawl_org(SPEC)
    s3_root = make_s3_root()
    config = crawl_config(s3_root, SNAPSHOT)
    first = run_crawl(config, run_id="first")
    before = published_tables(s3_root)

    def die(self: Dataset, document: dict) -> dict:
        if document.get("status") == "published":
            raise DatasetError("the disk vanished")
        return real_write(self, document)

    real_write = Dataset._write_manifest
    with pytest.MonkeyPatch.context() as patch, pytest.raises(DatasetError):
        patch.setattr(Dataset, "_write_manifest", die)
        run_crawl(config, run_id="second")

    # the new run's files sit beside the old ones, but the manifest still names only the old ones
    assert latest_manifest(s3_root, SNAPSHOT)["run_id"] == "first"
    assert published_tables(s3_root) == before
    report = verify_snapshot(s3_root, SNAPSHOT)
    assert {problem.kind for problem in report.problems} == {"extra"}
    assert all("/part-second-" in problem.path for problem in report.problems)
    assert first.run_id == "first"

    resumed = run_crawl(config)  # resumes run "second": its accounts are staged, it publishes and tidies up
    assert resumed.run_id == "second" and resumed.resumed
    after = published_tables(s3_root)
    assert verify_snapshot(s3_root, SNAPSHOT).ok and {**after, "crawl_runs": []} == {**before, "crawl_runs": []}
    assert [row["status"] for row in after["crawl_runs"]] == ["published", "superseded"]


def test_a_stopped_crawl_to_s3_resumes_where_it_stopped(crawl_org, make_s3_root, tmp_path: Path) -> None:
    sim = crawl_org(SPEC, FaultPlan.uniform(job_seconds=0.2))
    s3_root = make_s3_root()
    progress, stop = Progress(), threading.Event()
    stop_after_first_account(progress, stop)
    config = crawl_config(s3_root, SNAPSHOT, concurrency=ConcurrencySettings(accounts=1))
    with pytest.raises(Interrupted):
        run_crawl(config, progress=progress, stop=stop, run_id="stopped")
    assert [run["run_id"] for run in unfinished_runs(s3_root)] == ["stopped"]
    staged = Dataset(s3_root, SNAPSHOT, "stopped", config.output).staged_units()
    assert 1 <= len(staged) < len(crawlable(sim))

    resumed = run_crawl(config)
    assert resumed.run_id == "stopped" and resumed.resumed
    assert {summary.account_id for summary in resumed.accounts} >= crawlable(sim)
    assert verify_snapshot(s3_root, SNAPSHOT).ok and unfinished_runs(s3_root) == []


def test_shards_publish_one_snapshot_on_s3(crawl_org, make_s3_root, tmp_path: Path) -> None:
    crawl_org(SPEC)
    s3_root = make_s3_root()
    whole = run_crawl(crawl_config(tmp_path, SNAPSHOT))
    config = crawl_config(s3_root, SNAPSHOT)
    shards = [run_crawl(config, shard=Shard(index, 2), run_id="batch-1234") for index in range(2)]
    assert [shard.published for shard in shards] == [False, True]
    assert published_tables(s3_root) == published_tables(str(tmp_path))
    assert shards[-1].rows == whole.rows and verify_snapshot(s3_root, SNAPSHOT).ok


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_claim_is_won_by_exactly_one_of_many(where: str, make_s3_root, tmp_path: Path) -> None:
    root = make_s3_root() if where == "s3" else str(tmp_path)
    dataset = Dataset(root, SNAPSHOT, "claimed", output_at(root), objects_for(root))
    dataset.check_writable()
    dataset.record_shard("0-of-1", {"status": "running"})  # the run's staging directory exists
    start = threading.Barrier(8)
    won: list[int] = []

    def claim(index: int) -> None:
        start.wait(timeout=30)
        if dataset.claim("_publishing.json", {"by": index}):
            won.append(index)

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1
    assert not dataset.claim("_publishing.json", {"by": "late"})


# -- the S3 permissions the deploy examples grant ----------------------------------------------
#: (method, whether the path names an object, the query's first key) -> the IAM action S3 checks.
S3_ACTIONS = {
    ("HEAD", False, ""): "s3:ListBucket",  # HeadBucket
    ("GET", False, "list-type"): "s3:ListBucket",  # ListObjectsV2
    ("GET", False, "prefix"): "s3:ListBucket",
    ("GET", False, "delimiter"): "s3:ListBucket",
    ("POST", False, "delete"): "s3:DeleteObject",  # DeleteObjects
    ("HEAD", True, ""): "s3:GetObject",
    ("GET", True, ""): "s3:GetObject",
    ("PUT", True, ""): "s3:PutObject",
    ("POST", True, "uploads"): "s3:PutObject",  # CreateMultipartUpload
    ("PUT", True, "partNumber"): "s3:PutObject",  # UploadPart
    ("POST", True, "uploadId"): "s3:PutObject",  # CompleteMultipartUpload
    ("DELETE", True, "uploadId"): "s3:AbortMultipartUpload",
    ("DELETE", True, ""): "s3:DeleteObject",
}
REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) /(?P<bucket>[^/? ]+)(?P<key>/[^? ]*)?(?:\?(?P<query>\S*))? HTTP')
#: Granted for a failed upload's clean-up, which a crawl that succeeds never needs.
ONLY_ON_FAILURE = {"s3:AbortMultipartUpload"}


def s3_actions(log_lines: list[str], bucket: str) -> set[str]:
    """The IAM actions behind the S3 requests of moto's access log to ``bucket``."""
    actions = set()
    for line in log_lines:
        match = REQUEST_LINE.search(line)
        if match is None or match["bucket"] != bucket:
            continue
        first_key = re.split(r"[=&]", match["query"] or "")[0]
        key = (match["method"], bool((match["key"] or "").strip("/")), first_key)
        assert key in S3_ACTIONS, f"an S3 request this test cannot map to an action: {line}"
        actions.add(S3_ACTIONS[key])
    return actions


def granted_s3_actions(template: Path, policy: str) -> set[str]:
    """The s3: actions a template's policy (or role) resource grants."""
    resource = load_template(template)["Resources"][policy]["Properties"]
    documents = [resource["PolicyDocument"]] if "PolicyDocument" in resource else \
        [item["PolicyDocument"] for item in resource["Policies"]]
    return {action for document in documents for statement in policy_statements(document)
            for action in as_list(statement["Action"]) if action.startswith("s3:")}


def test_the_deploy_examples_grant_exactly_the_s3_actions_a_crawl_uses(
        crawl_org, make_s3_root, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crawl_org(SPEC)
    s3_root = make_s3_root()
    caplog.set_level(logging.INFO, logger="werkzeug")
    caplog.clear()  # from here on, the crawler's requests only
    config = crawl_config(s3_root, SNAPSHOT)
    run_crawl(config, run_id="first")
    run_crawl(config, run_id="second")  # replaces the snapshot: deletes the first run's files
    for index in range(2):
        run_crawl(config, shard=Shard(index, 2), run_id="sharded")  # records, a claim, a publish
    assert verify_snapshot(s3_root, SNAPSHOT).ok and analysis.load(s3_root).shape[0] > 0

    used = s3_actions([record.getMessage() for record in caplog.records], s3_root.split("/")[2])
    assert used >= {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    for template, policy in ((scripts / "deploy" / "aws-batch" / "job-definition.yaml", "OutputAccess"),
                             (scripts / "deploy" / "kubernetes" / "pod-role.yaml", "PodRole"),
                             (scripts / "iam" / "hub-role.yaml", "HubRole")):
        assert granted_s3_actions(template, policy) == used | ONLY_ON_FAILURE, template.name
