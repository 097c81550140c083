"""Low-level Parquet for the dataset: rows to Arrow tables, writer options, rolling part files, a sorted merge.

Everything here goes through a ``pyarrow.fs.FileSystem`` and plain path strings, so the same code
writes to a local directory or (later) to S3. :mod:`crawler.store.dataset` decides where files go.
"""
from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crawler.config.settings import OutputSettings
from crawler.store import schema

#: Codecs that take a compression level (arrow rejects a level for snappy).
LEVELED_CODECS = ("zstd", "gzip")
HASH_CHUNK_BYTES = 1 << 20
#: A row's sort key, comparable in Python exactly as Arrow sorts: ascending, nulls last.
SortKey = tuple[tuple[bool, Any], ...]


class StagedFileError(Exception):
    """A staged file that cannot be consolidated (written with another schema)."""


@dataclass(frozen=True)
class PartFile:
    """A written part file: its path, rows, size in bytes and SHA-256 (hex)."""

    path: str
    rows: int
    bytes: int
    sha256: str


def file_schema(table: str) -> pa.Schema:
    """A table's file schema: its schema without the partition column, which lives in the directory name."""
    table_schema = schema.TABLES[table]
    index = table_schema.get_field_index(schema.PARTITION_COLUMN)
    return table_schema if index < 0 else table_schema.remove(index)


def rows_to_table(table: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name) as an Arrow table of ``table``'s file schema, sorted by its sort keys.

    Raises ValueError for an unknown table, a key that is not a column, a naive datetime or a
    null in a required column: the caller built a wrong row.
    """
    if table not in schema.TABLES:
        raise ValueError(f"unknown table {table!r}; tables are {sorted(schema.TABLES)}")
    target = file_schema(table)
    _check_rows(table, target, rows)
    arrow_table = pa.Table.from_pylist(list(rows), schema=target)
    for field in target:
        if not field.nullable and arrow_table.column(field.name).null_count:
            raise ValueError(f"{table}: column {field.name} is required but some rows have no value")
    return sort_table(arrow_table, schema.sort_keys(table))


def _check_rows(table: str, target: pa.Schema, rows: Sequence[Mapping[str, Any]]) -> None:
    # pyarrow would silently drop a key that is not a column, and take a naive datetime for UTC.
    unknown = set().union(*rows) - set(target.names)
    if unknown:
        position = next(index for index, row in enumerate(rows) if row.keys() & unknown)
        extra = sorted(rows[position].keys() & unknown)
        raise ValueError(f"{table} row {position}: keys that are not columns: {extra}")
    for field in target:
        if not pa.types.is_timestamp(field.type):
            continue
        for position, value in enumerate(row.get(field.name) for row in rows):
            if isinstance(value, datetime) and value.utcoffset() is None:
                raise ValueError(f"{table} row {position}: {field.name} is a naive datetime; "
                                 "timestamps must be tz-aware")


def sort_table(arrow_table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The table sorted ascending by ``keys``, nulls last (the order :func:`row_key` compares in)."""
    if not keys:
        return arrow_table
    return arrow_table.sort_by([(key, "ascending", "at_end") for key in keys])


def row_key(arrow_table: pa.Table, index: int, keys: Sequence[str]) -> SortKey:
    """The sort key of one row: each value paired with "is null", so nulls compare after every value."""
    values = (arrow_table.column(key)[index].as_py() for key in keys)
    return tuple((value is None, "" if value is None else value) for value in values)


def writer_options(table: str, settings: OutputSettings) -> dict[str, Any]:
    """Keyword arguments of ``pq.ParquetWriter`` for one table's files."""
    sort_order = [(key, "ascending") for key in schema.sort_keys(table)]
    options: dict[str, Any] = {
        "version": "2.6",
        "compression": None if settings.compression == "none" else settings.compression,
        "use_dictionary": True,
        "coerce_timestamps": "us",
        "allow_truncated_timestamps": False,
        "use_deprecated_int96_timestamps": False,
        "write_statistics": True,
        "store_schema": True,
        "sorting_columns": pq.SortingColumn.from_ordering(file_schema(table), sort_order, null_placement="at_end"),
    }
    if settings.compression_level is not None and settings.compression in LEVELED_CODECS:
        options["compression_level"] = settings.compression_level
    return options


def write_file(fs: pafs.FileSystem, path: str, table: str, rows: pa.Table, settings: OutputSettings) -> None:
    """Write ``rows`` (already sorted) to one Parquet file, in row groups of ``settings.row_group_rows``."""
    with pq.ParquetWriter(path, file_schema(table), filesystem=fs, **writer_options(table, settings)) as writer:
        writer.write_table(rows, row_group_size=settings.row_group_rows)


def describe_file(fs: pafs.FileSystem, path: str, rows: int) -> PartFile:
    """A written file's size and SHA-256, read back through the filesystem."""
    digest = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path, compression=None) as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return PartFile(path=path, rows=rows, bytes=size, sha256=digest.hexdigest())


