"""The review report: HTML, xlsx and CSV built from a crawled organization, every figure from crawler.analysis.

One dataset serves the module (built by the first test that asks): the simulated organization is
crawled twice into one root, on two snapshot dates (the first without one account, so the trend
moves), with one account the crawler cannot enter and one whose every job fails. Then one role of
the latest snapshot is renamed ``<script>alert(1)</script>`` and one account ``<img src=x
onerror=alert(2)>`` in the Parquet files (names AWS would refuse: the report must not count on
that), and the failed account ``=HYPERLINK(...)``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
from dataclasses import dataclass, replace
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crawler import analysis
from crawler.cli import EXIT_FATAL, EXIT_OK, EXIT_USAGE, build_parser, main
from crawler.config.settings import (
    AccountFilter,
    AdvisorSettings,
    OrganizationsAccessSettings,
    OrganizationSettings,
    OutputSettings,
)
from crawler.crawl.scheduler import run_crawl
from crawler.report import ReportResult, write_report
from crawler.report.page import NO_ACCOUNTS
from crawler.report.sheets import FORMULA_STARTS, neutralise
from crawler.sim import OrgSpec
from crawler.store import schema
from crawler.store.dataset import Dataset
from tests.helpers import crawl_config, crawlable

SPEC = OrgSpec(accounts=4, entities=10, seed=3, hostile_names=True, accounts_without_crawler_role=1)
FIRST, LATEST = date(2026, 8, 31), date(2026, 11, 30)
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = "<img src=x onerror=alert(2)>"
FORMULA_NAME = '=HYPERLINK("https://x.invalid/","open me")'
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHEETS = ["summary", "accounts", "unused services", "stale entities", "widest gaps", "unknown"]
#: Attributes through which a page loads or links something.
REFERENCES = ("src", "href", "srcset", "action", "formaction", "data", "poster", "xlink:href", "background")


@dataclass(frozen=True)
class Reviewed:
    """The crawled dataset and what was done to it."""

    root: Path
    failed_account: str
    failing_jobs_account: str
    script_role_arn: str
    img_account: str


_DATASETS: dict[str, Reviewed] = {}
_PAGES: dict[str, tuple[ReportResult, str]] = {}


@pytest.fixture
def reviewed(crawl_org, tmp_path_factory: pytest.TempPathFactory) -> Reviewed:
    """The two-snapshot dataset of the module (crawled by the first test that asks)."""
    if "dataset" not in _DATASETS:
        _DATASETS["dataset"] = crawl_two_snapshots(crawl_org, tmp_path_factory.mktemp("report") / "out")
    return _DATASETS["dataset"]


def crawl_two_snapshots(crawl_org, root: Path) -> Reviewed:  # noqa: ANN001 - the fixture
    """Crawl the organization on FIRST (one account left out) and on LATEST, then plant hostile names."""
    sim = crawl_org(SPEC)
    enterable = sorted(crawlable(sim))
    failed = next(i for i, m in sim.model.accounts.items() if m.account.state == "ACTIVE" and not m.has_crawler_role)
    failing_jobs, left_out = enterable[-1], enterable[-2]
    sim.faults.account(failing_jobs).job_failure_rate = 1.0
    config = crawl_config(root, advisor=AdvisorSettings(poll_interval_seconds=0.05, max_poll_interval_seconds=0.5,
                                                        job_retries=0))
    first = replace(config, output=OutputSettings(path=str(root), snapshot_date=FIRST),
                    organization=OrganizationSettings(exclude=AccountFilter(account_ids=(left_out,))))
    run_crawl(first)
    run_crawl(replace(config, output=OutputSettings(path=str(root), snapshot_date=LATEST)))
    snap = analysis.open_snapshot(root, LATEST)
    gaps = analysis.widest_gaps(snap)
    role_arn = str(gaps.loc[gaps["entity_type"] == "ROLE", "entity_arn"].iloc[0])
    img_account = enterable[0]
    rewrite(root, LATEST, ("entity_arn", role_arn), ("entity_name", SCRIPT_NAME))
    rewrite(root, LATEST, ("account_id", img_account), ("account_name", IMG_NAME))
    rewrite(root, LATEST, ("account_id", failed), ("account_name", FORMULA_NAME))
    return Reviewed(root, failed, failing_jobs, role_arn, img_account)


def rewrite(root: Path, snapshot: date, where: tuple[str, str], to: tuple[str, str]) -> None:
    """In every file of the snapshot holding both columns, set ``to`` in the rows matching ``where``."""
    (key, value), (column, new) = where, to
    for table in schema.TABLES:
        for path in sorted((root / table / f"snapshot_date={snapshot.isoformat()}").glob("*.parquet")):
            data = pq.read_table(path)
            if key not in data.column_names or column not in data.column_names:
                continue
            index = data.column_names.index(column)
            changed = pc.if_else(pc.equal(data.column(key), value), pa.scalar(new, pa.string()), data.column(column))
            pq.write_table(data.set_column(index, data.schema.field(index), changed), path)


@pytest.fixture
def page(reviewed: Reviewed, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportResult, str]:
    """The HTML report of the latest snapshot and its text (written once)."""
    if "page" not in _PAGES:
        result = write_report(reviewed.root, tmp_path_factory.mktemp("page") / "review.html")
        _PAGES["page"] = result, result.path.read_text(encoding="utf-8")
    return _PAGES["page"]


# -- reading the page back -------------------------------------------------------------------
VOID = {"meta", "wbr", "br", "img", "input", "link", "hr", "area", "base", "col", "embed", "source", "track"}


class Node:
    """An element of the parsed page: tag, attributes, children (elements and text)."""

    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        """All the text inside, as the browser's textContent."""
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def walk(self) -> list[Node]:
        """This element and every element inside, in document order."""
        found = [self]
        for child in self.children:
            if isinstance(child, Node):
                found.extend(child.walk())
        return found

    def find(self, tag: str, **attrs: str) -> list[Node]:
        """Elements with this tag and these attribute values."""
        return [node for node in self.walk()
                if node.tag == tag and all(node.attrs.get(name) == value for name, value in attrs.items())]


