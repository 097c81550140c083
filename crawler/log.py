"""Logging set-up: console at one level, a rotating file (concurrent-log-handler) at another.

Every record carries an ``account_id`` (``-`` when it is about no account). Credentials are
never logged: the crawler logs no request parameters, and botocore's own loggers, which can
print request bodies at DEBUG, are held at WARNING.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from concurrent_log_handler import ConcurrentRotatingFileHandler

from crawler.config.settings import LoggingSettings
from crawler.errors import UsageError

LOGGER = "crawler"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(account_id)s] %(name)s: %(message)s"
CONSOLE_FORMAT = "%(levelname)s [%(account_id)s] %(message)s"
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


class AccountField(logging.Filter):
    """Give every record an ``account_id`` attribute."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``account_id`` to ``-`` when the record has none; never drops a record."""
        if not hasattr(record, "account_id"):
            record.account_id = "-"
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, account_id, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "account_id": getattr(record, "account_id", "-"),
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_file_path(settings: LoggingSettings, output_path: str) -> Path | None:
    """Where the log file goes, or None when file logging is off (or the output is not local)."""
    if not settings.file_enabled:
        return None
    if settings.file:
        return Path(settings.file)
    if "://" in output_path:
        return None
    return Path(output_path) / "_logs" / "access-crawler.log"


def configure_logging(settings: LoggingSettings, output_path: str, console: TextIO | None = None) -> Path | None:
    """Install the console and file handlers on the ``crawler`` logger; return the log file path."""
    close_logging()
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    console_handler = logging.StreamHandler(console or sys.stderr)
    console_handler.setLevel(settings.level)
    console_handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    console_handler.addFilter(AccountField())
    logger.addHandler(console_handler)
    path = log_file_path(settings, output_path)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = ConcurrentRotatingFileHandler(
                str(path), maxBytes=settings.max_bytes, backupCount=settings.backup_count,
                use_gzip=settings.compress_rotated, encoding="utf-8")
        except OSError as error:
            close_logging()
            raise UsageError(f"cannot open the log file {path}: {error} (set logging.file, or "
                             "logging.file_enabled: false)") from error
        file_handler.setLevel(settings.file_level)
        file_handler.setFormatter(JsonLines() if settings.json else _utc_formatter())
        file_handler.addFilter(AccountField())
        logger.addHandler(file_handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return path


def console_handlers() -> list[logging.Handler]:
    """The console handlers installed by :func:`configure_logging`."""
    return [handler for handler in logging.getLogger(LOGGER).handlers
            if type(handler) is logging.StreamHandler]


def close_logging() -> None:
    """Flush and remove the handlers (the file handler holds a lock file open)."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _utc_formatter() -> logging.Formatter:
    formatter = logging.Formatter(TEXT_FORMAT)
    formatter.converter = time.gmtime
    formatter.default_msec_format = "%s.%03dZ"
    return formatter
