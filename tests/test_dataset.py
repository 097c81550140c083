"""The dataset: staging, consolidation, atomic publish and manifests, read back by pyarrow, pandas and DuckDB."""
from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from crawler.config.settings import OutputSettings
from crawler.store import schema
from crawler.store.dataset import Dataset, DatasetError, latest_manifest, read_manifest

SNAPSHOT = date(2024, 5, 1)
RUN_ID = "20240501T000000Z-ab12"
ACCOUNTS = ("000000000042", "000123456789", "100000000000")
BASE_TIME = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
SETTINGS = OutputSettings(row_group_rows=4, max_rows_per_file=1000)
ROW = dict[str, Any]


def make_row(table: str, account_id: str | None, index: int, nulls: bool = False) -> ROW:
    """A row of ``table`` with a value in every column (nullable ones None when ``nulls``)."""
    row: ROW = {}
    for field in schema.TABLES[table]:
        if nulls and field.nullable and field.name != "account_id":
            row[field.name] = None
        else:
            row[field.name] = column_value(field, account_id, index)
    return row


def column_value(field: pa.Field, account_id: str | None, index: int) -> Any:
    """A distinct value of ``field``'s type for row ``index`` of an account."""
    if field.name == "account_id":
        return account_id
    if field.name == "run_id":
        return RUN_ID
    if field.name == "entity_arn":
        return f"arn:aws:iam::{account_id}:role/r{index:03d}"
    if pa.types.is_timestamp(field.type):
        return BASE_TIME + timedelta(days=index, microseconds=1001 * index + 1)
    if pa.types.is_int32(field.type):
        return 7 * index
    if pa.types.is_boolean(field.type):
        return index % 2 == 0
    if field.type == schema.TAGS:
        return [{"key": "team", "value": f"t{index}"}, {"key": "env", "value": "prod"}]
    if pa.types.is_list(field.type):
        return [f"{field.name}-{index}-a", f"{field.name}-{index}-b"]
    return f"{field.name}-{account_id}-{index}"


def unit_rows(account_id: str) -> dict[str, list[ROW]]:
    """Rows of every table for one account: one account row, three rows elsewhere (one with nulls)."""
    return {table: [make_row(table, account_id, index, nulls=index == 2)
                    for index in range(1 if table == "accounts" else 3)]
            for table in schema.STAGED_TABLES}


def sort_key(row: Mapping[str, Any], table: str) -> tuple[tuple[bool, Any], ...]:
    """The published order: ascending by the table's sort keys, nulls last."""
    return tuple((row[key] is None, "" if row[key] is None else row[key]) for key in schema.sort_keys(table))


def sorted_rows(rows: list[ROW], table: str) -> list[ROW]:
    """Rows in the published order."""
    return sorted(rows, key=lambda row: sort_key(row, table))


def new_dataset(root: Path, settings: OutputSettings = SETTINGS, run_id: str = RUN_ID,
                snapshot: date = SNAPSHOT) -> Dataset:
    """A Dataset on a local directory."""
    return Dataset(str(root), snapshot, run_id, settings)


def partition(root: Path, table: str, snapshot: date = SNAPSHOT) -> Path:
    """The partition directory of a table."""
    return root / table / f"snapshot_date={snapshot.isoformat()}"


def part_files(root: Path, table: str, snapshot: date = SNAPSHOT) -> list[Path]:
    """The published files of a table, in order."""
    return sorted(partition(root, table, snapshot).glob("*.parquet"))


