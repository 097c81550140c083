"""``access-crawler demo``: crawl the built-in simulated organization end to end, no AWS account.

The simulator is served on loopback and reached exactly as real AWS would be: through a
named AWS profile whose ``endpoint_url`` points at it. The crawler itself has no idea.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from crawler.config.settings import AdvisorSettings, AwsSettings, ConcurrencySettings, Config, OutputSettings
from crawler.crawl.scheduler import RunSummary, run_crawl
from crawler.outcomes import JobOutcome
from crawler.progress import Progress

DEMO_PROFILE = "sim"
#: Variables that would send the demo's calls elsewhere than the simulator.
_OVERRIDES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IAM",
              "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_ORGANIZATIONS")


def demo_config(out: str | Path) -> Config:
    """The settings of ``config/demo.yaml``, writing to ``out``."""
    return Config(
        aws=AwsSettings(profile=DEMO_PROFILE, region="us-east-1"),
        advisor=AdvisorSettings(granularity="ACTION_LEVEL", entity_details=True, policies_granting_access=True,
                                poll_interval_seconds=0.2),
        concurrency=ConcurrencySettings(accounts=4),
        output=OutputSettings(path=str(out)))


def run_demo(out: str | Path, accounts: int = 6, seed: int = 1, entities: int = 12,
             progress: Progress | None = None, stop: threading.Event | None = None) -> RunSummary:
    """Start a simulated organization, crawl it into ``out``, stop it; return the run's summary."""
    from crawler.sim import OrgSpec, SimulatedOrganization

    sim = SimulatedOrganization(OrgSpec(accounts=accounts, entities=entities, seed=seed))
    with sim.serve(port=0), tempfile.TemporaryDirectory(prefix="access-crawler-demo-") as aws_dir:
        config_file, credentials_file = sim.write_aws_config(aws_dir, profile=DEMO_PROFILE)
        with _environment(AWS_CONFIG_FILE=str(config_file), AWS_SHARED_CREDENTIALS_FILE=str(credentials_file)):
            return run_crawl(demo_config(out), progress=progress, stop=stop)


def findings(summary: RunSummary, days: int = 90) -> list[str]:
    """A few lines of what the data shows, by the same rules as the review report (crawler.analysis)."""
    from crawler import analysis

    snap = analysis.open_snapshot(summary.root, summary.snapshot_date)
    accounts = analysis.account_summary(snap, days)
    granted = int(accounts["services_granted"].sum())
    if not granted:
        return ["no service rows: nothing to show"]
    unused = analysis.unused_services(snap, days)
    unused = unused[unused["status"] == "unused"]
    stale = analysis.stale_entities(snap, days)
    entities = snap.entities
    users_and_roles = entities["entity_type"].isin(["USER", "ROLE"]) & (entities["job_outcome"] == JobOutcome.COMPLETED)
    lines = [f"{len(unused):,} of {granted:,} granted (entity, service) pairs were not used in the last {days} days "
             f"({len(unused) / granted:.0%}; entities younger than that are not counted)",
             f"{int((stale['status'] == 'stale').sum()):,} of {int(users_and_roles.sum()):,} users and roles used "
             f"none of their services in {days} days"]
    top = unused.groupby("service_namespace", observed=True).size().sort_values(ascending=False).head(5)
    lines.append("most often granted but unused: " + ", ".join(f"{name} ({count})" for name, count in top.items()))
    return lines


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the demo and put everything back afterwards."""
    saved = {name: os.environ.get(name) for name in (*values, *_OVERRIDES)}
    for name in _OVERRIDES:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
