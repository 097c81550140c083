"""Warehouse DDL and the schema reference, generated from :mod:`crawler.store.schema`.

``python -m crawler.store.warehouse`` writes ``scripts/warehouse/{athena,snowflake,bigquery,spark}.sql``
and ``docs/schema.md``; ``--check`` writes nothing, names the files that differ from what it would
write and exits 1. Every table, column, type and description comes from ``schema.TABLES``: an
Arrow type this module has no mapping for raises :class:`UnsupportedTypeError`, never a guess.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from crawler.store import schema

#: The repository the generated files belong to (the parent of the ``crawler`` package).
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python -m crawler.store.warehouse"
PARTITION = schema.PARTITION_COLUMN
PARTITION_FIELD = schema.PARTITION_FIELD
#: First date Athena's partition projection considers (dates without data are simply empty).
PROJECTION_START = "2024-01-01"
#: The scalar Arrow types the dataset uses, in the order of every dialect's ``_scalars`` call.
SCALAR_TYPES = (pa.string(), pa.int32(), pa.int64(), pa.bool_(), pa.date32(), schema.TIMESTAMP)


class UnsupportedTypeError(TypeError):
    """A column's Arrow type has no warehouse mapping: add one here deliberately, never guess."""


@dataclass(frozen=True)
class TypeNames:
    """How one SQL dialect spells the dataset's Arrow types."""

    scalars: Mapping[pa.DataType, str]
    array: Callable[[str], str]
    struct: Callable[[Sequence[tuple[str, str]]], str]


def _scalars(*names: str) -> dict[pa.DataType, str]:
    return dict(zip(SCALAR_TYPES, names, strict=True))


ATHENA = TypeNames(_scalars("string", "int", "bigint", "boolean", "date", "timestamp"),
                   lambda element: f"array<{element}>",
                   lambda fields: "struct<" + ",".join(f"{name}:{kind}" for name, kind in fields) + ">")
# TIMESTAMP_LTZ, not TIMESTAMP_TZ: a Parquet timestamp with isAdjustedToUTC=true is an instant without
# an offset of its own. LTZ stores exactly that (UTC inside, shown in the session's TIMEZONE); TZ would
# attach whichever offset the querying session has, as if the data carried it. (6): microseconds.
SNOWFLAKE = TypeNames(_scalars("VARCHAR", "NUMBER(10, 0)", "NUMBER(19, 0)", "BOOLEAN", "DATE", "TIMESTAMP_LTZ(6)"),
                      lambda element: "ARRAY", lambda fields: "OBJECT")
BIGQUERY = TypeNames(_scalars("STRING", "INT64", "INT64", "BOOL", "DATE", "TIMESTAMP"),
                     lambda element: f"ARRAY<{element}>",
                     lambda fields: "STRUCT<" + ", ".join(f"`{name}` {kind}" for name, kind in fields) + ">")
SPARK = TypeNames(_scalars("STRING", "INT", "BIGINT", "BOOLEAN", "DATE", "TIMESTAMP"),
                  lambda element: f"ARRAY<{element}>",
                  lambda fields: "STRUCT<" + ", ".join(f"`{name}`: {kind}" for name, kind in fields) + ">")
#: Not a DDL dialect: what DuckDB reports when it reads the files (docs/schema.md; checked by the tests).
DUCKDB = TypeNames(_scalars("VARCHAR", "INTEGER", "BIGINT", "BOOLEAN", "DATE", "TIMESTAMP WITH TIME ZONE"),
                   lambda element: f"{element}[]",
                   lambda fields: "STRUCT(" + ", ".join(f'"{name}" {kind}' for name, kind in fields) + ")")


def sql_type(kind: pa.DataType, names: TypeNames) -> str:
    """``kind`` spelled in a dialect; UnsupportedTypeError for a type without a mapping."""
    if pa.types.is_list(kind):
        return names.array(sql_type(kind.value_type, names))
    if pa.types.is_struct(kind):
        members = [kind.field(index) for index in range(kind.num_fields)]
        return names.struct([(member.name, sql_type(member.type, names)) for member in members])
    name = names.scalars.get(kind)
    if name is None:
        raise UnsupportedTypeError(f"no warehouse type for Arrow type {kind}; map it in crawler/store/warehouse.py")
    return name


def column_type(table: str, field: pa.Field, names: TypeNames) -> str:
    """A column's type in a dialect; UnsupportedTypeError naming the table and column."""
    try:
        return sql_type(field.type, names)
    except UnsupportedTypeError as error:
        raise UnsupportedTypeError(f"{table}.{field.name}: {error}") from None


