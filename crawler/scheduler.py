"""The crawl, as the pipeline it runs.

discover accounts -> for each account in parallel: enter it -> inventory -> access-advisor
jobs -> rows -> stage -> (when all are staged) publish the snapshot and its manifest.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from crawler import __version__
from crawler.advisor import FAILED, SKIPPED, TIMED_OUT, AccountAdvisor, Failure
from crawler.calls import ANSWER_ERRORS, AccountCalls
from crawler.config import config_digest
from crawler.dataset import INTERRUPTED, RUN_UNIT, RUNNING, Dataset, DatasetError
from crawler.errors import Interrupted
from crawler.inventory import entities_of, get_authorization_details, select_entities
from crawler.orgaccess import crawl_organizations_access
from crawler.organizations import (
    Account,
    Discovery,
    DiscoveryError,
    discover_accounts,
    select_accounts,
    static_accounts,
)
from crawler.progress import Progress
from crawler.ratelimit import RateBook, RateLimiter
from crawler.rows import AccountResult, RunContext, account_tables
from crawler.runs import AccountSummary, plan_run
from crawler.sessions import EnterAccountError, SessionFactory, error_code, error_message
from crawler.settings import Config

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """The result of a crawl, for the command line and for callers of the library."""

    run_id: str
    snapshot_date: date
    root: str
    organization_id: str | None
    manifest: dict[str, Any]
    accounts: list[AccountSummary] = field(default_factory=list)
    #: True when this run finished an earlier, unfinished attempt (same run id).
    resumed: bool = False

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table in the published snapshot."""
        return {name: table["rows"] for name, table in self.manifest.get("tables", {}).items()}

    @property
    def complete(self) -> bool:
        """True when nothing was missing: every account entered, every entity's job completed."""
        return self.manifest.get("errors", 0) == 0


def run_crawl(config: Config, progress: Progress | None = None, stop: threading.Event | None = None,
              run_id: str | None = None, resume: bool = False) -> RunSummary:
    """Crawl every selected account and publish one snapshot of every table (resuming an unfinished run)."""
    progress, stop = progress or Progress(), stop or threading.Event()
    plan = plan_run(config, resume, run_id)
    dataset = Dataset(config.output.path, plan.snapshot_date, plan.run_id, config.output)
    dataset.check_writable()
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    identity = factory.caller_identity()
    header = {"tool": "access-crawler", "version": __version__, "config_digest": config_digest(config),
              "config_source": config.source, "started_at": plan.started_at.isoformat(),
              "caller_arn": identity.get("Arn"), "partition": config.aws.partition}
    dataset.write_run_manifest({**header, "status": RUNNING})
    log.info("run %s as %s", plan.run_id, identity.get("Arn"))
    try:
        discovery = discover(config, factory)
    except DiscoveryError as error:
        dataset.write_run_manifest({**header, "status": "failed", "error": str(error)})
        raise
    accounts = select_accounts(discovery, config.organization)
    reused = reusable_accounts(dataset, accounts)
    log.info("run %s: %d of %d accounts selected (%d already staged); snapshot %s", plan.run_id, len(accounts),
             len(discovery.accounts), len(reused), plan.snapshot_date)
    progress.add("accounts_total", len(accounts))
    progress.add("accounts_done", len(reused))
    remaining = [account for account in accounts if account.id not in reused]
    if config.organizations_access.enabled and RUN_UNIT not in dataset.staged_units():
        tables = crawl_organizations_access(config, factory, discovery, accounts, plan.run_id, progress, stop)
        if not stop.is_set():  # an interrupted view is not staged: the resumed run makes it again
            dataset.stage(RUN_UNIT, tables, {"unit": RUN_UNIT, "errors": len(tables["errors"])})
    try:
        crawled = crawl_accounts(config, factory, dataset, discovery, remaining, plan.run_id, progress, stop)
    except DatasetError as error:
        with contextlib.suppress(DatasetError):  # the disk may be too full for this too
            dataset.write_run_manifest({**header, "status": INTERRUPTED, "error": str(error)})
        raise DatasetError(f"{error}; finished accounts stay staged: free space (or fix the output) and run again "
                           "to resume") from error
    summaries = sorted([*reused.values(), *crawled], key=lambda summary: summary.account_id)
    document = {**header, **_manifest(config, discovery, summaries), "resumed": plan.resumed}
    document["errors"] += dataset.staged_summaries().get(RUN_UNIT, {}).get("errors", 0)
    if stop.is_set():
        dataset.write_run_manifest({**document, "status": INTERRUPTED})
        staged = sum(1 for summary in summaries if summary.outcome != INTERRUPTED)
        raise Interrupted(f"run {plan.run_id} stopped: {staged} of {len(accounts)} accounts finished and staged, "
                          "nothing published; run again (or with --resume) to finish it")
    manifest = dataset.publish(document)
    log.info("run %s published: %s", plan.run_id, ", ".join(f"{name} {table['rows']}"
                                                             for name, table in manifest["tables"].items()))
    return RunSummary(plan.run_id, plan.snapshot_date, config.output.path, discovery.organization_id, manifest,
                      summaries, plan.resumed)


