"""Calls in an account: the one Marker paginator every IAM listing goes through, and the pacing of every attempt."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crawler.aws.calls import AccountCalls, MalformedAnswer, marker_pages
from crawler.aws.ratelimit import RateLimiter
from crawler.aws.sessions import SessionFactory
from crawler.config.settings import ConcurrencySettings
from crawler.sim import OrgSpec, RequestFaults
from tests.helpers import crawl_config


def pages_of(answers: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """A ``call`` that answers ``answers`` in turn, and the arguments it was called with."""
    asked: list[dict[str, Any]] = []

    def call(operation: str, **arguments: Any) -> dict[str, Any]:
        asked.append({"operation": operation, **arguments})
        return answers[len(asked) - 1]

    return call, asked


def test_pages_are_followed_by_marker_not_by_counts() -> None:
    call, asked = pages_of([{"Items": [1], "IsTruncated": True, "Marker": "a"},
                            {"Items": [], "IsTruncated": True, "Marker": "b"},
                            {"Items": [2, 3]}])
    pages = list(marker_pages(call, "list_things", MaxItems=1000))
    assert [item for page in pages for item in page["Items"]] == [1, 2, 3]
    assert asked == [{"operation": "list_things", "MaxItems": 1000},
                     {"operation": "list_things", "MaxItems": 1000, "Marker": "a"},
                     {"operation": "list_things", "MaxItems": 1000, "Marker": "b"}]


def test_a_page_already_read_is_not_read_again() -> None:
    call, asked = pages_of([{"Items": [2]}])
    pages = list(marker_pages(call, "list_things", {"Items": [1], "IsTruncated": True, "Marker": "a"}, JobId="j"))
    assert [page["Items"] for page in pages] == [[1], [2]]
    assert asked == [{"operation": "list_things", "JobId": "j", "Marker": "a"}]


def test_a_repeated_marker_is_a_malformed_answer_not_an_endless_loop() -> None:
    call, _ = pages_of([{"IsTruncated": True, "Marker": "a"}, {"IsTruncated": True, "Marker": "a"}])
    with pytest.raises(MalformedAnswer, match="repeated a Marker"):
        list(marker_pages(call, "list_things"))


class CountingLimiter(RateLimiter):
    """A configured-rate limiter that counts the tokens taken."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.taken = 0

    def acquire(self) -> float:
        self.taken += 1
        return super().acquire()


def test_every_attempt_waits_for_a_token_and_every_throttle_is_told(crawl_org, tmp_path: Path) -> None:
    """botocore's own retries of a throttled call are paced by the account's limiter too."""
    sim = crawl_org(OrgSpec(accounts=2, entities=8, seed=3))
    account_id = sim.member_account_ids[0]
    sim.faults.account(account_id).operations["GetAccountAuthorizationDetails"] = RequestFaults(throttle_rate=1.0)
    config = crawl_config(tmp_path, concurrency=ConcurrencySettings(max_attempts=3))
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    limiter = CountingLimiter()
    calls = AccountCalls(factory.enter_account(account_id), "iam", limiter, patience=0.0)

    with pytest.raises(ClientError, match="Throttling"):
        calls("get_account_authorization_details", MaxItems=1)

    assert sim.state.calls[(account_id, "GetAccountAuthorizationDetails")] == 3
    assert limiter.taken == 3 and limiter.throttles == 3
