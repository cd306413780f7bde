"""The hourly counts of calls: they agree with the calls themselves (after writes, at any
period's edges, after a prune that cuts into an hour), the activity plots read them, and
a replay that reads them gives the report a replay of every call gives."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.log import SIZE_CHECK_EVERY, AuditLog
from proxy.audit.records import CallDecision, Outcome
from proxy.policy.model import parse_policy
from proxy.policy.replay import (
    ReplayReport,
    _unchanged_tools,
    replay,
    replay_history,
    warm_up_seconds,
)
from tests.support.records import make_record as make
from tests.support.waiting import eventually, eventually_sync

HOUR = 3600.0
T0 = 1_800_000_000.0  # a whole hour (500,000 hours)
TOOLS = [("git", "push"), ("git", "log"), ("files", "read"), ("files", "write"), ("web", "get")]
CLIENTS = ["cursor", "ci", "claude"]
KINDS = [  # (decision, basis, rule?, outcome)
    ("allowed", "default", False, "ok"),
    ("allowed", "rule", True, "ok"),
    ("denied", "rule", True, "blocked"),
    ("denied", "limit", True, "blocked"),
    ("denied", "arguments", True, "blocked"),
    ("approved", "person", True, "ok"),
    ("refused", "timeout", True, "blocked"),
    ("denied", "pause", False, "blocked"),  # Lockgate's own: left out of a replay
    ("allowed", "rule", True, "protocol_error"),
]


def history(log: AuditLog, calls: int, hours: float, seed: int = 3) -> None:
    rng = random.Random(seed)
    for n in range(calls):
        server, tool = rng.choice(TOOLS)
        decision, basis, ruled, outcome = rng.choice(KINDS)
        log.write_sync(
            make(
                time=T0 + rng.random() * hours * HOUR,
                server=server,
                tool=tool,
                client=rng.choice(CLIENTS),
                arguments={"path": rng.choice(["/tmp/a", "/etc/b", "[redacted]"]), "n": n},
                decision=CallDecision(decision),
                basis=basis,
                rule=f"{server}/{tool}" if ruled else None,
                outcome=Outcome(outcome),
            )
        )
    eventually_sync(lambda: log.search_backlog() == 0, "every call counted")


def policy(tools: dict[str, Any]) -> Any:
    return parse_policy(json.dumps({"version": "1", "default": "allow", "tools": tools}))


IN_FORCE = policy(
    {
        "git/push": {"action": "ask", "when": [{"clients": ["ci"], "action": "deny"}]},
        "files/write": {"arguments": {"properties": {"path": {"pattern": "^/tmp/"}}}},
        "web/get": {"limits": [{"counter": "web", "window": "hour", "max": 5}]},
        "git/log": {"limits": [{"counter": "web", "window": "hour", "max": 8}]},  # shared
    }
)
CANDIDATES = [
    IN_FORCE,
    policy({"git/*": {"action": "deny"}, "files/read": {"action": "ask"}}),
    policy(
        {
            "git/push": {"action": "allow"},
            "web/get": {"limits": [{"counter": "web", "window": "minute", "max": 1}]},
            "files/*": {"arguments": {"properties": {"path": {"maxLength": 6}}}},
        }
    ),
    # only git/log's limit changes; web/get's rule does not, but it counts on the same
    # counter, so its calls must be replayed under the candidate too
    policy(
        {
            "git/push": {"action": "ask", "when": [{"clients": ["ci"], "action": "deny"}]},
            "files/write": {"arguments": {"properties": {"path": {"pattern": "^/tmp/"}}}},
            "web/get": {"limits": [{"counter": "web", "window": "hour", "max": 5}]},
            "git/log": {"limits": [{"counter": "web", "window": "hour", "max": 20}]},
        }
    ),
]


def counts(report: ReplayReport) -> tuple[Any, ...]:
    """What a replay of the counts and one of every call agree on (drift apart: the
    first does not replay a tool the change leaves alone)."""
    return (
        report.calls,
        report.skipped,
        report.uncertain,
        dict(report.changes),
        dict(report.by_tool),
        dict(report.by_client),
        {key: len(kept) for key, kept in report.examples.items()},
    )


@pytest.mark.parametrize("candidate", range(len(CANDIDATES)))
def test_a_replay_of_the_counts_is_a_replay_of_every_call(log: AuditLog, candidate: int) -> None:
    history(log, 600, hours=6)
    chosen = CANDIDATES[candidate]
    for start, end in ((T0, T0 + 6 * HOUR), (T0 + 1234.5, T0 + 4.7 * HOUR), (T0 + 60, T0 + 900)):
        warm = start - warm_up_seconds(chosen, IN_FORCE)
        every = replay(log.recorded_calls(warm, end), chosen, IN_FORCE, start=start, end=end)
        grouped = replay_history(log, chosen, IN_FORCE, start, end)
        assert counts(grouped) == counts(every), (start, end)
        # drift among the tools the change may touch, as a replay of their every call has it
        touched = set(TOOLS) - _unchanged_tools(chosen, IN_FORCE, TOOLS)
        theirs = replay(log.recorded_calls(warm, end, touched), chosen, IN_FORCE, start=start)
        assert grouped.drifted == theirs.drifted, (start, end)
        assert (theirs.drifted > 0) == bool(touched)  # the history is random: it drifts
        assert every.calls + every.skipped == log.count(start=start, end=end)
        if start == T0:  # the whole history: every candidate but the first changes some
            assert (every.changed > 0) == (candidate > 0)


def test_the_counts_agree_with_the_calls_and_the_plots_read_them(log: AuditLog) -> None:
    history(log, 300, hours=3)
    hourly = log.activity(T0, T0 + 3 * HOUR, bucket=HOUR, by="decision")
    assert {start for start, _, _ in hourly} == {T0, T0 + HOUR, T0 + 2 * HOUR}
    assert sum(n for _, _, n in hourly) == 300
    for start, decision, n in hourly:
        assert n == log.count(start=start, end=start + HOUR, decision=decision)
    daily = log.activity(T0, T0 + 3 * HOUR, bucket=86400, by="tool")
    assert {k: n for _, k, n in daily} == {
        f"{s}/{t}": log.count(server=s, tool=t) for s, t in TOOLS if log.count(server=s, tool=t)
    }
    minutes = log.activity(T0 + 600, T0 + 1200, bucket=60, by="client")  # from the calls
    assert sum(n for _, _, n in minutes) == log.count(start=T0 + 600, end=T0 + 1200)
    assert all(T0 + 600 <= start < T0 + 1200 for start, _, _ in minutes)
    with pytest.raises(ValueError, match="by server, tool, client or decision"):
        log.activity(T0, T0 + HOUR, bucket=60, by="arguments")
    with pytest.raises(ValueError, match="above 0"):
        log.activity(T0, T0 + HOUR, bucket=0, by="client")


async def test_a_prune_that_cuts_into_an_hour_counts_it_again(db: Path) -> None:
    with AuditLog(db) as audit:
        history(audit, 200, hours=4)
    cut = T0 + 1.5 * HOUR  # the retention's cut, half-way through the second hour
    with AuditLog(db, retention_days=1, clock=lambda: cut + 86400) as audit:
        await eventually(lambda: audit.prunes == 1, "the prune as the log opens")
        left = audit.count()
        assert 0 < left < 200
        counted = audit.activity(T0 - HOUR, T0 + 5 * HOUR, bucket=HOUR, by="client")
        assert sum(n for _, _, n in counted) == left
        second = sum(n for start, _, n in counted if start == T0 + HOUR)
        assert second == audit.count(start=T0 + HOUR, end=T0 + 2 * HOUR)
        grouped = replay_history(audit, CANDIDATES[1], IN_FORCE, T0, T0 + 4 * HOUR)
        assert grouped.calls + grouped.skipped == left


def test_the_most_blocked_tools_and_the_approvals_of_a_period(log: AuditLog) -> None:
    for n, (tool, decision) in enumerate(
        [("push", "denied")] * 3 + [("log", "refused")] * 2 + [("log", "allowed")] * 4
    ):
        log.write_sync(make(time=T0 + n, server="git", tool=tool, decision=CallDecision(decision)))
    asked = [("approved", "person", 1000.0), ("approved", "person", 3000.0),
             ("refused", "refused", 2000.0), ("refused", "timeout", 120_000.0)]  # fmt: skip
    for n, (decision, basis, waited) in enumerate(asked):
        log.write_sync(
            make(time=T0 + 100 + n, decision=CallDecision(decision), basis=basis, waited_ms=waited)
        )
    log.write_sync(make(time=T0 + 2 * HOUR, decision=CallDecision.APPROVED, waited_ms=9.0))
    eventually_sync(lambda: log.search_backlog() == 0, "every call counted")
    assert log.top_blocked(T0, T0 + HOUR) == [
        ("git/push", 3),
        ("files/read_file", 2),
        ("git/log", 2),
    ]
    assert log.top_blocked(T0, T0 + HOUR, limit=1) == [("git/push", 3)]
    summary = log.approvals(T0, T0 + HOUR)
    assert (summary.asked, summary.approved, summary.refused, summary.timed_out) == (4, 2, 2, 1)
    assert (summary.median_wait_ms, summary.p90_wait_ms) == (2000.0, 120_000.0)
    nobody = log.approvals(T0 + 3 * HOUR, T0 + 4 * HOUR)
    assert (nobody.asked, nobody.median_wait_ms, nobody.p90_wait_ms) == (0, None, None)


async def test_a_log_past_its_size_bound_loses_its_oldest_calls_first(db: Path) -> None:
    """Bounded at 1 MB, a log of about 3 MB of calls (kept for ever by time) is pruned,
    oldest first, to under the bound; the newest stay, the search and the hourly counts
    agree with what is left. One within its bound is left alone."""
    text = "a long line of a file that a tool read, " * 25  # about 1 KB of arguments each
    with AuditLog(db) as audit:
        for n in range(3000):
            audit.write_sync(make(time=T0 + n, tool=f"t{n}", arguments={"text": text}))
    monotonic = [0.0]

    def used() -> int:
        raw = sqlite3.connect(db)
        try:
            pages, free, size = (raw.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_count", "freelist_count", "page_size"))  # fmt: skip
        finally:
            raw.close()
        return int((pages - free) * size)

    before = used()
    assert before > 3 * 1024 * 1024
    with AuditLog(db, max_megabytes=1, monotonic=lambda: monotonic[0]) as audit:
        # pruned and measured again, round after round, until it fits
        # (the hourly counts are recounted as a round's deleting ends: wait for its end)
        await eventually(
            lambda: used() <= 1024 * 1024 and audit.last_pruned is not None and not audit.pruning,
            "the log within its bound, its prune over",
        )
        left = audit.count()
        assert 0 < left < 3000
        assert [r.tool for r in audit.query(limit=1)] == ["t2999"]  # the newest stay
        assert audit.query(limit=1, end=T0 + 3000 - left)[:1] == []  # the oldest went
        counted = audit.activity(T0 - HOUR, T0 + 2 * HOUR, bucket=HOUR, by="tool")
        assert sum(n for _, _, n in counted) == left
        eventually_sync(lambda: audit.search_backlog() == 0, "searchable")
        assert audit.count(search="long line") == left
        monotonic[0] += SIZE_CHECK_EVERY  # a minute later, measured again: it fits
        audit.write_sync(make(time=T0 + 5000, tool="later"))
        await eventually(lambda: audit.count() == left + 1, "the new call")
        assert [r.tool for r in audit.query(limit=1)] == ["later"]
    with pytest.raises(ValueError, match="max_megabytes"):
        AuditLog(db, max_megabytes=-1)


def test_a_tool_called_only_before_the_period_still_charges_the_counter_it_shares(
    log: AuditLog,
) -> None:
    """web/get is called only in the hour before the period; git/log, whose limit the
    candidate changes, shares its counter: the replay must charge web/get's calls."""
    for n in range(6):
        log.write_sync(make(time=T0 - 1800 + n, server="web", tool="get", rule="web/get",
                            basis="rule", decision=CallDecision.ALLOWED))  # fmt: skip
    for n in range(4):
        log.write_sync(make(time=T0 + 60 + n, server="git", tool="log", rule="git/log",
                            basis="rule", decision=CallDecision.ALLOWED))  # fmt: skip
    eventually_sync(lambda: log.search_backlog() == 0, "every call counted")
    tighter = policy({**IN_FORCE.document["tools"],
                      "git/log": {"limits": [{"counter": "web", "window": "hour", "max": 9}]}})  # fmt: skip
    start, end = T0, T0 + HOUR
    warm = start - warm_up_seconds(tighter, IN_FORCE)
    every = replay(log.recorded_calls(warm, end), tighter, IN_FORCE, start=start, end=end)
    grouped = replay_history(log, tighter, IN_FORCE, start, end)
    assert counts(grouped) == counts(every)
    # 6 on the counter already: of git/log's 4, in force (8) lets 2 through, the candidate 3
    assert dict(every.changes) == {"allowed": 1}


