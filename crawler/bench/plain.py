"""Plain boto3 procedures the crawler is measured against, independent of the crawler's code.

* :func:`baseline`: AWS's own walk-through of access advisor, one entity at a time: generate a
  job, poll it once a second until it is done, read it.
* :func:`bare_fetch`: the CPU floor: the same IAM calls the crawler must make (the inventory,
  one job per entity, every result page), done as cheaply as boto3 allows and the answers
  thrown away. Run it in its own process (``python -m crawler.bench.plain``) so its CPU time
  can be measured apart; it prints its counts as JSON.

Both read the ``sim`` profile that ``access-crawler sim serve --aws-config DIR`` writes.
This module imports only the standard library and boto3.
"""
from __future__ import annotations

import argparse
import configparser
import json
import resource
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROLE_NAME = "AccessCrawlerRole"
BASELINE_POLL_SECONDS = 1.0
#: The page size the crawler asks for (GetAccountAuthorizationDetails, job results).
PAGE_SIZE = 1000
INVENTORY_FILTER = ["User", "Role", "Group", "LocalManagedPolicy"]


def _profile(aws_dir: Path) -> dict[str, str]:
    config, credentials = configparser.ConfigParser(), configparser.ConfigParser()
    config.read(aws_dir / "config")
    credentials.read(aws_dir / "credentials")
    return {**dict(config["profile sim"]), **dict(credentials["sim"])}


def account_clients(aws_dir: Path, account_ids: Sequence[str], max_attempts: int = 3) -> dict[str, Any]:
    """An IAM client per account, in the crawler role assumed from the ``sim`` profile.

    All clients come from one boto3 session (a session per account would cost about 0.1 s of
    CPU each, which the floor must not carry)."""
    import boto3
    from botocore.config import Config

    profile = _profile(aws_dir)
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
    session = boto3.Session(aws_access_key_id=profile["aws_access_key_id"],
                            aws_secret_access_key=profile["aws_secret_access_key"], region_name=profile["region"])
    sts = session.client("sts", endpoint_url=profile["endpoint_url"], config=config)
    clients = {}
    for account_id in account_ids:
        keys = sts.assume_role(RoleArn=f"arn:aws:iam::{account_id}:role/{ROLE_NAME}",
                               RoleSessionName="bench")["Credentials"]
        clients[account_id] = session.client(
            "iam", endpoint_url=profile["endpoint_url"], config=config, aws_access_key_id=keys["AccessKeyId"],
            aws_secret_access_key=keys["SecretAccessKey"], aws_session_token=keys["SessionToken"])
    return clients


def entity_arns(iam: Any) -> list[str]:
    """Every user, role, group and local managed policy of the account (the crawler's default inventory)."""
    arns: list[str] = []
    for page in iam.get_paginator("get_account_authorization_details").paginate(
            Filter=INVENTORY_FILTER, PaginationConfig={"PageSize": PAGE_SIZE}):
        arns += [item["Arn"] for key in ("UserDetailList", "RoleDetailList", "GroupDetailList", "Policies")
                 for item in page.get(key, [])]
    return arns


# -- AWS's walk-through ------------------------------------------------------------------
def baseline(aws_dir: Path, account_ids: Sequence[str]) -> dict[str, Any]:
    """For each account, for each entity in turn: generate a job, poll it once a second until done, read it."""
    started, entities, rows = time.perf_counter(), 0, 0
    for iam in account_clients(aws_dir, account_ids).values():
        for arn in entity_arns(iam):
            rows += _walk_through(iam, arn)
            entities += 1
    return {"seconds": time.perf_counter() - started, "accounts": len(account_ids), "entities": entities,
            "rows": rows}


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


# -- the CPU floor -----------------------------------------------------------------------
def bare_fetch(aws_dir: Path, account_ids: Sequence[str], rate: float, job_seconds: float,
               granularity: str = "SERVICE_LEVEL") -> dict[str, Any]:
    """Every account at once: list its entities, generate their jobs at ``rate``, wait for them,
    read every page (``MaxItems`` 1000) and discard it. Returns the rows and calls counted, and
    the CPU seconds of the fetching alone (start-up and clients left out)."""
    clients = account_clients(aws_dir, account_ids, max_attempts=20)
    before = _cpu_seconds()
    with ThreadPoolExecutor(max(1, len(clients))) as pool:
        counts = list(pool.map(lambda iam: _fetch_account(iam, rate, job_seconds, granularity), clients.values()))
    return {"fetch_cpu_seconds": _cpu_seconds() - before,
            "accounts": len(counts), "entities": sum(count["entities"] for count in counts),
            "service_rows": sum(count["service_rows"] for count in counts),
            "action_rows": sum(count["action_rows"] for count in counts),
            "calls": sum(count["calls"] for count in counts)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Pace:
    """At most ``rate`` calls a second from one thread (the simulator throttles beyond it)."""

    def __init__(self, rate: float) -> None:
        self.interval, self.next = 1.0 / rate, time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            if self.next > now:
                time.sleep(self.next - now)
            self.next = max(now, self.next) + self.interval


def _fetch_account(iam: Any, rate: float, job_seconds: float, granularity: str) -> dict[str, int]:
    pace = _Pace(rate)
    pace.wait()
    arns = entity_arns(iam)
    calls = 1
    jobs = []
    for arn in arns:
        pace.wait()
        jobs.append(iam.generate_service_last_accessed_details(Arn=arn, Granularity=granularity)["JobId"])
        calls += 1
    time.sleep(job_seconds)
    service_rows = action_rows = 0
    for job_id in jobs:
        marker: dict[str, str] = {}
        while True:
            pace.wait()
            page = iam.get_service_last_accessed_details(JobId=job_id, MaxItems=PAGE_SIZE, **marker)
            calls += 1
            if page["JobStatus"] == "IN_PROGRESS":
                time.sleep(0.1)
                continue
            services = page.get("ServicesLastAccessed", [])
            service_rows += len(services)
            action_rows += sum(len(service.get("TrackedActionsLastAccessed") or []) for service in services)
            if not page.get("IsTruncated"):
                break
            marker = {"Marker": page["Marker"]}
    return {"entities": len(arns), "service_rows": service_rows, "action_rows": action_rows, "calls": calls}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crawler.bench.plain --aws-dir DIR --rate R --job-seconds J ACCOUNT...``: the CPU floor."""
    parser = argparse.ArgumentParser(prog="python -m crawler.bench.plain", description=main.__doc__)
    parser.add_argument("--aws-dir", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--job-seconds", type=float, required=True)
    parser.add_argument("--granularity", default="SERVICE_LEVEL", choices=["SERVICE_LEVEL", "ACTION_LEVEL"])
    parser.add_argument("accounts", nargs="+")
    args = parser.parse_args(argv)
    print(json.dumps(bare_fetch(args.aws_dir, args.accounts, args.rate, args.job_seconds, args.granularity)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
