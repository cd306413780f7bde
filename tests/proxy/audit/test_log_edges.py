"""The audit log's edges: what it refuses, and how it comes through a prune or a compaction
that fails (proxy/audit/log.py).

Real SQLite in tmp_path throughout. A write lock is taken by a second connection, a batch
is made to fail by a trigger, a disk is full by a file-size limit in a child process, and
time is the injected clock's.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from proxy.audit.database import AuditError
from proxy.audit.log import PRUNE_EVERY, AuditLog, Pruned, audit_summary
from tests.proxy.audit.test_log import (
    DAY,
    NOW,
    SUBPROCESS_ENV,
    TIMEOUT,
    Clock,
    make_log_without_incremental_vacuum,
    retained,
    seed,
)
from tests.support.records import make_record as make
from tests.support.waiting import eventually


@pytest.fixture
def clock() -> Clock:
    return Clock()


class HoldsTheClock:
    """A test double for the injected wall clock, since nothing real pauses the writer
    between taking a new retention and cutting its prune by it: its first reading waits
    until the test says go. (The writer reads the wall clock only to cut a prune.)"""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.reading = threading.Event()
        self.go = threading.Event()

    def wall(self) -> float:
        if not self.reading.is_set():  # only the writer thread reads it
            self.reading.set()
            self.go.wait(TIMEOUT)
        return self.clock.wall()


def held_log(db: Path, held: HoldsTheClock) -> AuditLog:
    """A log that keeps every call for now, on ``held``'s wall clock."""
    return AuditLog(db, clock=held.wall, monotonic=held.clock.monotonic)


def test_a_prune_batch_below_1_is_refused_before_anything_is_made(db: Path) -> None:
    """A prune of batches of 0 calls would never end: refused before a file exists."""
    for bad in (0, -5):
        with pytest.raises(ValueError, match=f"prune_batch must be at least 1, not {bad}"):
            AuditLog(db, prune_batch=bad)
    assert not db.parent.exists()


def test_a_retention_set_after_close_is_kept_and_queues_nothing(log: AuditLog) -> None:
    """The writer is gone and its queue drained as it stopped: a wake-up put there would
    lie in it for ever (the queue is private, but only it shows this)."""
    log.close()
    log.set_retention(7)
    assert log.retention_days == 7
    assert log._queue.empty()


def test_compacting_while_another_process_holds_the_log_fails_and_leaves_it_as_it_was(
    db: Path,
) -> None:
    """VACUUM needs the write lock; held by another connection for longer than
    busy_timeout, it fails: the caller hears why, the file keeps its old layout, and the
    log writes and compacts once the lock is gone."""
    make_log_without_incremental_vacuum(db)
    with AuditLog(db, busy_timeout=0.05) as audit:
        for n in range(50):
            audit.write_sync(make(result_size=n))
        raw = sqlite3.connect(db, isolation_level=None)
        try:
            raw.execute("DELETE FROM calls WHERE result_size < 40")  # free room in the file
        finally:
            raw.close()
        before = audit.summary()
        assert before.free_bytes > 0
        assert not before.incremental_vacuum
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(
                AuditError,
                match=rf"cannot compact the audit log {re.escape(str(db))}: database is locked",
            ) as caught:
                audit.compact()
        finally:
            blocker.close()
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        after = audit.summary()
        assert (after.calls, after.free_bytes, after.incremental_vacuum) == (
            10,
            before.free_bytes,
            False,
        )
        audit.write_sync(make(tool="after"))  # the write connection is usable still
        compacted = audit.compact()
        assert (compacted.calls, compacted.free_bytes, compacted.incremental_vacuum) == (
            11,
            0,
            True,
        )


async def test_a_new_retention_while_a_prune_is_under_way_moves_its_cut(
    db: Path, clock: Clock
) -> None:
    """The prune under way goes on from the new cut, as one prune: the calls it deleted
    still count, and calls the new cut reaches go too, though the old cut's calls were
    all deleted already (it was about to give their pages back)."""
    await seed(
        db,
        *(make(time=NOW - 100 * DAY, result_size=n) for n in range(30)),
        *(make(time=NOW - 5 * DAY, result_size=100 + n) for n in range(3)),
        make(tool="today", time=NOW),
    )
    held = HoldsTheClock(clock)
    with held_log(db, held) as audit:
        audit.set_retention(30)
        await eventually(held.reading.is_set, "the writer to cut the prune for 30 days")
        audit.set_retention(1)  # while the 30 days' prune is about to start
        held.go.set()
        await eventually(lambda: audit.prunes == 1, "the prune to finish")
        assert audit.last_pruned is not None
        assert (audit.last_pruned.before, audit.last_pruned.calls) == (NOW - DAY, 33)
        assert audit.last_pruned.batches == 2  # 30 calls by the first cut, 3 by the new one
        assert [r.tool for r in audit.query()] == ["today"]
        assert audit.prunes == 1


