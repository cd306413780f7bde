"""The audit log: every answered call is in it, secrets are not, and nothing is lost.

Real SQLite in tmp_path throughout; the crash test kills a real writer process with SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from proxy.audit.database import MIGRATIONS, SCHEMA_VERSION, AuditError
from proxy.audit.log import PRUNE_EVERY, AuditLog, AuditSummary, Pruned, audit_summary
from proxy.audit.records import CallDecision, CallRecord, Charge, Outcome
from proxy.audit.redact import REDACTED
from tests.support.records import compact
from tests.support.records import make_record as make
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[3]
WRITER = REPO / "tests" / "support" / "audit_writer.py"
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TIMEOUT = 60.0  # generous: only ever reached when something is broken
GHP = "ghp_" + "A1b2C3d4E5" * 4  # looks like a GitHub token


# ---------------------------------------------------------------------------- writing


@pytest.mark.asyncio
async def test_every_field_round_trips(log):
    record = make(
        basis="timeout",
        rule=None,
        decision=CallDecision.REFUSED,
        outcome=Outcome.UPSTREAM_DOWN,
        arguments={"n": 1, "f": 0.1, "nested": {"list": [True, None, "ü"]}},
        duration_ms=None,
        result_size=None,
        error="connection reset",
    )
    await log.write(record)
    assert log.get(record.id) == record
    assert log.query() == [record]
    assert [r for _, r in log.since(0)] == [record]


def test_write_sync_round_trips_from_many_threads(log):
    written: list[CallRecord] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(100):
            record = make(tool=f"tool_{n}", result_size=i)
            log.write_sync(record)
            with lock:
                written.append(record)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert log.count() == 800
    stored = {record.id: record for _, record in log.since(0, limit=10_000)}
    assert stored == {record.id: record for record in written}


@pytest.mark.asyncio
async def test_arguments_reason_and_error_are_stored_redacted(log, db):
    record = make(
        arguments={"url": "https://x.io", "api_key": "hunter2", "cmd": f"push {GHP}"},
        reason=f"arguments rejected at $.cmd: 'push {GHP}' is not allowed",
        error=f"upstream said: bad credentials {GHP}",
    )
    await log.write(record)
    with sqlite3.connect(db) as raw:
        row = raw.execute("SELECT arguments, reason, error FROM calls").fetchone()
    raw.close()
    assert not any("hunter2" in column or "ghp_" in column for column in row)
    stored = log.get(record.id)
    assert stored is not None
    assert stored.arguments == {
        "url": "https://x.io",
        "api_key": REDACTED,
        "cmd": f"push {REDACTED}",
    }
    assert stored.error == f"upstream said: bad credentials {REDACTED}"


@pytest.mark.asyncio
async def test_stored_arguments_keep_to_the_cap(tmp_path):
    with AuditLog(tmp_path / "audit.db", max_argument_bytes=256) as audit:
        record = make(arguments={"content": "x" * 100_000})
        await audit.write(record)
        stored = audit.get(record.id)
    assert stored is not None
    assert len(compact(stored.arguments).encode()) <= 256
    assert stored.arguments["content"].endswith("chars]")


@pytest.mark.asyncio
@pytest.mark.no_cover  # a tracer slows the event loop, not SQLite: the batches it measures
async def test_2000_writes_from_50_tasks_all_land_in_few_commits(log):
    async def writer(task: int) -> list[str]:
        ids = []
        for n in range(40):
            record = make(tool=f"tool_{task}", result_size=n)
            await log.write(record)
            ids.append(record.id)
        return ids

    started = time.perf_counter()
    written = await asyncio.gather(*(writer(task) for task in range(50)))
    elapsed = time.perf_counter() - started
    assert log.count() == 2000
    assert {record.id for _, record in log.since(0, limit=5000)} == {
        record_id for ids in written for record_id in ids
    }
    assert log.commits <= 2000 // 4, "group commit should put many records in one commit"
    assert elapsed < 20


@pytest.mark.asyncio
async def test_close_commits_everything_queued_first(db):
    audit = AuditLog(db)
    tasks = [asyncio.create_task(audit.write(make(result_size=n))) for n in range(300)]
    await asyncio.sleep(0)  # one turn of the loop: every task has queued its record
    audit.close()
    await asyncio.gather(*tasks)
    assert audit.count() == 300


@pytest.mark.asyncio
async def test_writing_after_close_raises_and_close_is_idempotent(log):
    await log.write(make())
    log.close()
    log.close()
    await log.aclose()
    with pytest.raises(AuditError, match="closed"):
        await log.write(make())
    with pytest.raises(AuditError, match="closed"):
        log.write_sync(make())
    assert log.count() == 1  # reading still works


@pytest.mark.asyncio
async def test_cancelling_the_waiting_task_does_not_withdraw_the_record(log):
    record = make()
    task = asyncio.create_task(log.write(record))
    await asyncio.sleep(0)  # the task has queued the record and waits for the commit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    log.close()
    assert log.get(record.id) == record


@pytest.mark.parametrize(
    "bad",
    [{"decision": "maybe"}, {"outcome": "fine"}, {"time": math.nan}],
)
def test_a_record_that_makes_no_sense_is_refused_before_queueing(log, bad):
    with pytest.raises(AuditError, match="cannot record call"):
        log.write_sync(make(**bad))
    assert log.count() == 0


# ---------------------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_a_failing_database_surfaces_to_the_waiting_writer(log, db):
    await log.write(make())
    with sqlite3.connect(db) as saboteur:
        saboteur.execute("DROP TABLE calls")
    saboteur.close()
    with pytest.raises(AuditError, match="no such table") as caught:
        await log.write(make())
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(AuditError, match="no such table"):
        log.write_sync(make())
    with pytest.raises(AuditError, match="no such table"):
        log.query()


@pytest.mark.asyncio
async def test_a_locked_database_fails_the_write_and_the_log_recovers(db):
    with AuditLog(db, busy_timeout=0.05) as audit:
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            lost = make()
            with pytest.raises(AuditError, match="locked"):
                await audit.write(lost)
        finally:
            blocker.close()
        kept = make()
        await audit.write(kept)
        assert audit.get(lost.id) is None
        assert audit.get(kept.id) == kept


@pytest.mark.asyncio
async def test_a_record_that_cannot_be_stored_fails_alone_in_its_batch(log, db):
    first = make(tool="first")
    await log.write(first)
    records = [make(result_size=n) for n in range(30)]
    records[15] = dataclasses.replace(records[15], id=first.id)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the writer up while all 30 queue
        tasks = [asyncio.create_task(log.write(record)) for record in records]
        await asyncio.sleep(0)  # every task has queued its record
    finally:
        blocker.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [n for n, result in enumerate(results) if result is not None]
    assert failed == [15]
    assert isinstance(results[15], AuditError)
    assert "UNIQUE" in str(results[15])
    assert log.count() == 30
    assert log.get(first.id) == first


def test_the_disk_filling_up_surfaces_as_audit_error(db):
    script = """
