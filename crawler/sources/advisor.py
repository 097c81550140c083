"""Access-advisor jobs of one account: generate, wait, read every page, drill down.

One :class:`AccountAdvisor` per account runs its entities' jobs on the shared
:class:`~crawler.sources.poller.Poller` (a window of jobs in flight, calls on a few threads, the
first read timed by what earlier jobs took), as the adapter that says how to generate a job
(GenerateServiceLastAccessedDetails), read it, collect every page and the drill-downs, and record
how it ended. Every expected AWS answer becomes data in an :class:`EntityOutcome`, never an
exception: NoSuchEntity on generate = the entity was deleted; FAILED = retried, then failed; still
IN_PROGRESS after the timeout = timed out; a job made before a credential renewal is generated again.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crawler.aws.calls import ANSWER_ERRORS, AccountCalls, marker_pages
from crawler.aws.errors import error_code, error_message
from crawler.config.settings import AdvisorSettings
from crawler.outcomes import Failure
from crawler.progress import Progress
from crawler.sources.inventory import Entity
from crawler.sources.poller import (
    COMPLETED,
    DELETED,
    FAILED,
    SKIPPED,
    TIMED_OUT,
    Ending,
    JobReader,
    PolledJob,
    Poller,
)

READ_OPERATION = "get_service_last_accessed_details"
#: ListPoliciesGrantingServiceAccess takes at most this many namespaces per call.
NAMESPACES_PER_CALL = 200
DRILLDOWN_TYPES = ("GROUP", "POLICY")
POLICY_LOOKUP_TYPES = ("USER", "ROLE", "GROUP")


@dataclass
class EntityOutcome:
    """What access advisor said about one entity, or why it said nothing."""

    entity: Entity
    outcome: str = SKIPPED
    job_id: str | None = None
    job_created_at: datetime | None = None
    collected_at: datetime | None = None
    attempts: int = 0
    services: list[dict[str, Any]] = field(default_factory=list)
    #: ServiceNamespace -> EntityDetailsList items (GetServiceLastAccessedDetailsWithEntities).
    accessors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: PoliciesGrantingServiceAccess items.
    policies: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def fail(self, outcome: str, stage: str, code: str, message: str) -> EntityOutcome:
        """Record the failure that ends this entity's job."""
        self.outcome = outcome
        self.failures.append(Failure(stage, code, message, self.attempts, self.entity.arn))
        return self


class AccountAdvisor:
    """Runs the access-advisor jobs of one account's entities: the :class:`JobKind` of access advisor."""

    noun = "job"
    read_operation = READ_OPERATION
    wait_out: frozenset[str] = frozenset()
    gone = frozenset({"NoSuchEntity"})

    def __init__(self, calls: AccountCalls, settings: AdvisorSettings, window: int,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                 parallel_calls: int = 4) -> None:
        self.calls, self.settings = calls, settings
        self.progress = progress or Progress()
        self.poller = Poller(self, calls, settings, window, self.progress, stop, clock, sleep,
                             parallel_calls=parallel_calls, learn_first_read=True)

    def run(self, entities: Iterable[Entity]) -> list[EntityOutcome]:
        """One outcome per entity, in the order given.

        The :class:`Poller` keeps the account's whole window of jobs busy on ``parallel_calls``
        threads and times the first read of each job by what earlier ones took.
        """
        outcomes = [EntityOutcome(entity) for entity in entities]
        self.poller.run(outcomes)
        return outcomes

    def label(self, outcome: EntityOutcome) -> str:
        return outcome.entity.arn

    def generate(self, outcome: EntityOutcome) -> dict[str, Any]:
        return self.calls("generate_service_last_accessed_details", Arn=outcome.entity.arn,
                          Granularity=self.settings.granularity)

    def record(self, job: PolledJob[EntityOutcome], ending: Ending) -> None:
        outcome = job.subject
        if ending.outcome in (COMPLETED, DELETED, SKIPPED):
            outcome.outcome = ending.outcome
        else:
            outcome.fail(ending.outcome, ending.stage, ending.code, ending.message)
        self.progress.add("entities_done")
        if outcome.outcome in (FAILED, TIMED_OUT):
            self.progress.add("entities_failed")

    def collect(self, job: PolledJob[EntityOutcome], first: dict[str, Any], read: JobReader) -> None:
        """Every page of a completed job, then the drill-downs, all within this session."""
        outcome = job.subject
        pages = marker_pages(read, READ_OPERATION, first, JobId=job.job_id, MaxItems=self.settings.page_size)
        services = [service for page in pages for service in page.get("ServicesLastAccessed", [])]
        outcome.services = services
        outcome.job_created_at = first.get("JobCreationDate")
        outcome.collected_at = first.get("JobCompletionDate")
        if self.settings.entity_details and outcome.entity.type in DRILLDOWN_TYPES:
            try:
                outcome.accessors = self._accessors(job.job_id, services, read)
            except ANSWER_ERRORS as error:
                outcome.failures.append(Failure("entity_details", error_code(error), error_message(error),
                                                outcome.attempts, outcome.entity.arn))
        if self.settings.policies_granting_access and outcome.entity.type in POLICY_LOOKUP_TYPES:
            self._policies(outcome, services)

    # -- drill-downs ----------------------------------------------------------------------
    def _accessors(self, job_id: str, services: list[dict[str, Any]], read: JobReader
                   ) -> dict[str, list[dict[str, Any]]]:
        """Which users and roles used each used service (one paginated call per service)."""
        accessors: dict[str, list[dict[str, Any]]] = {}
        for service in services:
            if service.get("LastAuthenticated") is None:
                continue
            namespace = service["ServiceNamespace"]
            pages = marker_pages(read, "get_service_last_accessed_details_with_entities", JobId=job_id,
                                 ServiceNamespace=namespace, MaxItems=self.settings.page_size)
            accessors[namespace] = [item for page in pages for item in page.get("EntityDetailsList", [])]
        return accessors

    def _policies(self, outcome: EntityOutcome, services: list[dict[str, Any]]) -> None:
        """The policies granting each service; a failure here is recorded, the access data stays."""
        namespaces = [service["ServiceNamespace"] for service in services]
        try:
            for start in range(0, len(namespaces), NAMESPACES_PER_CALL):
                pages = marker_pages(self.calls, "list_policies_granting_service_access", Arn=outcome.entity.arn,
                                     ServiceNamespaces=namespaces[start:start + NAMESPACES_PER_CALL])
                outcome.policies.extend(granting for page in pages
                                        for granting in page.get("PoliciesGrantingServiceAccess", []))
        except ANSWER_ERRORS as error:
            outcome.policies = []
            outcome.failures.append(Failure("policies", error_code(error), error_message(error),
                                            outcome.attempts, outcome.entity.arn))