def reusable_accounts(dataset: Dataset, accounts: list[Account]) -> dict[str, AccountSummary]:
    """Accounts an earlier attempt of this run staged completely and successfully.

    Failed accounts are crawled again; staged accounts that are no longer selected are dropped,
    so the snapshot holds exactly the selected accounts.
    """
    selected = {account.id for account in accounts}
    reused = {}
    for unit, document in dataset.staged_summaries().items():
        if unit == RUN_UNIT:  # the run's own rows (the Organizations view), not an account
            continue
        if unit not in selected:
            dataset.discard(unit)
        elif document.get("outcome") == "ok":
            reused[unit] = AccountSummary.from_dict(document)
    return reused


def discover(config: Config, factory: SessionFactory) -> Discovery:
    """The accounts of the organization (or of the static list)."""
    if config.organization.source == "static":
        return static_accounts(config.organization)
    return discover_accounts(factory.organizations_client())


def crawl_accounts(config: Config, factory: SessionFactory, dataset: Dataset, discovery: Discovery,
                   accounts: list[Account], run_id: str, progress: Progress,
                   stop: threading.Event) -> list[AccountSummary]:
    """Accounts in parallel (``concurrency.accounts``); each one staged as soon as it is done."""
    summaries = []
    shared = CrawlShared()
    with ThreadPoolExecutor(config.concurrency.accounts, thread_name_prefix="account") as pool:
        futures = [pool.submit(crawl_account, config, factory, dataset, RunContext(run_id, discovery.organization_id,
                                                                                   account), progress, stop, shared)
                   for account in accounts]
        storage_errors: list[DatasetError] = []
        try:
            for future in as_completed(futures):
                try:
                    summaries.append(future.result())
                except DatasetError as error:  # disk full, output gone: stop, keep what is staged
                    if not storage_errors:
                        log.error("cannot stage results, stopping: %s", error)
                    stop.set()
                    storage_errors.append(error)
        except KeyboardInterrupt:
            log.warning("interrupted: finishing the accounts in progress, starting no new one")
            stop.set()
            for future in futures:
                future.cancel()
            summaries = [future.result() for future in futures if not future.cancelled()]
    if storage_errors:
        raise storage_errors[0]
    return sorted(summaries, key=lambda summary: summary.account_id)


@dataclass(frozen=True)
class CrawlShared:
    """What the accounts of one crawl share."""

    #: Held while an account's rows are built and staged. Staging is CPU work under the GIL:
    #: one account at a time is as fast, and accounts of a similar size finish together, so
    #: staging them all at once multiplied the peak memory.
    staging: threading.Lock = field(default_factory=threading.Lock)
    #: The IAM rate ceilings accounts found (where new adaptive limiters start).
    rates: RateBook = field(default_factory=RateBook)


