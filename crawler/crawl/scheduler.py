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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any

from crawler import __version__
from crawler.aws.calls import ANSWER_ERRORS, AccountCalls, PacedCalls, organizations_calls
from crawler.aws.errors import error_code, error_message
from crawler.aws.ratelimit import RateBook, RateLimiter
from crawler.aws.s3 import ConditionalObjects
from crawler.aws.sessions import EnterAccountError, SessionFactory
from crawler.config.loader import config_digest
from crawler.config.settings import Config, OutputSettings
from crawler.crawl.runs import AccountSummary, RunPlan, lease_run
from crawler.crawl.shards import (
    DONE,
    PUBLISH_CLAIM,
    Shard,
    check_agreement,
    expected_accounts,
    missing_shards,
    shard_count,
)
from crawler.errors import Interrupted, UsageError
from crawler.outcomes import AccountOutcome, Failure, JobOutcome, RunStatus
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
    ClaimUnsupported,
    Dataset,
    DatasetError,
    check_writable,
    lease_store,
    sharded_runs,
)
from crawler.store.lease import Lease, acquire_lease

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
    #: The shard this process crawled, when the run is sharded.
    shard: Shard | None = None
    #: False for a shard that staged its accounts and left the publish to the last shard.
    published: bool = True
    #: The shards that were not done when this one finished (it did not publish).
    waiting_for: tuple[int, ...] = ()

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table in the published snapshot."""
        return {name: table["rows"] for name, table in self.manifest.get("tables", {}).items()}

    @property
    def complete(self) -> bool:
        """True when nothing was missing: every account entered, every entity's job completed."""
        return self.manifest.get("errors", 0) == 0


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
    factory = _session_factory(config) if config.output.path.startswith("s3://") else None
    plan, lease = lease_run(config, resume, run_id, shard, wait, stop, objects_for(config.output.path, factory))
    lease.start_heartbeat(on_lost=stop.set)
    try:
        return crawl_under_lease(config, factory, plan, lease, progress, stop, shard, allow_empty)
    finally:
        lease.release()


def _session_factory(config: Config) -> SessionFactory:
    return SessionFactory(config.aws, config.assume_role, config.concurrency)


def objects_for(root: str, factory: SessionFactory | None = None) -> ConditionalObjects | None:
    """The conditional S3 writes an output on S3 needs (claims, leases), from ``factory`` (or the standard
    chain's); None for any other output."""
    if not root.startswith("s3://"):
        return None
    return (factory or SessionFactory.default()).s3_objects()


