"""The "Tools & rules" view: every tool of every server, its risk, its rule as a control,
and what its pin holds: a tool whose definition changed since it was accepted (or was
renamed, or is new where the policy holds new tools, or looks poisoned) is marked held,
with its poisoning findings and a "Review change…" that opens :mod:`desktop.review`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableView,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop._table import ListTableModel
from desktop.liveview import rate_limit
from desktop.review import WARNING_TEXT, findings_html, held_badge, held_sentence, visible
from proxy.gateway.pins import InstructionsChange, ToolChange
from proxy.policy.model import Action, Policy, Rule
from proxy.policy.poison import Finding, scan_tool
from proxy.policy.risk import Risk, classify
from proxy.upstream.catalog import ServerTools

__all__ = [
    "REPLAYING_TEXT",
    "RuleEditor",
    "ToolsModel",
    "ToolsView",
    "effective_rule_text",
    "scan_catalog",
    "team_rule_text",
]

# "Status" is last in the model (the columns before it keep their places) and shown
# second, right after the tool's name.
COLUMNS = ("Server", "Tool", "Risk", "Rule in force", "Description", "Status")
SERVER, TOOL, RISK, RULE, DESCRIPTION, STATUS = range(len(COLUMNS))
ToolRole = Qt.ItemDataRole.UserRole + 1

HELD_TEXT = "#b71c1c"
HELD_BACKGROUND = "#ffe0b2"
FINDINGS_TEXT = "#b26a00"

_LEVEL_COLOURS = {"low": "#2e7d32", "medium": "#b26a00", "high": "#c62828"}
_ACTION_COLOURS = {"allow": "#1b7f3b", "deny": "#c62828", "ask": "#6a1b9a"}

RuleChange = Callable[[str, str, dict[str, Any]], None]
# (server, tool, the pending changes, where the replay's line goes): what the change
# would have done to the recorded calls, said in a line (the app replays it off the GUI
# thread and answers on it)
RulePreview = Callable[[str, str, dict[str, Any], Callable[[str], None]], None]

REPLAYING_TEXT = "Replaying the last 7 days…"
REPLAY_DEBOUNCE_MS = 400  # a pending change is replayed once the person stops changing it
TEAM_BACKGROUND = "#e3f2fd"
TEAM_TEXT = "#0d47a1"


@dataclass(frozen=True)
class ToolRow:
    server: str
    name: str
    description: str
    risk: Risk
    definition: Mapping[str, Any] = field(default_factory=dict, compare=False)
    held: ToolChange | None = None  # why its pin holds it, if it does
    findings: tuple[Finding, ...] = ()  # poisoning findings of its definition now
    listed: bool = True  # False: known only as held (the last listing did not have it)
    # the description's first line as the table shows it, invisible characters written out
    first_line: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.first_line and self.description:
            object.__setattr__(self, "first_line", visible(self.description.splitlines()[0]))

    def status(self) -> str:
        if self.held is not None:
            return held_badge(self.held)
        if self.findings:
            count = len(self.findings)
            return f"⚠ {count} finding{'s' if count != 1 else ''}"
        return "pinned"


def scan_catalog(catalog: Mapping[str, ServerTools]) -> dict[tuple[str, str], tuple[Finding, ...]]:
    """Every listed tool's poisoning findings, as the gateway scans them (every other
    tool's name counts for shadowing). Pure, and not free: run it off the GUI thread."""
    names = [str(t.get("name")) for listing in catalog.values() for t in listing.tools]
    found: dict[tuple[str, str], tuple[Finding, ...]] = {}
    for server, listing in catalog.items():
        for tool in listing.tools:
            findings = scan_tool(tool, other_tools=names)
            if findings:
                found[(server, str(tool.get("name")))] = findings
    return found


def effective_rule_text(policy: Policy | None, server: str, tool: str) -> tuple[str, str]:
    """What decides calls to server/tool now: (action, where it comes from)."""
    if policy is None:
        return "?", "the policy is not loaded yet"
    rule = policy.rule_for(server, tool)
    if rule is None:
        return policy.default.value, "the default"
    return _action_of(rule), _origin(rule, server, tool)