def description(field: pa.Field) -> str:
    """A column's description (its ``description`` field metadata); ValueError when it has none."""
    text = (field.metadata or {}).get(b"description", b"").decode()
    if not text.strip():
        raise ValueError(f"column {field.name} has no description")
    return " ".join(text.split())


def table_description(table: str, table_schema: pa.Schema) -> str:
    """A table's description (its schema metadata); ValueError when it has none."""
    text = (table_schema.metadata or {}).get(b"description", b"").decode()
    if not text.strip():
        raise ValueError(f"table {table} has no description")
    return " ".join(text.split())


def data_fields(table_schema: pa.Schema) -> list[pa.Field]:
    """The columns stored in the files: every field but the partition column (it is in the path)."""
    return [field for field in table_schema if field.name != PARTITION]


def sql_string(text: str) -> str:
    """``text`` as a one-line single-quoted literal with backslash escapes, as all four engines read it."""
    return "'" + " ".join(text.split()).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _listing(lines: Sequence[str], comments: Sequence[str] | None = None) -> str:
    """Indented lines joined by commas, each optionally followed by a ``--`` comment."""
    rendered = []
    for index, line in enumerate(lines):
        text = f"  {line}{',' if index < len(lines) - 1 else ''}"
        rendered.append(f"{text}  -- {comments[index]}" if comments else text)
    return "\n".join(rendered)


def athena_table(table: str, table_schema: pa.Schema) -> str:
    """Athena/Glue ``CREATE EXTERNAL TABLE`` with partition projection on the snapshot date."""
    location = f"s3://<BUCKET>/<PREFIX>/{table}/"
    columns = [f"`{field.name}` {column_type(table, field, ATHENA)} COMMENT {sql_string(description(field))}"
               for field in data_fields(table_schema)]
    properties = {"projection.enabled": "true", f"projection.{PARTITION}.type": "date",
                  f"projection.{PARTITION}.format": "yyyy-MM-dd",
                  f"projection.{PARTITION}.range": f"{PROJECTION_START},NOW",
                  f"projection.{PARTITION}.interval": "1", f"projection.{PARTITION}.interval.unit": "DAYS",
                  "storage.location.template": f"{location}{PARTITION}=${{{PARTITION}}}/"}
    partition = (f"`{PARTITION}` {column_type(table, PARTITION_FIELD, ATHENA)} "
                 f"COMMENT {sql_string(description(PARTITION_FIELD))}")
    return "\n".join([
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `<DATABASE>`.`{table}` (", _listing(columns), ")",
        f"COMMENT {sql_string(table_description(table, table_schema))}",
        f"PARTITIONED BY ({partition})", "STORED AS PARQUET", f"LOCATION '{location}'",
        "TBLPROPERTIES (", _listing([f"'{key}' = '{value}'" for key, value in properties.items()]), ");"])


def _snowflake_value(table: str, field: pa.Field) -> str:
    """The expression that reads one column from the Parquet row (``VALUE``)."""
    kind = column_type(table, field, SNOWFLAKE)
    if field.type == schema.TIMESTAMP:
        # Snowflake hands a Parquet timestamp over as TIMESTAMP_NTZ holding the UTC wall clock.
        # Its epoch microseconds give the instant; a plain ::TIMESTAMP_LTZ cast would read that
        # wall clock in the session's TIMEZONE and shift it.
        wall_clock = f'VALUE:"{field.name}"::TIMESTAMP_NTZ(6)'
        return f"TO_TIMESTAMP_LTZ(DATE_PART(EPOCH_MICROSECOND, {wall_clock}), 6)"
    return f'VALUE:"{field.name}"::{kind}'


def snowflake_table(table: str, table_schema: pa.Schema) -> str:
    """Snowflake external table over the stage: ``VALUE`` expressions, the date parsed from the file name."""
    snapshot = f"TO_DATE(SPLIT_PART(SPLIT_PART(METADATA$FILENAME, '{PARTITION}=', 2), '/', 1), 'YYYY-MM-DD')"
    fields = [PARTITION_FIELD, *data_fields(table_schema)]
    expressions = [snapshot] + [_snowflake_value(table, field) for field in fields[1:]]
    columns = [f"{field.name} {column_type(table, field, SNOWFLAKE)} AS ({expression})"
               for field, expression in zip(fields, expressions, strict=True)]
    pattern = f".*/{PARTITION}=[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}/part-[^/]+[.]parquet"
    return "\n".join([
        f"CREATE OR REPLACE EXTERNAL TABLE {table} (",
        _listing(columns, [description(field) for field in fields]), ")",
        f"PARTITION BY ({PARTITION})", f"LOCATION = @<STAGE>/{table}/", "REFRESH_ON_CREATE = TRUE",
        "AUTO_REFRESH = FALSE", f"PATTERN = '{pattern}'", "FILE_FORMAT = (TYPE = PARQUET)",
        f"COMMENT = {sql_string(table_description(table, table_schema))};"])


