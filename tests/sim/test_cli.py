"""``access-crawler sim serve`` in a subprocess, reached by the real AWS CLI."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crawler import __version__

pytestmark = pytest.mark.cli

AWS = Path(sys.executable).parent / "aws"
CRAWLER = [sys.executable, "-m", "crawler"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
MANAGEMENT = re.compile(r"management account (\d{12})")
EXPORT = re.compile(r"^export (AWS_[A-Z_]+)=(.*)$")


@dataclass
class Server:
    """A running ``sim serve`` subprocess and what its banner said."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    reader: threading.Thread
    stderr: Path
    endpoint: str
    management_account: str
    exports: dict[str, str]


def read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    """Copy a subprocess's output into a queue, line by line (so reads can time out)."""
    for line in stream:
        lines.put(line)


def wait_for_banner(process: subprocess.Popen[str], lines: queue.Queue[str], stderr: Path,
                    timeout: float = 30) -> list[str]:
    """The banner lines, up to "press Ctrl-C to stop"."""
    banner: list[str] = []
    deadline = time.monotonic() + timeout
    while not banner or "press Ctrl-C" not in banner[-1]:
        try:
            banner.append(lines.get(timeout=max(0.0, deadline - time.monotonic())).rstrip("\n"))
        except queue.Empty:
            process.kill()
            pytest.fail(f"no banner from sim serve: {banner} {stderr.read_text()}")
    return banner


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``access-crawler sim serve --port 0 --accounts 3 --seed 4`` with an AWS config and a truth dir."""
    command = [*CRAWLER, "sim", "serve", "--port", "0", "--accounts", "3", "--seed", "4",
               "--aws-config", str(tmp_path / "aws"), "--truth", str(tmp_path / "truth")]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        banner = "\n".join(wait_for_banner(process, lines, stderr))
        endpoint, management = LISTENING.search(banner), MANAGEMENT.search(banner)
        assert endpoint and management, banner
        exports = {match[1]: match[2] for line in banner.splitlines() if (match := EXPORT.match(line))}
        yield Server(process, lines, reader, stderr, endpoint[1], management[1], exports)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def aws_env(**settings: str) -> dict[str, str]:
    """This process's (fake, empty-config) environment without credentials, plus ``settings``."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")}
    return {**env, **settings}


def aws(env: dict[str, str], *arguments: str) -> dict[str, Any]:
    """Run the AWS CLI; its JSON output."""
    done = subprocess.run([str(AWS), *arguments, "--output", "json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_aws_cli_crawls_the_served_organization(server: Server, tmp_path: Path) -> None:
    operator = aws_env(**server.exports)
    assert operator["AWS_ENDPOINT_URL"] == server.endpoint
    accounts = aws(operator, "organizations", "list-accounts", "--page-size", "1")["Accounts"]
    assert len(accounts) == 4
    member = next(account["Id"] for account in accounts
                  if account["Id"] != server.management_account and account["State"] == "ACTIVE")
    role_arn = f"arn:aws:iam::{member}:role/AccessCrawlerRole"
    credentials = aws(operator, "sts", "assume-role", "--role-arn", role_arn,
                      "--role-session-name", "cli-test")["Credentials"]
    crawler = aws_env(AWS_ACCESS_KEY_ID=credentials["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=credentials["SecretAccessKey"],
                      AWS_SESSION_TOKEN=credentials["SessionToken"], AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=server.endpoint)
    job_id = aws(crawler, "iam", "generate-service-last-accessed-details", "--arn", role_arn)["JobId"]
    report = aws(crawler, "iam", "get-service-last-accessed-details", "--job-id", job_id)
    assert report["JobStatus"] == "COMPLETED"
    assert report["ServicesLastAccessed"]

    profile = aws_env(AWS_CONFIG_FILE=str(tmp_path / "aws" / "config"),
                      AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws" / "credentials"))
    assert aws(profile, "sts", "get-caller-identity", "--profile", "sim")["Account"] == server.management_account

    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=10) == 0
    server.reader.join(timeout=5)
    assert "simulator stopped\n" in list(server.lines.queue)
    assert "Traceback" not in server.stderr.read_text()
    assert (tmp_path / "truth" / "service_last_accessed.jsonl").stat().st_size > 0


def run_crawler(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m crawler ARGUMENTS`` to its end."""
    return subprocess.run([*CRAWLER, *arguments], capture_output=True, text=True, timeout=60)


def test_port_in_use_is_a_usage_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_crawler("sim", "serve", "--port", str(port), "--accounts", "1")
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("option", [["--rate", "-1"], ["--job-failure-rate", "2"], ["--port", "70000"],
                                    ["--entities", "3"], ["--latency-ms", "soon"],
                                    ["--session-seconds", "0"], ["--external-id", "x"],
                                    ["--other-session-job-error", "Throttling"], ["--organizations-rate", "0"]])
def test_bad_option_is_a_usage_error(option: list[str]) -> None:
    done = run_crawler("sim", "serve", "--port", "0", *option)
    assert done.returncode == 2
    assert f"argument {option[0]}" in done.stderr
    assert "Traceback" not in done.stderr


def test_version() -> None:
    done = run_crawler("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"access-crawler {__version__}"
