"""The Activity view over a real audit log (SQLite, written by ``AuditLog``; its hourly
counts made by the writer's indexing): the chart's bars are the log's counts per bucket
and key, the rest of the keys grouped as "other"; the most blocked tools, the approvals
and the totals; what it says without a log; it reads only while in sight; and the tray's
sparkline of the last hour.

Reads run on a real ``GatewayHost``'s workers and come back through its ``EventPump``, as
in the app (the gateway itself is not started: the view never asks it anything)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QColor

from desktop.activityview import (
    DECISION_COLOURS,
    OTHER,
    ActivityView,
    ChartModel,
    approvals_text,
    duration_words,
    sparkline_pixmap,
)
from desktop.app import SPARKLINE_SIZE, LockgateApp
from desktop.host import GatewayHost
from desktop.window import TABS
from proxy.audit.log import ApprovalSummary
from proxy.audit.records import CallDecision, Outcome
from proxy.config.paths import Paths
from tests.desktop.conftest import write_log
from tests.support.records import make_record

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
NOW = 1_800_000_000.0 + 30 * MINUTE + 20  # the view's clock: mid-hour, mid-minute
THIS_MINUTE = NOW - 20
THIS_HOUR = NOW - 30 * MINUTE - 20
DENIED: dict[str, Any] = {
    "decision": CallDecision.DENIED,
    "outcome": Outcome.BLOCKED,
    "basis": "rule",
}


@pytest.fixture
def view(qtbot: Any, host: GatewayHost, tmp_path: Path) -> ActivityView:
    view = ActivityView(tmp_path / "audit.db", host.blocking, clock=lambda: NOW)
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.show()
    return view


def shown(qtbot: Any, view: ActivityView, period: str, by: str) -> ChartModel:
    """Choose ``period`` and ``by``, and wait for the read of that choice."""
    view.period.setCurrentText(period)
    view.by.setCurrentText(by)
    view.refresh()

    def arrived() -> bool:
        read = view.read
        return read is not None and read.period.label == period and view.by.currentText() == by

    qtbot.waitUntil(lambda: arrived() and view._in_flight is None, timeout=10_000)
    return view.chart.model


def counts(model: ChartModel, start: float) -> dict[str, int]:
    bar = model.bar_at(start)
    assert bar is not None, f"no bar at {start}"
    return {key: n for key, n in zip(model.keys, bar.counts, strict=True) if n}


def test_the_bars_are_the_logs_calls_per_minute_and_decision(qtbot, view, tmp_path):
    write_log(
        tmp_path / "audit.db",
        [
            make_record(time=THIS_MINUTE + 1),
            make_record(time=THIS_MINUTE + 2),
            make_record(time=THIS_MINUTE + 5, **DENIED),
            make_record(time=THIS_MINUTE - 59, decision=CallDecision.APPROVED, waited_ms=4000),
            make_record(time=THIS_MINUTE - 10 * MINUTE + 30, **DENIED),
            make_record(time=NOW - 2 * HOUR),  # before the hour: not shown
        ],
    )
    model = shown(qtbot, view, "Last hour", "By decision")
    assert len(model.bars) == 60
    assert model.bucket == MINUTE
    assert model.bars[-1].start == THIS_MINUTE  # the last bar holds now
    assert model.keys == ("allowed", "approved", "denied")  # stacked in a fixed order
    assert model.colours == tuple(DECISION_COLOURS[k] for k in model.keys)
    assert counts(model, THIS_MINUTE) == {"allowed": 2, "denied": 1}
    assert counts(model, THIS_MINUTE - MINUTE) == {"approved": 1}
    assert counts(model, THIS_MINUTE - 10 * MINUTE) == {"denied": 1}
    assert sum(bar.total for bar in model.bars) == 5
    assert model.peak == 3
    assert view.totals.text() == "5 calls, 2 blocked"
    assert "denied: 1" in view.chart.bar_tooltip(model.bars[-1])
    assert "allowed: 2" in view.chart.bar_tooltip(model.bars[-1])
    # the laid-out bars: one rectangle per key of the bars that have some
    assert [len(rects) for _colour, rects in view.chart.segments] == [1, 1, 2]
    assert view.chart.bar_at(view.chart.segments[0][1][0].center().x()) == model.bars[-1]


def test_beyond_six_keys_the_rest_are_other(qtbot, view, tmp_path):
    servers = {f"s{i}": 10 - i for i in range(9)}  # s0 has 10 calls ... s8 has 2
    write_log(
        tmp_path / "audit.db",
        [
            make_record(time=THIS_HOUR - 3 * HOUR + n, server=server)
            for server, calls in servers.items()
            for n in range(calls)
        ],
    )
    model = shown(qtbot, view, "Last 24 hours", "By server")
    assert model.keys == ("s0", "s1", "s2", "s3", "s4", "s5", OTHER)
    assert model.totals == (10, 9, 8, 7, 6, 5, 4 + 3 + 2)
    assert counts(model, THIS_HOUR - 3 * HOUR)[OTHER] == 9
    assert len(model.bars) == 24
    assert model.bucket == HOUR
    assert "other" in view.legend.text()


def test_the_by_selector_changes_the_keys(qtbot, view, tmp_path):
    write_log(
        tmp_path / "audit.db",
        [
            make_record(time=NOW - 100, client="cursor", server="git", tool="push", **DENIED),
            make_record(time=NOW - 90, client="cursor", server="files", tool="read_file"),
            make_record(time=NOW - 80, client="vscode", server="files", tool="read_file"),
        ],
    )
    assert set(shown(qtbot, view, "Last hour", "By client").keys) == {"cursor", "vscode"}
    model = shown(qtbot, view, "Last hour", "By tool")
    assert model.keys == ("files/read_file", "git/push")  # most calls at the bottom
    assert model.totals == (2, 1)
    assert set(shown(qtbot, view, "Last hour", "By server").keys) == {"files", "git"}
    assert view.totals.text() == "3 calls, 1 blocked"  # whatever the bars are by


def test_a_longer_period_counts_by_the_hour(qtbot, view, tmp_path):
    write_log(
        tmp_path / "audit.db",
        [
            make_record(time=THIS_HOUR - 3 * DAY + 10),
            make_record(time=THIS_HOUR - 3 * DAY + 3000),
            make_record(time=THIS_HOUR - 6 * DAY, **DENIED),
            make_record(time=NOW - 8 * DAY),  # before the week
            make_record(time=NOW - 1),
        ],
    )
    model = shown(qtbot, view, "Last 7 days", "By decision")
    assert len(model.bars) == 7 * 24
    assert model.bars[-1].start == THIS_HOUR
    assert counts(model, THIS_HOUR - 3 * DAY) == {"allowed": 2}
    assert counts(model, THIS_HOUR - 6 * DAY) == {"denied": 1}
    assert counts(model, THIS_HOUR) == {"allowed": 1}
    assert view.totals.text() == "4 calls, 1 blocked"
    hour = shown(qtbot, view, "Last hour", "By decision")
    assert sum(bar.total for bar in hour.bars) == 1
    month = shown(qtbot, view, "Last 30 days", "By decision")
    assert sum(bar.total for bar in month.bars) == 5
    assert month.bucket == 6 * HOUR


def test_the_most_blocked_tools_and_the_approvals(qtbot, view, tmp_path):
    refused = {"decision": CallDecision.REFUSED, "outcome": Outcome.BLOCKED}
    write_log(
        tmp_path / "audit.db",
        [
            *(
                make_record(time=NOW - 200 + n, server="git", tool="push", **DENIED)
                for n in range(3)
            ),
            make_record(time=NOW - 100, server="shell", tool="run", **DENIED),
            make_record(time=NOW - 90, decision=CallDecision.APPROVED, waited_ms=2000),
            make_record(time=NOW - 80, decision=CallDecision.APPROVED, waited_ms=4000),
            make_record(time=NOW - 70, **refused, basis="person", waited_ms=6000),
            make_record(time=NOW - 60, **refused, basis="timeout", waited_ms=31000),
            make_record(time=NOW - 50),
        ],
    )
    shown(qtbot, view, "Last hour", "By decision")
    table = view.blocked
    rows = [(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())]
    assert rows == [("git/push", "3"), ("files/read_file", "2"), ("shell/run", "1")]
    assert not view.no_blocked.isVisibleTo(view)
    assert view.approvals.text() == (
        "4 asked: 2 approved, 2 refused (1 timed out).\nWaited: median 4 s, 90% within 31 s."
    )
    assert view.totals.text() == "9 calls, 6 blocked"


def test_words_for_waits_and_nobody_asked():
    assert [duration_words(ms) for ms in (400, 4000, 31_000, 180_000, 5_400_000)] == [
        "0.4 s",
        "4 s",
        "31 s",
        "3 min",
        "1.5 h",
    ]
    nobody = ApprovalSummary(
        asked=0, approved=0, timed_out=0, median_wait_ms=None, p90_wait_ms=None
    )
    assert approvals_text(nobody) == "Nobody was asked to approve a call in this period."


def test_without_an_audit_log_it_says_no_calls_yet(qtbot, view, tmp_path):
    view.refresh()
    qtbot.waitUntil(lambda: view.totals.text().startswith("No calls logged yet"), timeout=10_000)
    assert view.chart.model.bars == ()
    assert view.chart.message.startswith("No calls logged yet")
    assert view.blocked.rowCount() == 0
    assert not (tmp_path / "audit.db").exists()  # reading made nothing


def test_it_refreshes_only_while_in_sight(qtbot, host, tmp_path):
    view = ActivityView(tmp_path / "audit.db", host.blocking, clock=lambda: NOW)
    qtbot.addWidget(view)
    assert not view.timer.isActive()  # never shown: nothing reads
    view.show()
    qtbot.waitExposed(view)
    assert view.timer.isActive()
    view.hide()
    assert not view.timer.isActive()
    view.show()
    assert view.timer.isActive()
    write_log(tmp_path / "audit.db", [make_record(time=NOW - 10)])
    view.timer.timeout.emit()  # a tick reads the log again
    qtbot.waitUntil(lambda: view.totals.text() == "1 call, 0 blocked", timeout=10_000)


def test_the_sparkline_is_a_bar_a_minute():
    calls = [0] * 60
    calls[-1], calls[30] = 10, 4
    blocked = [0] * 60
    blocked[-1] = 5
    pixmap = sparkline_pixmap(calls, 120, 24, blocked=blocked)
    assert (pixmap.width(), pixmap.height()) == (120, 24)
    image = pixmap.toImage()
    ground = image.pixelColor(100, 10)
    assert image.pixelColor(118, 20) == QColor("#c62828")  # the last minute's blocked half
    assert image.pixelColor(118, 5) == QColor("#1565c0")  # and the rest of its calls
    assert image.pixelColor(60, 20) == QColor("#1565c0")  # 4 calls: a lower bar
    assert image.pixelColor(60, 10) == ground
    empty = sparkline_pixmap([0] * 60, 120, 24)
    assert not empty.isNull()


def test_the_app_has_the_tab_and_the_tray_the_last_hour(qtbot, tmp_path):
    assert TABS.index("Activity") == TABS.index("History") + 1
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    now = time.time()  # the app's own clock
    write_log(
        paths.audit_db,
        [
            make_record(time=now - 120),
            make_record(time=now - 60),
            make_record(time=now - 30, **DENIED),
        ],
    )
    app = LockgateApp(paths, port=0)  # not started: the Activity tab needs no gateway
    try:
        tabs = app.window.tabs
        assert tabs.widget(TABS.index("Activity")) is app.activity
        assert not app.activity.timer.isActive()  # not in sight
        app.refresh_sparkline()  # what the start and a minute's timer do
        qtbot.waitUntil(
            lambda: app.tray.activity_text.text() == "Last hour: 3 calls, 1 blocked",
            timeout=10_000,
        )
        pixmap = app.tray.sparkline.pixmap()
        assert (pixmap.width(), pixmap.height()) == SPARKLINE_SIZE
        assert "Last hour: 3 calls, 1 blocked" in app.tray.tooltip()
        app.window.show_tab("Activity")  # showing it reads the log
        qtbot.waitUntil(lambda: app.activity.totals.text() == "3 calls, 1 blocked", timeout=10_000)
        assert app.activity.timer.isActive()
        app.window.show_tab("History")
        assert not app.activity.timer.isActive()
    finally:
        app.close()
        app.prompt.close()
        app.window.hide()
        app.window.deleteLater()