def crawl_under_lease(config: Config, factory: SessionFactory | None, plan: RunPlan, lease: Lease,
                      progress: Progress, stop: threading.Event, shard: Shard | None,
                      allow_empty: bool = False) -> RunSummary:
    """The run planned under ``lease``: discover, crawl, stage, publish."""
    dataset = open_dataset(config, plan, shard, objects_for(config.output.path, factory))
    factory = factory or _session_factory(config)
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
    document = {**header, **_manifest(config.advisor.granularity, discovery.organization_id, summaries,
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
    """The run's dataset, checked writable; for a shard, checked to be open to it.

    UsageError when a shard's run is being published, or its other shards split it another way
    (found before hours of crawling, not after).
    """
    dataset = Dataset(config.output.path, plan.snapshot_date, plan.run_id, config.output, objects)
    dataset.check_writable()
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


@dataclass(frozen=True)
class RunJournal:
    """Where a run records its state before it publishes: the run manifest, or the shard's record."""

    dataset: Dataset
    shard: Shard | None

    def write(self, document: dict[str, Any]) -> None:
        """Record ``document`` (status and what is known so far); a shard's record also carries how the
        dataset's files are written, which ``consolidate`` needs."""
        if self.shard is None:
            self.dataset.write_run_manifest(document)
            return
        output = self.dataset.settings
        self.dataset.record_shard(self.shard.name, {
            **document, "shard": {"index": self.shard.index, "count": self.shard.count},
            "output": {"compression": output.compression, "compression_level": output.compression_level,
                       "max_rows_per_file": output.max_rows_per_file, "row_group_rows": output.row_group_rows}})


def finish_shard(dataset: Dataset, shard: Shard, document: dict[str, Any], summaries: list[AccountSummary],
                 organization_id: str | None, lease: Lease | None = None) -> RunSummary:
    """Record the shard done; publish the run if every shard is done and no other shard claimed it first."""
    RunJournal(dataset, shard).write({
        **document, "status": DONE, "account_ids": [summary.account_id for summary in summaries]})
    records = dataset.shard_records()
    check_agreement(records, shard, str(document["config_digest"]))
    waiting = missing_shards(records, shard.count)
    summary = RunSummary(dataset.run_id, dataset.snapshot_date, dataset.root, organization_id, document, summaries,
                         bool(document.get("resumed")), shard=shard, published=False,
                         waiting_for=tuple(waiting))
    if waiting:
        log.info("shard %s done; waiting for shards %s: the last to finish publishes", shard,
                 ", ".join(map(str, waiting)))
        return summary
    try:
        claimed = dataset.claim(PUBLISH_CLAIM, {"shard": shard.index, "claimed_at": datetime.now(timezone.utc)})
    except ClaimUnsupported as error:  # shards cannot agree here on who publishes: a person does
        log.warning("every shard of run %s is done, but %s: publish it with access-crawler consolidate %s "
                    "--snapshot %s --run-id %s", dataset.run_id, error, dataset.root, dataset.snapshot_date,
                    dataset.run_id)
        return summary
    if not claimed:
        log.info("shard %s done; another shard is publishing run %s", shard, dataset.run_id)
        return summary
    if lease is not None:
        lease.confirm()
    manifest = publish_shards(dataset, records)
    log.info("run %s published by shard %s", dataset.run_id, shard)
    return replace(summary, manifest=manifest, published=True)


def publish_shards(dataset: Dataset, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a sharded run from what its done shards recorded and staged: one snapshot of the whole run.

    DatasetError when an account a shard selected is not staged.
    """
    expected = expected_accounts(records)
    staged = {unit: document for unit, document in dataset.staged_summaries().items() if unit != RUN_UNIT}
    missing = expected - set(staged)
    if missing:
        raise DatasetError(f"run {dataset.run_id}: accounts {', '.join(sorted(missing))} were selected by a shard "
                           "but are not staged")
    for unit in sorted(set(staged) - expected):  # staged by an attempt of a shard that no longer selects it
        log.warning("account staged but selected by no shard: not published", extra={"account_id": unit})
        dataset.discard(unit)
    summaries = [AccountSummary.from_dict(staged[unit]) for unit in sorted(expected)]
    first = min(records, key=lambda record: str(record.get("started_at")))
    header = {key: first.get(key) for key in ("tool", "version", "config_digest", "config_source", "started_at",
                                               "partition")}
    header["caller_arn"] = sorted({str(record.get("caller_arn")) for record in records})
    document = {**header, **_manifest(str(first.get("granularity")), first.get("organization_id"), summaries,
                              dataset.staged_rows(RUN_UNIT)),
                "resumed": any(record.get("resumed") for record in records),
                "shards": [{key: record.get(key) for key in ("shard", "caller_arn", "started_at", "finished_at")}
                           | {"accounts": len(record.get("account_ids") or ())} for record in records]}
    return dataset.publish(document, staged_by(summaries, dataset, dataset.is_staged(RUN_UNIT)))


def staged_by(summaries: list[AccountSummary], dataset: Dataset, with_run_unit: bool) -> dict[str, dict[str, int]]:
    """What a run staged, unit by unit (its accounts' summaries, and the run's own unit when it has one)."""
    staged = {summary.account_id: dict(summary.rows) for summary in summaries}
    if with_run_unit:
        staged[RUN_UNIT] = dataset.staged_rows(RUN_UNIT)
    return staged


def consolidate(root: str, snapshot_date: date, run_id: str | None = None) -> dict[str, Any]:
    """Publish the sharded run of ``snapshot_date`` under ``root`` whose shards are all done.

    For a run whose last shard could not publish (it died after recording itself done). UsageError
    when there is no such run, several (name one with ``run_id``), or shards are not done yet.
    """
    run_id = run_id or _only_sharded_run(root, snapshot_date)
    objects = objects_for(root)
    probe = Dataset(root, snapshot_date, run_id, OutputSettings(path=root), objects)
    records = probe.shard_records()
    if not records:
        raise UsageError(f"run {run_id} of snapshot {snapshot_date} under {root} has no shard records")
    waiting = missing_shards(records, shard_count(records))
    if waiting:
        raise UsageError(f"run {run_id}: shards {', '.join(map(str, waiting))} of {shard_count(records)} are not "
                         "done; run them (with the same --run-id) first")
    lease = acquire_lease(lease_store(root, snapshot_date, objects), snapshot_date)
    try:
        with contextlib.suppress(ClaimUnsupported):  # consolidating is a person's decision: no claim needed
            if not probe.claim(PUBLISH_CLAIM, {"consolidate": True, "claimed_at": datetime.now(timezone.utc)}):
                log.warning("run %s: a shard claimed its publish but did not finish it; publishing it now", run_id)
        output = {key: value for key, value in (records[0].get("output") or {}).items() if value is not None}
        dataset = Dataset(root, snapshot_date, run_id, OutputSettings(path=root, **output), objects)
        return publish_shards(dataset, records)
    finally:
        lease.release()


def _only_sharded_run(root: str, snapshot_date: date) -> str:
    runs = sharded_runs(root, snapshot_date)
    if len(runs) != 1:
        raise UsageError(f"{len(runs)} sharded runs of snapshot {snapshot_date} under {root} are waiting to be "
                         "published" + (f" ({', '.join(runs)}): name one with --run-id" if runs else ""))
    return runs[0]


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


def _manifest(granularity: str, organization_id: str | None, summaries: list[AccountSummary],
              run_rows: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The manifest's account of the crawl: outcomes per account and entity, recorded errors."""
    outcomes = Counter(summary.outcome for summary in summaries)
    staged_rows: Counter[str] = Counter(run_rows)
    for summary in summaries:
        staged_rows.update(summary.rows)
    entities: Counter[str] = Counter()
    for summary in summaries:
        entities.update(summary.entities)
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(), "organization_id": organization_id,
        "granularity": granularity,
        "accounts": {"selected": len(summaries),
                     **{outcome: outcomes.get(outcome, 0) for outcome in (AccountOutcome.OK, AccountOutcome.FAILED,
                                                                         AccountOutcome.SKIPPED, INTERRUPTED)},
                     "failed_ids": [summary.account_id for summary in summaries
                                    if summary.outcome != AccountOutcome.OK]},
        "entities": dict(sorted(entities.items())),
        "entities_missing": sum(entities.get(outcome, 0) for outcome in JobOutcome.WITHOUT_DATA),
        "errors": (run_rows or {}).get("errors", 0) + sum(summary.rows.get("errors", 0) for summary in summaries),
        "staged_rows": dict(sorted(staged_rows.items())),
    }
