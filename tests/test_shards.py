"""Shards: a stable, balanced split of the accounts; N shards publish exactly what one run would."""
from __future__ import annotations

import errno
import hashlib
import math
import random
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from crawler.config.settings import Config, OrganizationsAccessSettings, OutputSettings
from crawler.crawl.publish import consolidate
from crawler.crawl.runs import plan_run
from crawler.crawl.scheduler import run_crawl
from crawler.crawl.shards import PUBLISH_CLAIM, Shard, default_run_id, shard_of
from crawler.errors import UsageError
from crawler.sim import OrgSpec
from crawler.store.dataset import ClaimUnsupported, Dataset, latest_manifest, read_manifest, sharded_runs
from crawler.store.verify import verify_snapshot
from tests.helpers import crawl_config, crawlable, published_tables

SNAPSHOT = date(2026, 11, 30)


def random_account_ids(count: int, seed: int = 7) -> list[str]:
    generator = random.Random(seed)
    return [f"{generator.randrange(10**12):012d}" for _ in range(count)]


def test_shard_parses_k_of_n_and_rejects_the_rest() -> None:
    assert Shard.parse("2/5") == Shard(2, 5)
    assert str(Shard.parse(" 0 / 1 ")) == "0/1"
    for text in ("5/5", "-1/3", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(ValueError):
            Shard.parse(text)


def test_an_account_always_lands_in_the_same_shard() -> None:
    accounts = random_account_ids(200)
    first = [shard_of(account, 7) for account in accounts]
    assert first == [shard_of(account, 7) for account in reversed(accounts)][::-1]
    # the documented formula, not Python's hash(): the same on every machine and every release
    for account in accounts[:20]:
        assert shard_of(account, 7) == int(hashlib.sha256(account.encode()).hexdigest()[:16], 16) % 7


@pytest.mark.parametrize("count", [2, 3, 8, 16])
def test_shards_split_the_accounts_evenly_and_completely(count: int) -> None:
    accounts = random_account_ids(4000)
    shares = [Shard(index, count).select(accounts_as_objects(accounts)) for index in range(count)]
    assert sorted(account.id for share in shares for account in share) == sorted(accounts)
    sizes = Counter(len(share) for share in shares)
    expected, spread = len(accounts) / count, math.sqrt(len(accounts) * (1 / count) * (1 - 1 / count))
    assert all(abs(size - expected) < 4 * spread for size in sizes), sizes  # as even as a fair draw


def accounts_as_objects(ids: list[str]) -> list:
    return [type("Account", (), {"id": account_id})() for account_id in ids]


def config_at(root: Path | str, **output: object) -> Config:
    """A crawl of the simulator into ``root``, snapshot SNAPSHOT."""
    return replace(crawl_config(root), output=OutputSettings(path=str(root), snapshot_date=SNAPSHOT, **output))


def crawl_in_shards(config, count: int, run_id: str | None = None) -> list:  # noqa: ANN001 - a Config
    return [run_crawl(config, shard=Shard(index, count), run_id=run_id) for index in range(count)]


def test_the_union_of_the_shards_is_the_dataset_of_one_run(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=7, entities=10, seed=5))
    whole = run_crawl(config_at(tmp_path / "whole"))
    summaries = crawl_in_shards(config_at(tmp_path / "sharded"), 3)

    assert [summary.published for summary in summaries] == [False, False, True]
    assert summaries[0].waiting_for == (1, 2) and summaries[1].waiting_for == (2,)
    shares = [{account.account_id for account in summary.accounts} for summary in summaries]
    assert set().union(*shares) == crawlable(sim) | {a.account_id for a in whole.accounts}
    assert sum(len(share) for share in shares) == len(set().union(*shares))  # no account crawled twice
    assert published_tables(str(tmp_path / "sharded")) == published_tables(str(tmp_path / "whole"))
    manifest = summaries[-1].manifest
    assert manifest["run_id"] == default_run_id(SNAPSHOT, 3)
    assert manifest["accounts"] == whole.manifest["accounts"] and manifest["errors"] == whole.manifest["errors"]
    assert manifest["entities"] == whole.manifest["entities"]
    assert [record["shard"]["index"] for record in manifest["shards"]] == [0, 1, 2]
    assert {table: entry["rows"] for table, entry in manifest["tables"].items()} == whole.rows
    assert verify_snapshot(str(tmp_path / "sharded"), SNAPSHOT).ok
    assert not (tmp_path / "sharded" / "_staging" / SNAPSHOT.isoformat()).exists()  # staging removed