def bigquery_table(table: str, table_schema: pa.Schema) -> str:
    """BigQuery external table over Cloud Storage with Hive partitioning on the snapshot date."""
    prefix = f"gs://<BUCKET>/<PREFIX>/{table}"
    columns = [f"`{field.name}` {column_type(table, field, BIGQUERY)} "
               f"OPTIONS (description = {sql_string(description(field))})" for field in data_fields(table_schema)]
    options = [("format", "'PARQUET'"), ("uris", f"['{prefix}/*.parquet']"),
               ("hive_partition_uri_prefix", f"'{prefix}'"), ("require_hive_partition_filter", "false"),
               ("enable_list_inference", "true"),
               ("description", sql_string(table_description(table, table_schema)))]
    return "\n".join([
        f"CREATE OR REPLACE EXTERNAL TABLE `<DATASET>.{table}` (", _listing(columns), ")",
        f"WITH PARTITION COLUMNS (`{PARTITION}` {column_type(table, PARTITION_FIELD, BIGQUERY)})",
        "OPTIONS (", _listing([f"{name} = {value}" for name, value in options]), ");"])


def spark_table(table: str, table_schema: pa.Schema) -> str:
    """Spark SQL ``CREATE TABLE ... USING PARQUET`` and the ``MSCK REPAIR TABLE`` that finds its partitions."""
    fields = [*data_fields(table_schema), PARTITION_FIELD]
    columns = [f"`{field.name}` {column_type(table, field, SPARK)} COMMENT {sql_string(description(field))}"
               for field in fields]
    return "\n".join([
        f"CREATE TABLE IF NOT EXISTS `{table}` (", _listing(columns), ")", "USING PARQUET",
        f"PARTITIONED BY (`{PARTITION}`)", f"LOCATION '<ROOT>/{table}'",
        f"COMMENT {sql_string(table_description(table, table_schema))};", "",
        f"MSCK REPAIR TABLE `{table}`;"])


ATHENA_HEADER = """\
-- Amazon Athena / AWS Glue Data Catalog: one external table per access-crawler table.
-- Replace before running:
--   <DATABASE>  the Glue database for the tables (CREATE DATABASE IF NOT EXISTS first)
--   <BUCKET>    the S3 bucket of the crawler's output.path
--   <PREFIX>    the key prefix of output.path inside the bucket, without a slash at either end
--               (output.path s3://acme-audit/access-crawler: <BUCKET> acme-audit, <PREFIX> access-crawler)
-- Partitions are projected from snapshot_date (a date; yyyy-MM-dd directories from 2024-01-01 to
-- today): a new snapshot is queryable at once, with no MSCK REPAIR TABLE or ADD PARTITION.
-- Filter on it to read one snapshot: WHERE snapshot_date = DATE '2026-11-30'.
-- Timestamps are UTC instants; Athena's timestamp has no time zone (read the values as UTC) and
-- resolves to milliseconds, so it shows the files' microseconds to the millisecond.
-- IF NOT EXISTS: after a schema change, DROP TABLE the table (its files stay) and run its CREATE again."""

SNOWFLAKE_HEADER = """\
-- Snowflake: one external table per access-crawler table, over a stage on the output root.
-- Replace before running:
--   <STAGE>  a stage whose URL is the crawler's output.path, e.g.
--            CREATE STAGE access_crawler URL = 's3://acme-audit/access-crawler/' STORAGE_INTEGRATION = ...;
-- Each column reads VALUE:"<column>" of the Parquet row; snapshot_date is parsed from METADATA$FILENAME
-- (.../snapshot_date=YYYY-MM-DD/part-*.parquet) and is the partition column: filter on it.
-- Timestamps are TIMESTAMP_LTZ(6): UTC instants at microsecond precision, shown in the session's TIMEZONE.
-- LTZ, not TZ: a Parquet timestamp with isAdjustedToUTC=true is an instant with no offset of its own;
-- TIMESTAMP_TZ would attach the querying session's offset as if the data carried one. Snowflake reads
-- the Parquet value as the UTC wall clock (TIMESTAMP_NTZ); the expression turns its epoch microseconds
-- into the instant, so the session's TIMEZONE never shifts it.
-- Column descriptions are the -- comments (external table columns take no COMMENT).
-- New snapshots: ALTER EXTERNAL TABLE <table> REFRESH; after each crawl (or AUTO_REFRESH with event
-- notifications on the bucket)."""

