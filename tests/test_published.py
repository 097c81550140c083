"""Which snapshot is published: every reader takes the same default snapshot (issue 14)."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from crawler import analysis
from crawler.cli import EXIT_OK, main
from crawler.crawl.scheduler import run_crawl
from crawler.report import write_report
from crawler.sim import OrgSpec
from crawler.store.dataset import latest_manifest, read_manifest
from crawler.store.published import choose_published, published_dates
from crawler.store.verify import verify_snapshot
from tests.helpers import crawl_config

OLDER, NEWER = date(2026, 9, 30), date(2026, 12, 31)


def manifest(run_id: str, day: str, published_at: str, status: str = "published") -> dict[str, str]:
    return {"run_id": run_id, "snapshot_date": day, "published_at": published_at, "status": status}


def test_the_default_is_the_latest_date_and_within_a_date_the_last_publish() -> None:
    documents = [manifest("q3", "2026-09-30", "2026-10-01T00:00:00+00:00"),
                 manifest("q4", "2026-12-31", "2027-01-01T00:00:00+00:00"),
                 manifest("q3-again", "2026-09-30", "2027-01-05T00:00:00+00:00"),
                 manifest("q4-failed", "2026-12-31", "2027-01-06T00:00:00+00:00", "interrupted"),
                 manifest("undated", "2027-02-30", "2027-03-01T00:00:00+00:00")]

    assert published_dates(documents) == [OLDER, NEWER]
    assert choose_published(documents)["run_id"] == "q4"  # type: ignore[index]
    assert choose_published(documents, OLDER)["run_id"] == "q3-again"  # type: ignore[index]
    assert choose_published(documents, date(2027, 2, 28)) is None
    assert choose_published([]) is None


def test_every_reader_takes_the_same_snapshot_after_an_older_date_is_published_again(
        crawl_org, tmp_path: Path, capsys) -> None:
    crawl_org(OrgSpec(accounts=2, entities=8, seed=4))
    root = str(tmp_path / "out")
    run_crawl(crawl_config(root, OLDER))
    newer = run_crawl(crawl_config(root, NEWER))
    again = run_crawl(crawl_config(root, OLDER))  # published last, but of the older date

    assert read_manifest(root, again.run_id)["status"] == "published"
    assert verify_snapshot(root).run_id == newer.run_id
    assert latest_manifest(root)["run_id"] == newer.run_id  # type: ignore[index]
    assert set(analysis.load(root, "accounts")["run_id"]) == {newer.run_id}
    assert analysis.open_snapshot(root).run_id == newer.run_id
    assert write_report(root, tmp_path / "review.html").findings.snapshot_date == NEWER
    assert main(["verify", root]) == EXIT_OK
    assert f"snapshot {NEWER.isoformat()} (run {newer.run_id})" in capsys.readouterr().out
