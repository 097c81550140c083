"""The output dataset: per-unit staging, consolidation into sorted partitions, atomic publish, run manifests.

Layout under the output root::

    _staging/<date>/<run_id>/<unit>/<table>.parquet   a unit's rows (unit: 12-digit account id or "_run")
    _staging/<date>/<run_id>/<unit>/DONE              the unit's commit point, written last
    _staging/<date>/<run_id>/_shards/<K>-of-<N>.json  a shard's record, when the run is sharded
    _staging/<date>/<run_id>/_publishing.json         the claim of the shard that publishes it
    <table>/snapshot_date=<date>/part-NNNNN.parquet   consolidated, sorted, published
    runs/<run_id>.json                                the run manifest: the snapshot's commit point

All I/O goes through ``pyarrow.fs``, so the root may be a local path or a filesystem URI such
as ``s3://bucket/prefix``. The manifest is the commit point everywhere: a reader that follows
the latest published manifest only ever reads complete snapshots. Beyond that:

- On a local filesystem each partition is built aside and exchanged into place atomically, so
  readers that glob ``<table>/**/*.parquet`` never see a half-published snapshot either.
- An object store cannot rename a directory, and renaming an object is a copy. There a run
  writes its files into the partitions under names of its own (``part-<run_id>-NNNNN``), beside
  the files of the run it replaces; writes the manifest, which names only its files; and then
  deletes the replaced files. An object appears whole or not at all, but a glob reader may see
  both runs' files while a snapshot date is published again.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from crawler.config.settings import OutputSettings
from crawler.errors import CrawlerError
from crawler.outcomes import RunStatus
from crawler.store import schema
from crawler.store.lease import LEASES_DIR, LeaseStore, ObjectConditions
from crawler.store.parquet import PartFile, PartWriter, StagedFileError, merge_sorted, rows_to_table, write_file
from crawler.store.published import choose_published
from crawler.store.run_rows import SUPERSEDED, crawl_runs_rows

LOG = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"[0-9A-Za-z_.-]{1,64}")
UNIT_PATTERN = re.compile(r"[0-9]{12}|_run")
#: The unit of rows that belong to the run rather than to one account.
RUN_UNIT = "_run"
STAGING_DIR = "_staging"
CRAWL_RUNS = "crawl_runs"
RUNS_DIR = "runs"
DONE_MARKER = "DONE"
#: Inside a run's staging directory: the records of the shards that write it.
SHARDS_DIR = "_shards"
#: Inside a run's staging directory: the partitions being built, and the partitions they replaced.
BUILD_DIR = "_publish"
REPLACED_DIR = "_replaced"
PUBLISHED = RunStatus.PUBLISHED
#: Statuses of a run that has not published: still going (or killed), or stopped by a signal.
RUNNING, INTERRUPTED = RunStatus.RUNNING, RunStatus.INTERRUPTED
#: Errors of the filesystem and of reading or writing Parquet.
STORAGE_ERRORS = (OSError, pa.ArrowException, StagedFileError)


class DatasetError(CrawlerError):
    """The dataset cannot be written or read: output not writable, corrupt staging, missing manifest."""


class ClaimUnsupported(DatasetError):
    """The output's filesystem cannot create a file exclusively (only local disks and S3 can here)."""


def validate_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as a file name (letters, digits, ``_.-``; not ``.`` or ``..``), else ValueError."""
    if not RUN_ID_PATTERN.fullmatch(run_id) or run_id in (".", ".."):
        raise ValueError(f"invalid run id {run_id!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
    return run_id


def validate_unit(unit: str) -> str:
    """``unit`` if it is a 12-digit account id or ``_run``, else ValueError."""
    if not UNIT_PATTERN.fullmatch(unit):
        raise ValueError(f"invalid staging unit {unit!r}: expected a 12-digit account id or {RUN_UNIT!r}")
    return unit


def open_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``root`` (a local path or a URI such as ``s3://bucket/prefix``) and the path in it."""
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root)).replace(os.sep, "/")
    try:
        filesystem, path = pafs.FileSystem.from_uri(root)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot open output path {root}: {error}") from error
    return filesystem, path.rstrip("/")