class PartWriter:
    """Writes a stream of sorted chunks into ``<prefix>NNNNN.parquet`` files of one directory.

    Chunks of any size are buffered into row groups of ``row_group_rows`` rows, and a new file is
    started every ``max_rows_per_file`` rows; memory stays within about one row group. A stream
    without rows still yields one file with zero rows and the full schema.
    """

    def __init__(self, fs: pafs.FileSystem, directory: str, table: str, settings: OutputSettings,
                 prefix: str = "part-") -> None:
        if settings.max_rows_per_file < 1 or settings.row_group_rows < 1:
            raise ValueError("max_rows_per_file and row_group_rows must be at least 1")
        self._fs, self._directory, self._table, self._settings = fs, directory, table, settings
        self._prefix = prefix
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._path = ""
        self._file_rows = 0
        self._parts: list[PartFile] = []

    def write(self, chunk: pa.Table) -> None:
        """Add rows that sort after every row written so far."""
        if chunk.num_rows:
            self._pending.append(chunk)
            self._pending_rows += chunk.num_rows
        while self._pending_rows and self._pending_rows >= self._next_group_rows():
            self._write_group(self._next_group_rows())

    def close(self) -> list[PartFile]:
        """Flush the buffer, close the last file and return every file written, in order."""
        while self._pending_rows:
            self._write_group(min(self._pending_rows, self._next_group_rows()))
        if self._writer is None and not self._parts:
            self._open_file()
        self._close_file()
        return self._parts

    def abort(self) -> None:
        """Close the open file, if any, after a failure (the caller discards the directory)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _next_group_rows(self) -> int:
        return min(self._settings.row_group_rows, self._settings.max_rows_per_file - self._file_rows)

    def _write_group(self, rows: int) -> None:
        buffered = pa.concat_tables(self._pending)
        group, rest = buffered.slice(0, rows), buffered.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self._writer is None:
            self._open_file()
        assert self._writer is not None
        self._writer.write_table(group, row_group_size=rows)
        self._file_rows += rows
        if self._file_rows >= self._settings.max_rows_per_file:
            self._close_file()

    def _open_file(self) -> None:
        self._path = f"{self._directory}/{self._prefix}{len(self._parts):05d}.parquet"
        options = writer_options(self._table, self._settings)
        self._writer = pq.ParquetWriter(self._path, file_schema(self._table), filesystem=self._fs, **options)
        self._file_rows = 0

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        self._parts.append(describe_file(self._fs, self._path, self._file_rows))
        self._file_rows = 0


class _SortedFileCursor:
    """Reads one sorted Parquet file a row group at a time and hands out its rows up to a sort key."""

    def __init__(self, fs: pafs.FileSystem, path: str, keys: Sequence[str]) -> None:
        self._source = fs.open_input_file(path)
        self._file = pq.ParquetFile(self._source)
        self._keys = keys
        self._next_group = 0
        self._rows = self._file.schema_arrow.empty_table()
        self._offset = 0
        self.head: SortKey = ()
        self._advance()

    @property
    def exhausted(self) -> bool:
        """True when every row has been handed out."""
        return self._offset >= self._rows.num_rows

    def take_through(self, bound: SortKey | None) -> pa.Table:
        """The next rows of the current row group whose key is at most ``bound`` (all for None): at least one."""
        end = self._rows.num_rows
        if bound is not None and row_key(self._rows, end - 1, self._keys) > bound:
            end = self._first_row_after(bound)
        chunk = self._rows.slice(self._offset, end - self._offset)
        self._offset = end
        self._advance()
        return chunk

    def close(self) -> None:
        """Release the file."""
        self._source.close()

    def _first_row_after(self, bound: SortKey) -> int:
        # The caller guarantees head <= bound, and the last row is > bound: bisect between them.
        low, high = self._offset + 1, self._rows.num_rows - 1
        while low < high:
            middle = (low + high) // 2
            if row_key(self._rows, middle, self._keys) > bound:
                high = middle
            else:
                low = middle + 1
        return low

    def _advance(self) -> None:
        while self.exhausted and self._next_group < self._file.num_row_groups:
            self._rows = self._file.read_row_group(self._next_group)
            self._next_group += 1
            self._offset = 0
        if not self.exhausted:
            self.head = row_key(self._rows, self._offset, self._keys)


def first_key(fs: pafs.FileSystem, path: str, table: str) -> SortKey | None:
    """The sort key of a staged file's first row (None for a file without rows), checking the file's schema."""
    with fs.open_input_file(path) as source:
        parquet_file = pq.ParquetFile(source)
        if not parquet_file.schema_arrow.equals(file_schema(table), check_metadata=False):
            raise StagedFileError(f"{path} was not written with the {table} schema")
        if parquet_file.metadata.num_rows == 0:
            return None
        keys = schema.sort_keys(table)
        for group in range(parquet_file.num_row_groups):
            rows = parquet_file.read_row_group(group, columns=keys)
            if rows.num_rows:
                return row_key(rows, 0, keys)
    return None


def merge_sorted(fs: pafs.FileSystem, paths: Sequence[str], table: str) -> Iterator[pa.Table]:
    """The rows of sorted staged files, in chunks, in one overall sort order.

    A file is opened only when the merge reaches its first key and closed once read, so only the
    files whose key ranges overlap the current position are open, one row group each. Files that do
    not overlap (one account each) are streamed one after the other, a row group per chunk.
    """
    keys = schema.sort_keys(table)
    starts = [(first_key(fs, path, table), order, path) for order, path in enumerate(paths)]
    pending = deque(sorted((key, order, path) for key, order, path in starts if key is not None))
    active: list[_SortedFileCursor] = []
    try:
        while active or pending:
            smallest = min(active, key=lambda cursor: cursor.head) if active else None
            if pending and (smallest is None or pending[0][0] <= smallest.head):
                active.append(_SortedFileCursor(fs, pending.popleft()[2], keys))
                continue
            assert smallest is not None
            bounds = [cursor.head for cursor in active if cursor is not smallest]
            if pending:
                bounds.append(pending[0][0])
            yield smallest.take_through(min(bounds) if bounds else None)
            if smallest.exhausted:
                active.remove(smallest)
                smallest.close()
    finally:
        for cursor in active:
            cursor.close()
