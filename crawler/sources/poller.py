"""One poller for AWS's asynchronous jobs: generate a job, read it when due, record what became of it.

Access-advisor jobs (:mod:`crawler.sources.advisor`) and Organizations access reports
(:mod:`crawler.sources.organizations_view`) run the same way, here, once; what differs between two
kinds of job is a small :class:`JobKind` adapter: how to generate one, which operation reads it,
how to collect the rest of a completed job (every page, drill-downs) and how to record an ending.

The :class:`Poller` keeps a window of jobs in flight and hands each call (generate a job, read
a job that is due) to one of ``parallel_calls`` threads; the account's rate limiter paces them all.
A job still IN_PROGRESS is read again later (each wait 1.5 times the last, within the poll
intervals); FAILED is generated again up to ``job_retries`` times, then recorded; still running
after ``job_timeout_seconds``, it is recorded as timed out. A JobId can be read only by the role
session that made it: a job made before a credential renewal (known before its read, or learnt
from it, see :func:`crawler.aws.calls.read_job`) is generated again, at most :data:`MAX_LOST_JOBS`
times. Every expected AWS answer becomes an :class:`Ending` for the adapter to record, never an
exception.

Options where the kinds differ: ``learn_first_read`` (the poller probes how long jobs take and
times the first read of each by it, see :meth:`Poller._learn`), ``JobKind.wait_out`` (generate
errors that mean "not now", such as ReportGenerationLimitExceeded, asked again until the job
timeout) and ``JobKind.gone`` (generate errors that mean the subject no longer exists).
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
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from crawler.aws.calls import ANSWER_ERRORS, AccountCalls, MalformedAnswer, SessionLost, read_job
from crawler.aws.errors import error_code, error_message
from crawler.config.settings import AdvisorSettings
from crawler.outcomes import JobOutcome
from crawler.progress import Progress

log = logging.getLogger(__name__)

COMPLETED, FAILED, TIMED_OUT, DELETED, SKIPPED = (JobOutcome.COMPLETED, JobOutcome.FAILED, JobOutcome.TIMED_OUT,
                                                  JobOutcome.DELETED, JobOutcome.SKIPPED)
#: Where an ending happened: generating the job, or reading it.
GENERATE, READ = "generate_job", "read_job"
#: A job lost to another session (made before a credential renewal, or NoSuchEntity on read) is
#: generated again at most this often.
MAX_LOST_JOBS = 3
#: How the wait before a job's first read moves after that read found it done, or running.
FIRST_READ_SHRINK = 0.98
FIRST_READ_GROW = 1.5
#: How each later read of a running job waits longer than the one before.
POLL_GROWTH = 1.5


class Subject(Protocol):
    """What a job is about (an entity's outcome, a report): it keeps its JobId and its attempts."""

    job_id: str | None
    attempts: int


S = TypeVar("S", bound=Subject)


@dataclass(frozen=True)
class Ending:
    """How a job ended: ``outcome`` (a :class:`JobOutcome`), and for a failure where and why."""

    outcome: str
    stage: str = ""
    code: str = ""
    message: str = ""


@dataclass
class PolledJob(Generic[S]):
    """A subject's job, as the poller follows it."""

    subject: S
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
    #: Holds a JobId that counts in the progress' ``jobs_in_flight``.
    in_flight: bool = False
    #: Since when generating it is refused for now (a ``wait_out`` error); None while it is not.
    limited_since: float | None = None

    def __lt__(self, other: PolledJob[S]) -> bool:
        return (self.next_check, self.order) < (other.next_check, other.order)


#: Reads a page of one job: ``read(operation, **arguments)``; SessionLost once it cannot be read.
JobReader = Callable[..., dict[str, Any]]


class JobKind(Protocol[S]):
    """An adapter: what the poller needs to know about one kind of asynchronous AWS job."""

    #: What a job is called in messages ("job", "report").
    noun: str
    #: The operation that reads a job (its status and first page), called with JobId and MaxItems.
    read_operation: str
    #: Generate errors that mean "not now": asked again (up to the job timeout), then recorded.
    wait_out: frozenset[str]
    #: Generate errors that mean the subject no longer exists: recorded as deleted.
    gone: frozenset[str]

    def generate(self, subject: S) -> dict[str, Any]:
        """Generate the subject's job; the answer holds its ``JobId``."""

    def collect(self, job: PolledJob[S], first: dict[str, Any], read: JobReader) -> None:
        """Keep a completed job's data: ``first`` page, the others and any drill-downs through ``read``."""

    def record(self, job: PolledJob[S], ending: Ending) -> None:
        """Record how the job ended (COMPLETED after :meth:`collect`)."""

    def label(self, subject: S) -> str:
        """The subject, for log lines."""


class Poller(Generic[S]):
    """Runs the jobs of one kind in one account session: ``window`` at once, each read when it is due."""

    def __init__(self, kind: JobKind[S], calls: AccountCalls, settings: AdvisorSettings, window: int,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] | None = None,
                 parallel_calls: int = 1, learn_first_read: bool = False) -> None:
        self.kind, self.calls, self.settings, self.window = kind, calls, settings, max(window, 1)
        self.parallel_calls, self.learn_first_read = max(parallel_calls, 1), learn_first_read
        self.progress = progress or Progress()
        self.stop = stop or threading.Event()
        # Waiting for a job ends early when the crawl is stopped.
        self.clock, self.sleep = clock, sleep or self.stop.wait
        self._order = itertools.count()
        self._first_wait = settings.poll_interval_seconds
        self._lock = threading.Lock()
        self._jobs_open = 0
        #: No job is generated before then (a generate was refused for now; a job's end lifts it).
        self._held_until = 0.0
        self._waiting: deque[PolledJob[S]] = deque()
        self._active: list[PolledJob[S]] = []

    def run(self, subjects: Iterable[S]) -> None:
        """Run the job of every subject to an ending (those left when the crawl stops: skipped).

        One loop keeps the whole window of jobs busy and hands each call to a free thread, so
        the latency of one call does not hold up the others.
        """
        self._waiting.extend(PolledJob(subject) for subject in subjects)
        with ThreadPoolExecutor(self.parallel_calls, thread_name_prefix=f"calls-{self.calls.account_id}") as pool:
            running: set[Future[None]] = set()
            while not self.stop.is_set():
                with self._lock:
                    now = self.clock()
                    running |= self._dispatch(pool, now, len(running))
                    if not (self._waiting or self._active or running):
                        break
                    due = self._next_due(now, len(running))
                running = self._wait(running, due)
            for finished in wait(running).done:
                finished.result()
        for job in self._active:
            self._end(job, Ending(SKIPPED))

    def _dispatch(self, pool: ThreadPoolExecutor, now: float, busy: int) -> set[Future[None]]:
        """New jobs while the window has room, then reads of jobs that are due, as threads are free."""
        submitted: set[Future[None]] = set()
        while (self._waiting and self._jobs_open < self.window and busy + len(submitted) < self.parallel_calls
               and now >= self._held_until):
            self._jobs_open += 1
            submitted.add(pool.submit(self._start, self._waiting.popleft()))
        while self._active and self._active[0].next_check <= now and busy + len(submitted) < self.parallel_calls:
            submitted.add(pool.submit(self._check, heapq.heappop(self._active)))
        return submitted

    def _next_due(self, now: float, busy: int) -> float | None:
        """Seconds from ``now`` until the next job is due or generating may go on; None: only a
        finished call can change anything (every thread is busy)."""
        if busy >= self.parallel_calls:
            return None
        due = self._active[0].next_check if self._active else None
        if self._waiting and self._held_until > now:
            due = self._held_until if due is None else min(due, self._held_until)
        if due is None and not busy:  # jobs open that nobody will finish: never spin on it
            raise RuntimeError(f"{self._jobs_open} jobs open, none running or scheduled")
        return None if due is None else due - now

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

    def _schedule(self, job: PolledJob[S]) -> None:
        with self._lock:
            heapq.heappush(self._active, job)

    # -- generating ---------------------------------------------------------------------
    def _start(self, job: PolledJob[S]) -> None:
        """Generate the job and schedule its first read (or wait out a refusal, or record it)."""
        generation = self.calls.generation
        try:
            answer = self.kind.generate(job.subject)
        except ANSWER_ERRORS as error:
            self._refused(job, error_code(error), error_message(error))
            return
        job.subject.attempts += 1
        job.job_id = job.subject.job_id = answer["JobId"]
        job.generation, job.started, job.reads, job.limited_since = generation, self.clock(), 0, None
        job.delay = self._first_delay()
        job.next_check, job.order = job.started + job.delay, next(self._order)
        job.in_flight = True
        self.progress.add("jobs_in_flight")
        self._schedule(job)

    def _refused(self, job: PolledJob[S], code: str, message: str) -> None:
        """A ``wait_out`` refusal goes back to the front of the queue (up to the job timeout);
        anything else ends the job."""
        now = self.clock()
        if code in self.kind.wait_out:
            job.limited_since = now if job.limited_since is None else job.limited_since
            if now - job.limited_since < self.settings.job_timeout_seconds:
                with self._lock:
                    self._waiting.appendleft(job)
                    self._jobs_open -= 1
                    self._held_until = now + self.settings.poll_interval_seconds
                return
        job.subject.attempts += 1
        self._end(job, Ending(DELETED if code in self.kind.gone else FAILED, GENERATE, code, message))

    def _retry(self, job: PolledJob[S]) -> None:
        self._leave_flight(job)
        self._start(job)

    def _first_delay(self) -> float:
        """When to read a new job first: the current estimate (see :meth:`_learn`)."""
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

    # -- reading ------------------------------------------------------------------------
    def _check(self, job: PolledJob[S]) -> None:
        """Read a job that is due: collect it, retry it, record it, or read it again later."""
        if self.stop.is_set():
            self._schedule(job)  # abandoned: recorded as skipped when the loop ends
            return
        try:
            first = self._read(job, self.kind.read_operation, JobId=job.job_id, MaxItems=self.settings.page_size)
            self._answered(job, first)
        except SessionLost as lost:
            job.lost += 1
            if job.lost > MAX_LOST_JOBS:
                self._end(job, Ending(FAILED, READ, lost.code, lost.message))
            else:
                self._retry(job)
        except ANSWER_ERRORS as error:
            self._end(job, Ending(FAILED, READ, error_code(error), error_message(error)))

    def _read(self, job: PolledJob[S], operation: str, **arguments: Any) -> dict[str, Any]:
        """A page of the job; SessionLost when another session made it: the credentials were
        renewed since (known before the read, or learnt from it, see :func:`read_job`)."""
        if job.generation != self.calls.generation:
            raise SessionLost()
        return read_job(self.calls, job.generation, operation, **arguments)

    def _answered(self, job: PolledJob[S], first: dict[str, Any]) -> None:
        status = first.get("JobStatus")
        job.reads += 1
        if self.learn_first_read and job.reads == 1 and status in ("COMPLETED", "IN_PROGRESS"):
            self._learn(job.delay, done=status == "COMPLETED")
        if status == "COMPLETED":
            self.kind.collect(job, first, functools.partial(self._read, job))
            self._end(job, Ending(COMPLETED))
        elif status == "FAILED":
            self._failed_run(job, first)
        elif status == "IN_PROGRESS":
            self._still_running(job)
        else:
            raise MalformedAnswer(f"{self.kind.noun} {job.job_id} has no valid JobStatus ({status!r})")

    def _still_running(self, job: PolledJob[S]) -> None:
        now, timeout = self.clock(), self.settings.job_timeout_seconds
        if now - job.started >= timeout:
            self._end(job, Ending(TIMED_OUT, READ, "JobTimedOut",
                                  f"{self.kind.noun} {job.job_id} still IN_PROGRESS after {timeout:g} s"))
            return
        job.delay = min(max(job.delay * POLL_GROWTH, self.settings.poll_interval_seconds / 4),
                        self.settings.max_poll_interval_seconds)
        job.next_check = min(now + job.delay, job.started + timeout)
        self._schedule(job)

    def _failed_run(self, job: PolledJob[S], answer: dict[str, Any]) -> None:
        job.failed_runs += 1
        error = answer.get("ErrorDetails") or answer.get("Error") or {}
        if job.failed_runs > self.settings.job_retries:
            self._end(job, Ending(FAILED, READ, str(error.get("Code") or "JobFailed"),
                                  str(error.get("Message") or f"{self.kind.noun} {job.job_id} FAILED")))
            return
        log.info("%s of %s FAILED (%s), generating it again", self.kind.noun, self.kind.label(job.subject),
                 error.get("Code"), extra={"account_id": self.calls.account_id})
        self._retry(job)

    # -- endings ----------------------------------------------------------------------------
    def _leave_flight(self, job: PolledJob[S]) -> None:
        if job.in_flight:
            job.in_flight = False
            self.progress.add("jobs_in_flight", -1)

    def _end(self, job: PolledJob[S], ending: Ending) -> None:
        """The job is over: free its place in the window, let the adapter record it, log it."""
        with self._lock:
            self._jobs_open -= 1
            self._held_until = 0.0  # a job less in flight: generating may succeed again
        self._leave_flight(job)
        self.kind.record(job, ending)
        if ending.outcome == DELETED:
            log.info("%s was deleted during the crawl", self.kind.label(job.subject),
                     extra={"account_id": self.calls.account_id})
        elif ending.outcome in (FAILED, TIMED_OUT):
            log.warning("%s: %s (%s)", self.kind.label(job.subject), ending.outcome, ending.code,
                        extra={"account_id": self.calls.account_id})
