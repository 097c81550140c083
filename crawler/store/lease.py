"""The lease a run holds on its (output root, snapshot date): one run at a time writes a snapshot.

Two processes working in one run's staging directory lose data: one publishes and removes it
while the other re-stages. So a run takes the lease of its snapshot date before it plans (and
so before it decides to resume anything) and holds it until it has published or stopped::

    _leases/<snapshot_date>.json    {"snapshot_date", "run_id", "holders": {<process id>: holder}}

The lease is created exclusively and every change to it is a compare-and-swap: on a local disk
under a guard file created with ``O_EXCL``, on S3 with ``If-None-Match``/``If-Match`` on the
object's ETag. Each holder records where it runs (host, pid, the pid's start time) and a
heartbeat its process renews every :data:`HEARTBEAT_SECONDS`. A holder is dead when, on the
same host, its process is gone, or, anywhere, its heartbeat is older than
:data:`STALE_AFTER_SECONDS`; a dead holder's lease is taken over, and the log says so.

Shards of one run share the lease: a shard joins while the holders are other shards of the
same run id, and refuses when its own shard (or another run, or an unsharded run) is live.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import pyarrow.fs as pafs

from crawler.errors import CrawlerError, Interrupted, UsageError

log = logging.getLogger(__name__)

LEASES_DIR = "_leases"
#: How often a holder renews its heartbeat.
HEARTBEAT_SECONDS = 30.0
#: A holder whose heartbeat is older than this is dead, wherever it runs (documented in the README).
STALE_AFTER_SECONDS = 300.0
#: How often a run waiting for the lease (``--wait``) looks again.
WAIT_POLL_SECONDS = 5.0
#: A local guard file older than this was left by a process that died while changing the lease.
GUARD_STALE_SECONDS = 30.0
#: The member name of an unsharded run (shards are named ``K-of-N``).
WHOLE_RUN = "run"


class LeaseHeld(UsageError):
    """Another live process holds the lease of the snapshot date (exit code 2)."""


class LeaseError(CrawlerError):
    """The lease cannot be read or written (the output is unreachable): nothing was crawled."""


class LeaseLost(CrawlerError):
    """The lease was taken over while the run held it (its heartbeat could not be renewed): nothing published."""


@dataclass(frozen=True)
class Holder:
    """One process holding (part of) a lease: where it runs and when it last said it is alive."""

    process_id: str
    member: str
    host: str
    machine: str
    pid: int
    pid_started: str | None
    since: str
    heartbeat_at: str

    @classmethod
    def of_this_process(cls, member: str, now: datetime) -> Holder:
        """A holder record for the calling process."""
        stamp = now.isoformat(timespec="microseconds")
        return cls(uuid.uuid4().hex, member, socket.gethostname(), machine_id(), os.getpid(),
                   process_start(os.getpid()), stamp, stamp)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Holder:
        """A holder as stored in the lease."""
        return cls(str(document["process_id"]), str(document["member"]), str(document.get("host", "")),
                   str(document.get("machine", "")), int(document.get("pid", 0)), document.get("pid_started"),
                   str(document.get("since", "")), str(document.get("heartbeat_at", "")))

    def to_dict(self) -> dict[str, Any]:
        """The holder as stored in the lease."""
        return {"process_id": self.process_id, "member": self.member, "host": self.host, "machine": self.machine,
                "pid": self.pid, "pid_started": self.pid_started, "since": self.since,
                "heartbeat_at": self.heartbeat_at}

    def death(self, now: datetime, stale_after: float) -> str | None:
        """Why this holder is dead ("pid 123 is gone", "heartbeat 400 s old"), or None while it is alive."""
        age = heartbeat_age(self.heartbeat_at, now)
        if age > stale_after:
            return f"its heartbeat is {age:.0f} s old (the limit is {stale_after:.0f} s)"
        if self.machine == machine_id() and process_start(self.pid) != self.pid_started:
            return f"its process {self.pid} on this host is gone"
        return None

    def describe(self, now: datetime) -> str:
        """The holder for people: member, pid, host and heartbeat age."""
        member = "" if self.member == WHOLE_RUN else f"shard {self.member}, "
        return (f"{member}pid {self.pid} on {self.host}, heartbeat "
                f"{heartbeat_age(self.heartbeat_at, now):.0f} s ago")


def heartbeat_age(stamp: str, now: datetime) -> float:
    """Seconds since the ISO time ``stamp`` (infinite when it cannot be read)."""
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return float("inf")


@functools.cache
def machine_id() -> str:
    """What tells this machine's processes from another's: host name, kernel boot and pid namespace.

    Two containers on one host with the same host name have other pid namespaces, so a pid is
    only compared on the very same machine and namespace.
    """
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
        parts.append(boot.read().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def process_start(pid: int) -> str | None:
    """A mark of when process ``pid`` started (so a reused pid is not taken for it); None when it is gone.

    Linux: the start time from ``/proc/<pid>/stat`` (None for a zombie). Elsewhere: "alive" while
    a signal 0 reaches it.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


