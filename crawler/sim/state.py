"""The live state of a running simulated organization: jobs, sessions, faults, counters.

One organization is active per process at a time (moto's backends are process globals).
The patched moto handlers find it through :func:`active_state`.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from crawler.sim.catalog import ServiceCatalog
from crawler.sim.faults import FaultPlan, TokenBucket
from crawler.sim.model import OrganizationModel
from crawler.sim.reports import ServiceReport


class SimError(Exception):
    """An error answer, rendered in the protocol of the service that was called."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class FaultEvent:
    """One fault the simulator injected (for tests to check what the crawler recorded)."""

    kind: str
    account_id: str
    operation: str
    detail: str = ""
    at: float = field(default_factory=time.time)


class Request(NamedTuple):
    """Who made a request, where, and which action it was (the key of :attr:`SimState.requests`)."""

    account_id: str
    #: The role ARN of the STS session that signed the request; empty for long-term credentials.
    principal: str
    #: The IAM action's service prefix (``iam``, ``sts``, ``organizations``).
    service: str
    operation: str

    @property
    def action(self) -> str:
        """The IAM action, as a policy names it: ``iam:GetAccountAuthorizationDetails``."""
        return f"{self.service}:{self.operation}"


@dataclass
class Session:
    """An STS session: who it is, where, and until when."""

    account_id: str
    arn: str
    role_arn: str
    expiration: datetime
    chained: bool


@dataclass
class Job:
    """An access-advisor job (entity report or Organizations report)."""

    id: str
    kind: str  # "entity" or "organizations"
    account_id: str
    session_key: str
    arn: str
    job_type: str
    created: datetime
    ready_at: float
    outcome: str  # COMPLETED, FAILED or STUCK
    reports: list[ServiceReport] = field(default_factory=list)
    entity_info: dict[str, dict[str, str]] = field(default_factory=dict)
    access_details: list[dict[str, Any]] = field(default_factory=list)
    services_accessible: int = 0
    #: A read has returned the job's final status (COMPLETED or FAILED): it no longer counts as open.
    closed: bool = False

    def status(self, now: float) -> str:
        """IN_PROGRESS until the job's duration has passed (forever when stuck)."""
        if self.outcome == "STUCK" or now < self.ready_at:
            return "IN_PROGRESS"
        return self.outcome

    @property
    def completed(self) -> datetime:
        """When the job finished (creation plus its duration)."""
        return datetime.fromtimestamp(self.ready_at, timezone.utc).replace(microsecond=0)


