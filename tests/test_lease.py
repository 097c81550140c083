"""The lease of a snapshot date: one live run at a time, shards of one run together, dead holders taken over,
on a local disk and on S3 (moto's S3 server)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from crawler.crawl.scheduler import objects_for
from crawler.errors import Interrupted
from crawler.store.dataset import lease_store
from crawler.store.lease import (
    STALE_AFTER_SECONDS,
    WHOLE_RUN,
    Holder,
    LeaseHeld,
    LeaseLost,
    LeaseStore,
    acquire_lease,
    machine_id,
    process_start,
)

DAY = date(2026, 11, 30)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LeaseStore:
    """The lease of DAY on a local disk, then on S3."""
    root = str(tmp_path) if request.param == "local" else request.getfixturevalue("make_s3_root")()
    return lease_store(root, DAY, objects_for(root))


def lease_document(store: LeaseStore) -> dict[str, Any]:
    document, _ = store.read()
    assert document is not None
    return document


def plant(store: LeaseStore, run_id: str | None, *holders: Holder) -> None:
    """Write a lease held by ``holders`` (as another process would have)."""
    assert store.create({"snapshot_date": DAY.isoformat(), "run_id": run_id,
                         "holders": {holder.process_id: holder.to_dict() for holder in holders}})


def other_holder(member: str = WHOLE_RUN, age: float = 0.0, host: str = "build-7", machine: str = "elsewhere",
                 pid: int = 4242, started: str | None = "1") -> Holder:
    stamp = (datetime.now(UTC) - timedelta(seconds=age)).isoformat()
    return Holder(f"process-{member}-{pid}", member, host, machine, pid, started, stamp, stamp)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    return int(finished.stdout)


def test_a_free_lease_is_taken_and_released(store: LeaseStore) -> None:
    lease = acquire_lease(store, DAY)
    lease.bind("run-1")

    document = lease_document(store)
    assert document["run_id"] == "run-1" and document["snapshot_date"] == DAY.isoformat()
    [holder] = document["holders"].values()
    assert (holder["pid"], holder["member"], holder["machine"]) == (os.getpid(), WHOLE_RUN, machine_id())
    lease.release()
    assert store.read() == (None, None)


def test_a_live_holder_keeps_a_second_run_out_and_is_named(store: LeaseStore) -> None:
    plant(store, "first-run", other_holder(host="ops-host-2", pid=31337))

    with pytest.raises(LeaseHeld, match=r"run first-run \(pid 31337 on ops-host-2, heartbeat \d+ s ago\)") as raised:
        acquire_lease(store, DAY)

    assert raised.value.exit_code == 2 and "--wait" in str(raised.value)
    assert list(lease_document(store)["holders"]) == ["process-run-31337"], "the holder's lease is untouched"


def test_a_holder_on_this_machine_whose_process_is_gone_is_taken_over(store: LeaseStore,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    plant(store, "killed-run", other_holder(host="here", machine=machine_id(), pid=pid, started="123"))

    with caplog.at_level(logging.WARNING, "crawler.store.lease"):
        lease = acquire_lease(store, DAY)

    assert list(lease_document(store)["holders"]) == [lease.holder.process_id]
    assert f"taking over the lease of snapshot {DAY} from run killed-run" in caplog.text
    assert f"process {pid} on this host is gone" in caplog.text
    lease.release()


def test_a_reused_pid_is_not_taken_for_the_holder(store: LeaseStore) -> None:
    """The pid is alive (it is this process) but started at another time: the holder is dead."""
    plant(store, "old-run", other_holder(machine=machine_id(), pid=os.getpid(), started="0"))

    lease = acquire_lease(store, DAY)

    assert list(lease_document(store)["holders"]) == [lease.holder.process_id]
    lease.release()


@pytest.mark.parametrize(("age", "taken_over"), [(STALE_AFTER_SECONDS + 5, True), (STALE_AFTER_SECONDS - 30, False)])
def test_a_holder_on_another_host_is_dead_only_once_its_heartbeat_is_stale(store: LeaseStore, age: float,
                                                                           taken_over: bool) -> None:
    plant(store, "remote-run", other_holder(age=age))

    if not taken_over:
        with pytest.raises(LeaseHeld):
            acquire_lease(store, DAY)
        return
    lease = acquire_lease(store, DAY)
    assert list(lease_document(store)["holders"]) == [lease.holder.process_id]
    lease.release()


def test_shards_of_one_run_share_the_lease_and_keep_everyone_else_out(store: LeaseStore) -> None:
    first = acquire_lease(store, DAY, "0-of-3", "run-s")
    second = acquire_lease(store, DAY, "1-of-3", "run-s")

    with pytest.raises(LeaseHeld, match="shard 0-of-3"):
        acquire_lease(store, DAY, "0-of-3", "run-s")  # the same shard twice
    with pytest.raises(LeaseHeld):
        acquire_lease(store, DAY, "2-of-3", "another-run")
    with pytest.raises(LeaseHeld):
        acquire_lease(store, DAY)  # an unsharded run
    assert {holder["member"] for holder in lease_document(store)["holders"].values()} == {"0-of-3", "1-of-3"}
    first.release()
    assert lease_document(store)["run_id"] == "run-s"
    second.release()
    assert store.read() == (None, None)


def test_a_shard_does_not_join_an_unsharded_run(store: LeaseStore) -> None:
    whole = acquire_lease(store, DAY)
    whole.bind("run-w")

    with pytest.raises(LeaseHeld):
        acquire_lease(store, DAY, "0-of-2", "run-w")
    whole.release()


def test_one_of_many_racing_runs_takes_a_free_lease(store: LeaseStore) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def race() -> None:
        start.wait()
        try:
            acquire_lease(store, DAY)
            outcomes.append("took")
        except LeaseHeld:
            outcomes.append("refused")

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused"] * 5 + ["took"]
    assert len(lease_document(store)["holders"]) == 1


def test_waiting_takes_the_lease_once_its_holder_releases_it(store: LeaseStore) -> None:
    holding = acquire_lease(store, DAY)
    threading.Timer(0.5, holding.release).start()

    started = time.monotonic()
    waited = acquire_lease(store, DAY, wait=30, poll_seconds=0.05)

    assert 0.4 < time.monotonic() - started < 20
    assert list(lease_document(store)["holders"]) == [waited.holder.process_id]
    waited.release()


def test_waiting_gives_up_after_its_limit_or_when_stopped(store: LeaseStore) -> None:
    holding = acquire_lease(store, DAY)
    started = time.monotonic()
    with pytest.raises(LeaseHeld):
        acquire_lease(store, DAY, wait=0.3, poll_seconds=0.05)
    assert 0.25 < time.monotonic() - started < 10
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Interrupted):
        acquire_lease(store, DAY, wait=float("inf"), stop=stop, poll_seconds=0.05)
    holding.release()


def test_the_heartbeat_renews_the_lease(store: LeaseStore) -> None:
    lease = acquire_lease(store, DAY, heartbeat_seconds=0.05)
    first = lease_document(store)["holders"][lease.holder.process_id]["heartbeat_at"]
    lease.start_heartbeat()
    deadline = time.monotonic() + 10
    while lease_document(store)["holders"][lease.holder.process_id]["heartbeat_at"] == first:
        assert time.monotonic() < deadline, "the heartbeat was never renewed"
        time.sleep(0.05)
    lease.release()


def test_a_lease_taken_over_is_noticed_and_stops_the_run(store: LeaseStore) -> None:
    lease = acquire_lease(store, DAY, heartbeat_seconds=0.05)
    stopped = threading.Event()
    lease.start_heartbeat(on_lost=stopped.set)
    document, version = store.read()
    assert document is not None and version is not None
    intruder = other_holder()
    assert store.replace({**document, "run_id": "intruder", "holders": {intruder.process_id: intruder.to_dict()}},
                         version)

    assert stopped.wait(10)
    assert lease.lost
    with pytest.raises(LeaseLost, match="nothing was published"):
        lease.confirm()
    lease.release()
    assert lease_document(store)["run_id"] == "intruder", "releasing a lost lease leaves the new holder's alone"


def test_an_unreadable_lease_is_free_and_said_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = lease_store(str(tmp_path), DAY)
    Path(store.path).write_text("{not json", encoding="utf-8")

    with caplog.at_level(logging.WARNING, "crawler.store.lease"):
        lease = acquire_lease(store, DAY)

    assert "unreadable" in caplog.text
    assert list(lease_document(store)["holders"]) == [lease.holder.process_id]
    lease.release()


def test_a_guard_left_by_a_dead_process_is_cleared(tmp_path: Path) -> None:
    store = lease_store(str(tmp_path), DAY)
    guard = Path(f"{store.path}.lock")
    guard.touch()
    os.utime(guard, (time.time() - 120, time.time() - 120))

    lease = acquire_lease(store, DAY)

    assert not guard.exists()
    lease.release()


def test_a_guard_held_by_a_live_change_is_waited_for(tmp_path: Path) -> None:
    store = lease_store(str(tmp_path), DAY)
    guard = Path(f"{store.path}.lock")
    guard.touch()
    threading.Timer(0.3, guard.unlink).start()

    lease = acquire_lease(store, DAY)

    assert json.loads(Path(store.path).read_text())["holders"]
    lease.release()


def test_process_start_tells_a_live_process_from_a_gone_one() -> None:
    assert process_start(os.getpid()) is not None
    assert process_start(dead_pid()) is None


def test_a_lease_on_a_filesystem_without_exclusive_create_warns_and_keeps_nothing_apart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    filesystem = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with caplog.at_level(logging.WARNING, "crawler.store.lease"):
        store = LeaseStore(filesystem, "_leases/day.json")
    first = acquire_lease(store, DAY)
    second = acquire_lease(store, DAY)

    assert not store.supported and "nothing keeps two runs" in caplog.text
    first.confirm()
    first.release()
    second.release()
    assert not (tmp_path / "_leases").exists()
