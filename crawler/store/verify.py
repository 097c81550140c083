"""Check a published snapshot against its run manifest: every file present, intact, of the right rows and schema.

The manifest ``runs/<run_id>.json`` names each table's files with their rows, size and SHA-256
(see :mod:`crawler.store.dataset`). :func:`verify_snapshot` compares the snapshot's partitions with the
newest published manifest of that date and turns every difference into a :class:`Problem`; it
reads files through ``pyarrow.fs`` in chunks, so it works on object storage and on large files.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeGuard

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crawler.errors import UsageError
from crawler.listing import visible
from crawler.outcomes import AccountOutcome
from crawler.store import schema
from crawler.store.dataset import (
    PUBLISHED,
    RUNS_DIR,
    STORAGE_ERRORS,
    DatasetError,
    open_filesystem,
    resolve_manifest_path,
    scan_manifests,
)
from crawler.store.parquet import PartFile, describe_file, file_schema
from crawler.store.published import choose_published, manifest_date

MISSING = "missing"
EXTRA = "extra"
CORRUPT = "corrupt"
ROWS = "rows"
SCHEMA = "schema"
MANIFEST = "manifest"
SUMMARY = "summary"
#: Every kind of problem, in the order of the docs.
KINDS = (MISSING, EXTRA, CORRUPT, ROWS, SCHEMA, MANIFEST, SUMMARY)
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
#: Hex digits of a SHA-256 shown in a problem's detail.
SHORT_DIGEST = 16
#: Errors of the filesystem and of reading a file that is not what it should be.
READ_ERRORS = (*STORAGE_ERRORS, ValueError)


@dataclass(frozen=True)
class Problem:
    """One difference between the snapshot and its manifest.

    ``kind`` is one of :data:`KINDS`: ``missing`` (in the manifest, not on disk), ``extra`` (on disk in
    a partition of the snapshot, not in the manifest), ``corrupt`` (size or SHA-256 differs, or not
    readable as Parquet), ``rows`` (the file's Parquet metadata has another row count), ``schema``
    (another schema than the table's), ``manifest`` (no published manifest, or an unreadable or
    incomplete one) or ``summary`` (the tables disagree with the manifest's own account of the run:
    accounts by outcome, entities by job outcome, errors, rows staged per table, its crawl_runs
    row). ``path`` is relative to the root (a data file, a partition or a manifest).
    """

    kind: str
    path: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_snapshot` found: the snapshot, its run, rows per table (per the manifest), problems."""

    root: str
    snapshot_date: date | None
    run_id: str | None
    tables: dict[str, int]
    files_checked: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """True when the snapshot matches its manifest exactly."""
        return not self.problems


def verify_snapshot(root: str, snapshot_date: date | None = None) -> VerifyReport:
    """Check the snapshot of ``snapshot_date`` (the newest published one when None) under ``root``.

    Uses the most recently published manifest of that date and checks each file it names (exists,
    size, SHA-256, readable Parquet, row count, schema), then reports any file in the snapshot's
    partitions that it does not name. A damaged dataset never raises: everything becomes a
    :class:`Problem`. Raises UsageError only when ``root`` does not exist or is not a directory.
    """
    filesystem, base = _open_root(root)
    found, problems = _find_manifest(filesystem, base, snapshot_date)
    if found is None:
        return VerifyReport(root, snapshot_date, None, {}, 0, tuple(problems))
    manifest_path, document = found
    run_id = str(document.get("run_id") or manifest_path.rsplit("/", 1)[-1].removesuffix(".json"))
    published_date = manifest_date(document)
    if published_date is None:
        detail = f"snapshot_date {document.get('snapshot_date')!r} is not a date (YYYY-MM-DD)"
        return VerifyReport(root, snapshot_date, run_id, {}, 0, (*problems, Problem(MANIFEST, manifest_path, detail)))
    entries, rows, table_problems = _read_tables(document, manifest_path, published_date)
    problems.extend(table_problems)
    for table, files in entries.items():
        for entry in files:
            problems.extend(_check_file(filesystem, base, table, entry))
    named = {entry.path for files in entries.values() for entry in files}
    problems.extend(_extra_files(filesystem, base, published_date, named))
    if not problems:  # the files are what the manifest says: do they hold what the run says it crawled?
        problems.extend(Problem(SUMMARY, manifest_path, detail)
                        for detail in summary_disagreements(filesystem, base, document, entries))
    files_checked = sum(len(files) for files in entries.values())
    return VerifyReport(root, published_date, run_id, rows, files_checked, tuple(problems))


def format_report(report: VerifyReport) -> str:
    """The report for people: one line per problem, then a summary line (no trailing newline).

    Paths and details are escaped (``\\n``, ``\\x1b``), so each problem stays on one line.
    """
    lines = [f"{problem.kind:<8} {visible(problem.path)}: {visible(problem.detail)}" for problem in report.problems]
    when = report.snapshot_date.isoformat() if report.snapshot_date else "(none)"
    run = f"run {visible(report.run_id)}" if report.run_id else "no published run"
    counts = ", ".join([_plural(len(report.tables), "table"), _plural(report.files_checked, "file"),
                        _plural(sum(report.tables.values()), "row")])
    verdict = "OK" if report.ok else _plural(len(report.problems), "problem")
    lines.append(f"snapshot {when} ({run}): {counts}: {verdict}")
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of ``root``; UsageError unless it is an existing directory."""
    try:
        filesystem, base = open_filesystem(root)
        kind = filesystem.get_file_info(base).type
    except (*STORAGE_ERRORS, DatasetError) as error:
        raise UsageError(f"cannot open dataset root {root}: {error}") from error
    if kind == pafs.FileType.NotFound:
        raise UsageError(f"dataset root {root} does not exist")
    if kind != pafs.FileType.Directory:
        raise UsageError(f"dataset root {root} is not a directory")
    return filesystem, base


def _find_manifest(filesystem: pafs.FileSystem, base: str,
                   snapshot_date: date | None) -> tuple[tuple[str, dict[str, Any]] | None, list[Problem]]:
    """The published manifest of the date (None: of the latest date published, as every reader picks it)
    as (relative path, document), and the problems of the manifests met on the way."""
    try:
        documents, unreadable = scan_manifests(filesystem, base)
    except STORAGE_ERRORS as error:
        return None, [Problem(MANIFEST, RUNS_DIR, f"cannot list the manifests: {error}")]
    problems = [Problem(MANIFEST, path, f"unreadable manifest: {why}") for path, why in unreadable]
    undated = [Problem(MANIFEST, path, f"snapshot_date {document.get('snapshot_date')!r} is not a date (YYYY-MM-DD)")
               for path, document in documents
               if document.get("status") == PUBLISHED and manifest_date(document) is None]
    chosen = choose_published([document for _, document in documents], snapshot_date)
    if chosen is None and undated:
        return None, [*problems, *undated]
    if chosen is None:
        wanted = snapshot_date.isoformat() if snapshot_date is not None else None
        unpublished = [f"{document.get('run_id') or path.rsplit('/', 1)[-1].removesuffix('.json')} is "
                       f"{document.get('status')}" for path, document in documents
                       if wanted in (None, document.get("snapshot_date")) and document.get("status") != PUBLISHED]
        detail = f"no published manifest{f' for snapshot {wanted}' if wanted else ''}"
        problems.append(Problem(MANIFEST, RUNS_DIR, detail + "".join(f"; run {run}" for run in unpublished)))
        return None, problems
    path = next(path for path, document in documents if document is chosen)
    return (path, dict(chosen)), problems


def _partition(table: str, snapshot_date: date) -> str:
    return f"{table}/{schema.PARTITION_COLUMN}={snapshot_date.isoformat()}"


def _read_tables(document: Mapping[str, Any], manifest_path: str,
                 snapshot_date: date) -> tuple[dict[str, list[PartFile]], dict[str, int], list[Problem]]:
    """The manifest's valid file entries and row counts per table, and problems with the manifest itself."""
    tables = document.get("tables")
    if not isinstance(tables, dict):
        return {}, {}, [Problem(MANIFEST, manifest_path, 'has no "tables" object')]
    problems = [Problem(MANIFEST, manifest_path, f"table {name!r} is not one of the crawler's tables")
                for name in tables if name not in schema.TABLES]
    entries: dict[str, list[PartFile]] = {}
    rows: dict[str, int] = {}
    for table in schema.TABLES:
        if table not in tables:
            if table not in schema.LATER_TABLES:  # else: a snapshot published before the table existed
                problems.append(Problem(MANIFEST, manifest_path, f"table {table} is missing from the manifest"))
            continue
        entries[table], rows[table], table_problems = _read_table(table, tables[table], snapshot_date)
        problems.extend(Problem(MANIFEST, manifest_path, detail) for detail in table_problems)
    return entries, rows, problems


def _read_table(table: str, entry: Any, snapshot_date: date) -> tuple[list[PartFile], int, list[str]]:
    """One table's valid file entries, its row count and what is wrong with its entry."""
    where = f"tables.{table}"
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
        return [], 0, [f"{where} has no list of files"]
    files: dict[str, PartFile] = {}
    problems: list[str] = []
    for index, item in enumerate(entry["files"]):
        parsed = _file_entry(item, table, snapshot_date)
        if isinstance(parsed, str) or parsed.path in files:
            problems.append(f"{where}.files[{index}]: {parsed if isinstance(parsed, str) else 'listed twice'}")
        else:
            files[parsed.path] = parsed
    total = sum(file.rows for file in files.values())
    declared = entry.get("rows")
    if not _is_count(declared):
        problems.append(f"{where}.rows {declared!r} is not a row count")
        return list(files.values()), total, problems
    if declared != total and not problems:
        problems.append(f"{where}.rows is {declared:,} but its files hold {total:,}")
    return list(files.values()), declared, problems


def _file_entry(item: Any, table: str, snapshot_date: date) -> PartFile | str:
    """A file entry of the manifest, or what is wrong with it."""
    if not isinstance(item, dict):
        return "not an object"
    path, rows, size, digest = (item.get(key) for key in ("path", "rows", "bytes", "sha256"))
    try:
        resolve_manifest_path("", path, table, snapshot_date)  # a file (str) in its partition, as readers require
    except ValueError as error:
        return str(error)
    if not (_is_count(rows) and _is_count(size)):
        return f"rows {rows!r} or bytes {size!r} is not a count"
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        return f"sha256 {digest!r} is not 64 lowercase hex digits"
    return PartFile(path=str(path), rows=rows, bytes=size, sha256=digest)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_file(filesystem: pafs.FileSystem, base: str, table: str, entry: PartFile) -> list[Problem]:
    """The problems of one file the manifest names: missing, corrupt, other rows or another schema."""
    path = f"{base}/{entry.path}"
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return [Problem(MISSING, entry.path, f"in the manifest ({_plural(entry.rows, 'row')}, "
                                                 f"{_plural(entry.bytes, 'byte')}) but not on disk")]
        if info.type != pafs.FileType.File:
            return [Problem(CORRUPT, entry.path, "not a file")]
        mismatch = _content_mismatch(filesystem, path, info.size, entry)
    except READ_ERRORS as error:
        return [Problem(CORRUPT, entry.path, f"cannot read: {error}")]
    if mismatch:
        return [Problem(CORRUPT, entry.path, mismatch)]
    try:
        rows, actual = _parquet_footer(filesystem, path)
    except READ_ERRORS as error:
        return [Problem(CORRUPT, entry.path, f"not readable as Parquet: {error}")]
    problems = []
    if rows != entry.rows:
        problems.append(Problem(ROWS, entry.path, f"{rows:,} rows in the file, {entry.rows:,} in the manifest"))
    expected = file_schema(table)
    if not actual.equals(expected, check_metadata=False):
        difference = _schema_difference(expected, actual)
        problems.append(Problem(SCHEMA, entry.path, f"not the {table} schema: {difference}"))
    return problems


def _content_mismatch(filesystem: pafs.FileSystem, path: str, size: int | None, entry: PartFile) -> str:
    """How the file's bytes differ from the manifest ("" when size and SHA-256 match); hashed in chunks."""
    digest = ""
    if size is None or size == entry.bytes:  # no need to read a file of the wrong size
        described = describe_file(filesystem, path, entry.rows)
        size, digest = described.bytes, described.sha256
    if size != entry.bytes:
        return f"{_plural(size, 'byte')} on disk, {_plural(entry.bytes, 'byte')} in the manifest"
    if digest != entry.sha256:
        return f"sha256 {digest[:SHORT_DIGEST]}... on disk, {entry.sha256[:SHORT_DIGEST]}... in the manifest"
    return ""


def _parquet_footer(filesystem: pafs.FileSystem, path: str) -> tuple[int, pa.Schema]:
    """Rows (from the metadata) and Arrow schema of a Parquet file; Arrow or OS errors if it is not one."""
    with filesystem.open_input_file(path) as source:
        parquet_file = pq.ParquetFile(source)
        return parquet_file.metadata.num_rows, parquet_file.schema_arrow


def _schema_difference(expected: pa.Schema, actual: pa.Schema) -> str:
    """The columns missing, unexpected or of another type or nullability in ``actual``."""
    wanted = {field.name: field for field in expected}
    found = {field.name: field for field in actual}
    parts = []
    if missing := [name for name in wanted if name not in found]:
        parts.append("missing " + ", ".join(missing))
    if unexpected := [name for name in found if name not in wanted]:
        parts.append("unexpected " + ", ".join(unexpected))
    parts.extend(f"{name} is {_field_type(found[name])}, expected {_field_type(field)}"
                 for name, field in wanted.items()
                 if name in found and not found[name].equals(field, check_metadata=False))
    if not parts:
        parts.append("columns in another order" if actual.names != expected.names else "duplicate columns")
    return "; ".join(parts)


def _field_type(field: pa.Field) -> str:
    return f"{field.type}{'' if field.nullable else ' not null'}"


def _extra_files(filesystem: pafs.FileSystem, base: str, snapshot_date: date, named: set[str]) -> list[Problem]:
    """Every file in the snapshot's partitions (of every table) that the manifest does not name."""
    problems: list[Problem] = []
    for table in schema.TABLES:
        partition = _partition(table, snapshot_date)
        selector = pafs.FileSelector(f"{base}/{partition}", recursive=True, allow_not_found=True)
        try:
            listing = filesystem.get_file_info(selector)
        except READ_ERRORS as error:
            problems.append(Problem(CORRUPT, partition, f"cannot list the partition: {error}"))
            continue
        on_disk = sorted(info.path.removeprefix(f"{base}/") for info in listing if info.type == pafs.FileType.File)
        problems.extend(Problem(EXTRA, path, "not in the manifest") for path in on_disk if path not in named)
    return problems


def summary_disagreements(filesystem: pafs.FileSystem, base: str, document: Mapping[str, Any],
                          entries: Mapping[str, list[PartFile]]) -> list[str]:
    """Where the published tables disagree with the manifest's summary of its run (nothing when they agree).

    The manifest counts accounts by outcome, entities by job outcome and errors from what each
    account staged; the tables must hold exactly that, so a snapshot that lost accounts (two
    processes in one staging directory, say) can never verify OK.
    """
    def column(table: str, name: str) -> list[Any]:
        return [value for entry in entries.get(table, ()) for value in
                pq.read_table(f"{base}/{entry.path}", columns=[name], filesystem=filesystem).column(name).to_pylist()]

    found: list[str] = []
    accounts = document.get("accounts")
    if isinstance(accounts, dict) and "accounts" in entries:
        outcomes = Counter(column("accounts", "outcome"))
        counted = {"selected": sum(outcomes.values()),
                   **{key: outcomes.get(key, 0) for key in (AccountOutcome.OK, *AccountOutcome.NOT_CRAWLED)}}
        found.extend(f"accounts.{key} is {accounts.get(key)!r} but the accounts table holds {count:,}"
                     for key, count in counted.items() if key in accounts and accounts.get(key) != count)
    entities = document.get("entities")
    if isinstance(entities, dict) and "entities" in entries:
        outcomes = Counter(column("entities", "job_outcome"))
        if outcomes != Counter({str(key): value for key, value in entities.items() if value}):
            found.append(f"entities is {dict(sorted(entities.items()))} but the entities table holds "
                         f"{dict(sorted(outcomes.items()))}")
    published_rows = {table: sum(entry.rows for entry in files) for table, files in entries.items()}
    if _is_count(document.get("errors")) and "errors" in entries and document["errors"] != published_rows["errors"]:
        found.append(f"errors is {document['errors']:,} but the errors table holds {published_rows['errors']:,}")
    staged = document.get("staged_rows")
    if isinstance(staged, dict):
        found.extend(f"staged_rows.{table} is {staged.get(table, 0)!r} but the table holds {rows:,}"
                     for table, rows in sorted(published_rows.items())
                     if table not in schema.RUN_TABLES and staged.get(table, 0) != rows)
    if "crawl_runs" in entries:
        found.extend(_run_row_disagreements(column, document, published_rows))
    return found


def _run_row_disagreements(column: Any, document: Mapping[str, Any], published_rows: Mapping[str, int]) -> list[str]:
    """Whether crawl_runs names this run, and only this run, as published, with the rows it published."""
    runs = list(zip(column("crawl_runs", "run_id"), column("crawl_runs", "status"), column("crawl_runs", "table_rows"),
                    strict=True))
    published = [(run_id, rows) for run_id, status, rows in runs if status == PUBLISHED]
    if [run_id for run_id, _ in published] != [document.get("run_id")]:
        return [f"crawl_runs names {[run_id for run_id, _ in published]} as published, not "
                f"[{document.get('run_id')!r}]"]
    recorded = {item["table"]: item["rows"] for item in published[0][1] or ()}
    expected = {table: rows for table, rows in published_rows.items() if table not in schema.RUN_TABLES}
    return [] if recorded == expected else [f"crawl_runs records the rows {recorded} but the tables hold {expected}"]