def team_rule_text(team: Policy | None, server: str, tool: str) -> str | None:
    """What the team's layer says of server/tool, for a person ("denies this tool: no
    shell here"); None: the team has no rule for it."""
    rule = team.rule_for(server, tool) if team is not None else None
    if rule is None:
        return None
    if rule.hides:
        words = "hides this tool from agents (and denies it)"
    else:
        words = {
            Action.ALLOW: "allows this tool",
            Action.ASK: "asks a person about every call of this tool",
            Action.DENY: "denies this tool",
        }[rule.action]
    if rule.limits:
        words += ", " + " and ".join(
            f"at most {limit.max:,} calls per {_window_words(limit.window)}"
            for limit in rule.limits
        )
    words += cases_text(rule)
    return words + (f": {rule.reason}" if rule.reason else "")


def _window_words(seconds: float) -> str:
    for name, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds == length:
            return name
        if seconds % length == 0:
            return f"{int(seconds // length)} {name}s"
    return f"{seconds:g} seconds"


# how strict each action is: a team's rule stands over any looser one of policy.json
_STRICTNESS = {Action.ALLOW: 0, Action.ASK: 1, Action.DENY: 2}


def team_floor(team: Policy | None, server: str, tool: str) -> int | None:
    """The least strict action the team's rule for server/tool gives any call (a ``when``
    case of it may allow what the rule denies), as :data:`_STRICTNESS`; None: no team
    rule, anything goes."""
    rule = team.rule_for(server, tool) if team is not None else None
    if rule is None:
        return None
    return min(_STRICTNESS[a] for a in (rule.action, *(c.action for c in rule.cases)))


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
    """Tools of every server (from ``tools/list``), with the rule in force for each and
    what their pins hold; held tools the listing did not have are rows too."""

    columns = COLUMNS
    team_changed = Signal()  # the team's layer or its error changed

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[ToolRow] = []
        self.errors: dict[str, str] = {}
        self.policy: Policy | None = None
        self.instructions: list[InstructionsChange] = []
        self._risks: dict[tuple[str, str], Risk] = {}
        self._listed: list[ToolRow] = []
        self._changes: list[ToolChange] = []
        self._findings: dict[tuple[str, str], tuple[Finding, ...]] = {}
        self.team: Policy | None = None  # the team's layer, read-only here
        self.team_error: str | None = None
        self._bold = QFont()
        self._bold.setBold(True)

    def set_catalog(self, catalog: Mapping[str, ServerTools]) -> None:
        self.errors = {}
        listed = []
        for server, listing in catalog.items():
            if listing.error:
                self.errors[server] = listing.error
            for tool, risk in zip(listing.tools, listing.risks, strict=True):
                description = tool.get("description")
                listed.append(
                    ToolRow(
                        server,
                        str(tool["name"]),
                        description.strip() if isinstance(description, str) else "",
                        risk,
                        definition=tool,
                    )
                )
        self._listed = listed
        self._rebuild()

    def set_changes(
        self, tools: Sequence[ToolChange], instructions: Sequence[InstructionsChange] = ()
    ) -> bool:
        """What the pins hold now; whether it differs from what was shown."""
        if list(tools) == self._changes and list(instructions) == self.instructions:
            return False
        self._changes = list(tools)
        self.instructions = list(instructions)
        self._rebuild()
        return True

    def set_findings(self, findings: Mapping[tuple[str, str], tuple[Finding, ...]]) -> None:
        """The listed tools' poisoning findings (:func:`scan_catalog`)."""
        if dict(findings) != self._findings:
            self._findings = dict(findings)
            self._rebuild()

    def _rebuild(self) -> None:
        self.beginResetModel()
        held = {(c.server, c.tool): c for c in self._changes}
        rows = []
        for row in self._listed:
            key = (row.server, row.name)
            change = held.pop(key, None)
            if change is None:
                findings = self._findings.get(key, ())
                rows.append(replace(row, findings=findings) if findings else row)
                continue
            if change.new is not None and change.new != row.definition:
                # the listing is older than what the pins saw (a client listed since):
                # the row shows what is held
                rows.append(_held_row(row.server, row.name, change, listed=True))
            else:
                rows.append(replace(row, held=change, findings=change.findings))
        for (server, tool), change in sorted(held.items()):
            rows.append(_held_row(server, tool, change, listed=False))
        self.rows = rows
        self._risks = {(r.server, r.name): r.risk for r in rows}
        self.endResetModel()

    def change(self, server: str, tool: str) -> ToolChange | None:
        """Why ``server``/``tool`` is held now, or None."""
        return next((c for c in self._changes if (c.server, c.tool) == (server, tool)), None)

    def instructions_change(self, server: str) -> InstructionsChange | None:
        return next((c for c in self.instructions if c.server == server), None)

    def held(self) -> list[ToolChange]:
        return list(self._changes)

    def set_policy(
        self, policy: Policy, team: Policy | None = None, team_error: str | None = None
    ) -> None:
        """policy.json's policy, and the team's layer above it (read-only: policy.json
        cannot loosen it) and why the team's file is not it, if it is not."""
        self.policy = policy
        if (team, team_error) != (self.team, self.team_error):
            self.team, self.team_error = team, team_error
            self.team_changed.emit()
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
                theirs = self.team.rule_for(row.server, row.name) if self.team else None
                team = f" · team: {_action_of(theirs)}" if theirs is not None else ""
                return f"{action} · {origin}{team}"
            if column == DESCRIPTION:
                return row.first_line
            if column == STATUS:
                return row.status()
        if column == STATUS and role == Qt.ItemDataRole.BackgroundRole:
            return QBrush(QColor(HELD_BACKGROUND)) if row.held is not None else None
        if column == STATUS and role == Qt.ItemDataRole.FontRole:
            return self._bold if row.held is not None else None
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == STATUS:
                status = HELD_TEXT if row.held else FINDINGS_TEXT if row.findings else "#777"
                return QBrush(QColor(status))
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
            if column == STATUS:
                return _status_tooltip(row)
            if column == RULE:
                said = team_rule_text(self.team, row.server, row.name)
                return f"The team's policy {said}. policy.json cannot loosen it." if said else None
        return None


