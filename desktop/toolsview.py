"""The "Tools & rules" view: every tool of every server, its risk, and its rule as a control."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop._table import ListTableModel
from desktop.liveview import rate_limit
from proxy.policy.model import Action, Policy, Rule
from proxy.policy.risk import Risk
from proxy.upstream.catalog import ServerTools

__all__ = ["ToolsModel", "ToolsView", "effective_rule_text"]

COLUMNS = ("Server", "Tool", "Risk", "Rule in force", "Description")
SERVER, TOOL, RISK, RULE, DESCRIPTION = range(len(COLUMNS))
ToolRole = Qt.ItemDataRole.UserRole + 1

_LEVEL_COLOURS = {"low": "#2e7d32", "medium": "#b26a00", "high": "#c62828"}
_ACTION_COLOURS = {"allow": "#1b7f3b", "deny": "#c62828", "ask": "#6a1b9a"}

RuleChange = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class ToolRow:
    server: str
    name: str
    description: str
    risk: Risk


def effective_rule_text(policy: Policy | None, server: str, tool: str) -> tuple[str, str]:
    """What decides calls to server/tool now: (action, where it comes from)."""
    if policy is None:
        return "?", "the policy is not loaded yet"
    rule = policy.rule_for(server, tool)
    if rule is None:
        return policy.default.value, "the default"
    return _action_of(rule), _origin(rule, server, tool)


def _action_of(rule: Rule) -> str:
    if rule.hide and rule.action is Action.DENY:
        return "hide"
    if rule.limits and rule.action is Action.ALLOW:
        return "rate limit"
    return rule.action.value


def _origin(rule: Rule, server: str, tool: str) -> str:
    text = rule.pattern.text
    origin = f"rule {text}" if text in (f"{server}/{tool}", tool) else f"pattern {text}"
    return origin + cases_text(rule)


def cases_text(rule: Rule) -> str:
    """The rule's ``when`` cases, for a person: "; except: for cursor: allow; for these
    arguments: allow" (empty without cases)."""
    parts = []
    for case in rule.cases:
        whom = []
        if case.clients is not None:
            whom.append("for " + ", ".join(sorted(case.clients)))
        if case.arguments is not None:
            whom.append("for exact arguments" if _exact(case.arguments) else "for some arguments")
        parts.append(f"{' '.join(whom)}: {case.action.value}")
    return "; except " + "; ".join(parts) if parts else ""


def _exact(schema: object) -> bool:
    return isinstance(schema, dict) and schema.get("additionalProperties") is False


class ToolsModel(ListTableModel[ToolRow]):
    """Tools of every server (from ``tools/list``), with the rule in force for each."""

    columns = COLUMNS

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[ToolRow] = []
        self.errors: dict[str, str] = {}
        self.policy: Policy | None = None
        self._risks: dict[tuple[str, str], Risk] = {}

    def set_catalog(self, catalog: Mapping[str, ServerTools]) -> None:
        self.beginResetModel()
        self.rows = []
        self.errors = {}
        for server, listing in catalog.items():
            if listing.error:
                self.errors[server] = listing.error
            for tool, risk in zip(listing.tools, listing.risks, strict=True):
                description = tool.get("description")
                self.rows.append(
                    ToolRow(
                        server,
                        str(tool["name"]),
                        description.strip() if isinstance(description, str) else "",
                        risk,
                    )
                )
        self._risks = {(r.server, r.name): r.risk for r in self.rows}
        self.endResetModel()

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        if self.rows:
            self.dataChanged.emit(self.index(0, RULE), self.index(len(self.rows) - 1, RULE))

    def risk(self, server: str, tool: str) -> Risk | None:
        return self._risks.get((server, tool))

    def tool_count(self, server: str) -> int:
        return sum(1 for r in self.rows if r.server == server)

    def items(self) -> Sequence[ToolRow]:
        return self.rows

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        row = self.item_at(index)
        if row is None:
            return None
        column = index.column()
        if role == ToolRole:
            return row
        if role == Qt.ItemDataRole.DisplayRole:
            if column == SERVER:
                return row.server
            if column == TOOL:
                return row.name
            if column == RISK:
                return f"{row.risk.level.value} · {row.risk.category.value}"
            if column == RULE:
                action, origin = effective_rule_text(self.policy, row.server, row.name)
                return f"{action} · {origin}"
            if column == DESCRIPTION:
                return row.description.splitlines()[0] if row.description else ""
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == RISK:
                return QBrush(QColor(_LEVEL_COLOURS.get(row.risk.level.value, "#555")))
            if column == RULE:
                action, _ = effective_rule_text(self.policy, row.server, row.name)
                colour = _ACTION_COLOURS.get(action.split()[0] if action != "hide" else "deny")
                return QBrush(QColor(colour)) if colour else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == RISK:
                return "\n".join(f"{s.source}: {s.detail}" for s in row.risk.signals) or None
            if column == DESCRIPTION:
                return row.description or None
        return None


