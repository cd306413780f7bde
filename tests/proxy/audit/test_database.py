"""The audit database: WAL and its schema version, indexes for every filter, private
files, and opening: upgrades, a full disk, a process out of files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.audit.database import MIGRATIONS, SCHEMA_VERSION, AuditError
from proxy.audit.log import AuditLog
from proxy.audit.records import CallRecord, Charge, Outcome
from tests.support.records import compact
from tests.support.records import make_record as make

REPO = Path(__file__).resolve().parents[3]
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TIMEOUT = 60.0  # generous: only ever reached when something is broken


# ---------------------------------------------------------------------------- the file


def test_the_database_is_in_wal_mode_with_its_schema_version(log, db):
    log.write_sync(make())
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()
    assert db.with_name("audit.db-wal").exists()


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("time >= 5 AND time < 10", "calls_time"),
        ("server = 'files'", "calls_server"),
        ("tool = 'read_file'", "calls_tool_time"),
        ("tool = 'read' AND server = 'files' AND time > 5", "calls_tool_time"),
        ("decision = 'denied'", "calls_decision"),
        ("client = 'cursor'", "calls_client"),
    ],
)
def test_filters_are_served_by_an_index(log, db, where, index):
    raw = sqlite3.connect(db)
    try:
        plan = raw.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM calls WHERE {where} ORDER BY seq DESC LIMIT 100"
        ).fetchall()
    finally:
        raw.close()
    assert any(f"USING INDEX {index}" in row[-1] for row in plan), plan


def test_folders_and_files_are_private_whatever_the_umask(tmp_path):
    path = tmp_path / "new" / "deeper" / "audit.db"
    tmp_mode = stat.S_IMODE(tmp_path.stat().st_mode)
    old = os.umask(0)
    try:
        audit = AuditLog(path)
        audit.write_sync(make())
    finally:
        os.umask(old)
    try:

        def mode(p: Path) -> int:
            return stat.S_IMODE(p.stat().st_mode)

        assert mode(path) == 0o600
        assert mode(path.with_name("audit.db-wal")) == 0o600
        assert mode(tmp_path / "new") == 0o700
        assert mode(tmp_path / "new" / "deeper") == 0o700
        assert mode(tmp_path) == tmp_mode  # a folder that was there is left alone
    finally:
        audit.close()


# ---------------------------------------------------------------------------- opening


def test_a_cap_too_small_for_any_arguments_is_refused_before_anything_is_made(db):
    with pytest.raises(ValueError, match="at least 128"):
        AuditLog(db, max_argument_bytes=127)
    assert not db.parent.exists()


def test_a_relative_path_is_fixed_when_the_log_opens(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    with AuditLog("audit.db") as audit:
        assert audit.path.is_absolute()
        assert audit.path == tmp_path.resolve() / "audit.db"
        monkeypatch.chdir(elsewhere)  # the app changes its folder: the log stays where it was
        record = make()
        audit.write_sync(record)
        assert audit.get(record.id) == record
    assert not (elsewhere / "audit.db").exists()


# the fields of a record each version of the schema added (version 1 had the rest)
ADDED_IN = {
    3: ("case",),
    4: ("client_info", "protocol"),
    5: ("findings", "secrets"),
    6: ("waited_ms", "layer"),
}


def old_log(db: Path, version: int, record: CallRecord) -> None:
    """A log as ``version`` of the schema made it, holding ``record`` (its fields of
    later versions left out)."""
    db.parent.mkdir(exist_ok=True)
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                raw.execute(statement)
        raw.execute(f"PRAGMA user_version = {version}")
        row = {**record.as_dict(), "time": record.time, "arguments": compact(record.arguments)}
        del row["ts"]
        for later, fields in ADDED_IN.items():
            if later > version:
                for name in fields:
                    del row[name]
        quoted = ", ".join(f'"{column}"' for column in row)
        raw.execute(
            f"INSERT INTO calls ({quoted}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    finally:
        raw.close()


def schema_of(db: Path) -> tuple[int, list[str], set[str]]:
    """The log's version, its calls' columns and the names in its schema."""
    raw = sqlite3.connect(db)
    try:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [name for (_, name, *_) in raw.execute("PRAGMA table_info(calls)")]
        names = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
    finally:
        raw.close()
    return version, columns, names


def test_a_log_of_the_first_version_is_upgraded_and_keeps_its_records(db):
    old = make(tool="from_version_1", error="an old error")
    old_log(db, 1, old)
    with AuditLog(db) as audit:
        assert audit.get(old.id) == old
        charge = Charge("files/*", "claude-desktop", 1_700_000_000.5)
        new = make(tool="after_the_upgrade")
        asyncio.run(audit.begin(new, [charge]))  # the table of charges came with version 2
        assert audit.charges_since(0) == [charge]
        assert audit.count() == 2
    version, _columns, names = schema_of(db)
    assert version == SCHEMA_VERSION
    assert {"charges", "charges_time", "charges_call", "calls_pending"} <= names


def test_a_log_of_version_2_is_upgraded_and_then_keeps_the_case_that_decided(db):
    old = make(tool="from_version_2", rule="git/*")
    old_log(db, 2, old)
    with AuditLog(db) as audit:
        assert audit.get(old.id) == old  # no case: the rule itself decided, as then
        new = make(tool="after_the_upgrade", rule="git/push", case=2)
        audit.write_sync(new)
        assert audit.get(new.id) == new
        assert [r.case for r in audit.query(limit=5)] == [2, None]
        with pytest.raises(AuditError, match="case must be a whole number"):
            audit.write_sync(make(case=-1))
    version, columns, _names = schema_of(db)
    assert version == SCHEMA_VERSION
    assert columns[-7:] == [
        "case", "client_info", "protocol", "findings", "secrets", "waited_ms", "layer"
    ]  # fmt: skip


def test_a_log_of_version_3_is_upgraded_and_then_keeps_what_a_client_says_it_is(db):
    old = make(tool="from_version_3")
    old_log(db, 3, old)
    with AuditLog(db) as audit:
        assert audit.get(old.id) == old  # unknown then: None
        new = make(tool="after_the_upgrade", client_info="cursor 3.1", protocol="2026-07-28")
        audit.write_sync(new)
        assert audit.get(new.id) == new


def test_a_log_of_version_4_is_upgraded_and_then_keeps_what_a_result_held(db):
    old = make(tool="from_version_4", client_info="cursor 3.1")
    old_log(db, 4, old)
    with AuditLog(db) as audit:
        assert audit.get(old.id) == old  # nothing found then
        found = ({"kind": "GitHub Token", "where": "content[0].text"},)
        new = make(tool="after_the_upgrade", findings=found, secrets="redacted")
        audit.write_sync(new)
        assert audit.get(new.id) == new
    assert schema_of(db)[0] == SCHEMA_VERSION


async def test_finishing_a_call_keeps_what_its_result_held_and_never_more(db):
    with AuditLog(db) as audit:
        record = make(outcome=Outcome.PENDING)
        await audit.begin(record, [])
        found = [{"kind": "AWS Access Key", "where": "content[0].text", "value": "AKIA-x"}]
        await audit.finish(record.id, Outcome.OK, findings=found, secrets="redacted")
        kept = audit.get(record.id)
    assert kept is not None
    assert kept.findings == ({"kind": "AWS Access Key", "where": "content[0].text"},)
    assert kept.secrets == "redacted"
    assert b"AKIA-x" not in db.read_bytes()


MIGRATE_ON_A_FULL_DISK = """
import resource, signal, sys
from proxy.audit.log import AuditError, AuditLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
# Room for the WAL's shared-memory index (32 KiB) and two pages, not for the whole schema.
resource.setrlimit(resource.RLIMIT_FSIZE, (32768 + 8192, hard))
try:
    AuditLog(sys.argv[1])
