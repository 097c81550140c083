"""Measure the crawler on one simulated organization served by another process.

:func:`measure` starts ``access-crawler sim serve`` with an IAM rate limit R per account, a
latency L per call and a job duration J, crawls it with ``python -m crawler run`` in a third
process, and returns every figure by name: wall time, the lower bound T* and wall / T*, calls
by operation, throttled calls, rows, rows per second, the crawler's CPU seconds and peak
memory, bytes per row of the dataset; the CPU floor (a bare boto3 loop making the same calls,
:mod:`crawler.bench.plain`) and, when asked, AWS's walk-through baseline, each on a fresh
simulator of the same organization.

Importing this module starts nothing.
"""
from __future__ import annotations

import heapq
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crawler.bench.plain import BASELINE_POLL_SECONDS, PAGE_SIZE, baseline

CRAWLER = [sys.executable, "-m", "crawler"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
FIGURES = ("accounts", "accounts_crawled", "entities_per_account", "rate", "latency_ms", "job_seconds",
           "concurrency_accounts", "adaptive", "granularity", "wall_seconds", "lower_bound_seconds",
           "wall_over_lower_bound", "min_iam_calls", "calls_by_operation", "iam_calls", "throttled_calls",
           "rows", "rows_by_table", "rows_per_second", "crawler_cpu_seconds", "crawler_peak_rss_mib",
           "dataset_bytes", "bytes_per_row", "crawler_exit_code")
#: Figures of the CPU floor (with ``BenchSettings.floor``).
FLOOR_FIGURES = ("cpu_runs", "crawler_cpu_seconds_least", "floor_cpu_seconds", "floor_fetch_cpu_seconds",
                 "floor_service_rows", "crawler_cpu_ms_per_1000_service_rows",
                 "floor_cpu_ms_per_1000_service_rows", "cpu_over_floor", "cpu_over_floor_fetch")


@dataclass(frozen=True)
class BenchSettings:
    """One configuration to measure."""

    accounts: int = 10
    entities: int = 30
    rate: float = 10.0
    latency_ms: float = 5.0
    job_seconds: float = 1.0
    seed: int = 1
    #: Accounts crawled at once; None: all of them.
    concurrency: int | None = None
    #: Leave requests_per_second_per_account unset: the crawler must find R by itself.
    adaptive: bool = False
    baseline: bool = False
    #: Accounts the baseline walks (it is slow); its time is scaled to the whole organization.
    baseline_accounts: int = 1
    #: Also measure the CPU floor: a bare boto3 loop making the same calls.
    floor: bool = True
    #: Crawler and floor runs the CPU comparison takes the least CPU of (CPU time on a small
    #: shared machine varies by about 10% from run to run).
    cpu_runs: int = 1
    granularity: str = "SERVICE_LEVEL"

    @property
    def slots(self) -> int:
        """Accounts the crawler runs at once."""
        return self.concurrency or self.accounts


# -- the lower bound ---------------------------------------------------------------------
@dataclass(frozen=True)
class AccountNeed:
    """What one account needs at least: its entities and IAM calls."""

    account_id: str
    entities: int
    calls: int


def minimum_calls(entities: int, services: Sequence[int]) -> int:
    """IAM calls an account needs at least: inventory pages, then one Generate and the Get pages per entity."""
    inventory_pages = max(1, math.ceil(entities / PAGE_SIZE))
    return inventory_pages + sum(1 + max(1, math.ceil(count / PAGE_SIZE)) for count in services)


def account_needs(settings: BenchSettings) -> list[AccountNeed]:
    """The accounts the crawler will crawl (active, with its role) and their minimum IAM calls.

    The organization is generated again from the seed: generation is deterministic, so this is
    the organization the simulator process serves.
    """
    from crawler.sim import OrgSpec, generate
    from crawler.sim.truth import entity_reports

    org = generate(OrgSpec(accounts=settings.accounts, entities=settings.entities, seed=settings.seed))
    services: dict[str, list[int]] = {}
    for entity, reports in entity_reports(org):
        services.setdefault(entity.account_id, []).append(len(reports))
    return [AccountNeed(account_id, len(model.entities), minimum_calls(len(model.entities), services[account_id]))
            for account_id, model in sorted(org.accounts.items())
            if model.account.state == "ACTIVE" and model.has_crawler_role]


def makespan(durations: Sequence[float], slots: int) -> float:
    """Finish time of a greedy schedule: each duration, in order, goes to the first free slot."""
    finish = [0.0] * max(1, slots)
    for duration in durations:
        heapq.heappush(finish, heapq.heappop(finish) + duration)
    return max(finish)


def lower_bound(needs: Sequence[AccountNeed], settings: BenchSettings) -> float:
    """T*: per account, its minimum IAM calls at R a second plus J for its last job, scheduled on the slots."""
    return makespan([need.calls / settings.rate + settings.job_seconds for need in needs], settings.slots)


# -- processes ---------------------------------------------------------------------------
@dataclass
class Simulator:
    """A running ``sim serve`` process."""

    process: subprocess.Popen[str]
    aws_dir: Path
    stats_path: Path

    def environment(self) -> dict[str, str]:
        """The environment that points boto3 (and the crawler) at this simulator through profile ``sim``."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        env.update(AWS_CONFIG_FILE=str(self.aws_dir / "config"),
                   AWS_SHARED_CREDENTIALS_FILE=str(self.aws_dir / "credentials"), AWS_EC2_METADATA_DISABLED="true")
        return env

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop it (SIGTERM) and return the counts it wrote."""
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)
        return json.loads(self.stats_path.read_text(encoding="utf-8"))


