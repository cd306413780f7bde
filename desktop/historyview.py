"""The "History" view: every call of the audit log, searched and filtered, a page at a
time, newest first, with the Live calls view's details pane; and its export.

Every read of the log and every export runs on a worker (``blocking``: the app's
:meth:`desktop.host.GatewayHost.blocking`); the GUI thread only shows what came back.
Pages are found by the commit order (``before_id`` going back, ``after_seq`` coming
forward), never skipped to: a page costs the same at any depth.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.calls import TIME, CallsModel
from desktop.liveview import above_details, calls_table, details_pane, details_text
from proxy.audit.export import ExportFormat, export_to_file, pages
from proxy.audit.log import AuditError, AuditReader
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.errors import LockgateError

__all__ = ["PAGE", "TIME_RANGES", "Blocking", "HistoryFilters", "HistoryPage", "HistoryView"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE = 200  # calls a page
TYPING_PAUSE_MS = 400  # what was typed is applied after this pause (or at Enter)

TIME_RANGES: tuple[tuple[str, float | None], ...] = (
    ("Last hour", 3600.0),
    ("Last 24 hours", 86400.0),
    ("Last 7 days", 7 * 86400.0),
    ("Last 30 days", 30 * 86400.0),
    ("All time", None),
)
_DEFAULT_RANGE = "Last 7 days"
_DECISIONS: tuple[tuple[str, str | None], ...] = (
    ("Any decision", None),
    *((d.value.capitalize(), d.value) for d in CallDecision),
)
_OUTCOMES: tuple[tuple[str, str | None], ...] = (
    ("Any outcome", None),
    *(
        ("OK" if o is Outcome.OK else o.value.replace("_", " ").capitalize(), o.value)
        for o in Outcome
    ),
)
_EXPORTS = {
    ExportFormat.CSV: ("Export CSV…", "CSV files (*.csv)", "lockgate-calls.csv"),
    ExportFormat.JSONL: (
        "Export JSON Lines…",
        "JSON Lines files (*.jsonl)",
        "lockgate-calls.jsonl",
    ),
}
_ERROR_STYLE = "color: #c62828;"


class Blocking(Protocol):
    """How the view has work done off the GUI thread: ``fn`` on a worker, then
    ``on_done(future)`` on the GUI thread (:meth:`desktop.host.GatewayHost.blocking`)."""

    def __call__(
        self,
        fn: Callable[[], T],
        on_done: Callable[[concurrent.futures.Future[T]], None] | None = None,
    ) -> concurrent.futures.Future[T]: ...


@dataclass(frozen=True, slots=True)
class HistoryFilters:
    """What the person asked for, as :meth:`AuditReader.query_rows` takes it (None: any)."""

    search: str | None = None
    client: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    outcome: str | None = None
    start: float | None = None
    end: float | None = None

    def query(self) -> dict[str, Any]:
        return {
            "search": self.search,
            "client": self.client,
            "server": self.server,
            "tool": self.tool,
            "decision": self.decision,
            "outcome": self.outcome,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page as read: its calls newest first with their rowids, whether there are
    older and newer ones past it, and (for a fresh query) the count of all matches and
    how many of the newest calls the search does not find yet."""

    rows: list[tuple[int, CallRecord]]
    has_older: bool
    has_newer: bool
    matches: int | None = None
    backlog: int = 0


def read_page(
    reader: AuditReader,
    filters: HistoryFilters,
    *,
    before_id: str | None = None,
    after_seq: int | None = None,
    counted: bool = False,
) -> HistoryPage | None:
    """A page of ``filters``' calls (on a worker): the newest, those before ``before_id``
    or those just after ``after_seq``; with the count when ``counted``. None when there
    is no audit log yet.

    Raises:
        AuditError: the log cannot be read, or the search holds no word.
    """
    if not reader.path.exists():
        return None
    query = filters.query()
    if after_seq is not None:  # newer: the PAGE just after, read oldest first
        rows = reader.query_rows(**query, after_seq=after_seq, limit=PAGE + 1, oldest_first=True)
        has_newer = len(rows) > PAGE
        rows = rows[:PAGE][::-1]
        has_older = True
    else:
        rows = reader.query_rows(**query, before_id=before_id, limit=PAGE + 1)
        has_older = len(rows) > PAGE
        rows = rows[:PAGE]
        has_newer = before_id is not None
    if not counted:
        return HistoryPage(rows, has_older, has_newer)
    backlog = reader.search_backlog() if filters.search is not None else 0
    return HistoryPage(rows, has_older, has_newer, reader.count(**query), backlog)


def export_matching(
    reader: AuditReader, filters: HistoryFilters, path: Path, form: ExportFormat
) -> int:
    """Every call of ``filters``, oldest first, written to ``path`` as ``form`` (on a
    worker); returns how many. The file appears whole or not at all: it is written
    beside ``path`` and put in its place once complete.

    Raises:
        AuditError: the log cannot be read (or there is none yet).
        OSError: the file cannot be written.
    """
    if not reader.path.exists():
        raise AuditError("no calls are logged yet")
    query = filters.query()

    def read(after: int | None) -> list[tuple[int, CallRecord]]:
        return reader.query_rows(**query, after_seq=after, limit=2000, oldest_first=True)

    return export_to_file(pages(read), path, form)


