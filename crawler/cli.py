"""The ``access-crawler`` command line: parse arguments, call the library, map errors to exit codes."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from crawler import __version__
from crawler.errors import CrawlerError, UsageError

#: Exit codes (README "Exit codes"): 0 done; 1 published (or checked) with recorded failures or problems;
#: 2 bad usage or configuration, or another run holds the snapshot; 3 failed, nothing was published;
#: 130 interrupted.
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except CrawlerError as error:
        print(f"access-crawler: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("access-crawler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: its traceback for the report, and an exit code no caller takes for success
        traceback.print_exc()
        print("access-crawler: internal error (a bug: please report it with the traceback above); nothing was "
              "published", file=sys.stderr)
        return EXIT_FATAL


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="access-crawler", description="IAM access advisor across every account of an AWS Organization.")
    parser.add_argument("--version", action="version", version=f"access-crawler {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_validate(commands)
    _add_accounts(commands)
    _add_run(commands)
    _add_consolidate(commands)
    _add_prune(commands)
    _add_demo(commands)
    _add_verify(commands)
    _add_report(commands)
    _add_sim(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, summary: str, description: str,
             example: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=summary, description=description, epilog=f"example:\n  {example}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("-c", "--config", required=True, type=Path, metavar="FILE", help="the YAML config file")


def _add_validate(commands: argparse._SubParsersAction) -> None:
    validate = _command(commands, "validate", "check a config file and print the resolved settings",
                        "Check a config file completely (no AWS call) and print every setting, defaults included.",
                        "access-crawler validate -c config/crawler.yaml")
    _add_config_option(validate)
    validate.set_defaults(handler=_run_validate)


def _add_accounts(commands: argparse._SubParsersAction) -> None:
    accounts = _command(commands, "accounts", "list the accounts a crawl would enter",
                        "Discover and filter the target accounts (id, name, OU path, state, tags) without entering "
                        "any of them.", "access-crawler accounts -c config/crawler.yaml --format csv > accounts.csv")
    _add_config_option(accounts)
    accounts.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    accounts.add_argument("--shard", type=_shard, metavar="K/N", help="only the accounts shard K of N would crawl")
    accounts.set_defaults(handler=_run_accounts)


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = _command(commands, "run", "crawl every selected account and publish a snapshot",
                   "Enter every selected account, run access-advisor jobs for its entities and publish one "
                   "snapshot of every table under output.path. One run at a time writes a snapshot date: a run "
                   "holds its lease, and a second run of the same date refuses (or waits, with --wait). Exit code "
                   "0: complete; 1: published with recorded failures; 2: bad config or usage, or the snapshot is "
                   "being written by another run; 3: failed, nothing published; 130: interrupted.",
                   "access-crawler run -c config/crawler.yaml --output ./access-data")
    _add_config_option(run)
    run.add_argument("--output", metavar="PATH", help="write here instead of output.path")
    run.add_argument("--resume", action="store_true",
                     help="finish the newest unfinished run under the output path, whatever its snapshot date (a "
                          "plain run resumes an unfinished run of the same snapshot date by itself)")
    run.add_argument("--shard", type=_shard, metavar="K/N",
                     help="crawl shard K (from 0) of N: a stable share of the accounts. N shards (on N machines) "
                          "write into one run; the last to finish publishes it")
    run.add_argument("--run-id", type=_run_id, metavar="ID",
                     help="the run id (shards of one run pass the same one, e.g. the job runner's id; default for "
                          "shards: <date>-<N>-shards)")
    run.add_argument("--wait", type=_wait_seconds, nargs="?", const=float("inf"), metavar="SECONDS",
                     help="when another run is writing the same snapshot date, wait for it to finish (at most "
                          "SECONDS, if given) instead of exiting with code 2")
    run.add_argument("--allow-empty", action="store_true",
                     help="publish an empty snapshot when the configuration selects no account (by default that "
                          "is an error that publishes nothing)")
    run.set_defaults(handler=_run_run)


def _add_consolidate(commands: argparse._SubParsersAction) -> None:
    consolidate = _command(
        commands, "consolidate", "publish a sharded run whose shards are all done",
        "Publish the snapshot of a sharded run from what its shards staged, when every shard recorded itself done "
        "but none published (the last one died first). Exit code 0: published; 2: shards missing, the snapshot "
        "being written by another run, or bad usage; 3: failed, nothing published.",
        "access-crawler consolidate s3://bucket/access-data --snapshot 2026-11-30")
    consolidate.add_argument("root", metavar="ROOT", help="the dataset root (a directory or a filesystem URI)")
    consolidate.add_argument("--snapshot", type=_date, metavar="DATE", required=True, help="snapshot date, YYYY-MM-DD")
    consolidate.add_argument("--run-id", type=_run_id, metavar="ID",
                             help="the sharded run to publish (needed only when several are staged for the date)")
    consolidate.set_defaults(handler=_run_consolidate)


def _run_consolidate(args: argparse.Namespace) -> int:
    from crawler.crawl.publish import consolidate

    manifest = consolidate(args.root, args.snapshot, args.run_id)
    print(f"run {manifest['run_id']}: snapshot {manifest['snapshot_date']} published from {len(manifest['shards'])} "
          f"shards\nrows: " + ", ".join(f"{name} {table['rows']:,}" for name, table in manifest["tables"].items()))
    return EXIT_OK


def _add_prune(commands: argparse._SubParsersAction) -> None:
    prune = _command(
        commands, "prune", "remove the staging of runs that will never resume",
        "Remove from _staging the runs that can never be resumed or published: runs that stopped before a later "
        "run published their snapshot date, older unfinished runs behind a newer one, leftovers of published "
        "runs. Kept: the unfinished run a plain run of the date would resume, and sharded runs waiting for "
        "consolidate. A date a live run is writing is skipped. Exit code 0: done; 2: bad usage; 3: failed.",
        "access-crawler prune ./access-data --dry-run")
    prune.add_argument("root", metavar="ROOT", help="the dataset root (a directory or a filesystem URI)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune.set_defaults(handler=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:
    from crawler.crawl.publish import objects_for
    from crawler.crawl.runs import prune_staging
    from crawler.listing import visible

    pruned = prune_staging(args.root, args.dry_run, objects_for(args.root))
    for item in pruned:
        print(f"{item.snapshot_date} {visible(item.run_id or '-')}: {visible(item.outcome)}")
    if not pruned:
        print("no abandoned staging")
    return EXIT_OK


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = _command(commands, "demo", "crawl a built-in simulated organization (no AWS account needed)",
                    "Start a simulated AWS Organization on 127.0.0.1, crawl it end to end with "
                    "config/demo.yaml's settings and show what the data says.",
                    "access-crawler demo --out ./out --accounts 8 --seed 3")
    demo.add_argument("--out", type=Path, default=Path("out"), metavar="DIR", help="output root (default ./out)")
    demo.add_argument("--accounts", type=_count, default=6, help="member accounts (default 6)")
    demo.add_argument("--entities", type=_entities, default=12, help="IAM entities per account (default 12)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the generated organization (default 1)")
    demo.set_defaults(handler=_run_demo)


def _add_verify(commands: argparse._SubParsersAction) -> None:
    verify = _command(commands, "verify", "check a published snapshot against its manifest",
                      "Check every file of a snapshot (size, sha256, Parquet rows and schema) against the run "
                      "manifest and report missing, extra or damaged files. Exit code 0: OK; 1: problems; "
                      "2: bad usage.", "access-crawler verify ./access-data --snapshot 2026-11-30")
    verify.add_argument("root", metavar="ROOT", help="the dataset root (a directory or a filesystem URI)")
    verify.add_argument("--snapshot", type=_date, metavar="DATE",
                        help="snapshot date, YYYY-MM-DD (default: the latest snapshot date published, as every "
                             "command and crawler.analysis take it)")
    verify.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from crawler.store.verify import format_report, verify_snapshot

    report = verify_snapshot(args.root, args.snapshot)
    print(format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILURES


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = _command(commands, "report", "write the access review of a published snapshot",
                      "Write the quarterly access review of a published snapshot: one self-contained HTML page "
                      "(summary, accounts, unused services, stale users and roles, widest gaps, charts, and what "
                      "the data cannot say), an xlsx workbook with a sheet per finding, or a directory with one "
                      "CSV file per finding. In CSV, a cell starting with = + - @ (or a tab or carriage return) "
                      "gets a leading apostrophe so that spreadsheets show it as text, never run it as a formula.",
                      "access-crawler report ./access-data --days 90 --out review.html")
    report.add_argument("root", metavar="ROOT", help="the dataset root (a directory or a filesystem URI)")
    report.add_argument("--snapshot", type=_date, metavar="DATE",
                        help="snapshot date, YYYY-MM-DD (default: the latest snapshot date published, as every "
                             "command and crawler.analysis take it)")
    report.add_argument("--days", type=_days, default=90,
                        help="a service not used in this many days before collection is unused (1-400; default 90)")
    report.add_argument("--format", choices=("html", "xlsx", "csv"), default="html",
                        help="html (one page), xlsx (one workbook) or csv (a directory of files); default html")
    report.add_argument("--out", type=Path, metavar="PATH",
                        help="file (html, xlsx) or directory (csv) to write; default review.html, review.xlsx or "
                             "review-csv/")
    report.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from crawler.report import describe, write_report

    print(describe(write_report(args.root, args.out, args.snapshot, args.days, args.format)))
    return EXIT_OK


def _run_validate(args: argparse.Namespace) -> int:
    from crawler.config.loader import describe_config, load_config

    config = load_config(args.config)
    print(f"# {args.config}: valid", flush=True)
    print(describe_config(config), end="")
    return EXIT_OK


def _run_accounts(args: argparse.Namespace) -> int:
    from crawler.aws.sessions import SessionFactory
    from crawler.config.loader import load_config
    from crawler.crawl.scheduler import discover
    from crawler.listing import format_accounts
    from crawler.sources.organizations import select_accounts

    config = load_config(args.config)
    factory = SessionFactory(config.aws, config.assume_role, config.concurrency)
    accounts = select_accounts(discover(config, factory), config.organization)
    if args.shard is not None:
        accounts = args.shard.select(accounts)
    sys.stdout.write(format_accounts(accounts, args.format))
    return EXIT_OK


def _run_run(args: argparse.Namespace) -> int:
    from crawler.config.loader import load_config

    config = load_config(args.config)
    if args.output:
        config = config.with_output(args.output)
    return _crawl(config, lambda progress, stop: _run_crawl(config, progress, stop, args))


def _run_crawl(config: Any, progress: Any, stop: threading.Event, args: argparse.Namespace) -> Any:
    from crawler.crawl.scheduler import run_crawl

    return run_crawl(config, progress=progress, stop=stop, resume=args.resume, run_id=args.run_id, shard=args.shard,
                     wait=args.wait, allow_empty=args.allow_empty)


def _run_demo(args: argparse.Namespace) -> int:
    from crawler.demo import demo_config, findings, run_demo

    config = demo_config(args.out)
    code = _crawl(config, lambda progress, stop: run_demo(args.out, args.accounts, args.seed, args.entities,
                                                          progress, stop), show_findings=findings)
    return code


def _crawl(config: Any, crawl: Callable[[Any, threading.Event], Any],
           show_findings: Callable[[Any], list[str]] | None = None) -> int:
    """Logging, the progress display, stop on signals, the crawl, the summary; the exit code."""
    from crawler.log import close_logging, configure_logging, console_handlers
    from crawler.progress import Progress, ProgressDisplay
    from crawler.store.memory import economise_memory

    economise_memory()
    _check_output(config.output.path)  # before the log, which goes under it
    log_path = configure_logging(config.logging, config.output.path)
    progress, stop = Progress(), threading.Event()
    display = ProgressDisplay(progress)
    for handler in console_handlers():
        handler.addFilter(display.clear_line)
    try:
        with display, _stop_on_signals(stop):
            summary = crawl(progress, stop)
    finally:
        close_logging()
    print(format_summary(summary, log_path))
    if show_findings is not None:
        print("\nwhat the data shows:")
        print("\n".join(f"  {line}" for line in show_findings(summary)))
    return EXIT_OK if summary.complete else EXIT_FAILURES


def _check_output(path: str) -> None:
    """UsageError (exit 2) unless ``path`` can hold the dataset: a file, ``/dev/null/x`` or ``/proc/x`` is
    refused in one line before anything (the log file included) is written under it."""
    from crawler.store.dataset import DatasetError, check_writable

    try:
        check_writable(path)
    except DatasetError as error:
        raise UsageError(str(error)) from error


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM: stop starting work and finish cleanly; a second signal exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def quit_now(_signum: int, _frame: Any) -> None:
        os._exit(EXIT_INTERRUPTED)  # the user insists: no clean-up, staged work stays on disk

    def handle(signum: int, _frame: Any) -> None:
        stop.set()
        for stopping in signals:  # from now until the process ends, another signal quits at once
            signal.signal(stopping, quit_now)
        print(f"\naccess-crawler: {signal.Signals(signum).name}: stopping; finished accounts stay staged "
              "(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handle) for signum in signals}
    try:
        yield
    finally:
        if not stop.is_set():
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def format_summary(summary: Any, log_path: Path | None) -> str:
    """The final summary of a run: accounts, rows per table, where the data and the log are."""
    manifest = summary.manifest
    accounts = manifest["accounts"]
    shard = f" shard {summary.shard}" if summary.shard is not None else ""
    lines = [f"run {summary.run_id}{shard}: snapshot {summary.snapshot_date} "
             f"({'complete' if summary.complete else 'completed with recorded failures'})"
             + (" - resumed an unfinished run" if summary.resumed else ""),
             f"accounts: {accounts['ok']} ok, {accounts['failed']} failed, {accounts['skipped']} skipped "
             f"of {accounts['selected']}",
             "entities: " + (", ".join(f"{count} {name}" for name, count in manifest["entities"].items()) or "none"),
             "rows: " + ", ".join(f"{name} {count:,}" for name, count in summary.rows.items())
             if summary.published else _unpublished(summary),
             f"data: {summary.root} (manifest: runs/{summary.run_id}.json)" if summary.published else
             f"data: {summary.root} (staged, not published)"]
    if accounts["failed_ids"]:
        lines.append("accounts not complete: " + ", ".join(accounts["failed_ids"]) + " (see the accounts and "
                     "errors tables)")
    if log_path is not None:
        lines.append(f"log: {log_path}")
    return "\n".join(lines)


def _unpublished(summary: Any) -> str:
    """What a shard that did not publish says instead of the published rows."""
    if summary.waiting_for:
        return (f"staged, not published yet: waiting for shards {', '.join(map(str, summary.waiting_for))} "
                f"(the last to finish publishes; or run access-crawler consolidate {summary.root} "
                f"--snapshot {summary.snapshot_date} --run-id {summary.run_id} once they are done)")
    return (f"staged; every shard is done and another one publishes the run (if none does, run access-crawler "
            f"consolidate {summary.root} --snapshot {summary.snapshot_date} --run-id {summary.run_id})")


def _add_sim(commands: argparse._SubParsersAction) -> None:
    sim = commands.add_parser("sim", help="the simulated AWS Organization (no AWS account needed)")
    sim_commands = sim.add_subparsers(title="sim commands", metavar="COMMAND")
    serve = sim_commands.add_parser(
        "serve", help="run the simulated organization as a local HTTP endpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a simulated AWS Organization (Organizations, STS and IAM with access advisor) on "
                    "127.0.0.1 until interrupted. It prints the endpoint URL and the credentials to use.",
        epilog="example:\n  access-crawler sim serve --port 5005 --accounts 20 --entities 30 --rate 20\n"
               "  AWS_ENDPOINT_URL=http://127.0.0.1:5005 aws organizations list-accounts")
    serve.add_argument("--port", type=_port, default=5005, help="TCP port on 127.0.0.1 (0: any free port; "
                       "default 5005)")
    serve.add_argument("--seed", type=int, default=1, help="seed of the generated organization (default 1)")
    serve.add_argument("--accounts", type=_count, default=12, help="member accounts (default 12)")
    serve.add_argument("--entities", type=_entities, default=12, help="IAM entities per account (default 12)")
    serve.add_argument("--accounts-without-role", type=_count, default=0,
                       help="member accounts where the crawler role is missing (AssumeRole: AccessDenied)")
    serve.add_argument("--external-id", type=_external_id,
                       help="require this sts:ExternalId (2-1224 characters) to assume the crawler role")
    faults = serve.add_argument_group("faults (every account)")
    faults.add_argument("--rate", type=_positive, help="IAM requests per second per account before Throttling")
    faults.add_argument("--burst", type=_positive, help="IAM token-bucket size (default: the rate)")
    faults.add_argument("--organizations-rate", type=_positive,
                        help="AWS Organizations requests per second before TooManyRequestsException")
    faults.add_argument("--latency-ms", type=_non_negative, default=0.0, help="added latency per call")
    faults.add_argument("--job-seconds", type=_non_negative, default=0.0,
                        help="how long an access-advisor job stays IN_PROGRESS")
    faults.add_argument("--job-failure-rate", type=_fraction, default=0.0, help="fraction of jobs that FAIL")
    faults.add_argument("--stuck-job-rate", type=_fraction, default=0.0,
                        help="fraction of jobs that stay IN_PROGRESS forever")
    faults.add_argument("--deleted-entity-rate", type=_fraction, default=0.0,
                        help="fraction of entities deleted when their first job is requested")
    faults.add_argument("--error-rate", type=_fraction, default=0.0, help="fraction of calls answered 5xx")
    faults.add_argument("--drop-rate", type=_fraction, default=0.0,
                        help="fraction of calls whose connection is closed before the answer")
    faults.add_argument("--throttle-rate", type=_fraction, default=0.0,
                        help="fraction of calls throttled at random")
    faults.add_argument("--session-seconds", type=_session_seconds,
                        help="lifetime of assumed-role sessions in seconds (1-43200)")
    faults.add_argument("--other-session-job-error", choices=("NoSuchEntity", "AccessDenied", "InvalidInput"),
                        default="NoSuchEntity", help="what reading a job made by another role session answers "
                        "(default NoSuchEntity; real IAM's answer varies)")
    faults.add_argument("--no-empty-pages", action="store_true",
                        help="do not return empty Organizations pages while NextToken is set")
    faults.add_argument("--no-account-paths", action="store_true", help="leave Paths out of account listings")
    serve.add_argument("--truth", type=Path, metavar="DIR", help="write the ground truth (JSON Lines) to DIR")
    serve.add_argument("--aws-config", type=Path, metavar="DIR",
                       help="write an AWS config and credentials file (profile 'sim') to DIR")
    serve.add_argument("--stats", type=Path, metavar="FILE",
                       help="when stopped, write the calls per account and operation and the throttled calls per "
                            "account to FILE (JSON)")
    serve.set_defaults(handler=_run_sim_serve)


def _run_sim_serve(args: argparse.Namespace) -> int:
    from crawler.sim import AccountFaults, FaultPlan, OrgSpec
    from crawler.sim.serve import serve_forever

    spec = OrgSpec(accounts=args.accounts, entities=args.entities, seed=args.seed,
                   accounts_without_crawler_role=args.accounts_without_role, external_id=args.external_id)
    faults = FaultPlan(default=AccountFaults(
        iam_rate=args.rate, iam_burst=args.burst, organizations_rate=args.organizations_rate,
        latency_ms=args.latency_ms, job_seconds=args.job_seconds,
        job_failure_rate=args.job_failure_rate, stuck_job_rate=args.stuck_job_rate,
        deleted_entity_rate=args.deleted_entity_rate, error_rate=args.error_rate, drop_rate=args.drop_rate,
        throttle_rate=args.throttle_rate, session_seconds=args.session_seconds,
        other_session_job_error=args.other_session_job_error))
    return serve_forever(spec, faults, args.port, empty_pages=not args.no_empty_pages,
                         account_paths=not args.no_account_paths, truth_dir=args.truth,
                         aws_config_dir=args.aws_config, stats_path=args.stats)


def _number(text: str, kind: type, low: float | None, high: float | None, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text} is not {what}")
    return value


def _port(text: str) -> int:
    return int(_number(text, int, 0, 65535, "a port number (0-65535)"))


def _count(text: str) -> int:
    return int(_number(text, int, 0, 100000, "a count (0-100000)"))


def _entities(text: str) -> int:
    return int(_number(text, int, 8, 100000, "an entity count (8-100000)"))


def _positive(text: str) -> float:
    return _number(text, float, 1e-9, None, "a positive number")


def _non_negative(text: str) -> float:
    return _number(text, float, 0, None, "a number >= 0")


def _fraction(text: str) -> float:
    return _number(text, float, 0, 1, "a fraction between 0 and 1")


def _session_seconds(text: str) -> int:
    return int(_number(text, int, 1, 43200, "a session lifetime in seconds (1-43200)"))


def _days(text: str) -> int:
    return int(_number(text, int, 1, 400, "a number of days (1-400, access advisor's tracking period)"))


def _wait_seconds(text: str) -> float:
    return _number(text, float, 0, None, "a number of seconds >= 0")


def _external_id(text: str) -> str:
    if not 2 <= len(text) <= 1224:
        raise argparse.ArgumentTypeError("an ExternalId has 2 to 1224 characters")
    return text


def _shard(text: str) -> Any:
    from crawler.crawl.shards import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_id(text: str) -> str:
    from crawler.store.dataset import validate_run_id

    try:
        return validate_run_id(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