@contextmanager
def simulator(settings: BenchSettings, directory: Path) -> Iterator[Simulator]:
    """``access-crawler sim serve`` in its own process, until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [*CRAWLER, "sim", "serve", "--port", "0", "--accounts", str(settings.accounts), "--entities",
               str(settings.entities), "--seed", str(settings.seed), "--rate", str(settings.rate), "--latency-ms",
               str(settings.latency_ms), "--job-seconds", str(settings.job_seconds), "--aws-config",
               str(directory / "aws"), "--stats", str(directory / "stats.json")]
    stderr = (directory / "sim.stderr").open("w", encoding="utf-8")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        _wait_for_banner(process, directory / "sim.stderr")
        yield Simulator(process, directory / "aws", directory / "stats.json")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        stderr.close()


def _wait_for_banner(process: subprocess.Popen[str], stderr: Path) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("press Ctrl-C"):
            return
    raise RuntimeError(f"the simulator did not start: {stderr.read_text(encoding='utf-8')[-2000:]}")


@dataclass
class ProcessMeasure:
    """What a measured process cost."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_kib: int


def crawler_config(settings: BenchSettings, output: Path) -> str:
    """The crawl's configuration: R given to the crawler unless adaptive; quiet logs, no log file."""
    rate = "null" if settings.adaptive else repr(float(settings.rate))
    return (f"aws: {{profile: sim, region: us-east-1}}\n"
            f"advisor: {{granularity: {settings.granularity}}}\n"
            f"concurrency: {{accounts: {settings.slots}, requests_per_second_per_account: {rate}}}\n"
            f"output: {{path: {json.dumps(str(output))}}}\n"
            f"logging: {{level: WARNING, file_enabled: false}}\n")