def published_rows(root: Path, table: str) -> list[ROW]:
    """The rows of a table's published files, in file order."""
    return [row for path in part_files(root, table) for row in pq.read_table(path).to_pylist()]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[ROW]], dict[str, Any]]:
    """A snapshot of three accounts plus run-level rows: its root, the rows staged by table, its manifest."""
    root = tmp_path_factory.mktemp("published")
    dataset = new_dataset(root)
    dataset.check_writable()
    expected: dict[str, list[ROW]] = {table: [] for table in schema.STAGED_TABLES}
    for account_id in reversed(ACCOUNTS):
        for table, rows in unit_rows(account_id).items():
            expected[table].extend(rows)
        dataset.stage(account_id, unit_rows(account_id))
    run_errors = [make_row("errors", None, 9), make_row("errors", ACCOUNTS[1], 50)]
    expected["errors"].extend(run_errors)
    dataset.stage("_run", {"errors": run_errors})
    manifest = dataset.publish({"status": "ignored", "accounts_failed": 0, "started_at": BASE_TIME})
    return root, {table: sorted_rows(rows, table) for table, rows in expected.items()}, manifest


def normalize(value: Any) -> Any:
    """A value read by pandas as the plain Python value it stands for."""
    if isinstance(value, np.ndarray | list):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items()}
    if value is None or pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


@pytest.mark.parametrize("table", schema.STAGED_TABLES)
def test_round_trip_with_pyarrow_dataset(published: tuple[Path, dict[str, list[ROW]], Any], table: str) -> None:
    root, expected, _ = published
    read = pads.dataset(root / table, partitioning="hive").to_table()
    assert set(read.column("snapshot_date").to_pylist()) == {SNAPSHOT.isoformat()}
    rows = read.drop_columns(["snapshot_date"]).to_pylist()
    assert sorted_rows(rows, table) == expected[table]
    for field in schema.TABLES[table]:
        if pa.types.is_timestamp(field.type):
            assert read.schema.field(field.name).type == pa.timestamp("us", tz="UTC")
    if "account_id" in schema.TABLES[table].names:  # organizations_access has none: its rows are the run's
        assert {row["account_id"] for row in rows} - {None} == set(ACCOUNTS)


@pytest.mark.parametrize("table", schema.STAGED_TABLES)
def test_round_trip_with_pandas(published: tuple[Path, dict[str, list[ROW]], Any], table: str) -> None:
    root, expected, _ = published
    frame = pd.read_parquet(root / table)
    assert set(frame["snapshot_date"].astype(str)) == {SNAPSHOT.isoformat()}
    for field in schema.TABLES[table]:
        if pa.types.is_timestamp(field.type):
            assert str(frame[field.name].dtype) == "datetime64[us, UTC]"
    records = [{key: normalize(value) for key, value in record.items()}
               for record in frame.drop(columns="snapshot_date").to_dict("records")]
    assert sorted_rows(records, table) == expected[table]
    if "account_id" in schema.TABLES[table].names:
        assert set(frame["account_id"].dropna()) == set(ACCOUNTS)


@pytest.mark.parametrize("table", schema.STAGED_TABLES)
def test_round_trip_with_duckdb(published: tuple[Path, dict[str, list[ROW]], Any], table: str) -> None:
    root, expected, _ = published
    query = f"SELECT * FROM read_parquet('{root}/{table}/**/*.parquet', hive_partitioning=true)"
    read = duckdb.connect().sql(query).to_arrow_table()
    assert set(read.column("snapshot_date").to_pylist()) == {SNAPSHOT}
    rows = read.drop_columns(["snapshot_date"]).to_pylist()
    assert sorted_rows(rows, table) == expected[table]
    for field in schema.TABLES[table]:
        if pa.types.is_timestamp(field.type):
            # DuckDB shows instants in its session time zone; the row comparison above checks the instants.
            kind = read.schema.field(field.name).type
            assert kind.unit == "us" and kind.tz is not None


@pytest.mark.parametrize("table", schema.STAGED_TABLES)
@pytest.mark.parametrize("content", ["full", "empty", "all_null"])
def test_published_files_have_the_table_schema(tmp_path: Path, table: str, content: str) -> None:
    dataset = new_dataset(tmp_path)
    if content != "empty":
        dataset.stage(ACCOUNTS[0], {table: [make_row(table, ACCOUNTS[0], 0, nulls=content == "all_null")]})
    dataset.publish({})
    files = part_files(tmp_path, table)
    assert len(files) == 1
    file_schema = pq.read_schema(files[0])
    assert file_schema.equals(schema.TABLES[table], check_metadata=False)
    assert schema.PARTITION_COLUMN not in file_schema.names
    assert pq.ParquetFile(files[0]).metadata.num_rows == (0 if content == "empty" else 1)


