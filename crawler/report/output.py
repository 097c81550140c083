"""Writing a report's files: under a temporary name beside the target, then renamed into place."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from crawler.errors import CrawlerError


class ReportError(CrawlerError):
    """The report cannot be written as asked: an unwritable path, a missing writer, a sheet too large."""


def replace_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` with a temporary path beside ``path`` (same suffix), then rename it to ``path``:
    a reader never sees half a file. Missing parent directories are created."""
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):  # gone already, or its directory never existed
            temporary.unlink(missing_ok=True)
    return path