class TreeBuilder(HTMLParser):
    """HTML text -> a tree of Nodes (entities decoded, as a browser decodes them)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(text: str) -> Node:
    """The page as a tree."""
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def table_rows(document: Node, table_id: str) -> list[list[Node]]:
    """The body rows of a table, as lists of cells."""
    (table,) = document.find("table", id=table_id)
    (body,) = table.find("tbody")
    return [row.find("td") for row in body.find("tr")]


def number(cell: Node) -> float:
    """The exact number behind a numeric cell (NaN when missing)."""
    value = cell.attrs["data-sort"]
    return float(value) if value else math.nan


def same(a: float, b: float) -> bool:
    """Equal, NaN included."""
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- the HTML page ---------------------------------------------------------------------------
def test_the_summary_shows_the_analysis_totals(reviewed: Reviewed, page: tuple[ReportResult, str]) -> None:
    accounts = analysis.account_summary(analysis.open_snapshot(reviewed.root), 90)
    figures = {node.find("dt")[0].text(): node.find("dd")[0] for node in parse(page[1]).find("dl", id="summary")[0]
               .find("div")}
    expected = {
        "accounts crawled": (accounts["outcome"] == "ok").sum(),
        "accounts failed": (accounts["outcome"] == "failed").sum(),
        "entities": accounts["entities"].sum(),
        "entities without data (unknown)": accounts["entities_unknown"].sum(),
        "granted services (entity x service)": accounts["services_granted"].sum(),
        "granted services used": accounts["services_used"].sum(),
        "granted services unused": accounts["services_unused"].sum(),
        "stale users and roles": accounts["stale_entities"].sum(),
        "share of granted services unused": accounts["services_unused"].sum() / accounts["services_granted"].sum(),
    }
    for label, value in expected.items():
        assert float(figures[label].attrs["data-value"] or "nan") == pytest.approx(float(value), rel=1e-12), label
    assert figures["snapshot"].text() == LATEST.isoformat()
    assert expected["accounts failed"] == 1 and expected["entities without data (unknown)"] > 0


def test_the_account_table_equals_account_summary(reviewed: Reviewed, page: tuple[ReportResult, str]) -> None:
    accounts = analysis.account_summary(analysis.open_snapshot(reviewed.root), 90)
    rows = table_rows(parse(page[1]), "accounts-table")
    assert [row[0].text() for row in rows] == list(accounts["account_id"])
    numeric = ["entities", "entities_unknown", "services_granted", "services_used", "services_unused",
               "services_too_new", "share_unused", "stale_entities"]
    for row, (_, expected) in zip(rows, accounts.iterrows(), strict=True):
        assert row[2].text() == expected["outcome"]
        shown = [number(cell) for cell in row[3:]]
        assert all(same(a, float(expected[b])) for a, b in zip(shown, numeric, strict=True)), row[0].text()


def test_unused_services_gaps_stale_and_unknown_equal_the_analysis(reviewed: Reviewed,
                                                                   page: tuple[ReportResult, str]) -> None:
    snap = analysis.open_snapshot(reviewed.root)
    document = parse(page[1])
    unused = analysis.unused_services(snap, 90)
    held = unused[unused["status"] == "unused"].groupby("service_namespace", observed=True)["entity_arn"].nunique()
    shown = {row[0].text(): number(row[2]) for row in table_rows(document, "unused-services-table")}
    assert shown and all(held[namespace] == count for namespace, count in shown.items())
    assert min(shown.values()) >= held.drop(list(shown)).max(), "the services held unused by most entities"
    gaps = analysis.widest_gaps(snap, 90)
    assert [(row[3].text(), number(row[4]), number(row[5]), number(row[6]))
            for row in table_rows(document, "widest-gaps-table")] == \
        [(arn, granted, used, gap) for arn, granted, used, gap in
         zip(gaps["entity_arn"], gaps["services_granted"], gaps["services_used"], gaps["unused"], strict=True)]
    stale = analysis.stale_entities(snap, 90)
    assert {row[4].text() for row in table_rows(document, "stale-entities-table")} == \
        set(stale.loc[stale["status"] == "stale", "entity_arn"])
    assert {row[3].text() for row in table_rows(document, "unknown-entities-table")} == \
        set(unused.loc[unused["status"] == "unknown", "entity_arn"])
    assert [row[0].text() for row in table_rows(document, "failed-accounts-table")] == [reviewed.failed_account]


def test_the_charts_carry_the_analysis_figures(reviewed: Reviewed, page: tuple[ReportResult, str]) -> None:
    snap = analysis.open_snapshot(reviewed.root)
    charts = parse(page[1]).find("svg")
    assert len(charts) == 3
    per_account, ages, trend = ([float(node.attrs["data-value"] or "nan") for node in chart.walk()
                                 if "data-value" in node.attrs] for chart in charts)
    accounts = analysis.account_summary(snap, 90)
    assert per_account == [share for share in accounts["share_unused"] if not math.isnan(share)]
    assert "no data" in charts[0].text(), "the account whose every job failed has no bar"
    not_within_400 = analysis.unused_services(snap, 400)["status"].isin(["unused", "too_new"]).sum()
    assert ages[-1] == not_within_400 and sum(ages) == accounts["services_granted"].sum()
    summaries = [analysis.account_summary(analysis.open_snapshot(reviewed.root, day), 90) for day in (FIRST, LATEST)]
    assert trend == [pytest.approx(summary["services_unused"].sum() / summary["services_granted"].sum())
                     for summary in summaries]
    assert trend[0] != trend[1]


def test_untrusted_names_are_shown_as_text(reviewed: Reviewed, page: tuple[ReportResult, str]) -> None:
    text = page[1]
    assert SCRIPT_NAME not in text and IMG_NAME not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    document = parse(text)
    assert len(document.find("script")) == 1 and not document.find("img")
    names = {row[2].text(): row[3].text() for row in table_rows(document, "widest-gaps-table")}
    assert names[SCRIPT_NAME] == reviewed.script_role_arn
    assert IMG_NAME in {row[1].text() for row in table_rows(document, "accounts-table")}
    assert not [node for node in document.walk() if any(name.startswith("on") for name in node.attrs)]


def test_the_page_references_nothing_outside_itself(page: tuple[ReportResult, str]) -> None:
    document = parse(page[1])
    references = [(node.tag, name, value) for node in document.walk() for name, value in node.attrs.items()
                  if name in REFERENCES]
    assert references and all(name == "href" and (value or "").startswith("#") for _, name, value in references)
    assert not {"link", "img", "iframe", "object", "embed", "image", "use", "base"} & {n.tag for n in document.walk()}
    (script,) = document.find("script")
    assert "src" not in script.attrs and "fetch(" not in script.text() and "XMLHttpRequest" not in script.text()
    assert "url(" not in "".join(style.text() for style in document.find("style")) and "@import" not in page[1]
    (policy,) = [node.attrs["content"] or "" for node in document.find("meta")
                 if node.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert policy.startswith("default-src 'none'")


# -- xlsx and CSV ----------------------------------------------------------------------------
def test_the_workbook_has_a_sheet_per_finding_and_keeps_names_as_text(reviewed: Reviewed, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl", reason="--format xlsx needs openpyxl")
    result = write_report(reviewed.root, tmp_path / "review.xlsx", fmt="xlsx")
    workbook = openpyxl.load_workbook(result.path)
    assert workbook.sheetnames == SHEETS
    accounts = analysis.account_summary(analysis.open_snapshot(reviewed.root), 90)
    rows = list(workbook["accounts"].iter_rows(values_only=True))
    assert rows[0][:3] == ("account_id", "account_name", "outcome")
    assert [row[0] for row in rows[1:]] == list(accounts["account_id"])
    cells = [cell for row in workbook["widest gaps"].iter_rows(min_row=2) for cell in row]
    assert SCRIPT_NAME in [cell.value for cell in cells]
    formula_like = [cell for sheet in workbook for row in sheet.iter_rows() for cell in row
                    if isinstance(cell.value, str) and cell.value.startswith("=")]
    assert FORMULA_NAME in [cell.value for cell in formula_like]
    assert all(cell.data_type == "s" for cell in formula_like), "stored as text, never a formula"
    unknown = list(workbook["unknown"].iter_rows(values_only=True))
    assert {row[0] for row in unknown[1:]} == {"account", "entity"}


def test_the_csv_files_neutralise_formulas(reviewed: Reviewed, tmp_path: Path) -> None:
    result = write_report(reviewed.root, tmp_path / "csv", fmt="csv")
    assert sorted(path.name for path in result.path.iterdir()) == sorted(
        name.replace(" ", "_") + ".csv" for name in SHEETS)
    cells: list[str] = []
    for path in result.files:
        with path.open(encoding="utf-8", newline="") as handle:
            cells.extend(cell for row in csv.reader(handle) for cell in row)
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert {"'=x", "'@@", "'+x+", "'-1+1"} & set(cells), "the hostile IAM names are there, neutralised"
    assert "'" + FORMULA_NAME in cells
    assert SCRIPT_NAME in cells and IMG_NAME in cells, "exact text otherwise"


@pytest.mark.parametrize("value, expected", [
    ("=SUM(1+1)", "'=SUM(1+1)"), ("+x", "'+x"), ("-1+1", "'-1+1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), ("a=b", "a=b"), ("", ""), (-5, -5), (None, None),
])
def test_neutralise_prefixes_formula_starts_only(value: Any, expected: Any) -> None:
    assert neutralise(value) == expected


# -- the command line --------------------------------------------------------------------------
def test_the_report_command_is_documented_with_an_example() -> None:
    parser = build_parser()
    action = next(action for action in parser._actions if action.dest == "==SUPPRESS==" and action.choices)
    text = dict(action.choices or {})["report"].format_help()
    assert "example" in text and "= + - @" in text and "--format" in text


@pytest.mark.parametrize("fmt, name", [("html", "review.html"), ("xlsx", "review.xlsx"), ("csv", "review-csv")])
def test_the_report_command_writes_each_format(reviewed: Reviewed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], fmt: str, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(reviewed.root), "--format", fmt, "--snapshot", FIRST.isoformat()]) == EXIT_OK
    assert (tmp_path / name).exists()
    assert f"wrote {name}" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, code, message", [
    (["--days", "0"], EXIT_USAGE, "1-400"), (["--days", "401"], EXIT_USAGE, "1-400"),
    (["--snapshot", "2020-01-01"], EXIT_FATAL, "no published snapshot 2020-01-01"),
    (["--format", "pdf"], EXIT_USAGE, "invalid choice"),
])
def test_the_report_command_rejects_bad_arguments(reviewed: Reviewed, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str], arguments: list[str],
                                                  code: int, message: str) -> None:
    try:
        result = main(["report", str(reviewed.root), "--out", str(tmp_path / "r.html"), *arguments])
    except SystemExit as exit_:  # argparse
        result = int(exit_.code or 0)
    assert result == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_the_report_command_explains_an_unwritable_output(reviewed: Reviewed, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "review.csv"
    existing.write_text("keep me", encoding="utf-8")
    assert main(["report", str(reviewed.root), "--format", "csv", "--out", str(existing)]) == EXIT_FATAL
    assert main(["report", str(reviewed.root), "--out", str(tmp_path)]) == EXIT_FATAL
    err = capsys.readouterr().err
    assert "is a file" in err and "Is a directory" in err and "Traceback" not in err
    assert existing.read_text(encoding="utf-8") == "keep me" and os.listdir(tmp_path) == ["review.csv"]


def publish_without_accounts(root: Path) -> None:
    """A published snapshot that holds no account, as a crawl that selected none would leave it."""
    dataset = Dataset(str(root), LATEST, "no-accounts", OutputSettings(path=str(root)))
    dataset.publish({"organization_id": "o-empty", "granularity": "SERVICE_LEVEL"})


@pytest.mark.parametrize("fmt", ["html", "xlsx", "csv"])
def test_a_snapshot_without_accounts_gives_an_empty_review(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           fmt: str) -> None:
    root, out = tmp_path / "out", tmp_path / f"review.{fmt}"
    publish_without_accounts(root)
    assert main(["report", str(root), "--format", fmt, "--out", str(out)]) == EXIT_OK
    assert "0 accounts crawled, 0 failed; 0 of 0 granted services unused" in capsys.readouterr().out
    if fmt == "html":
        document = parse(out.read_text(encoding="utf-8"))
        assert document.find("p", **{"class": "headline"})[0].text() == NO_ACCOUNTS
        assert [[cell.text() for cell in row] for row in table_rows(document, "accounts-table")] == [["none"]]
    elif fmt == "xlsx":
        openpyxl = pytest.importorskip("openpyxl", reason="--format xlsx needs openpyxl")
        workbook = openpyxl.load_workbook(out)
        assert workbook.sheetnames == SHEETS
        assert [row[0] for row in workbook["accounts"].iter_rows(values_only=True)] == ["account_id"]
    else:
        with (out / "accounts.csv").open(encoding="utf-8", newline="") as handle:
            assert [row[0] for row in csv.reader(handle)] == ["account_id"]
        with (out / "summary.csv").open(encoding="utf-8", newline="") as handle:
            assert ["accounts crawled", "0"] in list(csv.reader(handle))


def break_manifest(root: Path, tmp_path: Path, broken: str) -> str:
    """Change the manifest of the snapshot without accounts as ``broken`` says; the path it now lists, if any."""
    path = root / "runs" / "no-accounts.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if broken == "date":
        manifest["snapshot_date"] = "2026-13-45"
        listed = ""
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (file,) = manifest["tables"]["accounts"]["files"]
        shutil.copy(root / file["path"], elsewhere / "part-00000.parquet")  # a file a reader could open
        listed = {"etc": "../../../etc/passwd", "parent": "../elsewhere/part-00000.parquet",
                  "absolute": str(elsewhere / "part-00000.parquet")}[broken]
        file["path"] = listed
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return listed


@pytest.mark.parametrize("broken", ["date", "etc", "parent", "absolute"])
def test_the_report_command_refuses_a_broken_manifest_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  broken: str) -> None:
    root = tmp_path / "out"
    publish_without_accounts(root)
    listed = break_manifest(root, tmp_path, broken)
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == EXIT_FATAL
    err = capsys.readouterr().err
    expected = (f"path {listed!r} is not a file in accounts/snapshot_date={LATEST}" if listed
                else "has snapshot_date '2026-13-45', not a date (YYYY-MM-DD)")
    assert err.startswith("access-crawler: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "r.html").exists()


# -- in a browser --------------------------------------------------------------------------------
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (scripts/test installs Debian's chromium)")
def test_the_page_works_in_a_browser(page: tuple[ReportResult, str]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    watcher = Watcher()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            watcher.watch(tab)
            tab.goto(page[0].path.resolve().as_uri())
            assert_charts_rendered(tab)
            assert_sorting_reorders_rows(tab)
            assert tab.locator("#widest-gaps-table td", has_text=SCRIPT_NAME).count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert watcher.problems == []


class Watcher:
    """What a page did that it should not: console errors and warnings, uncaught errors, dialogs
    (an injected ``alert``), and requests for anything but the file itself."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def watch(self, tab: Any) -> None:
        """Listen to the page's events."""
        tab.on("console", self.console)
        tab.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        tab.on("dialog", self.dialog)
        tab.on("request", self.request)

    def console(self, message: Any) -> None:
        """A console message: errors and warnings are problems."""
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def dialog(self, dialog: Any) -> None:
        """An alert, confirm or prompt: a problem (dismissed)."""
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def request(self, request: Any) -> None:
        """A request: anything but a file:// URL is a problem."""
        if not request.url.startswith("file://"):
            self.problems.append(f"request: {request.url}")