def test_an_empty_table_is_staged_without_a_file_and_published_with_its_schema(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], {"errors": [], "accounts": [make_row("accounts", ACCOUNTS[0], 0)]})
    unit_dir = tmp_path / "_staging" / SNAPSHOT.isoformat() / RUN_ID / ACCOUNTS[0]
    assert sorted(path.name for path in unit_dir.iterdir()) == ["DONE", "accounts.parquet"]

    manifest = dataset.publish({})

    assert manifest["tables"]["errors"]["rows"] == 0 and manifest["tables"]["accounts"]["rows"] == 1
    assert pq.read_schema(part_files(tmp_path, "errors")[0]).equals(schema.ERRORS, check_metadata=False)


def test_rows_are_sorted_across_units_and_row_groups(tmp_path: Path) -> None:
    settings = OutputSettings(row_group_rows=3, max_rows_per_file=7)
    dataset = new_dataset(tmp_path, settings)
    rows_by_unit: dict[str, list[ROW]] = {
        account_id: [make_row("errors", account_id, index) for index in random.Random(3).sample(range(40), 10)]
        for account_id in ACCOUNTS}
    # Run-level rows fall between and inside the accounts' ranges, and after them (no account).
    rows_by_unit["_run"] = [make_row("errors", account_id, index) for account_id in ACCOUNTS for index in (0, 41)]
    rows_by_unit["_run"] += [make_row("errors", "000000000001", 5), make_row("errors", None, 1)]
    for unit in random.Random(5).sample(sorted(rows_by_unit), len(rows_by_unit)):
        dataset.stage(unit, {"errors": rows_by_unit[unit]})
    dataset.publish({})
    rows = published_rows(tmp_path, "errors")
    everything = [row for unit_rows in rows_by_unit.values() for row in unit_rows]
    assert rows == sorted_rows(everything, "errors")
    assert rows[0]["account_id"] == "000000000001" and rows[-1]["account_id"] is None


def test_files_roll_at_max_rows_in_row_groups(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path, OutputSettings(row_group_rows=2, max_rows_per_file=5))
    dataset.stage(ACCOUNTS[0], {"entities": [make_row("entities", ACCOUNTS[0], index) for index in range(7)]})
    dataset.stage(ACCOUNTS[1], {"entities": [make_row("entities", ACCOUNTS[1], index) for index in range(5)]})
    manifest = dataset.publish({})
    files = part_files(tmp_path, "entities")
    assert [path.name for path in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    groups = [[pq.ParquetFile(path).metadata.row_group(group).num_rows
               for group in range(pq.ParquetFile(path).metadata.num_row_groups)] for path in files]
    assert groups == [[2, 2, 1], [2, 2, 1], [2]]
    assert [entry["rows"] for entry in manifest["tables"]["entities"]["files"]] == [5, 5, 2]


def test_rerun_of_a_date_replaces_its_partition(tmp_path: Path) -> None:
    small_files = OutputSettings(row_group_rows=2, max_rows_per_file=2)
    first = new_dataset(tmp_path, small_files, run_id="first")
    first.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], index) for index in range(5)]})
    first.publish({})
    other_day = new_dataset(tmp_path, small_files, run_id="other-day", snapshot=SNAPSHOT - timedelta(days=1))
    other_day.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], 0)]})
    other_day.publish({})
    assert len(part_files(tmp_path, "errors")) == 3
    second = new_dataset(tmp_path, small_files, run_id="second")
    second.stage(ACCOUNTS[1], {"errors": [make_row("errors", ACCOUNTS[1], 0)] * 1})
    second.publish({})
    assert [path.name for path in part_files(tmp_path, "errors")] == ["part-00000.parquet"]
    assert [row["account_id"] for row in published_rows(tmp_path, "errors")] == [ACCOUNTS[1]]
    assert len(part_files(tmp_path, "errors", SNAPSHOT - timedelta(days=1))) == 1
    read = pads.dataset(tmp_path / "errors", partitioning="hive").to_table()
    assert read.num_rows == 2
    latest = latest_manifest(str(tmp_path), SNAPSHOT)
    assert latest is not None and latest["run_id"] == "second"
    assert not (tmp_path / "_staging" / SNAPSHOT.isoformat()).exists()


