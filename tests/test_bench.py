"""``scripts/bench`` (``crawler.bench``) and the ``sim serve --stats`` counts it relies on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crawler.bench import cli, targets
from crawler.bench import measure as bench

CRAWLER = [sys.executable, "-m", "crawler"]


def test_minimum_calls_count_inventory_pages_and_job_pages() -> None:
    assert bench.minimum_calls(10, [3, 1000, 1001]) == 1 + 2 + 2 + 3
    assert bench.minimum_calls(2500, []) == 3


def test_makespan_is_a_greedy_schedule_on_the_slots() -> None:
    assert bench.makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert bench.makespan([2.0, 2.0, 2.0], 1) == 6.0
    assert bench.makespan([2.0, 2.0, 2.0], 3) == 2.0


def test_adaptive_config_leaves_the_rate_to_the_crawler(tmp_path: Path) -> None:
    fixed = bench.crawler_config(bench.BenchSettings(rate=7), tmp_path)
    adaptive = bench.crawler_config(bench.BenchSettings(rate=7, adaptive=True), tmp_path)
    assert "requests_per_second_per_account: 7.0" in fixed
    assert "requests_per_second_per_account: null" in adaptive


def test_wall_over_lower_bound_is_judged_by_whether_r_was_given() -> None:
    given = {"wall_over_lower_bound": 1.2, "adaptive": False, "iam_calls": 100, "throttled_calls": 2}
    verdicts = {v.target: v for v in targets.configuration_verdicts(given)}
    assert verdicts["wall_over_lower_bound"].met is False and verdicts["throttled_share"].met is True
    found = {v.target: v for v in targets.configuration_verdicts({**given, "adaptive": True, "throttled_calls": 3})}
    assert found["wall_over_lower_bound"].met is True and found["throttled_share"].met is False
    assert "cpu_over_floor" not in found and "baseline_over_wall" not in found


def test_cpu_and_baseline_targets_appear_when_measured() -> None:
    figures = {"wall_over_lower_bound": 1.0, "iam_calls": 10, "throttled_calls": 0, "cpu_over_floor": 1.31,
               "baseline_over_wall": 25.0, "accounts_crawled": 20, "baseline_accounts_run": "1 of 20"}
    verdicts = {v.target: v for v in targets.configuration_verdicts(figures)}
    assert verdicts["cpu_over_floor"].met is False and verdicts["baseline_over_wall"].met is True
    assert verdicts["baseline_over_wall"].line() == ("target baseline_over_wall >= 20: 25 met "
                                                     "(on 20 accounts; baseline 1 of 20, scaled)")


def test_memory_targets_compare_configurations_and_need_a_million_rows() -> None:
    results = {"memory-5": {"crawler_peak_rss_mib": 200.0, "accounts": 5},
               "memory-50": {"crawler_peak_rss_mib": 250.0, "accounts": 50},
               "million": {"crawler_peak_rss_mib": 300.0, "rows": 999_999}}
    verdicts = {v.target: v for v in targets.suite_verdicts(results)}
    assert verdicts["memory_10x_accounts"].measured == 1.25 and verdicts["memory_10x_accounts"].met is False
    assert verdicts["million_rows_peak_mb"].met is None  # too few rows: not a measure of the target
    results["million"]["rows"] = 1_000_000
    assert targets.suite_verdicts(results)[1].met is True  # 300 MiB = 314.6 MB
    assert targets.missed(targets.suite_verdicts(results)) == targets.suite_verdicts(results)[:1]


def test_the_suite_sizes_the_organizations_its_targets_need() -> None:
    entries = {entry.name: entry.settings for entry in targets.suite(bench.BenchSettings())}
    assert entries["memory-50"].accounts == 10 * entries["memory-5"].accounts
    assert entries["memory-5"].concurrency == entries["memory-50"].concurrency
    assert entries["speed"].accounts == 20 and entries["speed"].baseline and entries["speed"].floor
    assert entries["adaptive"].adaptive and not entries["speed"].adaptive
    assert entries["adaptive"].slots < entries["adaptive"].accounts  # later accounts start from the RateBook
    million = entries["million"]
    assert million.granularity == "ACTION_LEVEL" and million.accounts * million.entities * 150 > 1_000_000


@pytest.mark.cli
def test_sim_serve_writes_its_counts_when_stopped(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    command = [*CRAWLER, "sim", "serve", "--port", "0", "--accounts", "1", "--entities", "8", "--aws-config",
               str(tmp_path / "aws"), "--stats", str(stats), "--rate", "1", "--burst", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        settings = bench.Simulator(process, tmp_path / "aws", stats)
        bench._wait_for_banner(process, tmp_path / "missing")
        account = _call_iam_twice(settings)
        counts = settings.stop()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert counts["calls"][f"{account}/GetAccountAuthorizationDetails"] >= 2
    assert sum(count for key, count in counts["calls"].items() if key.endswith("/AssumeRole")) == 1
    assert counts["throttled"][account] >= 1


def _call_iam_twice(sim: bench.Simulator) -> str:
    """Assume the crawler role in the first member account and call IAM twice at once (1 a second: throttled)."""
    script = (
        "import boto3, botocore.config, sys\n"
        "s = boto3.Session(profile_name='sim')\n"
        "org = s.client('organizations')\n"
        "me = s.client('sts').get_caller_identity()['Account']\n"
        "account = next(a['Id'] for a in org.list_accounts()['Accounts'] if a['Id'] != me)\n"
        "keys = s.client('sts').assume_role(RoleArn=f'arn:aws:iam::{account}:role/AccessCrawlerRole',"
        " RoleSessionName='test')['Credentials']\n"
        "iam = boto3.Session(aws_access_key_id=keys['AccessKeyId'], aws_secret_access_key=keys['SecretAccessKey'],"
        " aws_session_token=keys['SessionToken'], profile_name='sim').client('iam',"
        " config=botocore.config.Config(retries={'max_attempts': 1, 'mode': 'standard'}))\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        iam.get_account_authorization_details(MaxItems=1)\n"
        "    except iam.exceptions.ClientError as error:\n"
        "        assert error.response['Error']['Code'] == 'Throttling', error\n"
        "print(account)\n")
    done = subprocess.run([sys.executable, "-c", script], env=sim.environment(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
@pytest.mark.cli
def test_bench_prints_every_figure_and_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "bench.json"
    code = cli.main(["--accounts", "2", "--entities", "8", "--rate", "200", "--latency-ms", "0",
                       "--job-seconds", "0.1", "--baseline", "--json", str(report), "--keep", str(tmp_path / "work")])
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert code == 0
    assert set(bench.FIGURES) | set(bench.FLOOR_FIGURES) <= set(printed), set(bench.FIGURES) - set(printed)
    assert "target cpu_over_floor <= 1.3" in printed and "target wall_over_lower_bound <= 1.15" in printed
    assert "baseline_scaled_seconds" in printed and "baseline_accounts_run" in printed
    figures = json.loads(report.read_text(encoding="utf-8"))[0]
    assert figures["wall_seconds"] >= figures["lower_bound_seconds"] > 0
    assert "GenerateServiceLastAccessedDetails" in figures["calls_by_operation"]
    assert figures["iam_calls"] >= figures["min_iam_calls"]
    manifest = json.loads(next((tmp_path / "work" / "config-1" / "output" / "runs").glob("*.json")).read_text())
    assert figures["rows"] == sum(table["rows"] for table in manifest["tables"].values()) > 0
    assert figures["baseline_rows"] > 0
    assert figures["floor_service_rows"] == figures["rows_by_table"]["service_last_accessed"]
    assert figures["floor_cpu_seconds"] > 0 and figures["cpu_over_floor"] > 0
    assert figures["bytes_per_row"] > 0 and figures["crawler_cpu_seconds"] > 0
    assert figures["crawler_peak_rss_mib"] > 10
