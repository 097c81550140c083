"""The performance targets, judged on the figures :func:`crawler.bench.measure.measure` returns.

A target either judges one configuration (wall / T*, throttled share, CPU over the floor, speed
over the baseline) or compares configurations of the suite that ``scripts/bench --targets`` runs
(memory as the organization grows, memory of a 1,000,000-row crawl).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from crawler.bench.measure import BenchSettings

MIB = 1024 * 1024
MILLION_ROWS = 1_000_000


@dataclass(frozen=True)
class Verdict:
    """One target, what was measured and whether it was met (``None``: not measured)."""

    target: str
    limit: str
    measured: float | None
    met: bool | None
    note: str = ""

    def line(self) -> str:
        """``target <name> <limit>: <measured> met|MISSED (note)``."""
        state = "not measured" if self.met is None else ("met" if self.met else "MISSED")
        value = "-" if self.measured is None else f"{self.measured:g}"
        return f"target {self.target} {self.limit}: {value} {state}" + (f" ({self.note})" if self.note else "")


def _judge(target: str, measured: float | None, limit: float, at_most: bool, note: str = "") -> Verdict:
    sign = "<=" if at_most else ">="
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    return Verdict(target, f"{sign} {limit:g}", measured, met, note)


def configuration_verdicts(figures: Mapping[str, Any]) -> list[Verdict]:
    """The targets one configuration can show: wall / T*, throttling, CPU, and (with a baseline) speed."""
    adaptive = bool(figures.get("adaptive"))
    verdicts = [
        _judge("wall_over_lower_bound", figures.get("wall_over_lower_bound"), 1.35 if adaptive else 1.15, True,
               "R found adaptively" if adaptive else "R configured"),
        _judge("throttled_share", throttled_share(figures), 0.02, True,
               f"{figures.get('throttled_calls', 0)} of {figures.get('iam_calls', 0)} IAM calls"),
    ]
    if "cpu_over_floor" in figures:
        verdicts.append(_judge("cpu_over_floor", figures["cpu_over_floor"], 1.3, True,
                               "crawler CPU per 1,000 service rows / bare boto3 loop's, "
                               f"least of {figures.get('cpu_runs', 1)} runs each"))
    if "baseline_over_wall" in figures:
        accounts = figures.get("accounts_crawled", 0)
        verdicts.append(_judge("baseline_over_wall", figures["baseline_over_wall"], 20.0, False,
                               f"on {accounts} accounts; baseline {figures.get('baseline_accounts_run')}, scaled"))
    return verdicts


def throttled_share(figures: Mapping[str, Any]) -> float | None:
    """Throttled calls as a share of IAM calls."""
    calls = figures.get("iam_calls") or 0
    return round(figures.get("throttled_calls", 0) / calls, 4) if calls else None


# -- the suite -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteEntry:
    """One configuration of the suite and why it is there."""

    name: str
    settings: BenchSettings
    purpose: str


def suite(base: BenchSettings) -> list[SuiteEntry]:
    """The configurations that show every target on a 2-core machine (about ten minutes).

    Speed: 20 accounts x 30 entities at R=5 (100 IAM calls a second in all, within what the
    simulator serves on 2 cores), all at once, with the CPU floor (least CPU of 3 runs each)
    and the baseline on one account, scaled; the same with R hidden, 8 accounts at once (the crawler's default: the
    first 8 find the rate, the others start from what they found). Memory: 5 and 50 accounts
    with no latency, a fast simulator and the crawler's default 8 accounts at once; 50 x 140
    entities at ACTION_LEVEL for a million rows.
    """
    speed = replace(base, accounts=20, entities=30, rate=5.0, latency_ms=5.0, job_seconds=1.0, concurrency=None,
                    adaptive=False, baseline=True, floor=True, cpu_runs=3, granularity="SERVICE_LEVEL")
    fast = replace(base, entities=10, rate=1000.0, latency_ms=0.0, job_seconds=0.1, concurrency=8,
                   adaptive=False, baseline=False, floor=False, granularity="SERVICE_LEVEL")
    return [
        SuiteEntry("speed", speed, "wall / T* with R configured, throttling, CPU over the floor, baseline"),
        SuiteEntry("adaptive", replace(speed, accounts=30, adaptive=True, concurrency=8, baseline=False, floor=False),
                   "wall / T* with R found adaptively, throttling"),
        SuiteEntry("memory-5", replace(fast, accounts=5), "peak memory, small organization"),
        SuiteEntry("memory-50", replace(fast, accounts=50), "peak memory, 10x the accounts"),
        SuiteEntry("million", replace(fast, accounts=50, entities=140, granularity="ACTION_LEVEL"),
                   "peak memory of a crawl of over 1,000,000 rows"),
    ]


def suite_verdicts(results: Mapping[str, Mapping[str, Any]]) -> list[Verdict]:
    """The targets that compare configurations of the suite (by :class:`SuiteEntry` name)."""
    verdicts = []
    small, large = results.get("memory-5"), results.get("memory-50")
    if small and large:
        ratio = round(large["crawler_peak_rss_mib"] / small["crawler_peak_rss_mib"], 2)
        verdicts.append(_judge("memory_10x_accounts", ratio, 1.2, True,
                               f"peak RSS {large['crawler_peak_rss_mib']} MiB at {large['accounts']} accounts / "
                               f"{small['crawler_peak_rss_mib']} MiB at {small['accounts']}"))
    million = results.get("million")
    if million:
        megabytes = round(million["crawler_peak_rss_mib"] * MIB / 1e6, 1)
        verdict = _judge("million_rows_peak_mb", megabytes, 400.0, True, f"{million['rows']:,} rows")
        if million["rows"] < MILLION_ROWS:
            verdict = replace(verdict, met=None, note=f"only {million['rows']:,} rows")
        verdicts.append(verdict)
    return verdicts


def all_verdicts(results: Mapping[str, Mapping[str, Any]]) -> list[Verdict]:
    """Every configuration's verdicts, then the suite's."""
    verdicts: list[Verdict] = []
    for name, figures in results.items():
        verdicts += [replace(verdict, target=f"{name}.{verdict.target}")
                     for verdict in configuration_verdicts(figures)
                     if name in ("speed", "adaptive") or verdict.target == "throttled_share"]
    return verdicts + suite_verdicts(results)


def missed(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts that were measured and not met."""
    return [verdict for verdict in verdicts if verdict.met is False]