class SimState:
    """Everything the patched handlers need while a simulated organization runs."""

    def __init__(self, org: OrganizationModel, faults: FaultPlan, catalog: ServiceCatalog,
                 empty_pages: bool = True, account_paths: bool = True) -> None:
        self.org = org
        self.faults = faults
        self.catalog = catalog
        self.empty_pages = empty_pages
        self.account_paths = account_paths
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Session] = {}
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.deleted: set[str] = set()
        self.events: list[FaultEvent] = []
        #: Requests by (account, operation), and by who made them and which IAM action they were.
        self.calls: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[Request] = Counter()
        self.throttled: Counter[str] = Counter()
        #: Token buckets by (service, account).
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._first_iam_call: dict[str, float] = {}
        #: IAM requests being served per account now, the most there ever were, and when each
        #: account's first and last IAM requests arrived (monotonic seconds).
        self.iam_in_flight: Counter[str] = Counter()
        self.peak_iam_in_flight: Counter[str] = Counter()
        self.iam_span: dict[str, tuple[float, float]] = {}
        #: Entity jobs per account generated and not yet read to their final status; the peak.
        self.open_jobs: Counter[str] = Counter()
        self.peak_open_jobs: Counter[str] = Counter()
        self._random = random.Random(org.seed)
        self._counter_lock = threading.Lock()

    def record(self, kind: str, account_id: str, operation: str, detail: str = "") -> None:
        """Remember an injected fault."""
        with self._counter_lock:
            self.events.append(FaultEvent(kind, account_id, operation, detail))

    def count_call(self, account_id: str, service: str, operation: str, access_key: str = "") -> None:
        """Count a request (every request, answered or not), with the principal that signed it."""
        session = self.sessions.get(access_key)
        request = Request(account_id, session.role_arn if session else "", service, operation)
        with self._counter_lock:
            self.calls[(account_id, operation)] += 1
            self.requests[request] += 1

    def iam_request(self, account_id: str) -> _IamRequest:
        """``with state.iam_request(account):`` around the serving of one IAM request."""
        return _IamRequest(self, account_id)

    def job_opened(self, account_id: str) -> None:
        """An entity job was generated."""
        with self._counter_lock:
            self.open_jobs[account_id] += 1
            self.peak_open_jobs[account_id] = max(self.peak_open_jobs[account_id], self.open_jobs[account_id])

    def job_read(self, job: Job, status: str) -> None:
        """A read of ``job`` answered ``status``; the first final one closes it."""
        with self._counter_lock:
            if status in ("COMPLETED", "FAILED") and not job.closed:
                job.closed = True
                self.open_jobs[job.account_id] -= 1

    def roll(self) -> float:
        """A random number for per-request faults."""
        with self._counter_lock:
            return self._random.random()

    def next_attempt(self, account_id: str, arn: str) -> int:
        """Count one more job generation for an entity and return its number (1-based)."""
        with self._counter_lock:
            self.attempts[(account_id, arn)] += 1
            return self.attempts[(account_id, arn)]

    def iam_throttled(self, account_id: str, operation: str) -> bool:
        """Whether this IAM request exceeds the account's rate or falls in a throttle storm."""
        faults = self.faults.for_account(account_id)
        now = time.monotonic()
        with self._counter_lock:
            first = self._first_iam_call.setdefault(account_id, now)
        if faults.throttle_storm_seconds and now - first < faults.throttle_storm_seconds:
            return True
        if faults.iam_rate:
            bucket = self._bucket(("iam", account_id), faults.iam_rate, faults.iam_burst)
            if not bucket.try_take():
                return True
        return self.roll() < faults.request_fault("throttle_rate", operation)

    def organizations_throttled(self, account_id: str, operation: str) -> bool:
        """Whether this Organizations request exceeds the account's Organizations rate (or is
        throttled at random by ``throttle_rate``)."""
        faults = self.faults.for_account(account_id)
        if faults.organizations_rate:
            bucket = self._bucket(("organizations", account_id), faults.organizations_rate, faults.organizations_burst)
            if not bucket.try_take():
                return True
        return self.roll() < faults.request_fault("throttle_rate", operation)

    def _bucket(self, key: tuple[str, str], rate: float, burst: float | None) -> TokenBucket:
        with self._counter_lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[key] = TokenBucket(rate, burst)
            return bucket


class _IamRequest:
    def __init__(self, state: SimState, account_id: str) -> None:
        self.state, self.account_id = state, account_id

    def __enter__(self) -> None:
        state, account = self.state, self.account_id
        with state._counter_lock:
            now = time.monotonic()
            state.iam_span[account] = (state.iam_span.get(account, (now, now))[0], now)
            state.iam_in_flight[account] += 1
            state.peak_iam_in_flight[account] = max(state.peak_iam_in_flight[account], state.iam_in_flight[account])

    def __exit__(self, *_: object) -> None:
        with self.state._counter_lock:
            self.state.iam_in_flight[self.account_id] -= 1


_active: SimState | None = None
_active_lock = threading.Lock()


def activate(state: SimState) -> None:
    """Make ``state`` the running organization (one per process)."""
    global _active
    with _active_lock:
        if _active is not None:
            raise RuntimeError("a simulated organization is already running in this process")
        _active = state


def deactivate(state: SimState) -> None:
    """Stop answering for ``state``."""
    global _active
    with _active_lock:
        if _active is state:
            _active = None


def active_state() -> SimState | None:
    """The running organization, if any."""
    return _active
