"""Fault injection: what the simulated organization does wrong, per account and per operation.

A :class:`FaultPlan` holds defaults and per-account overrides; within an account, the
per-request faults (latency, 5xx, throttling, malformed answers) can be overridden per
operation (``"GetServiceLastAccessedDetails"``, ``"ListAccounts"``, ...). Decisions that
concern one entity (a job that fails, an entity deleted mid-crawl) are drawn from a hash of
the seed, the entity and the attempt, so they do not depend on the order of requests.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field, fields, replace


@dataclass
class RequestFaults:
    """Faults drawn for every request; ``None`` means "inherit from the account level"."""

    latency_ms: float | None = None
    error_rate: float | None = None
    throttle_rate: float | None = None
    malformed_rate: float | None = None
    drop_rate: float | None = None


@dataclass
class AccountFaults:
    """Everything that can go wrong in one account.

    ``iam_rate`` is the account's IAM request rate (requests per second, token bucket of
    ``iam_burst`` tokens); requests beyond it are answered ``Throttling``. ``organizations_rate``
    and ``organizations_burst`` do the same for the account's AWS Organizations requests (those of
    the management account, in practice), answered ``TooManyRequestsException``.
    ``throttle_storm_seconds`` throttles every IAM call for that long after the account's
    first IAM call. ``session_seconds`` shortens assumed-role sessions into the account,
    which the simulator then rejects with ``ExpiredToken`` once expired.
    ``other_session_job_error`` is what reading a job (or Organizations report) made by another
    role session answers: ``NoSuchEntity``, ``AccessDenied`` or ``InvalidInput`` (real IAM's
    answer varies).
    """

    iam_rate: float | None = None
    iam_burst: float | None = None
    organizations_rate: float | None = None
    organizations_burst: float | None = None
    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    malformed_rate: float = 0.0
    #: Share of calls whose answer is lost after the action ran (the connection is closed).
    drop_rate: float = 0.0
    job_seconds: float = 0.0
    job_failure_rate: float = 0.0
    stuck_job_rate: float = 0.0
    deleted_entity_rate: float = 0.0
    deny_assume_role: bool = False
    throttle_storm_seconds: float = 0.0
    session_seconds: int | None = None
    other_session_job_error: str = "NoSuchEntity"
    operations: dict[str, RequestFaults] = field(default_factory=dict)

    def request_fault(self, name: str, operation: str) -> float:
        """The effective per-request fault ``name`` (e.g. ``"latency_ms"``) for ``operation``."""
        override = self.operations.get(operation)
        value = getattr(override, name) if override is not None else None
        return float(getattr(self, name) if value is None else value)


@dataclass
class FaultPlan:
    """Defaults for every account plus per-account overrides. Mutable while the sim runs."""

    default: AccountFaults = field(default_factory=AccountFaults)
    accounts: dict[str, AccountFaults] = field(default_factory=dict)

    def for_account(self, account_id: str) -> AccountFaults:
        """The faults in force for ``account_id``."""
        return self.accounts.get(account_id, self.default)

    def account(self, account_id: str) -> AccountFaults:
        """The account's own (mutable) faults, created from the defaults on first use."""
        if account_id not in self.accounts:
            self.accounts[account_id] = replace(self.default, operations=dict(self.default.operations))
        return self.accounts[account_id]

    @classmethod
    def uniform(cls, **settings: object) -> FaultPlan:
        """A plan whose every account has the same ``AccountFaults(**settings)``."""
        known = {item.name for item in fields(AccountFaults)}
        unknown = set(settings) - known
        if unknown:
            raise TypeError(f"unknown fault settings: {sorted(unknown)}")
        return cls(default=AccountFaults(**settings))  # type: ignore[arg-type]


def chance(*parts: object) -> float:
    """A deterministic number in [0, 1) from the given parts (seed, kind, entity, attempt)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def try_take(self) -> bool:
        """Take one token if there is one; never waits."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False