import asyncio, resource, signal, sys, time
from proxy.audit.log import AuditError, AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
log = AuditLog(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

async def main():
    for n in range(10_000):
        record = CallRecord(time=time.time(), client="c", server="s", tool="t",
            arguments={"blob": "x" * 3000}, decision=CallDecision.ALLOWED, reason="r",
            outcome=Outcome.OK)
        try:
            await log.write(record)
        except AuditError as exc:
            print("refused", record.id, exc, flush=True)
            return
        print("ok", record.id, flush=True)

asyncio.run(main())
log.close()
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(db)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=SUBPROCESS_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 2) for line in done.stdout.splitlines()]
    assert lines[-1][0] == "refused", done.stdout[-500:]
    assert "disk" in lines[-1][2]
    acknowledged = [record_id for word, record_id, *_ in lines if word == "ok"]
    assert len(acknowledged) > 10
    with AuditLog(db) as audit:
        assert audit.get(lines[-1][1]) is None
        assert [audit.get(record_id) is not None for record_id in acknowledged] == [True] * len(
            acknowledged
        )


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is not a database " * 100)
    with pytest.raises(AuditError, match="not a database"):
        AuditLog(path)


def test_a_folder_that_cannot_be_made_is_an_audit_error(tmp_path):
    (tmp_path / "plain-file").write_text("in the way")
    with pytest.raises(AuditError, match="cannot open"):
        AuditLog(tmp_path / "plain-file" / "audit.db")


