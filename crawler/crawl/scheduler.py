"""The crawl, as the pipeline it runs.

discover accounts -> for each account in parallel: enter it -> inventory -> access-advisor
jobs -> rows -> stage -> (when all are staged) publish the snapshot and its manifest.

Each step of an account's pipeline is a function of one :class:`CrawlContext`, made once per
crawl; the rows step makes every table :data:`crawler.sources.rows.ACCOUNT_TABLES` lists.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from crawler import __version__
from crawler.aws.calls import ANSWER_ERRORS, AccountCalls, PacedCalls, organizations_calls
from crawler.aws.errors import error_code, error_message
from crawler.aws.ratelimit import RateBook, RateLimiter
from crawler.aws.s3 import ConditionalObjects
from crawler.aws.sessions import EnterAccountError, SessionFactory
from crawler.config.loader import config_digest
from crawler.config.settings import Config
from crawler.crawl.publish import (
    RunJournal,
    RunSummary,
    finish_shard,
    objects_for,
    run_manifest,
    session_factory,
    staged_by,
)
from crawler.crawl.runs import AccountSummary, RunPlan, lease_run
from crawler.crawl.shards import (
    PUBLISH_CLAIM,
    Shard,
    check_agreement,
)
from crawler.errors import Interrupted, UsageError
from crawler.outcomes import AccountOutcome, Failure, RunStatus
from crawler.progress import Progress
from crawler.sources.account_result import AccountResult, RunContext
from crawler.sources.advisor import SKIPPED, AccountAdvisor, EntityOutcome
from crawler.sources.inventory import Entity, entities_of, get_authorization_details, select_entities
from crawler.sources.organizations import (
    Account,
    Discovery,
    DiscoveryError,
    discover_accounts,
    select_accounts,
    static_accounts,
)
from crawler.sources.organizations_view import crawl_organizations_access
from crawler.sources.rows import account_tables
from crawler.store.dataset import (
    INTERRUPTED,
    RUN_UNIT,
    RUNNING,
    Dataset,
    DatasetError,
    check_writable,
)
from crawler.store.lease import Lease

log = logging.getLogger(__name__)




def run_crawl(config: Config, progress: Progress | None = None, stop: threading.Event | None = None,
              run_id: str | None = None, resume: bool = False, shard: Shard | None = None,
              wait: float | None = None, allow_empty: bool = False) -> RunSummary:
    """Crawl every selected account and publish one snapshot of every table (resuming an unfinished run).

    The run holds the lease of its snapshot date throughout (LeaseHeld when a live run holds it;
    ``wait`` seconds of waiting for it first, if given). With ``shard``, crawl that shard's share
    of the accounts into the run the shards share; the shard that finishes last publishes the
    snapshot (the others return unpublished summaries). A selection of no account is a
    UsageError that publishes nothing, unless ``allow_empty``.
    """
    progress, stop = progress or Progress(), stop or threading.Event()
    check_writable(config.output.path)
    # Credentials are needed before the lease only when the output is on S3 (its conditional writes).
    factory = session_factory(config) if config.output.path.startswith("s3://") else None
    plan, lease = lease_run(config, resume, run_id, shard, wait, stop, objects_for(config.output.path, factory))
    lease.start_heartbeat(on_lost=stop.set)
    try:
        return crawl_under_lease(config, factory, plan, lease, progress, stop, shard, allow_empty)
    finally:
        lease.release()


def crawl_under_lease(config: Config, factory: SessionFactory | None, plan: RunPlan, lease: Lease,
                      progress: Progress, stop: threading.Event, shard: Shard | None,
                      allow_empty: bool = False) -> RunSummary:
    """The run planned under ``lease``: discover, crawl, stage, publish."""
    dataset = open_dataset(config, plan, shard, objects_for(config.output.path, factory))
    factory = factory or session_factory(config)
    identity = factory.caller_identity()
    header = {"tool": "access-crawler", "version": __version__, "config_digest": config_digest(config),
              "config_source": config.source, "started_at": plan.started_at.isoformat(),
              "caller_arn": identity.get("Arn"), "partition": config.aws.partition}
    journal = RunJournal(dataset, shard)
    journal.write({**header, "status": RUNNING})
    log.info("run %s%s as %s", plan.run_id, f" (shard {shard})" if shard else "", identity.get("Arn"))
    try:
        # One paced edge to AWS Organizations for the whole crawl: discovery's threads, then the
        # Organizations view, share its adaptive limiter (Organizations allows a few requests a second).
        organizations = organizations_calls(factory, progress, stop) if config.organization.source != "static" else None
        discovery = discover(config, factory, organizations)
        selected = select_accounts(discovery, config.organization)
        if not selected and not allow_empty:
            raise NoAccountSelected(f"the configuration selects none of the {len(discovery.accounts)} accounts "
                                    "found: nothing was published (check organization.include, exclude and states, "
                                    "or run with --allow-empty to publish an empty snapshot)")
    except (DiscoveryError, NoAccountSelected) as error:
        if stop.is_set():  # stopped while Organizations throttled: an interruption, not a failure
            journal.write({**header, "status": INTERRUPTED, "error": str(error)})
            raise Interrupted(f"run {plan.run_id} stopped during the discovery of accounts: nothing crawled") \
                from error
        journal.write({**header, "status": FAILED_RUN, "error": str(error)})
        raise
    accounts = shard.select(selected) if shard else selected
    reused = reusable_accounts(dataset, accounts, shard)
    log.info("run %s: %d of %d accounts selected%s (%d already staged); snapshot %s", plan.run_id, len(accounts),
             len(discovery.accounts), f" for shard {shard}" if shard else "", len(reused), plan.snapshot_date)
    progress.add("accounts_total", len(accounts))
    progress.add("accounts_done", len(reused))
    remaining = [account for account in accounts if account.id not in reused]
    with_view = config.organizations_access.enabled and (shard is None or shard.crawls_run_unit)
    crawl = CrawlContext(config, factory, dataset, plan.run_id, discovery.organization_id, progress, stop)
    try:
        crawled = crawl_run(crawl, discovery, remaining, selected if with_view else None, organizations)
    except DatasetError as error:
        with contextlib.suppress(DatasetError):  # the disk may be too full for this too
            journal.write({**header, "status": INTERRUPTED, "error": str(error)})
        raise DatasetError(f"{error}; finished accounts stay staged: free space (or fix the output) and run again "
                           "to resume") from error
    summaries = sorted([*reused.values(), *crawled], key=lambda summary: summary.account_id)
    document = {**header, **run_manifest(config.advisor.granularity, discovery.organization_id, summaries,
                                      dataset.staged_rows(RUN_UNIT)),
                "resumed": plan.resumed}
    if lease.lost:
        journal.write({**document, "status": INTERRUPTED, "error": "lease lost"})
        lease.confirm()  # raises LeaseLost
    if stop.is_set():
        journal.write({**document, "status": INTERRUPTED})
        staged = sum(1 for summary in summaries if summary.outcome != INTERRUPTED)
        raise Interrupted(f"run {plan.run_id} stopped: {staged} of {len(accounts)} accounts finished and staged, "
                          "nothing published; run again (or with --resume) to finish it")
    if shard is not None:
        return finish_shard(dataset, shard, document, summaries, discovery.organization_id, lease)
    lease.confirm()
    manifest = dataset.publish(document, staged_by(summaries, dataset, with_view))
    log.info("run %s published: %s", plan.run_id, ", ".join(f"{name} {table['rows']}"
                                                             for name, table in manifest["tables"].items()))
    return RunSummary(plan.run_id, plan.snapshot_date, config.output.path, discovery.organization_id, manifest,
                      summaries, plan.resumed)


class NoAccountSelected(UsageError):
    """The configuration selects no account: a run publishes nothing rather than an empty snapshot."""


#: The status of a run that stopped before crawling (discovery failed, no account selected).
FAILED_RUN = RunStatus.FAILED


def open_dataset(config: Config, plan: RunPlan, shard: Shard | None,
                 objects: ConditionalObjects | None = None) -> Dataset:
    """The run's dataset (run_crawl checked the output writable before the lease); for a shard, checked to be
    open to it.

    UsageError when a shard's run is being published, or its other shards split it another way
    (found before hours of crawling, not after).
    """
    dataset = Dataset(config.output.path, plan.snapshot_date, plan.run_id, config.output, objects)
    if shard is None:
        return dataset
    if dataset.claimed(PUBLISH_CLAIM):
        raise UsageError(f"run {plan.run_id} is being published by one of its shards (or its publisher died: "
                         f"access-crawler consolidate {config.output.path} --snapshot {plan.snapshot_date} "
                         f"--run-id {plan.run_id})")
    check_agreement(dataset.shard_records(), shard, config_digest(config))
    return dataset


def crawl_run(crawl: CrawlContext, discovery: Discovery, accounts: list[Account], view_of: list[Account] | None,
              organizations: PacedCalls | None = None) -> list[AccountSummary]:
    """Crawl ``accounts`` and, beside them when ``view_of`` is given, the Organizations view of those
    accounts (calling Organizations through ``organizations``, the crawl's paced edge to it)."""
    with ThreadPoolExecutor(1, thread_name_prefix="organizations-view") as side:
        view = None if view_of is None else side.submit(organizations_view, crawl, discovery, view_of, organizations)
        crawled = crawl_accounts(crawl, accounts)
        if view is not None:
            view.result()
    return crawled


def organizations_view(crawl: CrawlContext, discovery: Discovery, accounts: list[Account],
                       organizations: PacedCalls | None = None) -> None:
    """Collect and stage the Organizations view (the run's own unit), unless an earlier attempt staged it.

    It runs beside the accounts' crawl, on its own management-account IAM rate limiter; its
    Organizations calls go through ``organizations``, the crawl's paced edge to Organizations.
    """
    if crawl.dataset.is_staged(RUN_UNIT):
        return
    tables = crawl_organizations_access(crawl.config, crawl.factory, discovery, accounts, crawl.run_id,
                                        crawl.progress, crawl.stop, organizations)
    if not crawl.stop.is_set():  # an interrupted view is not staged: the resumed run makes it again
        crawl.dataset.stage(RUN_UNIT, tables, {"unit": RUN_UNIT})


def reusable_accounts(dataset: Dataset, accounts: list[Account],
                      shard: Shard | None = None) -> dict[str, AccountSummary]:
    """Accounts an earlier attempt of this run (or shard) staged completely and successfully.

    Failed accounts are crawled again; staged accounts that are no longer selected are dropped,
    so the snapshot holds exactly the selected accounts. A shard only looks at its own accounts.
    """
    selected = {account.id for account in accounts}
    reused = {}
    for unit, document in dataset.staged_summaries().items():
        if unit == RUN_UNIT or (shard is not None and not shard.owns(unit)):
            continue
        if unit not in selected:
            dataset.discard(unit)
        elif document.get("outcome") == AccountOutcome.OK:
            reused[unit] = AccountSummary.from_dict(document)
    return reused


def discover(config: Config, factory: SessionFactory, organizations: PacedCalls | None = None) -> Discovery:
    """The accounts of the organization (or of the static list), through ``organizations`` (the
    crawl's paced edge to Organizations; by default one of its own)."""
    if config.organization.source == "static":
        return static_accounts(config.organization)
    return discover_accounts(organizations or organizations_calls(factory))


@dataclass(frozen=True)
class CrawlContext:
    """One crawl, as every step of an account's pipeline reads it: made once, passed as one argument."""

    config: Config
    factory: SessionFactory
    dataset: Dataset
    run_id: str
    organization_id: str | None
    progress: Progress
    stop: threading.Event
    #: Held while an account's rows are built and staged. Staging is CPU work under the GIL:
    #: one account at a time is as fast, and accounts of a similar size finish together, so
    #: staging them all at once multiplied the peak memory.
    staging: threading.Lock = field(default_factory=threading.Lock)
    #: The IAM rate ceilings accounts found (where new adaptive limiters start).
    rates: RateBook = field(default_factory=RateBook)

    def rows_of(self, account: Account) -> RunContext:
        """What every row of ``account`` shares (and the granularity its jobs ran at)."""
        return RunContext(self.run_id, self.organization_id, account,
                          action_level=self.config.advisor.granularity == "ACTION_LEVEL")


def crawl_accounts(crawl: CrawlContext, accounts: list[Account]) -> list[AccountSummary]:
    """Accounts in parallel (``concurrency.accounts``); each one staged as soon as it is done."""
    summaries = []
    with ThreadPoolExecutor(crawl.config.concurrency.accounts, thread_name_prefix="account") as pool:
        futures = [pool.submit(crawl_account, crawl, account) for account in accounts]
        storage_errors: list[DatasetError] = []
        try:
            for future in as_completed(futures):
                try:
                    summaries.append(future.result())
                except DatasetError as error:  # disk full, output gone: stop, keep what is staged
                    if not storage_errors:
                        log.error("cannot stage results, stopping: %s", error)
                    crawl.stop.set()
                    storage_errors.append(error)
        except KeyboardInterrupt:
            log.warning("interrupted: finishing the accounts in progress, starting no new one")
            crawl.stop.set()
            for future in futures:
                future.cancel()
            summaries = [future.result() for future in futures if not future.cancelled()]
    if storage_errors:
        raise storage_errors[0]
    return sorted(summaries, key=lambda summary: summary.account_id)


def crawl_account(crawl: CrawlContext, account: Account) -> AccountSummary:
    """One account's pipeline: enter -> inventory -> jobs -> rows -> stage; every failure becomes a recorded row."""
    result = visit_account(crawl, account)
    if crawl.stop.is_set() and (result.skipped or any(item.outcome == SKIPPED for item in result.outcomes)):
        log.info("account interrupted: not staged", extra={"account_id": account.id})
        return AccountSummary(account.id, INTERRUPTED, {}, Counter())
    with crawl.staging:  # one account's rows at a time (see CrawlContext.staging)
        tables = account_tables(crawl.rows_of(account), result)
        summary = stage(crawl, result, tables)
        del tables
    crawl.progress.add("accounts_done")
    log.info("account done: %s, %d entities (%s)", summary.outcome, len(result.outcomes),
             ", ".join(f"{name} {count}" for name, count in sorted(summary.entities.items())) or "none",
             extra={"account_id": account.id})
    return summary


def visit_account(crawl: CrawlContext, account: Account) -> AccountResult:
    """What AWS says about ``account``: enter it, read its inventory, run its jobs. A step that fails
    ends the visit with its failure recorded; so does a bug, which costs this account, not the crawl."""
    started = datetime.now(timezone.utc)
    role_arn = crawl.factory.role_arn(account.id)
    if crawl.stop.is_set():
        return AccountResult(account, role_arn, started, started, skipped=True)
    try:
        calls = enter(crawl, account)
        if isinstance(calls, Failure):
            return _finished(account, role_arn, started, failure=calls)
        entities = inventory(crawl, account, calls)
        if isinstance(entities, Failure):
            return _finished(account, role_arn, started, failure=entities)
        return _finished(account, role_arn, started, outcomes=jobs(crawl, calls, entities))
    except Exception as error:  # a bug must cost one account, recorded, not the whole crawl
        log.exception("unexpected error", extra={"account_id": account.id})
        return _finished(account, role_arn, started, failure=Failure("internal", type(error).__name__, str(error)))


def enter(crawl: CrawlContext, account: Account) -> AccountCalls | Failure:
    """Assume the crawler's role in ``account``; its IAM calls are paced by a limiter of its own, which
    starts where the crawl's rate book says accounts found their ceiling."""
    try:
        session = crawl.factory.enter_account(account.id)
    except EnterAccountError as error:
        log.warning("cannot enter account: %s: %s", error.code, error.message, extra={"account_id": account.id})
        return Failure("assume_role", error.code, error.message)
    concurrency = crawl.config.concurrency
    limiter = RateLimiter(concurrency.requests_per_second_per_account, book=crawl.rates)
    return AccountCalls(session, "iam", limiter, crawl.progress, concurrency.throttle_patience_seconds, crawl.stop)


def inventory(crawl: CrawlContext, account: Account, calls: AccountCalls) -> list[Entity] | Failure:
    """The account's entities the configuration selects (GetAccountAuthorizationDetails, every page)."""
    try:
        details = get_authorization_details(calls, crawl.config.entities, crawl.config.advisor.page_size)
    except ANSWER_ERRORS as error:
        log.warning("inventory failed: %s", error_code(error), extra={"account_id": account.id})
        return Failure("inventory", error_code(error), error_message(error))
    entities = select_entities(entities_of(details), crawl.config.entities)
    crawl.progress.add("entities_total", len(entities))
    return entities


def jobs(crawl: CrawlContext, calls: AccountCalls, entities: list[Entity]) -> list[EntityOutcome]:
    """The entities' access-advisor jobs: ``concurrency.jobs_in_flight_per_account`` of them in flight, their
    calls on ``concurrency.parallel_calls_per_account`` threads."""
    concurrency = crawl.config.concurrency
    advisor = AccountAdvisor(calls, crawl.config.advisor, concurrency.jobs_in_flight_per_account, crawl.progress,
                             crawl.stop, parallel_calls=concurrency.parallel_calls_per_account)
    return advisor.run(entities)


def stage(crawl: CrawlContext, result: AccountResult, tables: dict[str, list[dict[str, Any]]]) -> AccountSummary:
    """Stage the account's rows as one unit, beside the summary the run's manifest is made of."""
    account_id = result.account.id
    summary = AccountSummary(account_id, tables["accounts"][0]["outcome"],
                             {name: len(rows) for name, rows in tables.items()},
                             Counter(outcome.outcome for outcome in result.outcomes),
                             result.failure.code if result.failure else None)
    crawl.dataset.stage(account_id, tables, summary.to_dict())
    return summary


def _finished(account: Account, role_arn: str, started: datetime, outcomes: Sequence[EntityOutcome] = (),
              failure: Failure | None = None) -> AccountResult:
    """The account's result, finished now."""
    return AccountResult(account, role_arn, started, datetime.now(timezone.utc), outcomes, failure)


