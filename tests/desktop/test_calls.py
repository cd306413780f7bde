"""The live calls model on its own: qtmodeltester, batching, the bounded window, filters.

Their input is the proxy's own event records (plain frozen dataclasses), built here as the
gateway builds them; the end-to-end tests feed them from a real gateway."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt

from desktop.calls import DECISION, RULE, CallsFilter, CallsModel
from proxy.gateway.events import (
    ApprovalPending,
    CallDecided,
    CallFinished,
    CallStarted,
)


def call_events(n: int, start: int = 0, decision: str = "allowed") -> list[Any]:
    events: list[Any] = []
    for i in range(start, start + n):
        cid = f"c{i}"
        events.append(CallStarted(cid, 1000.0 + i, "agent", "srv", f"tool{i % 3}", {"i": i}))
        events.append(CallDecided(cid, 1000.0 + i, decision, "rule", "tool*", "why"))
        events.append(CallFinished(cid, 1000.0 + i, "ok", 1.5, 10))
    return events


def test_calls_model_passes_qtmodeltester_while_fed_and_trimmed(qapp, qtmodeltester):
    model = CallsModel(capacity=50)
    qtmodeltester.check(model.qt)
    model.apply(call_events(30))
    model.apply(call_events(40, start=30))  # 70 > 50: the oldest 20 go
    qtmodeltester.check(model.qt)
    assert model.rowCount() == 50
    assert model.row(0).call_id == "c20"
    assert model.index_of("c19") is None
    assert model.index_of("c69") == 49


def test_a_batch_is_one_insert_and_one_change_however_many_events(qtbot):
    model = CallsModel()
    model.apply([CallStarted(f"c{i}", 1.0, "a", "s", "t", {}) for i in range(100)])
    inserts: list[tuple[int, int]] = []
    changes: list[tuple[int, int]] = []
    model.qt.rowsInserted.connect(lambda _p, first, last: inserts.append((first, last)))
    model.qt.dataChanged.connect(lambda tl, br, _r=(): changes.append((tl.row(), br.row())))
    batch: list[Any] = [
        CallDecided(f"c{i}", 2.0, "denied", "limit", "t", "r") for i in range(10, 60)
    ]
    batch += call_events(500, start=100)
    model.apply(batch)
    assert inserts == [(100, 599)]
    assert changes == [(10, 599)]  # the decided rows and the new ones, in one
    assert model.text(10, DECISION) == "✕ denied · rate limit"


def test_a_call_waiting_for_approval_shows_so_until_decided(qapp):
    model = CallsModel()
    model.apply([CallStarted("c1", 1.0, "a", "s", "rm", {"path": "/"})])
    model.apply(
        [ApprovalPending("ap1", "c1", 1.0, 61.0, "a", "s", "rm", {"path": "/"}, "rm", "ask")]
    )
    assert model.text(0, DECISION) == "? waiting for you"
    model.apply([CallDecided("c1", 2.0, "approved", "person", "rm", "ok")])
    assert model.text(0, DECISION) == "✓ approved"
    assert model.text(0, RULE) == "rm"


def test_the_filter_box_and_decision_filter(qapp, qtmodeltester):
    model = CallsModel()
    model.apply(call_events(6))
    model.apply(call_events(3, start=6, decision="denied"))
    proxy = CallsFilter()
    proxy.setSourceModel(model.qt)
    qtmodeltester.check(proxy)
    proxy.set_decisions(["denied", "refused"])
    assert proxy.rowCount() == 3
    proxy.set_text("TOOL1")
    assert [
        model.row(proxy.mapToSource(proxy.index(r, 0)).row()).tool for r in range(proxy.rowCount())
    ] == ["tool1"]
    proxy.set_text("denied")  # the decision is not part of the text the box searches
    assert proxy.rowCount() == 0
    proxy.set_decisions([])
    proxy.set_text('"i": 4')
    assert proxy.rowCount() == 1


def test_history_from_the_audit_log_goes_on_top_without_repeats(qapp, tmp_path):
    from proxy.audit.log import AuditLog
    from proxy.audit.records import CallDecision, CallRecord, Outcome

    with AuditLog(tmp_path / "audit.db") as audit:
        for i in range(5):
            audit.write_sync(
                CallRecord(
                    id=f"old{i}",
                    time=float(i),
                    client="a",
                    server="s",
                    tool="t",
                    arguments={"n": i},
                    decision=CallDecision.DENIED,
                    basis="rule",
                    rule="t",
                    reason="r",
                    outcome=Outcome.BLOCKED,
                    duration_ms=0.1,
                )
            )
        records = audit.query(limit=100)
    model = CallsModel(capacity=8)
    model.apply(call_events(4))
    assert model.prepend_history(records) == 4  # room for four more only: the newest four
    assert [model.row(i).call_id for i in range(8)] == [
        "old1",
        "old2",
        "old3",
        "old4",
        "c0",
        "c1",
        "c2",
        "c3",
    ]
    assert model.prepend_history(records) == 0


def test_a_call_decided_after_older_rows_were_dropped_shows_its_decision(qapp, qtmodeltester):
    model = CallsModel(capacity=50)
    model.apply([CallStarted(f"c{i}", 1.0, "a", "s", "t", {}) for i in range(30)])
    model.apply(call_events(40, start=30))  # the oldest 20 go; c20..c29 are still deciding
    assert model.text(5, DECISION) == "… deciding"
    model.apply(
        [
            CallDecided("c25", 2.0, "denied", "rule", "t", "no"),
            CallFinished("c25", 2.0, "blocked", 0.2, None),
        ]
    )
    assert model.index_of("c25") == 5
    assert model.text(5, DECISION) == "✕ denied"
    assert model.text(5, RULE) == "t"
    assert model.qt.index(5, DECISION).data(Qt.ItemDataRole.ToolTipRole) == "no"
    qtmodeltester.check(model.qt)
    assert not model.qt.flags(model.qt.index(5, 0)) & Qt.ItemFlag.ItemIsEditable


def test_a_backlog_longer_than_the_window_keeps_only_its_newest_calls(qapp):
    model = CallsModel(capacity=50)
    model.apply(call_events(10))
    model.apply(call_events(120, start=10))
    assert model.rowCount() == 50
    assert [model.row(0).call_id, model.row(49).call_id] == ["c80", "c129"]
    assert model.text(0, 3) == "tool2"  # c80's cells are c80's
    model.apply([CallDecided("c20", 2.0, "denied", "rule", "t", "r")])  # no longer shown
    assert model.index_of("c20") is None


def test_a_decision_moves_a_call_into_the_decision_filter(qapp):
    model = CallsModel()
    model.apply(
        [CallStarted("c1", 1.0, "a", "s", "t", {}), CallStarted("c2", 1.0, "a", "s", "t", {})]
    )
    proxy = CallsFilter()
    proxy.setSourceModel(model.qt)
    proxy.set_decisions(["denied"])
    assert proxy.rowCount() == 0
    model.apply([CallDecided("c2", 2.0, "denied", "rule", "t", "r")])
    assert proxy.rowCount() == 1
    assert model.row(proxy.mapToSource(proxy.index(0, 0)).row()).call_id == "c2"


def test_a_call_let_through_that_failed_shows_both_its_decision_and_what_became_of_it(qapp):
    model = CallsModel()
    outcomes = ["ok", "upstream_down", "tool_error", "cancelled", "pending"]
    for i, outcome in enumerate(outcomes):
        cid = f"c{i}"
        model.apply(
            [
                CallStarted(cid, 1.0, "a", "s", "t", {}),
                CallDecided(cid, 1.0, "allowed", "rule", "t", "allowed by t"),
                CallFinished(cid, 2.0, outcome, 1.0, None),
            ]
        )
    assert [model.text(i, DECISION) for i in range(len(outcomes))] == [
        "✓ allowed",
        "✓ allowed · server down",
        "✓ allowed · tool error",
        "✓ allowed · cancelled",
        "✓ allowed",  # sent, its answer on the way
    ]
    colour = [
        model.qt.index(i, DECISION).data(Qt.ItemDataRole.ForegroundRole).color().name()
        for i in range(len(outcomes))
    ]
    assert colour[0] == colour[4] == "#1b7f3b"  # green: it ran, or is running
    assert colour[1] == colour[2] == colour[3] == "#b26a00"  # amber: let through, failed


def test_the_rule_column_names_the_case_that_decided_and_a_server_turned_off(qapp):
    from proxy.audit.records import CallDecision, Outcome
    from tests.support.records import make_record

    model = CallsModel()
    model.apply(
        [
            CallStarted("c1", 1.0, "a", "git", "push", {"force": True}),
            ApprovalPending(
                "ap1", "c1", 1.0, 61.0, "a", "git", "push", {"force": True}, "git/push", "ask",
                case=2,
            ),
        ]
    )  # fmt: skip
    assert model.text(0, RULE) == "git/push when[2]"  # while it waits
    model.apply([CallDecided("c1", 2.0, "approved", "person", "git/push", "ok", case=2)])
    assert model.text(0, RULE) == "git/push when[2]"
    model.apply(
        [
            CallStarted("c2", 3.0, "a", "git", "push", {}),
            CallDecided("c2", 3.0, "allowed", "rule", "git/push", "allowed"),
            CallStarted("c3", 4.0, "a", "off", "t", {}),
            CallDecided("c3", 4.0, "denied", "server_disabled", None, "turned off"),
            CallFinished("c3", 4.0, "blocked", 0.1, None),
        ]
    )
    assert model.text(1, RULE) == "git/push"  # the rule's own action decided
    assert model.text(2, DECISION) == "✕ denied · server turned off"
    assert model.text(2, RULE) == "server_disabled"
    old = make_record(
        id="old", rule="git/push", case=0, decision=CallDecision.DENIED, outcome=Outcome.BLOCKED
    )
    assert model.prepend_history([old]) == 1
    assert model.text(0, RULE) == "git/push when[0]"  # from the audit log, too
