"""The audit database: its file, its tables, how an older one is brought up to date, and
how a record becomes a row and back.

Every query is built from the constant column names here, never from input (each one
quoted: ``case`` is an SQL keyword). The file and its folders are made private (0600 and
0700), whatever the umask.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.audit.redact import dumps, redact, scrub_text, storable
from proxy.errors import LockgateError

__all__ = [
    "CHARGE",
    "COLUMNS",
    "COMPLETE",
    "COUNT_CALLS",
    "GROUPS_COUNTED",
    "GROUPS_OF_CALLS",
    "INDEXED",
    "INDEX_CALLS",
    "INDEX_UP_TO",
    "INSERT",
    "MATCHING_FROM",
    "MIGRATIONS",
    "PRUNE_CALLS",
    "RECOUNT_BEFORE",
    "REFUND",
    "SCHEMA_VERSION",
    "SEARCHED",
    "SELECT",
    "SELECT_MATCHING",
    "WAL_SIZE_LIMIT",
    "AuditError",
    "Step",
    "clip",
    "create_private",
    "files_of",
    "filters",
    "findings_json",
    "insert_step",
    "match_expression",
    "open_writer",
    "record_from_row",
    "row_of",
    "user_version",
    "where_clause",
]

SCHEMA_VERSION: Final = 6
MAX_TEXT: Final = 2000  # reason and error are short texts; a longer one is clipped


class AuditError(LockgateError):
    """The audit log could not be opened, written or read.

    From a write, it means the record was not committed: the call is not in the log.
    """

    title = "The audit log cannot be used"


COLUMNS: Final = (  # a record's fields, by the same names
    "id time client server tool arguments decision basis rule case reason outcome duration_ms "
    "result_size error client_info protocol findings secrets waited_ms layer"
).split()
_QUOTED: Final = ", ".join(f'"{column}"' for column in COLUMNS)
INSERT: Final = (  # built from the constant column names only, as is every query here
    f"INSERT INTO calls ({_QUOTED}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
)
# (qualified: a search joins the full-text index, whose columns have the same names)
SELECT: Final = (
    "SELECT calls.seq, "  # noqa: S608
    + ", ".join(f'calls."{column}"' for column in COLUMNS)
    + " FROM calls"
)
# SELECT, for a search: the calls whose text matches, found through the full-text index.
# CROSS JOIN makes the index the outer loop (SQLite keeps that order), and ordering by its
# rowid lets it give its matches newest first, so a page stops after its LIMIT: left to
# itself, the planner can walk the client index and ask the full-text index per row
# (a second, not milliseconds, at 100,000 calls).
MATCHING_FROM: Final = "calls_text CROSS JOIN calls ON calls.seq = calls_text.rowid"
SELECT_MATCHING: Final = SELECT.replace(" FROM calls", f" FROM {MATCHING_FROM}")

# What the history's full-text search looks in (``search`` in :func:`filters`).
SEARCHED: Final = ("server", "tool", "client", "arguments", "reason", "error")

# MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: Final = (
    (
        """CREATE TABLE calls (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- commit order; never reused
            id TEXT NOT NULL UNIQUE,
            time REAL NOT NULL,
            client TEXT NOT NULL,
            server TEXT NOT NULL,
            tool TEXT NOT NULL,
            arguments TEXT NOT NULL,  -- JSON, redacted
            decision TEXT NOT NULL,
            basis TEXT,
            rule TEXT,
            reason TEXT NOT NULL,
            outcome TEXT NOT NULL,
            duration_ms REAL,
            result_size INTEGER,
            error TEXT
        )""",
        "CREATE INDEX calls_time ON calls (time)",
        "CREATE INDEX calls_server ON calls (server)",
        "CREATE INDEX calls_tool ON calls (tool)",
        "CREATE INDEX calls_decision ON calls (decision)",
        "CREATE INDEX calls_client ON calls (client)",
    ),
    (
        """CREATE TABLE charges (
            call_id TEXT NOT NULL,  -- the call that made the charge (calls.id)
            counter TEXT NOT NULL,
            client TEXT,  -- NULL: a global counter
            time REAL NOT NULL  -- the enforcer's clock (epoch seconds)
        )""",
        "CREATE INDEX charges_time ON charges (time)",
        "CREATE INDEX charges_call ON charges (call_id)",
        "CREATE INDEX calls_pending ON calls (outcome) WHERE outcome = 'pending'",
    ),
    # the rule's "when" case that decided (from 0); NULL: the rule itself, or no rule
    ('ALTER TABLE calls ADD COLUMN "case" INTEGER',),
    # what the client program says it is, and the request's MCP version; NULL: unknown
    (
        "ALTER TABLE calls ADD COLUMN client_info TEXT",
        "ALTER TABLE calls ADD COLUMN protocol TEXT",
    ),
    # what a result held that looked like a secret (JSON: [{"kind", "where"}], never a
    # value) and what was done about it; NULL: nothing found
    (
        "ALTER TABLE calls ADD COLUMN findings TEXT",
        "ALTER TABLE calls ADD COLUMN secrets TEXT",
    ),
    # A full-text index of what a person searches the history for (SQLite FTS5), its
    # content the calls table's own (nothing stored twice). It is filled by the writer
    # thread after the calls are committed, in small batches (proxy/audit/log.py: indexing
    # a call costs about 60 us, which a call's write-ahead record must not wait for), up
    # to search_state.indexed; a call's later change (its error) and its deletion (a
    # prune) are followed by triggers, for the calls indexed already. A log upgraded to
    # this version is indexed the same way, in the background.
    # (Written out, not built from SEARCHED: a migration's text never changes.)
    (
        """CREATE VIRTUAL TABLE calls_text USING fts5(server, tool, client, arguments, reason,
            error, content='calls', content_rowid='seq',
            tokenize='unicode61 remove_diacritics 2')""",
        # a tool's calls in time order (a replay's examples, a tool's history); it serves
        # every lookup by tool that calls_tool did, so that one goes
        "CREATE INDEX calls_tool_time ON calls (tool, server, time)",
        "DROP INDEX calls_tool",
        # how long the call waited for a person's answer (ms); NULL: nobody was asked
        "ALTER TABLE calls ADD COLUMN waited_ms REAL",
        "CREATE INDEX calls_waited ON calls (time) WHERE waited_ms IS NOT NULL",
        # which policy decided: "team" (the team's layer); NULL: policy.json
        "ALTER TABLE calls ADD COLUMN layer TEXT",
        "CREATE TABLE search_state (indexed INTEGER NOT NULL)",  # calls.seq indexed up to
        # The calls of each hour counted by who, what and how it was decided: what the
        # activity plots and a policy replay read instead of every call (filled with the
        # search index, in the same batches; a prune recounts the hours it cut into).
        """CREATE TABLE activity (
            hour INTEGER NOT NULL,  -- time // 3600
            server TEXT NOT NULL,
            tool TEXT NOT NULL,
            client TEXT NOT NULL,
            decision TEXT NOT NULL,
            basis TEXT NOT NULL,  -- '' for none
            ruled INTEGER NOT NULL,  -- 1: a rule decided (calls.rule is not NULL)
            calls INTEGER NOT NULL,
            PRIMARY KEY (hour, server, tool, client, decision, basis, ruled)
        ) WITHOUT ROWID""",
        "INSERT INTO search_state (indexed) VALUES (0)",
        """CREATE TRIGGER calls_text_delete AFTER DELETE ON calls
            WHEN old.seq <= (SELECT indexed FROM search_state) BEGIN
            INSERT INTO calls_text(calls_text, rowid, server, tool, client, arguments,
                                   reason, error)
            VALUES ('delete', old.seq, old.server, old.tool, old.client, old.arguments,
                    old.reason, old.error);
        END""",
        # an outcome's error is the only searched text a call's completion changes
        """CREATE TRIGGER calls_text_update AFTER UPDATE OF error ON calls
            WHEN old.error IS NOT new.error AND old.seq <= (SELECT indexed FROM search_state)
            BEGIN
            INSERT INTO calls_text(calls_text, rowid, server, tool, client, arguments,
                                   reason, error)
            VALUES ('delete', old.seq, old.server, old.tool, old.client, old.arguments,
                    old.reason, old.error);
            INSERT INTO calls_text(rowid, server, tool, client, arguments, reason, error)
            VALUES (new.seq, new.server, new.tool, new.client, new.arguments, new.reason,
                    new.error);
        END""",
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION


# One batch of the calls committed since the index was last brought up to date: its
# last seq (INDEX_UP_TO, from the indexed seq and the batch size), then the batch indexed
# and the mark moved, in one transaction.
INDEXED: Final = "SELECT indexed FROM search_state"
INDEX_UP_TO: Final = (
    "SELECT MAX(seq) FROM (SELECT seq FROM calls WHERE seq > ? ORDER BY seq LIMIT ?)"
)
INDEX_CALLS: Final = (
    "INSERT INTO calls_text(rowid, server, tool, client, arguments, reason, error) "
    "SELECT seq, server, tool, client, arguments, reason, error FROM calls "
    "WHERE seq > ? AND seq <= ?"
)

# The activity counts of a batch of calls (as for INDEX_CALLS), added to those already
# counted; and of the calls that arrived before a time, counted again after a prune.
_COUNTED: Final = (
    "SELECT CAST(time / 3600 AS INTEGER), server, tool, client, decision, "
    "COALESCE(basis, ''), rule IS NOT NULL, COUNT(*) FROM calls"
)
_ADD_COUNTS: Final = (
    " GROUP BY 1, 2, 3, 4, 5, 6, 7 ON CONFLICT DO UPDATE SET calls = calls + excluded.calls"
)
COUNT_CALLS: Final = (
    "INSERT INTO activity (hour, server, tool, client, decision, basis, ruled, calls) "
    f"{_COUNTED} WHERE seq > ? AND seq <= ?{_ADD_COUNTS}"
)
_INDEXED_ONLY: Final = "seq <= (SELECT indexed FROM search_state)"
RECOUNT_BEFORE: Final = (
    "INSERT INTO activity (hour, server, tool, client, decision, basis, ruled, calls) "
    f"{_COUNTED} WHERE time < ? AND {_INDEXED_ONLY}{_ADD_COUNTS}"
)

# A replay's groups (proxy/policy/replay.py's DecidedGroup), from the hourly counts of the
# whole hours [?, ?) and from the calls of [?, ?) committed after seq ?.
GROUPS_COUNTED: Final = (
    "SELECT server, tool, client, decision, basis, ruled, SUM(calls) FROM activity "
    "WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3, 4, 5, 6"
)
GROUPS_OF_CALLS: Final = (
    "SELECT server, tool, client, decision, COALESCE(basis, ''), rule IS NOT NULL, COUNT(*) "
    "FROM calls WHERE time >= ? AND time < ? AND seq > ? GROUP BY 1, 2, 3, 4, 5, 6"
)

COMPLETE: Final = (
    "UPDATE calls SET outcome = ?, duration_ms = ?, result_size = ?, error = ?, findings = ?, "
    "secrets = ? WHERE id = ?"
)
CHARGE: Final = "INSERT INTO charges (call_id, counter, client, time) VALUES (?, ?, ?, ?)"
REFUND: Final = "DELETE FROM charges WHERE call_id = ?"
# One batch of the calls that arrived before a time (at most so many), by the time index.
# A pending call is in flight (or its gateway crashed: the next start marks it
# interrupted, and it goes at the prune after): its row is the one the outcome completes.
# The charges stay: they are rows of their own (counter, client, time) that the gateway
# prunes by its limits' windows (proxy/gateway/pipeline.py), never with their calls.
PRUNE_CALLS: Final = (
    "DELETE FROM calls WHERE seq IN "
    "(SELECT seq FROM calls WHERE time < ? AND outcome != 'pending' LIMIT ?)"
)
# The WAL is cut back to this size when it restarts (after a checkpoint), so that a burst
# (a big prune, a compaction) does not leave it that big for good.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

# One statement and the parameter rows to run it with: a write is a few of these, run in
# one transaction.
Step = tuple[str, list[tuple[Any, ...]]]


def clip(text: str) -> str:
    text = scrub_text(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def insert_step(record: CallRecord, max_argument_bytes: int) -> Step:
    return (INSERT, [row_of(record, max_argument_bytes)])


def row_of(record: CallRecord, max_argument_bytes: int) -> tuple[Any, ...]:
    """The row to insert for ``record``, made in the caller's thread so bad data fails there.
    Every text is made storable (lone surrogates escaped).

    Raises:
        AuditError: the record cannot be stored (an unknown decision, a time that is not a
            number).
    """
    try:
        if not math.isfinite(record.time):
            raise ValueError(f"time must be a finite number, not {record.time!r}")
        return (
            storable(record.id),
            float(record.time),
            storable(record.client),
            storable(record.server),
            storable(record.tool),
            dumps(redact(record.arguments, max_argument_bytes)),
            CallDecision(record.decision).value,
            None if record.basis is None else storable(record.basis),
            None if record.rule is None else storable(record.rule),
            _case_of(record.case),
            clip(record.reason),
            Outcome(record.outcome).value,
            record.duration_ms,
            record.result_size,
            None if record.error is None else clip(record.error),
            None if record.client_info is None else clip(record.client_info),
            None if record.protocol is None else clip(record.protocol),
            findings_json(record.findings),
            None if record.secrets is None else clip(record.secrets),
            record.waited_ms,
            None if record.layer is None else clip(record.layer),
        )
    except (TypeError, ValueError) as exc:
        raise AuditError(f"cannot record call {record.id}: {exc}") from exc


def _case_of(case: int | None) -> int | None:
    """A record's case as the column holds it (a whole number from 0, or NULL).

    Raises:
        ValueError: it is neither.
    """
    if case is None:
        return None
    if isinstance(case, bool) or not isinstance(case, int) or case < 0:
        raise ValueError(f"case must be a whole number from 0 or None, not {case!r}")
    return case


def record_from_row(row: tuple[Any, ...]) -> CallRecord:
    values: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
    values["arguments"] = json.loads(values["arguments"])
    values["decision"] = CallDecision(values["decision"])
    values["outcome"] = Outcome(values["outcome"])
    # only ever what findings_json wrote: a list of {"kind", "where"}
    values["findings"] = tuple(json.loads(values["findings"])) if values["findings"] else ()
    return CallRecord(**values)


def findings_json(findings: Iterable[Mapping[str, str]]) -> str | None:
    """A result's findings as the column holds them: only each one's kind and place
    (clipped), so nothing of a secret's value can be stored; NULL for none."""
    kept = [
        {"kind": clip(str(f.get("kind", ""))[:100]), "where": clip(str(f.get("where", ""))[:200])}
        for f in list(findings)[:50]
    ]
    return dumps(kept) if kept else None


