"""The command line: validate, accounts, run and demo, their messages and exit codes."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from crawler.cli import EXIT_FAILURES, EXIT_FATAL, EXIT_OK, EXIT_USAGE, build_parser, main
from crawler.crawl.shards import shard_of
from crawler.sim import OrgSpec
from crawler.store.dataset import latest_manifest
from tests.helpers import read_rows
from tests.test_config import mutated_configs

ROOT = Path(__file__).resolve().parent.parent
SPEC = OrgSpec(accounts=3, entities=10, seed=7)
FAST = """
aws: {profile: sim, region: us-east-1}
advisor: {poll_interval_seconds: 0.05}
concurrency: {accounts: 4, max_attempts: 3}
logging: {level: WARNING}
"""


def write_config(directory: Path, text: str) -> Path:
    """A config file in ``directory``."""
    path = directory / "crawler.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def commands() -> dict[str, object]:
    """Every command of the parser, by name."""
    parser = build_parser()
    action = next(action for action in parser._actions if action.dest == "==SUPPRESS==" and action.choices)
    return dict(action.choices)


@pytest.mark.parametrize("name", ["validate", "accounts", "run", "consolidate", "prune", "demo", "verify", "report",
                                  "sim"])
def test_every_command_is_documented_with_an_example(name: str) -> None:
    command = commands()[name]
    text = command.format_help()  # type: ignore[attr-defined]
    assert "example" in text or name == "sim", text
    assert command.description or name == "sim"  # type: ignore[attr-defined]


def test_validate_prints_the_resolved_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "concurrency:\n  accounts: 3\n")
    assert main(["validate", "-c", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "valid" in out and "accounts: 3" in out and "granularity: SERVICE_LEVEL" in out


@pytest.mark.parametrize("text, line, key", [
    ("concurrency:\n  acounts: 3\n", 2, "concurrency.acounts"),
    ("organization:\n  include:\n    account_ids: [0x1F]\n", 3, "organization.include.account_ids[0]"),
    ("advisor:\n  granularity: EVERYTHING\n", 2, "advisor.granularity"),
])
def test_config_errors_exit_2_with_file_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     text: str, line: int, key: str) -> None:
    path = write_config(tmp_path, text)
    assert main(["validate", "-c", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}:{line}: {key}" in err and "Traceback" not in err


def test_missing_config_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", str(tmp_path / "nope.yaml")]) == EXIT_USAGE
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_accounts_lists_the_selected_accounts(crawl_org, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              fmt: str) -> None:
    sim = crawl_org(SPEC)
    path = write_config(tmp_path, FAST)
    assert main(["accounts", "-c", str(path), "--format", fmt]) == EXIT_OK
    out = capsys.readouterr().out
    active = sorted(i for i, m in sim.model.accounts.items() if m.account.state == "ACTIVE")
    if fmt == "json":
        assert [item["id"] for item in json.loads(out)] == active
    elif fmt == "csv":
        assert [row["id"] for row in csv.DictReader(io.StringIO(out))] == active
    else:
        assert all(account_id in out for account_id in active)
    assert not [operation for (_, operation) in sim.state.calls if operation == "AssumeRole"]


def test_accounts_of_each_shard_split_the_selected_accounts(crawl_org, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sim = crawl_org(SPEC)
    path = write_config(tmp_path, FAST)
    shares = []
    for index in range(2):
        assert main(["accounts", "-c", str(path), "--format", "json", "--shard", f"{index}/2"]) == EXIT_OK
        shares.append([item["id"] for item in json.loads(capsys.readouterr().out)])
    assert sorted(shares[0] + shares[1]) == sorted(i for i, m in sim.model.accounts.items()
                                                   if m.account.state == "ACTIVE")
    assert all(shard_of(account_id, 2) == index for index, share in enumerate(shares) for account_id in share)


def test_run_exit_codes_follow_the_outcome(crawl_org, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = crawl_org(replace(SPEC, accounts_without_crawler_role=1))
    complete = write_config(tmp_path, FAST + "organization:\n  exclude:\n    account_ids: ["
                            + ", ".join(f'"{i}"' for i, m in sim.model.accounts.items() if not m.has_crawler_role)
                            + "]\n")
    assert main(["run", "-c", str(complete), "--output", str(tmp_path / "complete")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "complete" in out and "rows:" in out and str(tmp_path / "complete") in out
    partial = write_config(tmp_path, FAST)
    assert main(["run", "-c", str(partial), "--output", str(tmp_path / "partial")]) == EXIT_FAILURES
    out = capsys.readouterr().out
    assert "completed with recorded failures" in out and "accounts not complete" in out
    assert {row["outcome"] for row in read_rows(tmp_path / "partial", "accounts")} == {"ok", "failed"}


def test_a_selection_of_no_account_publishes_nothing_unless_allowed(crawl_org, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    crawl_org(SPEC)
    output = str(tmp_path / "out")
    dated = FAST + "output: {snapshot_date: 2026-11-30}\n"
    assert main(["run", "-c", str(write_config(tmp_path, dated)), "--output", output]) == EXIT_OK
    populated = latest_manifest(output)
    assert populated is not None and populated["accounts"]["selected"] == 3
    capsys.readouterr()
    nothing = write_config(tmp_path, dated + "organization:\n  include:\n    account_ids: ['000000000000']\n")

    assert main(["run", "-c", str(nothing), "--output", output]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "selects none of the 4 accounts found: nothing was published" in err and "--allow-empty" in err
    assert latest_manifest(output) == populated, "the populated snapshot stays published"
    assert main(["verify", output]) == EXIT_OK

    assert main(["run", "-c", str(nothing), "--output", output, "--allow-empty"]) == EXIT_OK
    empty = latest_manifest(output)
    assert empty is not None and empty["accounts"]["selected"] == 0 and empty["run_id"] != populated["run_id"]


def test_a_run_that_cannot_start_exits_3_and_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Distinct from 1 (published with recorded failures), so cron and job runners can tell the two apart."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    config = write_config(tmp_path, "concurrency: {max_attempts: 1, connect_timeout_seconds: 1}\n")

    assert main(["run", "-c", str(config), "--output", str(tmp_path / "out")]) == EXIT_FATAL
    err = capsys.readouterr().err
    assert err.startswith("access-crawler: error:") and "Traceback" not in err
    assert latest_manifest(str(tmp_path / "out")) is None


def test_a_bug_exits_3_with_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import crawler.config.loader

    def broken(_path: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(crawler.config.loader, "load_config", broken)
    assert main(["validate", "-c", str(tmp_path / "c.yaml")]) == EXIT_FATAL
    err = capsys.readouterr().err
    assert "ZeroDivisionError: a bug" in err and "internal error" in err


def test_shards_run_from_the_command_line_and_the_last_publishes(crawl_org, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    crawl_org(SPEC)
    path = write_config(tmp_path, FAST + "output: {snapshot_date: 2026-11-30}\n")
    output = str(tmp_path / "out")
    with pytest.raises(SystemExit) as bad:
        main(["run", "-c", str(path), "--shard", "2/2"])
    assert bad.value.code == EXIT_USAGE and "the index must be from 0 to count - 1" in capsys.readouterr().err
    assert main(["run", "-c", str(path), "--output", output, "--shard", "1/2", "--run-id", "job-42"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "run job-42 shard 1/2" in out and "waiting for shards 0" in out and "rows:" not in out
    assert main(["consolidate", output, "--snapshot", "2026-11-30"]) == EXIT_USAGE
    assert "shards 0 of 2 are not done" in capsys.readouterr().err
    assert main(["run", "-c", str(path), "--output", output, "--shard", "0/2", "--run-id", "job-42"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "run job-42 shard 0/2" in out and "rows:" in out and "manifest: runs/job-42.json" in out
    assert main(["verify", output]) == EXIT_OK


@pytest.mark.parametrize("output", ["a-file", "/dev/null/x", "/proc/x"])
def test_run_refuses_an_output_that_cannot_hold_the_dataset_in_one_line(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        output: str) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    path = str(tmp_path / output) if output == "a-file" else output
    config = write_config(tmp_path, FAST + f"output: {{path: '{path}'}}\n")
    assert main(["run", "-c", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"access-crawler: error: output path {path} ") and err.count("\n") == 1, err


def test_run_refuses_a_log_file_that_cannot_be_opened_in_one_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    log = tmp_path / "a-file" / "crawler.log"
    config = write_config(tmp_path, FAST.replace("{level: WARNING}", f"{{level: WARNING, file: '{log}'}}"))
    assert main(["run", "-c", str(config), "--output", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"access-crawler: error: cannot open the log file {log}: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["run", "accounts"])
@pytest.mark.parametrize("variable, value, message", [
    ("AWS_SECRET_ACCESS_KEY", "", "AWS credentials cannot be loaded: Partial credentials found in env, missing: "
                                  "AWS_SECRET_ACCESS_KEY"),
    ("AWS_ENDPOINT_URL", "notaurl", "AWS_ENDPOINT_URL is not a usable endpoint URL: Invalid endpoint: notaurl"),
    ("AWS_PROFILE", "doesnotexist", "AWS profile 'doesnotexist' (AWS_PROFILE): "),
], ids=["empty-secret-key", "endpoint-not-a-url", "unknown-profile"])
def test_unusable_aws_settings_are_one_line_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str], command: str,
                                                               variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    config = write_config(tmp_path, FAST.replace("profile: sim, ", ""))
    output = ["--output", str(tmp_path / "out")] if command == "run" else []
    assert main([command, "-c", str(config), *output]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("access-crawler: error: ") and message in err and err.count("\n") == 1, err


def test_run_writes_a_log_file_with_account_ids_and_no_secrets(crawl_org, tmp_path: Path) -> None:
    sim = crawl_org(SPEC)
    path = write_config(tmp_path, FAST)
    assert main(["run", "-c", str(path), "--output", str(tmp_path / "out")]) == EXIT_OK
    log = (tmp_path / "out" / "_logs" / "access-crawler.log").read_text(encoding="utf-8")
    member = sim.member_account_ids[0]
    assert f"[{member}]" in log
    assert sim.credentials is not None and sim.credentials.secret_access_key not in log
    assert "SessionToken" not in log and "SecretAccessKey" not in log


def test_run_expands_a_tilde_in_the_output_for_the_data_and_the_log(crawl_org, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    crawl_org(SPEC)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert main(["run", "-c", str(write_config(tmp_path, FAST)), "--output", "~/x"]) == EXIT_OK
    assert read_rows(home / "x", "accounts") and (home / "x" / "_logs" / "access-crawler.log").is_file()
    assert not list(work.iterdir()), "nothing under a directory named ~"
    assert f"data: {home / 'x'} " in capsys.readouterr().out


@pytest.mark.cli
def test_demo_crawls_the_simulated_organization_end_to_end(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    answer = subprocess.run([sys.executable, "-m", "crawler", "demo", "--out", str(tmp_path / "out"),
                             "--accounts", "3", "--seed", "2"], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert answer.returncode == EXIT_OK, answer.stderr
    assert "accounts: 3 ok" in answer.stdout and "what the data shows" in answer.stdout
    for table in ("service_last_accessed", "action_last_accessed", "entities", "accounts",
                  "entity_service_access", "policies_granting_access"):
        assert read_rows(tmp_path / "out", table), table


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(text=mutated_configs())
def test_any_malformed_config_exits_2_with_a_message_never_a_traceback(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mutated.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", "-c", str(path)])
    assert code in (EXIT_OK, EXIT_USAGE)
    assert "Traceback" not in errors.getvalue()
    if code == EXIT_USAGE:
        assert "mutated.yaml" in errors.getvalue()


def test_verify_exits_0_on_a_clean_snapshot_and_1_on_a_damaged_one(crawl_org, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    crawl_org(SPEC)
    output = tmp_path / "out"
    assert main(["run", "-c", str(write_config(tmp_path, FAST)), "--output", str(output)]) == EXIT_OK
    capsys.readouterr()
    assert main(["verify", str(output)]) == EXIT_OK
    assert capsys.readouterr().out.rstrip().endswith("OK")
    damaged = sorted((output / "entities").glob("snapshot_date=*/*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    assert main(["verify", str(output)]) == EXIT_FAILURES
    assert "corrupt" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["verify", str(output), "--snapshot", "not-a-date"])
    assert usage.value.code == EXIT_USAGE and "is not a date" in capsys.readouterr().err
