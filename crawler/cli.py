"""The ``access-crawler`` command line: parse arguments, call the library, map errors to exit codes."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from crawler import __version__
from crawler.errors import CrawlerError

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="access-crawler", description="IAM access advisor across every account of an AWS Organization.")
    parser.add_argument("--version", action="version", version=f"access-crawler {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_sim(commands)
    return parser


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
    faults.add_argument("--latency-ms", type=_non_negative, default=0.0, help="added latency per call")
    faults.add_argument("--job-seconds", type=_non_negative, default=0.0,
                        help="how long an access-advisor job stays IN_PROGRESS")
    faults.add_argument("--job-failure-rate", type=_fraction, default=0.0, help="fraction of jobs that FAIL")
    faults.add_argument("--stuck-job-rate", type=_fraction, default=0.0,
                        help="fraction of jobs that stay IN_PROGRESS forever")
    faults.add_argument("--deleted-entity-rate", type=_fraction, default=0.0,
                        help="fraction of entities deleted when their first job is requested")
    faults.add_argument("--error-rate", type=_fraction, default=0.0, help="fraction of calls answered 5xx")
    faults.add_argument("--throttle-rate", type=_fraction, default=0.0,
                        help="fraction of calls throttled at random")
    faults.add_argument("--session-seconds", type=_session_seconds,
                        help="lifetime of assumed-role sessions in seconds (1-43200)")
    faults.add_argument("--no-empty-pages", action="store_true",
                        help="do not return empty Organizations pages while NextToken is set")
    faults.add_argument("--no-account-paths", action="store_true", help="leave Paths out of account listings")
    serve.add_argument("--truth", type=Path, metavar="DIR", help="write the ground truth (JSON Lines) to DIR")
    serve.add_argument("--aws-config", type=Path, metavar="DIR",
                       help="write an AWS config and credentials file (profile 'sim') to DIR")
    serve.set_defaults(handler=_run_sim_serve)


def _run_sim_serve(args: argparse.Namespace) -> int:
    from crawler.sim import AccountFaults, FaultPlan, OrgSpec
    from crawler.sim.serve import serve_forever

    spec = OrgSpec(accounts=args.accounts, entities=args.entities, seed=args.seed,
                   accounts_without_crawler_role=args.accounts_without_role, external_id=args.external_id)
    faults = FaultPlan(default=AccountFaults(
        iam_rate=args.rate, iam_burst=args.burst, latency_ms=args.latency_ms, job_seconds=args.job_seconds,
        job_failure_rate=args.job_failure_rate, stuck_job_rate=args.stuck_job_rate,
        deleted_entity_rate=args.deleted_entity_rate, error_rate=args.error_rate,
        throttle_rate=args.throttle_rate, session_seconds=args.session_seconds))
    return serve_forever(spec, faults, args.port, empty_pages=not args.no_empty_pages,
                         account_paths=not args.no_account_paths, truth_dir=args.truth,
                         aws_config_dir=args.aws_config)


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


def _external_id(text: str) -> str:
    if not 2 <= len(text) <= 1224:
        raise argparse.ArgumentTypeError("an ExternalId has 2 to 1224 characters")
    return text
