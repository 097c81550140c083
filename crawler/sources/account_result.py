"""The two arguments every per-account table is made of: what the rows of one account share
(:class:`RunContext`) and everything the crawl learnt about the account (:class:`AccountResult`).

A module that adds a per-account table imports these, and :data:`crawler.sources.rows.ACCOUNT_TABLES`
lists its function.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crawler.outcomes import Failure
from crawler.sources.advisor import EntityOutcome
from crawler.sources.organizations import Account


@dataclass(frozen=True)
class RunContext:
    """What every row of one account shares: its key columns, and the granularity of its jobs."""

    run_id: str
    organization_id: str | None
    account: Account
    #: True when the jobs ran at ACTION_LEVEL: only then does the account have action rows.
    action_level: bool = False

    def keys(self) -> dict[str, Any]:
        """run_id, organization_id, account_id, account_name, ou_path."""
        return {"run_id": self.run_id, "organization_id": self.organization_id, "account_id": self.account.id,
                "account_name": self.account.name, "ou_path": self.account.ou_path}


@dataclass(frozen=True)
class AccountResult:
    """Everything the crawl learnt about one account."""

    account: Account
    role_arn: str | None
    started_at: datetime
    finished_at: datetime
    outcomes: Sequence[EntityOutcome] = ()
    failure: Failure | None = None
    skipped: bool = False
