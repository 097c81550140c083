"""Outcomes and statuses, defined once: of an entity's job, an account, a run and a shard; and the failure record.

They are written into the tables and manifests as the plain text of each constant (``"ok"``,
``"timed_out"``, ``"published"``...), which readers (analysis, report, SQL) compare against.
Every stage imports them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


class JobOutcome:
    """What became of an entity's access-advisor job (``entities.job_outcome``), or of an Organizations report."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DELETED = "deleted"
    SKIPPED = "skipped"
    #: Outcomes that leave an entity without access data ("deleted" needs none: the entity is gone).
    WITHOUT_DATA = (FAILED, TIMED_OUT, SKIPPED)


class AccountOutcome:
    """What became of an account (``accounts.outcome``); INTERRUPTED accounts are never staged."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    #: Outcomes of an account without data.
    NOT_CRAWLED = (FAILED, SKIPPED)


class RunStatus:
    """The status of a run manifest (``runs/<run_id>.json``) and of its ``crawl_runs`` row."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    PUBLISHED = "published"
    #: Published once, then the date was published again by ``superseded_by``.
    SUPERSEDED = "superseded"
    #: Statuses of a run that started and never published (resumable while its staging exists).
    UNFINISHED = (RUNNING, INTERRUPTED)


class ShardStatus:
    """The status in a shard's record (``_staging/<date>/<run>/_shards/K-of-N.json``)."""

    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    """A recorded failure of one stage of one entity, report or account (an ``errors`` row)."""

    stage: str
    code: str
    message: str
    attempts: int = 1
    entity_arn: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
