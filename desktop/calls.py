"""The live calls table: a model over a bounded window of recent calls, fed in batches.

Each call is one row, built from its three events (started, decided, finished) as they
come. A batch of events becomes at most one ``beginInsertRows`` (the new calls, at the
end), one ``beginRemoveRows`` (the oldest, past the window) and one ``dataChanged`` (the
rows whose calls were decided or finished), however many events it holds: thousands of
calls a second cost the view a few updates a second. Older history is in the audit log
(see :meth:`CallsModel.prepend_history`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from desktop._table import ListTableModel
from proxy.audit import CallRecord
from proxy.events import ApprovalAnswered, ApprovalPending, CallDecided, CallFinished, CallStarted

__all__ = ["COLUMNS", "CallRow", "CallsFilter", "CallsModel", "decision_label"]

COLUMNS = ("Time", "Client", "Server", "Tool", "Arguments", "Decision", "Rule", "Duration")
TIME, CLIENT, SERVER, TOOL, ARGUMENTS, DECISION, RULE, DURATION = range(len(COLUMNS))

RowRole = Qt.ItemDataRole.UserRole + 1  # the CallRow itself
DecisionRole = Qt.ItemDataRole.UserRole + 2  # "allowed", "denied", ... or "pending"

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
    "audit_unavailable": "audit log down",
}
_OUTCOME_NOTES = {
    "tool_error": "tool error",
    "protocol_error": "protocol error",
    "cancelled": "cancelled",
    "upstream_down": "server down",
}


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
    reason: str = ""
    outcome: str | None = None
    duration_ms: float | None = None
    result_size: int | None = None
    error: str | None = None
    summary: str = field(default="", repr=False)
    search: str = field(default="", repr=False)  # lower-case text the filter box matches

    def __post_init__(self) -> None:
        self.summary = _summary(self.arguments)
        self.search = f"{self.client}\n{self.server}\n{self.tool}\n{self.summary}".lower()

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
        row.reason = record.reason
        row.outcome = record.outcome.value
        row.duration_ms = record.duration_ms
        row.result_size = record.result_size
        row.error = record.error
        return row


def _summary(arguments: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(arguments, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        text = str(arguments)
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 1] + "…"


class CallsModel(ListTableModel[CallRow]):
    """The most recent ``capacity`` calls, oldest first."""

    columns = COLUMNS

    def __init__(self, capacity: int = 5000, parent: Any = None) -> None:
        super().__init__(parent)
        self.capacity = capacity
        self._rows: list[CallRow] = []
        self._first = 0  # sequence number of self._rows[0]
        self._seq: dict[str, int] = {}  # call id -> sequence number
        self._brushes = {k: QBrush(QColor(c)) for k, (_label, c) in _DECISIONS.items()}

    # -- Qt model API -----------------------------------------------------------------

    def items(self) -> Sequence[CallRow]:
        return self._rows

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        row = self.item_at(index)
        if row is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, column)
        if role == Qt.ItemDataRole.ForegroundRole and column == DECISION:
            return self._brushes.get(row.decision)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == DECISION:
                return row.reason or None
            if column == ARGUMENTS:
                return row.summary
        if role == RowRole:
            return row
        if role == DecisionRole:
            return row.decision
        return None

    def _display(self, row: CallRow, column: int) -> str:
        if column == TIME:
            return (
                time.strftime("%H:%M:%S", time.localtime(row.time))
                + f".{int(row.time * 1000) % 1000:03d}"
            )
        if column == CLIENT:
            return row.client
        if column == SERVER:
            return row.server
        if column == TOOL:
            return row.tool
        if column == ARGUMENTS:
            return row.summary
        if column == DECISION:
            label = decision_label(row.decision)
            note = _OUTCOME_NOTES.get(row.outcome or "") or _BASIS_NOTES.get(row.basis or "")
            return f"{label} · {note}" if note and row.decision != "allowed" else label
        if column == RULE:
            if row.rule:
                return row.rule
            return "" if row.decision in ("pending", "asking") else (row.basis or "—")
        if column == DURATION:
            return "" if row.duration_ms is None else f"{row.duration_ms:.1f} ms"
        return ""

    # -- feeding ----------------------------------------------------------------------

    def row(self, index: int) -> CallRow:
        return self._rows[index]

    def index_of(self, call_id: str) -> int | None:
        seq = self._seq.get(call_id)
        return None if seq is None else seq - self._first

    def apply(self, events: Iterable[object]) -> int:
        """Take a batch of events; returns how many calls it added."""
        new: list[CallRow] = []
        fresh: dict[str, CallRow] = {}
        touched: list[int] = []
        for event in events:
            if isinstance(event, CallStarted):
                row = CallRow(
                    event.call_id,
                    event.time,
                    event.client,
                    event.server,
                    event.tool,
                    event.arguments,
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
                touched.append(seq)
            _update(row_or_none, event)
        if new:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(new) - 1)
            base = self._first + start
            for offset, row in enumerate(new):
                self._seq[row.call_id] = base + offset
            self._rows.extend(new)
            self.endInsertRows()
        if touched:
            top = max(min(touched) - self._first, 0)
            bottom = max(touched) - self._first
            self.dataChanged.emit(self.index(top, 0), self.index(bottom, len(COLUMNS) - 1))
        self._trim()
        return len(new)

    def _trim(self) -> None:
        excess = len(self._rows) - self.capacity
        if excess <= 0:
            return
        self.beginRemoveRows(QModelIndex(), 0, excess - 1)
        for row in self._rows[:excess]:
            self._seq.pop(row.call_id, None)
        del self._rows[:excess]
        self._first += excess
        self.endRemoveRows()

    def prepend_history(self, records: Sequence[CallRecord]) -> int:
        """Older calls from the audit log (newest first, as it returns them) go on top;
        calls already shown are skipped. Returns how many were added."""
        rows = [CallRow.from_record(r) for r in reversed(records) if r.id not in self._seq]
        room = self.capacity - len(self._rows)
        rows = rows[len(rows) - room :] if room < len(rows) else rows
        if not rows:
            return 0
        self.beginInsertRows(QModelIndex(), 0, len(rows) - 1)
        self._first -= len(rows)
        for offset, row in enumerate(rows):
            self._seq[row.call_id] = self._first + offset
        self._rows[:0] = rows
        self.endInsertRows()
        return len(rows)

    def oldest_id(self) -> str | None:
        return self._rows[0].call_id if self._rows else None

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self._seq.clear()
        self._first = 0
        self.endResetModel()


def _update(row: CallRow, event: object) -> None:
    if isinstance(event, CallDecided):
        row.decision = event.decision
        row.basis = event.basis
        row.rule = event.rule
        row.reason = event.reason
    elif isinstance(event, CallFinished):
        row.outcome = event.outcome
        row.duration_ms = event.duration_ms
        row.result_size = event.result_size
        row.error = event.error
    elif isinstance(event, ApprovalPending):
        if row.decision == "pending":
            row.decision = "asking"
            row.rule = event.rule
            row.reason = event.reason
    elif isinstance(event, ApprovalAnswered) and row.decision == "asking":
        row.decision = "pending"


class CallsFilter(QSortFilterProxyModel):
    """The filter box (client, server, tool or arguments contain the text) and the
    decision filter (a set of decisions shown; empty: all)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._decisions: frozenset[str] = frozenset()

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._text = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_decisions(self, decisions: Iterable[str]) -> None:
        self.beginFilterChange()
        self._decisions = frozenset(decisions)
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        if not self._text and not self._decisions:
            return True
        model = self.sourceModel()
        assert isinstance(model, CallsModel)
        row = model.row(source_row)
        if self._decisions and row.decision not in self._decisions:
            return False
        return not self._text or self._text in row.search
