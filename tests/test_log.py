"""Logging set-up: console and file levels, the account id on every line, JSON lines, rotation, quiet botocore."""
from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crawler.config.settings import LoggingSettings
from crawler.log import LOGGER, QUIET_LOGGERS, close_logging, configure_logging, console_handlers, log_file_path

ACCOUNT_ID = "123456789012"
LOG_NAME = "access-crawler.log"
TEXT_LINE = re.compile(r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})Z (?P<level>[A-Z]+) +\[(?P<account>[^]]+)\] "
                       r"(?P<logger>[\w.]+): (?P<message>.*)")
JSON_KEYS = {"time", "level", "logger", "account_id", "message"}
log = logging.getLogger("crawler.tests")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Close the handlers after each test and give the loggers back their levels."""
    crawler = logging.getLogger(LOGGER)
    saved = crawler.level, crawler.propagate
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    close_logging()
    crawler.setLevel(saved[0])
    crawler.propagate = saved[1]
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def configure(output: Path | str, console: io.StringIO | None = None, **settings: Any) -> Path | None:
    return configure_logging(LoggingSettings(**settings), str(output), console)


def log_one_of_each() -> None:
    log.debug("debug message")
    log.info("info message")
    log.warning("warning message")
    log.error("error message")


def levels_in(text: str) -> set[str]:
    return {word for word in ("debug", "info", "warning", "error") if f"{word} message" in text}


def read_log(path: Path) -> str:
    close_logging()  # flush and release the file before reading it
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("level", "file_level", "on_console", "in_file"), [
    ("INFO", "DEBUG", {"info", "warning", "error"}, {"debug", "info", "warning", "error"}),
    ("WARNING", "INFO", {"warning", "error"}, {"info", "warning", "error"}),
    ("DEBUG", "ERROR", {"debug", "info", "warning", "error"}, {"error"}),
    ("ERROR", "WARNING", {"error"}, {"warning", "error"}),
])
def test_console_and_file_each_have_their_level(tmp_path: Path, level: str, file_level: str, on_console: set[str],
                                                in_file: set[str]) -> None:
    console = io.StringIO()
    path = configure(tmp_path, console, level=level, file_level=file_level)

    log_one_of_each()

    assert path is not None
    assert levels_in(console.getvalue()) == on_console
    assert levels_in(read_log(path)) == in_file


def test_every_console_line_carries_the_account_id_or_a_dash(tmp_path: Path) -> None:
    console = io.StringIO()
    configure(tmp_path, console)

    log.info("entered", extra={"account_id": ACCOUNT_ID})
    logging.getLogger("crawler.progress").info("no account")
    logging.getLogger(LOGGER).warning("from the package logger")

    assert console.getvalue().splitlines() == [f"INFO [{ACCOUNT_ID}] entered", "INFO [-] no account",
                                               "WARNING [-] from the package logger"]


def test_every_file_line_carries_utc_time_level_account_logger_and_message(tmp_path: Path) -> None:
    path = configure(tmp_path, io.StringIO())
    before = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)

    log.debug("inventory read", extra={"account_id": ACCOUNT_ID})
    log.warning("no account here")
    after = datetime.now(timezone.utc).replace(tzinfo=None)

    assert path is not None
    matches = [TEXT_LINE.fullmatch(line) for line in read_log(path).splitlines()]
    assert all(matches)
    fields = [(m["level"], m["account"], m["logger"], m["message"]) for m in matches if m]
    assert fields == [("DEBUG", ACCOUNT_ID, "crawler.tests", "inventory read"),
                      ("WARNING", "-", "crawler.tests", "no account here")]
    times = [datetime.strptime(m["time"], "%Y-%m-%d %H:%M:%S.%f") for m in matches if m]
    assert all(before <= moment <= after for moment in times)  # written in UTC, whatever the local zone


def test_json_gives_one_object_per_line_in_the_file(tmp_path: Path) -> None:
    path = configure(tmp_path, io.StringIO(), json=True)
    before = datetime.now(timezone.utc).replace(microsecond=0)

    log.info("entered", extra={"account_id": ACCOUNT_ID})
    logging.getLogger("crawler.progress").warning("two\nlines, ünïcödé \"quoted\"")
    after = datetime.now(timezone.utc)

    assert path is not None
    entries = [json.loads(line) for line in read_log(path).splitlines()]
    assert [set(entry) for entry in entries] == [JSON_KEYS, JSON_KEYS]
    assert [(e["level"], e["logger"], e["account_id"], e["message"]) for e in entries] == [
        ("INFO", "crawler.tests", ACCOUNT_ID, "entered"),
        ("WARNING", "crawler.progress", "-", "two\nlines, ünïcödé \"quoted\"")]
    times = [datetime.fromisoformat(entry["time"]) for entry in entries]
    assert all(moment.utcoffset() == timedelta(0) for moment in times)
    assert all(before <= moment <= after for moment in times)


def test_json_leaves_the_console_in_text(tmp_path: Path) -> None:
    """config/crawler.example.yaml: ``json`` writes "the log file as JSON lines"; the console stays for people."""
    console = io.StringIO()
    configure(tmp_path, console, json=True)

    log.info("entered", extra={"account_id": ACCOUNT_ID})

    assert console.getvalue().splitlines() == [f"INFO [{ACCOUNT_ID}] entered"]


def test_json_lines_carry_the_exception(tmp_path: Path) -> None:
    path = configure(tmp_path, io.StringIO(), json=True)

    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra={"account_id": ACCOUNT_ID})

    assert path is not None
    (line,) = read_log(path).splitlines()
    entry = json.loads(line)
    assert set(entry) == JSON_KEYS | {"exception"}
    assert (entry["message"], entry["level"], entry["account_id"]) == ("it failed", "ERROR", ACCOUNT_ID)
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize("compress", [True, False])
def test_the_file_rotates_at_max_bytes_keeping_backup_count_files(tmp_path: Path, compress: bool) -> None:
    max_bytes, backups, records = 2048, 3, 400
    path = configure(tmp_path, io.StringIO(), max_bytes=max_bytes, backup_count=backups, compress_rotated=compress)

    for number in range(records):
        log.info("record %05d %s", number, "x" * 60)

    assert path is not None
    close_logging()
    suffix = ".gz" if compress else ""
    # concurrent-log-handler compresses synchronously, inside the rollover: .1.gz, .2.gz, ... and no plain copy.
    rotated = [path.with_name(f"{LOG_NAME}.{index}{suffix}") for index in range(1, backups + 1)]
    log_files = sorted(item.name for item in path.parent.iterdir() if item.name.startswith(LOG_NAME))
    assert log_files == sorted([LOG_NAME] + [item.name for item in rotated])
    texts = []
    for item in rotated:
        data = item.read_bytes()
        assert data.startswith(b"\x1f\x8b") == compress
        texts.append((gzip.decompress(data) if compress else data).decode("utf-8"))
        assert len(texts[-1].encode("utf-8")) >= max_bytes
    texts.append(path.read_text(encoding="utf-8"))
    assert len(texts[-1].encode("utf-8")) < max_bytes + 200
    # Oldest backup first, then the live file: one unbroken run of records ending with the last one.
    numbers = [int(m["message"].split()[1]) for text in [*texts[-2::-1], texts[-1]]
               for m in map(TEXT_LINE.fullmatch, text.splitlines()) if m]
    assert numbers == list(range(numbers[0], records))
    assert numbers[0] > 0  # older files were dropped


def test_a_disabled_file_writes_nothing(tmp_path: Path) -> None:
    console = io.StringIO()

    path = configure(tmp_path, console, file_enabled=False)
    log_one_of_each()
    close_logging()

    assert path is None
    assert list(tmp_path.iterdir()) == []
    assert "info message" in console.getvalue()


@pytest.mark.parametrize(("settings", "output", "expected"), [
    (LoggingSettings(), "/data/crawl", Path("/data/crawl/_logs/access-crawler.log")),
    (LoggingSettings(), "./crawl", Path("crawl/_logs/access-crawler.log")),
    (LoggingSettings(), "s3://bucket/prefix", None),
    (LoggingSettings(), "gs://bucket/prefix", None),
    (LoggingSettings(file="/var/log/crawler.log"), "s3://bucket/prefix", Path("/var/log/crawler.log")),
    (LoggingSettings(file="/var/log/crawler.log"), "/data/crawl", Path("/var/log/crawler.log")),
    (LoggingSettings(file_enabled=False), "/data/crawl", None),
    (LoggingSettings(file_enabled=False, file="/var/log/crawler.log"), "/data/crawl", None),
])
def test_log_file_path(settings: LoggingSettings, output: str, expected: Path | None) -> None:
    assert log_file_path(settings, output) == expected


def test_a_remote_output_logs_to_the_console_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    console = io.StringIO()

    path = configure("s3://bucket/prefix", console)
    log.info("info message")
    close_logging()

    assert path is None
    assert list(tmp_path.iterdir()) == []
    assert levels_in(console.getvalue()) == {"info"}


def test_an_explicit_file_is_created_with_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "deep" / "crawler.log"

    path = configure(tmp_path / "out", io.StringIO(), file=str(target))
    log.info("info message")

    assert path == target
    assert levels_in(read_log(target)) == {"info"}
    assert not (tmp_path / "out").exists()


def test_botocore_and_friends_are_held_at_warning(tmp_path: Path) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    path = configure(tmp_path, io.StringIO(), level="DEBUG", file_level="DEBUG")

    logging.getLogger("botocore.endpoint").debug("Making request with body: SecretAccessKey=abc")
    log.debug("debug message")

    assert path is not None
    assert {name: logging.getLogger(name).level for name in QUIET_LOGGERS} == dict.fromkeys(QUIET_LOGGERS,
                                                                                           logging.WARNING)
    assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    text = read_log(path)
    assert "SecretAccessKey" not in text
    assert levels_in(text) == {"debug"}


def test_configuring_again_replaces_the_handlers(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure(tmp_path, first)
    configure(tmp_path, second)

    log.info("info message")

    assert first.getvalue() == ""
    assert second.getvalue().splitlines() == ["INFO [-] info message"]
    assert len(console_handlers()) == 1
    assert len(logging.getLogger(LOGGER).handlers) == 2


def test_the_console_defaults_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(tmp_path, None, file_enabled=False)

    log.warning("warning message")

    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "WARNING [-] warning message\n")


def test_close_logging_removes_every_handler(tmp_path: Path) -> None:
    configure(tmp_path, io.StringIO())

    close_logging()

    assert logging.getLogger(LOGGER).handlers == []
    assert console_handlers() == []
