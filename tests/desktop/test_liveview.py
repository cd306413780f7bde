"""The Live calls view's count of calls, against the rows it shows: after a restart (the
table empty, a page of history from a real audit log, live calls before, during and after
that page), with a filter on, with the oldest rows dropped, and under traffic.

The events are the proxy's own records, built here as the gateway builds them and handed
on as the app hands them on (``CallsModel.apply`` then ``LiveView.refresh`` for each
batch; the page of history on its own, after the events that arrived before it was read).
The page is ``AuditLog.query``, which is all ``GatewayControl.history`` does."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from desktop.calls import CallsModel
from desktop.liveview import COUNT_EVERY, LiveView
from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.gateway.events import CallDecided, CallFinished, CallStarted

_times = itertools.count(1_000)


def record(call_id: str, decision: str = "allowed") -> CallRecord:
    blocked = decision in ("denied", "refused")
    return CallRecord(
        id=call_id,
        time=float(next(_times)),
        client="agent",
        server="srv",
        tool="echo",
        arguments={"id": call_id},
        decision=CallDecision(decision),
        basis="rule",
        rule="echo",
        reason="by echo",
        outcome=Outcome.BLOCKED if blocked else Outcome.OK,
        duration_ms=1.0,
    )


def started(call_id: str) -> CallStarted:
    return CallStarted(call_id, float(next(_times)), "agent", "srv", "echo", {"id": call_id})


def ended(call_id: str, decision: str = "allowed") -> list[Any]:
    """Its decision and its outcome, as they come: one after the other."""
    outcome = "blocked" if decision in ("denied", "refused") else "ok"
    return [
        CallDecided(call_id, 1.0, decision, "rule", "echo", "by echo"),
        CallFinished(call_id, 1.0, outcome, 1.0, 10),
    ]


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    """The last run's audit log: seven calls, two of them denied."""
    with AuditLog(tmp_path / "audit.db") as log:
        for i in range(7):
            log.write_sync(record(f"old{i}", "denied" if i in (2, 5) else "allowed"))
        yield log


class Restarted:
    """The Live calls view as the app builds it at start, fed as the app feeds it."""

    def __init__(self, audit: AuditLog, capacity: int = 5000, **view: Any) -> None:
        self.audit = audit
        self.model = CallsModel(capacity=capacity)
        self.view = LiveView(self.model, lambda *_: None, lambda: None, **view)

    def batch(self, *events: Any) -> None:
        self.model.apply(events)
        self.view.refresh()

    def load_older(self) -> int:
        page = self.audit.query(limit=500, before_id=self.model.oldest_id())
        return self.model.prepend_history(page)

    def count(self) -> str:
        """What the label says, without its note on the window."""
        return self.view.count.text().split(" (")[0]

    def shown(self) -> list[str]:
        proxy = self.view.proxy
        return [
            self.model.row(proxy.mapToSource(proxy.index(r, 0)).row()).call_id
            for r in range(proxy.rowCount())
        ]

    def held(self) -> list[str]:
        return [self.model.row(i).call_id for i in range(self.model.rowCount())]

    def logged(self) -> list[str]:
        return [r.id for r in reversed(self.audit.query(limit=10_000))]


def next_turn() -> None:
    """The event loop's next turn: what a person sees once the change in hand is done."""
    QApplication.processEvents()


def test_after_a_restart_the_count_is_every_call_of_the_log_as_its_rows_appear(qtbot, audit):
    app = Restarted(audit)
    assert app.count() == "0 calls"
    # "Load older" is clicked; while its page is read, two calls come: the first is in
    # the log before the page is read (so on the page too), the second only after.
    oldest = app.model.oldest_id()
    app.batch(started("live1"), started("live2"))
    audit.write_sync(record("live1"))
    page = audit.query(limit=500, before_id=oldest)
    audit.write_sync(record("live2", "denied"))
    assert app.model.prepend_history(page) == 7  # live1 is shown already
    app.batch(*ended("live1"))
    app.batch(*ended("live2", "denied"))
    next_turn()
    assert app.held() == app.shown() == app.logged()  # each once, in the log's order
    assert app.count() == "9 calls"
    # Then live calls, the count rewritten less than a second ago: it follows within one.
    app.batch(started("live3"), *ended("live3"))
    audit.write_sync(record("live3"))
    assert app.held() == app.shown() == app.logged()
    qtbot.waitUntil(lambda: app.count() == "10 calls", timeout=5_000)


