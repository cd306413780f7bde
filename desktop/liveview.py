"""The "Live calls" view: the table, its filters, follow mode and the details pane."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QItemSelection, QModelIndex, QPoint, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.calls import (
    ARGUMENTS,
    CLIENT,
    DECISION,
    DURATION,
    RULE,
    SECRETS_DONE,
    SERVER,
    TIME,
    TOOL,
    CallRow,
    CallsFilter,
    CallsModel,
    decision_label,
)

__all__ = ["LiveView", "above_details", "calls_table", "details_pane", "details_text"]

# What the context menu's rule actions write for "server/tool" (merged into its rule).
RuleChange = Callable[[str, str, dict[str, Any]], None]

_DECISION_FILTERS = (
    ("All decisions", ()),
    ("Blocked (denied or refused)", ("denied", "refused")),
    ("Allowed or approved", ("allowed", "approved")),
    ("Waiting for you", ("asking",)),
    ("Denied", ("denied",)),
    ("Refused", ("refused",)),
)

# A label whose text changes asks for a new layout, which repaints the whole window
# (measured: 20 full repaints a second when the count followed every batch): the count
# is rewritten at most this often, in seconds.
COUNT_EVERY = 1.0


class LiveView(QWidget):
    """Every call as it happens, newest at the bottom."""

    def __init__(
        self,
        model: CallsModel,
        on_rule: RuleChange,
        on_load_older: Callable[[], None],
        parent: QWidget | None = None,
        *,
        on_allow_for_client: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_allow_for_client(server, tool, client)`` writes "allow for this client
        only"; ``clock`` (seconds, monotonic) paces the count under traffic."""
        super().__init__(parent)
        self.model = model
        self._on_rule = on_rule
        self._on_allow_for_client = on_allow_for_client
        self.proxy = CallsFilter(self)
        self.proxy.setSourceModel(model.qt)

        self.filter_box = QLineEdit(placeholderText="Filter by client, server, tool or arguments")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.textChanged.connect(self._filter_text)
        self.decision_filter = QComboBox()
        for label, decisions in _DECISION_FILTERS:
            self.decision_filter.addItem(label, decisions)
        self.decision_filter.currentIndexChanged.connect(self._filter_decisions)
        self.follow = QCheckBox("Follow")
        self.follow.setChecked(True)
        self.follow.setToolTip("Keep the newest call in view")
        self.follow.toggled.connect(self._follow_toggled)
        self.load_older = QPushButton("Load older")
        self.load_older.setToolTip("Read earlier calls from the audit log")
        self.load_older.clicked.connect(on_load_older)
        top = QHBoxLayout()
        top.addWidget(self.filter_box, 1)
        top.addWidget(self.decision_filter)
        top.addWidget(self.follow)
        top.addWidget(self.load_older)

        self.table = calls_table(self.proxy)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        self.table.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.proxy.rowsInserted.connect(self._rows_added)

        self.details = details_pane()
        splitter = above_details(self.table, self.details)
        self.count = QLabel()
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.count)
        self._selected_id: str | None = None
        # The count follows the rows themselves: every change of what the model holds
        # (live calls, a page of history, the oldest dropped) or of what the filters let
        # through (a call decided into or out of them) schedules it, whoever made the
        # change. Neither model's modelReset: both send one while they are destroyed,
        # which may be after this view is, and a slot of a destroyed view crashes.
        self._clock = clock
        self._counted_at = -math.inf  # when the timer last rewrote the count
        self._count_timer = QTimer(self, singleShot=True)
        self._count_timer.timeout.connect(self._count_due)
        for model_changed in (
            model.qt.rowsInserted,
            model.qt.rowsRemoved,
            self.proxy.rowsInserted,
            self.proxy.rowsRemoved,
        ):
            model_changed.connect(self._count_later)
        self._update_count()

    # -- follow mode ------------------------------------------------------------------

    def _follow_toggled(self, on: bool) -> None:
        if on:
            self.table.scrollToBottom()

    def _rows_added(self, _parent: QModelIndex, _first: int, _last: int) -> None:
        if self.follow.isChecked():
            self.table.scrollToBottom()

    def _scrolled(self, value: int) -> None:
        bar = self.table.verticalScrollBar()
        at_bottom = value >= bar.maximum() - 2
        if self.follow.isChecked() != at_bottom and (at_bottom or self.isVisible()):
            # scrolling up to read stops following; back at the bottom, it follows again
            self.follow.blockSignals(True)
            self.follow.setChecked(at_bottom)
            self.follow.blockSignals(False)

    def _update_count(self) -> None:
        shown, held = self.proxy.rowCount(), self.model.rowCount()
        note = f"{held} calls" if shown == held else f"{shown} of {held} calls shown"
        text = f"{note} (the last {self.model.capacity} are kept here; all are in the audit log)"
        if text != self.count.text():
            self.count.setText(text)

    def _filter_text(self, text: str) -> None:
        self.proxy.set_text(text)
        self._update_count()

    def _filter_decisions(self, index: int) -> None:
        self.proxy.set_decisions(self.decision_filter.itemData(index))
        self._update_count()

    def _count_later(self) -> None:
        """Rewrite the count once the change in hand is complete (at the event loop's
        next turn), or, if it was rewritten less than ``COUNT_EVERY`` ago, that long
        after: a call that arrives at a quiet moment is counted as its row appears, and
        traffic still costs one new layout a second."""
        if self._count_timer.isActive():
            return
        wait = self._counted_at + COUNT_EVERY - self._clock()
        self._count_timer.start(math.ceil(wait * 1000) if wait > 0 else 0)

    def _count_due(self) -> None:
        self._counted_at = self._clock()
        self._update_count()

    def refresh(self) -> None:
        """After a batch: the details of the selected call may have changed."""
        if self._selected_id is not None:
            index = self.model.index_of(self._selected_id)
            if index is not None:
                text = details_text(self.model.row(index))
                if text != self.details.toPlainText():
                    self.details.setPlainText(text)

    # -- details and menu -------------------------------------------------------------

    def selected_row(self) -> CallRow | None:
        indexes = self.table.selectionModel().selectedRows()
        if not indexes:
            return None
        return self._row_at(indexes[0])

    def _row_at(self, index: QModelIndex) -> CallRow | None:
        source = self.proxy.mapToSource(index)
        return self.model.row(source.row()) if source.isValid() else None

    def _selected(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        row = self.selected_row()
        self._selected_id = row.call_id if row else None
        self.details.setPlainText(details_text(row) if row else "")

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        row = self._row_at(index)
        if row is None:
            return
        menu = self.rule_menu(row)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def rule_menu(self, row: CallRow) -> QMenu:
        """The right-click menu for ``row``'s tool (non-blocking: shown with popup())."""
        menu = QMenu(self)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        name = f"{row.server}/{row.tool}"
        title = menu.addAction(name)
        title.setEnabled(False)
        menu.addSeparator()

        def change(label: str, rule: dict[str, Any]) -> None:
            action = menu.addAction(label)
            action.triggered.connect(lambda: self._on_rule(row.server, row.tool, rule))

        change(
            "Block this tool",
            {"action": "deny", "reason": "blocked in the Lockgate app", "limits": None},
        )
        change("Ask every time", {"action": "ask", "limits": None, "hide": None})
        limits = menu.addMenu("Rate-limit (allow at most…)")
        for count, window in ((10, "minute"), (60, "minute"), (100, "hour"), (1000, "day")):
            action = limits.addAction(f"{count} calls per {window}")
            rule = {"action": "allow", "limits": [rate_limit(name, count, window)], "hide": None}
            action.triggered.connect(lambda _=False, r=rule: self._on_rule(row.server, row.tool, r))
        change("Allow", {"action": "allow", "limits": None, "hide": None})
        allow_for_client = self._on_allow_for_client
        if allow_for_client is not None:
            only = menu.addAction(f"Allow for {row.client} only")
            only.setToolTip("Other clients' calls of it are decided as now")
            only.triggered.connect(lambda: allow_for_client(row.server, row.tool, row.client))
        return menu


def calls_table(model: QAbstractItemModel, time_width: int = 100) -> QTableView:
    """A table of calls as the Live calls and History views show them (``model`` has
    :data:`desktop.calls.COLUMNS`): one row selected at a time, the arguments stretched."""
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.setShowGrid(False)
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(22)
    table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    header = table.horizontalHeader()
    widths = {TIME: time_width, CLIENT: 110, SERVER: 110, TOOL: 170, DECISION: 215, RULE: 130}
    for column, width in widths.items():
        header.resizeSection(column, width)
    header.resizeSection(DURATION, 80)
    header.setSectionResizeMode(ARGUMENTS, QHeaderView.ResizeMode.Stretch)
    return table


def above_details(table: QTableView, details: QPlainTextEdit) -> QSplitter:
    """The table of calls over the selected call's details, three parts to one."""
    splitter = QSplitter(Qt.Orientation.Vertical)
    splitter.addWidget(table)
    splitter.addWidget(details)
    splitter.setStretchFactor(0, 3)
    splitter.setStretchFactor(1, 1)
    return splitter


def details_pane() -> QPlainTextEdit:
    """Where a selected call's :func:`details_text` is shown."""
    details = QPlainTextEdit(readOnly=True)
    details.setPlaceholderText("Select a call to see its arguments and why it was decided")
    details.setObjectName("details")
    font = details.font()
    font.setFamily("monospace")
    details.setFont(font)
    return details


def rate_limit(counter: str, count: int, window: str | int) -> dict[str, Any]:
    """One limit as the app writes it: per client (each agent its own budget)."""
    return {"counter": counter, "window": window, "max": count, "scope": "grant"}


def details_text(row: CallRow) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.time))
    lines = [
        f"{row.server}/{row.tool}    called by {row.client}    at {when}",
        "",
        f"Decision: {decision_label(row.decision)}",
    ]
    if row.client_info or row.protocol:
        says = f"says it is {row.client_info}" if row.client_info else "says nothing of itself"
        over = f", over MCP {row.protocol}" if row.protocol else ""
        lines.append(f"Program:  {says}{over}")
    if row.reason:
        lines.append(f"Why:      {row.reason}")
    if row.rule:
        team = " of the team's policy" if row.layer == "team" else ""
        lines.append(f"Rule:     {row.rule}{team}" + (f" ({row.basis})" if row.basis else ""))
    elif row.basis:
        lines.append(f"Basis:    {row.basis}")
    if row.outcome is not None:
        result = row.outcome.replace("_", " ")
        if row.result_size is not None:
            result += f", {row.result_size} bytes"
        if row.duration_ms is not None:
            result += f", {row.duration_ms:.1f} ms"
        lines.append(f"Result:   {result}")
    if row.error:
        lines.append(f"Error:    {row.error}")
    if row.asked_result is not None:
        lines.append(f"Waiting:  for you: {row.question}")
    if row.findings or row.secrets:
        lines.append(f"Secrets:  {_secrets_text(row)}")
        lines += [f"{'':10}- {f.get('kind', '?')} in {f.get('where', '?')}" for f in row.findings]
    lines += ["", "Arguments (secrets redacted):", _pretty(row.arguments)]
    return "\n".join(lines)


def _secrets_text(row: CallRow) -> str:
    """What the result held and what was done, in a line: "1 in the result; each one was
    replaced before the agent got the result" (the kinds and places follow)."""
    count = len(row.findings)
    done = SECRETS_DONE.get(row.secrets or "", row.secrets or "")
    if not count:
        return done
    found = f"{count} {'thing' if count == 1 else 'things'} in the result that look"
    found += "s like a secret" if count == 1 else " like secrets"
    return f"{found}; {done}" if done else found


def _pretty(arguments: Any) -> str:
    try:
        return json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(arguments)