def test_only_units_with_done_are_staged_and_published(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], 0)]})
    dataset.stage(ACCOUNTS[1], {"errors": [make_row("errors", ACCOUNTS[1], 0)]})
    # A crash between the unit's files and its DONE marker.
    (tmp_path / "_staging" / SNAPSHOT.isoformat() / RUN_ID / ACCOUNTS[1] / "DONE").unlink()
    assert dataset.staged_units() == {ACCOUNTS[0]}
    manifest = dataset.publish({})
    assert [row["account_id"] for row in published_rows(tmp_path, "errors")] == [ACCOUNTS[0]]
    assert manifest["tables"]["errors"]["rows"] == 1


def test_staging_a_unit_again_replaces_it(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], unit_rows(ACCOUNTS[0]))
    retry = make_row("errors", ACCOUNTS[0], 99)
    dataset.stage(ACCOUNTS[0], {"errors": [retry]})
    assert dataset.staged_units() == {ACCOUNTS[0]}
    manifest = dataset.publish({})
    assert published_rows(tmp_path, "errors") == [retry]
    assert manifest["tables"]["entities"]["rows"] == 0


def test_manifest_describes_the_published_files(published: tuple[Path, dict[str, list[ROW]], dict[str, Any]]) -> None:
    root, expected, manifest = published
    assert read_manifest(str(root), RUN_ID) == manifest
    assert manifest["run_id"] == RUN_ID and manifest["snapshot_date"] == SNAPSHOT.isoformat()
    assert manifest["started_at"] == BASE_TIME.isoformat()
    assert manifest["status"] == "published" and manifest["accounts_failed"] == 0
    assert datetime.fromisoformat(manifest["published_at"]).tzinfo is not None
    assert set(manifest["tables"]) == set(schema.TABLES)
    assert manifest["tables"]["crawl_runs"]["rows"] == 1
    for table, entry in manifest["tables"].items():
        if table == "crawl_runs":
            continue
        assert entry["rows"] == len(expected[table]) == sum(file["rows"] for file in entry["files"])
        assert [file["path"] for file in entry["files"]] == [
            path.relative_to(root).as_posix() for path in part_files(root, table)]
        for file in entry["files"]:
            content = (root / file["path"]).read_bytes()
            assert file["bytes"] == len(content)
            assert file["sha256"] == hashlib.sha256(content).hexdigest()
            assert file["rows"] == pq.ParquetFile(root / file["path"]).metadata.num_rows
    assert latest_manifest(str(root)) == read_manifest(str(root), RUN_ID)
    assert not (root / "_staging" / SNAPSHOT.isoformat()).exists()


def test_manifest_is_written_after_every_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], unit_rows(ACCOUNTS[0]))
    write_manifest = Dataset._write_manifest
    seen: list[str] = []

    def checked_write_manifest(self: Dataset, document: Mapping[str, Any]) -> None:
        for entry in document["tables"].values():
            assert all((tmp_path / file["path"]).is_file() for file in entry["files"])
        seen.append(document["run_id"])
        write_manifest(self, document)

    monkeypatch.setattr(Dataset, "_write_manifest", checked_write_manifest)
    dataset.publish({})
    assert seen == [RUN_ID]


def test_failed_publish_writes_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], unit_rows(ACCOUNTS[0]))

    def broken_replace(self: Dataset, table: str, built: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "_replace_partition", broken_replace)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.publish({})
    assert not (tmp_path / "runs").exists()
    assert dataset.staged_units() == {ACCOUNTS[0]}