def test_a_replay_without_limits_reads_no_warm_up(log: AuditLog) -> None:
    history(log, 200, hours=2)
    candidate = policy({"git/*": {"action": "deny"}, "files/read": {"action": "ask"}})
    in_force = policy({"git/push": {"action": "ask"}})
    assert warm_up_seconds(candidate, in_force) == 0.0
    start, end = T0 + 600, T0 + 2 * HOUR
    every = replay(log.recorded_calls(start, end), candidate, in_force, start=start, end=end)
    grouped = replay_history(log, candidate, in_force, start, end)
    assert counts(grouped) == counts(every)
    assert grouped.changed > 0


async def test_a_size_bound_set_while_the_log_is_open_is_in_force_at_once(db: Path) -> None:
    """No bound as it opens; set_max_megabytes(1) makes the writer measure and prune at
    once (not at the next minute's look), and 0 stops a prune by size under way."""
    text = "a long line of a file that a tool read, " * 25
    monotonic = [0.0]  # it never moves: only the new bound can bring a look at the size
    with AuditLog(db, monotonic=lambda: monotonic[0], prune_batch=1) as audit:
        for n in range(2500):
            audit.write_sync(make(time=T0 + n, tool=f"t{n}", arguments={"text": text}))
        assert (audit.max_megabytes, audit.pruning) == (0, False)
        audit.set_max_megabytes(1)
        assert audit.max_megabytes == 1
        await eventually(lambda: audit.count() < 2500, "a prune by size, a call at a time")
        audit.set_max_megabytes(0)
        await eventually(lambda: not audit.pruning, "the prune stopped")
        # it stopped far short of 1 MB's worth (under 1,000 of these calls)
        assert 2000 < audit.count() < 2500
        assert [r.tool for r in audit.query(limit=1)] == ["t2499"]
        with pytest.raises(ValueError, match="max_megabytes"):
            audit.set_max_megabytes(-5)
    audit.set_max_megabytes(2)  # closed: kept, and no writer to wake
    assert audit.max_megabytes == 2