def _held_row(server: str, tool: str, change: ToolChange, *, listed: bool) -> ToolRow:
    """A row for a held tool, from what its pin holds."""
    definition = dict(change.new) if change.new is not None else {"name": tool}
    said = definition.get("description")
    return ToolRow(
        server,
        tool,
        said.strip() if isinstance(said, str) else "",
        classify(definition),
        definition=definition,
        held=change,
        findings=change.findings,
        listed=listed,
    )


def _status_tooltip(row: ToolRow) -> str:
    if row.held is not None:
        return (
            f"Held: {held_sentence(row.held.kind, row.held.renamed_from)}. Agents do not see "
            "it and its calls are refused until you review it (double-click)."
        )
    if row.findings:
        kinds = ", ".join(sorted({f.kind.replace("_", " ") for f in row.findings}))
        return f"Poisoning findings: {kinds} (see the details)"
    return "Its definition is the one accepted"


class _ToolsFilter(QSortFilterProxyModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._held_only = False

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._text = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_held_only(self, on: bool) -> None:
        self.beginFilterChange()
        self._held_only = on
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        model = self.sourceModel()
        assert isinstance(model, ToolsModel)
        row = model.rows[source_row]
        if self._held_only and row.held is None:
            return False
        if not self._text:
            return True
        return self._text in f"{row.server}/{row.name}\n{row.status()}\n{row.description}".lower()


_CHOICES = (
    ("Allow", "allow"),
    ("Ask every time", "ask"),
    ("Deny", "deny"),
    ("Rate limit", "limit"),
    ("Hide from agents (and deny)", "hide"),
)
_WINDOWS = ("second", "minute", "hour", "day")
_CHOICE_STRICTNESS = {"allow": 0, "limit": 0, "ask": 1, "deny": 2, "hide": 2}


class RuleEditor(QWidget):
    """The rule control for one tool, what its pin holds and its poisoning findings."""

    def __init__(
        self,
        on_rule: RuleChange,
        on_remove: Callable[[str, str], None],
        on_review: Callable[[str, str], None] | None = None,
        on_preview: RulePreview | None = None,
    ) -> None:
        """``on_preview``: replay a pending change (the form differs from the rule in
        force) over the recorded calls; its line shows under the controls, and "Apply
        rule" is the person confirming it."""
        super().__init__()
        self._on_rule = on_rule
        self._on_remove = on_remove
        self._on_review = on_review
        self._on_preview = on_preview
        self._row: ToolRow | None = None
        self._shown: dict[str, Any] | None = None  # the form as show_tool filled it
        self._filling = False  # show_tool is filling the form: no pending change
        self._asked = 0  # the replay asked last: an answer to an older one is stale
        self._replay_timer = QTimer(self)
        self._replay_timer.setSingleShot(True)
        self._replay_timer.setInterval(REPLAY_DEBOUNCE_MS)
        self._replay_timer.timeout.connect(self._replay)
        self.title = QLabel("Select a tool")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.in_force = QLabel()
        self.in_force.setWordWrap(True)
        self.signals = QLabel()
        self.signals.setWordWrap(True)
        self.signals.setStyleSheet("color: #555;")
        self.held = QLabel()
        self.held.setObjectName("heldNote")
        self.held.setWordWrap(True)
        self.held.setStyleSheet(
            f"QLabel#heldNote {{ background: {HELD_BACKGROUND}; color: {HELD_TEXT};"
            " padding: 6px; border-radius: 4px; }"
        )
        self.review = QPushButton("Review change…")
        self.review.setObjectName("reviewChange")
        self.review.setToolTip("The accepted definition and the new one side by side")
        self.review.clicked.connect(self._review)
        self.findings_title = QLabel()
        self.findings = QTextBrowser()
        self.findings.setObjectName("toolFindings")
        self.findings.setOpenLinks(False)
        self.findings.setMinimumHeight(160)
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
        # the team's rule for the tool, which policy.json cannot loosen
        self.team = QLabel()
        self.team.setObjectName("teamRule")
        self.team.setWordWrap(True)
        self.team.setTextFormat(Qt.TextFormat.RichText)
        self.team.setStyleSheet(
            f"QLabel#teamRule {{ background: {TEAM_BACKGROUND}; color: {TEAM_TEXT};"
            " padding: 6px; border-radius: 4px; }"
        )
        self.team.hide()
        # what the pending change would have done to the last 7 days' calls
        self.replay = QLabel()
        self.replay.setObjectName("replaySummary")
        self.replay.setWordWrap(True)
        self.replay.setStyleSheet(
            "QLabel#replaySummary { background: #eceff1; color: #263238; padding: 6px;"
            " border-radius: 4px; }"
        )
        self.replay.hide()
        self.action.currentIndexChanged.connect(self._action_changed)
        self.action.currentIndexChanged.connect(self._form_changed)
        self.count.valueChanged.connect(self._form_changed)
        self.per.currentIndexChanged.connect(self._form_changed)
        self.reason.textChanged.connect(self._form_changed)
        form = QFormLayout()
        form.addRow("Rule", self.action)
        form.addRow("Limit", self.limit_row)
        form.addRow("Reason", self.reason)
        buttons = QHBoxLayout()
        buttons.addWidget(self.apply)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        review = QHBoxLayout()
        review.addWidget(self.review)
        review.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.held)
        layout.addLayout(review)
        layout.addWidget(self.in_force)
        layout.addWidget(self.team)
        layout.addWidget(self.signals)
        layout.addLayout(form)
        layout.addWidget(self.replay)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.findings_title)
        layout.addWidget(self.findings, 1)
        self._stretch = QWidget()  # takes the room when there are no findings to show
        layout.addWidget(self._stretch, 1)
        self.show_tool(None, None)

    def _action_changed(self) -> None:
        self.limit_row.setEnabled(self.action.currentData() == "limit")

    def show_tool(
        self,
        row: ToolRow | None,
        policy: Policy | None,
        *,
        keep_form: bool = False,
        team: Policy | None = None,
    ) -> None:
        """Show ``row``'s tool under ``policy`` (policy.json's) and ``team`` (the team's
        layer). ``keep_form``: the same tool again, after its pins or its findings
        changed: what the person is choosing or typing in the form stays."""
        shown = self._row
        same = (
            row is not None
            and shown is not None
            and (shown.server, shown.name) == (row.server, row.name)
        )
        self._row = row
        for widget in (self.action, self.reason, self.apply, self.remove, self.limit_row):
            widget.setEnabled(row is not None)
        self._show_pin(row)
        self._show_team(row, team)
        if row is None:
            self.title.setText("<i>Select a tool to set its rule</i>")
            self.in_force.clear()
            self.signals.clear()
            self._shown = None
            self._no_replay()
            return
        self.title.setText(
            f"<b>{_esc(row.server)}/{_esc(row.name)}</b><br>"
            f"{_esc(_short(visible(row.description), 160))}"
        )
        action, origin = effective_rule_text(policy, row.server, row.name)
        self.in_force.setText(f"In force now: <b>{action}</b>, from {origin}")
        risk = row.risk
        self.signals.setText(
            f"Risk {risk.level.value} ({risk.category.value}): "
            + ("; ".join(f"{s.source} {s.detail}" for s in risk.signals) or "no signals")
        )
        if keep_form and same:
            return
        self._filling = True
        try:
            choice = {"rate limit": "limit"}.get(action, action)
            index = self.action.findData(choice)
            if index >= 0:
                self.action.setCurrentIndex(index)
            rule = policy.rule_for(row.server, row.name) if policy else None
            self.reason.setText(rule.reason if rule and rule.reason else "")
            if rule and rule.limits:
                self.count.setValue(rule.limits[0].max)
        finally:
            self._filling = False
        self._action_changed()
        self._shown = self.changes()
        self._no_replay()
        self.status.clear()

    def _show_team(self, row: ToolRow | None, team: Policy | None) -> None:
        """The team's rule for the tool, read-only: the choices that would loosen it are
        not offered (the team's rule would stand whatever this one says)."""
        said = team_rule_text(team, row.server, row.name) if row is not None else None
        floor = team_floor(team, row.server, row.name) if row is not None else None
        items = self.action.model()
        assert isinstance(items, QStandardItemModel)
        looser = []
        for number, (label, value) in enumerate(_CHOICES):
            item = items.item(number)
            allowed = floor is None or _CHOICE_STRICTNESS[value] >= floor
            item.setEnabled(allowed)
            item.setToolTip(
                "" if allowed else "The team's policy is stricter: this would not loosen it"
            )
            if not allowed:
                looser.append(label.lower())
        self.team.setVisible(said is not None)
        if said is None or team is None:
            self.team.clear()
            return
        where = team.source or "the team's file"
        text = f"<b>The team's policy</b> ({_esc(where)}) {_esc(said)}."
        if looser:
            text += (
                f" It stands whatever your rule says: {_esc(', '.join(looser))} would not "
                "loosen it, so "
                + ("it is" if len(looser) == 1 else "they are")
                + " not offered. You may still make it stricter."
            )
        else:
            text += " It stands whatever your rule says; yours may add to it, not loosen it."
        self.team.setText(text)

    def pending(self) -> bool:
        """Whether the form shows a change from the rule show_tool filled it with."""
        return self._row is not None and self._shown is not None and self.changes() != self._shown

    def _form_changed(self) -> None:
        if self._filling or self._on_preview is None:
            return
        self._asked += 1  # whatever was being replayed is not what the form shows now
        if not self.pending():
            self._no_replay()
            return
        self.replay.setText(REPLAYING_TEXT)
        self.replay.show()
        self._replay_timer.start()

    def _replay(self) -> None:
        row, on_preview = self._row, self._on_preview
        if row is None or on_preview is None or not self.pending():
            return
        asked = self._asked
        on_preview(row.server, row.name, self.changes(), lambda said: self._replayed(asked, said))

    def _replayed(self, asked: int, said: str) -> None:
        if asked != self._asked:
            return  # the form changed since: a newer replay is coming, or none is needed
        self.replay.setText(said)
        self.replay.show()

    def _no_replay(self) -> None:
        self._asked += 1
        self._replay_timer.stop()
        self.replay.clear()
        self.replay.hide()

    def _show_pin(self, row: ToolRow | None) -> None:
        held = row.held if row is not None else None
        self.held.setVisible(held is not None)
        self.review.setVisible(held is not None and self._on_review is not None)
        if held is not None:
            self.held.setText(
                f"<b>Held:</b> {_esc(held_sentence(held.kind, held.renamed_from))}. Agents do "
                "not see it and its calls are refused until you review it."
            )
            self.review.setText(
                "Review renamed tool…"
                if held.kind == "renamed"
                else "Review new tool…"
                if held.old is None
                else "Review change…"
            )
        findings = row.findings if row is not None else ()
        shown = bool(findings)
        self.findings_title.setVisible(shown)
        self.findings.setVisible(shown)
        self._stretch.setVisible(not shown)
        if shown and row is not None:
            count = len(findings)
            self.findings_title.setText(
                f"<b style='color:{WARNING_TEXT};'>{count} poisoning finding"
                f"{'s' if count != 1 else ''}</b> in its definition"
            )
            self.findings.setHtml(findings_html(row.definition, findings))
        else:
            self.findings.clear()

    def _review(self) -> None:
        if self._row is not None and self._row.held is not None and self._on_review:
            self._on_review(self._row.server, self._row.name)

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
            # confirmed: a replay still to come would be of the policy it makes
            if self.replay.text() == REPLAYING_TEXT:
                self._no_replay()
            self._asked += 1
            self._replay_timer.stop()
            self.status.setText("Saving…")
            self._on_rule(self._row.server, self._row.name, self.changes())