class _ToolsFilter(QSortFilterProxyModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._text = ""

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._text = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        if not self._text:
            return True
        model = self.sourceModel()
        assert isinstance(model, ToolsModel)
        row = model.rows[source_row]
        return self._text in f"{row.server}/{row.name}\n{row.description}".lower()


_CHOICES = (
    ("Allow", "allow"),
    ("Ask every time", "ask"),
    ("Deny", "deny"),
    ("Rate limit", "limit"),
    ("Hide from agents (and deny)", "hide"),
)
_WINDOWS = ("second", "minute", "hour", "day")


class RuleEditor(QWidget):
    """The rule control for one tool."""

    def __init__(self, on_rule: RuleChange, on_remove: Callable[[str, str], None]) -> None:
        super().__init__()
        self._on_rule = on_rule
        self._on_remove = on_remove
        self._row: ToolRow | None = None
        self.title = QLabel("Select a tool")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.in_force = QLabel()
        self.in_force.setWordWrap(True)
        self.signals = QLabel()
        self.signals.setWordWrap(True)
        self.signals.setStyleSheet("color: #555;")
        self.action = QComboBox()
        for label, value in _CHOICES:
            self.action.addItem(label, value)
        self.count = QSpinBox()
        self.count.setRange(1, 1_000_000)
        self.count.setValue(60)
        self.per = QComboBox()
        self.per.addItems(_WINDOWS)
        self.per.setCurrentText("minute")
        limit = QHBoxLayout()
        limit.addWidget(self.count)
        limit.addWidget(QLabel("calls per"))
        limit.addWidget(self.per)
        limit.addStretch(1)
        self.limit_row = QWidget()
        self.limit_row.setLayout(limit)
        self.reason = QLineEdit(placeholderText="Reason the agent is told (optional)")
        self.apply = QPushButton("Apply rule")
        self.apply.clicked.connect(self._apply)
        self.remove = QPushButton("Remove this tool's rule")
        self.remove.setToolTip("The default or a pattern decides again")
        self.remove.clicked.connect(self._remove)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.action.currentIndexChanged.connect(self._action_changed)
        form = QFormLayout()
        form.addRow("Rule", self.action)
        form.addRow("Limit", self.limit_row)
        form.addRow("Reason", self.reason)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.in_force)
        layout.addWidget(self.signals)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.show_tool(None, None)

    def _action_changed(self) -> None:
        self.limit_row.setEnabled(self.action.currentData() == "limit")

    def show_tool(self, row: ToolRow | None, policy: Policy | None) -> None:
        self._row = row
        for widget in (self.action, self.reason, self.apply, self.remove, self.limit_row):
            widget.setEnabled(row is not None)
        if row is None:
            self.title.setText("<i>Select a tool to set its rule</i>")
            self.in_force.clear()
            self.signals.clear()
            return
        self.title.setText(f"<b>{row.server}/{row.name}</b><br>{_short(row.description)}")
        action, origin = effective_rule_text(policy, row.server, row.name)
        self.in_force.setText(f"In force now: <b>{action}</b>, from {origin}")
        risk = row.risk
        self.signals.setText(
            f"Risk {risk.level.value} ({risk.category.value}): "
            + ("; ".join(f"{s.source} {s.detail}" for s in risk.signals) or "no signals")
        )
        choice = {"rate limit": "limit"}.get(action, action)
        index = self.action.findData(choice)
        if index >= 0:
            self.action.setCurrentIndex(index)
        rule = policy.rule_for(row.server, row.name) if policy else None
        self.reason.setText(rule.reason if rule and rule.reason else "")
        if rule and rule.limits:
            self.count.setValue(rule.limits[0].max)
        self._action_changed()
        self.status.clear()

    def changes(self) -> dict[str, Any]:
        """The rule the control shows, as changes to the tool's rule in policy.json."""
        choice = self.action.currentData()
        assert self._row is not None
        change: dict[str, Any] = {"limits": None, "hide": None}
        if choice == "limit":
            counter = f"{self._row.server}/{self._row.name}"
            change.update(
                action="allow",
                limits=[rate_limit(counter, self.count.value(), self.per.currentText())],
            )
        elif choice == "hide":
            change.update(action="deny", hide=True)
        else:
            change["action"] = choice
        reason = self.reason.text().strip()
        if reason:
            change["reason"] = reason
        return change

    def _remove(self) -> None:
        if self._row is not None:
            self.status.setText("Saving…")
            self._on_remove(self._row.server, self._row.name)

    def _apply(self) -> None:
        if self._row is not None:
            self.status.setText("Saving…")
            self._on_rule(self._row.server, self._row.name, self.changes())


