"""The audit log: every tool call the gateway saw, and its decision, in SQLite.

Nothing may be lost (docs/architecture.md, rule 6), and the log is written *ahead*: a call that
may go to a server is recorded (who, what, the decision, outcome ``pending``) and that
record committed, together with the rate-limit charges it makes, before anything is sent
upstream (:meth:`AuditLog.begin`); the outcome completes it afterwards
(:meth:`AuditLog.finish`). A call whose record cannot be committed is never sent. A call
that is blocked is recorded once, complete (:meth:`AuditLog.write`), before its answer
leaves. A record is acknowledged only after the transaction that holds it has committed,
so all of this holds after the app is killed. A ``pending`` record whose gateway stopped
before the answer came is marked ``interrupted`` when the next one starts.

One writer thread owns the write connection and commits everything queued since its last
commit in one transaction (group commit): a commit costs about the same for one record as
for a thousand, so thousands of calls a second cost a few commits.

Rate-limit charges (table ``charges``: counter, client, time, the call that made it) live
in the same database, so a charge is durable exactly when its call's record is, and the
counters survive a restart, a crash and ``kill -9``. A call that never reached its server
gives its charge back in the transaction that completes its record.

Text that UTF-8 cannot hold (a lone surrogate from ``"\ud800"`` in JSON) is stored escaped
(``\ud800``), in every column: nothing a client sends can make a record unwritable.

The database is in WAL mode: readers (``lockgate log``, the GUI's history) read while the
gateway writes, from this process or another, without blocking it or being blocked.

Arguments are stored after :func:`redact`: values under secret-looking keys and strings
that look like credentials are replaced, and the JSON is capped in size.

Calls older than the retention (``retention_days``; 0 keeps them all) are deleted by the
writer thread itself: once when the log opens, then about once an hour, in batches of a
few hundred with the queued writes committed between two batches, so that a prune of
millions never holds a call's record back for more than a batch. A pending call (in
flight) is kept, and so are the rate-limit charges: the gateway prunes those by its
limits' windows (``prune_charges``), never with their calls. In a file with incremental
auto_vacuum (every log made since pruning came) the freed pages then go back to the file
system, a batch at a time too; an older file keeps them for new calls until a person asks
for :meth:`AuditLog.compact`, a full VACUUM that blocks writes while it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from proxy.audit.database import (
    CHARGE,
    COMPLETE,
    COUNT_CALLS,
    GROUPS_COUNTED,
    GROUPS_OF_CALLS,
    INDEX_CALLS,
    INDEX_UP_TO,
    INDEXED,
    INSERT,
    MATCHING_FROM,
    PRUNE_CALLS,
    RECOUNT_BEFORE,
    REFUND,
    SCHEMA_VERSION,
    SELECT,
    SELECT_MATCHING,
    AuditError,
    Step,
    clip,
    create_private,
    files_of,
    filters,
    findings_json,
    insert_step,
    open_writer,
    record_from_row,
    where_clause,
)
from proxy.audit.records import CallDecision, CallRecord, Charge, Outcome
from proxy.audit.redact import DEFAULT_MAX_ARGUMENT_BYTES, MIN_BYTES
from proxy.policy.replay import DecidedGroup, RecordedCall

__all__ = [
    "PRUNE_BATCH",
    "PRUNE_EVERY",
    "SCHEMA_VERSION",
    "SIZE_CHECK_EVERY",
    "VACUUM_PAGES",
    "ApprovalSummary",
    "AuditError",
    "AuditLog",
    "AuditReader",
    "AuditSummary",
    "Pruned",
    "audit_summary",
]

logger = logging.getLogger(__name__)

_MAX_BATCH: Final = 4096  # records per transaction, to bound one commit's work
PRUNE_EVERY: Final = 3600.0  # seconds between two prunes of old calls
PRUNE_BATCH: Final = 250  # calls deleted per transaction: a few ms of the writer's time
VACUUM_PAGES: Final = 256  # pages given back to the file system per transaction (1 MB)
INDEX_BATCH: Final = 200  # calls added to the search index per transaction (about 12 ms)
# How long new calls may wait to be searchable. Indexed as each call came, a lone call
# cost a second transaction (0.4 ms of CPU, beside its own 0.45): the calls of this long
# go into the index in one. Real time, not the injected clock: it paces work, decides
# nothing.
INDEX_AFTER: Final = 0.25
SIZE_CHECK_EVERY: Final = 60.0  # seconds between two looks at the log's size, when bounded
MERGE_PAGES: Final = 256  # pages of the search index merged per transaction, after a prune
MERGE_INDEX: Final = "INSERT INTO calls_text(calls_text, rank) VALUES ('merge', ?)"
_DAY: Final = 86400.0


class _Wake:
    """Queued to make the writer look at its housekeeping now (a new retention)."""


_WAKE: Final = _Wake()


@dataclass(frozen=True, slots=True)
class Pruned:
    """A prune of old calls, done."""

    before: float  # the calls that arrived before this time (epoch seconds) were deleted
    calls: int  # how many were deleted
    batches: int  # in how many transactions (each of at most ``prune_batch`` calls)
    pages_freed: int  # pages given back to the file system (none without incremental vacuum)


@dataclass(slots=True)
class _Pruning:
    """A prune under way, between two of its steps."""

    before: float
    calls: int = 0
    batches: int = 0
    pages_freed: int = 0
    deleting: bool = True  # False: the calls are gone; the search index is tidied next
    merging: bool = True  # False: the index holds nothing of them; free pages go back next
    by_size: bool = False  # the log outgrew its size bound (not the retention's cut)


@dataclass(frozen=True, slots=True)
class AuditSummary:
    """How big an audit log is and what it holds (the Settings view shows it)."""

    size_bytes: int  # the database, its WAL and its shared memory: what it takes on disk
    calls: int  # the calls it keeps
    oldest: float | None  # when the oldest of them arrived (epoch seconds); None: no call
    free_bytes: int  # room inside the file that holds nothing (new calls reuse it)
    # True: the file gives free room back to the file system by itself, when old calls are
    # pruned; False (a log made before pruning came): only AuditLog.compact() does
    incremental_vacuum: bool


@dataclass(frozen=True, slots=True)
class ApprovalSummary:
    """The calls a person was asked about in a period (the activity view shows it)."""

    asked: int  # answered, refused, timed out or cancelled while waiting
    approved: int
    timed_out: int  # nobody answered in time
    median_wait_ms: float | None  # None: nobody was asked
    p90_wait_ms: float | None

    @property
    def refused(self) -> int:
        """Not let through: refused, timed out or cancelled."""
        return self.asked - self.approved


@dataclass(frozen=True, slots=True)
class _Pending:
    """A write waiting for the writer, and the future its writer waits on."""

    steps: tuple[Step, ...]
    done: asyncio.Future[None] | concurrent.futures.Future[None]


class AuditReader:
    """The audit database at ``path``, read only: what the app's History view and
    ``lockgate log`` read with, in any process, while a gateway writes it. Each read opens
    a connection of its own (WAL: it neither blocks the writer nor is blocked by it), so
    any thread may read; every read is I/O, never for the event loop or the GUI thread.
    Nothing is opened or made until a read; a read of a log that does not exist fails.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self._path = Path(path).absolute()
        self._busy_timeout = busy_timeout

    @property
    def path(self) -> Path:
        return self._path

    def charges_since(self, since: float) -> list[Charge]:
        """The committed rate-limit charges at or after ``since``, oldest first.

        Raises:
            AuditError: the database cannot be read.
        """
        sql = "SELECT counter, client, time FROM charges WHERE time >= ? ORDER BY time"
        with self._reading() as conn:
            rows = conn.execute(sql, (since,)).fetchall()
        return [Charge(str(counter), client, float(t)) for counter, client, t in rows]

    def search_backlog(self) -> int:
        """How many committed calls the search does not find yet (the writer indexes
        them a batch at a time, after they are committed: a few milliseconds behind;
        after an upgrade, an older log's calls in the background).

        Raises:
            AuditError: the database cannot be read.
        """
        with self._reading() as conn:
            indexed = int(conn.execute(INDEXED).fetchone()[0])
            row = conn.execute("SELECT COUNT(*) FROM calls WHERE seq > ?", (indexed,))
            return int(row.fetchone()[0])

    def query(
        self,
        *,
        limit: int = 100,
        server: str | None = None,
        tool: str | None = None,
        decision: CallDecision | str | None = None,
        client: str | None = None,
        outcome: Outcome | str | None = None,
        start: float | None = None,
        end: float | None = None,
        search: str | None = None,
        before_id: str | None = None,
    ) -> list[CallRecord]:
        """Committed records, newest first, that match every filter given.

        ``start`` and ``end`` bound the arrival time (``start <= time < end``). ``search``
        is a person's words, each looked for in the tool, server, client, arguments,
        reason and error (:func:`~proxy.audit.database.match_expression`). To page back,
        pass the last record's id as ``before_id``: the page holds the records written
        before it (none if no record has that id). A page costs about the same at any
        depth (it is found by the commit order's index, not skipped to).

        Raises:
            AuditError: the database cannot be read, or ``search`` holds no word.
            ValueError: ``limit`` is negative.
        """
        return [
            record
            for _, record in self.query_rows(
                limit=limit,
                server=server,
                tool=tool,
                decision=decision,
                client=client,
                outcome=outcome,
                start=start,
                end=end,
                search=search,
                before_id=before_id,
            )
        ]

    def query_rows(
        self,
        *,
        limit: int = 100,
        server: str | None = None,
        tool: str | None = None,
        decision: CallDecision | str | None = None,
        client: str | None = None,
        outcome: Outcome | str | None = None,
        start: float | None = None,
        end: float | None = None,
        search: str | None = None,
        before_id: str | None = None,
        after_seq: int | None = None,
        oldest_first: bool = False,
    ) -> list[tuple[int, CallRecord]]:
        """:meth:`query`, each record with its rowid (commit order). ``after_seq`` keeps
        the records committed after that rowid; ``oldest_first`` turns the order round,
        so that an export can walk the whole log a page at a time, oldest first.

        Raises:
            AuditError: the database cannot be read, or ``search`` holds no word.
            ValueError: ``limit`` is negative.
        """
        if limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        where, params = filters(
            server=server,
            tool=tool,
            decision=decision,
            client=client,
            outcome=outcome,
            start=start,
            end=end,
            search=search,
        )
        if before_id is not None:
            where.append("calls.seq < (SELECT seq FROM calls WHERE id = ?)")
            params.append(before_id)
        if after_seq is not None:
            where.append("calls.seq > ?")
            params.append(after_seq)
        select = SELECT if search is None else SELECT_MATCHING
        by = "calls.seq" if search is None else "calls_text.rowid"  # the same, see SELECT_MATCHING
        order = "ASC" if oldest_first else "DESC"
        sql = f"{select}{where_clause(where)} ORDER BY {by} {order} LIMIT ?"
        with self._reading() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [(int(row[0]), record_from_row(row[1:])) for row in rows]

    def count(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        decision: CallDecision | str | None = None,
        client: str | None = None,
        outcome: Outcome | str | None = None,
        start: float | None = None,
        end: float | None = None,
        search: str | None = None,
    ) -> int:
        """How many committed records match every filter given (as for :meth:`query`).

        Raises:
            AuditError: the database cannot be read, or ``search`` holds no word.
        """
        where, params = filters(
            server=server,
            tool=tool,
            decision=decision,
            client=client,
            outcome=outcome,
            start=start,
            end=end,
            search=search,
        )
        source = "calls" if search is None else MATCHING_FROM
        with self._reading() as conn:
            count_sql = f"SELECT COUNT(*) FROM {source}{where_clause(where)}"  # noqa: S608
            row = conn.execute(count_sql, params).fetchone()
        return int(row[0])

    def get(self, record_id: str) -> CallRecord | None:
        """The record with id ``record_id``, if it is committed.

        Raises:
            AuditError: the database cannot be read.
        """
        with self._reading() as conn:
            row = conn.execute(f"{SELECT} WHERE calls.id = ?", (record_id,)).fetchone()
        return None if row is None else record_from_row(row[1:])

    def since(self, rowid: int, *, limit: int = 1000) -> list[tuple[int, CallRecord]]:
        """Records committed after row ``rowid``, oldest first, with their rowids.

        ``lockgate log --follow`` polls this with the last rowid it has seen (start from
        :meth:`latest_rowid`, or 0 for everything). Rowids grow in commit order and are
        never reused.

        Raises:
            AuditError: the database cannot be read.
            ValueError: ``limit`` is negative.
        """
        return self.query_rows(after_seq=rowid, limit=limit, oldest_first=True)

    def recorded_calls(
        self,
        start: float | None = None,
        end: float | None = None,
        tools: Iterable[tuple[str, str]] | None = None,
    ) -> Iterator[RecordedCall]:
        """The calls that arrived from ``start`` to before ``end`` (to the tools
        ``tools``, as (server, tool), if given), oldest first, as a policy replay reads
        them (:mod:`proxy.policy.replay`): only the columns it needs, streamed from one
        read, so that a million cost seconds, not memory.

        Raises:
            AuditError: the database cannot be read.
        """
        where, params = filters(
            server=None, tool=None, decision=None, client=None, outcome=None, start=start, end=end
        )
        if tools is not None:
            chosen = sorted(set(tools))
            if not chosen:
                return
            where.append(f"(server, tool) IN (VALUES {', '.join(['(?, ?)'] * len(chosen))})")
            params.extend(name for pair in chosen for name in pair)
        sql = f"{_RECORDED}{where_clause(where)} ORDER BY calls.time, calls.seq"
        with self._reading() as conn:
            cursor = conn.execute(sql, params)
            while rows := cursor.fetchmany(5000):
                for row in rows:
                    yield RecordedCall(*row)

    def decided_groups(self, start: float, end: float) -> list[DecidedGroup]:
        """How many calls from ``start`` to before ``end`` each (server, tool, client,
        decision, basis, ruled) had: exact, from the hourly counts for the whole hours
        and from the calls themselves for the parts of hours at either end (and for calls
        not counted yet), in one read. A replay's calls that hang on nothing but their
        tool and client are decided per group, not per call.

        Raises:
            AuditError: the database cannot be read.
        """
        first, last = math.ceil(start / 3600), math.floor(end / 3600)
        counts: dict[tuple[str, str, str, str, str, bool], int] = {}

        def add(rows: Iterable[tuple[Any, ...]]) -> None:
            for server, tool, client, decision, basis, ruled, calls in rows:
                key = (server, tool, client, decision, basis, bool(ruled))
                counts[key] = counts.get(key, 0) + int(calls)

        with self._reading() as conn:
            conn.execute("BEGIN")  # one snapshot for the counts and the calls
            if first < last:
                add(conn.execute(GROUPS_COUNTED, (first, last)))
                indexed = int(conn.execute(INDEXED).fetchone()[0])
                add(conn.execute(GROUPS_OF_CALLS, (start, first * 3600.0, 0)))
                add(conn.execute(GROUPS_OF_CALLS, (first * 3600.0, last * 3600.0, indexed)))
                add(conn.execute(GROUPS_OF_CALLS, (last * 3600.0, end, 0)))
            else:
                add(conn.execute(GROUPS_OF_CALLS, (start, end, 0)))
        return [DecidedGroup(*key, calls) for key, calls in counts.items()]

    def activity(
        self, start: float, end: float, *, bucket: float, by: str
    ) -> list[tuple[float, str, int]]:
        """Calls over time: (bucket start, key, calls) for each ``bucket`` seconds from
        ``start`` to ``end`` and each key ``by`` names ("server", "tool" as server/tool,
        "client", "decision"). Buckets of an hour or more are read from the hourly
        counts (their hours whole); shorter ones from the calls themselves.

        Raises:
            AuditError: the database cannot be read.
            ValueError: ``by`` is none of those, or ``bucket`` is not above 0.
        """
        key = _ACTIVITY_KEYS.get(by)
        if key is None:
            raise ValueError(f"activity by {by!r}: by server, tool, client or decision")
        if not bucket > 0:
            raise ValueError(f"a bucket is a number of seconds above 0, not {bucket!r}")
        if bucket >= 3600:
            sql = (
                f"SELECT CAST(hour * 3600 / ? AS INTEGER), {key}, SUM(calls) FROM activity "  # noqa: S608
                "WHERE hour >= ? AND hour < ? GROUP BY 1, 2 ORDER BY 1"
            )
            params: tuple[float, ...] = (bucket, math.floor(start / 3600), math.ceil(end / 3600))
        else:
            sql = (
                f"SELECT CAST(time / ? AS INTEGER), {key}, COUNT(*) FROM calls "  # noqa: S608
                "WHERE time >= ? AND time < ? GROUP BY 1, 2 ORDER BY 1"
            )
            params = (bucket, start, end)
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(int(index) * bucket, str(name), int(calls)) for index, name, calls in rows]

    def top_blocked(self, start: float, end: float, limit: int = 10) -> list[tuple[str, int]]:
        """The tools whose calls were blocked most (denied, or refused by a person) from
        the hour ``start`` falls in to before the hour ``end`` falls in, as
        ("server/tool", calls), most first (the hourly counts).

        Raises:
            AuditError: the database cannot be read.
        """
        sql = (
            "SELECT server || '/' || tool, SUM(calls) FROM activity WHERE hour >= ? "
            "AND hour < ? AND decision IN ('denied', 'refused') GROUP BY 1 "
            "ORDER BY 2 DESC, 1 LIMIT ?"
        )
        hours = (math.floor(start / 3600), math.ceil(end / 3600))
        with self._reading() as conn:
            rows = conn.execute(sql, (*hours, limit)).fetchall()
        return [(str(tool), int(calls)) for tool, calls in rows]

    def approvals(self, start: float, end: float) -> ApprovalSummary:
        """The calls a person was asked about from ``start`` to before ``end``: how they
        were answered and how long the answers took.

        Raises:
            AuditError: the database cannot be read.
        """
        sql = (
            "SELECT decision, basis, waited_ms FROM calls INDEXED BY calls_waited "
            "WHERE waited_ms IS NOT NULL AND time >= ? AND time < ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, (start, end)).fetchall()
        waits = sorted(float(waited) for _, _, waited in rows)
        return ApprovalSummary(
            asked=len(rows),
            approved=sum(decision == "approved" for decision, _, _ in rows),
            timed_out=sum(basis == "timeout" for _, basis, _ in rows),
            median_wait_ms=_quantile(waits, 0.5),
            p90_wait_ms=_quantile(waits, 0.9),
        )

    def group_examples(
        self, group: DecidedGroup, start: float, end: float, limit: int = 5
    ) -> list[RecordedCall]:
        """The latest ``limit`` calls of ``group`` from ``start`` to before ``end``.

        Raises:
            AuditError: the database cannot be read.
        """
        sql = (
            f"{_RECORDED} WHERE server = ? AND tool = ? AND client = ? AND decision = ? "
            "AND COALESCE(basis, '') = ? AND (rule IS NOT NULL) = ? AND time >= ? AND time < ? "
            "ORDER BY time DESC LIMIT ?"
        )
        params = (group.server, group.tool, group.client, group.decision, group.basis)
        with self._reading() as conn:
            rows = conn.execute(sql, (*params, int(group.ruled), start, end, limit)).fetchall()
        return [RecordedCall(*row) for row in rows]

    def latest_rowid(self) -> int:
        """The rowid of the newest committed record; 0 when there is none.

        Raises:
            AuditError: the database cannot be read.
        """
        with self._reading() as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM calls").fetchone()
        return int(row[0])

    def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return _reading(self._path, self._busy_timeout)


class AuditLog(AuditReader):
    """The audit database at ``path``: one writer thread, readers on their own connections.

    Opening creates what is missing: folders with mode 0700, the file with mode 0600 (an
    existing file keeps its mode), the schema. The database runs in WAL mode with
    ``synchronous=NORMAL``: a committed record survives the process being killed (kill -9,
    a crash), since the commit has reached the operating system; it is not fsync'd on every
    commit, so a power cut or an OS crash may lose the last moments. Several processes may
    open the same log; ``busy_timeout`` is how long one waits for another's lock.

    Raises:
        AuditError: the database cannot be created or opened, is not a Lockgate audit log,
            or was made by a newer version.
        ValueError: ``max_argument_bytes`` is too small (see :func:`redact`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
        retention_days: int = 0,
        max_megabytes: int = 0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        prune_batch: int = PRUNE_BATCH,
    ) -> None:
        if max_argument_bytes < MIN_BYTES:
            raise ValueError(f"max_argument_bytes must be at least {MIN_BYTES}")
        if prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, not {prune_batch}")
        self._retention_days = _checked_days(retention_days)
        self._max_bytes = _checked_megabytes(max_megabytes) * _MB  # 0: no bound
        self._size_asked = False  # set_max_megabytes: look at the size now
        self._next_size_check = -math.inf  # on self._monotonic
        self._clock = clock
        self._monotonic = monotonic
        self._prune_batch = prune_batch
        self._prune_asked = False  # set_retention: prune now, whenever the last one was
        self._next_prune = -math.inf  # on self._monotonic; the first is due as the log opens
        self._pruning: _Pruning | None = None  # the writer thread's alone
        self._prunes = 0
        self._last_pruned: Pruned | None = None
        super().__init__(path, busy_timeout=busy_timeout)
        self._max_argument_bytes = max_argument_bytes
        self._queue: queue.SimpleQueue[_Pending | _Wake | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "closed?" against "enqueue" and "close"
        self._closed = False
        self._commits = 0
        try:
            create_private(self._path)
            self._conn = open_writer(self._path, busy_timeout)
            self._incremental = _auto_vacuum_is_incremental(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(f"cannot open the audit log {self._path}: {exc}") from exc
        self._write_lock = threading.Lock()  # the write connection, one user at a time
        # calls may be committed that the search index does not hold yet (set under the
        # write lock by whoever commits new calls; the writer thread indexes them)
        self._unindexed = True
        self._unindexed_since = -math.inf  # when the oldest of them was committed
        self._index_failed = False  # the last index step failed (logged once)
        self._index_failures = 0
        self._index_steps = 0  # transactions that added calls to the search index
        # writes queued for the writer, and taken by it: a lone write commits on its own
        # thread only when none waits (a wake-up in the queue is not a write)
        self._enqueued = 0  # under self._lock
        self._taken = 0  # the writer thread's
        self._thread = threading.Thread(target=self._run, name="lockgate-audit", daemon=True)
        self._thread.start()
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_now_and_then, name="lockgate-audit-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @property
    def commits(self) -> int:
        """Transactions committed by this log's writer so far (records per commit shows
        group commit at work)."""
        return self._commits

    @property
    def writer_idle(self) -> bool:
        """Whether the writer thread has nothing to do (no write queued, no step of the
        search index under way or due): a lone write would commit on its caller's thread."""
        return (
            self._enqueued == self._taken and not self._unindexed and not self._write_lock.locked()
        )

    @property
    def pruning(self) -> bool:
        """Whether a prune (by age or by size) is under way."""
        return self._pruning is not None

    @property
    def index_steps(self) -> int:
        """Transactions that added calls to the search index since the log opened (the
        calls of :data:`INDEX_AFTER` go in together)."""
        return self._index_steps

    @property
    def index_failures(self) -> int:
        """Steps of the search index that failed since the log opened (each is tried
        again with the next call committed; the first of a run is logged)."""
        return self._index_failures

    @property
    def retention_days(self) -> int:
        """How many days a call is kept; 0: for ever."""
        with self._lock:
            return self._retention_days

    @property
    def prunes(self) -> int:
        """Prunes of old calls finished since the log opened (one as it opens, then hourly,
        and one after each :meth:`set_retention`, while the retention is not 0)."""
        return self._prunes

    @property
    def last_pruned(self) -> Pruned | None:
        """What the last finished prune deleted; None before the first."""
        return self._last_pruned

    def set_retention(self, days: int) -> None:
        """Keep each call ``days`` days from now on; 0 keeps every call for ever.

        The writer thread prunes with the new retention at once (a prune under way goes on
        from the new cut), then once an hour. Returns at once: safe on the event loop.

        Raises:
            ValueError: ``days`` is not a whole number of days, 0 or more.
        """
        checked = _checked_days(days)
        with self._lock:
            self._retention_days = checked
            self._prune_asked = True
            if not self._closed:
                self._queue.put(_WAKE)

    @property
    def max_megabytes(self) -> int:
        """The most room the calls may take, in MB; 0: no bound."""
        with self._lock:
            return self._max_bytes // _MB

    def set_max_megabytes(self, megabytes: int) -> None:
        """Bound the room the calls take to ``megabytes`` MB from now on; 0: no bound.

        The writer thread looks at the log's size at once (and prunes the oldest calls
        if it is over), then once a minute. Returns at once: safe on the event loop.

        Raises:
            ValueError: ``megabytes`` is not a whole number, 0 or more.
        """
        checked = _checked_megabytes(megabytes) * _MB
        with self._lock:
            self._max_bytes = checked
            self._size_asked = True
            if not self._closed:
                self._queue.put(_WAKE)

    def summary(self) -> AuditSummary:
        """:func:`audit_summary` of this log. Counts every call: not on the event loop.

        Raises:
            AuditError: the database cannot be read.
        """
        return audit_summary(self._path, busy_timeout=self._busy_timeout)

    def compact(self) -> AuditSummary:
        """Give every free page back to the file system now (a full VACUUM), and make the
        file do so by itself after each prune from then on (incremental auto_vacuum).

        A log made before pruning came keeps the room of pruned calls inside the file for
        new calls (:attr:`AuditSummary.free_bytes` says how much); this shrinks it. It
        rewrites the whole file: for a big log that is seconds, and every write waits
        (calls are not sent meanwhile) until it is done, so it is for a person who asked
        for it, on a worker thread, never the event loop. Returns the summary after.

        Raises:
            AuditError: the log is closed, or the database could not be compacted (the
                disk is full: VACUUM needs room for a copy of the database); it is then as
                it was.
        """
        with self._write_lock:
            with self._lock:
                if self._closed:
                    raise AuditError(f"the audit log {self._path} is closed")
            try:
                self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._conn.execute("VACUUM")
                self._incremental = _auto_vacuum_is_incremental(self._conn)
            except sqlite3.Error as exc:
                self._rollback()
                raise AuditError(f"cannot compact the audit log {self._path}: {exc}") from exc
            with contextlib.suppress(sqlite3.Error):  # a reader holds it: the checkpointer will
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return self.summary()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing

    async def write(self, record: CallRecord, *, alone: bool = False) -> None:
        """Record ``record`` (a finished call); returns once it is committed, so it
        survives a kill.

        Cancelling the awaiting task does not withdraw the record: it is written anyway.
        ``alone``: the caller knows no other write is under way (the gateway's only call in
        flight); the record is then committed on the calling thread when the writer is
        idle, which halves its latency. Leave it False when writes may come together:
        they then share the writer's group commits.

        Raises:
            AuditError: the record was not committed (the log is closed, the disk is full,
                the database is locked for longer than ``busy_timeout``, a record with the
                same id is already in the log, ...).
        """
        await self._write((insert_step(record, self._max_argument_bytes),), alone)

    async def begin(
        self, record: CallRecord, charges: Iterable[Charge] = (), *, alone: bool = False
    ) -> None:
        """Record a call before it is sent upstream: ``record`` with outcome ``pending``,
        and the rate-limit ``charges`` it makes, in one transaction. Returns once that is
        committed; only then may the call be sent. :meth:`finish` completes the record.

        Raises:
            AuditError: nothing was committed (see :meth:`write`): the call must not be
                sent.
        """
        pending = replace(record, outcome=Outcome.PENDING)
        steps: list[Step] = [insert_step(pending, self._max_argument_bytes)]
        rows = [(record.id, c.counter, c.client, float(c.time)) for c in charges]
        if rows:
            steps.append((CHARGE, rows))
        await self._write(tuple(steps), alone)

    async def finish(
        self,
        call_id: str,
        outcome: Outcome,
        *,
        duration_ms: float | None = None,
        result_size: int | None = None,
        error: str | None = None,
        refund: bool = False,
        alone: bool = False,
        findings: Iterable[Mapping[str, str]] = (),
        secrets: str | None = None,
    ) -> None:
        """Complete the record :meth:`begin` wrote with the call's outcome; ``refund``
        gives its charges back (the call never reached the server). ``findings`` are
        what its result held that looked like a secret (kind and place only), and
        ``secrets`` what was done about them.

        Raises:
            AuditError: the outcome was not committed; the record stays ``pending``.
        """
        row = (
            Outcome(outcome).value,
            duration_ms,
            result_size,
            None if error is None else clip(error),
            findings_json(findings),
            None if secrets is None else clip(secrets),
            call_id,
        )
        steps: list[Step] = [(COMPLETE, [row])]
        if refund:
            steps.append((REFUND, [(call_id,)]))
        await self._write(tuple(steps), alone)

    def recover_interrupted(self) -> int:
        """Mark the ``pending`` records of a gateway that stopped (crashed, was killed)
        ``interrupted``; returns how many. Only a starting gateway calls this: a running
        one's pending calls are in flight.

        Raises:
            AuditError: the database cannot be written.
        """
        error = "Lockgate stopped before the server answered"
        sql = "UPDATE calls SET outcome = ?, error = COALESCE(error, ?) WHERE outcome = ?"
        with self._write_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                cursor = self._conn.execute(
                    sql, (Outcome.INTERRUPTED.value, error, Outcome.PENDING.value)
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _write_error(exc) from exc
        return int(cursor.rowcount)

    async def prune_charges(self, before: float) -> None:
        """Forget the charges older than ``before``: no limit can count them any more.

        Raises:
            AuditError: as for :meth:`write`.
        """
        await self._write((("DELETE FROM charges WHERE time < ?", [(before,)]),), False)

    async def _write(self, steps: tuple[Step, ...], alone: bool) -> None:
        if alone and self._commit_inline(steps):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(steps, done)
        await done

    def _commit_inline(self, steps: tuple[Step, ...]) -> bool:
        """Commit ``steps`` right here when the writer is idle; False when it is busy.

        A lone call's record then costs one SQLite commit (about 0.1 ms) instead of two
        thread hand-offs on top. Only a lone one (see :meth:`write`): writes that come
        together queue for the writer's group commit, which costs the event loop nothing
        and commits many in one go. It never waits for a lock on the caller's thread (the
        event loop): while another connection holds the database, the write goes to the
        writer thread, which waits up to ``busy_timeout`` without stalling anything.

        Raises:
            AuditError: the log is closed, or the record was not committed.
        """
        if self._enqueued != self._taken or not self._write_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._closed:
                    raise AuditError(f"the audit log {self._path} is closed")
            self._conn.execute("PRAGMA busy_timeout = 0")
            try:
                self._run_steps([steps])
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return False
                raise _write_error(exc) from exc
            except Exception as exc:
                raise _write_error(exc) from exc
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._commits += 1
            if _inserts(steps) and not self._unindexed:
                self._unindexed_since = time.monotonic()
                self._unindexed = True
                self._queue.put(_WAKE)  # the writer indexes them, in INDEX_AFTER
            return True
        finally:
            self._write_lock.release()

    def write_sync(self, record: CallRecord) -> None:
        """:meth:`write` for code without an event loop; blocks until committed.

        Raises:
            AuditError: as for :meth:`write`.
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue((insert_step(record, self._max_argument_bytes),), done)
        done.result()

    def close(self) -> None:
        """Commit everything queued, then stop the writer. Idempotent; reading still works."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._stop_checkpoints.set()
        self._checkpointer.join()
        self._thread.join()

    def _checkpoint_now_and_then(self) -> None:
        """Fold the WAL into the database once a second, on a connection of its own.

        The writer does not checkpoint (``wal_autocheckpoint = 0``): a checkpoint on the
        commit path made one write in a hundred wait milliseconds. A passive checkpoint
        here runs beside the writer's commits without blocking them.
        """
        try:
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while not self._stop_checkpoints.wait(1.0):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def _enqueue(
        self,
        steps: tuple[Step, ...],
        done: asyncio.Future[None] | concurrent.futures.Future[None],
    ) -> None:
        with self._lock:
            if self._closed:
                raise AuditError(f"the audit log {self._path} is closed")
            self._enqueued += 1
            self._queue.put(_Pending(steps, done))

    def _run(self) -> None:
        try:
            while self._commit_next_batch():
                pass
        finally:
            with self._lock:
                self._closed = True
            left: list[_Pending] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    pending = self._queue.get_nowait()
                    if isinstance(pending, _Pending):
                        left.append(pending)
            _settle(left, RuntimeError("the audit log's writer has stopped"))
            with self._write_lock:  # compact() may be using the connection
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()

    def _commit_next_batch(self) -> bool:
        """Commit what is queued (waiting for at least one, or for housekeeping to be
        due), then take one bounded step of housekeeping; False once told to stop."""
        batch: list[_Pending] = []
        wait = self._housekeeping_due_in()
        try:
            if wait is None:
                pending = self._queue.get()
            elif wait > 0:
                pending = self._queue.get(timeout=wait)
            else:
                pending = self._queue.get_nowait()
        except queue.Empty:
            pending = _WAKE
        while pending is not None:
            if isinstance(pending, _Pending):
                self._taken += 1
                batch.append(pending)
                if len(batch) >= _MAX_BATCH:
                    break
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
        if batch:
            self._commit(batch)
        if pending is None:
            while self._unindexed:  # a closed log is searchable whole
                self._index_step()
            return False
        self._housekeep()
        return True

    # -- pruning old calls (the writer thread's)

    def _housekeeping_due_in(self) -> float | None:
        """How long the writer may wait for a write before its next step of indexing or
        pruning is due, in seconds; None: it waits for a write (or a new retention) only."""
        if self._pruning is not None:
            return 0.0
        index_in = self._index_due_in()
        if index_in == 0.0:
            return 0.0
        due: list[float] = []
        with self._lock:  # (a new retention is looked at at once: its wake-up is queued)
            if self._retention_days:
                due.append(self._next_prune)
        if self._max_bytes:
            due.append(self._next_size_check)
        if not due:
            return index_in
        # On the injected clock; the writer wakes at least hourly to look again.
        prune_in = min(max(0.0, min(due) - self._monotonic()), PRUNE_EVERY)
        return prune_in if index_in is None else min(prune_in, index_in)

    def _index_due_in(self) -> float | None:
        """Seconds until the calls not yet searchable are to be indexed; None: none wait."""
        if not self._unindexed:
            return None
        return max(0.0, self._unindexed_since + INDEX_AFTER - time.monotonic())

    def _housekeep(self) -> None:
        """One bounded step of indexing new calls for the search, if any wait, and one
        of pruning old calls, if a prune is due or under way."""
        if self._index_due_in() == 0.0:
            self._index_step()
        with self._lock:
            days = self._retention_days
            asked, self._prune_asked = self._prune_asked, False
            max_bytes = self._max_bytes
            if self._size_asked:
                self._size_asked, self._next_size_check = False, -math.inf
        if self._pruning is not None:
            bound = max_bytes if self._pruning.by_size else days
            if not bound:
                self._pruning = None  # the bound it pruned for is gone: a prune stops
        if days and (asked or (self._pruning is None and self._monotonic() >= self._next_prune)):
            before = self._clock() - days * _DAY
            if self._pruning is None:
                self._pruning = _Pruning(before)
            else:  # a new retention while pruning: go on from its cut
                self._pruning.before, self._pruning.deleting = before, True
        if self._pruning is None and max_bytes and self._monotonic() >= self._next_size_check:
            self._next_size_check = self._monotonic() + SIZE_CHECK_EVERY
            cut = self._size_cut()
            if cut is not None:
                self._pruning = _Pruning(cut, by_size=True)
        if self._pruning is not None:
            self._prune_step(self._pruning)

    def _size_cut(self) -> float | None:
        """When the calls held take more room than the size bound: the arrival time
        before which calls must go for them to take a tenth less than it (the oldest
        first, as many as their share of the room); None: they fit."""
        try:
            with self._write_lock:  # compact() may be using the connection
                return self._size_cut_now()
        except sqlite3.Error as exc:
            logger.warning("could not measure the audit log (again in a minute): %s", exc)
            return None

    def _size_cut_now(self) -> float | None:
        page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        used = (pages - free) * page
        if used <= self._max_bytes:
            return None
        calls = int(self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        drop = math.ceil(calls * (used - self._max_bytes * 0.9) / used)
        row = self._conn.execute(
            "SELECT time FROM calls ORDER BY time LIMIT 1 OFFSET ?", (min(drop, calls - 1),)
        ).fetchone()
        return None if row is None else float(row[0])

    def _prune_step(self, run: _Pruning) -> None:
        try:
            with self._write_lock:
                if run.deleting:
                    deleted = self._delete_calls_before(run.before)
                    run.calls += deleted
                    run.batches += 1
                    run.deleting = deleted >= self._prune_batch
                    run.merging = run.calls > 0
                    if not run.deleting and run.calls:
                        self._recount_before(run.before)
                    done = not run.deleting and not run.merging and not self._incremental
                elif run.merging:
                    run.merging = self._merge_search_index()
                    done = not run.merging and not self._incremental
                else:
                    freed = self._give_back_free_pages()
                    run.pages_freed += freed
                    done = freed < VACUUM_PAGES
        except sqlite3.Error as exc:  # rolled back already, under the lock
            logger.warning(
                "could not prune old calls from the audit log (again in an hour): %s", exc
            )
            self._pruning = None
            self._next_prune = self._monotonic() + PRUNE_EVERY
            return
        if done:
            self._pruning = None
            if run.by_size:  # measured again at once: it may take another round to fit
                self._next_size_check = -math.inf
            else:
                self._next_prune = self._monotonic() + PRUNE_EVERY
            self._last_pruned = Pruned(run.before, run.calls, run.batches, run.pages_freed)
            self._prunes += 1
            if run.calls:
                why = (
                    "to keep it within its size bound"
                    if run.by_size
                    else "older than the retention"
                )
                logger.info("pruned %d calls from the audit log %s", run.calls, why)

    def _delete_calls_before(self, before: float) -> int:
        """Delete one batch of the calls that arrived before ``before``; how many."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._conn.execute(PRUNE_CALLS, (before, self._prune_batch))
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return int(cursor.rowcount)

    def _index_step(self) -> None:
        """Add a batch of the calls committed since the last step to the search index.

        A failure (the disk is full, another program's lock) is logged once and tried
        again with the next call committed: search lags behind, nothing is lost.
        """
        with self._write_lock:
            try:
                up_to = self._next_to_index()  # a read: nothing to do takes no lock
                if up_to is not None:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        up_to = self._next_to_index()  # as it is now, under the lock
                        if (
                            up_to is not None
                        ):  # pragma: no branch (else: another process indexed them meanwhile)
                            self._conn.execute(INDEX_CALLS, up_to)
                            self._conn.execute(COUNT_CALLS, up_to)
                            self._conn.execute("UPDATE search_state SET indexed = ?", up_to[1:])
                        self._conn.execute("COMMIT")
                        self._index_steps += up_to is not None
                    except BaseException:
                        self._rollback()
                        raise
            except sqlite3.Error as exc:
                self._index_failures += 1
                if not self._index_failed:
                    logger.warning(
                        "could not add new calls to the audit log's search index "
                        "(again with the next call): %s",
                        exc,
                    )
                self._index_failed = True
                self._unindexed = False
                return
            self._index_failed = False
            self._unindexed = up_to is not None  # until a step finds nothing new
            self._unindexed_since = -math.inf  # a backlog: the next batch at once

    def _recount_before(self, before: float) -> None:
        """Count the hours a prune cut into again (up to the one ``before`` falls in),
        from the calls that are left of them."""
        up_to = int(before // 3600) + 1
        self._run_steps(
            [
                (
                    ("DELETE FROM activity WHERE hour < ?", [(up_to,)]),
                    (RECOUNT_BEFORE, [(up_to * 3600.0,)]),
                )
            ]
        )

    def _next_to_index(self) -> tuple[int, int] | None:
        """The next batch to index, as (after this seq, up to this one); None: none."""
        indexed = int(self._conn.execute(INDEXED).fetchone()[0])
        up_to = self._conn.execute(INDEX_UP_TO, (indexed, INDEX_BATCH)).fetchone()[0]
        return None if up_to is None else (indexed, int(up_to))

    def _merge_search_index(self) -> bool:
        """One bounded step of merging the full-text index's segments, which is what
        drops a deleted call's words from it (a delete only marks them); whether there is
        more to do. (FTS5 tells by the total changes: two or more, it did some work.)"""
        before = self._conn.total_changes
        self._run_steps([((MERGE_INDEX, [(-MERGE_PAGES,)]),)])
        return self._conn.total_changes - before >= 2

    def _give_back_free_pages(self) -> int:
        """Give up to VACUUM_PAGES free pages back to the file system; how many.

        (Python's ``execute`` steps ``incremental_vacuum`` once, which frees one page;
        ``executescript`` runs it to the end.)
        """
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free == 0:
            return 0
        try:
            self._conn.executescript(
                f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({VACUUM_PAGES}); COMMIT;"
            )
        except BaseException:
            self._rollback()
            raise
        return free - int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])

    def _commit(self, batch: list[_Pending]) -> None:
        error: Exception | None = None
        try:
            with self._write_lock:
                self._run_steps([pending.steps for pending in batch])
                if not self._unindexed and any(_inserts(p.steps) for p in batch):
                    self._unindexed_since = time.monotonic()
                    self._unindexed = True
        except sqlite3.IntegrityError as exc:
            if len(batch) > 1:  # one bad record (a repeated id) must not fail the others
                for pending in batch:
                    self._commit([pending])
                return
            error = exc
        except Exception as exc:  # whatever it is, the writers waiting must hear of it
            error = exc
        except BaseException:  # the writer thread ends: its writers must not wait for ever
            _settle(batch, RuntimeError("the audit log's writer has stopped"))
            raise
        else:
            self._commits += 1
        _settle(batch, error)

    def _run_steps(self, writes: list[tuple[Step, ...]]) -> None:
        """Run every write's steps, in order, in one transaction. Consecutive steps with
        the same statement (the common case: many inserts) run as one executemany."""
        conn = self._conn
        merged: list[tuple[str, list[tuple[Any, ...]]]] = []
        for steps in writes:
            for sql, rows in steps:
                if merged and merged[-1][0] == sql:
                    merged[-1][1].extend(rows)
                else:
                    merged.append((sql, list(rows)))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in merged:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


_RECORDED: Final = (  # a RecordedCall's columns
    "SELECT id, time, client, server, tool, arguments, decision, basis, rule, outcome FROM calls"
)
_ACTIVITY_KEYS: Final = {
    "server": "server",
    "tool": "server || '/' || tool",
    "client": "client",
    "decision": "decision",
}


def audit_summary(path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> AuditSummary:
    """How big the audit log at ``path`` is on disk, how many calls it keeps and since
    when. A log that does not exist is empty (and is not made). It counts every call (a
    fraction of a second for millions): on a worker thread, not the event loop or the GUI.

    Raises:
        AuditError: the database cannot be read.
    """
    path = Path(path).absolute()
    size = 0
    for file in files_of(path):
        try:
            size += file.stat().st_size
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {path}: {exc}") from exc
    if not path.exists():
        return AuditSummary(size, 0, None, 0, incremental_vacuum=False)
    with _reading(path, busy_timeout) as conn:
        calls = int(conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
        oldest = conn.execute("SELECT MIN(time) FROM calls").fetchone()[0]  # by its index
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        incremental = _auto_vacuum_is_incremental(conn)
    return AuditSummary(
        size_bytes=size,
        calls=calls,
        oldest=None if oldest is None else float(oldest),
        free_bytes=free * page,
        incremental_vacuum=incremental,
    )


@contextlib.contextmanager
def _reading(path: Path, busy_timeout: float) -> Iterator[sqlite3.Connection]:
    """A fresh read-only connection, so any thread can read while the writer writes."""
    uri = f"{path.as_uri()}?mode=rw"  # never create a database that vanished
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit log {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA query_only = ON")
        yield conn
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit log {path}: {exc}") from exc
    finally:
        conn.close()


def _quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``ordered`` (nearest rank); None for none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _inserts(steps: tuple[Step, ...]) -> bool:
    """Whether a write adds calls (which the search index must then be given)."""
    return any(sql == INSERT for sql, _ in steps)


def _auto_vacuum_is_incremental(conn: sqlite3.Connection) -> bool:
    return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2


_MB: Final = 1024 * 1024


def _checked_megabytes(megabytes: int) -> int:
    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or megabytes < 0:
        raise ValueError(f"max_megabytes is a whole number, 0 or more, not {megabytes!r}")
    return megabytes


def _checked_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValueError(f"the retention is a whole number of days, 0 or more, not {days!r}")
    return days


def _settle(batch: list[_Pending], failure: Exception | None) -> None:
    """Tell each writer in ``batch`` how its write went, from the writer thread.

    Async writers hear it on their own loop, one hand-off per loop for the whole batch.
    """
    by_loop: dict[
        asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], AuditError | None]]
    ] = {}
    for pending in batch:
        error = None if failure is None else _write_error(failure)
        if isinstance(pending.done, asyncio.Future):
            by_loop.setdefault(pending.done.get_loop(), []).append((pending.done, error))
        elif error is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(error)
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future[None], AuditError | None]]) -> None:
    for done, error in results:
        if done.done():  # its task was cancelled; the record was written all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (by another connection)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _write_error(cause: Exception) -> AuditError:
    error = AuditError(f"the call was not recorded in the audit log: {cause}")
    error.__cause__ = cause
    return error
