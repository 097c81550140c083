"""``access-crawler sim serve``: the simulated organization as a local HTTP endpoint."""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from crawler.errors import UsageError
from crawler.sim.faults import FaultPlan
from crawler.sim.generator import OrgSpec
from crawler.sim.simulator import SimulatedOrganization
from crawler.sim.state import SimState


def serve_forever(spec: OrgSpec, faults: FaultPlan, port: int, empty_pages: bool = True,
                  account_paths: bool = True, truth_dir: Path | None = None, aws_config_dir: Path | None = None,
                  out: TextIO = sys.stdout, stop: threading.Event | None = None, stats_path: Path | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); print how to reach the endpoint.

    With ``stats_path``, the calls and throttled calls the simulator counted are written there
    as JSON when it stops (see :func:`write_stats`).
    """
    sim = SimulatedOrganization(spec, faults, empty_pages=empty_pages, account_paths=account_paths)
    stop = stop or threading.Event()
    try:
        context = sim.serve(port=port)
        context.__enter__()
    except OSError as error:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}") from error
    try:
        if truth_dir is not None:
            sim.write_ground_truth(truth_dir)
        if aws_config_dir is not None:
            sim.write_aws_config(aws_config_dir)
        _stop_on_signals(stop)
        print_banner(sim, out, truth_dir, aws_config_dir)
        while not stop.wait(0.5):
            pass
    finally:
        context.__exit__(None, None, None)
        if stats_path is not None:
            write_stats(sim.state, stats_path)
    print("simulator stopped", file=out, flush=True)
    return 0


def stats_of(state: SimState) -> dict[str, dict[str, int]]:
    """The simulator's counters: ``{"calls": {"<account>/<operation>": n}, "throttled": {"<account>": n}}``."""
    with state.lock:
        calls = {f"{account}/{operation}": count for (account, operation), count in sorted(state.calls.items())}
        throttled = dict(sorted(state.throttled.items()))
    return {"calls": calls, "throttled": throttled}


def write_stats(state: SimState, path: Path) -> None:
    """Write :func:`stats_of` to ``path`` as JSON (atomically: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(stats_of(state), indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def print_banner(sim: SimulatedOrganization, out: TextIO, truth_dir: Path | None,
                 aws_config_dir: Path | None) -> None:
    """Print the endpoint, credentials and the settings that point SDKs and the CLI at it."""
    env = sim.environment()
    model = sim.model
    lines = [
        f"access-crawler simulator listening on {sim.endpoint_url}",
        f"organization {model.id}: management account {model.management_account_id}, "
        f"{len(model.accounts) - 1} member accounts, seed {model.seed}",
        f"crawler role in every member account: {model.crawler_role_name} (hub role: {model.hub_role_name})",
        "",
        "# environment for boto3 and the AWS CLI:",
        *(f"export {name}={value}" for name, value in env.items()),
        "",
        "# or a profile (~/.aws/config and ~/.aws/credentials):",
        "[profile sim]", f"region = {env['AWS_DEFAULT_REGION']}", f"endpoint_url = {sim.endpoint_url}",
        "[sim]", f"aws_access_key_id = {env['AWS_ACCESS_KEY_ID']}",
        f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}",
        "",
        f"try: aws organizations list-accounts --endpoint-url {sim.endpoint_url}",
    ]
    if aws_config_dir is not None:
        lines.append(f"AWS config written to {aws_config_dir} (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)")
    if truth_dir is not None:
        lines.append(f"ground truth written to {truth_dir}")
    lines.append("press Ctrl-C to stop")
    print("\n".join(lines), file=out, flush=True)


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
