"""Generated warehouse DDL and schema docs: in step with crawler/store/schema.py, complete, read by real engines."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawler.config.settings import AdvisorSettings, OrganizationsAccessSettings
from crawler.crawl.scheduler import run_crawl
from crawler.sim import OrgSpec, SimulatedOrganization
from crawler.store import schema, warehouse
from tests.conftest import isolate_aws
from tests.helpers import SIM_PROFILE, crawl_config

DIALECT_NAMES = {"athena": warehouse.ATHENA, "snowflake": warehouse.SNOWFLAKE, "bigquery": warehouse.BIGQUERY,
                 "spark": warehouse.SPARK}
#: How each dialect's DDL declares a data column: name, then type.
COLUMN_FORMS = {"athena": "`{name}` {kind} COMMENT ", "snowflake": "{name} {kind} AS (",
                "bigquery": "`{name}` {kind} OPTIONS (description = ", "spark": "`{name}` {kind} COMMENT "}
PARTITION_FORMS = {"athena": "PARTITIONED BY (`snapshot_date` date COMMENT ",
                   "snowflake": "PARTITION BY (snapshot_date)",
                   "bigquery": "WITH PARTITION COLUMNS (`snapshot_date` DATE)",
                   "spark": "PARTITIONED BY (`snapshot_date`)"}
#: One crawl fills every table: action level, both drill-downs, and an account without the role (errors).
SPEC = OrgSpec(accounts=3, entities=8, seed=11, accounts_without_crawler_role=1)
JAVA = shutil.which("java") or os.environ.get("JAVA_HOME")
needs_java = pytest.mark.skipif(not JAVA, reason="Spark needs Java: no java on PATH and JAVA_HOME is not set")
#: pyspark warns about pandas 3 on import of its pandas helpers, which these tests do not use.
quiet_pyspark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def committed(path: str) -> str:
    """A generated file as committed in the repository ('' when missing)."""
    file = warehouse.REPO_ROOT / path
    return file.read_text(encoding="utf-8") if file.is_file() else ""


def table_section(text: str, table: str) -> str:
    """The statements of one table in a generated DDL file (from its ``-- table:`` line to the next)."""
    match = re.search(rf"^-- {table}: .*?(?=^-- [a-z_]+: |\Z)", text, flags=re.M | re.S)
    assert match, f"no section for {table}"
    return match.group(0)


def with_field(table_schema: pa.Schema, field: pa.Field) -> pa.Schema:
    """``table_schema`` with the field of the same name replaced by ``field``."""
    return table_schema.set(table_schema.get_field_index(field.name), field)


# --- the committed files ------------------------------------------------------------------------

@pytest.mark.parametrize("path", warehouse.GENERATED_PATHS)
def test_committed_file_equals_what_the_schema_generates(path: str) -> None:
    expected = warehouse.generated_files()[path]
    assert committed(path) == expected, f"{path} is stale: run scripts/generate-warehouse and commit it"


def test_a_changed_schema_field_makes_every_generated_file_differ() -> None:
    services = schema.TABLES["service_last_accessed"]
    renamed = services.field("last_authenticated").with_metadata({"description": "Changed meaning."})
    retyped = services.field("total_authenticated_entities").with_type(pa.bool_())
    for changed_field in (renamed, retyped):
        tables = {**schema.TABLES, "service_last_accessed": with_field(services, changed_field)}
        changed = warehouse.generated_files(tables)
        assert [path for path, text in changed.items() if text == committed(path)] == []


def test_check_names_the_stale_files_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert warehouse.main(["--check", "--root", str(tmp_path)]) == 1
    assert re.findall(r"stale: (\S+)", capsys.readouterr().err) == list(warehouse.GENERATED_PATHS)
    assert warehouse.main(["--root", str(tmp_path)]) == 0
    assert warehouse.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "scripts/warehouse/spark.sql").write_text("-- edited by hand\n", encoding="utf-8")
    capsys.readouterr()
    assert warehouse.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == \
        ["stale: scripts/warehouse/spark.sql (regenerate with scripts/generate-warehouse)"]


def test_a_schema_the_generator_cannot_describe_exits_2_naming_the_column(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    odd = pa.schema([pa.field("odd", pa.uint8(), metadata={"description": "A small count."})],
                    metadata={"description": "A table of the future."})
    monkeypatch.setitem(schema.TABLES, "future", odd)
    assert warehouse.main(["--root", str(tmp_path)]) == 2
    assert "future.odd: no warehouse type for Arrow type uint8" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- completeness and types ---------------------------------------------------------------------

@pytest.mark.parametrize("dialect", sorted(DIALECT_NAMES))
def test_every_table_and_column_appears_in_every_dialect(dialect: str) -> None:
    text = committed(f"scripts/warehouse/{dialect}.sql")
    assert len(re.findall(r"^CREATE ", text, flags=re.M)) == len(schema.TABLES)
    for table, table_schema in schema.TABLES.items():
        section = table_section(text, table)
        assert re.search(rf"^CREATE .*\b{table}\b", section, flags=re.M), f"{dialect}: no CREATE of {table}"
        assert PARTITION_FORMS[dialect] in section
        for field in warehouse.data_fields(table_schema):
            kind = warehouse.sql_type(field.type, DIALECT_NAMES[dialect])
            assert COLUMN_FORMS[dialect].format(name=field.name, kind=kind) in section, f"{dialect}: {table}.{field}"
            expected = warehouse.description(field)
            if dialect != "snowflake":  # Snowflake's descriptions are -- comments, the others literals
                expected = warehouse.sql_string(expected)
            assert expected in section


def test_schema_doc_lists_every_table_and_column() -> None:
    text = committed(warehouse.DOCS_PATH)
    for table, table_schema in schema.TABLES.items():
        assert f"## `{table}`" in text
        assert table_schema.metadata[b"description"].decode() in text
        for field in table_schema:
            null = "yes" if field.nullable else "never"
            assert f"| `{field.name}` | `{field.type}` | {null} | {warehouse.description(field)} |" in text


@pytest.mark.parametrize(("names", "expected"), [
    (warehouse.ATHENA, ("string", "int", "boolean", "date", "timestamp", "array<string>",
                        "array<struct<key:string,value:string>>")),
    (warehouse.SNOWFLAKE, ("VARCHAR", "NUMBER(10, 0)", "BOOLEAN", "DATE", "TIMESTAMP_LTZ(6)", "ARRAY", "ARRAY")),
    (warehouse.BIGQUERY, ("STRING", "INT64", "BOOL", "DATE", "TIMESTAMP", "ARRAY<STRING>",
                          "ARRAY<STRUCT<`key` STRING, `value` STRING>>")),
    (warehouse.SPARK, ("STRING", "INT", "BOOLEAN", "DATE", "TIMESTAMP", "ARRAY<STRING>",
                       "ARRAY<STRUCT<`key`: STRING, `value`: STRING>>")),
], ids=["athena", "snowflake", "bigquery", "spark"])
def test_each_dataset_type_maps_to_its_exact_warehouse_type(names: warehouse.TypeNames,
                                                            expected: tuple[str, ...]) -> None:
    kinds = (pa.string(), pa.int32(), pa.bool_(), pa.date32(), pa.timestamp("us", tz="UTC"), pa.list_(pa.string()),
             schema.TAGS)
    assert tuple(warehouse.sql_type(kind, names) for kind in kinds) == expected


@pytest.mark.parametrize("kind", [
    pa.uint64(), pa.float64(), pa.binary(), pa.large_string(), pa.decimal128(10, 2), pa.timestamp("ms", tz="UTC"),
    pa.timestamp("us"), pa.timestamp("us", tz="Europe/Paris"), pa.date64(), pa.map_(pa.string(), pa.string()),
    pa.list_(pa.uint64()), pa.large_list(pa.string()), pa.struct([pa.field("score", pa.float32())]),
], ids=str)
@pytest.mark.parametrize("render", [warehouse.athena_table, warehouse.snowflake_table, warehouse.bigquery_table,
                                    warehouse.spark_table, warehouse.table_markdown], ids=lambda f: f.__name__)
def test_an_unknown_arrow_type_raises_instead_of_being_guessed(kind: pa.DataType, render: Any) -> None:
    table_schema = pa.schema([pa.field("odd", kind, metadata={"description": "A column of another type."})],
                             metadata={"description": "A table."})
    with pytest.raises(warehouse.UnsupportedTypeError, match=r"^future\.odd: no warehouse type"):
        render("future", table_schema)


# --- real engines read a real crawl -------------------------------------------------------------

@dataclass(frozen=True)
class Crawl:
    """A dataset published by a crawl of the simulator."""

    root: Path
    management_account_id: str
    snapshot_date: date


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Crawl:
    """One crawl for the module, with the same fake-credential isolation as every test (conftest)."""
    home, root = tmp_path_factory.mktemp("aws-home"), tmp_path_factory.mktemp("dataset")
    sim = SimulatedOrganization(SPEC)
    with pytest.MonkeyPatch.context() as patch, sim.in_process():
        isolate_aws(patch, *sim.write_aws_config(home, profile=SIM_PROFILE))
        advisor = AdvisorSettings(granularity="ACTION_LEVEL", entity_details=True, policies_granting_access=True,
                                  poll_interval_seconds=0.05, max_poll_interval_seconds=0.5)
        view = OrganizationsAccessSettings(enabled=True, per_policy=True)
        summary = run_crawl(crawl_config(root, advisor=advisor, organizations_access=view))
    return Crawl(root, sim.management_account_id, summary.snapshot_date)


def arrow_rows(crawl: Crawl, table: str) -> pa.Table:
    """A published table as pyarrow reads its files (no partition column)."""
    file_schema = pa.schema(warehouse.data_fields(schema.TABLES[table]))
    return pq.read_table(crawl.root / table, partitioning=None, schema=file_schema)


def test_the_crawl_fills_every_table(crawled: Crawl) -> None:
    assert crawled.management_account_id.startswith("00"), "the test needs an account id with leading zeros"
    assert {table: arrow_rows(crawled, table).num_rows > 0 for table in schema.TABLES} == \
        dict.fromkeys(schema.TABLES, True)


@pytest.mark.parametrize("table", list(schema.TABLES))
def test_duckdb_reads_every_column_with_its_type_and_value(crawled: Crawl, table: str) -> None:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    relation = connection.sql(f"SELECT * FROM read_parquet('{crawled.root}/{table}/**/*.parquet', "
                              "hive_partitioning = true)")
    fields = [*warehouse.data_fields(schema.TABLES[table]), warehouse.PARTITION_FIELD]
    assert list(zip(relation.columns, map(str, relation.types), strict=True)) == \
        [(field.name, warehouse.sql_type(field.type, warehouse.DUCKDB)) for field in fields]
    expected = [(*row.values(), crawled.snapshot_date) for row in arrow_rows(crawled, table).to_pylist()]
    assert sorted(relation.fetchall(), key=repr) == sorted(expected, key=repr)


def test_duckdb_timestamps_are_utc_microseconds_and_account_ids_keep_leading_zeros(crawled: Crawl) -> None:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    rows = connection.sql(f"SELECT account_id, started_at, typeof(started_at), snapshot_date FROM read_parquet("
                          f"'{crawled.root}/accounts/**/*.parquet', hive_partitioning = true)").fetchall()
    assert {row[2] for row in rows} == {"TIMESTAMP WITH TIME ZONE"}
    assert {row[1].utcoffset() for row in rows} == {timedelta(0)}
    assert any(row[1].microsecond % 1000 for row in rows), "started_at keeps microseconds"
    assert crawled.management_account_id in {row[0] for row in rows}
    assert {row[3] for row in rows} == {crawled.snapshot_date}


# --- Spark ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for the module, UTC session time zone, catalog in memory."""
    from pyspark.sql import SparkSession

    warehouse_dir = tmp_path_factory.mktemp("spark-warehouse")
    session = (SparkSession.builder.master("local[1]").appName("access-crawler-tests")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1").config("spark.sql.warehouse.dir", str(warehouse_dir))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def spark_type(field: pa.Field) -> str:
    """What Spark's ``simpleString`` says for a column, from the generated Spark type."""
    return warehouse.sql_type(field.type, warehouse.SPARK).lower().replace("`", "").replace(" ", "")


def plain(value: Any) -> Any:
    """A Spark value as pyarrow's ``to_pylist`` gives it (Rows as dicts)."""
    if hasattr(value, "asDict"):
        return {key: plain(item) for key, item in value.asDict().items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def spark_rows(frame: Any, table: str) -> list[tuple[Any, ...]]:
    """The data columns of a Spark frame, timestamps as epoch microseconds, sorted."""
    columns = [f"unix_micros(`{field.name}`)" if field.type == schema.TIMESTAMP else f"`{field.name}`"
               for field in warehouse.data_fields(schema.TABLES[table])]
    return sorted((tuple(plain(value) for value in row) for row in frame.selectExpr(*columns).collect()), key=repr)


def arrow_micros_rows(crawl: Crawl, table: str) -> list[tuple[Any, ...]]:
    """The same columns as :func:`spark_rows` from pyarrow, timestamps as epoch microseconds, sorted."""
    rows = arrow_rows(crawl, table)
    columns = [rows.column(name).cast(pa.int64()) if rows.schema.field(name).type == schema.TIMESTAMP
               else rows.column(name) for name in rows.column_names]
    return sorted(zip(*(column.to_pylist() for column in columns), strict=True), key=repr)


@needs_java
@quiet_pyspark
@pytest.mark.slow
@pytest.mark.parametrize("table", list(schema.TABLES))
def test_spark_reads_the_dataset_with_the_same_types_and_values(spark: Any, crawled: Crawl, table: str) -> None:
    frame = spark.read.parquet(str(crawled.root / table))
    fields = [*warehouse.data_fields(schema.TABLES[table]), warehouse.PARTITION_FIELD]
    assert [(field.name, field.dataType.simpleString()) for field in frame.schema] == \
        [(field.name, spark_type(field)) for field in fields]
    assert spark_rows(frame, table) == arrow_micros_rows(crawled, table)
    assert {row[0] for row in frame.select("snapshot_date").distinct().collect()} == {crawled.snapshot_date}


@needs_java
@quiet_pyspark
@pytest.mark.slow
def test_spark_ddl_creates_tables_that_return_every_row(spark: Any, crawled: Crawl) -> None:
    text = committed("scripts/warehouse/spark.sql").replace("<ROOT>", str(crawled.root))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    for statement in filter(None, (part.strip() for part in re.split(r";\s*$", body, flags=re.M))):
        spark.sql(statement)
    for table, table_schema in schema.TABLES.items():
        fields = [*warehouse.data_fields(table_schema), warehouse.PARTITION_FIELD]
        assert [(field.name, field.dataType.simpleString()) for field in spark.table(table).schema] == \
            [(field.name, spark_type(field)) for field in fields]
        assert [field.metadata.get("comment") for field in spark.table(table).schema] == \
            [warehouse.description(field) for field in fields]
        assert spark.table(table).count() == arrow_rows(crawled, table).num_rows, table
        assert spark_rows(spark.table(table), table) == arrow_micros_rows(crawled, table), table