def test_a_published_run_id_is_not_crawled_again(crawl_org, tmp_path: Path) -> None:
    crawl_org(OrgSpec(accounts=2, entities=8, seed=2))
    config = config_at(tmp_path)
    crawl_in_shards(config, 1)
    with pytest.raises(UsageError, match="already published"):
        run_crawl(config, shard=Shard(0, 1))
    with pytest.raises(UsageError, match="already published"):
        run_crawl(config, run_id=default_run_id(SNAPSHOT, 1))
    again = crawl_in_shards(config, 1, run_id="second-crawl")[0]
    assert again.published and latest_manifest(str(tmp_path), SNAPSHOT)["run_id"] == "second-crawl"


def test_shards_must_agree_on_the_count_and_the_config(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=3, entities=8, seed=3))
    config = config_at(tmp_path)
    run_crawl(config, shard=Shard(0, 2), run_id="shared")
    calls = sum(sim.state.calls.values())
    with pytest.raises(UsageError, match="number of shards"):
        run_crawl(config, shard=Shard(1, 3), run_id="shared")
    assert sum(sim.state.calls.values()) - calls <= 1, "refused before crawling anything"
    other = config_at(tmp_path, compression="snappy")
    with pytest.raises(UsageError, match="different configuration"):
        run_crawl(other, shard=Shard(1, 2), run_id="shared")
    assert latest_manifest(str(tmp_path)) is None


def test_a_shard_run_again_resumes_its_staged_accounts(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=5, entities=8, seed=4))
    config = config_at(tmp_path)
    first = run_crawl(config, shard=Shard(0, 2), run_id="retried")
    assert first.accounts, "shard 0 of this organization has accounts"
    iam_calls_before = sum(count for (_, operation), count in sim.state.calls.items() if operation.startswith("Gen"))
    again = run_crawl(config, shard=Shard(0, 2), run_id="retried")
    iam_calls_after = sum(count for (_, operation), count in sim.state.calls.items() if operation.startswith("Gen"))
    assert iam_calls_after == iam_calls_before  # nothing crawled twice
    assert [summary.account_id for summary in again.accounts] == [summary.account_id for summary in first.accounts]
    assert not again.published and again.waiting_for == (1,)
    last = run_crawl(config, shard=Shard(1, 2), run_id="retried")
    assert last.published and read_manifest(str(tmp_path), "retried")["accounts"]["selected"] == len(
        [*first.accounts, *last.accounts])


def test_consolidate_publishes_when_every_shard_is_done_and_none_published(crawl_org, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    crawl_org(OrgSpec(accounts=4, entities=8, seed=6))
    root = str(tmp_path)
    config = config_at(tmp_path, compression="snappy")
    run_crawl(config, shard=Shard(1, 2), run_id="died")
    with pytest.raises(UsageError, match="shards 0 of 2 are not done"):
        consolidate(root, SNAPSHOT)
    # the last shard records itself done, claims the publish and dies before publishing
    monkeypatch.setattr("crawler.crawl.publish.publish_shards", lambda *_: (_ for _ in ()).throw(SystemExit(9)))
    with pytest.raises(SystemExit):
        run_crawl(config, shard=Shard(0, 2), run_id="died")
    monkeypatch.undo()
    assert latest_manifest(root) is None and sharded_runs(root, SNAPSHOT) == ["died"]
    with pytest.raises(UsageError, match="being published"):  # a retried shard must not touch it meanwhile
        run_crawl(config, shard=Shard(1, 2), run_id="died")

    manifest = consolidate(root, SNAPSHOT)
    assert manifest["run_id"] == "died" and manifest["status"] == "published"
    assert len(manifest["shards"]) == 2 and verify_snapshot(root, SNAPSHOT).ok
    assert all(part["path"].endswith(".parquet") for part in manifest["tables"]["accounts"]["files"])
    assert sharded_runs(root, SNAPSHOT) == []


def test_one_of_the_shards_finishing_together_publishes(crawl_org, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    crawl_org(OrgSpec(accounts=4, entities=8, seed=8))
    config = config_at(tmp_path)
    published: list[int] = []
    real_publish = __import__("crawler.crawl.publish", fromlist=["publish_shards"]).publish_shards
    barrier = threading.Barrier(3)

    def counted_publish(dataset, records):  # noqa: ANN001, ANN202
        published.append(1)
        return real_publish(dataset, records)

    real_records = Dataset.shard_records

    def records_after_everyone_is_done(self):  # noqa: ANN001, ANN202 - all three see every shard done
        barrier.wait(timeout=60)
        return real_records(self)

    monkeypatch.setattr("crawler.crawl.publish.publish_shards", counted_publish)
    monkeypatch.setattr(Dataset, "shard_records", records_after_everyone_is_done)
    results: list = [None] * 3
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, run_crawl(config, shard=Shard(k, 3))))
               for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(published) == 1 and sum(result.published for result in results) == 1
    assert all(result.waiting_for == () for result in results)
    assert verify_snapshot(str(tmp_path), SNAPSHOT).ok


