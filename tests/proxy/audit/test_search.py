"""The history's full-text search: what it finds, that it stays in step with the log
(a call's outcome, a prune), that no text breaks it, and that an older log is indexed
when it is upgraded."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from proxy.audit.database import MIGRATIONS, AuditError, match_expression
from proxy.audit.log import INDEX_BATCH, AuditLog, AuditReader
from proxy.audit.records import CallDecision, Outcome
from tests.support.records import make_record as make
from tests.support.waiting import eventually, eventually_sync

DAY = 86400.0
NOW = 1_800_000_000.0


def tools_found(audit: AuditLog, search: str, **filters: object) -> list[str]:
    """The tools of the calls a search finds, once every call committed is indexed."""
    eventually_sync(lambda: audit.search_backlog() == 0, "every call in the search index")
    return [record.tool for record in audit.query(search=search, **filters)]  # type: ignore[arg-type]


def test_a_search_finds_a_call_by_any_of_its_words(log: AuditLog) -> None:
    log.write_sync(make(tool="read_file", arguments={"path": "/home/me/.ssh/id_rsa"}))
    log.write_sync(
        make(
            tool="delete_repo",
            server="github",
            client="cursor",
            decision=CallDecision.DENIED,
            reason="deleting a repository is never allowed",
            outcome=Outcome.BLOCKED,
        )
    )
    log.write_sync(make(tool="fetch", outcome=Outcome.TOOL_ERROR, error="connection refused"))
    assert tools_found(log, "ssh") == ["read_file"]  # in the arguments
    assert tools_found(log, "id_rsa") == ["read_file"]  # a name with its underscore
    assert tools_found(log, "github") == ["delete_repo"]  # the server
    assert tools_found(log, "cursor") == ["delete_repo"]  # the client
    assert tools_found(log, "never allowed") == ["delete_repo"]  # the reason, both words
    assert tools_found(log, "refused") == ["fetch"]  # the error
    assert tools_found(log, "delet") == ["delete_repo"]  # the start of a word
    assert tools_found(log, "DELETE_REPO") == ["delete_repo"]  # any case
    assert tools_found(log, "ssh github") == []  # every word must be in the call
    assert tools_found(log, '"allowed never"') == []  # a quoted phrase, in that order
    assert log.count(search="files") == 2  # the server of the other two
    assert log.count(search="files", decision="allowed") == 2
    assert tools_found(log, "files", tool="fetch") == ["fetch"]  # with the other filters


def test_the_search_follows_a_call_from_pending_to_its_outcome(log: AuditLog) -> None:
    record = make(tool="slow", outcome=Outcome.PENDING)
    asyncio.run(log.begin(record))
    assert tools_found(log, "timeout") == []
    asyncio.run(log.finish(record.id, Outcome.TIMED_OUT, error="the rule's timeout passed"))
    assert tools_found(log, "timeout") == ["slow"]
    assert log.get(record.id) is not None
    raw = sqlite3.connect(log.path)
    try:  # the index agrees with its content table, row for row
        raw.execute("INSERT INTO calls_text(calls_text, rank) VALUES ('integrity-check', 1)")
    finally:
        raw.close()


def test_no_text_is_read_as_the_search_syntax(log: AuditLog) -> None:
    log.write_sync(make(tool="query", arguments={"sql": "SELECT * FROM users WHERE a OR b"}))
    for text in ('"OR', "OR", "NEAR(a b)", "tool:query", "a*", "(users", "NOT users", "^users"):
        log.query(search=text)  # each is plain words, never an error of the index
    assert tools_found(log, "users OR") == ["query"]  # OR as a word the call holds
    assert tools_found(log, "sql:select") == ["query"]  # words in a row, not a column filter
    for nothing in ("", "   ", '"', '""', "*", "-- ;"):
        with pytest.raises(AuditError, match="nothing to search for"):
            log.query(search=nothing)


def test_a_search_expression_quotes_every_word() -> None:
    assert match_expression('read "ssh key" id_rsa') == '"read"* AND "ssh key"* AND "id rsa"*'
    assert match_expression('x"y') == '"x y"*'  # one word, its parts in a row


def test_paging_through_a_search_finds_each_match_once(log: AuditLog) -> None:
    for n in range(25):
        log.write_sync(make(tool=f"tool_{n}", reason="wanted" if n % 2 else "other"))
    eventually_sync(lambda: log.search_backlog() == 0, "every call in the search index")
    seen: list[str] = []
    page = log.query(search="wanted", limit=4)
    while page:
        seen.extend(record.tool for record in page)
        page = log.query(search="wanted", limit=4, before_id=page[-1].id)
    assert seen == [f"tool_{n}" for n in range(23, 0, -2)]


async def test_pruned_calls_are_no_longer_found(db: Path) -> None:
    with AuditLog(db) as audit:
        audit.write_sync(make(tool="ancient", time=NOW - 200 * DAY, reason="findme"))
        audit.write_sync(make(tool="recent", time=NOW, reason="findme"))
    with AuditLog(db, retention_days=30, clock=lambda: NOW) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        assert tools_found(audit, "findme") == ["recent"]


def test_a_log_of_version_5_is_indexed_as_it_is_upgraded(db: Path) -> None:
    db.parent.mkdir()
    raw = sqlite3.connect(db, isolation_level=None)
    try:
        for statements in MIGRATIONS[:5]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 5")
        raw.execute(
            "INSERT INTO calls (id, time, client, server, tool, arguments, decision, reason,"
            " outcome) VALUES ('old', 1.0, 'cursor', 'git', 'push', '{\"remote\":\"origin\"}',"
            " 'allowed', 'pushed before search came', 'ok')"
        )
    finally:
        raw.close()
    with AuditLog(db) as audit:  # indexed in the background, as a new call would be
        assert tools_found(audit, "origin") == ["push"]
        assert tools_found(audit, "search came") == ["push"]


def test_a_backlog_of_several_batches_is_indexed_whole(db: Path) -> None:
    """A burst is indexed in transactions of INDEX_BATCH calls, until none is left."""
    with AuditLog(db) as audit:
        for n in range(INDEX_BATCH * 2 + 5):
            audit.write_sync(make(tool=f"t{n}", reason="burst"))
        assert audit.count(search="burst") <= audit.count()
        assert len(tools_found(audit, "burst", limit=10_000)) == INDEX_BATCH * 2 + 5


async def test_a_call_committed_on_the_callers_thread_is_indexed_too(log: AuditLog) -> None:
    await log.write(make(tool="lone", reason="inline"), alone=True)
    assert tools_found(log, "inline") == ["lone"]


async def test_lone_calls_that_come_close_together_go_into_the_index_together(
    log: AuditLog,
) -> None:
    """Each lone call once cost a second transaction of its own, for the index: the
    calls of INDEX_AFTER now go in together; and a log closed at once is searchable
    whole."""
    await eventually(lambda: log.writer_idle, "the writer idle: lone writes commit inline")
    before = log.index_steps
    for n in range(20):
        await log.write(make(tool=f"lone{n}", reason="close together"), alone=True)
    assert len(tools_found(log, "close together", limit=100)) == 20
    assert log.index_steps - before <= 2  # (20 steps, one per call, before)
    for n in range(5):
        await log.write(make(tool=f"last{n}", reason="at the close"), alone=True)
    log.close()
    assert AuditReader(log.path).count(search="at the close") == 5


async def test_an_index_step_that_fails_is_logged_and_tried_again(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program's trigger refuses the index's bookkeeping: the calls are
    committed all the same, the failure is logged once, and the calls are indexed once
    it is gone (with the next call committed)."""
    caplog.set_level("WARNING", logger="proxy.audit.log")
    with AuditLog(db) as audit:
        audit.write_sync(make(tool="before"))
        tools_found(audit, "before")
        raw = sqlite3.connect(db, isolation_level=None)
        try:
            raw.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON search_state "
                "BEGIN SELECT RAISE(ABORT, 'not now'); END"
            )
            audit.write_sync(make(tool="during", reason="kept"))
            await eventually(lambda: "search index" in caplog.text, "the failure logged")
            audit.write_sync(make(tool="during_too", reason="kept"))
            await eventually(lambda: audit.index_failures == 2, "a second step failed")
            assert audit.count() == 3  # committed, not yet searchable
            assert audit.search_backlog() == 2
            raw.execute("DROP TRIGGER refuse")
        finally:
            raw.close()
        audit.write_sync(make(tool="after", reason="kept"))
        assert tools_found(audit, "kept") == ["after", "during_too", "during"]
    assert caplog.text.count("search index") == 1
