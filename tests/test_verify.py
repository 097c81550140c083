"""verify_snapshot and format_report: a published snapshot checked against its manifest, damage by damage."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawler.config.settings import OutputSettings
from crawler.errors import UsageError
from crawler.store import schema
from crawler.store.dataset import Dataset
from crawler.store.parquet import file_schema
from crawler.store.verify import Problem, VerifyReport, format_report, verify_snapshot

SNAPSHOT = date(2026, 11, 30)
RUN_ID = "20261130T000000Z-ab12"
ACCOUNTS = ("000000000042", "123456789012")
BASE_TIME = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
#: Rows per account of the table that spans several files (2 x 1,200 rows in files of 1,000).
BIG_TABLE, BIG_ROWS = "service_last_accessed", 1200
SLA_DIR = f"{BIG_TABLE}/snapshot_date={SNAPSHOT.isoformat()}"
FIRST, LAST = f"{SLA_DIR}/part-00000.parquet", f"{SLA_DIR}/part-00002.parquet"


def column_value(field: pa.Field, account_id: str, run_id: str, index: int) -> Any:
    """A value of ``field``'s type for row ``index`` of an account."""
    if field.name == "account_id":
        return account_id
    if field.name == "run_id":
        return run_id
    if pa.types.is_timestamp(field.type):
        return BASE_TIME + timedelta(seconds=index)
    if pa.types.is_integer(field.type):
        return index
    if pa.types.is_boolean(field.type):
        return index % 2 == 0
    if pa.types.is_list(field.type):
        return []
    return f"{field.name}-{index:05d}"