class ToolsView(QWidget):
    """The table of tools, a line for what is held above it, the details beside it.

    ``on_review(server, tool)`` opens the review of a held tool (the details' button, or
    a double-click on its row); ``on_review_instructions(server)`` that of a server's
    held instructions (a button on their line above the table)."""

    def __init__(
        self,
        model: ToolsModel,
        on_rule: RuleChange,
        on_remove: Callable[[str, str], None],
        on_refresh: Callable[[], None],
        parent: QWidget | None = None,
        *,
        on_review: Callable[[str, str], None] | None = None,
        on_review_instructions: Callable[[str], None] | None = None,
        on_preview: RulePreview | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self._on_review = on_review
        self._on_review_instructions = on_review_instructions
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
        self.held_only = QCheckBox("Held only")
        self.held_only.setToolTip("Show only the tools Lockgate holds until you review them")
        self.held_only.toggled.connect(self.proxy.set_held_only)
        self.held_summary = QLabel()
        self.held_summary.setObjectName("heldSummary")
        self.held_summary.setWordWrap(True)
        self.held_summary.setStyleSheet(
            f"QLabel#heldSummary {{ background: {HELD_BACKGROUND}; color: {HELD_TEXT};"
            " padding: 6px; border-radius: 4px; }"
        )
        self.team_banner = QLabel()  # the team's policy cannot be used as it is
        self.team_banner.setObjectName("teamError")
        self.team_banner.setWordWrap(True)
        self.team_banner.setStyleSheet(
            "QLabel#teamError { background: #fdecea; color: #8e0000; padding: 6px;"
            " border-radius: 4px; }"
        )
        self.team_banner.hide()
        model.team_changed.connect(self._show_team_error)
        self.instructions_box = QWidget()
        self._instructions_lines = QVBoxLayout(self.instructions_box)
        self._instructions_lines.setContentsMargins(0, 0, 0, 0)
        self.instruction_buttons: dict[str, QPushButton] = {}
        top = QHBoxLayout()
        top.addWidget(self.filter_box, 1)
        top.addWidget(self.held_only)
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
        header.moveSection(header.visualIndex(STATUS), TOOL + 1)
        widths = ((SERVER, 90), (TOOL, 165), (STATUS, 150), (RISK, 110), (RULE, 190))
        for column, width in widths:
            header.resizeSection(column, width)
        header.setSectionResizeMode(DESCRIPTION, QHeaderView.ResizeMode.Stretch)
        self.editor = RuleEditor(on_rule, on_remove, on_review, on_preview)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        self.table.doubleClicked.connect(self._double_clicked)
        splitter = QSplitter()
        splitter.addWidget(self.table)
        # the details scroll rather than squeeze: a held tool with findings has much to say
        details = QScrollArea()
        details.setWidgetResizable(True)
        details.setFrameShape(QFrame.Shape.NoFrame)
        details.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        details.setWidget(self.editor)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.errors)
        layout.addWidget(self.team_banner)
        layout.addWidget(self.held_summary)
        layout.addWidget(self.instructions_box)
        layout.addWidget(splitter, 1)
        self._kept: tuple[str, str] | None = None  # the selection, across a reset
        self._restoring = False
        model.modelAboutToBeReset.connect(self._keep_selection)
        model.modelReset.connect(self._reset)
        model.dataChanged.connect(lambda *_: self._selected(QItemSelection(), QItemSelection()))
        self._reset()

    def _show_team_error(self) -> None:
        error = self.model.team_error
        self.team_banner.setText(f"The team's policy: {error}" if error else "")
        self.team_banner.setVisible(bool(error))

    def _keep_selection(self) -> None:
        row = self.selected()
        self._kept = (row.server, row.name) if row is not None else None

    def _reset(self) -> None:
        errors = self.model.errors
        self.errors.setText(
            "\n".join(f"{server}: {error}" for server, error in sorted(errors.items()))
        )
        self.errors.setVisible(bool(errors))
        held = self.model.held()
        if held:
            names = ", ".join(f"{c.server}/{c.tool}" for c in held[:4])
            more = f" and {len(held) - 4} more" if len(held) > 4 else ""
            self.held_summary.setText(
                f"<b>Lockgate holds {len(held)} tool{'s' if len(held) != 1 else ''}</b> "
                f"({_esc(names)}{more}): agents do not see {'them' if len(held) != 1 else 'it'}"
                " and calls are refused until you review. Select one and click Review, or "
                "double-click it."
            )
        self.held_summary.setVisible(bool(held))
        self._show_instructions(self.model.instructions)
        if self._kept is not None:
            self._restoring = True  # the same tool again: its form stays as the person left it
            try:
                self.select(*self._kept)
            finally:
                self._restoring = False
            self._kept = None

    def _show_instructions(self, changes: Iterable[InstructionsChange]) -> None:
        """One line per server whose instructions are held, above the table."""
        while self._instructions_lines.count():
            item = self._instructions_lines.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.instruction_buttons = {}
        for change in changes:
            line = QWidget()
            line.setObjectName("heldInstructions")
            line.setStyleSheet(
                f"QWidget#heldInstructions {{ background: {HELD_BACKGROUND}; border-radius: 4px; }}"
            )
            row = QHBoxLayout(line)
            row.setContentsMargins(6, 2, 6, 2)
            label = QLabel(
                f"<b>{_esc(change.server)}'s instructions are held:</b> "
                f"{_esc(held_sentence(change.kind, what='their'))}. Agents are not given them "
                "until you review them."
            )
            label.setStyleSheet(f"color: {HELD_TEXT};")
            label.setWordWrap(True)
            button = QPushButton("Review instructions…")
            server = change.server
            button.clicked.connect(lambda _=False, s=server: self._review_instructions(s))
            row.addWidget(label, 1)
            row.addWidget(button)
            self.instruction_buttons[server] = button
            self._instructions_lines.addWidget(line)
        self.instructions_box.setVisible(bool(self.instruction_buttons))

    def _review_instructions(self, server: str) -> None:
        if self._on_review_instructions is not None:
            self._on_review_instructions(server)

    def _double_clicked(self, index: QModelIndex) -> None:
        row = index.data(ToolRole)
        if isinstance(row, ToolRow) and row.held is not None and self._on_review is not None:
            self._on_review(row.server, row.name)

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
        self.editor.show_tool(
            self.selected(), self.model.policy, keep_form=self._restoring, team=self.model.team
        )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(text: str, limit: int = 200) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