def resolve_manifest_path(base: str, relative: object, table: str, snapshot_date: date) -> str:
    """``base``/``relative``: where a file that a manifest lists for ``table`` in ``snapshot_date``'s
    snapshot is read. Every reader of a manifest's file entries resolves them here.

    ValueError unless ``relative`` names a file directly in ``<table>/snapshot_date=<date>/``: an
    absolute path, a ``..`` or any other directory is refused, so a manifest cannot make a reader
    open a file outside its partition (``../../../etc/passwd``).
    """
    partition = f"{table}/{schema.PARTITION_COLUMN}={snapshot_date.isoformat()}"
    directory, _, name = relative.rpartition("/") if isinstance(relative, str) else ("", "", "")
    if directory != partition or name in ("", ".", ".."):
        raise ValueError(f"path {relative!r} is not a file in {partition}")
    return f"{base}/{relative}"


def check_writable(root: str) -> None:
    """Create ``root`` and write and delete a probe file in it; DatasetError with the reason otherwise."""
    filesystem, base = open_filesystem(root)
    try:
        if filesystem.get_file_info(base).type == pafs.FileType.File:
            raise DatasetError(f"output path {root} is a file, not a directory")
        filesystem.create_dir(base, recursive=True)
        probe = f"{base}/.write-probe-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(probe, compression=None) as stream:
            stream.write(b"access-crawler write probe\n")
        filesystem.delete_file(probe)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"output path {root} is not writable: {error}") from error


