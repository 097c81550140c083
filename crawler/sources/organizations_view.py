"""The Organizations view of access advisor (opt-in): which services the accounts below each root,
OU and account used, for reviews of service control policies.

From the management account, one ``GenerateOrganizationsAccessReport`` per target (the root, every
OU, every selected account) and, with ``per_policy``, one more per SCP attached directly to the
target (found with one ListTargetsForPolicy per SCP). The reports run on the same
:class:`~crawler.sources.poller.Poller` as access-advisor jobs (:class:`ReportRunner` is their
adapter): several at once; ``ReportGenerationLimitExceeded`` means "wait for one to finish and ask
again"; like an entity's job, a report outstanding when the credentials were renewed is generated again.

The edge (:func:`list_policies`, :class:`ReportRunner`) calls AWS; the middle (:func:`list_targets`
from the tree discovery walked, :func:`plan_reports`, :func:`organizations_access_tables`) is pure. Every
expected AWS answer becomes data: a failure is an ``errors`` row (stage ``organizations_access``,
``entity_arn`` = the target's entity path), never an exception.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from crawler.aws.calls import (
    ANSWER_ERRORS,
    AccountCalls,
    MalformedAnswer,
    PacedCalls,
    marker_pages,
    organizations_calls,
    token_pages,
)
from crawler.aws.errors import error_code, error_message
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import EnterAccountError, SessionFactory
from crawler.aws.timestamps import utc
from crawler.config.settings import AdvisorSettings, Config
from crawler.outcomes import Failure
from crawler.progress import Progress
from crawler.sources.organizations import (
    PAGE_SIZE,
    Account,
    Discovery,
    OrganizationTree,
    ou_path_names,
)
from crawler.sources.poller import COMPLETED, FAILED, SKIPPED, Ending, JobReader, PolledJob, Poller
from crawler.sources.rows import error_row

log = logging.getLogger(__name__)

STAGE = "organizations_access"
ROOT, ORGANIZATIONAL_UNIT, ACCOUNT = "ROOT", "ORGANIZATIONAL_UNIT", "ACCOUNT"
LIMIT_EXCEEDED = "ReportGenerationLimitExceeded"
SCP_FILTER = "SERVICE_CONTROL_POLICY"
READ_OPERATION = "get_organizations_access_report"


@dataclass(frozen=True)
class Target:
    """A root, OU or account a report is about."""

    type: str
    id: str
    name: str | None
    #: ``o-.../r-.../ou-.../<account id>``: what GenerateOrganizationsAccessReport takes.
    path: str
    #: OU names from the root down to the target (an account: down to its parent).
    ou_path: str | None


@dataclass(frozen=True)
class Policy:
    """A service control policy attached to a target."""

    id: str
    name: str | None


@dataclass
class Report:
    """One report (a target, optionally limited to one SCP) and what became of it."""

    target: Target
    policy: Policy | None = None
    outcome: str = SKIPPED
    job_id: str | None = None
    attempts: int = 0
    #: Every page of the completed report.
    pages: list[dict[str, Any]] = field(default_factory=list)
    failure: Failure | None = None

    def fail(self, code: str, message: str) -> None:
        """Record why the report gives no data."""
        self.outcome = FAILED
        self.failure = Failure(STAGE, code, message, max(self.attempts, 1), self.target.path)


# -- the entry point ------------------------------------------------------------------------------
def crawl_organizations_access(config: Config, factory: SessionFactory, discovery: Discovery,
                               accounts: Sequence[Account], run_id: str, progress: Progress,
                               stop: threading.Event, organizations: PacedCalls | None = None
                               ) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``organizations_access`` and ``errors`` for the root, every OU and every account of
    ``accounts``, read from the management account (``discovery.management_account_id``); the SCPs
    are listed through ``organizations`` (the crawl's paced edge to Organizations; by default one of its own).

    Never raises for an answer of AWS: what could not be read becomes an ``errors`` row.
    """
    failures: list[Failure] = []
    reports: list[Report] = []
    organization_id, management_id = discovery.organization_id, discovery.management_account_id
    if not organization_id or not management_id:
        failures.append(Failure(STAGE, "NoOrganization", "the Organizations view needs the organization and its "
                                "management account (organization.source: organizations)"))
        return organizations_access_tables(run_id, organization_id, management_id, reports, failures)
    targets = list_targets(discovery.tree, organization_id, accounts, failures)
    policies = list_policies(organizations or organizations_calls(factory, progress, stop), targets, failures) \
        if config.organizations_access.per_policy else {}
    reports = plan_reports(targets, policies)
    if reports and not stop.is_set():
        run_reports(config, factory, management_id, reports, progress, stop, failures)
    log.info("organizations view: %d reports, %d completed, %d failures", len(reports),
             sum(1 for report in reports if report.outcome == COMPLETED), len(failures)
             + sum(1 for report in reports if report.failure))
    return organizations_access_tables(run_id, organization_id, management_id, reports, failures)