def run_measured(command: Sequence[str], env: dict[str, str], log: Path) -> ProcessMeasure:
    """Run ``command`` with its output in ``log``; its wall time and, from ``os.wait4``, its own rusage."""
    with log.open("w", encoding="utf-8") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ProcessMeasure(process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def run_crawler(config: Path, output: Path, env: dict[str, str], log: Path) -> ProcessMeasure:
    """``python -m crawler run`` in its own process, measured."""
    return run_measured([*CRAWLER, "run", "-c", str(config), "--output", str(output)], env, log)


# -- the dataset -------------------------------------------------------------------------
def dataset_figures(output: Path) -> dict[str, Any]:
    """Rows per table from the run's manifest, and the bytes of the published Parquet files."""
    manifests = sorted((output / "runs").glob("*.json"))
    if not manifests:
        return {"rows_by_table": {}, "rows": 0, "dataset_bytes": 0}
    manifest = json.loads(manifests[-1].read_text(encoding="utf-8"))
    rows = {name: int(table["rows"]) for name, table in manifest.get("tables", {}).items()}
    size = sum(path.stat().st_size for path in output.rglob("*.parquet")
               if not any(part.startswith("_") for part in path.relative_to(output).parts))
    return {"rows_by_table": rows, "rows": sum(rows.values()), "dataset_bytes": size}


# -- the baseline and the CPU floor: plain boto3 -----------------------------------------
def baseline_figures(settings: BenchSettings, needs: Sequence[AccountNeed], directory: Path) -> dict[str, Any]:
    """The baseline on the first accounts, on a fresh simulator of the same organization, scaled to all."""
    chosen = needs[:max(1, settings.baseline_accounts)]
    with simulator(settings, directory) as sim:
        result = baseline(sim.aws_dir, [need.account_id for need in chosen])
        stats = sim.stop()
    total = sum(need.entities for need in needs)
    scaled = result["seconds"] * total / max(1, result["entities"])
    return {"baseline_procedure": "AWS walk-through: per account, per entity in turn: generate, poll every "
                                  f"{BASELINE_POLL_SECONDS:g} s until done, read",
            "baseline_accounts_run": f"{len(chosen)} of {len(needs)} ({result['entities']} of {total} entities)",
            "baseline_measured_seconds": round(result["seconds"], 2), "baseline_rows": result["rows"],
            "baseline_scaled_seconds": round(scaled, 2),
            "baseline_scaled_note": "measured time x all entities / entities walked (sequential procedure)",
            "baseline_throttled_calls": sum(stats["throttled"].values())}


def floor_figures(settings: BenchSettings, needs: Sequence[AccountNeed], directory: Path) -> dict[str, Any]:
    """The bare boto3 loop (:func:`crawler.bench.plain.bare_fetch`) in its own process, on a fresh
    simulator of the same organization: its CPU seconds (the whole process, as the crawler's;
    and the fetching alone) and the rows it fetched."""
    command = [sys.executable, "-m", "crawler.bench.plain", "--aws-dir", str(directory / "aws"), "--rate",
               str(settings.rate), "--job-seconds", str(settings.job_seconds), "--granularity", settings.granularity,
               *[need.account_id for need in needs]]
    with simulator(settings, directory) as sim:
        run = run_measured(command, sim.environment(), directory / "floor.log")
        sim.stop()
    text = (directory / "floor.log").read_text(encoding="utf-8")
    if run.exit_code != 0:
        raise RuntimeError(f"the CPU floor loop exited {run.exit_code}: {text[-3000:]}")
    counts = json.loads(text.strip().splitlines()[-1])
    return {"floor_cpu_seconds": round(run.cpu_seconds, 2),
            "floor_fetch_cpu_seconds": round(counts["fetch_cpu_seconds"], 2),
            "floor_service_rows": counts["service_rows"]}


def cpu_figures(crawler_cpu: float, service_rows: int, floor: dict[str, Any]) -> dict[str, Any]:
    """CPU milliseconds per 1,000 service rows, the crawler's and the floor's, and their ratio."""
    crawler_ms = 1e6 * crawler_cpu / max(1, service_rows)
    floor_ms = 1e6 * floor["floor_cpu_seconds"] / max(1, floor["floor_service_rows"])
    fetch_ms = 1e6 * floor["floor_fetch_cpu_seconds"] / max(1, floor["floor_service_rows"])
    return {"crawler_cpu_ms_per_1000_service_rows": round(crawler_ms, 1),
            "floor_cpu_ms_per_1000_service_rows": round(floor_ms, 1),
            "cpu_over_floor": round(crawler_ms / floor_ms, 2) if floor_ms else None,
            # The strictest reading: the crawler's whole process against the floor's fetching alone.
            "cpu_over_floor_fetch": round(crawler_ms / fetch_ms, 2) if fetch_ms else None}


# -- one configuration -------------------------------------------------------------------
def measure(settings: BenchSettings, work: Path) -> dict[str, Any]:
    """Run the crawler (and the baseline when asked) on one configuration; every figure by name."""
    needs = account_needs(settings)
    crawl, stats = _crawl_once(settings, work)
    if crawl.exit_code != 0:
        print(f"crawler exited {crawl.exit_code}; its output:\n"
              + (work / "crawler.log").read_text(encoding="utf-8")[-3000:], file=sys.stderr)
    figures = _figures(settings, needs, crawl, stats, dataset_figures(work / "output"))
    if settings.floor:
        floors = [floor_figures(settings, needs, work / f"floor-{run}") for run in range(max(1, settings.cpu_runs))]
        floor = min(floors, key=lambda figures: figures["floor_cpu_seconds"])
        cpu = min([crawl.cpu_seconds, *(_crawl_once(settings, work / f"cpu-{run}")[0].cpu_seconds
                                        for run in range(1, settings.cpu_runs))])
        figures.update(floor, cpu_runs=max(1, settings.cpu_runs), crawler_cpu_seconds_least=round(cpu, 2))
        figures.update(cpu_figures(cpu, figures["rows_by_table"].get("service_last_accessed", 0), floor))
    if settings.baseline:
        figures.update(baseline_figures(settings, needs, work / "baseline"))
        figures["baseline_over_wall"] = round(figures["baseline_scaled_seconds"] / crawl.wall_seconds, 2)
    return figures


def _crawl_once(settings: BenchSettings, work: Path) -> tuple[ProcessMeasure, dict[str, dict[str, int]]]:
    """One crawl of a fresh simulator of the organization into ``work``: what it cost, and the
    simulator's counts of calls and throttles."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "crawler.yaml"
    config.write_text(crawler_config(settings, work / "output"), encoding="utf-8")
    with simulator(settings, work / "sim") as sim:
        crawl = run_crawler(config, work / "output", sim.environment(), work / "crawler.log")
        return crawl, sim.stop()


def _figures(settings: BenchSettings, needs: Sequence[AccountNeed], crawl: ProcessMeasure,
             stats: dict[str, dict[str, int]], data: dict[str, Any]) -> dict[str, Any]:
    operations: Counter[str] = Counter()
    for key, count in stats["calls"].items():
        operations[key.partition("/")[2]] += count
    bound = lower_bound(needs, settings)
    iam = sum(count for name, count in operations.items() if name not in IAM_FREE_OPERATIONS)
    return {
        "accounts": settings.accounts, "accounts_crawled": len(needs), "entities_per_account": settings.entities,
        "rate": settings.rate,
        "latency_ms": settings.latency_ms, "job_seconds": settings.job_seconds,
        "concurrency_accounts": settings.slots, "adaptive": settings.adaptive, "granularity": settings.granularity,
        "wall_seconds": round(crawl.wall_seconds, 2), "lower_bound_seconds": round(bound, 2),
        "wall_over_lower_bound": round(crawl.wall_seconds / bound, 2) if bound else None,
        "min_iam_calls": sum(need.calls for need in needs), "calls_by_operation": dict(sorted(operations.items())),
        "iam_calls": iam, "throttled_calls": sum(stats["throttled"].values()), **data,
        "rows_per_second": round(data["rows"] / crawl.wall_seconds, 1),
        "crawler_cpu_seconds": round(crawl.cpu_seconds, 2), "crawler_peak_rss_mib": round(crawl.peak_rss_kib / 1024, 1),
        "bytes_per_row": round(data["dataset_bytes"] / data["rows"], 1) if data["rows"] else None,
        "crawler_exit_code": crawl.exit_code,
    }


#: Operations the simulator counts that are not IAM (STS and Organizations).
IAM_FREE_OPERATIONS = frozenset({"AssumeRole", "GetCallerIdentity", "DescribeOrganization", "ListAccounts",
                                 "ListRoots", "ListOrganizationalUnitsForParent", "ListParents",
                                 "ListAccountsForParent", "ListTagsForResource", "DescribeAccount"})
