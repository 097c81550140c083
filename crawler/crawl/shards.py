"""Shards: one run of a snapshot split across N processes or machines.

Shard K of N crawls the accounts whose id hashes to K: stable (an account always lands in the
same shard for the same N) and balanced (a uniform hash spreads accounts as evenly as a fair
draw). Each account's shard depends on its id alone, not on the other accounts: shards discover
the organization independently, perhaps minutes apart, and an account created or closed in
between must not make two shards crawl one account, or none. The shards
share one run id, so they stage into one run's staging area. Each records itself there as it
starts and when it is done (``_shards/<K>-of-<N>.json``); the shard that finds every record
done claims the publish and publishes the snapshot, exactly what one unsharded run would have
published. ``access-crawler consolidate`` publishes a run whose last shard could not.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from crawler.errors import UsageError
from crawler.outcomes import ShardStatus

SHARD_PATTERN = re.compile(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*")
#: Statuses of a shard record.
RUNNING, DONE, INTERRUPTED, FAILED = ShardStatus.RUNNING, ShardStatus.DONE, ShardStatus.INTERRUPTED, ShardStatus.FAILED
#: The file the publishing shard creates exclusively in the run's staging directory.
PUBLISH_CLAIM = "_publishing.json"

AccountLike = TypeVar("AccountLike")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index must be from 0 to count - 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` as a shard; ValueError with the expected form otherwise."""
        match = SHARD_PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid shard {text!r}: expected K/N, e.g. 0/4 (K counts from 0)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        """``K-of-N``: the name of the shard's record."""
        return f"{self.index}-of-{self.count}"

    @property
    def crawls_run_unit(self) -> bool:
        """True for the shard that also collects what belongs to the whole run (the Organizations view)."""
        return self.index == 0

    def owns(self, account_id: str) -> bool:
        """True when ``account_id`` is this shard's to crawl."""
        return shard_of(account_id, self.count) == self.index

    def select(self, accounts: Iterable[AccountLike], key: str = "id") -> list[AccountLike]:
        """This shard's share of ``accounts`` (objects with an ``id`` attribute), in their order."""
        return [account for account in accounts if self.owns(getattr(account, key))]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(account_id: str, count: int) -> int:
    """The shard (from 0) of ``count`` that crawls ``account_id``: a hash of the id, the same on every machine."""
    digest = hashlib.sha256(account_id.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % count


def default_run_id(snapshot_date: date, count: int) -> str:
    """The run id shards share when none is given: one per snapshot date and shard count."""
    return f"{snapshot_date:%Y%m%d}-{count}-shards"


def check_agreement(records: Sequence[Mapping[str, Any]], shard: Shard, config_digest: str) -> None:
    """UsageError when another shard of the run was started with another shard count or configuration."""
    for record in records:
        other = record.get("shard") or {}
        if other.get("count") != shard.count:
            raise UsageError(f"shard {other.get('index')}/{other.get('count')} of run {record.get('run_id')} splits "
                             f"the run in another number of shards than {shard}: every shard needs the same N")
        if record.get("config_digest") != config_digest:
            raise UsageError(f"shard {other.get('index')}/{other.get('count')} of run {record.get('run_id')} was "
                             "started with a different configuration: every shard needs the same config file")


def missing_shards(records: Sequence[Mapping[str, Any]], count: int) -> list[int]:
    """The shard indexes (of ``count``) that have not recorded themselves done."""
    done = {int((record.get("shard") or {}).get("index", -1)) for record in records if record.get("status") == DONE}
    return [index for index in range(count) if index not in done]


def shard_count(records: Sequence[Mapping[str, Any]]) -> int:
    """The shard count the records agree on; UsageError when they do not (or there are none)."""
    counts = {(record.get("shard") or {}).get("count") for record in records}
    count = counts.pop() if len(counts) == 1 else None
    if not isinstance(count, int):
        raise UsageError(f"the shard records disagree on the number of shards: {sorted(map(str, counts))}")
    return count


def expected_accounts(records: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every account the done shards selected: what the published snapshot must hold."""
    return {str(account_id) for record in records if record.get("status") == DONE
            for account_id in record.get("account_ids") or ()}
