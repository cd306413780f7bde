"""The "Servers" view: each upstream with its state, tool count, last error and a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop._table import ListTableModel
from proxy.config.servers import HttpServer, ServerSpec, StdioServer
from proxy.gateway.events import UpstreamDown, UpstreamUp

__all__ = ["ServerActions", "ServersModel", "ServersView"]

COLUMNS = ("Server", "Runs", "State", "Tools", "Last error")
NAME, TARGET, STATE, TOOLS, ERROR = range(len(COLUMNS))


@dataclass
class ServerState:
    spec: ServerSpec
    live: set[str] = field(default_factory=set)  # sessions whose upstream is up
    down: int = 0  # sessions whose upstream crashed and is not back
    last_error: str | None = None
    tools: int | None = None
    listing_error: str | None = None
    disabled: bool = False  # turned off in servers.json: listed, not served
    sign_in: str | None = None  # a remote server's OAuth state (None: it does not sign in)
    sign_in_why: str | None = None

    @property
    def signs_in(self) -> bool:
        return self.sign_in is not None

    @property
    def state(self) -> str:
        if self.disabled:
            return "turned off"
        if self.sign_in == "needs_sign_in":
            return "needs sign-in"
        if self.down:
            return "down"
        if self.live:
            return f"up ({len(self.live)} session{'s' if len(self.live) != 1 else ''})"
        if self.listing_error:
            return "failed to start"
        return "idle"


def _target(spec: ServerSpec) -> str:
    if isinstance(spec, StdioServer):
        return " ".join([spec.command, *spec.args])
    assert isinstance(spec, HttpServer)
    return spec.url


class ServersModel(ListTableModel[ServerState]):
    columns = COLUMNS

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.servers: list[ServerState] = []
        self._by_name: dict[str, ServerState] = {}
        self._crashed: dict[str, set[str]] = {}

    def set_servers(
        self, specs: Mapping[str, ServerSpec], disabled: Mapping[str, ServerSpec] | None = None
    ) -> None:
        """The servers in force, and those turned off; a server that stays keeps its state
        (sessions, errors)."""
        self.beginResetModel()
        kept = self._by_name
        self.servers = []
        every = {**(disabled or {}), **specs}
        for name, spec in sorted(every.items()):
            state = kept.get(name) or ServerState(spec)
            state.spec = spec
            state.disabled = name not in specs
            self.servers.append(state)
        self._by_name = {s.spec.name: s for s in self.servers}
        self.endResetModel()

    def set_tools(self, server: str, count: int | None, error: str | None) -> None:
        state = self._by_name.get(server)
        if state is not None:
            if error is None and state.last_error == state.listing_error:
                state.last_error = None  # it lists now: that error is over (a sign-in, say)
            state.tools, state.listing_error = count, error
            if error:
                state.last_error = error
            self._changed(state)

    def apply(self, events: Iterable[object]) -> bool:
        """Returns whether any server went down in this batch."""
        touched: set[str] = set()
        went_down = False
        for event in events:
            if isinstance(event, UpstreamUp):
                state = self._by_name.get(event.server)
                if state is not None:
                    state.live.add(event.session)
                    crashed = self._crashed.setdefault(event.server, set())
                    crashed.discard(event.session)
                    state.down = len(crashed)
                    touched.add(event.server)
            elif isinstance(event, UpstreamDown):
                state = self._by_name.get(event.server)
                if state is not None:
                    state.live.discard(event.session)
                    crashed = self._crashed.setdefault(event.server, set())
                    if event.error is None:
                        crashed.discard(event.session)
                    else:
                        crashed.add(event.session)
                        state.last_error = event.error
                        went_down = True
                    state.down = len(crashed)
                    touched.add(event.server)
        for name in touched:
            self._changed(self._by_name[name])
        return went_down

    def set_sign_in(self, states: Mapping[str, tuple[str, str | None]]) -> None:
        """Each remote server's sign-in (state, why); a server not named signs in to none."""
        for state in self.servers:
            state.sign_in, state.sign_in_why = states.get(state.spec.name, (None, None))
            self._changed(state)

    def signs_in(self, server: str) -> bool:
        state = self._by_name.get(server)
        return state is not None and state.signs_in

    def forget_crashes(self, server: str) -> None:
        state = self._by_name.get(server)
        if state is not None:
            self._crashed.pop(server, None)
            state.down = 0
            self._changed(state)

    def down_count(self) -> int:
        return sum(1 for s in self.servers if s.down)

    def _changed(self, state: ServerState) -> None:
        row = self.servers.index(state)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def items(self) -> Sequence[ServerState]:
        return self.servers

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        state = self.item_at(index)
        if state is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == NAME:
                return state.spec.name
            if column == TARGET:
                return _target(state.spec)
            if column == STATE:
                return state.state
            if column == TOOLS:
                return "" if state.tools is None else str(state.tools)
            if column == ERROR:
                if state.sign_in == "needs_sign_in" and state.sign_in_why:
                    return f"sign in to use it: {state.sign_in_why}"
                return (state.last_error or "").splitlines()[0] if state.last_error else ""
        if role == Qt.ItemDataRole.ForegroundRole and state.disabled:
            return QBrush(QColor("#888"))
        if role == Qt.ItemDataRole.ForegroundRole and column == STATE:
            if state.sign_in == "needs_sign_in":
                return QBrush(QColor("#b26a00"))
            if state.down or state.listing_error:
                return QBrush(QColor("#c62828"))
            if state.live:
                return QBrush(QColor("#1b7f3b"))
        if role == Qt.ItemDataRole.ToolTipRole and column in (ERROR, TARGET):
            return state.last_error if column == ERROR else _target(state.spec)
        return None


