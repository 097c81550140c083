"""Progress of a crawl: thread-safe counters, and a display that shows them while the crawl runs.

On a terminal the display rewrites one status line; elsewhere (CI, a log collector) it logs a
plain line every ``interval`` seconds.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)


class Progress:
    """Counters updated by every worker thread: accounts, entities, jobs in flight, throttles, rows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._clock = clock
        self.started = clock()

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def elapsed(self) -> float:
        """Seconds since the crawl started."""
        return self._clock() - self.started

    def status_line(self) -> str:
        """One line: accounts done/total, entities, jobs in flight, throttles, elapsed and ETA."""
        counts = self.snapshot()
        accounts_total, accounts_done = counts.get("accounts_total", 0), counts.get("accounts_done", 0)
        entities_total, entities_done = counts.get("entities_total", 0), counts.get("entities_done", 0)
        elapsed = self.elapsed()
        return (f"accounts {accounts_done}/{accounts_total}  entities {entities_done}/{entities_total}  "
                f"jobs in flight {counts.get('jobs_in_flight', 0)}  throttled {counts.get('throttled', 0)}  "
                f"failed {counts.get('entities_failed', 0)}  elapsed {_duration(elapsed)}  "
                f"ETA {_eta(elapsed, accounts_done, accounts_total, entities_done, entities_total)}")


class ProgressDisplay:
    """Shows :class:`Progress` until stopped: a live line on a terminal, log lines otherwise."""

    def __init__(self, progress: Progress, stream: TextIO | None = None, interval: float | None = None,
                 live: bool | None = None) -> None:
        self.progress = progress
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval if interval is not None else (0.5 if self.live else 30.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def clear_line(self, record: object) -> bool:
        """A logging filter for a console handler on the same terminal: clear the status line first."""
        if self.live:
            self.stream.write("\r\033[K")
        return True

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.progress.status_line()
            if self.live:
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
            else:
                log.info("progress: %s", line)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _eta(elapsed: float, accounts_done: int, accounts_total: int, entities_done: int, entities_total: int) -> str:
    """Remaining time from the share of work done (entities when known, else accounts)."""
    done, total = (entities_done, entities_total) if entities_total else (accounts_done, accounts_total)
    if not done or not total or done >= total:
        return "-"
    return _duration(elapsed * (total - done) / done)