def test_a_log_from_a_newer_version_is_refused(db):
    AuditLog(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(AuditError, match="newer"):
        AuditLog(db)


# ---------------------------------------------------------------------------- reading


@pytest.fixture
def five(log: AuditLog) -> dict[str, CallRecord]:
    records = {
        "a": make(server="files", tool="read", client="claude", time=100.0),
        "b": make(
            server="files",
            tool="write",
            client="cursor",
            time=200.0,
            decision=CallDecision.DENIED,
            outcome=Outcome.BLOCKED,
        ),
        "c": make(
            server="git",
            tool="push",
            client="claude",
            time=300.0,
            decision=CallDecision.REFUSED,
            outcome=Outcome.BLOCKED,
        ),
        "d": make(
            server="git",
            tool="status",
            client="claude",
            time=400.0,
            decision=CallDecision.APPROVED,
            outcome=Outcome.TOOL_ERROR,
        ),
        "e": make(server="files", tool="read", client="cursor", time=500.0),
    }
    for record in records.values():
        log.write_sync(record)
    return records


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, "edcba"),
        ({"server": "files"}, "eba"),
        ({"tool": "read"}, "ea"),
        ({"decision": "denied"}, "b"),
        ({"decision": CallDecision.ALLOWED}, "ea"),
        ({"client": "claude"}, "dca"),
        ({"outcome": Outcome.BLOCKED}, "cb"),
        ({"start": 200.0, "end": 400.0}, "cb"),
        ({"server": "files", "client": "cursor"}, "eb"),
        ({"server": "nowhere"}, ""),
    ],
)
def test_query_filters_newest_first(log, five, filters, expected):
    assert log.query(**filters) == [five[name] for name in expected]
    assert log.count(**filters) == len(expected)


def test_query_pages_back_by_id(log, five):
    assert log.query(limit=2) == [five["e"], five["d"]]
    assert log.query(limit=2, before_id=five["d"].id) == [five["c"], five["b"]]
    assert log.query(limit=2, before_id=five["b"].id) == [five["a"]]
    assert log.query(limit=2, before_id=five["a"].id) == []
    assert log.query(before_id="no-such-id") == []
    assert log.query(limit=0) == []
    with pytest.raises(ValueError, match="negative"):
        log.query(limit=-1)


def test_since_follows_new_records_in_commit_order(log):
    assert log.latest_rowid() == 0
    first = [make(result_size=n) for n in range(3)]
    for record in first:
        log.write_sync(record)
    seen = log.since(0)
    assert [record for _, record in seen] == first
    rowids = [rowid for rowid, _ in seen]
    assert rowids == sorted(rowids)
    assert log.latest_rowid() == rowids[-1]
    assert log.since(rowids[-1]) == []
    later = make(tool="later")
    log.write_sync(later)
    assert [record for _, record in log.since(rowids[-1])] == [later]
    assert log.since(0, limit=2) == seen[:2]
    with pytest.raises(ValueError, match="negative"):
        log.since(0, limit=-1)


READ_IDS = """
import sys
from proxy.audit.log import AuditLog
with AuditLog(sys.argv[1]) as log:
    print("\\n".join(record.id for record in log.query(limit=1000)))
"""