def crawl_account(config: Config, factory: SessionFactory, dataset: Dataset, context: RunContext,
                  progress: Progress, stop: threading.Event, shared: CrawlShared | None = None) -> AccountSummary:
    """Enter one account, run its jobs, stage its rows; every failure becomes a recorded row."""
    account = context.account
    shared = shared or CrawlShared()
    started = datetime.now(timezone.utc)
    try:
        result = _crawl(config, factory, account, started, progress, stop, shared.rates)
    except Exception as error:  # a bug must cost one account, recorded, not the whole crawl
        log.exception("unexpected error", extra={"account_id": account.id})
        result = AccountResult(account, factory.role_arn(account.id), started, datetime.now(timezone.utc),
                               failure=Failure("internal", type(error).__name__, str(error)))
    if stop.is_set() and (result.skipped or any(item.outcome == SKIPPED for item in result.outcomes)):
        log.info("account interrupted: not staged", extra={"account_id": account.id})
        return AccountSummary(account.id, INTERRUPTED, {}, Counter())
    with shared.staging:
        tables = account_tables(context, result, config.advisor.granularity == "ACTION_LEVEL")
        outcomes = Counter(outcome.outcome for outcome in result.outcomes)
        summary = AccountSummary(account.id, tables["accounts"][0]["outcome"],
                                 {name: len(rows) for name, rows in tables.items()}, outcomes,
                                 result.failure.code if result.failure else None)
        dataset.stage(account.id, tables, summary.to_dict())
        del tables
    progress.add("accounts_done")
    log.info("account done: %s, %d entities (%s)", summary.outcome, len(result.outcomes),
             ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())) or "none",
             extra={"account_id": account.id})
    return summary


def _crawl(config: Config, factory: SessionFactory, account: Account, started: datetime, progress: Progress,
           stop: threading.Event, rates: RateBook) -> AccountResult:
    role_arn = factory.role_arn(account.id)
    if stop.is_set():
        return AccountResult(account, role_arn, started, started, skipped=True)
    try:
        session = factory.enter_account(account.id)
    except EnterAccountError as error:
        log.warning("cannot enter account: %s: %s", error.code, error.message, extra={"account_id": account.id})
        return AccountResult(account, role_arn, started, datetime.now(timezone.utc),
                             failure=Failure("assume_role", error.code, error.message))
    limiter = RateLimiter(config.concurrency.requests_per_second_per_account, book=rates)
    calls = AccountCalls(session, "iam", limiter, progress, config.concurrency.throttle_patience_seconds, stop)
    try:
        details = get_authorization_details(calls, config.entities, config.advisor.page_size)
    except ANSWER_ERRORS as error:
        log.warning("inventory failed: %s", error_code(error), extra={"account_id": account.id})
        return AccountResult(account, role_arn, started, datetime.now(timezone.utc),
                             failure=Failure("inventory", error_code(error), error_message(error)))
    entities = select_entities(entities_of(details), config.entities)
    progress.add("entities_total", len(entities))
    advisor = AccountAdvisor(calls, config.advisor, config.concurrency.jobs_in_flight_per_account, progress, stop,
                             parallel_calls=config.concurrency.parallel_calls_per_account)
    outcomes = advisor.run(entities)
    return AccountResult(account, role_arn, started, datetime.now(timezone.utc), outcomes)


def _manifest(config: Config, discovery: Discovery, summaries: list[AccountSummary]) -> dict[str, Any]:
    outcomes = Counter(summary.outcome for summary in summaries)
    entities: Counter[str] = Counter()
    for summary in summaries:
        entities.update(summary.entities)
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(), "organization_id": discovery.organization_id,
        "granularity": config.advisor.granularity,
        "accounts": {"selected": len(summaries), "ok": outcomes.get("ok", 0), "failed": outcomes.get("failed", 0),
                     "skipped": outcomes.get("skipped", 0), "interrupted": outcomes.get(INTERRUPTED, 0),
                     "failed_ids": [summary.account_id for summary in summaries if summary.outcome != "ok"]},
        "entities": dict(sorted(entities.items())),
        "entities_missing": entities.get(FAILED, 0) + entities.get(TIMED_OUT, 0) + entities.get("skipped", 0),
        "errors": sum(summary.rows.get("errors", 0) for summary in summaries),
    }