class ObjectConditions(Protocol):
    """Conditional reads and writes of objects (``crawler.aws.s3.ConditionalObjects``): the S3 side of a lease."""

    def read(self, path: str) -> tuple[bytes, str] | None:
        """The object's content and version, or None."""

    def put(self, path: str, content: bytes, version: str | None = None) -> bool:
        """Write if absent (``version`` None) or still at ``version``."""

    def delete(self, path: str, version: str) -> bool:
        """Delete if still at ``version``."""


class LeaseStore:
    """The lease object of one date, changed only by exclusive create and compare-and-swap.

    ``read`` returns the document and a version token; ``create``, ``replace`` and ``delete``
    succeed only while the object is absent (create) or still at that version, and return False
    when another process changed it first.
    """

    def __init__(self, filesystem: pafs.FileSystem, path: str, objects: ObjectConditions | None = None) -> None:
        self.path = path
        self._local = isinstance(filesystem, pafs.LocalFileSystem)
        #: Only local disks and S3 offer an exclusive create here: elsewhere nothing keeps runs apart.
        self.supported = self._local or (filesystem.type_name == "s3" and objects is not None)
        if not self.supported:
            log.warning("%s filesystems cannot create a file exclusively here: nothing keeps two runs of one "
                        "snapshot date apart on this output; make sure only one runs at a time", filesystem.type_name)
        self._objects = objects

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The lease document and its version, or (None, None) when there is no lease."""
        if not self.supported:
            return None, None
        if self._local:
            try:
                with open(self.path, "rb") as stream:
                    content = stream.read()
            except FileNotFoundError:
                return None, None
            return _parse(content, self.path), hashlib.sha256(content).hexdigest()
        assert self._objects is not None
        found = self._objects.read(self.path)
        return (None, None) if found is None else (_parse(found[0], self.path), found[1])

    def create(self, document: Mapping[str, Any]) -> bool:
        """Write the lease if there is none: False when another process created it first."""
        return self._change(None, document)

    def replace(self, document: Mapping[str, Any], version: str) -> bool:
        """Write the lease if it is still at ``version``."""
        return self._change(version, document)

    def delete(self, version: str) -> bool:
        """Remove the lease if it is still at ``version``."""
        return self._change(version, None)

    def _change(self, version: str | None, document: Mapping[str, Any] | None) -> bool:
        content = None if document is None else json.dumps(document, indent=2).encode() + b"\n"
        if not self.supported:
            return version is None  # a lease nobody can see: taking it always succeeds, changing it never
        if self._local:
            return self._change_locally(version, content)
        assert self._objects is not None
        if content is None:
            return self._objects.delete(self.path, str(version))
        return self._objects.put(self.path, content, version)

    def _change_locally(self, version: str | None, content: bytes | None) -> bool:
        with self._guard():
            _, current = self.read()
            if current != version:
                return False
            if content is None:
                os.remove(self.path)
                return True
            temporary = f"{self.path}.tmp-{uuid.uuid4().hex}"
            with open(temporary, "wb") as stream:
                stream.write(content)
            os.replace(temporary, self.path)
            return True

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lease's guard file (``<lease>.lock``, created with ``O_EXCL``) while changing it."""
        guard = f"{self.path}.lock"
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        deadline = time.monotonic() + GUARD_STALE_SECONDS * 2
        while True:
            try:
                os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - os.stat(guard).st_mtime > GUARD_STALE_SECONDS:
                        os.remove(guard)  # left by a process that died while it changed the lease
                        continue
                if time.monotonic() > deadline:
                    raise OSError(errno.EBUSY, f"the lease's guard {guard} stays taken") from None
                time.sleep(0.01)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(guard)