def read_ids_in_another_process(db: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", READ_IDS, str(db)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=SUBPROCESS_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_another_process_reads_committed_rows_while_the_writer_is_open(log, db):
    records = [make(result_size=n) for n in range(20)]
    for record in records:
        log.write_sync(record)
    assert read_ids_in_another_process(db) == [record.id for record in reversed(records)]
    later = make(tool="later")
    log.write_sync(later)
    assert read_ids_in_another_process(db)[0] == later.id


# ---------------------------------------------------------------------------- kill -9


class Lines:
    """A process's output lines as they come, read by a thread so waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, timeout: float) -> str:
        line = self._lines.get(timeout=timeout)
        if line is None:
            raise EOFError("the writer stopped")
        return line

    def rest(self, timeout: float) -> list[str]:
        """Every line left, once the stream has ended."""
        self._thread.join(timeout)
        assert not self._thread.is_alive()
        lines = []
        while (line := self._lines.get_nowait()) is not None:
            lines.append(line)
        return lines


def complete_ids(lines: list[str]) -> list[str]:
    """The ids printed in full; a line cut short by the kill proves nothing."""
    return [line.strip() for line in lines if line.endswith("\n") and len(line.strip()) == 32]


def test_every_acknowledged_write_survives_kill_9(db):
    with subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=SUBPROCESS_ENV,
    ) as writer:
        assert writer.stdout is not None
        assert writer.stderr is not None
        lines = Lines(writer.stdout)
        try:
            printed = [lines.next(TIMEOUT) for _ in range(500)]
            # Meanwhile, another process's writes are readable here as they commit.
            with AuditLog(db) as reader:
                early = complete_ids(printed[:100])
                assert [reader.get(record_id) is not None for record_id in early] == [True] * 100
        except (EOFError, queue.Empty):
            writer.kill()
            writer.wait(TIMEOUT)
            pytest.fail(f"the writer did not write: {writer.stderr.read()}")
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(TIMEOUT)
        printed += lines.rest(TIMEOUT)
    assert writer.returncode == -signal.SIGKILL
    acknowledged = complete_ids(printed)
    assert len(acknowledged) >= 500
    with AuditLog(db) as audit:
        stored = {record.id for _, record in audit.since(0, limit=10_000_000)}
    missing = [record_id for record_id in acknowledged if record_id not in stored]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"


async def test_a_lone_write_commits_on_the_spot(log: AuditLog) -> None:
    record = make()
    await log.write(record, alone=True)
    assert log.get(record.id) is not None
    assert log.commits == 1
    await eventually(lambda: log.writer_idle, "the writer done indexing it")
    duplicate = make(id=record.id)
    with pytest.raises(AuditError, match="not recorded"):
        await log.write(duplicate, alone=True)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        await log.write(make(), alone=True)


async def test_a_lone_write_while_others_queue_joins_their_group_commit(log: AuditLog) -> None:
    import asyncio

    records = [make() for _ in range(200)]
    await asyncio.gather(*(log.write(r) for r in records[:-1]), log.write(records[-1], alone=True))
    assert all(log.get(r.id) is not None for r in records)
    assert log.commits < 100


# ---------------------------------------------------------------------------- write ahead


async def test_a_begun_call_is_pending_with_its_charges_until_it_is_finished(db):
    record = make(duration_ms=None, result_size=None)
    charges = [Charge("files/*", "claude-desktop", 100.0), Charge("everything", None, 100.5)]
    with AuditLog(db) as audit:
        await audit.begin(record, charges)
        assert audit.get(record.id) == dataclasses.replace(record, outcome=Outcome.PENDING)
        assert audit.count(outcome=Outcome.PENDING) == 1
        assert audit.charges_since(0) == charges
        await audit.finish(record.id, Outcome.OK, duration_ms=7.5, result_size=99)
    with AuditLog(db) as reopened:  # both survive a restart: the counters count them still
        assert reopened.get(record.id) == dataclasses.replace(
            record, duration_ms=7.5, result_size=99
        )
        assert reopened.charges_since(0) == charges
        assert reopened.charges_since(100.25) == charges[1:]


async def test_a_call_that_never_reached_its_server_gives_its_charges_back(log):
    reached, failed = make(tool="reached"), make(tool="failed")
    await log.begin(reached, [Charge("files/*", "claude-desktop", 10.0)])
    await log.begin(failed, [Charge("files/*", "claude-desktop", 11.0)])
    await log.finish(
        failed.id, Outcome.UPSTREAM_DOWN, error="connection refused", refund=True, alone=True
    )
    await log.finish(reached.id, Outcome.OK, duration_ms=1.0, result_size=2)
    assert log.charges_since(0) == [Charge("files/*", "claude-desktop", 10.0)]
    stored = log.get(failed.id)
    assert stored is not None
    assert stored.outcome is Outcome.UPSTREAM_DOWN
    assert stored.error == "connection refused"


async def test_a_finished_calls_error_is_stored_scrubbed_and_clipped(log):
    record = make()
    await log.begin(record)
    await log.finish(record.id, Outcome.PROTOCOL_ERROR, error=f"bad key {GHP} " + "x" * 5000)
    stored = log.get(record.id)
    assert stored is not None
    assert stored.error is not None
    assert stored.error.startswith(f"bad key {REDACTED} xxx")
    assert len(stored.error) == 2000
    assert stored.error.endswith("x…")


async def test_a_call_whose_record_is_not_committed_makes_no_charge(db):
    with AuditLog(db, busy_timeout=0.05) as audit:
        first = make()
        await audit.begin(first, [Charge("files/*", "claude-desktop", 1.0)])
        duplicate = make(id=first.id)
        with pytest.raises(AuditError, match="UNIQUE"):
            await audit.begin(duplicate, [Charge("files/*", "claude-desktop", 2.0)])
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            locked_out = make()
            with pytest.raises(AuditError, match="locked"):
                await audit.begin(locked_out, [Charge("files/*", "claude-desktop", 3.0)])
        finally:
            blocker.close()
        assert audit.get(locked_out.id) is None
        assert audit.charges_since(0) == [Charge("files/*", "claude-desktop", 1.0)]


async def test_pruning_forgets_only_the_charges_before_the_cut(log):
    calls = [make(time=float(t)) for t in (10, 20, 30)]
    for call in calls:
        await log.begin(call, [Charge("files/*", None, call.time)])
    await log.prune_charges(20.0)
    assert log.charges_since(0) == [Charge("files/*", None, 20.0), Charge("files/*", None, 30.0)]
    assert log.count() == 3  # the calls themselves are all still in the log


async def test_calls_left_pending_by_a_stopped_gateway_are_marked_interrupted(db):
    answered, unanswered = make(tool="answered"), make(tool="unanswered")
    with AuditLog(db) as before:
        await before.begin(answered)
        await before.begin(unanswered)
        await before.finish(answered.id, Outcome.OK, duration_ms=3.0, result_size=10)
    with AuditLog(db) as after:
        assert after.recover_interrupted() == 1
        stored = after.get(unanswered.id)
        assert stored is not None
        assert stored.outcome is Outcome.INTERRUPTED
        assert stored.error == "Lockgate stopped before the server answered"
        assert after.get(answered.id) == dataclasses.replace(
            answered, duration_ms=3.0, result_size=10
        )
        assert after.recover_interrupted() == 0


async def test_recovery_while_another_process_holds_the_log_fails_and_changes_nothing(db):
    unanswered = make()
    with AuditLog(db, busy_timeout=0.05) as audit:
        await audit.begin(unanswered)
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(AuditError, match=r"not recorded.*locked"):
                audit.recover_interrupted()
        finally:
            blocker.close()
        assert audit.count(outcome=Outcome.PENDING) == 1
        assert audit.recover_interrupted() == 1  # once the lock is gone, it goes through


# ---------------------------------------------------------------------------- the writer


async def test_a_lone_write_waits_for_another_process_lock_off_the_event_loop(db):
    with AuditLog(db, busy_timeout=TIMEOUT) as audit:
        record = make()
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            task = asyncio.create_task(audit.write(record, alone=True))
            await asyncio.sleep(0)  # one turn: the write found the lock taken and queued
            assert not task.done()  # not refused: the writer thread waits for the lock
        finally:
            blocker.close()
        await task
        assert audit.get(record.id) == record


async def test_a_lone_write_into_a_broken_database_is_refused(log, db):
    await log.write(make(), alone=True)
    with sqlite3.connect(db) as saboteur:
        saboteur.execute("DROP TABLE calls")
    saboteur.close()
    with pytest.raises(AuditError, match=r"not recorded.*no such table") as caught:
        await log.write(make(), alone=True)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_burst_too_big_for_one_transaction_is_committed_whole_in_several(db):
    records = [make(result_size=n) for n in range(2 * 4096 + 1)]
    with AuditLog(db, busy_timeout=TIMEOUT) as audit:
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # holds the writer up while the burst queues
            tasks = [asyncio.create_task(audit.write(record)) for record in records]
            await asyncio.sleep(0)  # every task has queued its record
        finally:
            blocker.close()
        await asyncio.gather(*tasks)
        # The writer took what came first (1 to 4096 records), then the rest: at most 4096
        # records a transaction makes two more.
        assert audit.commits == 3
        assert audit.count() == len(records)
        assert {record.id for _, record in audit.since(0, limit=10_000)} == {
            record.id for record in records
        }


async def test_records_reach_the_database_file_itself_while_the_log_is_open(log, db, tmp_path):
    for n in range(50):
        await log.write(make(result_size=n))
    copy = tmp_path / "copy.db"

    def records_in_the_database_file() -> int:
        for leftover in (copy, copy.with_name("copy.db-wal"), copy.with_name("copy.db-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(db, copy)  # the database file alone, without its WAL
        raw = sqlite3.connect(copy)
        try:
            return int(raw.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        except sqlite3.DatabaseError:  # no table yet, or a copy taken mid-checkpoint
            return 0
        finally:
            raw.close()

    await eventually(
        lambda: records_in_the_database_file() == 50, "a checkpoint into the database file"
    )


def test_reading_a_log_whose_file_was_deleted_fails_without_making_a_new_one(log, db):
    log.write_sync(make())
    for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
        db.with_name(name).unlink()
    reads = [
        log.query,
        log.count,
        log.latest_rowid,
        lambda: log.get("some-id"),
        lambda: log.since(0),
        lambda: log.charges_since(0),
    ]
    for read in reads:
        with pytest.raises(AuditError, match=r"cannot read the audit log .*unable to open"):
            read()
    log.close()
    assert not db.exists()


class WriterKilled(BaseException):
    """What no SQLite failure raises (they are all Exceptions): gets past every handler."""


class KillsTheWriter:
    """A test double, since nothing real stops the writer thread: a value SQLite asks to
    adapt itself (``__conform__``) while the writer binds it, which waits until the test
    has queued more records behind it, then raises :class:`WriterKilled`."""

    def __init__(self) -> None:
        self.binding = threading.Event()
        self.go = threading.Event()

    def __conform__(self, protocol: object) -> object:
        self.binding.set()
        self.go.wait(TIMEOUT)
        raise WriterKilled


async def test_writes_queued_behind_a_writer_that_died_are_refused_and_none_is_lost(db):
    stopped: list[threading.ExceptHookArgs] = []
    previous_hook = threading.excepthook
    threading.excepthook = stopped.append
    try:
        audit = AuditLog(db)
        kept = make()
        await audit.write(kept)
        killer = KillsTheWriter()
        dying = asyncio.create_task(audit.write(make(duration_ms=killer)))
        await eventually(killer.binding.is_set, "the writer to bind the poisoned record")
        behind = [asyncio.create_task(audit.write(make(result_size=n))) for n in range(3)]
        await asyncio.sleep(0)  # they have queued behind the record being written
        killer.go.set()
        results = await asyncio.gather(*behind, return_exceptions=True)
        assert [str(result) for result in results] == [
            "the call was not recorded in the audit log: the audit log's writer has stopped"
        ] * 3
        assert all(isinstance(result, AuditError) for result in results)
        with pytest.raises(AuditError, match="closed"):
            await audit.write(make())
        with pytest.raises(AuditError, match="closed"):
            await audit.write(make(), alone=True)
        audit.close()  # returns once the writer thread is gone
        # the record in flight when the writer died is refused too (it waited for ever)
        with pytest.raises(AuditError, match="writer has stopped"):
            await asyncio.wait_for(dying, TIMEOUT)
    finally:
        threading.excepthook = previous_hook
    assert [args.exc_type for args in stopped] == [WriterKilled]
    with AuditLog(db) as reopened:
        assert reopened.get(kept.id) == kept
        assert reopened.count() == 1


async def test_closing_while_the_writer_dies_returns_and_refuses_what_was_queued(db):
    stopped: list[threading.ExceptHookArgs] = []
    previous_hook = threading.excepthook
    threading.excepthook = stopped.append
    try:
        before = set(threading.enumerate())
        audit = AuditLog(db)
        (checkpointer,) = [
            thread
            for thread in set(threading.enumerate()) - before
            if thread.name == "lockgate-audit-checkpoint"
        ]
        killer = KillsTheWriter()
        dying = asyncio.create_task(audit.write(make(duration_ms=killer)))
        await eventually(killer.binding.is_set, "the writer to bind the poisoned record")
        behind = [asyncio.create_task(audit.write(make(result_size=n))) for n in range(3)]
        await asyncio.sleep(0)  # they have queued behind the record being written
        closing = asyncio.create_task(audit.aclose())
        # close() seals the queue, then stops the checkpointer, then waits for the writer.
        await eventually(lambda: not checkpointer.is_alive(), "close() to seal the queue")
        killer.go.set()
        await closing  # close() returns although the writer never drained the queue
        results = await asyncio.gather(*behind, return_exceptions=True)
        assert [str(result) for result in results] == [
            "the call was not recorded in the audit log: the audit log's writer has stopped"
        ] * 3
        with pytest.raises(AuditError, match="writer has stopped"):
            await asyncio.wait_for(dying, TIMEOUT)  # the one in flight is told too
    finally:
        threading.excepthook = previous_hook
    assert [args.exc_type for args in stopped] == [WriterKilled]
    with AuditLog(db) as reopened:
        assert reopened.count() == 0


# ---------------------------------------------------------------------------- retention

NOW = 1_800_000_000.0  # the injected wall clock's "now" (January 2027)
DAY = 86400.0


class Clock:
    """An injected clock: wall time for the cut, monotonic time for "once an hour"."""

    def __init__(self) -> None:
        self.now = NOW
        self.mono = 1000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clock() -> Clock:
    return Clock()


def retained(db: Path, clock: Clock, days: int, **options: Any) -> AuditLog:
    return AuditLog(db, retention_days=days, clock=clock.wall, monotonic=clock.monotonic, **options)


async def seed(db: Path, *records: CallRecord, charges: tuple[Charge, ...] = ()) -> None:
    """Write ``records`` (the first with ``charges``) into the log at ``db``, kept for ever."""
    with AuditLog(db) as audit:
        first, *rest = records
        await audit.begin(first, charges)
        await audit.finish(
            first.id, first.outcome, duration_ms=first.duration_ms, result_size=first.result_size
        )
        await asyncio.gather(*(audit.write(record) for record in rest))


class HoldsTheWriter:
    """A test double, since nothing real pauses the writer thread at a chosen point: a
    value SQLite asks to adapt itself while the writer binds it, which waits until the
    test says go, then is the number it stands for."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value
        self.binding = threading.Event()
        self.go = threading.Event()

    def __conform__(self, protocol: object) -> float:
        self.binding.set()
        self.go.wait(TIMEOUT)
        return self.value


async def test_calls_older_than_the_retention_go_when_the_log_opens_and_the_rest_stay(db, clock):
    old = [make(tool="old", time=NOW - 31 * DAY), make(tool="older", time=NOW - 400 * DAY)]
    kept = [
        make(tool="at_the_cut", time=NOW - 30 * DAY),  # not older than 30 days: kept
        make(tool="recent", time=NOW - 29 * DAY),
        make(tool="today", time=NOW - 60),
    ]
    await seed(db, *old, *kept)
    in_flight = make(tool="in_flight", time=NOW - 90 * DAY, outcome=Outcome.PENDING)
    with AuditLog(db) as audit:
        await audit.begin(in_flight)  # begun, never finished: its row must stay
    with retained(db, clock, 30) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert sorted(r.tool for r in audit.query()) == sorted(
            ["at_the_cut", "recent", "today", "in_flight"]
        )
        assert audit.last_pruned is not None
        assert audit.last_pruned.before == NOW - 30 * DAY
        assert audit.last_pruned.calls == 2
        assert audit.retention_days == 30


async def test_pruning_keeps_the_charges_a_limit_still_counts(db, clock):
    # A limit's window may be up to a year, a retention as short as a day: a charge is a
    # row of its own (counter, client, time), kept by the gateway's prune_charges for the
    # longest window, and never deleted with its call.
    charge = Charge("files/*", "claude-desktop", NOW - 10 * DAY)
    await seed(db, make(tool="charged", time=NOW - 10 * DAY), charges=(charge,))
    with retained(db, clock, 1) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert audit.count() == 0  # the call is gone
        assert audit.charges_since(NOW - 365 * DAY) == [charge]  # its charge still counts
        await audit.prune_charges(NOW - 7 * DAY)  # the gateway's own prune, by its windows
        assert audit.charges_since(0) == []


async def test_a_retention_of_0_keeps_every_call(db, clock):
    await seed(db, make(tool="ancient", time=1.0), make(tool="old", time=NOW - 4000 * DAY))
    with retained(db, clock, 0) as audit:
        clock.mono += 10 * PRUNE_EVERY  # hours pass
        await audit.write(make(time=NOW))  # the writer looks at its housekeeping after it
        await audit.write(make(time=NOW))  # ... and before this one
        assert audit.prunes == 0
        assert audit.last_pruned is None
        assert audit.count() == 4
        audit.set_retention(1)  # the same log with a retention: they would have gone
        await eventually(lambda: audit.prunes == 1, "the prune after the new retention")
        assert audit.count() == 2


async def test_after_the_first_prune_the_next_comes_an_hour_later_on_the_injected_clock(db, clock):
    with retained(db, clock, 30) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        aging = make(tool="aging", time=NOW - 29 * DAY)
        await audit.write(aging)
        clock.now += 2 * DAY  # now it is older than the retention
        clock.mono += PRUNE_EVERY - 1  # but the hour is not over
        await audit.write(make(time=clock.now))  # housekeeping runs after this commit...
        await audit.write(make(time=clock.now))  # ... before this one: nothing was due
        assert audit.prunes == 1
        assert audit.get(aging.id) is not None
        clock.mono += 1  # the hour is over
        await audit.write(make(time=clock.now))  # wakes the writer (it also wakes hourly)
        await eventually(lambda: audit.prunes == 2, "the hourly prune")
        assert audit.get(aging.id) is None
        assert audit.count() == 3
        pruned = audit.last_pruned
        assert isinstance(pruned, Pruned)
        assert (pruned.before, pruned.calls, pruned.batches) == (clock.now - 30 * DAY, 1, 1)


async def test_a_big_prune_deletes_in_bounded_batches(db, clock):
    await seed(db, *(make(time=NOW - 100 * DAY, result_size=n) for n in range(35)))
    await seed(db, make(tool="new", time=NOW))
    with retained(db, clock, 90, prune_batch=10) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert audit.last_pruned is not None
        assert (audit.last_pruned.calls, audit.last_pruned.batches) == (35, 4)  # 10+10+10+5
        assert [r.tool for r in audit.query()] == ["new"]


async def test_writes_queued_during_a_prune_are_committed_between_its_batches(db, clock):
    await seed(db, *(make(time=NOW - 100 * DAY, result_size=n) for n in range(50)))
    with retained(db, clock, 0, prune_batch=10) as audit:
        first = HoldsTheWriter()
        writing = asyncio.create_task(audit.write(make(time=NOW, duration_ms=first)))
        await eventually(first.binding.is_set, "the writer to bind the first record")
        audit.set_retention(1)  # the prune is due as soon as this record is committed
        second = HoldsTheWriter()
        behind = asyncio.create_task(audit.write(make(time=NOW, duration_ms=second)))
        await asyncio.sleep(0)  # one turn: it has queued behind the first
        first.go.set()
        await eventually(second.binding.is_set, "the writer to bind the record that waited")
        # it is being written after one batch of the prune, not after all five
        assert audit.count(end=NOW - DAY) == 40
        second.go.set()
        await asyncio.gather(writing, behind)
        await eventually(lambda: audit.prunes == 1, "the prune to finish")
        assert audit.count() == 2


async def test_a_new_retention_applies_at_once_without_reopening(db, clock):
    await seed(db, *(make(time=NOW - days * DAY, result_size=days) for days in (3, 10, 40)))
    with retained(db, clock, 90) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert audit.count() == 3
        audit.set_retention(7)
        assert audit.retention_days == 7
        await eventually(lambda: audit.prunes == 2, "the prune with the new retention")
        assert [r.result_size for r in audit.query()] == [3]
        for wrong in (-1, True, 1.5):
            with pytest.raises(ValueError, match="whole number of days"):
                audit.set_retention(wrong)  # type: ignore[arg-type]
        assert audit.retention_days == 7
    with pytest.raises(ValueError, match="whole number of days"):
        AuditLog(db, retention_days=-3)


async def test_a_prune_that_cannot_write_is_tried_again_an_hour_later(db, clock, caplog):
    caplog.set_level("WARNING", logger="proxy.audit.log")
    await seed(db, make(tool="old", time=NOW - 100 * DAY))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the log as it opens
    with retained(db, clock, 30, busy_timeout=0.05) as audit:
        try:
            await eventually(lambda: "could not prune old calls" in caplog.text, "the failure")
        finally:
            blocker.close()
        assert audit.prunes == 0
        await audit.write(make(time=NOW))  # the writer lives on, and writes
        assert audit.count() == 2
        clock.mono += PRUNE_EVERY
        await audit.write(make(time=NOW))
        await eventually(lambda: audit.prunes == 1, "the prune an hour later")
        assert audit.count() == 2


def test_the_summary_says_the_size_the_calls_and_the_oldest(db, log):
    assert audit_summary(db.with_name("missing.db")) == AuditSummary(0, 0, None, 0, False)
    assert not db.with_name("missing.db").exists()  # and it is not made
    assert log.summary().calls == 0
    assert log.summary().oldest is None
    for t in (300.0, 100.0, 200.0):
        log.write_sync(make(time=t))
    summary = log.summary()
    assert (summary.calls, summary.oldest) == (3, 100.0)
    assert summary.size_bytes >= db.stat().st_size > 0  # the database and its WAL
    assert summary.incremental_vacuum  # a new log gives pruned room back by itself
    log.close()  # the WAL folded in, nothing changes the files any more
    assert audit_summary(db).size_bytes == db.stat().st_size


async def test_after_a_big_prune_the_file_shrinks(db, clock):
    text = "a long line of a file that a tool read, " * 75  # 3 KB of arguments each
    await seed(db, *(make(time=NOW - 200 * DAY, arguments={"text": text}) for _ in range(3000)))
    await seed(db, make(tool="new", time=NOW, arguments={"text": text}))
    before = audit_summary(db)
    with retained(db, clock, 90) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert audit.last_pruned is not None
        assert audit.last_pruned.calls == 3000
        assert audit.last_pruned.pages_freed > 2000  # given back a batch at a time
    after = audit_summary(db)  # closed: the WAL is folded in
    assert after.calls == 1
    assert after.size_bytes < before.size_bytes / 20, (before, after)
    assert after.free_bytes < before.size_bytes / 100


def make_log_without_incremental_vacuum(db: Path) -> None:
    """A log as Lockgate made it before pruning came: auto_vacuum off."""
    db.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode = WAL")
        for statements in MIGRATIONS:
            for statement in statements:
                raw.execute(statement)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        raw.close()


async def test_an_older_log_keeps_pruned_room_for_new_calls_until_it_is_compacted(db, clock):
    make_log_without_incremental_vacuum(db)
    text = "a long line of a file that a tool read, " * 75
    await seed(db, *(make(time=NOW - 200 * DAY, arguments={"text": text}) for _ in range(1000)))
    before = audit_summary(db)
    assert not before.incremental_vacuum
    with retained(db, clock, 90) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert audit.last_pruned is not None
        assert (audit.last_pruned.calls, audit.last_pruned.pages_freed) == (1000, 0)
        await audit.write(make(time=NOW))
        pruned = audit.summary()
        # No VACUUM behind the person's back (it would hold every write): the room stays
        # in the file, free, for new calls, and the summary says how much.
        assert pruned.free_bytes > before.size_bytes / 2
        compacted = audit.compact()
        assert compacted.incremental_vacuum  # from now on it gives room back by itself
        assert compacted.calls == 1
        assert compacted.size_bytes < before.size_bytes / 10, (before, compacted)
        assert compacted.free_bytes == 0
        await audit.write(make(time=NOW))  # and it is written on as before
        assert audit.count() == 2
    with pytest.raises(AuditError, match="closed"):
        audit.compact()