def test_a_shard_started_after_midnight_joins_the_date_of_its_run(tmp_path: Path) -> None:
    config = crawl_config(tmp_path)  # no snapshot date: the day a run starts
    Dataset(str(tmp_path), SNAPSHOT, "array-job-7", config.output).record_shard("0-of-2", {"status": "done"})
    next_day = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    plan = plan_run(config, run_id="array-job-7", now=next_day, shard=Shard(1, 2))
    assert (plan.run_id, plan.snapshot_date) == ("array-job-7", SNAPSHOT)
    assert plan_run(config, run_id="array-job-8", now=next_day, shard=Shard(1, 2)).snapshot_date == next_day.date()
    assert plan_run(config, now=next_day, shard=Shard(1, 2)).run_id == "20261201-2-shards"


def test_an_account_no_shard_selects_is_not_published(crawl_org, tmp_path: Path) -> None:
    crawl_org(OrgSpec(accounts=3, entities=8, seed=9))
    config = config_at(tmp_path)
    run_crawl(config, shard=Shard(0, 2), run_id="leftover")
    stray = "999999999999"  # staged by an earlier attempt, say, of a shard whose selection changed since
    Dataset(str(tmp_path), SNAPSHOT, "leftover", config.output).stage(
        stray, {"accounts": []}, {"account_id": stray, "outcome": "ok"})
    last = run_crawl(config, shard=Shard(1, 2), run_id="leftover")
    assert last.published and stray not in {row["account_id"] for row in published_tables(str(tmp_path))["accounts"]}
    assert last.manifest["accounts"]["selected"] == len(published_tables(str(tmp_path))["accounts"])


def test_the_organizations_view_is_collected_once_by_shard_0(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(OrgSpec(accounts=3, entities=8, seed=12))
    view = OrganizationsAccessSettings(enabled=True)

    def reports() -> int:
        return sum(count for (_, operation), count in sim.state.calls.items()
                   if operation == "GenerateOrganizationsAccessReport")

    whole = run_crawl(replace(config_at(tmp_path / "whole"), organizations_access=view))
    reports_of_one_run = reports()
    shards = crawl_in_shards(replace(config_at(tmp_path / "sharded"), organizations_access=view), 2)
    assert reports() == 2 * reports_of_one_run > 0  # shard 1 made none
    assert whole.rows["organizations_access"] > 0
    assert shards[-1].rows == whole.rows
    assert published_tables(str(tmp_path / "sharded")) == published_tables(str(tmp_path / "whole"))


def test_where_a_claim_is_impossible_the_shards_leave_the_publish_to_consolidate(
        crawl_org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClaimUnsupported):  # a filesystem other than a local disk or S3
        Dataset("mock:///data", SNAPSHOT, "any", OutputSettings()).claim(PUBLISH_CLAIM, {})
    crawl_org(OrgSpec(accounts=2, entities=8, seed=13))

    def unsupported(*_: object) -> bool:
        raise OSError(errno.ENOTSUP, "no exclusive create here")

    monkeypatch.setattr("crawler.store.dataset.create_exclusively", unsupported)
    shards = crawl_in_shards(config_at(tmp_path), 2)
    assert [shard.published for shard in shards] == [False, False] and shards[-1].waiting_for == ()
    assert latest_manifest(str(tmp_path)) is None
    manifest = consolidate(str(tmp_path), SNAPSHOT)
    assert manifest["status"] == "published" and verify_snapshot(str(tmp_path), SNAPSHOT).ok
