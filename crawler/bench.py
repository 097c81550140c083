"""Benchmark the crawler against a simulated organization served by another process.

``scripts/bench`` (``python -m crawler.bench``) starts ``access-crawler sim serve`` with an IAM
rate limit R per account, a latency L per call and a job duration J, crawls it with
``python -m crawler run`` in a third process, and prints one ``name: value`` line per figure:
wall time, the lower bound T* and wall / T*, calls by operation, throttled calls, rows, rows
per second, the crawler's CPU seconds and peak memory, bytes per row of the dataset. With
``--baseline`` it also times AWS's own walk-through procedure (plain boto3, one entity at a
time) on a fresh simulator of the same organization.

Importing this module starts nothing; only :func:`main` does.
"""
from __future__ import annotations

import argparse
import configparser
import heapq
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CRAWLER = [sys.executable, "-m", "crawler"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
#: GetAccountAuthorizationDetails and GetServiceLastAccessedDetails page size the crawler asks for.
PAGE_SIZE = 1000
BASELINE_POLL_SECONDS = 1.0
FIGURES = ("accounts", "accounts_crawled", "entities_per_account", "rate", "latency_ms", "job_seconds",
           "concurrency_accounts", "adaptive", "wall_seconds", "lower_bound_seconds", "wall_over_lower_bound",
           "min_iam_calls", "calls_by_operation", "iam_calls", "throttled_calls", "rows", "rows_by_table",
           "rows_per_second", "crawler_cpu_seconds", "crawler_peak_rss_mib", "dataset_bytes", "bytes_per_row",
           "crawler_exit_code")


@dataclass(frozen=True)
class BenchSettings:
    """One configuration to measure."""

    accounts: int = 6
    entities: int = 10
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
class CrawlMeasure:
    """What the crawler process cost."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_kib: int


def crawler_config(settings: BenchSettings, output: Path) -> str:
    """The crawl's configuration: R given to the crawler unless adaptive; quiet logs, no log file."""
    rate = "null" if settings.adaptive else repr(float(settings.rate))
    return (f"aws: {{profile: sim, region: us-east-1}}\n"
            f"advisor: {{granularity: SERVICE_LEVEL}}\n"
            f"concurrency: {{accounts: {settings.slots}, requests_per_second_per_account: {rate}}}\n"
            f"output: {{path: {json.dumps(str(output))}}}\n"
            f"logging: {{level: WARNING, file_enabled: false}}\n")


def run_crawler(config: Path, output: Path, env: dict[str, str], log: Path) -> CrawlMeasure:
    """``python -m crawler run`` in its own process; its wall time and, from ``os.wait4``, its own rusage."""
    with log.open("w", encoding="utf-8") as sink:
        started = time.perf_counter()
        process = subprocess.Popen([*CRAWLER, "run", "-c", str(config), "--output", str(output)], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return CrawlMeasure(process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


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


# -- the baseline: AWS's walk-through, one entity at a time --------------------------------
def _profile(aws_dir: Path) -> dict[str, str]:
    config, credentials = configparser.ConfigParser(), configparser.ConfigParser()
    config.read(aws_dir / "config")
    credentials.read(aws_dir / "credentials")
    return {**dict(config["profile sim"]), **dict(credentials["sim"])}


def baseline(aws_dir: Path, account_ids: Sequence[str], role_name: str = "AccessCrawlerRole") -> dict[str, Any]:
    """For each account, for each entity in turn: generate a job, poll it once a second until done, read it."""
    import boto3

    profile = _profile(aws_dir)
    session = boto3.Session(aws_access_key_id=profile["aws_access_key_id"],
                            aws_secret_access_key=profile["aws_secret_access_key"], region_name=profile["region"])
    sts = session.client("sts", endpoint_url=profile["endpoint_url"])
    started, entities, rows = time.perf_counter(), 0, 0
    for account_id in account_ids:
        role = sts.assume_role(RoleArn=f"arn:aws:iam::{account_id}:role/{role_name}", RoleSessionName="baseline")
        keys = role["Credentials"]
        iam = boto3.Session(aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"],
                            aws_session_token=keys["SessionToken"], region_name=profile["region"]
                            ).client("iam", endpoint_url=profile["endpoint_url"])
        for arn in _entity_arns(iam):
            rows += _walk_through(iam, arn)
            entities += 1
    return {"seconds": time.perf_counter() - started, "accounts": len(account_ids), "entities": entities,
            "rows": rows}


def _entity_arns(iam: Any) -> list[str]:
    arns: list[str] = []
    for page in iam.get_paginator("get_account_authorization_details").paginate(
            Filter=["User", "Role", "Group", "LocalManagedPolicy"]):
        arns += [item["Arn"] for key in ("UserDetailList", "RoleDetailList", "GroupDetailList", "Policies")
                 for item in page.get(key, [])]
    return arns


def _walk_through(iam: Any, arn: str) -> int:
    job_id = iam.generate_service_last_accessed_details(Arn=arn)["JobId"]
    page = iam.get_service_last_accessed_details(JobId=job_id)
    while page["JobStatus"] == "IN_PROGRESS":
        time.sleep(BASELINE_POLL_SECONDS)
        page = iam.get_service_last_accessed_details(JobId=job_id)
    rows = len(page.get("ServicesLastAccessed", []))
    while page.get("IsTruncated"):
        page = iam.get_service_last_accessed_details(JobId=job_id, Marker=page["Marker"])
        rows += len(page.get("ServicesLastAccessed", []))
    return rows


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


# -- one configuration -------------------------------------------------------------------
def measure(settings: BenchSettings, work: Path) -> dict[str, Any]:
    """Run the crawler (and the baseline when asked) on one configuration; every figure by name."""
    needs = account_needs(settings)
    work.mkdir(parents=True, exist_ok=True)
    output = work / "output"
    config = work / "crawler.yaml"
    config.write_text(crawler_config(settings, output), encoding="utf-8")
    with simulator(settings, work / "sim") as sim:
        crawl = run_crawler(config, output, sim.environment(), work / "crawler.log")
        stats = sim.stop()
    if crawl.exit_code != 0:
        print(f"crawler exited {crawl.exit_code}; its output:\n"
              + (work / "crawler.log").read_text(encoding="utf-8")[-3000:], file=sys.stderr)
    figures = _figures(settings, needs, crawl, stats, dataset_figures(output))
    if settings.baseline:
        figures.update(baseline_figures(settings, needs, work / "baseline"))
        figures["baseline_over_wall"] = round(figures["baseline_scaled_seconds"] / crawl.wall_seconds, 2)
    return figures


def _figures(settings: BenchSettings, needs: Sequence[AccountNeed], crawl: CrawlMeasure,
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
        "concurrency_accounts": settings.slots, "adaptive": settings.adaptive,
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


def format_figures(figures: dict[str, Any]) -> str:
    """One ``name: value`` line per figure (mappings as compact JSON)."""
    return "\n".join(f"{name}: {json.dumps(value) if isinstance(value, dict) else value}"
                     for name, value in figures.items())


# -- command line ------------------------------------------------------------------------
def _counts(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of counts") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of counts")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The ``scripts/bench`` options."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=_counts, default=[6], help="member accounts, e.g. 5,10,20 (default 6)")
    parser.add_argument("--entities", type=_counts, default=[10], help="entities per account (>= 8; default 10)")
    parser.add_argument("--rate", type=float, default=10.0, help="IAM requests per second per account (default 10)")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="latency per call (default 5)")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="access-advisor job duration (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the organization (default 1)")
    parser.add_argument("--concurrency", type=int, help="accounts crawled at once (default: all)")
    parser.add_argument("--adaptive", action="store_true",
                        help="do not tell the crawler R (requests_per_second_per_account unset)")
    parser.add_argument("--baseline", action="store_true", help="also time AWS's walk-through procedure (boto3)")
    parser.add_argument("--baseline-accounts", type=int, default=1,
                        help="accounts the baseline walks; its time is scaled to all (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure of every configuration")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (default: a temporary "
                        "directory, removed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every configuration of the sweep; print one block each."""
    args = build_parser().parse_args(argv)
    if min(args.entities) < 8:
        raise SystemExit("scripts/bench: --entities must be at least 8 (the simulator's minimum)")
    base = BenchSettings(rate=args.rate, latency_ms=args.latency_ms, job_seconds=args.job_seconds, seed=args.seed,
                         concurrency=args.concurrency, adaptive=args.adaptive, baseline=args.baseline,
                         baseline_accounts=args.baseline_accounts)
    results = []
    with _workspace(args.keep) as root:
        for index, (accounts, entities) in enumerate((a, e) for a in args.accounts for e in args.entities):
            settings = replace(base, accounts=accounts, entities=entities)
            if index:
                print()
            print(f"# configuration {index + 1}: accounts={accounts} entities={entities}", flush=True)
            figures = measure(settings, root / f"config-{index + 1}")
            print(format_figures(figures), flush=True)
            results.append(figures)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0 if all(figures["crawler_exit_code"] == 0 for figures in results) else 1


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="access-crawler-bench-") as directory:
        yield Path(directory)


if __name__ == "__main__":
    raise SystemExit(main())
