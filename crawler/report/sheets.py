"""The findings as tables for spreadsheets: one workbook with a sheet per finding, or one CSV file each.

Untrusted text stays text. In CSV, a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return would be read by a spreadsheet as a formula (``=HYPERLINK(...)``, ``@SUM(...)``):
such cells get a leading apostrophe, which spreadsheets show as text. In the workbook every
string is stored as a string cell, never a formula, so the exact text is kept; characters that
XML cannot hold (control characters) are written as visible escapes (``\\x07``).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from crawler.listing import visible
from crawler.report.findings import Findings
from crawler.report.output import ReportError, replace_atomically

#: What makes a spreadsheet read a CSV cell as a formula (OWASP's list: = + - @, tab, carriage return).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NEUTRALISER = "'"
#: Characters an XML 1.0 document (and so an xlsx cell) cannot hold.
NOT_IN_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
EXCEL_MAX_ROWS = 1_048_576
UNKNOWN_COLUMNS = ["kind", "account_id", "account_name", "entity_type", "entity_arn", "entity_name", "reason",
                   "error_code", "error_message"]


def finding_tables(findings: Findings) -> dict[str, pd.DataFrame]:
    """Every finding as a plain table, by name: summary, accounts, unused services, stale entities,
    widest gaps, unknown (accounts not crawled and entities without data) and, for a snapshot with
    the Organizations view, service control policies."""
    summary = pd.DataFrame({"metric": [label for label, _, _ in findings.summary],
                            "value": [value for _, value, _ in findings.summary]})
    tables = {"summary": summary, "accounts": findings.accounts, "unused services": findings.unused_services,
              "stale entities": findings.stale_entities, "widest gaps": findings.widest_gaps,
              "unknown": unknown_table(findings)}
    if findings.scps is not None:
        tables["service control policies"] = findings.scps
    return {name: _plain(table) for name, table in tables.items()}


def unknown_table(findings: Findings) -> pd.DataFrame:
    """Accounts not crawled and entities without access data, one row each, with the reason."""
    accounts = findings.failed_accounts.assign(kind="account", entity_type=None, entity_arn=None, entity_name=None,
                                               reason=findings.failed_accounts["outcome"])
    entities = findings.unknown_entities.assign(kind="entity", reason=findings.unknown_entities["job_outcome"])
    parts = [part[UNKNOWN_COLUMNS] for part in (accounts, entities) if not part.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=UNKNOWN_COLUMNS)


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as their values, so every format writes the same text."""
    columns = {name: object for name, dtype in table.dtypes.items() if isinstance(dtype, pd.CategoricalDtype)}
    return table.astype(columns).reset_index(drop=True)


# -- CSV -------------------------------------------------------------------------------------
def neutralise(value: object) -> object:
    """A string that a spreadsheet would take for a formula, with a leading apostrophe; anything else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return NEUTRALISER + value
    return value


def write_csv_files(findings: Findings, directory: Path) -> list[Path]:
    """One CSV file per finding in ``directory`` (created if needed), formula-like cells neutralised."""
    if directory.exists() and not directory.is_dir():
        raise ReportError(f"{directory} is a file: --format csv writes a directory of files")
    written = []
    for name, table in finding_tables(findings).items():
        path = directory / (name.replace(" ", "_") + ".csv")
        replace_atomically(path, functools.partial(_write_csv, table))
        written.append(path)
    return written


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    cleaned = _map_strings(table, neutralise)
    cleaned.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")


# -- xlsx ------------------------------------------------------------------------------------
def write_workbook(findings: Findings, path: Path) -> Path:
    """One xlsx workbook with a sheet per finding; strings stay strings, timestamps are UTC."""
    tables = finding_tables(findings)
    for name, table in tables.items():
        if len(table) >= EXCEL_MAX_ROWS:
            raise ReportError(f"the {name} sheet would have {len(table):,} rows, more than Excel's "
                                   f"{EXCEL_MAX_ROWS:,}: use --format csv")
    replace_atomically(path, lambda temporary: _write_sheets(tables, temporary))
    return path


def _write_sheets(tables: dict[str, pd.DataFrame], path: Path) -> None:
    try:
        import openpyxl  # noqa: F401 - pandas' xlsx writer
    except ImportError as error:
        raise ReportError("--format xlsx needs openpyxl: pip install openpyxl") from error
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, table in tables.items():
            _for_excel(table).to_excel(writer, sheet_name=name, index=False)
            sheet = writer.sheets[name]
            _keep_strings_as_text(sheet)
            sheet.freeze_panes = "A2"
            sheet.auto_filter.ref = sheet.dimensions


def _for_excel(table: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as naive UTC (Excel has no time zones); text without characters XML cannot hold."""
    converted = table.copy()
    for name, dtype in table.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            converted[name] = table[name].dt.tz_convert("UTC").dt.tz_localize(None)
    return _map_strings(converted, lambda value: NOT_IN_XML.sub(lambda match: visible(match.group()), value)
                        if isinstance(value, str) else value)


def _keep_strings_as_text(sheet: object) -> None:
    """openpyxl takes a string starting with ``=`` for a formula: store every such cell as a string."""
    for row in sheet.iter_rows(min_row=2):  # type: ignore[attr-defined]
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"


# -- shared ----------------------------------------------------------------------------------
def _map_strings(table: pd.DataFrame, function: Callable[[object], object]) -> pd.DataFrame:
    mapped = table.copy()
    for name, dtype in table.dtypes.items():
        if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
            mapped[name] = table[name].astype(object).map(function)
    return mapped
