"""Progress counters (thread-safe), the status line, and the display: live line on a terminal, log lines elsewhere."""
from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

import pytest

from crawler.progress import Progress, ProgressDisplay

CLEAR = "\r\033[K"


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def progress_with(clock: FakeClock, **counts: int) -> Progress:
    progress = Progress(clock=clock)
    for name, amount in counts.items():
        progress.add(name, amount)
    return progress


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def progress_records(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog for ``crawler.progress``, even after configure_logging stopped ``crawler`` propagating."""
    monkeypatch.setattr(logging.getLogger("crawler"), "propagate", True)
    caplog.set_level(logging.INFO, logger="crawler.progress")
    return caplog


# -- counters ------------------------------------------------------------------------------------------------------


def test_counters_add_up_across_threads() -> None:
    progress = Progress()
    threads, adds = 16, 2000
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(adds):
            progress.add("entities_done")
            progress.add("throttled", 3)
            progress.add("jobs_in_flight", 1)
            progress.add("jobs_in_flight", -1)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert progress.snapshot() == {"entities_done": threads * adds, "throttled": 3 * threads * adds,
                                   "jobs_in_flight": 0}


def test_snapshot_is_a_copy() -> None:
    progress = Progress()
    progress.add("accounts_done")

    snapshot = progress.snapshot()
    snapshot["accounts_done"] = 99
    progress.add("accounts_done")

    assert snapshot == {"accounts_done": 99}
    assert progress.snapshot() == {"accounts_done": 2}


def test_elapsed_counts_from_creation() -> None:
    clock = FakeClock(100.0)
    progress = Progress(clock=clock)

    clock.now = 161.5

    assert progress.elapsed() == 61.5


# -- status line ---------------------------------------------------------------------------------------------------


def test_status_line_shows_every_counter() -> None:
    clock = FakeClock()
    progress = progress_with(clock, accounts_total=12, accounts_done=3, entities_total=400, entities_done=100,
                             jobs_in_flight=7, throttled=5, entities_failed=2)
    clock.now += 3725  # 1:02:05

    line = progress.status_line()

    # ETA from the entities: 3725 s for 100 of 400, so 3 * 3725 s = 3:06:15 to go.
    assert line == ("accounts 3/12  entities 100/400  jobs in flight 7  throttled 5  failed 2  elapsed 1:02:05  "
                    "ETA 3:06:15")


@pytest.mark.parametrize(("counts", "elapsed", "eta"), [
    pytest.param({}, 10, "-", id="nothing-known"),
    pytest.param({"accounts_total": 4}, 10, "-", id="nothing-done"),
    pytest.param({"accounts_total": 4, "entities_total": 50}, 10, "-", id="no-entity-done"),
    pytest.param({"accounts_total": 4, "accounts_done": 1}, 60, "0:03:00", id="from-accounts"),
    pytest.param({"accounts_total": 4, "accounts_done": 3, "entities_total": 10, "entities_done": 5}, 60, "0:01:00",
                 id="entities-win-over-accounts"),
    pytest.param({"accounts_total": 4, "accounts_done": 4}, 60, "-", id="all-done"),
    pytest.param({"entities_total": 10, "entities_done": 12}, 60, "-", id="more-done-than-known"),
    pytest.param({"accounts_total": 2, "accounts_done": 1}, 36_000, "10:00:00", id="hours"),
])
def test_status_line_eta(counts: dict[str, int], elapsed: float, eta: str) -> None:
    clock = FakeClock()
    progress = progress_with(clock, **counts)
    clock.now += elapsed

    assert progress.status_line().endswith(f"  ETA {eta}")


@pytest.mark.parametrize(("elapsed", "shown"), [(0, "0:00:00"), (59.9, "0:00:59"), (61, "0:01:01"),
                                                 (3600, "1:00:00"), (100 * 3600 + 5, "100:00:05")])
def test_status_line_elapsed(elapsed: float, shown: str) -> None:
    clock = FakeClock()
    progress = Progress(clock=clock)
    clock.now += elapsed

    assert f"  elapsed {shown}  " in progress.status_line()


def test_a_fresh_status_line() -> None:
    assert Progress(clock=FakeClock()).status_line() == (
        "accounts 0/0  entities 0/0  jobs in flight 0  throttled 0  failed 0  elapsed 0:00:00  ETA -")


# -- display -------------------------------------------------------------------------------------------------------


def test_not_live_logs_progress_lines(progress_records: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = progress_with(FakeClock(), accounts_total=2, accounts_done=1)
    expected = f"progress: {progress.status_line()}"

    with ProgressDisplay(progress, stream=stream, interval=0.01, live=False):
        wait_for(lambda: len(progress_records.records) >= 3)

    records = [record for record in progress_records.records if record.name == "crawler.progress"]
    assert len(records) >= 3
    assert {record.getMessage() for record in records} == {expected}
    assert {record.levelno for record in records} == {logging.INFO}
    assert stream.getvalue() == ""


def test_not_live_stops_logging_on_exit(progress_records: pytest.LogCaptureFixture) -> None:
    with ProgressDisplay(Progress(), stream=io.StringIO(), interval=0.01, live=False):
        wait_for(lambda: len(progress_records.records) >= 1)
    count = len(progress_records.records)

    time.sleep(0.05)

    assert len(progress_records.records) == count


def test_live_rewrites_one_line_and_clears_it_on_exit(progress_records: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = progress_with(FakeClock(), accounts_total=3, accounts_done=1, jobs_in_flight=4)
    line = progress.status_line()

    with ProgressDisplay(progress, stream=stream, interval=0.01, live=True):
        wait_for(lambda: stream.getvalue().count(CLEAR) >= 3)

    written = stream.getvalue()
    assert written.endswith(CLEAR)
    parts = written.split(CLEAR)
    # "" before the first clear, then one status line per tick, then "" after the final clear
    assert parts[0] == "" and parts[-1] == ""
    assert len(parts) >= 4
    assert set(parts[1:-1]) == {line}
    assert "\n" not in written
    assert [record for record in progress_records.records if record.name == "crawler.progress"] == []


def test_live_display_follows_the_counters() -> None:
    stream = io.StringIO()
    progress = progress_with(FakeClock(), accounts_total=2)

    with ProgressDisplay(progress, stream=stream, interval=0.01, live=True):
        wait_for(lambda: "accounts 0/2" in stream.getvalue())
        progress.add("accounts_done")
        wait_for(lambda: "accounts 1/2" in stream.getvalue())

    assert stream.getvalue().endswith(CLEAR)


@pytest.mark.parametrize(("live", "written"), [(True, CLEAR), (False, "")])
def test_clear_line_writes_only_when_live(live: bool, written: str) -> None:
    stream = io.StringIO()
    display = ProgressDisplay(Progress(), stream=stream, live=live)
    record = logging.LogRecord("crawler", logging.INFO, __file__, 1, "a message", None, None)

    kept = display.clear_line(record)

    assert kept is True
    assert stream.getvalue() == written


def test_clear_line_as_a_handler_filter_clears_before_each_console_line() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(Progress(), stream=stream, live=True)
    handler = logging.StreamHandler(stream)
    handler.addFilter(display.clear_line)
    logger = logging.getLogger("tests.progress.console")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("first")
        logger.warning("second")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    assert stream.getvalue() == f"{CLEAR}first\n{CLEAR}second\n"


@pytest.mark.parametrize(("live", "interval"), [(True, 0.5), (False, 30.0)])
def test_default_interval_depends_on_liveness(live: bool, interval: float) -> None:
    assert ProgressDisplay(Progress(), stream=io.StringIO(), live=live).interval == interval


@pytest.mark.parametrize("tty", [True, False])
def test_liveness_defaults_to_whether_the_stream_is_a_terminal(tty: bool) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert ProgressDisplay(Progress(), stream=Stream()).live is tty
