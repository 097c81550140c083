"""Interrupted crawls (SIGTERM, SIGKILL at random points) resume into the snapshot an uninterrupted run publishes.

The simulator runs as its own process (``access-crawler sim serve``) and the crawler as another
(``python -m crawler run``), reached through an AWS profile, so a kill is a real kill.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.store import schema
from crawler.store.dataset import read_manifest
from tests.helpers import read_rows, same_in_every_crawl

pytestmark = [pytest.mark.cli, pytest.mark.slow]

CRAWLER = [sys.executable, "-m", "crawler"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
CONFIG = """
aws: {profile: sim, region: us-east-1}
advisor: {poll_interval_seconds: 0.1, max_poll_interval_seconds: 0.5}
concurrency: {accounts: 2, max_attempts: 4}
"""


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``sim serve`` in its own process; the environment that points the crawler at it."""
    aws_dir = tmp_path / "aws"
    command = [*CRAWLER, "sim", "serve", "--port", "0", "--accounts", "5", "--entities", "10", "--seed", "9",
               "--job-seconds", "0.3", "--aws-config", str(aws_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if LISTENING.search(line):
                break
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        env.update(AWS_CONFIG_FILE=str(aws_dir / "config"), AWS_SHARED_CREDENTIALS_FILE=str(aws_dir / "credentials"),
                   AWS_EC2_METADATA_DISABLED="true")
        yield env
    finally:
        process.kill()
        process.wait(timeout=10)


def start_crawl(env: dict[str, str], config: Path, output: Path, *options: str) -> subprocess.Popen[str]:
    """``access-crawler run`` in its own process."""
    return subprocess.Popen([*CRAWLER, "run", "-c", str(config), "--output", str(output), *options], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_crawl(env: dict[str, str], config: Path, output: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``access-crawler run`` to the end."""
    return subprocess.run([*CRAWLER, "run", "-c", str(config), "--output", str(output), *options], env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> list[list[dict]]:
    """Every table's rows (all the files there are), without what varies from crawl to crawl, sorted."""
    return [sorted((same_in_every_crawl(row) for row in read_rows(root, table)), key=repr) for table in schema.TABLES]


def start_crawl_until_an_account_is_staged(env: dict[str, str], config: Path,
                                           output: Path) -> subprocess.Popen[str]:
    """A crawl in its own process, once it has staged its first account (or after two minutes)."""
    crawl = start_crawl(env, config, output)
    deadline = time.monotonic() + 120
    while staged_accounts(output) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return crawl


def staged_accounts(output: Path) -> int:
    """Accounts staged completely so far (DONE markers)."""
    return len(list((output / "_staging").glob("*/*/*/DONE")))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The crawl's config file."""
    path = tmp_path / "crawler.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def reference(simulator: dict[str, str], config: Path, tmp_path: Path) -> list[list[dict]]:
    """The snapshot of an uninterrupted crawl."""
    done = finish_crawl(simulator, config, tmp_path / "reference")
    assert done.returncode == 0, done.stderr
    return snapshot(tmp_path / "reference")


def test_sigterm_stops_cleanly_and_the_next_run_resumes(simulator: dict[str, str], config: Path, tmp_path: Path,
                                                        reference: list[list[dict]]) -> None:
    output = tmp_path / "out"
    crawl = start_crawl_until_an_account_is_staged(simulator, config, output)
    crawl.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    _, stderr = crawl.communicate(timeout=60)
    assert crawl.returncode == 130, stderr
    assert time.monotonic() - stopped_at < 10
    manifests = list((output / "runs").glob("*.json"))
    assert len(manifests) == 1 and read_manifest(str(output), manifests[0].stem)["status"] == "interrupted"
    assert not (output / "service_last_accessed").exists(), "nothing partial is published"
    resumed = finish_crawl(simulator, config, output)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming unfinished run" in resumed.stderr and "resumed an unfinished run" in resumed.stdout
    assert read_manifest(str(output), manifests[0].stem)["status"] == "published"
    assert snapshot(output) == reference


def test_killed_at_random_points_then_resumed_equals_uninterrupted(simulator: dict[str, str], config: Path,
                                                                   tmp_path: Path,
                                                                   reference: list[list[dict]]) -> None:
    output, chance = tmp_path / "out", random.Random(20261130)
    kills = 0
    for _ in range(8):
        crawl = start_crawl(simulator, config, output, "--resume")
        time.sleep(chance.uniform(0.2, 3.0))
        if crawl.poll() is not None:
            break  # it finished before the kill
        crawl.kill()
        crawl.communicate(timeout=30)
        kills += 1
    done = finish_crawl(simulator, config, output, "--resume")
    assert done.returncode == 0, done.stderr
    assert kills >= 3, "the crawl should have been killed several times"
    tables, expected = dict(zip(schema.TABLES, snapshot(output), strict=True)), dict(zip(schema.TABLES, reference,
                                                                                          strict=True))
    assert {**tables, "crawl_runs": []} == {**expected, "crawl_runs": []}
    # the last crawl may have published the date again: crawl_runs then lists the earlier publish too
    assert [row for row in tables["crawl_runs"] if row["status"] == "published"] == expected["crawl_runs"]
    published = [path for path in (output / "runs").glob("*.json")
                 if read_manifest(str(output), path.stem)["status"] == "published"]
    assert len(published) >= 1
    assert not list((output / "_staging").glob("*/*/*/DONE")), "staging is cleared once published"
    verified = subprocess.run([*CRAWLER, "verify", str(output)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and verified.stdout.rstrip().endswith("OK"), verified.stdout


def test_a_second_signal_quits_at_once_and_the_run_still_resumes(simulator: dict[str, str], config: Path,
                                                                  tmp_path: Path,
                                                                  reference: list[list[dict]]) -> None:
    output = tmp_path / "out"
    crawl = start_crawl_until_an_account_is_staged(simulator, config, output)
    crawl.send_signal(signal.SIGINT)
    time.sleep(0.05)
    crawl.send_signal(signal.SIGINT)
    _, stderr = crawl.communicate(timeout=5)
    # 130, or killed by the signal itself when it lands while the interpreter is already exiting
    # (a shell shows 130 for both).
    assert crawl.returncode in (130, -signal.SIGINT), stderr
    done = finish_crawl(simulator, config, output)
    assert done.returncode == 0, done.stderr
    assert snapshot(output) == reference


def test_shards_in_separate_processes_publish_the_uninterrupted_snapshot(simulator: dict[str, str], config: Path,
                                                                         tmp_path: Path,
                                                                         reference: list[list[dict]]) -> None:
    output, shared = tmp_path / "out", ("--run-id", "array-job-1")
    shards = [start_crawl(simulator, config, output, "--shard", f"{index}/3", *shared) for index in range(3)]
    shards[1].kill()  # one machine is lost early; its shard is run again
    shards[1].communicate(timeout=30)
    results = [shards[index].communicate(timeout=300) for index in (0, 2)]
    assert [shards[index].returncode for index in (0, 2)] == [0, 0], results
    assert all("waiting for shards" in stdout and "1" in stdout for stdout, _ in results)
    assert not (output / "runs").exists() or not list((output / "runs").glob("*.json")), "nothing published yet"
    rerun = finish_crawl(simulator, config, output, "--shard", "1/3", *shared)
    assert rerun.returncode == 0, rerun.stderr
    assert "manifest: runs/array-job-1.json" in rerun.stdout
    assert snapshot(output) == reference
    assert read_manifest(str(output), "array-job-1")["status"] == "published"
    verified = subprocess.run([*CRAWLER, "verify", str(output)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout


def start_crawl_until_staged(env: dict[str, str], config: Path, output: Path, accounts: int,
                             *options: str) -> subprocess.Popen[str]:
    """A crawl in its own process, once it has staged ``accounts`` accounts (or finished)."""
    crawl = start_crawl(env, config, output, *options)
    deadline = time.monotonic() + 120
    while staged_accounts(output) < accounts and crawl.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return crawl


@pytest.mark.parametrize("staged_first", [1, 2, 4])
def test_a_second_run_on_the_same_root_refuses_while_the_first_works(simulator: dict[str, str], config: Path,
                                                                     tmp_path: Path, reference: list[list[dict]],
                                                                     staged_first: int) -> None:
    """Issue 13: the second run used to resume the first's live run in one staging directory, and the snapshot
    published last lost accounts. Now it exits 2 naming the holder, and the first publishes everything."""
    output = tmp_path / "out"
    first = start_crawl_until_staged(simulator, config, output, staged_first)
    assert first.poll() is None, "the first run should still be working"

    second = finish_crawl(simulator, config, output)

    assert second.returncode == 2, second.stderr
    assert "is being written by run" in second.stderr and f"pid {first.pid} on" in second.stderr
    assert "Traceback" not in second.stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert snapshot(output) == reference
    [manifest] = (output / "runs").glob("*.json")
    assert read_manifest(str(output), manifest.stem)["status"] == "published"
    verified = subprocess.run([*CRAWLER, "verify", str(output)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout


def test_a_second_run_that_waits_publishes_after_the_first(simulator: dict[str, str], config: Path, tmp_path: Path,
                                                           reference: list[list[dict]]) -> None:
    output = tmp_path / "out"
    first = start_crawl_until_staged(simulator, config, output, 1)
    second = start_crawl(simulator, config, output, "--wait", "300")

    first_out, first_err = first.communicate(timeout=300)
    second_out, second_err = second.communicate(timeout=300)

    assert (first.returncode, second.returncode) == (0, 0), (first_err, second_err)
    assert "waiting for it to finish" in second_err
    first_run = re.search(r"^run (\S+):", first_out, re.M)[1]  # type: ignore[index]
    second_run = re.search(r"^run (\S+):", second_out, re.M)[1]  # type: ignore[index]
    assert first_run != second_run, "the second run crawled anew: it never resumes a run another process held"
    assert read_manifest(str(output), first_run)["status"] == "superseded"
    assert read_manifest(str(output), second_run)["status"] == "published"
    tables = dict(zip(schema.TABLES, snapshot(output), strict=True))
    expected = dict(zip(schema.TABLES, reference, strict=True))
    assert {**tables, "crawl_runs": []} == {**expected, "crawl_runs": []}
    assert sorted(row["status"] for row in tables["crawl_runs"]) == ["published", "superseded"]