def test_publish_after_a_failed_publish_of_the_same_run(tmp_path: Path) -> None:
    new_dataset(tmp_path, run_id="first").publish({})
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], 0)]})
    # What a crash leaves: a half-built partition and a partition set aside.
    run_dir = tmp_path / "_staging" / SNAPSHOT.isoformat() / RUN_ID
    for leftover in (run_dir / "_publish" / "errors", run_dir / "_replaced" / "errors"):
        leftover.mkdir(parents=True)
        (leftover / "part-00000.parquet").write_bytes(b"stale")
    dataset.publish({})
    assert [row["account_id"] for row in published_rows(tmp_path, "errors")] == [ACCOUNTS[0]]
    assert not run_dir.exists()


def test_write_run_manifest_is_not_a_published_snapshot(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    dataset.write_run_manifest({"status": "interrupted", "stopped_at": BASE_TIME, "run_id": "spoofed"})
    manifest = read_manifest(str(tmp_path), RUN_ID)
    assert manifest == {"status": "interrupted", "stopped_at": BASE_TIME.isoformat(), "run_id": RUN_ID,
                        "snapshot_date": SNAPSHOT.isoformat()}
    assert latest_manifest(str(tmp_path)) is None
    assert not list(tmp_path.glob("runs/*.tmp-*"))


def test_latest_manifest_picks_the_newest_published(tmp_path: Path) -> None:
    assert latest_manifest(str(tmp_path)) is None
    for run_id, snapshot in (("a", SNAPSHOT), ("b", SNAPSHOT - timedelta(days=1)), ("c", SNAPSHOT)):
        new_dataset(tmp_path, run_id=run_id, snapshot=snapshot).publish({})
    new_dataset(tmp_path, run_id="d").write_run_manifest({"status": "failed"})
    newest = latest_manifest(str(tmp_path))
    older_day = latest_manifest(str(tmp_path), SNAPSHOT - timedelta(days=1))
    assert newest is not None and newest["run_id"] == "c"
    assert older_day is not None and older_day["run_id"] == "b"
    assert latest_manifest(str(tmp_path), date(2000, 1, 1)) is None


def test_read_manifest_of_an_unknown_run_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no manifest for run nope"):
        read_manifest(str(tmp_path), "nope")


def test_corrupt_staged_file_fails_publish(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    dataset.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], 0)]})
    (tmp_path / "_staging" / SNAPSHOT.isoformat() / RUN_ID / ACCOUNTS[0] / "errors.parquet").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="cannot publish"):
        dataset.publish({})


def test_check_writable_creates_the_root_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "new" / "root"
    new_dataset(root).check_writable()
    assert root.is_dir() and not list(root.iterdir())


