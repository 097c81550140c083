"""Helpers shared by the simulator's tests: errors, retries, accounts, pagination."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from crawler.sim import SimulatedOrganization

#: No retries: every fault reaches the test. (``max_attempts`` counts retries, so 1 would retry once.)
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})
MAX_PAGES = 2000


def error_of(error: ClientError) -> tuple[str, int, str]:
    """(code, HTTP status, message) of a botocore ClientError."""
    return (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"],
            error.response["Error"]["Message"])


def failure_of(call: Callable[[], Any]) -> tuple[str, int, str]:
    """(code, HTTP status, message) of a call that must fail with a ClientError."""
    with pytest.raises(ClientError) as caught:
        call()
    return error_of(caught.value)


def crawlable(sim: SimulatedOrganization) -> list[str]:
    """Member accounts that are ACTIVE and have the crawler role (from the model)."""
    return [account_id for account_id in sim.member_account_ids
            if sim.model.accounts[account_id].account.state == "ACTIVE"
            and sim.model.accounts[account_id].has_crawler_role]


def all_pages(call: Callable[..., dict[str, Any]], **params: Any) -> list[dict[str, Any]]:
    """Every page of a Marker-paginated IAM call, following IsTruncated/Marker only."""
    pages = [call(**params)]
    while pages[-1]["IsTruncated"]:
        assert len(pages) < MAX_PAGES, "pagination does not end"
        pages.append(call(**params, Marker=pages[-1]["Marker"]))
    return pages