class ToolsView(QWidget):
    def __init__(
        self,
        model: ToolsModel,
        on_rule: RuleChange,
        on_remove: Callable[[str, str], None],
        on_refresh: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.proxy = _ToolsFilter(self)
        self.proxy.setSourceModel(model)
        self.filter_box = QLineEdit(placeholderText="Filter tools")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.textChanged.connect(self.proxy.set_text)
        self.refresh = QPushButton("List tools again")
        self.refresh.setToolTip("Start each server and ask it for its tools")
        self.refresh.clicked.connect(on_refresh)
        self.errors = QLabel()
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("color: #c62828;")
        top = QHBoxLayout()
        top.addWidget(self.filter_box, 1)
        top.addWidget(self.refresh)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column, width in ((SERVER, 110), (TOOL, 200), (RISK, 130), (RULE, 260)):
            header.resizeSection(column, width)
        header.setSectionResizeMode(DESCRIPTION, QHeaderView.ResizeMode.Stretch)
        self.editor = RuleEditor(on_rule, on_remove)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        splitter = QSplitter()
        splitter.addWidget(self.table)
        splitter.addWidget(self.editor)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.errors)
        layout.addWidget(splitter, 1)
        model.modelReset.connect(self._reset)
        model.dataChanged.connect(lambda *_: self._selected(QItemSelection(), QItemSelection()))
        self._reset()

    def _reset(self) -> None:
        errors = self.model.errors
        self.errors.setText(
            "\n".join(f"{server}: {error}" for server, error in sorted(errors.items()))
        )
        self.errors.setVisible(bool(errors))

    def selected(self) -> ToolRow | None:
        indexes = self.table.selectionModel().selectedRows()
        row = indexes[0].data(ToolRole) if indexes else None
        return row if isinstance(row, ToolRow) else None

    def select(self, server: str, tool: str) -> bool:
        for row in range(self.proxy.rowCount()):
            found = self.proxy.index(row, 0).data(ToolRole)
            if isinstance(found, ToolRow) and (found.server, found.name) == (server, tool):
                self.table.selectRow(row)
                return True
        return False

    def _selected(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self.editor.show_tool(self.selected(), self.model.policy)


def _short(text: str, limit: int = 200) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
