"""The live calls table: a model over a bounded window of recent calls, fed in batches.

Each call is one row, built from its three events (started, decided, finished) as they
come. A batch of events becomes at most one ``beginInsertRows`` (the new calls, at the
end), one ``beginRemoveRows`` (the oldest, past the window) and one ``dataChanged`` (the
rows whose calls were decided or finished), however many events it holds: thousands of
calls a second cost the view a few updates a second. Older history is in the audit log
(see :meth:`CallsModel.prepend_history`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QRegularExpression, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem

from proxy.audit.records import CallRecord
from proxy.gateway.events import (
    ApprovalAnswered,
    ApprovalPending,
    CallDecided,
    CallFinished,
    CallStarted,
)

__all__ = [
    "COLUMNS",
    "SECRETS_DONE",
    "CallRow",
    "CallsFilter",
    "CallsModel",
    "DecisionRole",
    "FilterRole",
    "decision_label",
]

COLUMNS = ("Time", "Client", "Server", "Tool", "Arguments", "Decision", "Rule", "Duration")
TIME, CLIENT, SERVER, TOOL, ARGUMENTS, DECISION, RULE, DURATION = range(len(COLUMNS))

# On each row's first cell:
DecisionRole = Qt.ItemDataRole.UserRole + 2  # "allowed", "denied", ... or "pending"
FilterRole = Qt.ItemDataRole.UserRole + 3  # the decision, "\x1f", the searchable text
_LAST = len(COLUMNS) - 1
_ALL = range(len(COLUMNS))
_CHANGING = (TIME, DECISION, RULE, DURATION)  # the cells a decision or an outcome changes
_DISPLAY = Qt.ItemDataRole.DisplayRole
_FOREGROUND = Qt.ItemDataRole.ForegroundRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_NO_BRUSH = QBrush()

_ARGUMENTS_SHOWN = 120  # characters of the arguments summary

_DECISIONS: dict[str, tuple[str, str]] = {  # decision -> (label, colour)
    "allowed": ("✓ allowed", "#1b7f3b"),
    "approved": ("✓ approved", "#1b7f3b"),
    "denied": ("✕ denied", "#c62828"),
    "refused": ("✕ refused", "#c25e00"),
    "asking": ("? waiting for you", "#6a1b9a"),
    "pending": ("… deciding", "#666666"),
}
_BASIS_NOTES = {  # why a call was blocked, when not simply by its rule's action
    "limit": "rate limit",
    "arguments": "arguments",
    "pause": "paused",
    "timeout": "no answer",
    "no_approver": "nobody to ask",
    "server_removed": "server removed",
    "server_disabled": "server turned off",
    "needs_sign_in": "needs sign-in",
    "session_ended": "session ended",
    "audit_unavailable": "audit log down",
    "name": "bad tool name",
    "quarantined": "tool held",  # its pin holds it: changed, renamed, new, poisoned
}
_OUTCOME_NOTES = {
    "tool_error": "tool error",
    "protocol_error": "protocol error",
    "cancelled": "cancelled",
    "upstream_down": "server down",
    "pending": "sent, no answer yet",
    "interrupted": "Lockgate stopped before the answer",
    "withheld": "result withheld",  # it ran; its result was kept from the agent
    "timed_out": "timed out",  # the rule's timeout cancelled it upstream
}
# What was done about secrets in a result (CallFinished.secrets), as the decision cell
# says it; "blocked", "refused", "timeout"... withhold it, which the outcome says.
_SECRETS_NOTES = {
    "redacted": "secret redacted",
    "approved": "secret let through",
    "partly scanned": "result partly scanned",
}
# ... and in the details, in a sentence
SECRETS_DONE = {
    "redacted": "each one was replaced before the agent got the result",
    "blocked": "the result was withheld: the policy blocks results that hold secrets",
    "approved": "you let the result through as it was",
    "refused": "the result was withheld: you refused it",
    "timeout": "the result was withheld: nobody let it through in time",
    "no_approver": "the result was withheld: there was nobody to ask",
    "busy": "the result was withheld: too many calls were waiting for a person",
    "partly scanned": "the result was too large to scan whole; what was scanned was clean",
}


_LET_THROUGH = frozenset({"allowed", "approved"})
_FAILED_OUTCOMES = frozenset(
    {
        "tool_error",
        "protocol_error",
        "cancelled",
        "upstream_down",
        "interrupted",
        "withheld",
        "timed_out",
    }
)
_FAILED_COLOUR = "#b26a00"  # amber: let through, but it failed (or its result was kept)


def decision_label(decision: str) -> str:
    return _DECISIONS.get(decision, (decision, ""))[0]


@dataclass(slots=True, eq=False)
class CallRow:
    """One call as the table shows it."""

    call_id: str
    time: float
    client: str
    server: str
    tool: str
    arguments: Mapping[str, Any]
    decision: str = "pending"
    basis: str | None = None
    rule: str | None = None
    case: int | None = None  # the rule's "when" case that decided (from 0)
    layer: str | None = None  # "team": the team's policy decided
    reason: str = ""
    outcome: str | None = None
    duration_ms: float | None = None
    result_size: int | None = None
    error: str | None = None
    client_info: str | None = None  # what the client program says it is (unchecked)
    protocol: str | None = None  # the request's MCP version
    # what its result held that looked like a secret ({"kind", "where"}), and what was done
    findings: tuple[Mapping[str, str], ...] = ()
    secrets: str | None = None
    # a person is asked whether its result, which holds a secret, may reach the agent:
    # the decision it had meanwhile (it was decided before it ran), and the question
    asked_result: str | None = None
    question: str = ""
    summary: str = field(default="", repr=False)
    search: str = field(default="", repr=False)  # the text the filter box matches

    def __post_init__(self) -> None:
        self.summary = _summary(self.arguments)
        self.search = f"{self.client}\n{self.server}\n{self.tool}\n{self.summary}"

    @classmethod
    def from_record(cls, record: CallRecord) -> CallRow:
        row = cls(
            record.id,
            record.time,
            record.client,
            record.server,
            record.tool,
            record.arguments if isinstance(record.arguments, Mapping) else {},
        )
        row.decision = record.decision.value
        row.basis = record.basis
        row.rule = record.rule
        row.case = record.case
        row.layer = record.layer
        row.reason = record.reason
        row.outcome = record.outcome.value
        row.duration_ms = record.duration_ms
        row.result_size = record.result_size
        row.error = record.error
        row.client_info = record.client_info
        row.protocol = record.protocol
        row.findings = tuple(record.findings)
        row.secrets = record.secrets
        return row


def _summary(arguments: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(arguments, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        text = str(arguments)
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 1] + "…"


class CallsModel:
    """The most recent ``capacity`` calls, oldest first, as the Qt model :attr:`qt`.

    The cells live in C++: their text is made once, when a call arrives or changes, and
    painting never calls Python. A model whose ``data()`` is Python makes the view call
    into Python for every cell and role of every paint, and each call must take the GIL
    from the gateway's thread: measured with a thread keeping the GIL busy, a paint of
    this table took 515 ms that way and under 5 ms this way (bench/bench_gui.py has the
    figures under real traffic).

    The C++ model is the one a ``QTableWidget`` owns (never shown). ``QStandardItemModel``
    would do the same job, but dropping its oldest rows costs time in proportion to the
    window (its items search for their own position): 95 µs a row against 4 µs here.
    """

    def __init__(self, capacity: int = 5000) -> None:
        self._store = QTableWidget(0, len(COLUMNS))  # holds the cells; never shown
        self._store.setHorizontalHeaderLabels(list(COLUMNS))
        prototype = QTableWidgetItem()  # what the store copies for each new cell
        prototype.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        self._store.setItemPrototype(prototype)
        self.qt: QAbstractItemModel = self._store.model()
        self.capacity = capacity
        self._rows: list[CallRow] = []
        self._first = 0  # sequence number of self._rows[0]
        self._seq: dict[str, int] = {}  # call id -> sequence number
        self._brushes = {k: QBrush(QColor(c)) for k, (_label, c) in _DECISIONS.items()}
        self._failed_brush = QBrush(QColor(_FAILED_COLOUR))

    # -- reading ----------------------------------------------------------------------

    def rowCount(self) -> int:
        return len(self._rows)

    def text(self, row: int, column: int) -> str:
        """What the table shows in that cell."""
        item = self._store.item(row, column)
        return item.text() if item is not None else ""

    def row(self, index: int) -> CallRow:
        return self._rows[index]

    def index_of(self, call_id: str) -> int | None:
        seq = self._seq.get(call_id)
        return None if seq is None else seq - self._first

    def oldest_id(self) -> str | None:
        return self._rows[0].call_id if self._rows else None

    # -- feeding ----------------------------------------------------------------------

    def apply(self, events: Iterable[object]) -> int:
        """Take a batch of events; returns how many calls it added.

        The batch is one ``rowsInserted`` (its new calls, at the end), one ``dataChanged``
        (from the first row it changed to its last new one) and one ``rowsRemoved`` (the
        oldest, past the window), however many events it holds.
        """
        new: list[CallRow] = []
        fresh: dict[str, CallRow] = {}
        touched: set[int] = set()
        for event in events:
            if isinstance(event, CallStarted):
                row = CallRow(
                    event.call_id,
                    event.time,
                    event.client,
                    event.server,
                    event.tool,
                    event.arguments,
                    client_info=event.client_info,
                    protocol=event.protocol,
                )
                new.append(row)
                fresh[event.call_id] = row
                continue
            call_id = getattr(event, "call_id", None)
            if call_id is None:
                continue
            row_or_none = fresh.get(call_id)
            if row_or_none is None:
                seq = self._seq.get(call_id)
                if seq is None:
                    continue
                row_or_none = self._rows[seq - self._first]
                touched.add(seq - self._first)
            _update(row_or_none, event)
        if len(new) > self.capacity:
            # A backlog: the oldest of these would be dropped as soon as they were made.
            for row in new[: -self.capacity]:
                fresh.pop(row.call_id, None)
            new = new[-self.capacity :]
        changed = sorted(touched)
        if new:
            start = len(self._rows)
            base = self._first + start
            for offset, row in enumerate(new):
                self._seq[row.call_id] = base + offset
            self._rows.extend(new)
            self._insert(start, new)
            changed += [start, start + len(new) - 1]
        if touched:
            with self._quietly():
                for index in touched:
                    self._restyle(index, self._rows[index])
        if changed:
            self._changed(changed[0], changed[-1])
        self._trim()
        return len(new)

    def prepend_history(self, records: Sequence[CallRecord]) -> int:
        """Older calls from the audit log (newest first, as it returns them) go on top;
        calls already shown are skipped. Returns how many were added."""
        rows = [CallRow.from_record(r) for r in reversed(records) if r.id not in self._seq]
        room = self.capacity - len(self._rows)
        rows = rows[len(rows) - room :] if room < len(rows) else rows
        if not rows:
            return 0
        self._first -= len(rows)
        for offset, row in enumerate(rows):
            self._seq[row.call_id] = self._first + offset
        self._rows[:0] = rows
        self._insert(0, rows)
        self._changed(0, len(rows) - 1)
        return len(rows)

    def clear(self) -> None:
        self._rows.clear()
        self._seq.clear()
        self._first = 0
        self.qt.removeRows(0, self.qt.rowCount())

    def _insert(self, at: int, rows: Sequence[CallRow]) -> None:
        """One ``rowsInserted`` for all of ``rows``, then their cells, quietly: the caller
        announces them with one ``dataChanged`` (one signal per cell would cost the view
        far more than the cells)."""
        self.qt.insertRows(at, len(rows))
        with self._quietly():
            for index, row in enumerate(rows, at):
                self._fill(index, row, _ALL)

    def _restyle(self, index: int, row: CallRow) -> None:
        """A call was decided or finished: new cells for what that changes."""
        take = self._store.takeItem
        for column in _CHANGING:
            # A fresh cell, not the old one changed: an old cell must search the whole
            # table for its own position once older rows have been dropped.
            take(index, column)
        self._fill(index, row, _CHANGING)

    def _fill(self, index: int, row: CallRow, columns: Sequence[int]) -> None:
        """Set the cells of ``row`` at ``index`` through the model, which makes them in C++
        (from the store's prototype): no Python object stays behind for each cell, and
        painting one never needs Python (a cell made in Python must ask it once, under the
        GIL, whether Python overrides its methods)."""
        qt = self.qt
        cell_at, set_data, set_roles = qt.index, qt.setData, qt.setItemData
        for column in columns:
            cell = cell_at(index, column)
            if column == TIME:
                moment = time.localtime(row.time)
                millis = int(row.time * 1000) % 1000
                text = time.strftime("%H:%M:%S", moment) + f".{millis:03d}"
                filtered = f"{row.decision}\x1f{row.search}"
                set_roles(cell, {_DISPLAY: text, DecisionRole: row.decision, FilterRole: filtered})
            elif column == DECISION:
                brush = (
                    self._failed_brush
                    if _failed(row)
                    else self._brushes.get(row.decision, _NO_BRUSH)
                )
                text = _decision_text(row)
                set_roles(cell, {_DISPLAY: text, _FOREGROUND: brush, _TOOLTIP: row.reason})
            elif column == ARGUMENTS:
                set_roles(cell, {_DISPLAY: row.summary, _TOOLTIP: row.summary})
            elif column == RULE:
                set_data(cell, _rule_text(row))
            elif column == DURATION:
                set_data(cell, _duration_text(row))
            else:
                set_data(cell, (row.client, row.server, row.tool)[column - CLIENT])

    def _changed(self, first: int, last: int) -> None:
        qt = self.qt
        qt.dataChanged.emit(qt.index(first, 0), qt.index(last, _LAST))

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """No signal per cell: the caller announces the rows once."""
        was = self.qt.blockSignals(True)
        try:
            yield
        finally:
            self.qt.blockSignals(was)

    def _trim(self) -> None:
        excess = len(self._rows) - self.capacity
        if excess <= 0:
            return
        for row in self._rows[:excess]:
            self._seq.pop(row.call_id, None)
        del self._rows[:excess]
        self._first += excess
        self.qt.removeRows(0, excess)


def _decision_text(row: CallRow) -> str:
    """The decision, then what became of the call when that is not plain success: an
    allowed call whose server was down did not run, and must not look as if it did."""
    label = decision_label(row.decision)
    if row.asked_result is not None:
        return f"{label} · result holds a secret"
    let_through = row.decision in _LET_THROUGH
    if let_through and row.outcome == "pending":
        return label  # on its way: the answer follows at once, mostly
    notes = [n for n in (_OUTCOME_NOTES.get(row.outcome or ""),) if n]
    if not notes and not let_through and (basis := _BASIS_NOTES.get(row.basis or "")):
        notes.append(basis)
    if secrets := _SECRETS_NOTES.get(row.secrets or ""):
        notes.append(secrets)
    return " · ".join([label, *notes])


def _failed(row: CallRow) -> bool:
    """Let through, but it did not come back as a success."""
    return row.decision in _LET_THROUGH and row.outcome in _FAILED_OUTCOMES


def _rule_text(row: CallRow) -> str:
    if row.rule:
        # the case as policy.json's path names it: "git/push when[0]"
        text = row.rule if row.case is None else f"{row.rule} when[{row.case}]"
        return f"team: {text}" if row.layer == "team" else text
    return "" if row.decision in ("pending", "asking") else (row.basis or "—")


def _duration_text(row: CallRow) -> str:
    return "" if row.duration_ms is None else f"{row.duration_ms:.1f} ms"


def _update(row: CallRow, event: object) -> None:
    if isinstance(event, CallDecided):
        row.decision = event.decision
        row.basis = event.basis
        row.rule = event.rule
        row.case = event.case
        row.layer = event.layer
        row.reason = event.reason
    elif isinstance(event, CallFinished):
        row.outcome = event.outcome
        row.duration_ms = event.duration_ms
        row.result_size = event.result_size
        row.error = event.error
        row.findings = tuple(event.findings)
        row.secrets = event.secrets
        _result_answered(row)
    elif isinstance(event, ApprovalPending):
        if event.about == "result":
            # decided and run already; what waits is its result
            if row.asked_result is None:
                row.asked_result = row.decision
            row.decision = "asking"
            row.question = event.reason
        elif row.decision == "pending":
            row.decision = "asking"
            row.rule = event.rule
            row.case = event.case
            row.reason = event.reason
    elif isinstance(event, ApprovalAnswered) and row.decision == "asking":
        if row.asked_result is not None:
            _result_answered(row)
        else:
            row.decision = "pending"


def _result_answered(row: CallRow) -> None:
    """The question about its result is over: the call's decision is what it was."""
    if row.asked_result is not None:
        row.decision, row.asked_result = row.asked_result, None


class CallsFilter(QSortFilterProxyModel):
    """The filter box (client, server, tool or arguments contain the text, in any case)
    and the decision filter (a set of decisions shown; empty: all).

    Both are one regular expression over the model's ``FilterRole`` (the decision, then
    the searchable text), matched in C++: a Python ``filterAcceptsRow`` would be called
    for every new and changed row.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setFilterRole(FilterRole)
        self.setFilterKeyColumn(0)
        self._text = ""
        self._decisions: frozenset[str] = frozenset()

    def set_text(self, text: str) -> None:
        self._text = text.strip()
        self._refilter()

    def set_decisions(self, decisions: Iterable[str]) -> None:
        self._decisions = frozenset(decisions)
        self._refilter()

    def _refilter(self) -> None:
        pattern = ""
        if self._decisions:
            shown = "|".join(map(QRegularExpression.escape, sorted(self._decisions)))
            pattern = f"^(?:{shown})\x1f"
        if self._text:
            pattern += "\x1f.*" if not pattern else ".*"
            pattern += QRegularExpression.escape(self._text)
        options = (
            QRegularExpression.PatternOption.CaseInsensitiveOption
            | QRegularExpression.PatternOption.DotMatchesEverythingOption
        )
        self.setFilterRegularExpression(QRegularExpression(pattern, options))