def unit_rows(account_id: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table for one account: many in the big table, two elsewhere."""
    return {table: [{field.name: column_value(field, account_id, run_id, index) for field in file_schema(table)}
                    for index in range(BIG_ROWS if table == BIG_TABLE else 2)]
            for table in schema.STAGED_TABLES}


def publish(root: Path, snapshot_date: date, run_id: str, accounts: tuple[str, ...] = ACCOUNTS) -> dict[str, Any]:
    """Stage ``accounts`` and publish them as the snapshot of ``snapshot_date``; the manifest written."""
    settings = OutputSettings(path=str(root), max_rows_per_file=1000, row_group_rows=1000)
    dataset = Dataset(str(root), snapshot_date, run_id, settings)
    for account_id in accounts:
        dataset.stage(account_id, unit_rows(account_id, run_id))
    return dataset.publish({})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot published once for the module (copied by ``root`` for each test)."""
    root = tmp_path_factory.mktemp("pristine")
    publish(root, SNAPSHOT, RUN_ID)
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the published snapshot, free to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def load_manifest(root: Path, run_id: str = RUN_ID) -> dict[str, Any]:
    """The run's manifest as stored."""
    document: dict[str, Any] = json.loads((root / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))
    return document


def save_manifest(root: Path, document: dict[str, Any], run_id: str = RUN_ID) -> None:
    """Overwrite the run's manifest."""
    (root / "runs" / f"{run_id}.json").write_text(json.dumps(document), encoding="utf-8")


def file_entry(document: dict[str, Any], path: str) -> dict[str, Any]:
    """The manifest's entry of the file at ``path``."""
    table = path.split("/", 1)[0]
    entry: dict[str, Any] = next(item for item in document["tables"][table]["files"] if item["path"] == path)
    return entry


def kinds(report: VerifyReport) -> list[tuple[str, str]]:
    """The report's problems as (kind, path)."""
    return [(problem.kind, problem.path) for problem in report.problems]


def flip_byte(path: Path) -> None:
    """Invert one byte in the middle of the file (same size, other content)."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def test_a_clean_snapshot_is_ok(root: Path) -> None:
    report = verify_snapshot(str(root), SNAPSHOT)
    manifest = load_manifest(root)
    assert report.ok and report.problems == ()
    assert (report.root, report.snapshot_date, report.run_id) == (str(root), SNAPSHOT, RUN_ID)
    assert report.tables == {table: entry["rows"] for table, entry in manifest["tables"].items()}
    assert report.tables[BIG_TABLE] == 2 * BIG_ROWS
    assert len(manifest["tables"][BIG_TABLE]["files"]) == 3
    assert report.files_checked == sum(len(entry["files"]) for entry in manifest["tables"].values()) == 11
    total = sum(report.tables.values())
    assert format_report(report) == f"snapshot 2026-11-30 (run {RUN_ID}): 9 tables, 11 files, {total:,} rows: OK"
    assert verify_snapshot(str(root)) == report


@pytest.mark.parametrize(("damage", "kind", "detail"), [
    (lambda path, last: path.unlink(), "missing", "not on disk"),
    (lambda path, last: path.write_bytes(path.read_bytes() + b"\0"), "corrupt", "bytes on disk"),
    (lambda path, last: flip_byte(path), "corrupt", "sha256"),
    (lambda path, last: shutil.copyfile(last, path), "corrupt", "bytes on disk"),
    (lambda path, last: (path.unlink(), path.mkdir()), "corrupt", "not a file"),
], ids=["deleted", "byte-appended", "byte-flipped", "replaced-by-other-parquet", "directory"])
def test_a_damaged_file_is_reported(root: Path, damage: Callable[[Path, Path], Any], kind: str, detail: str) -> None:
    assert pq.ParquetFile(root / FIRST).metadata.num_rows != pq.ParquetFile(root / LAST).metadata.num_rows
    damage(root / FIRST, root / LAST)
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [(kind, FIRST)]
    assert detail in report.problems[0].detail
    assert not report.ok


def test_a_row_count_that_differs_from_the_file_metadata_is_reported(root: Path) -> None:
    manifest = load_manifest(root)
    file_entry(manifest, LAST)["rows"] += 1
    manifest["tables"][BIG_TABLE]["rows"] += 1  # consistent manifest, wrong about the file
    save_manifest(root, manifest)
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [("rows", LAST)]
    assert report.problems[0].detail == "400 rows in the file, 401 in the manifest"


def rewrite(root: Path, path: str, arrow_table: pa.Table) -> None:
    """Replace a published file by ``arrow_table`` and record its rows, size and sha256 in the manifest."""
    pq.write_table(arrow_table, root / path)
    content = (root / path).read_bytes()
    manifest = load_manifest(root)
    entry = file_entry(manifest, path)
    manifest["tables"][BIG_TABLE]["rows"] += arrow_table.num_rows - entry["rows"]
    entry.update(rows=arrow_table.num_rows, bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    save_manifest(root, manifest)


def with_field(arrow_table: pa.Table, name: str, field: pa.Field) -> pa.Table:
    """``arrow_table`` with column ``name`` replaced by ``field`` (values cast to its type)."""
    index = arrow_table.schema.get_field_index(name)
    return arrow_table.set_column(index, field, arrow_table.column(name).cast(field.type))


@pytest.mark.parametrize(("change", "detail"), [
    (lambda rows: rows.drop_columns(["service_name"]), "missing service_name"),
    (lambda rows: rows.append_column("extra", pa.array([1] * rows.num_rows)), "unexpected extra"),
    (lambda rows: with_field(rows, "total_authenticated_entities", pa.field("total_authenticated_entities",
                                                                            pa.int64())), "int64"),
    (lambda rows: with_field(rows, "service_name", pa.field("service_name", pa.string(), nullable=False)),
     "service_name is string not null, expected string"),
    (lambda rows: rows.select(list(reversed(rows.column_names))), "another order"),
], ids=["column-dropped", "column-added", "type-changed", "nullability-changed", "columns-reordered"])
def test_a_file_of_another_schema_is_reported(root: Path, change: Callable[[pa.Table], pa.Table], detail: str) -> None:
    rewrite(root, LAST, change(pq.read_table(root / LAST)))
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [("schema", LAST)]
    assert detail in report.problems[0].detail


def test_the_same_rows_without_the_schema_metadata_pass(root: Path) -> None:
    rows = pq.read_table(root / LAST)
    rewrite(root, LAST, rows.replace_schema_metadata(None))
    assert verify_snapshot(str(root), SNAPSHOT).ok


@pytest.mark.parametrize("name", ["part-00099.parquet", "notes.txt", "sub/part-00000.parquet", "bad\nname\x1b.parquet"])
def test_a_file_the_manifest_does_not_name_is_extra(root: Path, name: str) -> None:
    extra = root / SLA_DIR / name
    extra.parent.mkdir(exist_ok=True)
    shutil.copyfile(root / LAST, extra)
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [("extra", f"{SLA_DIR}/{name}")]
    escaped = name.replace("\n", "\\n").replace("\x1b", "\\x1b")
    assert format_report(report).splitlines()[0] == f"extra    {SLA_DIR}/{escaped}: not in the manifest"


@pytest.mark.parametrize(("edit", "detail"), [
    (lambda doc: doc["tables"].pop("errors"), "table errors is missing from the manifest"),
    (lambda doc: doc["tables"].update(surprise={"rows": 0, "files": []}), "'surprise' is not one of"),
    (lambda doc: doc["tables"]["errors"].update(rows=99), "tables.errors.rows is 99 but its files hold 4"),
    (lambda doc: doc["tables"]["errors"]["files"][0].update(sha256="XYZ"), "sha256 'XYZ' is not 64"),
    (lambda doc: doc["tables"]["errors"]["files"][0].update(path="../../etc/passwd"), "is not a file in errors/"),
    (lambda doc: doc.pop("tables"), 'has no "tables" object'),
    (lambda doc: doc.update(snapshot_date="2026-11-31"), "is not a date"),
], ids=["table-missing", "table-unknown", "table-rows", "bad-sha256", "path-outside", "no-tables", "bad-date"])
def test_a_flawed_manifest_is_reported(root: Path, edit: Callable[[dict[str, Any]], Any], detail: str) -> None:
    manifest = load_manifest(root)
    edit(manifest)
    save_manifest(root, manifest)
    report = verify_snapshot(str(root))  # the only published manifest, whatever its date
    problems = [problem for problem in report.problems if problem.kind == "manifest"]
    assert [(problem.path, detail in problem.detail) for problem in problems] == [(f"runs/{RUN_ID}.json", True)]


def test_a_table_left_out_of_the_manifest_makes_its_files_extra(root: Path) -> None:
    manifest = load_manifest(root)
    files = [entry["path"] for entry in manifest["tables"].pop("errors")["files"]]
    save_manifest(root, manifest)
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [("manifest", f"runs/{RUN_ID}.json")] + [("extra", path) for path in files]
    assert report.files_checked == 10 and "errors" not in report.tables


def test_the_snapshot_date_selects_the_newest_published_manifest_of_that_date(root: Path) -> None:
    later = SNAPSHOT + timedelta(days=1)
    publish(root, later, "run-later", accounts=ACCOUNTS[:1])
    publish(root, SNAPSHOT, "run-again", accounts=ACCOUNTS[1:])  # replaces the first snapshot's partitions
    flip_byte(root / f"{BIG_TABLE}/snapshot_date={later.isoformat()}/part-00000.parquet")
    first, second, newest = (verify_snapshot(str(root), when) for when in (SNAPSHOT, later, None))
    assert (first.ok, first.run_id, first.snapshot_date, first.tables[BIG_TABLE]) == (True, "run-again", SNAPSHOT,
                                                                                      BIG_ROWS)
    assert (second.run_id, second.snapshot_date, [problem.kind for problem in second.problems]) == \
        ("run-later", later, ["corrupt"])
    # without a date: the latest snapshot date published, as report and crawler.analysis pick (issue 14), not
    # the run published last (run-again republished an older date)
    assert newest.run_id == "run-later"


@pytest.mark.parametrize("runs", [{}, {"failed-run": {"status": "failed", "snapshot_date": "2026-11-30"}},
                                  {"other-date": {"status": "published", "snapshot_date": "2026-12-01"}}],
                         ids=["no-runs", "failed-run", "other-date"])
def test_no_published_manifest_is_a_problem_not_an_exception(tmp_path: Path, runs: dict[str, Any]) -> None:
    for run_id, document in runs.items():
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{run_id}.json").write_text(json.dumps(document), encoding="utf-8")
    report = verify_snapshot(str(tmp_path), SNAPSHOT)
    assert kinds(report) == [("manifest", "runs")]
    assert report.problems[0].detail.startswith("no published manifest for snapshot 2026-11-30")
    assert ("failed-run is failed" in report.problems[0].detail) == ("failed-run" in runs)
    assert (report.run_id, report.tables, report.files_checked, report.ok) == (None, {}, 0, False)
    assert format_report(report).splitlines()[-1] == \
        "snapshot 2026-11-30 (no published run): 0 tables, 0 files, 0 rows: 1 problem"


def test_an_unreadable_manifest_is_a_problem(root: Path) -> None:
    (root / "runs" / "broken.json").write_bytes(b'{"status": "publ')
    report = verify_snapshot(str(root), SNAPSHOT)
    assert kinds(report) == [("manifest", "runs/broken.json")]
    assert report.problems[0].detail.startswith("unreadable manifest")
    assert report.run_id == RUN_ID and report.files_checked == 11


@pytest.mark.parametrize("make", [lambda path: None, lambda path: path.write_text("x", encoding="utf-8")],
                         ids=["missing", "a-file"])
def test_a_root_that_is_not_a_directory_is_a_usage_error(tmp_path: Path, make: Callable[[Path], Any]) -> None:
    path = tmp_path / "nowhere"
    make(path)
    with pytest.raises(UsageError, match="does not exist|is not a directory"):
        verify_snapshot(str(path))


def test_format_report_lists_every_problem_then_the_summary(root: Path) -> None:
    (root / FIRST).unlink()
    flip_byte(root / LAST)
    (root / SLA_DIR / "stray.parquet").write_bytes(b"")
    report = verify_snapshot(str(root), SNAPSHOT)
    lines = format_report(report).splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        f"missing  {FIRST}", f"corrupt  {LAST}", f"extra    {SLA_DIR}/stray.parquet"]
    total = sum(report.tables.values())
    assert lines[-1] == f"snapshot 2026-11-30 (run {RUN_ID}): 9 tables, 11 files, {total:,} rows: 3 problems"
    assert report.problems[0] == Problem("missing", FIRST, "in the manifest (1,000 rows, "
                                         f"{file_entry(load_manifest(root), FIRST)['bytes']:,} bytes) but not on disk")


def test_a_snapshot_published_before_a_later_table_existed_is_clean(root: Path) -> None:
    manifest = load_manifest(root)
    for table in schema.LATER_TABLES:
        manifest["tables"].pop(table)
        shutil.rmtree(root / table)
    save_manifest(root, manifest)
    assert verify_snapshot(str(root), SNAPSHOT).ok


# -- the tables against the manifest's own summary of the run ----------------------------------------
@pytest.fixture
def crawled(crawl_org, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A real crawl of a small simulated organization (one account without the crawler role): root, manifest."""
    from crawler.crawl.scheduler import run_crawl
    from crawler.sim import OrgSpec
    from tests.helpers import crawl_config

    crawl_org(OrgSpec(accounts=3, entities=8, seed=5, accounts_without_crawler_role=1))
    summary = run_crawl(crawl_config(tmp_path / "out", SNAPSHOT))
    return tmp_path / "out", summary.manifest


def rewrite_manifest(root: Path, manifest: dict[str, Any], **changes: Any) -> None:
    path = root / "runs" / f"{manifest['run_id']}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}), encoding="utf-8")


def test_a_crawled_snapshot_agrees_with_its_summary(crawled: tuple[Path, dict[str, Any]]) -> None:
    root, manifest = crawled
    report = verify_snapshot(str(root), SNAPSHOT)
    assert report.ok, report.problems
    assert manifest["accounts"]["failed"] == 1 and manifest["staged_rows"]["accounts"] == 3


@pytest.mark.parametrize(("change", "detail"), [
    (lambda m: {"accounts": {**m["accounts"], "ok": m["accounts"]["ok"] + 2}}, "accounts.ok is"),
    (lambda m: {"accounts": {**m["accounts"], "selected": 6}}, "accounts.selected is 6 but the accounts table holds 3"),
    (lambda m: {"entities": {**m["entities"], "completed": m["entities"]["completed"] + 20}}, "entities is"),
    (lambda m: {"errors": m["errors"] + 1}, "errors is"),
    (lambda m: {"staged_rows": {**m["staged_rows"], "service_last_accessed": 1}},
     "staged_rows.service_last_accessed is 1"),
    (lambda m: {"run_id": "another-run"}, "crawl_runs names"),
])
def test_a_snapshot_whose_tables_disagree_with_its_summary_never_verifies(
        crawled: tuple[Path, dict[str, Any]], change: Callable[[dict[str, Any]], dict[str, Any]], detail: str) -> None:
    """As a snapshot published by a run whose staging another process emptied would (issue 13)."""
    root, manifest = crawled
    rewrite_manifest(root, manifest, **change(manifest))

    report = verify_snapshot(str(root), SNAPSHOT)

    assert [problem.kind for problem in report.problems] == ["summary"], report.problems
    assert detail in report.problems[0].detail
    assert report.problems[0].path == f"runs/{manifest['run_id']}.json"