def run_reports(config: Config, factory: SessionFactory, management_id: str, reports: Sequence[Report],
                progress: Progress, stop: threading.Event, failures: list[Failure]) -> None:
    """Enter the management account and run every report there (one rate limiter of its own)."""
    try:
        session = factory.enter_account(management_id)
    except EnterAccountError as error:
        log.warning("cannot enter the management account: %s: %s", error.code, error.message,
                    extra={"account_id": management_id})
        failures.append(Failure(STAGE, error.code, f"cannot enter the management account: {error.message}"))
        return
    limiter = RateLimiter(config.concurrency.requests_per_second_per_account)
    calls = AccountCalls(session, "iam", limiter, progress, config.concurrency.throttle_patience_seconds, stop)
    ReportRunner(calls, config.advisor, config.organizations_access.reports_in_flight, stop).run(reports)


# -- policies: get ---------------------------------------------------------------------------------
def list_policies(call: Callable[..., dict[str, Any]], targets: Sequence[Target],
                  failures: list[Failure]) -> dict[str, list[Policy]]:
    """The SCPs attached directly to each target, by target path, through ``call`` (Organizations).

    The organization's SCPs (ListPolicies), then the targets of each (ListTargetsForPolicy): a
    few calls per SCP, where asking each target would cost one per account (Organizations allows
    only a few calls a second).
    """
    try:
        scps = [Policy(item["Id"], item.get("Name")) for page in _pages(call, "list_policies", Filter=SCP_FILTER)
                for item in page.get("Policies") or []]
    except (*ANSWER_ERRORS, KeyError, TypeError, AttributeError) as error:
        log.warning("organizations view: cannot list the SCPs: %s", error_code(error))
        failures.append(Failure(STAGE, error_code(error), error_message(error)))
        return {}
    paths = {target.id: target.path for target in targets}
    policies: dict[str, list[Policy]] = {}
    for policy in sorted(scps, key=lambda policy: policy.id):
        try:
            attached = [item["TargetId"] for page in _pages(call, "list_targets_for_policy", PolicyId=policy.id)
                        for item in page.get("Targets") or []]
        except (*ANSWER_ERRORS, KeyError, TypeError, AttributeError) as error:
            log.warning("organizations view: cannot list the targets of SCP %s: %s", policy.id, error_code(error))
            failures.append(Failure(STAGE, error_code(error), error_message(error), entity_arn=policy.id))
            continue
        for target_id in attached:
            if target_id in paths:
                policies.setdefault(paths[target_id], []).append(policy)
    return policies


def _pages(call: Callable[..., dict[str, Any]], operation: str, **arguments: Any) -> Iterator[dict[str, Any]]:
    return token_pages(call, operation, **arguments, MaxResults=PAGE_SIZE)


# -- targets and policies: transform (pure) ---------------------------------------------------------
def list_targets(tree: OrganizationTree, organization_id: str, accounts: Sequence[Account],
                 failures: list[Failure]) -> list[Target]:
    """The root and every OU of the tree discovery walked, then ``accounts``; an account that
    cannot be placed in the tree is recorded in ``failures``."""
    without_path = [account for account in accounts if not account.ou_path_ids]
    failures.extend(Failure(STAGE, "NoEntityPath", f"account {account.id} has no OU path: no report for it",
                            entity_arn=account.id) for account in without_path)
    return [*unit_targets(tree, organization_id), *account_targets(accounts, organization_id)]


def unit_targets(tree: OrganizationTree, organization_id: str) -> list[Target]:
    """The root and every OU of a walked tree, top-down."""
    return [Target(ROOT if len(chain) == 1 else ORGANIZATIONAL_UNIT, chain[-1], tree.names.get(chain[-1]),
                   "/".join((organization_id, *chain)), ou_path_names(chain, tree.names))
            for chain in tree.unit_chains]


def account_targets(accounts: Sequence[Account], organization_id: str) -> list[Target]:
    """The accounts that have an OU path (the others cannot be named in a report)."""
    return [Target(ACCOUNT, account.id, account.name, f"{organization_id}/{account.ou_path_ids}/{account.id}",
                   account.ou_path)
            for account in accounts if account.ou_path_ids]