def test_a_page_of_history_the_filter_hides_is_counted(qtbot, tmp_path):
    """The view as the tray's "Recently blocked" leaves it (blocked calls only, here the
    first one since the restart), then "Load older": the last run's calls were all
    allowed, so the page adds nothing to what is shown, and seven calls to what is held.
    (The view's own teardown, after this test, is also the one that crashed when it
    listened to the models' modelReset.)"""
    with AuditLog(tmp_path / "audit.db") as audit:
        for i in range(7):
            audit.write_sync(record(f"old{i}"))
        app = Restarted(audit)
        app.view.decision_filter.setCurrentIndex(1)  # Blocked (denied or refused)
        app.batch(started("live1"), *ended("live1", "denied"))
        audit.write_sync(record("live1", "denied"))
        qtbot.waitUntil(lambda: app.count() == "1 calls", timeout=5_000)
        assert app.load_older() == 7
        assert app.shown() == ["live1"]
        qtbot.waitUntil(lambda: app.count() == "1 of 8 calls shown", timeout=5_000)
        app.view.decision_filter.setCurrentIndex(0)
        assert app.count() == "8 calls"
        assert app.held() == app.shown() == app.logged()


def test_the_count_stays_the_rows_when_the_oldest_are_dropped(qtbot, audit):
    app = Restarted(audit, capacity=5)
    app.view.decision_filter.setCurrentIndex(2)  # Allowed or approved
    assert app.load_older() == 5  # room for the newest five only
    assert app.held() == app.logged()[-5:]
    qtbot.waitUntil(lambda: app.count() == "3 of 5 calls shown", timeout=5_000)
    for i in range(3):  # the three oldest go
        app.batch(started(f"live{i}"), *ended(f"live{i}"))
        audit.write_sync(record(f"live{i}"))
    assert app.held() == app.logged()[-5:]
    assert app.shown() == ["old6", "live0", "live1", "live2"]
    qtbot.waitUntil(lambda: app.count() == "4 of 5 calls shown", timeout=5_000)
    app.view.decision_filter.setCurrentIndex(0)
    assert app.count() == "5 calls"


def test_the_count_is_rewritten_at_once_when_quiet_and_once_a_second_under_traffic(qtbot, audit):
    now = [100.0]
    app = Restarted(audit, clock=lambda: now[0])
    app.batch(started("c1"))
    next_turn()
    assert app.count() == "1 calls"
    now[0] += COUNT_EVERY / 4
    app.batch(started("c2"))
    next_turn()
    assert app.count() == "1 calls"  # rewritten a quarter of a second ago: it waits
    qtbot.waitUntil(lambda: app.count() == "2 calls", timeout=5_000)
    now[0] += 5 * COUNT_EVERY  # quiet since
    app.batch(started("c3"))
    next_turn()
    assert app.count() == "3 calls"


def test_the_details_say_what_the_program_says_it_is_and_its_protocol(qtbot: Any) -> None:
    from dataclasses import replace

    from desktop.calls import CallRow
    from desktop.liveview import details_text

    said = replace(record("c1"), client_info="cursor 3.1", protocol="2026-07-28")
    assert "Program:  says it is cursor 3.1, over MCP 2026-07-28" in details_text(
        CallRow.from_record(said)
    )
    live = CallsModel()
    live.apply([CallStarted("c2", 1.0, "agent", "srv", "echo", {}, protocol="2025-11-25")])
    index = live.index_of("c2")
    assert index is not None
    assert "Program:  says nothing of itself, over MCP 2025-11-25" in details_text(live.row(index))
    assert "Program:" not in details_text(CallRow.from_record(record("c3")))  # an old row


def test_a_call_the_teams_policy_decided_says_so_in_the_table_and_the_details(qtbot: Any) -> None:
    from desktop.calls import COLUMNS, CallRow
    from desktop.liveview import details_text

    model = CallsModel()
    model.apply(
        [
            CallStarted("c1", 1.0, "cursor", "git", "push", {}),
            CallDecided("c1", 1.0, "denied", "rule", "git/push", "no pushes", layer="team"),
            CallStarted("c2", 2.0, "cursor", "git", "log", {}),
            CallDecided("c2", 2.0, "allowed", "rule", "git/*", "allowed"),
        ]
    )
    rule = COLUMNS.index("Rule")
    texts = {model.row(i).tool: model.text(i, rule) for i in range(model.rowCount())}
    assert texts == {"push": "team: git/push", "log": "git/*"}
    record = CallRecord(time=1.0, client="cursor", server="git", tool="push", reason="no",
                        decision=CallDecision.DENIED, outcome=Outcome.BLOCKED, basis="rule",
                        rule="git/push", layer="team")  # fmt: skip
    assert "Rule:     git/push of the team's policy (rule)" in details_text(
        CallRow.from_record(record)
    )
