"""The "Connect your agents" view: the MCP clients on this computer, routing their servers
through Lockgate and putting them back, and starting Lockgate at login.

The view only shows and asks; the app does the work (reading and writing the clients'
files, the keyring) on worker threads and hands the results back here.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from proxy.clients import ClientFile
from proxy.clients.route import HTTP_CLIENTS

__all__ = ["ConnectView"]

COLUMNS = ("Client", "File", "Servers", "Through Lockgate")
OK, PARTLY, BROKEN = QColor("#2e7d32"), QColor("#ef6c00"), QColor("#c62828")
VIA = (
    ("stdio", "lockgate connect NAME (every client)"),
    ("http", "HTTP, with a token of the client's own"),
)


def _home_relative(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


_VIA_HELP = (
    "lockgate connect works with every client and puts no token in its file. HTTP "
    "needs Lockgate running on its usual port; the token is written into the "
    "client's file, like any server's key (revoked when you put it back)."
)


class ConnectView(QWidget):
    def __init__(
        self,
        on_scan: Callable[[Path | None], None],
        on_route: Callable[[ClientFile, str], None],
        on_unroute: Callable[[ClientFile], None],
        on_autostart: Callable[[bool], None],
        parent: QWidget | None = None,
        *,
        on_sign_in: Callable[[str], None] = lambda _server: None,
    ) -> None:
        super().__init__(parent)
        self.files: list[ClientFile] = []
        self.project: Path | None = None
        self._busy = False
        self._on_scan = on_scan
        intro = QLabel(
            "<b>Connect your agents.</b> These are the MCP clients Lockgate found on this "
            "computer. <i>Route through Lockgate</i> copies a client's servers into "
            "servers.json (their <code>env</code> and header values into the OS keyring, "
            "never into a file) and points the client at Lockgate, so you see and decide "
            "every tool call. <i>Put back</i> restores the client's own entries exactly. "
            "Restart the client afterwards so it reads its file again."
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("clients")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in (0, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selected)
        self.details = QLabel()
        self.details.setObjectName("clientDetails")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.via = QComboBox()
        for value, text in VIA:
            self.via.addItem(text, value)
        self.via.setToolTip(_VIA_HELP)
        self.route_button = QPushButton("Route through Lockgate")
        self.route_button.setObjectName("route")
        self.route_button.clicked.connect(self._route)
        self.unroute_button = QPushButton("Put back as it was")
        self.unroute_button.setObjectName("unroute")
        self.unroute_button.clicked.connect(lambda: on_unroute(self.files[self._row()]))
        self._route_to = on_route
        self.rescan = QPushButton("Look again")
        self.rescan.clicked.connect(lambda: on_scan(self.project))
        self.add_project = QPushButton("Add a project folder…")
        self.add_project.setToolTip(
            "Also read a project's own files: .mcp.json (Claude Code), .cursor/mcp.json, "
            ".vscode/mcp.json"
        )
        self.add_project.clicked.connect(self._choose_project)
        actions = QHBoxLayout()
        actions.addWidget(QLabel("Connect by:"))
        actions.addWidget(self.via)
        actions.addWidget(self.route_button)
        actions.addWidget(self.unroute_button)
        actions.addStretch(1)
        actions.addWidget(self.add_project)
        actions.addWidget(self.rescan)
        self.result = QLabel()
        self.result.setObjectName("routeResult")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # After routing: one "Sign in to SERVER…" per remote server the client brought.
        self.sign_in_buttons: dict[str, QPushButton] = {}
        self._sign_in_row = QHBoxLayout()
        self._sign_in_row.addStretch(1)
        self._on_sign_in = on_sign_in
        self.autostart = QCheckBox("Start Lockgate when I log in")
        self.autostart.setObjectName("autostart")
        self._autostart_changed = on_autostart
        self.autostart.toggled.connect(self._autostart_toggled)
        self.autostart_where = QLabel()
        self.autostart_where.setStyleSheet("color: #607d8b;")
        self.autostart_where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        login = QHBoxLayout()
        login.addWidget(self.autostart)
        login.addWidget(self.autostart_where, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 3)
        details = QScrollArea()  # a file may hold dozens of servers
        details.setWidget(self.details)
        details.setWidgetResizable(True)
        details.setFrameShape(QFrame.Shape.NoFrame)
        layout.addWidget(details, 2)
        layout.addLayout(actions)
        layout.addWidget(self.result)
        layout.addLayout(self._sign_in_row)
        layout.addLayout(login)
        self.show_files([], scanning=True)

    # -- what the app hands in --------------------------------------------------------

    def show_files(self, files: Sequence[ClientFile], *, scanning: bool = False) -> None:
        """The client files found (``scanning``: a scan is under way)."""
        selected = self.files[self._row()].path if self._row() >= 0 else None
        self.files = list(files)
        self.table.setRowCount(len(self.files))
        for row, found in enumerate(self.files):
            label = found.client.label + ("" if found.scope == "user" else f" ({found.scope})")
            total = len(found.servers)
            through = sum(1 for s in found.servers if s.through_lockgate)
            if found.error:
                state, colour = "cannot read", BROKEN
            elif not total:
                state, colour = "no servers", None
            else:
                state = "all" if through == total else f"{through} of {total}"
                colour = OK if through == total else PARTLY if through else None
            cells = (label, _home_relative(found.path), str(total), state)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == 3 and colour is not None:
                    item.setForeground(QBrush(colour))
                item.setToolTip(found.error or str(found.path))
                self.table.setItem(row, column, item)
            if found.path == selected:
                self.table.selectRow(row)
        if not self.files:
            self.details.setText(
                "Looking for MCP clients…"
                if scanning
                else "No MCP client configuration found: Claude Desktop, Claude Code, Cursor, "
                "VS Code and Windsurf are looked for in their usual places. You can also "
                "point any client at Lockgate yourself (see the status line above)."
            )
        elif self._row() < 0:
            self.table.selectRow(0)
        self._selected()

    def show_result(self, text: str, *, error: bool = False) -> None:
        colour = "#c62828" if error else "#1b5e20"
        self.result.setText(
            f'<span style="color: {colour}">'
            + "<br>".join(html.escape(line) for line in text.splitlines())
            + "</span>"
        )

    def offer_sign_in(self, servers: Sequence[str]) -> None:
        """A "Sign in to SERVER…" button for each remote server just routed: its calls
        go through only once someone has signed in to it (if it asks for a sign-in)."""
        for button in self.sign_in_buttons.values():
            self._sign_in_row.removeWidget(button)
            button.deleteLater()
        self.sign_in_buttons = {}
        for server in servers:
            button = QPushButton(f"Sign in to {server}…")
            button.setObjectName(f"signIn:{server}")
            button.setToolTip(
                f"Opens {server}'s sign-in page in your browser; Lockgate keeps the sign-in "
                "in the OS keyring and renews it itself"
            )
            button.clicked.connect(lambda _=False, s=server: self._on_sign_in(s))
            self._sign_in_row.insertWidget(self._sign_in_row.count() - 1, button)
            self.sign_in_buttons[server] = button

    def show_signed_in(self, servers: Collection[str]) -> None:
        """Servers signed in to by now: their buttons say so and rest."""
        for server, button in self.sign_in_buttons.items():
            done = server in servers
            button.setText(f"Signed in to {server}" if done else f"Sign in to {server}…")
            button.setEnabled(not done)

    def show_autostart(self, on: bool, where: str) -> None:
        self.autostart.blockSignals(True)
        self.autostart.setChecked(on)
        self.autostart.blockSignals(False)
        self.autostart_where.setText(where)

    def set_busy(self, busy: bool) -> None:
        """While the app reads or writes clients' files, nothing else can be started."""
        self._busy = busy
        for button in (self.rescan, self.add_project):
            button.setEnabled(not busy)
        self._selected()

    # -- inside -----------------------------------------------------------------------

    def _row(self) -> int:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows and rows[0].row() < len(self.files) else -1

    def _selected(self) -> None:
        row = self._row()
        found = self.files[row] if row >= 0 else None
        usable = found is not None and found.error is None and bool(found.servers)
        direct = usable and found is not None and any(not s.through_lockgate for s in found.servers)
        routed = usable and found is not None and any(s.through_lockgate for s in found.servers)
        self.route_button.setEnabled(direct and not self._busy)
        self.unroute_button.setEnabled(routed and not self._busy)  # nothing to put back
        http_ok = found is not None and found.client.name in HTTP_CLIENTS
        model = self.via.model()
        item = model.item(1) if hasattr(model, "item") else None
        if item is not None:
            item.setEnabled(http_ok)
            item.setToolTip(
                ""
                if http_ok or found is None
                else f"{found.client.label} starts its servers as commands only: it cannot "
                "reach Lockgate over HTTP, so lockgate connect is the way"
            )
        self.via.setToolTip(
            _VIA_HELP
            if http_ok or found is None
            else f"{_VIA_HELP}\n\n{found.client.label} starts its servers as commands only, "
            "so only lockgate connect is offered for it."
        )
        if not http_ok:
            self.via.setCurrentIndex(0)
        if found is None:
            return
        lines = [f"<b>{html.escape(found.client.label)}</b> — {html.escape(str(found.path))}"]
        if found.error:
            lines.append(f'<span style="color: #c62828">{html.escape(found.error)}</span>')
        for server in found.servers:
            mark = (
                '<span style="color: #2e7d32">✓ through Lockgate</span>'
                if server.through_lockgate
                else '<span style="color: #ef6c00">direct</span>'
            )
            target = html.escape(server.target())
            lines.append(f"{html.escape(server.name)} · {mark} · <code>{target}</code>")
        self.details.setText("<br>".join(lines))

    def _route(self) -> None:
        self._route_to(self.files[self._row()], str(self.via.currentData()))

    def _choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A project folder to look in")
        if folder:
            self.project = Path(folder)
            self._on_scan(self.project)

    def _autostart_toggled(self, on: bool) -> None:
        self._autostart_changed(on)