def assert_charts_rendered(tab: Any) -> None:
    """Three charts, each drawn with a non-zero size and at least one bar or point of non-zero size."""
    charts = tab.locator("svg.chart")
    assert charts.count() == 3
    for index in range(3):
        chart = charts.nth(index)
        box = chart.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        marks = chart.locator("rect, circle")
        boxes = [marks.nth(mark).bounding_box() for mark in range(marks.count())]
        assert any(mark and mark["width"] > 0 and mark["height"] > 0 for mark in boxes), index


def column_values(tab: Any, table_id: str, column: int) -> list[str]:
    """The texts of one column of a table, in the order shown."""
    return tab.eval_on_selector_all(f"#{table_id} tbody tr",
                                    f"rows => rows.map(row => row.cells[{column}].getAttribute('data-sort'))")


def assert_sorting_reorders_rows(tab: Any) -> None:
    """The unused-services table comes most-held first; a click on that header sorts it ascending, and
    a second click descending again."""
    header = tab.locator("#unused-services-table th", has_text="entities holding")
    before = [float(value) for value in column_values(tab, "unused-services-table", 2)]
    header.click()
    ascending = [float(value) for value in column_values(tab, "unused-services-table", 2)]
    assert ascending == sorted(before) and ascending != before
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert [float(value) for value in column_values(tab, "unused-services-table", 2)] == sorted(before, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"



# -- the Organizations view ------------------------------------------------------------------
def test_a_snapshot_with_the_organizations_view_gets_an_scp_section_and_sheet(crawl_org, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl", reason="--format xlsx needs openpyxl")
    crawl_org(OrgSpec(accounts=3, entities=8, seed=41))
    run_crawl(crawl_config(tmp_path / "out", organizations_access=OrganizationsAccessSettings(
        enabled=True, per_policy=True)))
    expected = analysis.scp_summary(analysis.scp_review(tmp_path / "out", days=90))

    html = write_report(tmp_path / "out", tmp_path / "review.html")
    document = parse(html.path.read_text(encoding="utf-8"))
    assert [link.attrs["href"] for link in document.find("a") if link.attrs.get("href") == "#scps"] == ["#scps"]
    rows = table_rows(document, "scps-table")
    assert [row[3].text() for row in rows] == list(expected["target_path"])
    assert [int(row[7].text().replace(",", "")) for row in rows] == list(expected["services_unused"])

    workbook = openpyxl.load_workbook(write_report(tmp_path / "out", tmp_path / "review.xlsx", fmt="xlsx").path)
    assert workbook.sheetnames == [*SHEETS, "service control policies"]
    sheet = list(workbook["service control policies"].iter_rows(values_only=True))
    assert [row[1] for row in sheet[1:]] == list(expected["target_path"])


def test_a_snapshot_without_the_view_has_no_scp_section(page: tuple[ReportResult, str]) -> None:
    assert page[0].findings.scps is None
    assert 'id="scps"' not in page[1] and 'href="#scps"' not in page[1]