async def test_a_retention_set_as_a_prune_ends_is_pruned_by_at_once(db: Path, clock: Clock) -> None:
    """In an older file a prune ends once its last batch is deleted and the search
    index no longer holds those calls; a retention set meanwhile is pruned by next, in
    the same prune (it goes on from the new cut), before the writer waits for anything.
    (Its wake-up, queued by set_retention, would wake the writer as well: from outside
    the two look the same.)"""
    make_log_without_incremental_vacuum(db)
    await seed(
        db,
        *(make(time=NOW - 100 * DAY, result_size=n) for n in range(30)),
        *(make(time=NOW - 5 * DAY, result_size=100 + n) for n in range(3)),
        make(tool="today", time=NOW),
    )
    held = HoldsTheClock(clock)
    with held_log(db, held) as audit:
        audit.set_retention(30)
        await eventually(held.reading.is_set, "the writer to cut the prune for 30 days")
        audit.set_retention(1)
        held.go.set()
        await eventually(lambda: audit.prunes == 1, "the prune with the new retention")
        assert audit.last_pruned == Pruned(NOW - DAY, calls=33, batches=2, pages_freed=0)
        assert [r.tool for r in audit.query()] == ["today"]


async def test_a_prune_batch_that_fails_is_rolled_back_and_the_log_writes_on(
    db: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger (another program's, say) refuses to delete one of the calls: the batch
    that holds it fails inside the writer's transaction, which is rolled back, so the log
    writes on, another connection can take the write lock, and the prune comes back an
    hour later. The batches before it stay deleted."""
    caplog.set_level("WARNING", logger="proxy.audit.log")
    await seed(db, *(make(time=NOW - 100 * DAY, result_size=n) for n in range(25)))
    await seed(db, make(tool="today", time=NOW))
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        raw.execute(
            "CREATE TRIGGER keep_14 BEFORE DELETE ON calls WHEN old.result_size = 14 "
            "BEGIN SELECT RAISE(ABORT, 'call 14 is kept'); END"
        )
    finally:
        raw.close()
    with retained(db, clock, 30, prune_batch=10) as audit:
        await eventually(lambda: "call 14 is kept" in caplog.text, "the batch to fail")
        assert "could not prune old calls from the audit log (again in an hour)" in caplog.text
        assert audit.prunes == 0
        # calls 0 to 9 went in the first batch; the second (10 to 19) was rolled back whole
        kept = sorted(r.result_size or 0 for r in audit.query(end=NOW - DAY))
        assert kept == list(range(10, 25))
        await audit.write(make(tool="written", time=NOW))
        await eventually(lambda: audit.search_backlog() == 0, "the writer done indexing it")
        other = sqlite3.connect(db, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # the writer holds no transaction open
            other.execute("DROP TRIGGER keep_14")
            other.execute("COMMIT")
        finally:
            other.close()
        clock.mono += PRUNE_EVERY
        await audit.write(make(time=NOW))  # wakes the writer: the hour is over
        await eventually(lambda: audit.prunes == 1, "the prune an hour later")
        assert audit.last_pruned is not None
        assert audit.last_pruned.calls == 15
        assert audit.count(end=NOW - DAY) == 0
        assert audit.count() == 3


GIVE_BACK_ON_A_FULL_DISK = """
import json, logging, resource, signal, sys, threading
from proxy.audit.log import PRUNE_EVERY, AuditLog
from tests.support.records import make_record
from tests.support.waiting import eventually_sync

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self.came = threading.Event()

    def emit(self, record):
        self.messages.append(record.getMessage())
        self.came.set()


warnings = Warnings()
logging.getLogger("proxy.audit.log").addHandler(warnings)
now, mono = float(sys.argv[2]), [1000.0]
log = AuditLog(sys.argv[1], clock=lambda: now, monotonic=lambda: mono[0])
free_before = log.summary().free_bytes
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # no file may grow: the disk is full
log.set_retention(30)  # nothing is that old: the prune's one batch deletes (writes) nothing
came = warnings.came.wait(20)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
free_after = log.summary().free_bytes  # (before a new call's search index takes a page)
log.write_sync(make_record(time=now))  # committed after the failed step, by the same thread
failed = {"came": came, "warnings": list(warnings.messages), "prunes": log.prunes,
    "free_before": free_before, "free_after": free_after}
mono[0] += PRUNE_EVERY
log.write_sync(make_record(time=now))  # wakes the writer: the hour is over
eventually_sync(lambda: log.prunes == 1, "the prune an hour later")
pruned = log.last_pruned
print(json.dumps({**failed, "calls": log.count(), "pages_freed": pruned.pages_freed,
    "free_later": log.summary().free_bytes}))
log.close()
"""


async def test_giving_pages_back_on_a_full_disk_is_rolled_back_and_tried_an_hour_later(
    db: Path,
) -> None:
    """Giving free pages back writes (pages move inside the file): on a full disk that
    fails in the middle of the writer's transaction. The pages stay free, the log writes
    on, and the next prune gives them back. A child process, as a file-size limit is the
    process's own. (SQLite rolls back itself on the I/O error this gives.)"""
    await seed(db, *(make(time=NOW, result_size=n) for n in range(200)))
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        raw.execute("DELETE FROM calls WHERE result_size < 150")  # free pages in the file
        free_pages = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
        page_size = int(raw.execute("PRAGMA page_size").fetchone()[0])
    finally:
        raw.close()
    assert free_pages > 0
    done = subprocess.run(
        [sys.executable, "-c", GIVE_BACK_ON_A_FULL_DISK, str(db), str(NOW)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=SUBPROCESS_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["came"], seen
    (warning,) = seen["warnings"]
    assert warning.startswith("could not prune old calls from the audit log (again in an hour)")
    assert seen["prunes"] == 0
    assert seen["free_after"] == seen["free_before"] == free_pages * page_size
    assert seen["calls"] == 52  # 50 seeded, 2 written after the failure
    assert 0 < seen["pages_freed"] <= free_pages  # (the new calls' search index may take one)
    assert seen["free_later"] == 0


def test_a_summary_of_a_log_under_a_file_is_an_audit_error(tmp_path: Path) -> None:
    """A missing log is an empty one, but a path that cannot be looked at (a folder on it
    is a file) is an error that says why, not an empty log."""
    (tmp_path / "plain-file").write_text("in the way")
    path = tmp_path / "plain-file" / "audit.db"
    with pytest.raises(
        AuditError, match=rf"cannot read the audit log {re.escape(str(path))}: .*Not a directory"
    ):
        audit_summary(path)
    assert (tmp_path / "plain-file").read_text() == "in the way"


def test_a_summary_of_a_missing_log_in_a_missing_folder_is_empty(tmp_path: Path) -> None:
    """The counterpart: nothing there at all is no error (FileNotFoundError is skipped)."""
    summary = audit_summary(tmp_path / "nowhere" / "audit.db")
    assert (summary.size_bytes, summary.calls, summary.oldest) == (0, 0, None)
    assert not (tmp_path / "nowhere").exists()


async def test_a_retention_of_0_set_during_a_prune_stops_it(db: Path, clock: Clock) -> None:
    """Every call is to be kept from now on: the prune under way stops after the batch
    it is in (the calls of that batch are gone), and is never counted as done."""
    await seed(db, *(make(time=NOW - 100 * DAY, result_size=n) for n in range(30)))
    await seed(db, make(tool="today", time=NOW))
    held = HoldsTheClock(clock)
    with AuditLog(db, clock=held.wall, monotonic=clock.monotonic, prune_batch=10) as audit:
        audit.set_retention(30)
        await eventually(held.reading.is_set, "the writer to cut the prune for 30 days")
        audit.set_retention(0)
        held.go.set()
        await eventually(lambda: audit.count() == 21, "the batch under way deleted")
        audit.write_sync(make(tool="later", time=NOW))  # the writer has been round again
        assert audit.count() == 22
        assert (audit.prunes, audit.retention_days) == (0, 0)


def test_reading_arguments_are_checked(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="limit must not be negative"):
        log.query_rows(limit=-1)
    log.write_sync(make())
    assert list(log.recorded_calls(tools=[])) == []
    assert [c.tool for c in log.recorded_calls(tools=[("files", "read_file")])] == ["read_file"]


async def test_a_size_that_cannot_be_measured_is_logged_and_the_log_writes_on(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program renamed the calls table: the size bound's look fails, is logged,
    and is tried again in a minute; nothing else stops."""
    caplog.set_level("WARNING", logger="proxy.audit.log")
    text = "x" * 2000
    await seed(db, *(make(time=NOW, arguments={"text": text}) for _ in range(700)))
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        raw.execute("ALTER TABLE calls RENAME TO kept_elsewhere")
    finally:
        raw.close()
    with AuditLog(db, max_megabytes=1) as audit:
        await eventually(
            lambda: "could not measure the audit log (again in a minute)" in caplog.text,
            "the failed look logged",
        )
        assert audit.prunes == 0