class Dataset:
    """One run's view of the dataset under ``root``: it stages units, then publishes the snapshot."""

    def __init__(self, root: str, snapshot_date: date, run_id: str, settings: OutputSettings,
                 objects: ObjectConditions | None = None) -> None:
        if isinstance(snapshot_date, datetime) or not isinstance(snapshot_date, date):
            raise TypeError(f"snapshot_date must be a date, not {type(snapshot_date).__name__}")
        self.root = root
        self.snapshot_date = snapshot_date
        self.run_id = validate_run_id(run_id)
        self.settings = settings
        #: Conditional writes on S3 (the session factory's client), for the publish claim.
        self.objects = objects
        self._fs, self._base = open_filesystem(root)
        #: Local directories rename and exchange atomically; objects in a store do not.
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._run_dir = f"{self._base}/{STAGING_DIR}/{snapshot_date.isoformat()}/{run_id}"

    def check_writable(self) -> None:
        """Create the root and write and delete a probe file in it; DatasetError with the reason otherwise."""
        check_writable(self.root)

    def stage(self, unit: str, tables: Mapping[str, Sequence[Mapping[str, Any]]],
              summary: Mapping[str, Any] | None = None) -> None:
        """Write a unit's rows, table by table, then its DONE marker; staging a unit again replaces it.

        Raises ValueError for a bad unit, table, column or naive datetime (before touching disk),
        DatasetError when the files cannot be written.
        """
        unit_dir = self._unit_dir(validate_unit(unit))
        if run_tables := sorted(set(tables) & schema.RUN_TABLES):
            raise ValueError(f"{', '.join(run_tables)} is written when the snapshot is published, not staged")
        arrow_tables = {table: rows_to_table(table, rows) for table, rows in tables.items()}
        try:
            self._delete_dir(unit_dir)
            self._fs.create_dir(unit_dir, recursive=True)
            for table, rows in arrow_tables.items():
                if rows.num_rows:  # an empty table needs no file: publishing reads the files there are
                    self._stage_table(unit_dir, table, rows)
            done = {"unit": unit, "rows": {table: rows.num_rows for table, rows in arrow_tables.items()},
                    "summary": dict(summary or {})}
            self._write_json(f"{unit_dir}/{DONE_MARKER}", done)
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot stage {unit} under {unit_dir}: {error}") from error

    def staged_units(self) -> set[str]:
        """The units staged completely (with their DONE marker)."""
        try:
            return set(_subdirectories_holding(self._fs, self._run_dir, DONE_MARKER, pafs.FileType.File,
                                               UNIT_PATTERN))
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot list staging directory {self._run_dir}: {error}") from error

    def is_staged(self, unit: str) -> bool:
        """True when ``unit`` is staged completely (its DONE marker is written)."""
        try:
            return bool(self._fs.get_file_info(self._done_path(unit)).type == pafs.FileType.File)
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot read staging directory {self._run_dir}: {error}") from error

    def staged_summaries(self) -> dict[str, dict[str, Any]]:
        """The ``summary`` each completely staged unit was staged with (what a resumed run reuses)."""
        summaries = {}
        for unit in sorted(self.staged_units()):
            done = _read_json(self._fs, f"{self._unit_dir(unit)}/{DONE_MARKER}")
            summaries[unit] = dict(done.get("summary") or {})
        return summaries

    def discard(self, unit: str) -> None:
        """Forget a staged unit (an account a resumed run crawls again)."""
        try:
            self._delete_dir(self._unit_dir(validate_unit(unit)))
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot remove staged unit {unit}: {error}") from error

    def publish(self, manifest: Mapping[str, Any],
                expected: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
        """Consolidate every table from the staged units, replace the snapshot's partitions, write the manifest.

        ``expected`` is what the run believes it staged (rows per table of each unit): when the
        staged units differ from it, DatasetError and nothing is published. ``crawl_runs`` gets a
        row for this run and one for every other run of the date; manifests that had published the
        date are marked superseded once the new one is written. Returns the manifest as written to
        ``runs/<run_id>.json`` (dates as ISO text): ``manifest`` merged with run_id, snapshot_date,
        status "published", tables (rows and files) and published_at.
        """
        units = sorted(self.staged_units())
        if expected is not None:
            self._check_staged(units, expected)
        document = {**manifest, **self._manifest_fields(), "status": PUBLISHED,
                    "published_at": datetime.now(UTC).isoformat(timespec="microseconds")}
        others = self._other_manifests()
        try:
            parts = self._build_partitions(units, document, others)
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot publish snapshot {self.snapshot_date} of run {self.run_id}: {error}") \
                from error
        written = self._write_manifest({**document, "tables": self._tables_entry(parts)})
        self._supersede(others)
        if not self._local:
            self._delete_superseded(parts)
        self._remove_staging()
        self._remove_abandoned()
        return written

    def _remove_abandoned(self) -> None:
        """Remove the staging of the date's runs that can no longer resume (the publisher holds the lease)."""
        try:
            for run_id in abandoned_runs(self.root, self.snapshot_date):
                LOG.info("removing the staging of run %s: it can no longer resume", run_id)
                remove_staged_run(self.root, self.snapshot_date, run_id)
        except DatasetError as error:  # tidying up must not fail a published run
            LOG.warning("could not remove abandoned staging: %s", error)

    def _check_staged(self, units: Sequence[str], expected: Mapping[str, Mapping[str, int]]) -> None:
        """DatasetError unless the staged units, and their rows, are exactly what the run believes it staged."""
        missing, unexpected = sorted(set(expected) - set(units)), sorted(set(units) - set(expected))
        changed = sorted(unit for unit in set(units) & set(expected)
                         if {table: rows for table, rows in self.staged_rows(unit).items() if rows}
                         != {table: rows for table, rows in expected[unit].items() if rows})
        if missing or unexpected or changed:
            detail = "; ".join(f"{what}: {', '.join(found)}" for what, found in (
                ("not staged", missing), ("staged by no one in this run", unexpected),
                ("staged with other rows", changed)) if found)
            raise DatasetError(f"run {self.run_id} will not publish snapshot {self.snapshot_date}: its staging "
                               f"does not hold what the run staged ({detail}); was another process writing it?")

    def _build_partitions(self, units: Sequence[str], document: Mapping[str, Any],
                          others: Sequence[Mapping[str, Any]]) -> dict[str, list[PartFile]]:
        """Every table's files: built aside and exchanged into place (local), or written beside the
        published files under names of this run (object storage)."""
        build_dir = f"{self._run_dir}/{BUILD_DIR}"
        if self._local:
            self._delete_dir(build_dir)  # left over by a publish that failed
        prefix = "part-" if self._local else f"part-{self.run_id}-"

        def directory(table: str) -> str:
            return f"{build_dir}/{table}" if self._local else self._partition_dir(table)

        parts = {table: self._consolidate(table, units, directory(table), prefix) for table in schema.STAGED_TABLES}
        table_rows = {table: sum(part.rows for part in files) for table, files in parts.items()}
        runs = crawl_runs_rows(document, table_rows, others)
        parts[CRAWL_RUNS] = self._write_rows(CRAWL_RUNS, runs, directory(CRAWL_RUNS), prefix)
        if self._local:
            for table in schema.TABLES:
                self._replace_partition(table, f"{build_dir}/{table}")
        return parts

    def _write_rows(self, table: str, rows: Sequence[Mapping[str, Any]], directory: str,
                    prefix: str) -> list[PartFile]:
        self._fs.create_dir(directory, recursive=True)
        writer = PartWriter(self._fs, directory, table, self.settings, prefix)
        try:
            writer.write(rows_to_table(table, rows))
            return writer.close()
        except BaseException:
            writer.abort()
            raise

    def _other_manifests(self) -> list[dict[str, Any]]:
        """The manifests of this snapshot date's other runs (the crawl_runs rows beside this run's)."""
        day = self.snapshot_date.isoformat()
        return sorted((document for document in _all_manifests(self._fs, self._base, self.root)
                       if document.get("snapshot_date") == day and document.get("run_id") != self.run_id),
                      key=lambda document: str(document.get("started_at", "")))

    def _supersede(self, others: Sequence[Mapping[str, Any]]) -> None:
        """Mark the manifests that had published this date superseded by this run (after its own is written)."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        for document in others:
            if document.get("status") != PUBLISHED or not RUN_ID_PATTERN.fullmatch(str(document.get("run_id"))):
                continue
            try:
                self._write_json(f"{self._base}/{RUNS_DIR}/{document['run_id']}.json",
                                 {**document, "status": SUPERSEDED, "superseded_by": self.run_id,
                                  "superseded_at": now})
            except STORAGE_ERRORS as error:  # the new manifest is the newer published one: readers still agree
                LOG.warning("could not mark run %s superseded: %s", document["run_id"], error)

    def claim(self, name: str, document: Mapping[str, Any]) -> bool:
        """Create ``name`` in the run's staging directory if no one has: True for the one caller that did.

        Shards of a run use it to agree on which of them publishes. Atomic on a local filesystem
        (``O_EXCL``) and on S3 (a conditional put); ClaimUnsupported on a filesystem that offers
        neither, DatasetError when the file cannot be written.
        """
        path = f"{self._run_dir}/{name}"
        content = json.dumps(document, indent=2, default=_json_value).encode() + b"\n"
        try:
            return create_exclusively(self._fs, path, content, self.objects)
        except OSError as error:
            if error.errno == errno.ENOTSUP:
                raise ClaimUnsupported(f"{self._fs.type_name} filesystems cannot create {path} exclusively") \
                    from error
            raise DatasetError(f"cannot create {path}: {error}") from error
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot create {path}: {error}") from error

    def record_shard(self, name: str, document: Mapping[str, Any]) -> None:
        """Write a shard's record (``_shards/<name>.json``) in the run's staging directory."""
        path = f"{self._run_dir}/{SHARDS_DIR}/{name}.json"
        try:
            self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            self._write_json(path, {**document, **self._manifest_fields()})
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot write shard record {path}: {error}") from error

    def shard_records(self) -> list[dict[str, Any]]:
        """Every shard record of the run, by name."""
        directory = f"{self._run_dir}/{SHARDS_DIR}"
        try:
            listing = self._fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot list the shard records in {directory}: {error}") from error
        return [_read_json(self._fs, info.path) for info in sorted(listing, key=lambda info: info.path)
                if info.type == pafs.FileType.File and info.base_name.endswith(".json")]

    def claimed(self, name: str) -> bool:
        """True when :meth:`claim` created ``name`` in the run's staging directory."""
        try:
            return bool(self._fs.get_file_info(f"{self._run_dir}/{name}").type == pafs.FileType.File)
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot read the staging directory {self._run_dir}: {error}") from error

    def staged_rows(self, unit: str) -> dict[str, int]:
        """Rows per table of a completely staged unit (nothing if it is not staged)."""
        if not self.is_staged(unit):
            return {}
        done = _read_json(self._fs, self._done_path(unit))
        return {str(table): int(rows) for table, rows in (done.get("rows") or {}).items()}

    def write_run_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write ``runs/<run_id>.json`` without publishing (a run that was interrupted or failed)."""
        self._write_manifest({**manifest, **self._manifest_fields()})

    def _unit_dir(self, unit: str) -> str:
        return f"{self._run_dir}/{unit}"

    def _done_path(self, unit: str) -> str:
        return f"{self._unit_dir(validate_unit(unit))}/{DONE_MARKER}"

    def _stage_table(self, unit_dir: str, table: str, rows: pa.Table) -> None:
        write = functools.partial(write_file, self._fs, table=table, rows=rows, settings=self.settings)
        self._write_atomically(f"{unit_dir}/{table}.parquet", write)

    def _partition_dir(self, table: str) -> str:
        return f"{self._base}/{table}/{schema.PARTITION_COLUMN}={self.snapshot_date.isoformat()}"

    def _delete_superseded(self, parts: Mapping[str, list[PartFile]]) -> None:
        """Delete from the partitions every file the new manifest does not name: the replaced run's, a failed
        publish's. Failing leaves extra files behind (``verify`` lists them), never missing ones."""
        for table, files in parts.items():
            named = {part.path for part in files}
            try:
                listing = self._fs.get_file_info(pafs.FileSelector(self._partition_dir(table), recursive=True,
                                                                   allow_not_found=True))
                for info in listing:
                    if info.type == pafs.FileType.File and info.path not in named:
                        self._fs.delete_file(info.path)
            except STORAGE_ERRORS as error:
                LOG.warning("could not delete the replaced files of %s: %s", self._partition_dir(table), error)

    def _consolidate(self, table: str, units: Sequence[str], directory: str, prefix: str = "part-") -> list[PartFile]:
        paths = [f"{self._unit_dir(unit)}/{table}.parquet" for unit in units]
        staged = [info.path for info in self._fs.get_file_info(paths) if info.type == pafs.FileType.File]
        self._fs.create_dir(directory, recursive=True)
        writer = PartWriter(self._fs, directory, table, self.settings, prefix)
        try:
            for chunk in merge_sorted(self._fs, staged, table):
                writer.write(chunk)
            return writer.close()
        except BaseException:
            writer.abort()
            raise

    def _replace_partition(self, table: str, built: str) -> None:
        """Put the built partition in place of the published one (local filesystems only).

        On Linux the two directories are exchanged in one atomic step, so a reader sees the old
        partition or the new one, never none. Elsewhere two renames: a reader may briefly see no
        partition for the date, never a mix of two runs.
        """
        partition = self._partition_dir(table)
        self._fs.create_dir(partition.rsplit("/", 1)[0], recursive=True)
        if self._fs.get_file_info(partition).type == pafs.FileType.NotFound:
            self._fs.move(built, partition)
            return
        replaced = f"{self._run_dir}/{REPLACED_DIR}/{table}"
        self._delete_dir(replaced)  # set aside by a publish of this run that failed
        self._fs.create_dir(f"{self._run_dir}/{REPLACED_DIR}", recursive=True)
        if exchange_directories(built, partition):
            self._fs.move(built, replaced)  # ``built`` now holds the previous partition
            return
        self._fs.move(partition, replaced)
        self._fs.move(built, partition)

    def _tables_entry(self, parts: Mapping[str, list[PartFile]]) -> dict[str, Any]:
        """The manifest's "tables": rows and files of each table, paths relative to the root."""
        entry: dict[str, Any] = {}
        for table, files in parts.items():
            directory = self._partition_dir(table).removeprefix(f"{self._base}/")
            entry[table] = {"rows": sum(part.rows for part in files),
                            "files": [{"path": f"{directory}/{part.path.rsplit('/', 1)[1]}", "rows": part.rows,
                                       "bytes": part.bytes, "sha256": part.sha256} for part in files]}
        return entry

    def _manifest_fields(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "snapshot_date": self.snapshot_date.isoformat()}

    def _write_manifest(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Write the run's manifest; returns it as written (dates and datetimes as ISO text)."""
        try:
            self._fs.create_dir(f"{self._base}/{RUNS_DIR}", recursive=True)
            return self._write_json(f"{self._base}/{RUNS_DIR}/{self.run_id}.json", document)
        except STORAGE_ERRORS as error:
            raise DatasetError(f"cannot write the manifest of run {self.run_id}: {error}") from error

    def _remove_staging(self) -> None:
        # The snapshot is published: failing to tidy up must not fail the run.
        try:
            self._delete_dir(self._run_dir)
            date_dir = self._run_dir.rsplit("/", 1)[0]
            if not self._fs.get_file_info(pafs.FileSelector(date_dir, allow_not_found=True)):
                self._delete_dir(date_dir)
        except STORAGE_ERRORS as error:
            LOG.warning("could not remove staging directory %s: %s", self._run_dir, error)

    def _delete_dir(self, path: str) -> None:
        if self._fs.get_file_info(path).type != pafs.FileType.NotFound:
            self._fs.delete_dir(path)

    def _write_json(self, path: str, document: Mapping[str, Any]) -> dict[str, Any]:
        text = json.dumps(document, indent=2, default=_json_value) + "\n"
        self._write_atomically(path, lambda temporary: _write_bytes(self._fs, temporary, text.encode()))
        written: dict[str, Any] = json.loads(text)
        return written

    def _write_atomically(self, path: str, write: Callable[[str], None]) -> None:
        """Write through ``write`` to a temporary name beside ``path``, then rename it over ``path``.

        In an object store, straight to ``path``: an object appears when its upload completes, and
        renaming would copy it. A failed upload may leave a partial object there; nothing reads it,
        because each commit point (a unit's DONE, a manifest) is an object of its own written last.
        """
        if not self._local:
            write(path)
            return
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            write(temporary)
            self._fs.move(temporary, path)
        except BaseException:
            if self._fs.get_file_info(temporary).type == pafs.FileType.File:
                self._fs.delete_file(temporary)
            raise


def exchange_directories(first: str, second: str) -> bool:
    """Swap two local directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False  # this kernel or filesystem cannot exchange: fall back to two renames
    raise OSError(error, os.strerror(error), second)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def create_exclusively(filesystem: pafs.FileSystem, path: str, content: bytes,
                       objects: ObjectConditions | None = None) -> bool:
    """Write ``content`` to ``path`` unless it exists, atomically: False when it already existed.

    pyarrow offers no atomic create, so this goes under it: ``O_EXCL`` locally, and on S3 a put
    with ``If-None-Match: *`` through ``objects`` (the session factory's S3 client).
    """
    if isinstance(filesystem, pafs.LocalFileSystem):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        return True
    if filesystem.type_name == "s3" and objects is not None:
        return objects.put(path, content)
    raise OSError(errno.ENOTSUP, f"{filesystem.type_name} cannot create a file exclusively here", path)


def lease_store(root: str, snapshot_date: date, objects: ObjectConditions | None = None) -> LeaseStore:
    """The lease object of ``snapshot_date`` under ``root`` (``_leases/<date>.json``); on S3 through ``objects``."""
    filesystem, base = open_filesystem(root)
    if isinstance(filesystem, pafs.LocalFileSystem):
        os.makedirs(f"{base}/{LEASES_DIR}", exist_ok=True)
    return LeaseStore(filesystem, f"{base}/{LEASES_DIR}/{snapshot_date.isoformat()}.json", objects)


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None  # a C library older than glibc 2.28
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def read_manifest(root: str, run_id: str) -> dict[str, Any]:
    """The manifest of run ``run_id`` under ``root``; DatasetError if there is none or it is unreadable."""
    filesystem, base = open_filesystem(root)
    path = f"{base}/{RUNS_DIR}/{validate_run_id(run_id)}.json"
    try:
        found = filesystem.get_file_info(path).type == pafs.FileType.File
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot read the manifest of run {run_id} under {root}: {error}") from error
    if not found:
        raise DatasetError(f"no manifest for run {run_id} under {root}")
    return _read_json(filesystem, path)


def latest_manifest(root: str, snapshot_date: date | None = None) -> dict[str, Any] | None:
    """The published manifest of ``snapshot_date`` under ``root`` (None: of the latest snapshot date published),
    as :func:`crawler.store.published.choose_published` picks it; None when there is none."""
    chosen = choose_published(all_manifests(root), snapshot_date)
    return dict(chosen) if chosen is not None else None


def unfinished_runs(root: str, snapshot_date: date | None = None) -> list[dict[str, Any]]:
    """Runs that started but never published (crashed, killed, interrupted), newest first.

    Only runs whose staging directory still exists and that started after the last publish of
    their snapshot date count: a later complete run supersedes them.
    """
    filesystem, base = open_filesystem(root)
    manifests = _all_manifests(filesystem, base, root)
    published: dict[str, str] = {}
    for document in manifests:
        if document.get("status") in (PUBLISHED, SUPERSEDED):
            day = str(document.get("snapshot_date"))
            published[day] = max(published.get(day, ""), str(document.get("started_at", "")))
    unfinished = []
    for document in manifests:
        day = str(document.get("snapshot_date"))
        if document.get("status") in RunStatus.UNFINISHED and \
                (snapshot_date is None or day == snapshot_date.isoformat()) and \
                str(document.get("started_at", "")) > published.get(day, "") and \
                _exists(filesystem, f"{base}/{STAGING_DIR}/{day}/{document.get('run_id')}"):
            unfinished.append(document)
    return sorted(unfinished, key=lambda doc: str(doc.get("started_at", "")), reverse=True)


def staged_dates(root: str) -> list[date]:
    """The snapshot dates with a staging directory under ``root``, ascending."""
    filesystem, base = open_filesystem(root)
    try:
        listing = filesystem.get_file_info(pafs.FileSelector(f"{base}/{STAGING_DIR}", allow_not_found=True))
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot list the staging directory under {root}: {error}") from error
    dates = []
    for info in listing:
        with contextlib.suppress(ValueError):
            if info.type == pafs.FileType.Directory:
                dates.append(date.fromisoformat(info.base_name))
    return sorted(dates)


def abandoned_runs(root: str, snapshot_date: date) -> list[str]:
    """Run ids staged for ``snapshot_date`` that will never be resumed or published: every staged run but the
    one a plain run of the date would resume and the sharded runs not published yet (``consolidate``).

    Call it under the date's lease: a live run's staging is not abandoned.
    """
    filesystem, base = open_filesystem(root)
    day = f"{base}/{STAGING_DIR}/{snapshot_date.isoformat()}"
    try:
        listing = filesystem.get_file_info(pafs.FileSelector(day, allow_not_found=True))
        sharded = set(_subdirectories_holding(filesystem, day, SHARDS_DIR, pafs.FileType.Directory))
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot list the staged runs of {snapshot_date} under {root}: {error}") from error
    staged = sorted(info.base_name for info in listing if info.type == pafs.FileType.Directory)
    manifests = {str(document.get("run_id")): document for document in _all_manifests(filesystem, base, root)}
    resumable = {str(document["run_id"]) for document in unfinished_runs(root, snapshot_date)[:1]}
    done = (PUBLISHED, SUPERSEDED)
    return [run_id for run_id in staged if run_id not in resumable
            and not (run_id in sharded and (manifests.get(run_id) or {}).get("status") not in done)]


def remove_staged_run(root: str, snapshot_date: date, run_id: str) -> None:
    """Delete run ``run_id``'s staging directory of ``snapshot_date`` (and the date's, once empty)."""
    filesystem, base = open_filesystem(root)
    day = f"{base}/{STAGING_DIR}/{snapshot_date.isoformat()}"
    try:
        if _exists(filesystem, f"{day}/{validate_run_id(run_id)}"):
            filesystem.delete_dir(f"{day}/{run_id}")
        if _exists(filesystem, day) and not filesystem.get_file_info(pafs.FileSelector(day)):
            filesystem.delete_dir(day)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot remove the staging of run {run_id}: {error}") from error


def sharded_runs(root: str, snapshot_date: date) -> list[str]:
    """Run ids of ``snapshot_date`` under ``root`` staged by shards and not published yet."""
    filesystem, base = open_filesystem(root)
    day = f"{base}/{STAGING_DIR}/{snapshot_date.isoformat()}"
    try:
        return _subdirectories_holding(filesystem, day, SHARDS_DIR, pafs.FileType.Directory)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot list the staged runs of {snapshot_date} under {root}: {error}") from error


def staged_run_date(root: str, run_id: str) -> date | None:
    """The snapshot date run ``run_id`` is staged under, if it has a staging directory under ``root``."""
    filesystem, base = open_filesystem(root)
    try:
        staged = _subdirectories_holding(filesystem, f"{base}/{STAGING_DIR}", validate_run_id(run_id),
                                         pafs.FileType.Directory)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot list the staging directory under {root}: {error}") from error
    for day in reversed(staged):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(day)
    return None


def _subdirectories_holding(filesystem: pafs.FileSystem, directory: str, child: str, kind: pafs.FileType,
                            names: re.Pattern[str] | None = None) -> list[str]:
    """The names (sorted) of the subdirectories of ``directory`` (matching ``names``, if given) that hold
    ``child`` of type ``kind``; none when ``directory`` does not exist. Raises the filesystem's errors."""
    listing = filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    found = sorted(info.base_name for info in listing if info.type == pafs.FileType.Directory
                   and (names is None or names.fullmatch(info.base_name)))
    children = filesystem.get_file_info([f"{directory}/{name}/{child}" for name in found])
    return [name for name, info in zip(found, children, strict=True) if info.type == kind]


def all_manifests(root: str) -> list[dict[str, Any]]:
    """Every run manifest under ``root``; DatasetError when one cannot be read."""
    filesystem, base = open_filesystem(root)
    return _all_manifests(filesystem, base, root)


def scan_manifests(filesystem: pafs.FileSystem, base: str) -> tuple[list[tuple[str, dict[str, Any]]],
                                                                       list[tuple[str, str]]]:
    """Every run manifest as (path relative to the root, document), and those that cannot be read as
    (path, why), in name order; OSError when ``runs/`` cannot be listed."""
    listing = filesystem.get_file_info(pafs.FileSelector(f"{base}/{RUNS_DIR}", allow_not_found=True))
    documents, unreadable = [], []
    for info in sorted(listing, key=lambda item: item.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        relative = f"{RUNS_DIR}/{info.base_name}"
        try:
            documents.append((relative, _read_json(filesystem, info.path)))
        except DatasetError as error:
            unreadable.append((relative, str(error.__cause__ or error)))
    return documents, unreadable


def _all_manifests(filesystem: pafs.FileSystem, base: str, root: str) -> list[dict[str, Any]]:
    try:
        documents, unreadable = scan_manifests(filesystem, base)
    except STORAGE_ERRORS as error:
        raise DatasetError(f"cannot list the manifests under {root}: {error}") from error
    if unreadable:
        path, why = unreadable[0]
        raise DatasetError(f"cannot read manifest {path} under {root}: {why}")
    return [document for _, document in documents]


def _exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return bool(filesystem.get_file_info(path).type != pafs.FileType.NotFound)


def _read_json(filesystem: pafs.FileSystem, path: str) -> dict[str, Any]:
    try:
        with filesystem.open_input_stream(path, compression=None) as stream:
            document = json.loads(stream.read().decode("utf-8"))
    except (*STORAGE_ERRORS, ValueError, RecursionError) as error:
        raise DatasetError(f"cannot read manifest {path}: {error}") from error
    if not isinstance(document, dict):
        raise DatasetError(f"manifest {path} is not a JSON object") from ValueError("not a JSON object")
    return document


def _write_bytes(filesystem: pafs.FileSystem, path: str, content: bytes) -> None:
    with filesystem.open_output_stream(path, compression=None) as stream:
        stream.write(content)


def _json_value(value: Any) -> Any:
    """JSON for the values manifests carry besides JSON's own: dates, datetimes, sets."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} to a manifest")