def filters(
    *,
    server: str | None,
    tool: str | None,
    decision: str | None,
    client: str | None,
    outcome: str | None,
    start: float | None,
    end: float | None,
    search: str | None = None,
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and their parameters for the filters given (None: any).

    ``search`` needs the full-text index joined (:data:`SELECT_MATCHING`).

    Raises:
        AuditError: ``search`` holds no word to look for.
    """
    where: list[str] = []
    params: list[Any] = []
    if search is not None:
        where.append("calls_text MATCH ?")
        params.append(match_expression(search))
    equal = {
        "server": server,
        "tool": tool,
        "decision": decision,
        "client": client,
        "outcome": outcome,
    }
    for column, value in equal.items():
        if value is not None:
            where.append(f"calls.{column} = ?")
            params.append(str(value))
    if start is not None:
        where.append("calls.time >= ?")
        params.append(start)
    if end is not None:
        where.append("calls.time < ?")
        params.append(end)
    return where, params


def match_expression(search: str) -> str:
    """A person's search words as an FTS5 query: every word must be there (in any of
    the searched columns), each as the start of a word, and a "quoted phrase" as those
    words in a row. FTS5's own syntax (operators, columns, parentheses) is never read
    from the text: each word is quoted, so any text is a valid query.

    Raises:
        AuditError: the text holds no word to look for.
    """
    phrases: list[str] = []
    for quoted, bare in re.findall(r'"([^"]*)"?|(\S+)', search):
        words = _WORDS.findall(quoted if quoted else bare)
        if words:
            phrases.append('"' + " ".join(words) + '"*')
    if not phrases:
        raise AuditError(f"nothing to search for in {search!r}: give a word or a name")
    return " AND ".join(phrases)


# what the index holds as words (its tokenizer, unicode61, splits on everything else)
_WORDS: Final = re.compile(r"[^\W_]+")


def where_clause(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def create_private(path: Path) -> None:
    """Create the missing folders (0700) and the database file (0600), whatever the umask.

    Raises:
        OSError: they cannot be created.
    """
    missing: list[Path] = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)  # mkdir's mode is cut by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    path.chmod(0o600)


def files_of(path: Path) -> tuple[Path, Path, Path]:
    """The database's files: itself, its write-ahead log and its shared memory."""
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def open_writer(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """The write connection: WAL, synchronous=NORMAL, the schema up to date.

    A new database is made with incremental auto_vacuum, so the pages of pruned calls can
    be given back to the file system a few at a time (``PRAGMA incremental_vacuum``); the
    setting can only be chosen before the first table exists (it must come before WAL is
    set), so on an older file the pragma changes nothing until it is compacted (a VACUUM,
    :meth:`proxy.audit.log.AuditLog.compact`).

    Raises:
        sqlite3.Error: the database cannot be opened or set up.
        AuditError: WAL cannot be used, or the schema is newer than this code.
    """
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        if int(conn.execute("PRAGMA page_count").fetchone()[0]) == 0:  # a new file
            # (on a file with tables, setting it would take the write lock, for nothing)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover (see below)
            # SQLite keeps another mode without an error only for in-memory and temporary
            # databases and for storage without shared memory; a file on this machine's
            # own file system never gets here, but one on such storage must not be
            # written without WAL's crash safety.
            raise AuditError(f"the audit log {path} cannot use WAL (journal mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoint_now_and_then
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        if user_version(conn) != SCHEMA_VERSION:
            migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")  # two processes opening a new log: one creates it
    try:
        version = user_version(conn)
        if version > SCHEMA_VERSION:
            raise AuditError(
                f"the audit log {path} has schema version {version}, made by a newer "
                f"Lockgate; this one knows up to {SCHEMA_VERSION}"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