@dataclass(frozen=True)
class ServerActions:
    """What the view's buttons ask of the app, each with the server's name."""

    restart: Callable[[str], None]
    open_log: Callable[[str], None]
    add: Callable[[], None]
    edit: Callable[[str], None]
    set_disabled: Callable[[str, bool], None]
    remove: Callable[[str], None]
    sign_in: Callable[[str], None]


class ServersView(QWidget):
    def __init__(
        self,
        model: ServersModel,
        actions: ServerActions,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self._actions = actions
        self.table = QTableView()
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.doubleClicked.connect(lambda _index: self._edit())
        header = self.table.horizontalHeader()
        for column, width in ((NAME, 120), (TARGET, 330), (STATE, 130), (TOOLS, 60)):
            header.resizeSection(column, width)
        header.setSectionResizeMode(ERROR, QHeaderView.ResizeMode.Stretch)
        self.add = QPushButton("Add server…")
        self.add.setToolTip("Fill in a form, or paste an entry from a client's docs")
        self.add.clicked.connect(actions.add)
        self.edit = QPushButton("Change…")
        self.edit.clicked.connect(self._edit)
        self.toggle = QPushButton("Turn off")
        self.toggle.setToolTip(
            'Keeps it in servers.json ("disabled": true) but serves it to no agent'
        )
        self.toggle.clicked.connect(self._toggle)
        self.remove = QPushButton("Remove…")
        self.remove.clicked.connect(self._ask_remove)
        self.restart = QPushButton("Restart server")
        self.restart.setToolTip(
            "Stop every connection to it; each starts again on its next request"
        )
        self.restart.clicked.connect(self._restart)
        self.sign_in = QPushButton("Sign in…")
        self.sign_in.setToolTip(
            "Opens the server's sign-in page in your browser; Lockgate keeps the sign-in "
            "in the OS keyring and renews it"
        )
        self.sign_in.clicked.connect(self._sign_in)
        self.open_log = QPushButton("Open its log")
        self.open_log.setToolTip("What the server wrote to its error output (stderr)")
        self.open_log.clicked.connect(self._open_log)
        self._for_one = (
            self.edit,
            self.toggle,
            self.remove,
            self.restart,
            self.sign_in,
            self.open_log,
        )
        for button in self._for_one:
            button.setEnabled(False)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        model.modelReset.connect(self._selection_changed)
        # Removing asks once more, in the view itself (a dialog would block the app).
        self.confirm = QWidget()
        self.confirm.setObjectName("confirmRemove")
        self.confirm_text = QLabel()
        self.confirm_yes = QPushButton("Remove")
        self.confirm_yes.setStyleSheet("color: #c62828;")
        self.confirm_yes.clicked.connect(self._remove)
        confirm_no = QPushButton("Keep it")
        confirm_no.clicked.connect(self.confirm.hide)
        confirm_row = QHBoxLayout(self.confirm)
        confirm_row.setContentsMargins(0, 0, 0, 0)
        confirm_row.addWidget(self.confirm_text, 1)
        confirm_row.addWidget(confirm_no)
        confirm_row.addWidget(self.confirm_yes)
        self.confirm.hide()
        self._removing: str | None = None
        self.note = QLabel(
            "Servers come from servers.json (edit it here or by hand: both are checked the "
            "same way). Lockgate starts one connection per agent session, when the agent "
            "connects."
        )
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")
        self.status = QLabel()
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        for button in (self.add, self.edit, self.toggle, self.remove):
            buttons.addWidget(button)
        buttons.addSpacing(16)
        buttons.addWidget(self.restart)
        buttons.addWidget(self.sign_in)
        buttons.addWidget(self.open_log)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.confirm)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

    def select(self, server: str) -> None:
        for row, state in enumerate(self.model.servers):
            if state.spec.name == server:
                self.table.selectRow(row)

    def _selected(self) -> ServerState | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.servers[rows[0].row()] if rows else None

    def _selection_changed(self) -> None:
        selected = self._selected()
        for button in self._for_one:
            button.setEnabled(selected is not None)
        if selected is None:
            return
        self.toggle.setText("Turn on" if selected.disabled else "Turn off")
        self.restart.setEnabled(not selected.disabled)
        # Only a command's output is kept; a remote server has none here.
        self.open_log.setEnabled(isinstance(selected.spec, StdioServer))
        self.sign_in.setEnabled(selected.signs_in and not selected.disabled)
        self.sign_in.setText("Sign in again…" if selected.sign_in == "signed_in" else "Sign in…")

    def _edit(self) -> None:
        selected = self._selected()
        if selected is not None:
            self._actions.edit(selected.spec.name)

    def _toggle(self) -> None:
        selected = self._selected()
        if selected is not None:
            name = selected.spec.name
            self.status.setText(f"Turning {name} {'on' if selected.disabled else 'off'}…")
            self._actions.set_disabled(name, not selected.disabled)

    def _ask_remove(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        self._removing = selected.spec.name
        self.confirm_text.setText(
            f"Remove <b>{self._removing}</b> from servers.json? Agents can no longer reach "
            "it through Lockgate; its secrets stay in the keyring."
        )
        self.confirm.show()

    def _remove(self) -> None:
        self.confirm.hide()
        if self._removing is not None:
            self.status.setText(f"Removing {self._removing}…")
            self._actions.remove(self._removing)
            self._removing = None

    def _sign_in(self) -> None:
        selected = self._selected()
        if selected is not None:
            name = selected.spec.name
            self.status.setText(
                f"Signing in to {name}: finish in the browser page that opened (5 minutes)…"
            )
            self.sign_in.setEnabled(False)
            self._actions.sign_in(name)

    def refresh_buttons(self) -> None:
        """After a state change of the selected server (a sign-in ended, say)."""
        self._selection_changed()

    def _open_log(self) -> None:
        selected = self._selected()
        if selected is not None:
            self._actions.open_log(selected.spec.name)

    def _restart(self) -> None:
        selected = self._selected()
        if selected is not None:
            name = selected.spec.name
            self.status.setText(f"Restarting {name}…")
            self._actions.restart(name)
