"""The History view over a real audit log (SQLite, written by ``AuditLog`` and indexed by
its writer thread): the search and filters choose the rows, pages go back and forth by
the commit order, the details pane is the Live calls view's, the exports hold exactly
the matching calls, and what goes wrong is said in the view.

Reads run on a real ``GatewayHost``'s workers and come back through its ``EventPump``, as
in the app (the gateway itself is not started: the view never asks it anything)."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from desktop.app import LockgateApp
from desktop.calls import CallRow
from desktop.historyview import PAGE, HistoryView
from desktop.host import GatewayHost
from desktop.liveview import details_text
from desktop.window import TABS
from proxy.audit.export import ExportFormat
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.config.paths import Paths
from tests.desktop.conftest import write_log
from tests.support.records import make_record

NOW = 1_800_000_000.0  # the views' clock: where the time ranges end
HOUR, DAY = 3600.0, 86400.0


class History:
    """A HistoryView on ``path``, and what it said in the status bar."""

    def __init__(self, qtbot: Any, host: GatewayHost, path: Path) -> None:
        self.qtbot = qtbot
        self.said: list[str] = []
        self.view = HistoryView(path, host.blocking, self.said.append, clock=lambda: NOW)
        qtbot.addWidget(self.view)
        self.view.resize(1200, 700)
        self.view.show()

    def ids(self) -> list[str]:
        model = self.view.model
        return [model.row(i).call_id for i in range(model.rowCount())]

    def count(self) -> str:
        return self.view.count.text()

    def shows(self, ids: list[str], count: str) -> None:
        """Wait until the table holds ``ids`` (in order) and the count line ``count``."""
        self.qtbot.waitUntil(lambda: self.ids() == ids and self.count() == count, timeout=10_000)

    def type_in(self, box: Any, text: str, enter: bool = True) -> None:
        box.clear()
        self.qtbot.keyClicks(box, text)
        if enter:
            self.qtbot.keyClick(box, Qt.Key.Key_Return)

    def click(self, button: Any) -> None:
        assert button.isEnabled()
        self.qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture
def history(qtbot: Any, host: GatewayHost, tmp_path: Path) -> History:
    return History(qtbot, host, tmp_path / "audit.db")


def newest_first(records: Iterable[CallRecord]) -> list[str]:
    return [r.id for r in reversed(list(records))]


def varied() -> list[CallRecord]:
    """A dozen calls of two clients to two servers, over six weeks, oldest first."""
    denied = {"decision": CallDecision.DENIED, "outcome": Outcome.BLOCKED, "basis": "rule"}
    return [
        make_record(id="month-old", time=NOW - 40 * DAY, client="cursor"),
        make_record(id="weeks-old", time=NOW - 20 * DAY, server="git", tool="push", **denied),
        make_record(id="week-old", time=NOW - 8 * DAY),
        make_record(id="d5", time=NOW - 5 * DAY, client="cursor", tool="write_file"),
        make_record(id="d4", time=NOW - 4 * DAY, server="git", tool="push", **denied),
        make_record(
            id="d3",
            time=NOW - 3 * DAY,
            arguments={"path": "/home/me/quarterly-report.txt"},
            outcome=Outcome.TOOL_ERROR,
            error="no such file",
        ),
        make_record(id="d2", time=NOW - 2 * DAY, client="cursor", server="git", tool="status"),
        make_record(
            id="d1",
            time=NOW - DAY - 1,
            decision=CallDecision.REFUSED,
            outcome=Outcome.BLOCKED,
            basis="timeout",
        ),
        make_record(id="h3", time=NOW - 3 * HOUR, client="cursor", tool="write_file"),
        make_record(id="h1", time=NOW - HOUR + 60, decision=CallDecision.APPROVED),
        make_record(id="now", time=NOW - 1, server="git", tool="push", **denied),
    ]


def test_the_search_and_filters_choose_the_rows(history, tmp_path):
    write_log(tmp_path / "audit.db", varied())
    view = history.view
    assert view.time_range.currentText() == "Last 7 days"
    view.refresh()
    last_week = ["now", "h1", "h3", "d1", "d2", "d3", "d4", "d5"]
    history.shows(last_week, "8 calls match")

    view.time_range.setCurrentText("Last hour")
    history.shows(["now", "h1"], "2 calls match")
    view.time_range.setCurrentText("Last 24 hours")
    history.shows(["now", "h1", "h3"], "3 calls match")
    view.time_range.setCurrentText("All time")
    every = ["now", "h1", "h3", "d1", "d2", "d3", "d4", "d5", "week-old", "weeks-old", "month-old"]
    history.shows(every, "11 calls match")

    history.type_in(view.client_box, "cursor")
    history.shows(["h3", "d2", "d5", "month-old"], "4 calls match")
    history.type_in(view.server_box, "git")
    history.shows(["d2"], "1 call matches")
    history.type_in(view.client_box, "")
    history.type_in(view.tool_box, "push")
    history.shows(["now", "d4", "weeks-old"], "3 calls match")
    history.type_in(view.server_box, "")
    history.type_in(view.tool_box, "")
    history.shows(every, "11 calls match")

    view.decision_filter.setCurrentText("Denied")
    history.shows(["now", "d4", "weeks-old"], "3 calls match")
    view.decision_filter.setCurrentText("Refused")
    history.shows(["d1"], "1 call matches")
    view.decision_filter.setCurrentText("Any decision")
    view.outcome_filter.setCurrentText("Tool error")
    history.shows(["d3"], "1 call matches")
    view.outcome_filter.setCurrentText("Any outcome")
    history.shows(every, "11 calls match")

    # words of the arguments, found after a pause in the typing (no Enter)
    history.type_in(view.search_box, "quarterly", enter=False)
    history.shows(["d3"], "1 call matches")
    history.type_in(view.search_box, "write_file cursor")  # every word, anywhere
    history.shows(["h3", "d5"], "2 calls match")
    view.search_box.clear()  # as its clear button does
    history.shows(every, "11 calls match")


def test_pages_go_back_and_forth_by_commit_order(history, tmp_path):
    records = write_log(
        tmp_path / "audit.db",
        (make_record(id=f"c{i:03}", time=NOW - 1000 + i) for i in range(2 * PAGE + 50)),
    )
    ids = newest_first(records)
    view = history.view
    view.refresh()
    history.shows(ids[:PAGE], "450 calls match (showing 1 to 200, newest first)")
    assert not view.newer.isEnabled()

    history.click(view.older)
    history.shows(ids[PAGE : 2 * PAGE], "450 calls match (showing 201 to 400, newest first)")
    assert view.newer.isEnabled()
    history.click(view.older)
    history.shows(ids[2 * PAGE :], "450 calls match (showing 401 to 450, newest first)")
    assert not view.older.isEnabled()

    history.click(view.newer)
    history.shows(ids[PAGE : 2 * PAGE], "450 calls match (showing 201 to 400, newest first)")
    history.click(view.newer)
    history.shows(ids[:PAGE], "450 calls match (showing 1 to 200, newest first)")
    assert not view.newer.isEnabled()
    assert view.older.isEnabled()


def test_pages_keep_to_the_filters(history, tmp_path):
    records = write_log(
        tmp_path / "audit.db",
        (
            make_record(id=f"c{i:03}", time=NOW - 1000 + i, client="odd" if i % 2 else "even")
            for i in range(2 * PAGE + 20)
        ),
    )
    odd = [r.id for r in reversed(records) if r.client == "odd"]
    view = history.view
    history.type_in(view.client_box, "odd")
    history.shows(odd[:PAGE], "210 calls match (showing 1 to 200, newest first)")
    history.click(view.older)
    history.shows(odd[PAGE:], "210 calls match (showing 201 to 210, newest first)")
    assert not view.older.isEnabled()


def test_the_details_pane_shows_the_selected_call(history, tmp_path):
    write_log(tmp_path / "audit.db", varied())
    view = history.view
    view.refresh()
    history.shows(["now", "h1", "h3", "d1", "d2", "d3", "d4", "d5"], "8 calls match")
    assert view.details.toPlainText() == ""
    view.table.selectRow(5)  # d3: its error and its arguments
    text = view.details.toPlainText()
    record = next(r for r in varied() if r.id == "d3")
    assert text == details_text(CallRow.from_record(record))  # the Live calls view's text
    assert "quarterly-report.txt" in text
    assert "Error:    no such file" in text
    assert "Why:      files/read_file is allowed by the policy" in text
    # the table shows the day too: history spans days
    assert view.model.text(5, 0).startswith("20")
    # a new read of the same calls keeps the selection and its details
    view.time_range.setCurrentText("All time")
    history.qtbot.waitUntil(lambda: history.count() == "11 calls match", timeout=10_000)
    assert view.table.selectionModel().selectedRows()[0].row() == 5
    assert view.details.toPlainText() == text


@pytest.mark.parametrize("form", [ExportFormat.CSV, ExportFormat.JSONL])
def test_an_export_writes_every_matching_call_oldest_first(history, tmp_path, form):
    records = write_log(
        tmp_path / "audit.db",
        (
            make_record(
                id=f"c{i:03}",
                time=NOW - 1000 + i,
                decision=CallDecision.DENIED if i % 3 == 0 else CallDecision.ALLOWED,
                outcome=Outcome.BLOCKED if i % 3 == 0 else Outcome.OK,
                arguments={"path": f"/notes/{'plan' if i % 2 else 'list'}-{i}.txt"},
            )
            for i in range(2 * PAGE + 60)
        ),
    )
    view = history.view
    view.decision_filter.setCurrentText("Denied")
    history.type_in(view.search_box, "plan")
    wanted = [
        r.id for r in records if r.decision is CallDecision.DENIED and "plan" in str(r.arguments)
    ]
    history.shows(newest_first(r for r in records if r.id in wanted), f"{len(wanted)} calls match")

    out = tmp_path / f"export.{form.value}"
    view.choose_path = lambda chosen: out if chosen is form else None
    button = view.export_buttons[form]
    history.click(button)
    history.qtbot.waitUntil(lambda: bool(history.said), timeout=10_000)
    assert history.said == [f"Exported {len(wanted)} calls to {out}"]
    if form is ExportFormat.CSV:
        with out.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        assert [row["id"] for row in rows] == wanted
        assert {row["decision"] for row in rows} == {"denied"}
    else:
        lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [line["id"] for line in lines] == wanted
        assert lines[0]["arguments"] == {"path": "/notes/plan-3.txt"}
    assert button.isEnabled()
    assert sorted(p.name for p in tmp_path.glob("export*")) == [out.name]  # no part left


def test_an_export_that_cannot_be_written_says_why(history, tmp_path):
    write_log(tmp_path / "audit.db", varied())
    view = history.view
    view.refresh()
    history.qtbot.waitUntil(lambda: history.count() == "8 calls match", timeout=10_000)
    out = tmp_path / "no such folder" / "calls.csv"
    view.choose_path = lambda _form: out
    history.click(view.export_buttons[ExportFormat.CSV])
    history.qtbot.waitUntil(lambda: bool(history.said), timeout=10_000)
    assert history.said == [f"Could not export to {out}: No such file or directory"]
    assert history.count() == history.said[0]
    assert not out.parent.exists()
    # a cancelled dialog writes nothing and says nothing; the next read shows the calls
    view.choose_path = lambda _form: None
    history.click(view.export_buttons[ExportFormat.JSONL])
    view.refresh()
    history.qtbot.waitUntil(lambda: history.count() == "8 calls match", timeout=10_000)
    assert len(history.said) == 1


def test_a_search_without_a_word_says_so(history, tmp_path):
    write_log(tmp_path / "audit.db", varied())
    view = history.view
    view.refresh()
    history.qtbot.waitUntil(lambda: history.count() == "8 calls match", timeout=10_000)
    history.type_in(view.search_box, "!!! --")
    history.qtbot.waitUntil(lambda: "Nothing to search for" in history.count(), timeout=10_000)
    assert "give a word or a name" in history.count()
    assert history.ids() == []
    assert not view.older.isEnabled()
    history.type_in(view.search_box, "quarterly")  # and the view goes on
    history.shows(["d3"], "1 call matches")


def test_without_an_audit_log_it_says_no_calls_yet(history, tmp_path):
    history.view.refresh()
    history.qtbot.waitUntil(lambda: history.count().startswith("No calls logged yet"))
    assert history.ids() == []
    assert not (tmp_path / "audit.db").exists()  # reading made nothing
    history.view.choose_path = lambda _form: tmp_path / "calls.csv"
    history.click(history.view.export_buttons[ExportFormat.CSV])
    history.qtbot.waitUntil(lambda: bool(history.said), timeout=10_000)
    assert history.said == [
        f"Could not export to {tmp_path / 'calls.csv'}: no calls are logged yet"
    ]
    assert not (tmp_path / "calls.csv").exists()
    assert not (tmp_path / "audit.db").exists()


def test_the_window_has_the_history_tab_after_live_calls(qtbot, tmp_path):
    assert TABS.index("History") == TABS.index("Live calls") + 1
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    now = time.time()  # the app's own clock
    records = write_log(
        paths.audit_db, (make_record(id=f"c{i}", time=now - 60 * (3 - i)) for i in range(3))
    )
    app = LockgateApp(paths, port=0)  # not started: the History tab needs no gateway
    try:
        tabs = app.window.tabs
        assert tabs.tabText(TABS.index("History")) == "History"
        assert tabs.widget(TABS.index("History")) is app.history
        assert tabs.tabText(TABS.index("Approvals")) == "Approvals"
        app.window.show_tab("History")  # showing it reads the log
        qtbot.waitUntil(lambda: app.history.count.text() == "3 calls match", timeout=10_000)
        assert [app.history.model.row(i).call_id for i in range(3)] == newest_first(records)
        out = tmp_path / "calls.jsonl"
        app.history.choose_path = lambda _form: out
        app.history.export(ExportFormat.JSONL)
        status = app.window.statusBar()
        qtbot.waitUntil(lambda: status.currentMessage() == f"Exported 3 calls to {out}")
        assert len(out.read_text().splitlines()) == 3
    finally:
        app.close()
        app.prompt.close()
        app.window.hide()
        app.window.deleteLater()