def test_check_writable_fails_on_a_read_only_directory(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        try:
            (read_only / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("permissions are not enforced here (running as root?)")
        with pytest.raises(DatasetError, match="is not writable"):
            new_dataset(read_only).check_writable()
    finally:
        read_only.chmod(0o755)


@pytest.mark.parametrize(("relative", "message"), [("a-file", "is a file"), ("a-file/below", "is not writable")])
def test_check_writable_fails_on_a_file(tmp_path: Path, relative: str, message: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(DatasetError, match=message):
        new_dataset(tmp_path / relative).check_writable()


@pytest.mark.parametrize(("table", "change"), [
    ("errors", {"not_a_column": 1}),
    ("errors", {schema.PARTITION_COLUMN: SNAPSHOT}),
    ("errors", {"occurred_at": datetime(2024, 1, 1)}),
    ("entities", {"create_date": datetime(2024, 1, 1)}),
    ("errors", {"stage": None}),
    ("no_such_table", {}),
])
def test_bad_rows_raise_value_error_before_writing(tmp_path: Path, table: str, change: ROW) -> None:
    row = {**make_row(table if table in schema.TABLES else "errors", ACCOUNTS[0], 0), **change}
    with pytest.raises(ValueError):
        new_dataset(tmp_path).stage(ACCOUNTS[0], {table: [row]})
    assert not (tmp_path / "_staging").exists()


def test_aware_timestamps_in_other_zones_keep_their_instant(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    local = datetime(2024, 1, 1, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    dataset.stage(ACCOUNTS[0], {"errors": [{**make_row("errors", ACCOUNTS[0], 0), "occurred_at": local}]})
    dataset.publish({})
    [row] = published_rows(tmp_path, "errors")
    assert row["occurred_at"] == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert row["occurred_at"].utcoffset() == timedelta(0)


@pytest.mark.parametrize("run_id", ["", ".", "..", "../x", "a/b", "a b", "x" * 65, "run\n"])
def test_bad_run_ids_are_rejected(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        new_dataset(tmp_path, run_id=run_id)


@pytest.mark.parametrize("run_id", ["a", "20240501T000000Z-ab12", "a.b_c-D", "x" * 64])
def test_good_run_ids_are_accepted(tmp_path: Path, run_id: str) -> None:
    assert new_dataset(tmp_path, run_id=run_id).run_id == run_id


@pytest.mark.parametrize("unit", ["", "12345678901", "1234567890123", "../000000000001", "_runs", "run", "1234567890a"])
def test_bad_units_are_rejected(tmp_path: Path, unit: str) -> None:
    with pytest.raises(ValueError, match="invalid staging unit"):
        new_dataset(tmp_path).stage(unit, {})
    assert not (tmp_path / "_staging").exists()


@pytest.mark.parametrize(("compression", "level", "codec"), [
    ("zstd", 9, "ZSTD"), ("snappy", None, "SNAPPY"), ("gzip", 1, "GZIP"), ("none", None, "UNCOMPRESSED")])
def test_compression_settings(tmp_path: Path, compression: str, level: int | None, codec: str) -> None:
    dataset = new_dataset(tmp_path, OutputSettings(compression=compression, compression_level=level))
    dataset.stage(ACCOUNTS[0], {"errors": [make_row("errors", ACCOUNTS[0], 0)]})
    dataset.publish({})
    metadata = pq.ParquetFile(part_files(tmp_path, "errors")[0]).metadata
    assert metadata.row_group(0).column(0).compression == codec
    assert metadata.format_version == "2.6"


def test_snapshot_date_must_be_a_date(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Dataset(str(tmp_path), datetime(2024, 5, 1, tzinfo=UTC), RUN_ID, SETTINGS)


def test_relative_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dataset = Dataset("out", SNAPSHOT, RUN_ID, SETTINGS)
    dataset.stage(ACCOUNTS[0], {"accounts": [make_row("accounts", ACCOUNTS[0], 0)]})
    dataset.publish({})
    assert os.path.isfile(tmp_path / "out" / "runs" / f"{RUN_ID}.json")


def test_exchange_directories_swaps_atomically(tmp_path: Path) -> None:
    from crawler.store.dataset import exchange_directories

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from-a").write_text("a")
    (tmp_path / "b" / "from-b").write_text("b")
    if not exchange_directories(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["from-b"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"]


def test_a_reader_during_republishing_sees_one_whole_snapshot(tmp_path: Path) -> None:
    import threading

    from crawler.store.dataset import exchange_directories

    if not exchange_directories(str(tmp_path), str(tmp_path)):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    rows = unit_rows("001234567000")
    first = new_dataset(tmp_path, run_id="run-0")
    first.stage("001234567000", rows)
    first.publish({})
    expected = len(rows["service_last_accessed"])
    done, seen = threading.Event(), []

    def republish() -> None:
        for attempt in range(1, 15):
            dataset = new_dataset(tmp_path, run_id=f"run-{attempt}")
            dataset.stage("001234567000", rows)
            dataset.publish({})
        done.set()

    writer = threading.Thread(target=republish)
    writer.start()
    while not done.is_set():
        table = pads.dataset(tmp_path / "service_last_accessed", format="parquet", partitioning="hive").to_table()
        seen.append(table.num_rows)
    writer.join()
    assert seen and set(seen) == {expected}


# -- what a publish checks and records ----------------------------------------------------------------
def staged_counts(account_ids: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Rows per table of each unit, as the run that staged ``unit_rows`` believes."""
    return {account_id: {table: len(rows) for table, rows in unit_rows(account_id).items()}
            for account_id in account_ids}


def test_a_publish_refuses_a_staging_area_that_lost_a_unit(tmp_path: Path) -> None:
    """Another process emptied part of the run's staging: nothing is published, not a partial snapshot."""
    dataset = new_dataset(tmp_path)
    for account_id in ACCOUNTS:
        dataset.stage(account_id, unit_rows(account_id))
    dataset.discard(ACCOUNTS[1])

    with pytest.raises(DatasetError, match=f"not staged: {ACCOUNTS[1]}"):
        dataset.publish({"started_at": BASE_TIME}, staged_counts(ACCOUNTS))

    assert latest_manifest(str(tmp_path)) is None and not partition(tmp_path, "accounts").exists()
    dataset.stage(ACCOUNTS[1], unit_rows(ACCOUNTS[1]))
    assert dataset.publish({"started_at": BASE_TIME}, staged_counts(ACCOUNTS))["tables"]["accounts"]["rows"] == 3


def test_a_publish_refuses_a_unit_staged_with_other_rows(tmp_path: Path) -> None:
    dataset = new_dataset(tmp_path)
    for account_id in ACCOUNTS:
        dataset.stage(account_id, unit_rows(account_id))
    dataset.stage(ACCOUNTS[0], {"accounts": unit_rows(ACCOUNTS[0])["accounts"]})

    with pytest.raises(DatasetError, match=f"staged with other rows: {ACCOUNTS[0]}"):
        dataset.publish({"started_at": BASE_TIME}, staged_counts(ACCOUNTS))


def test_staging_a_table_written_at_publish_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crawl_runs is written when the snapshot is published"):
        new_dataset(tmp_path).stage(ACCOUNTS[0], {"crawl_runs": []})


def test_publishing_a_date_again_supersedes_the_earlier_manifest_and_crawl_runs_lists_both(tmp_path: Path) -> None:
    from crawler.crawl.runs import refuse_published
    from crawler.errors import UsageError

    for run_id, started in (("first", BASE_TIME), ("second", BASE_TIME + timedelta(hours=1))):
        dataset = new_dataset(tmp_path, run_id=run_id)
        dataset.stage(ACCOUNTS[0], unit_rows(ACCOUNTS[0]))
        dataset.publish({"started_at": started.isoformat(), "accounts": {"selected": 1, "ok": 1}})
    abandoned = new_dataset(tmp_path, run_id="abandoned")
    abandoned.write_run_manifest({"status": "interrupted", "started_at": (BASE_TIME + timedelta(hours=2)).isoformat()})
    third = new_dataset(tmp_path, run_id="third")
    third.stage(ACCOUNTS[0], unit_rows(ACCOUNTS[0]))
    third.publish({"started_at": (BASE_TIME + timedelta(hours=3)).isoformat()})

    statuses = {run_id: read_manifest(str(tmp_path), run_id) for run_id in ("first", "second", "abandoned", "third")}
    assert {run_id: document["status"] for run_id, document in statuses.items()} == {
        "first": "superseded", "second": "superseded", "abandoned": "interrupted", "third": "published"}
    assert statuses["second"]["superseded_by"] == "third" and statuses["first"]["superseded_by"] == "second"
    runs = published_rows(tmp_path, "crawl_runs")
    assert [(row["run_id"], row["status"], row["superseded_by"]) for row in runs] == [
        ("first", "superseded", "second"), ("second", "superseded", "third"), ("abandoned", "interrupted", None),
        ("third", "published", None)]
    assert runs[1]["accounts_ok"] == 1 and runs[1]["started_at"] == BASE_TIME + timedelta(hours=1)
    assert {item["table"]: item["rows"] for item in runs[3]["table_rows"]} == {
        table: entry["rows"] for table, entry in read_manifest(str(tmp_path), "third")["tables"].items()
        if table != "crawl_runs"}
    with pytest.raises(UsageError, match="already published"):
        refuse_published(str(tmp_path), "second")