def _parse(content: bytes, path: str) -> dict[str, Any]:
    try:
        document = json.loads(content.decode("utf-8"))
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("holders"), dict):
        # a lease nobody can read protects nothing: treat it as held by nobody, and say so
        log.warning("the lease %s is unreadable: treating it as free", path)
        return {"holders": {}}
    return document


class Lease:
    """This process's share of the lease of a snapshot date, renewed by a heartbeat thread until released."""

    def __init__(self, store: LeaseStore, snapshot_date: date, holder: Holder,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.store, self.snapshot_date, self.holder = store, snapshot_date, holder
        self._heartbeat_seconds = heartbeat_seconds
        self._on_lost: Callable[[], None] | None = None
        self._lost = threading.Event()
        self._released = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        """True once the lease was found taken over by another process."""
        return self._lost.is_set()

    def start_heartbeat(self, on_lost: Callable[[], None] | None = None) -> None:
        """Renew the heartbeat every ``heartbeat_seconds`` on a daemon thread until released; call
        ``on_lost`` if the lease turns out taken over (the run then stops and publishes nothing)."""
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def bind(self, run_id: str) -> None:
        """Record the run id the lease is held for (the run is planned under the lease)."""
        self._update(lambda document: {**document, "run_id": run_id})

    def confirm(self) -> None:
        """LeaseLost unless this process still holds the lease (checked before publishing)."""
        if not self._update(lambda document: document):
            raise LeaseLost(f"the lease of snapshot {self.snapshot_date} was taken over by another run while this "
                            "one worked (its heartbeat could not be renewed): nothing was published")

    def release(self) -> None:
        """Leave the lease (and remove it when no holder is left); stops the heartbeat."""
        self._released.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            for _ in range(20):
                document, version = self.store.read()
                if document is None or self.holder.process_id not in document["holders"] or version is None:
                    return
                holders = {key: value for key, value in document["holders"].items()
                           if key != self.holder.process_id}
                changed = self.store.replace({**document, "holders": holders}, version) if holders \
                    else self.store.delete(version)
                if changed:
                    return
        except OSError as error:
            log.warning("could not release the lease of snapshot %s: %s (it expires by itself)",
                        self.snapshot_date, error)

    def _beat(self) -> None:
        while not self._released.wait(self._heartbeat_seconds):
            try:
                if not self._update(self._renewed):
                    log.error("the lease of snapshot %s was taken over by another run: stopping",
                              self.snapshot_date)
                    if self._on_lost is not None:
                        self._on_lost()
                    return
            except OSError as error:
                log.warning("could not renew the lease of snapshot %s: %s", self.snapshot_date, error)

    def _renewed(self, document: dict[str, Any]) -> dict[str, Any]:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        mine = {**document["holders"][self.holder.process_id], "heartbeat_at": stamp}
        return {**document, "holders": {**document["holders"], self.holder.process_id: mine}}

    def _update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
        """Apply ``change`` to the lease while this process holds it; False (and lost) once it does not."""
        if not self.store.supported:
            return True
        while True:
            document, version = self.store.read()
            if document is None or version is None or self.holder.process_id not in document["holders"]:
                self._lost.set()
                return False
            if self.store.replace(change(document), version):
                return True


def acquire_lease(store: LeaseStore, snapshot_date: date, member: str = WHOLE_RUN, run_id: str | None = None,
                  wait: float | None = None, stop: threading.Event | None = None,
                  stale_after: float = STALE_AFTER_SECONDS, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                  poll_seconds: float = WAIT_POLL_SECONDS) -> Lease:
    """Take (or, as a shard of run ``run_id``, join) the lease of ``snapshot_date``.

    LeaseHeld naming the live holder when another run (or the same shard) holds it, at once, or
    after ``wait`` seconds of waiting for it (``float("inf")``: until it is free). A dead holder's
    share is taken over, and logged.
    """
    try:
        return _acquire(store, snapshot_date, member, run_id, wait, stop, stale_after, heartbeat_seconds,
                        poll_seconds)
    except OSError as error:
        raise LeaseError(f"cannot take the lease of snapshot {snapshot_date} ({store.path}): {error}") from error


def _acquire(store: LeaseStore, snapshot_date: date, member: str, run_id: str | None, wait: float | None,
             stop: threading.Event | None, stale_after: float, heartbeat_seconds: float,
             poll_seconds: float) -> Lease:
    deadline = None if wait is None else time.monotonic() + wait
    said_waiting = False
    while True:
        now = datetime.now(UTC)
        holder = Holder.of_this_process(member, now)
        document, version = store.read()
        blocking = _blocking_holders(document, member, run_id, now, stale_after)
        if not blocking:
            lease = _take(store, snapshot_date, holder, document, version, run_id, now, stale_after,
                          heartbeat_seconds)
            if lease is not None:
                return lease
            continue  # another process changed the lease meanwhile: look again
        held_by = _describe_holding(document, blocking, now)
        if stop is not None and stop.is_set():
            raise Interrupted(f"stopped while waiting for the lease of snapshot {snapshot_date}, held by {held_by}")
        if deadline is None or time.monotonic() >= deadline:
            raise LeaseHeld(f"snapshot {snapshot_date} is being written by {held_by}: wait for it to finish (run "
                            "with --wait to wait), or crawl another snapshot date")
        if not said_waiting:
            log.warning("snapshot %s is being written by %s: waiting for it to finish", snapshot_date, held_by)
            said_waiting = True
        if stop is not None:
            stop.wait(poll_seconds)
        else:
            time.sleep(poll_seconds)


def _blocking_holders(document: Mapping[str, Any] | None, member: str, run_id: str | None, now: datetime,
                      stale_after: float) -> list[Holder]:
    """The live holders that keep ``member`` (of run ``run_id``) out: all, unless it joins its run's shards."""
    if document is None:
        return []
    live = [holder for holder in _holders(document) if holder.death(now, stale_after) is None]
    joins = run_id is not None and member != WHOLE_RUN and document.get("run_id") == run_id
    return [holder for holder in live if not joins or holder.member in (member, WHOLE_RUN)]


def _take(store: LeaseStore, snapshot_date: date, holder: Holder, document: dict[str, Any] | None,
          version: str | None, run_id: str | None, now: datetime, stale_after: float,
          heartbeat_seconds: float) -> Lease | None:
    """Write the lease with ``holder`` in it (dead holders out); None when another process changed it first."""
    if document is None or version is None:
        fresh = {"snapshot_date": snapshot_date.isoformat(), "run_id": run_id,
                 "holders": {holder.process_id: holder.to_dict()}}
        return Lease(store, snapshot_date, holder, heartbeat_seconds) if store.create(fresh) else None
    kept: dict[str, Any] = {}
    for other in _holders(document):
        reason = other.death(now, stale_after)
        if reason is None:
            kept[other.process_id] = other.to_dict()
        else:
            log.warning("taking over the lease of snapshot %s from run %s (%s): %s", snapshot_date,
                        document.get("run_id") or "(not planned yet)", other.describe(now), reason)
    same_run = bool(kept) and document.get("run_id") == run_id
    taken = {"snapshot_date": snapshot_date.isoformat(), "run_id": document.get("run_id") if same_run else run_id,
             "holders": {**kept, holder.process_id: holder.to_dict()}}
    return Lease(store, snapshot_date, holder, heartbeat_seconds) if store.replace(taken, version) else None


def _holders(document: Mapping[str, Any]) -> list[Holder]:
    holders = []
    for value in (document.get("holders") or {}).values():
        try:
            holders.append(Holder.from_dict(value))
        except (KeyError, TypeError, ValueError):
            continue  # a holder nobody can read cannot be alive
    return holders


def _describe_holding(document: Mapping[str, Any] | None, holders: list[Holder], now: datetime) -> str:
    run = (document or {}).get("run_id")
    return f"run {run or '(being planned)'} (" + "; ".join(holder.describe(now) for holder in holders) + ")"
