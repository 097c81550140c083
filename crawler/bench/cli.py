"""``scripts/bench`` (``python -m crawler.bench``): measure configurations, print figures and targets."""
from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from crawler.bench.measure import BenchSettings, measure
from crawler.bench.targets import all_verdicts, configuration_verdicts, missed, suite

DESCRIPTION = """\
Benchmark the crawler against a simulated organization served by a separate process.

Each configuration prints one "name: value" line per figure: wall time, the lower bound T*
and wall / T*, calls by operation, throttled calls, rows, rows per second, the crawler's CPU
seconds and peak memory, bytes per row, the CPU floor (a bare boto3 loop making the same
calls) and, with --baseline, AWS's walk-through procedure; then a "target ..." line per
performance target it shows. --targets runs the suite that shows every target (about ten
minutes on 2 cores) and exits 1 when one is missed.
"""


def _counts(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of counts") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of counts")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The ``scripts/bench`` options."""
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="scripts/bench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=_counts, default=[defaults.accounts],
                        help=f"member accounts, e.g. 5,10,20 (default {defaults.accounts})")
    parser.add_argument("--entities", type=_counts, default=[defaults.entities],
                        help=f"entities per account (>= 8; default {defaults.entities})")
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help=f"IAM requests per second per account (default {defaults.rate:g})")
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms,
                        help=f"latency per call (default {defaults.latency_ms:g})")
    parser.add_argument("--job-seconds", type=float, default=defaults.job_seconds,
                        help=f"access-advisor job duration (default {defaults.job_seconds:g})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the organization (default 1)")
    parser.add_argument("--concurrency", type=int, help="accounts crawled at once (default: all)")
    parser.add_argument("--granularity", choices=["SERVICE_LEVEL", "ACTION_LEVEL"], default=defaults.granularity)
    parser.add_argument("--adaptive", action="store_true",
                        help="do not tell the crawler R (requests_per_second_per_account unset)")
    parser.add_argument("--baseline", action="store_true", help="also time AWS's walk-through procedure (boto3)")
    parser.add_argument("--baseline-accounts", type=int, default=defaults.baseline_accounts,
                        help="accounts the baseline walks; its time is scaled to all (default 1)")
    parser.add_argument("--no-floor", action="store_true", help="do not measure the CPU floor (bare boto3 loop)")
    parser.add_argument("--cpu-runs", type=int, default=defaults.cpu_runs,
                        help="runs of the crawler and of the floor whose least CPU is compared (default 1)")
    parser.add_argument("--targets", action="store_true",
                        help="run the suite that shows every target (ignores the size options)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure of every configuration")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (default: a temporary "
                        "directory, removed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every configuration of the sweep (or the suite); print one block each, then the targets."""
    args = build_parser().parse_args(argv)
    if min(args.entities) < 8:
        raise SystemExit("scripts/bench: --entities must be at least 8 (the simulator's minimum)")
    base = BenchSettings(rate=args.rate, latency_ms=args.latency_ms, job_seconds=args.job_seconds, seed=args.seed,
                         concurrency=args.concurrency, adaptive=args.adaptive, baseline=args.baseline,
                         baseline_accounts=args.baseline_accounts, floor=not args.no_floor, cpu_runs=args.cpu_runs,
                         granularity=args.granularity)
    if args.targets:
        runs = [(entry.name, entry.settings, entry.purpose) for entry in suite(base)]
    else:
        runs = [(f"configuration {index + 1}", replace(base, accounts=accounts, entities=entities), "")
                for index, (accounts, entities) in enumerate((a, e) for a in args.accounts for e in args.entities)]
    results: dict[str, dict[str, Any]] = {}
    with _workspace(args.keep) as root:
        for index, (name, settings, purpose) in enumerate(runs):
            if index:
                print()
            print(f"# {name}: accounts={settings.accounts} entities={settings.entities}"
                  + (f" ({purpose})" if purpose else ""), flush=True)
            figures = measure(settings, root / f"config-{index + 1}")
            results[name] = figures
            print(format_figures(figures), flush=True)
            if not args.targets:
                print("\n".join(verdict.line() for verdict in configuration_verdicts(figures)), flush=True)
    verdicts = all_verdicts(results) if args.targets else []
    if verdicts:
        print("\n# targets\n" + "\n".join(verdict.line() for verdict in verdicts))
    if args.json:
        document = [{"name": name, **figures} for name, figures in results.items()]
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    failed = any(figures["crawler_exit_code"] != 0 for figures in results.values())
    return 1 if failed or missed(verdicts) else 0


def format_figures(figures: dict[str, Any]) -> str:
    """One ``name: value`` line per figure (mappings as compact JSON)."""
    return "\n".join(f"{name}: {json.dumps(value) if isinstance(value, dict) else value}"
                     for name, value in figures.items())


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="access-crawler-bench-") as directory:
        yield Path(directory)