def plan_reports(targets: Sequence[Target], policies: dict[str, list[Policy]]) -> list[Report]:
    """One report per target, then one per target and SCP attached to it."""
    reports = [Report(target) for target in targets]
    reports += [Report(target, policy) for target in targets for policy in policies.get(target.path, ())]
    return reports


# -- the reports: get -------------------------------------------------------------------------------
class ReportRunner:
    """Runs reports in one account session on the shared :class:`Poller`: ``window`` at once, each
    read when it is due, ReportGenerationLimitExceeded waited out; the :class:`JobKind` of reports."""

    noun = "report"
    read_operation = READ_OPERATION
    wait_out = frozenset({LIMIT_EXCEEDED})
    gone: frozenset[str] = frozenset()

    def __init__(self, calls: AccountCalls, settings: AdvisorSettings, window: int, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.calls, self.settings = calls, settings
        self.poller = Poller(self, calls, settings, window, stop=stop, clock=clock)

    def run(self, reports: Sequence[Report]) -> None:
        """Run every report to an outcome (those left when the crawl stops stay ``skipped``)."""
        self.poller.run(reports)

    def label(self, report: Report) -> str:
        return f"organizations view: {report.target.path}" + (f" (SCP {report.policy.id})" if report.policy else "")

    def generate(self, report: Report) -> dict[str, Any]:
        arguments = {"EntityPath": report.target.path}
        if report.policy is not None:
            arguments["OrganizationsPolicyId"] = report.policy.id
        return self.calls("generate_organizations_access_report", **arguments)

    def collect(self, job: PolledJob[Report], first: dict[str, Any], read: JobReader) -> None:
        """Every page of a completed report."""
        if first.get("JobCompletionDate") is None:
            raise MalformedAnswer(f"report {job.job_id} is COMPLETED without a JobCompletionDate")
        job.subject.pages = list(marker_pages(read, READ_OPERATION, first, JobId=job.job_id,
                                              MaxItems=self.settings.page_size))

    def record(self, job: PolledJob[Report], ending: Ending) -> None:
        if ending.outcome in (COMPLETED, SKIPPED):
            job.subject.outcome = ending.outcome
        else:
            job.subject.fail(ending.code, ending.message)


# -- rows (pure) ------------------------------------------------------------------------------------
def organizations_access_tables(run_id: str, organization_id: str | None, management_id: str | None,
                                reports: Sequence[Report], failures: Sequence[Failure]
                                ) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``organizations_access`` (completed reports) and ``errors`` (everything else)."""
    rows = [row for report in reports if report.outcome == COMPLETED
            for row in report_rows(run_id, organization_id or "", report)]
    recorded = [*failures, *(report.failure for report in reports if report.failure is not None)]
    errors = [error_row(run_id, organization_id, management_id, failure) for failure in recorded]
    return {"organizations_access": rows, "errors": errors}


def report_rows(run_id: str, organization_id: str, report: Report) -> Iterator[dict[str, Any]]:
    """One row per service of a completed report."""
    first, target, policy = report.pages[0], report.target, report.policy
    keys = {"run_id": run_id, "collected_at": utc(first.get("JobCompletionDate")),
            "organization_id": organization_id, "target_type": target.type, "target_id": target.id,
            "target_name": target.name, "target_path": target.path, "target_ou_path": target.ou_path,
            "policy_id": policy.id if policy else None, "policy_name": policy.name if policy else None}
    for page in report.pages:
        for detail in page.get("AccessDetails") or []:
            entity_path = detail.get("EntityPath")
            yield {**keys, "service_namespace": detail["ServiceNamespace"], "service_name": detail.get("ServiceName"),
                   "last_authenticated_at": utc(detail.get("LastAuthenticatedTime")), "region": detail.get("Region"),
                   "last_authenticated_entity_path": entity_path,
                   "last_authenticated_account_id": account_of_path(entity_path),
                   "total_authenticated_entities": detail.get("TotalAuthenticatedEntities"),
                   "job_id": report.job_id, "job_created_at": utc(first.get("JobCreationDate"))}


def account_of_path(entity_path: str | None) -> str | None:
    """The account id that ends an entity path (``o-.../r-.../ou-.../123456789012``), else None."""
    last = (entity_path or "").rstrip("/").rsplit("/", 1)[-1]
    return last if len(last) == 12 and last.isdigit() else None
