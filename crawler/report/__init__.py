"""``access-crawler report``: the quarterly access review of a published snapshot.

:func:`write_report` gathers the findings from :mod:`crawler.analysis` (findings.py) and writes
them as one self-contained HTML page (page.py, with markup.py, charts.py and assets.py), one
xlsx workbook or a directory of CSV files (sheets.py).
"""
from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path

from crawler.analysis import DEFAULT_DAYS
from crawler.errors import UsageError
from crawler.report.findings import Findings, gather_findings
from crawler.report.output import ReportError, replace_atomically
from crawler.report.page import render_page
from crawler.report.sheets import write_csv_files, write_workbook

FORMATS = ("html", "xlsx", "csv")
#: Where each format is written when no path is given (CSV: a directory).
DEFAULT_OUTPUT = {"html": "review.html", "xlsx": "review.xlsx", "csv": "review-csv"}


@dataclass(frozen=True, eq=False)
class ReportResult:
    """What :func:`write_report` wrote and the findings it showed."""

    path: Path
    format: str
    findings: Findings
    files: tuple[Path, ...]


def write_report(root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 snapshot: dt.date | None = None, days: int = DEFAULT_DAYS, fmt: str = "html",
                 now: dt.datetime | None = None) -> ReportResult:
    """Write the review of ``snapshot`` (None: the latest published) under ``root`` as ``fmt`` to ``out``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(out if out is not None else DEFAULT_OUTPUT[fmt])
    findings = gather_findings(root, snapshot, days)
    if fmt == "csv":
        files = tuple(write_csv_files(findings, path))
    elif fmt == "xlsx":
        files = (write_workbook(findings, path),)
    else:
        files = (write_page(findings, path, now),)
    return ReportResult(path, fmt, findings, files)


def write_page(findings: Findings, path: Path, now: dt.datetime | None = None) -> Path:
    """The HTML page of ``findings`` at ``path`` (UTF-8, written under a temporary name, then renamed)."""
    generated_at = now or dt.datetime.now(dt.timezone.utc)
    page = render_page(findings, generated_at)
    return replace_atomically(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))


def describe(result: ReportResult) -> str:
    """One line for the terminal: what was written, of which snapshot, and the headline figure."""
    figures = {label: value for label, value, _ in result.findings.summary}
    share = figures["share of granted services unused"]
    shown = "n/a" if math.isnan(share) else f"{share:.1%}"  # NaN: nothing granted
    return (f"wrote {result.path} ({result.format}): snapshot {result.findings.snapshot_date.isoformat()}, "
            f"{figures['accounts crawled']:,} accounts crawled, {figures['accounts failed']:,} failed; "
            f"{figures['granted services unused']:,} of {figures['granted services (entity x service)']:,} "
            f"granted services unused in {result.findings.days} days ({shown})")


__all__ = ["DEFAULT_OUTPUT", "FORMATS", "Findings", "ReportError", "ReportResult", "describe", "write_page",
           "write_report"]