except AuditError as exc:
    print("refused:", exc)
else:
    print("opened")
finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
"""


def test_a_disk_that_fills_up_while_the_schema_is_made_leaves_nothing_half_made(db):
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE_ON_A_FULL_DISK, str(db)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=SUBPROCESS_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: cannot open the audit log"), done.stdout
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (0,)
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        raw.close()
    with AuditLog(db) as audit:  # with room again, the schema is made whole
        record = make()
        audit.write_sync(record)
        assert audit.get(record.id) == record


OUT_OF_FILES = """
import os, resource, sys
from proxy.audit.log import AuditError, AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome

path = sys.argv[1]
AuditLog(path).close()  # the log exists: opening it again takes three files (db, -wal, -shm)
free = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
for fd in free:
    os.close(fd)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(free) + 1, hard))
log = AuditLog(path)  # the writer takes the last three files; its checkpointer finds none
record = CallRecord(time=1.0, client="c", server="s", tool="t", decision=CallDecision.ALLOWED,
    reason="r", outcome=Outcome.OK)
log.write_sync(record)
print("written")
try:
    log.get(record.id)
except AuditError as exc:
    print("read refused:", exc)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("read back:", log.get(record.id) == record)
log.close()
print("wal left after close:", os.path.exists(path + "-wal"))
"""


def test_a_process_out_of_files_still_records_and_says_why_it_cannot_read(db):
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FILES, str(db)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=SUBPROCESS_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "written"
    assert lines[1].startswith("read refused: cannot read the audit log"), lines
    assert "unable to open database file" in lines[1]
    assert lines[2:] == ["read back: True", "wal left after close: False"]
    with AuditLog(db) as audit:
        assert audit.count() == 1