BIGQUERY_HEADER = """\
-- BigQuery: one external table per access-crawler table over Cloud Storage, Hive-partitioned.
-- Replace before running:
--   <DATASET>  the dataset for the tables ([project.]dataset)
--   <BUCKET>   the Cloud Storage bucket of the crawler's output (copied or written there)
--   <PREFIX>   the object prefix of the output root inside the bucket, without a slash at either end
-- (data on S3: BigQuery Omni, the same statement WITH CONNECTION and s3:// URIs)
-- snapshot_date is a DATE read from the snapshot_date=YYYY-MM-DD directories; new snapshots are
-- seen at once. Timestamps are TIMESTAMP: UTC instants at microsecond precision.
-- enable_list_inference reads the Parquet lists as ARRAY; BigQuery shows a null list as []."""

SPARK_HEADER = """\
-- Spark SQL: one table per access-crawler table over the Parquet files, in the current database.
-- Replace before running:
--   <ROOT>  the crawler's output.path as Spark reads it: s3a://bucket/prefix (Apache Spark),
--           s3://bucket/prefix (EMR, Databricks), or a local or HDFS path
-- snapshot_date is a DATE read from the snapshot_date=YYYY-MM-DD directories. MSCK REPAIR TABLE
-- registers the snapshots present; run it again after each crawl (ALTER TABLE ... RECOVER PARTITIONS
-- is the same). Timestamps are TIMESTAMP (TIMESTAMP_LTZ): UTC instants at microsecond precision, shown
-- in spark.sql.session.timeZone; keep spark.sql.timestampType at its default (TIMESTAMP_LTZ).
-- IF NOT EXISTS: after a schema change, DROP TABLE the table (its files stay) and run its CREATE again."""


@dataclass(frozen=True)
class Dialect:
    """One generated DDL file: where it goes, what it says first, how it writes a table."""

    path: str
    header: str
    table: Callable[[str, pa.Schema], str]


DIALECTS = (Dialect("scripts/warehouse/athena.sql", ATHENA_HEADER, athena_table),
            Dialect("scripts/warehouse/snowflake.sql", SNOWFLAKE_HEADER, snowflake_table),
            Dialect("scripts/warehouse/bigquery.sql", BIGQUERY_HEADER, bigquery_table),
            Dialect("scripts/warehouse/spark.sql", SPARK_HEADER, spark_table))
DOCS_PATH = "docs/schema.md"
#: Every generated file, relative to the repository.
GENERATED_PATHS = (*(dialect.path for dialect in DIALECTS), DOCS_PATH)
GENERATED_NOTE = f"Generated by `{COMMAND}` (scripts/generate-warehouse) from crawler/store/schema.py: do not edit."


def ddl(dialect: Dialect, tables: Mapping[str, pa.Schema]) -> str:
    """A dialect's whole DDL file: the header, then every table."""
    parts = [f"-- {GENERATED_NOTE}\n{dialect.header}"]
    for table, table_schema in tables.items():
        parts.append(f"-- {table}: {table_description(table, table_schema)}\n{dialect.table(table, table_schema)}")
    return "\n\n".join(parts) + "\n"


def generated_files(tables: Mapping[str, pa.Schema] | None = None) -> dict[str, str]:
    """Every generated file's text by its path relative to the repository (``schema.TABLES`` by default)."""
    tables = schema.TABLES if tables is None else tables
    files = {dialect.path: ddl(dialect, tables) for dialect in DIALECTS}
    files[DOCS_PATH] = schema_markdown(tables)
    return files


