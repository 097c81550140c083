"""Access-advisor jobs of one account: generate, wait, read every page, drill down.

One :class:`AccountAdvisor` per account keeps a window of jobs in flight: it generates jobs
for later entities while earlier ones run, and reads the job whose next check is nearest.
Every expected AWS answer becomes data in an :class:`EntityOutcome`, never an exception:
NoSuchEntity on generate = the entity was deleted; FAILED = retried, then failed; still
IN_PROGRESS after the timeout = timed out. A JobId is bound to the role session that made
it, so a job made before a credential renewal is generated again, not read (and so is one whose
read failed, whatever the error, once the credentials were renewed since it was made).
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crawler.aws.calls import ANSWER_ERRORS, AccountCalls, MalformedAnswer, SessionLost, marker_pages, read_job
from crawler.aws.errors import AWS_ERRORS, error_code, error_message
from crawler.config.settings import AdvisorSettings
from crawler.outcomes import Failure, JobOutcome
from crawler.progress import Progress
from crawler.sources.inventory import Entity

log = logging.getLogger(__name__)

COMPLETED, FAILED, TIMED_OUT, DELETED, SKIPPED = (JobOutcome.COMPLETED, JobOutcome.FAILED, JobOutcome.TIMED_OUT,
                                                  JobOutcome.DELETED, JobOutcome.SKIPPED)
#: ListPoliciesGrantingServiceAccess takes at most this many namespaces per call.
NAMESPACES_PER_CALL = 200
#: A job lost to another session (NoSuchEntity on read, or any error once the credentials were
#: renewed since it was made) is generated again at most this often.
MAX_LOST_JOBS = 3
#: How the wait before a job's first read moves after that read found it done, or running.
FIRST_READ_SHRINK = 0.98
FIRST_READ_GROW = 1.5
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


@dataclass
class _Job:
    outcome: EntityOutcome
    job_id: str = ""
    generation: int = 0
    started: float = 0.0
    next_check: float = 0.0
    delay: float = 0.0
    failed_runs: int = 0
    lost: int = 0
    order: int = 0
    #: Reads of this job's status so far (in this generation of it).
    reads: int = 0

    def __lt__(self, other: _Job) -> bool:
        return (self.next_check, self.order) < (other.next_check, other.order)


class AccountAdvisor:
    """Runs the access-advisor jobs of one account's entities."""

    def __init__(self, calls: AccountCalls, settings: AdvisorSettings, window: int,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                 parallel_calls: int = 4) -> None:
        self.calls, self.settings, self.window = calls, settings, max(window, 1)
        self.parallel_calls = max(parallel_calls, 1)
        self.progress = progress or Progress()
        self.stop = stop or threading.Event()
        # Waiting for a job ends early when the crawl is stopped.
        self.clock, self.sleep = clock, sleep or self.stop.wait
        self._order = itertools.count()
        self._first_wait = settings.poll_interval_seconds
        self._lock = threading.Lock()
        self._jobs_open = 0

    def run(self, entities: Iterable[Entity]) -> list[EntityOutcome]:
        """One outcome per entity, in the order given.

        One loop keeps the account's whole window of jobs busy and hands each call (generate a
        job, read a job that is due) to one of ``parallel_calls`` threads, so the latency of
        one call does not hold up the others; the account's rate limiter paces them all.
        """
        waiting = deque(EntityOutcome(entity) for entity in entities)
        outcomes = list(waiting)
        active: list[_Job] = []
        with ThreadPoolExecutor(self.parallel_calls, thread_name_prefix=f"calls-{self.calls.account_id}") as pool:
            running: set[Future[None]] = set()
            while not self.stop.is_set():
                with self._lock:
                    running |= self._dispatch(pool, waiting, active, len(running))
                    if not (waiting or active or running):
                        break
                    if not (active or running):  # jobs open that nobody will finish: never spin on it
                        raise RuntimeError(f"{self._jobs_open} jobs open, none running or scheduled")
                    # With every thread busy, only a finished call can change anything.
                    free = len(running) < self.parallel_calls
                    due = active[0].next_check - self.clock() if active and free else None
                running = self._wait(running, due)
            for finished in wait(running).done:
                finished.result()
        for job in active:
            self._finish(job, running=True)
        return outcomes

    def _dispatch(self, pool: ThreadPoolExecutor, waiting: deque[EntityOutcome], active: list[_Job],
                  busy: int) -> set[Future[None]]:
        """New jobs while the window has room, then reads of jobs that are due, as threads are free."""
        submitted: set[Future[None]] = set()
        while waiting and self._jobs_open < self.window and busy + len(submitted) < self.parallel_calls:
            self._jobs_open += 1
            submitted.add(pool.submit(self._start, _Job(waiting.popleft()), active))
        now = self.clock()
        while active and active[0].next_check <= now and busy + len(submitted) < self.parallel_calls:
            submitted.add(pool.submit(self._check, heapq.heappop(active), active))
        return submitted

    def _wait(self, running: set[Future[None]], due: float | None) -> set[Future[None]]:
        """Until a call finishes or the next job is due; a bug in a call is raised here."""
        timeout = None if due is None else max(due, 0.0)
        if not running:
            self.sleep(timeout if timeout is not None else 0.0)
            return running
        done, pending = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        for finished in done:
            finished.result()
        return set(pending)

    def _schedule(self, job: _Job, active: list[_Job]) -> None:
        with self._lock:
            heapq.heappush(active, job)

    # -- generating ---------------------------------------------------------------------
    def _start(self, job: _Job, active: list[_Job]) -> None:
        """Generate the entity's job and schedule its first read (or record why not)."""
        outcome = job.outcome
        outcome.attempts += 1
        generation = self.calls.generation
        try:
            answer = self.calls("generate_service_last_accessed_details", Arn=outcome.entity.arn,
                                Granularity=self.settings.granularity)
        except AWS_ERRORS as error:
            if error_code(error) == "NoSuchEntity":
                outcome.outcome = DELETED
                log.info("%s was deleted during the crawl", outcome.entity.arn,
                         extra={"account_id": self.calls.account_id})
            else:
                outcome.fail(FAILED, "generate_job", error_code(error), error_message(error))
            self._done(outcome)
            return
        job.job_id, job.generation, job.started, job.reads = answer["JobId"], generation, self.clock(), 0
        job.delay = self._first_delay()
        job.next_check, job.order = job.started + job.delay, next(self._order)
        outcome.job_id = job.job_id
        self.progress.add("jobs_in_flight")
        self._schedule(job, active)

    def _first_delay(self) -> float:
        """When to read a new job first: the account's current estimate (see :meth:`_learn`)."""
        with self._lock:
            return self._first_wait

    def _learn(self, waited: float, done: bool) -> None:
        """Tune the first read from what a job's first read found after ``waited`` seconds.

        Jobs of one account take similar times, but a read that finds a job done says only that
        it took less than the wait (the wait for the read itself is not the job's time), so the
        wait is probed: a little shorter after each job found done, much longer after one found
        running. In balance about one job in twenty is read once too early (ln 1.5 against
        ln 1/0.98). Only a read made at the current estimate (or, when running, beyond it)
        teaches something: the rest of a batch started with an older estimate does not move it.
        """
        with self._lock:
            current = self._first_wait
            if done and waited <= current:
                current *= FIRST_READ_SHRINK
            elif not done and waited >= current:
                current = waited * FIRST_READ_GROW
            self._first_wait = min(max(current, self.settings.poll_interval_seconds / 4),
                                   self.settings.max_poll_interval_seconds)

    def _retry(self, job: _Job, active: list[_Job]) -> None:
        self.progress.add("jobs_in_flight", -1)
        self._start(job, active)

    # -- reading ------------------------------------------------------------------------
    def _check(self, job: _Job, active: list[_Job]) -> None:
        """Read a job that is due: done, failed, or rescheduled."""
        if self.stop.is_set():
            self._schedule(job, active)  # abandoned: recorded as skipped when the loop ends
            return
        if job.generation != self.calls.generation:
            self._retry(job, active)  # credentials were renewed: this JobId is unreadable now
            return
        try:
            first = self._read("get_service_last_accessed_details", job, JobId=job.job_id,
                               MaxItems=self.settings.page_size)
            status = first.get("JobStatus")
            job.reads += 1
            if job.reads == 1 and status in ("COMPLETED", "IN_PROGRESS"):
                self._learn(job.delay, done=status == "COMPLETED")
            if status == "COMPLETED":
                self._collect(job, first)
            elif status == "FAILED":
                self._failed_run(job, first, active)
            elif status == "IN_PROGRESS":
                self._still_running(job, active)
            else:
                raise MalformedAnswer(f"job {job.job_id} has no valid JobStatus ({status!r})")
        except SessionLost as lost:
            job.lost += 1
            if job.lost > MAX_LOST_JOBS:
                self._finish(job, code=lost.code, message=lost.message)
            else:
                self._retry(job, active)
        except ANSWER_ERRORS as error:
            self._finish(job, code=error_code(error), message=error_message(error))

    def _read(self, operation: str, job: _Job, **arguments: Any) -> dict[str, Any]:
        """Read a job (SessionLost: it was made by another session, see :func:`read_job`)."""
        return read_job(self.calls, job.generation, operation, **arguments)

    def _still_running(self, job: _Job, active: list[_Job]) -> None:
        now = self.clock()
        if now - job.started >= self.settings.job_timeout_seconds:
            self._finish(job, outcome=TIMED_OUT, code="JobTimedOut",
                         message=f"job {job.job_id} still IN_PROGRESS after {self.settings.job_timeout_seconds:g} s")
            return
        job.delay = min(max(job.delay * 1.5, self.settings.poll_interval_seconds / 4),
                        self.settings.max_poll_interval_seconds)
        job.next_check = min(now + job.delay, job.started + self.settings.job_timeout_seconds)
        self._schedule(job, active)

    def _failed_run(self, job: _Job, answer: dict[str, Any], active: list[_Job]) -> None:
        job.failed_runs += 1
        error = answer.get("Error") or {}
        if job.failed_runs > self.settings.job_retries:
            self._finish(job, code=str(error.get("Code") or "JobFailed"),
                         message=str(error.get("Message") or f"job {job.job_id} FAILED"))
            return
        log.info("job of %s FAILED (%s), generating it again", job.outcome.entity.arn, error.get("Code"),
                 extra={"account_id": self.calls.account_id})
        self._retry(job, active)

    def _collect(self, job: _Job, first: dict[str, Any]) -> None:
        """Every page of a completed job, then the drill-downs, all within this session."""
        outcome = job.outcome
        pages = marker_pages(functools.partial(self._read, job=job), "get_service_last_accessed_details", first,
                             JobId=job.job_id, MaxItems=self.settings.page_size)
        services = [service for page in pages for service in page.get("ServicesLastAccessed", [])]
        outcome.services = services
        outcome.job_created_at = first.get("JobCreationDate")
        outcome.collected_at = first.get("JobCompletionDate")
        if self.settings.entity_details and outcome.entity.type in DRILLDOWN_TYPES:
            try:
                outcome.accessors = self._accessors(job, services)
            except ANSWER_ERRORS as error:
                outcome.failures.append(Failure("entity_details", error_code(error), error_message(error),
                                                outcome.attempts, outcome.entity.arn))
        if self.settings.policies_granting_access and outcome.entity.type in POLICY_LOOKUP_TYPES:
            self._policies(outcome, services)
        outcome.outcome = COMPLETED
        self._done(outcome, job)

    # -- drill-downs ----------------------------------------------------------------------
    def _accessors(self, job: _Job, services: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Which users and roles used each used service (one paginated call per service)."""
        accessors: dict[str, list[dict[str, Any]]] = {}
        for service in services:
            if service.get("LastAuthenticated") is None:
                continue
            namespace = service["ServiceNamespace"]
            pages = marker_pages(functools.partial(self._read, job=job),
                                 "get_service_last_accessed_details_with_entities", JobId=job.job_id,
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

    # -- endings ----------------------------------------------------------------------------
    def _finish(self, job: _Job, outcome: str = FAILED, code: str = "", message: str = "",
                running: bool = False) -> None:
        """End a job that did not complete (or was abandoned when the crawl stopped)."""
        if running:
            job.outcome.outcome = SKIPPED
        else:
            job.outcome.fail(outcome, "read_job", code, message)
        self._done(job.outcome, job)

    def _done(self, outcome: EntityOutcome, job: _Job | None = None) -> None:
        with self._lock:
            self._jobs_open -= 1
        if job is not None:
            self.progress.add("jobs_in_flight", -1)
        self.progress.add("entities_done")
        if outcome.outcome in (FAILED, TIMED_OUT):
            self.progress.add("entities_failed")
            log.warning("%s: %s (%s)", outcome.entity.arn, outcome.outcome,
                        outcome.failures[-1].code if outcome.failures else "-",
                        extra={"account_id": self.calls.account_id})