class HistoryView(QWidget):
    """The whole audit log: a search, filters, a page of calls and the selected one's
    details; "Export CSV…" and "Export JSON Lines…" write every call that matches."""

    def __init__(
        self,
        audit_db: Path,
        blocking: Blocking,
        say: Callable[[str], None],
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``say`` puts a sentence in the window's status bar; ``clock`` (epoch seconds)
        is where the time ranges end."""
        super().__init__(parent)
        self._reader = AuditReader(audit_db)
        self._blocking = blocking
        self._say = say
        self._clock = clock
        # the save dialog, replaceable (tests give a path): the path, or None if cancelled
        self.choose_path: Callable[[ExportFormat], Path | None] = self._ask_path

        self.search_box = QLineEdit(
            placeholderText="Search tools, servers, clients, arguments, reasons, errors"
        )
        self.search_box.setClearButtonEnabled(True)
        self.time_range = QComboBox()
        for label, seconds in TIME_RANGES:
            self.time_range.addItem(label, seconds)
        self.time_range.setCurrentText(_DEFAULT_RANGE)
        self.client_box = QLineEdit(placeholderText="Client")
        self.server_box = QLineEdit(placeholderText="Server")
        self.tool_box = QLineEdit(placeholderText="Tool")
        self.decision_filter = QComboBox()
        for label, decision in _DECISIONS:
            self.decision_filter.addItem(label, decision)
        self.outcome_filter = QComboBox()
        for label, outcome in _OUTCOMES:
            self.outcome_filter.addItem(label, outcome)
        self.export_buttons: dict[ExportFormat, QPushButton] = {}
        for form, (label, _kinds, _name) in _EXPORTS.items():
            button = QPushButton(label)
            button.setToolTip("Write every call that matches the search and filters to a file")
            button.clicked.connect(lambda _=False, f=form: self.export(f))
            self.export_buttons[form] = button

        self._typing = QTimer(self, singleShot=True, interval=TYPING_PAUSE_MS)
        self._typing.timeout.connect(self.refresh)
        for box in (self.search_box, self.client_box, self.server_box, self.tool_box):
            box.textEdited.connect(self._typing.start)
            box.returnPressed.connect(self.refresh)
        self.search_box.textChanged.connect(self._cleared)  # its clear button
        for combo in (self.time_range, self.decision_filter, self.outcome_filter):
            combo.currentIndexChanged.connect(self.refresh)

        top = QHBoxLayout()
        top.addWidget(self.search_box, 1)
        top.addWidget(self.time_range)
        for button in self.export_buttons.values():
            top.addWidget(button)
        narrow = QHBoxLayout()
        for box in (self.client_box, self.server_box, self.tool_box):
            narrow.addWidget(box, 1)
        narrow.addWidget(self.decision_filter)
        narrow.addWidget(self.outcome_filter)

        self.model = CallsModel(capacity=PAGE)
        self.table = calls_table(self.model.qt, time_width=150)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        self.details = details_pane()
        splitter = above_details(self.table, self.details)

        self.count = QLabel()  # how many match, or what went wrong
        self.count.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.count.setWordWrap(True)
        self.newer = QPushButton("← Newer")
        self.newer.setToolTip("The page of calls after these")
        self.newer.clicked.connect(self.show_newer)
        self.older = QPushButton("Older →")
        self.older.setToolTip("The page of calls before these")
        self.older.clicked.connect(self.show_older)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count, 1)
        bottom.addWidget(self.newer)
        bottom.addWidget(self.older)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(narrow)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)

        self._filters = HistoryFilters()
        self._rows: list[tuple[int, CallRecord]] = []  # the page shown, newest first
        self._matches: int | None = None
        self._backlog = 0
        self._first = 0  # how many newer matches are before this page
        self._asked = 0  # the latest read asked for: an answer to an earlier one is old news
        self._selected_id: str | None = None
        self._refreshed = False  # the boxes were read at least once
        self.newer.setEnabled(False)
        self.older.setEnabled(False)

    # -- reading ----------------------------------------------------------------------

    def filters(self) -> HistoryFilters:
        """What the boxes say now, the time range ending now."""
        seconds = self.time_range.currentData()
        search = self.search_box.text().strip()
        return HistoryFilters(
            search=search or None,
            client=self.client_box.text().strip() or None,
            server=self.server_box.text().strip() or None,
            tool=self.tool_box.text().strip() or None,
            decision=self.decision_filter.currentData(),
            outcome=self.outcome_filter.currentData(),
            start=None if seconds is None else self._clock() - float(seconds),
        )

    def refresh(self) -> None:
        """Read the newest page of what the boxes say, and the count of its matches."""
        self._typing.stop()
        self._refreshed = True
        self._filters = self.filters()
        self._read(counted=True, first=0)

    def show_older(self) -> None:
        if self._rows:
            self._read(before_id=self._rows[-1][1].id, first=self._first + len(self._rows))

    def show_newer(self) -> None:
        if self._rows:
            self._read(after_seq=self._rows[0][0], first=max(0, self._first - PAGE))

    def _cleared(self, text: str) -> None:
        if not text and self._filters.search is not None:
            self.refresh()

    def _read(
        self,
        *,
        first: int,
        before_id: str | None = None,
        after_seq: int | None = None,
        counted: bool = False,
    ) -> None:
        self._asked += 1
        asked, reader, filters = self._asked, self._reader, self._filters

        def read() -> HistoryPage | None:
            return read_page(
                reader, filters, before_id=before_id, after_seq=after_seq, counted=counted
            )

        def done(future: concurrent.futures.Future[HistoryPage | None]) -> None:
            if asked != self._asked or future.cancelled():
                return  # a later read is on its way, or the app is closing
            error = future.exception()
            if error is not None:
                self._failed(error)
                return
            page = future.result()
            if page is None:
                self._show_problem(
                    "No calls logged yet: calls appear here once an agent makes one."
                )
                return
            # a newer page with none past it is the newest
            self._show_page(page, 0 if after_seq is not None and not page.has_newer else first)

        self._blocking(read, done)

    # -- showing ----------------------------------------------------------------------

    def _show_page(self, page: HistoryPage, first: int) -> None:
        if page.matches is not None:
            self._matches, self._backlog = page.matches, page.backlog
        self._rows, self._first = page.rows, first
        self.model.clear()
        # The model shows what it is given last on top: oldest first in, newest on top.
        self.model.prepend_history([record for _, record in reversed(page.rows)])
        qt = self.model.qt
        for row in range(self.model.rowCount()):
            moment = time.localtime(self.model.row(row).time)
            qt.setData(qt.index(row, TIME), time.strftime("%Y-%m-%d %H:%M:%S", moment))
        self.older.setEnabled(page.has_older)
        self.newer.setEnabled(page.has_newer)
        self.count.setStyleSheet("")
        self.count.setText(self._count_text())
        self._reselect()

    def _count_text(self) -> str:
        matches = self._matches or 0
        text = "1 call matches" if matches == 1 else f"{matches:,} calls match"
        if self._rows and (self._first or len(self._rows) < matches):
            text += (
                f" (showing {self._first + 1:,} to {self._first + len(self._rows):,}, newest first)"
            )
        if self._backlog:
            text += f" · {self._backlog:,} newest calls not searchable yet"
        return text

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, LockgateError):
            self._show_problem(_sentence(error.message))
        else:
            log.warning("reading the audit log failed: %s", error)
            self._show_problem(f"Could not read the audit log: {error}")

    def _show_problem(self, text: str) -> None:
        """Nothing to show, and why (the table is emptied: its rows were of another query)."""
        self._rows, self._first, self._matches, self._backlog = [], 0, None, 0
        self.model.clear()
        self.details.clear()
        self.older.setEnabled(False)
        self.newer.setEnabled(False)
        self.count.setStyleSheet(_ERROR_STYLE)
        self.count.setText(text)

    def _reselect(self) -> None:
        index = None if self._selected_id is None else self.model.index_of(self._selected_id)
        if index is None:
            self.details.clear()
            return
        self.table.selectionModel().select(
            self.model.qt.index(index, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )

    def _selected(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        indexes = self.table.selectionModel().selectedRows()
        if not indexes:
            self.details.clear()
            return
        row = self.model.row(indexes[0].row())
        self._selected_id = row.call_id
        self.details.setPlainText(details_text(row))

    # -- export -----------------------------------------------------------------------

    def export(self, form: ExportFormat) -> None:
        """Ask where, then write every call the search and filters match (all pages)."""
        if self._typing.isActive() or not self._refreshed:
            self.refresh()  # what the boxes say now counts
        path = self.choose_path(form)
        if path is None:
            return
        reader, filters = self._reader, self._filters
        for button in self.export_buttons.values():
            button.setEnabled(False)

        def write() -> int:
            return export_matching(reader, filters, path, form)

        def done(future: concurrent.futures.Future[int]) -> None:
            for button in self.export_buttons.values():
                button.setEnabled(True)
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                written = future.result()
                self._say(f"Exported {written:,} {'call' if written == 1 else 'calls'} to {path}")
                return
            if isinstance(error, OSError):
                why = error.strerror or str(error)
                said = f"Could not export to {path}: {why}"
            elif isinstance(error, LockgateError):
                said = f"Could not export to {path}: {error.message}"
            else:
                log.warning("the export failed: %s", error)
                said = f"Could not export to {path}: {error}"
            self._say(said)
            self.count.setStyleSheet(_ERROR_STYLE)
            self.count.setText(said)

        self._blocking(write, done)

    def _ask_path(self, form: ExportFormat) -> Path | None:
        _label, kinds, name = _EXPORTS[form]
        chosen, _kind = QFileDialog.getSaveFileName(
            self, "Export calls", str(Path.home() / name), kinds
        )
        return Path(chosen) if chosen else None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