def stale_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """The paths under ``root`` whose content is not ``files[path]`` (missing ones included)."""
    return [path for path, text in files.items()
            if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def write_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """Write the stale files under ``root``; returns their paths."""
    stale = stale_files(root, files)
    for path in stale:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(files[path], encoding="utf-8")
    return stale


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    """``text`` as a markdown code span (doubled backticks when it holds one)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _used_types(tables: Mapping[str, pa.Schema]) -> list[pa.DataType]:
    """Every distinct Arrow type of the dataset, in order of first use, the partition type first."""
    used: list[pa.DataType] = [PARTITION_FIELD.type]
    for table_schema in tables.values():
        for field in table_schema:
            if field.type not in used:
                used.append(field.type)
    return used


def type_table(tables: Mapping[str, pa.Schema]) -> str:
    """The markdown table of each Arrow type of the dataset and how every engine spells it."""
    engines = {"Athena": ATHENA, "Snowflake": SNOWFLAKE, "BigQuery": BIGQUERY, "Spark": SPARK, "DuckDB": DUCKDB}
    rows = ["| Arrow (files) | " + " | ".join(engines) + " |", "|" + " --- |" * (len(engines) + 1)]
    for kind in _used_types(tables):
        cells = [_code(str(kind))] + [_code(sql_type(kind, names)) for names in engines.values()]
        rows.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(rows)


def table_markdown(table: str, table_schema: pa.Schema) -> str:
    """One table's section of docs/schema.md: description, partitioning, order, columns."""
    for field in table_schema:
        column_type(table, field, ATHENA)  # an unmapped type fails here too, not only in the DDL
    lines = [f"## `{table}`", "", table_description(table, table_schema), "",
             f"Files: `{table}/{PARTITION}=YYYY-MM-DD/part-*.parquet`, partitioned by `{PARTITION}` (`date`, "
             f"from the directory name), sorted by {', '.join(f'`{key}`' for key in schema.sort_keys(table))}.",
             "", "| column | type | null | meaning |", "| --- | --- | --- | --- |"]
    for field in [*data_fields(table_schema), PARTITION_FIELD]:
        null = "yes" if field.nullable else "never"
        lines.append(f"| `{field.name}` | `{_markdown_cell(str(field.type))}` | {null} | "
                     f"{_markdown_cell(description(field))} |")
    return "\n".join(lines)


DOCS_INTRODUCTION = """\
# Dataset schema

{note}

The schemas in `crawler/store/schema.py` are the one source of truth: the files, this page and the
warehouse DDL in `scripts/warehouse/` (Athena, Snowflake, BigQuery, Spark) all follow them.

## Layout

Under the output root, one directory per table, Hive-partitioned by snapshot date:
`<table>/snapshot_date=YYYY-MM-DD/part-NNNNN.parquet` on a local disk,
`part-<run_id>-NNNNN.parquet` in object storage (S3). A rerun for the same date replaces the
partition. `runs/<run_id>.json` (the run's manifest, written last) lists every file with its rows and
SHA-256: it is the commit point. On a local disk a partition is replaced in one atomic step; in
object storage the new run's files are written beside the old ones, the manifest is written, then
the old files are deleted, so a reader that lists files while a date is crawled again may see both
runs (read through the manifest, or filter on `run_id`, to avoid that). `_staging/` and `_logs/` are
the crawler's own and never part of a table. Every table has files in every published snapshot,
empty ones included, with the same schema.

## Conventions

- **Snapshot date.** `snapshot_date` is not stored in the files: readers take it from the directory
  name (`hive_partitioning` in DuckDB, partition columns in the warehouses).
- **Timestamps** are `timestamp[us, tz=UTC]`: Parquet `INT64` `TIMESTAMP(isAdjustedToUTC=true,
  MICROS)`, instants in UTC at microsecond precision. AWS reports most times to the second; the
  crawler's own times carry microseconds. Athena's `timestamp` resolves them to milliseconds.
- **Account ids** and every other AWS id are text (`string`), never numbers: `account_id` is always
  the 12 digits AWS shows, leading zeros included (`001234567890`).
- **Nullability.** A column marked *never* is never null: the writer refuses a row without it and the
  Parquet field is `REQUIRED`. External tables do not enforce it, so the DDL does not declare it.
- **Lists** are Parquet `LIST`s; `tags` is a list of `{{key, value}}` structs, in the order AWS lists them.

## Types in each engine

{types}
"""


def schema_markdown(tables: Mapping[str, pa.Schema]) -> str:
    """docs/schema.md: layout, conventions, the type mapping and every table's columns."""
    introduction = DOCS_INTRODUCTION.format(note=GENERATED_NOTE, types=type_table(tables))
    sections = [table_markdown(table, table_schema) for table, table_schema in tables.items()]
    return introduction + "\n" + "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the generated files (or, with ``--check``, name the stale ones); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Generate the warehouse DDL (scripts/warehouse/) and docs/schema.md "
                                  "from crawler/store/schema.py.",
        epilog=f"example:\n  {COMMAND} --check", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name the files that are not up to date")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the repository (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        files = generated_files()
    except (UnsupportedTypeError, ValueError) as error:  # a schema the generator cannot describe
        print(f"{COMMAND}: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(args.root, files)
        for path in stale:
            print(f"stale: {path} (regenerate with scripts/generate-warehouse)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_files(args.root, files):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
