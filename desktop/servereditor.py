"""Adding or changing one server of servers.json from the window.

A form (a command with its arguments and environment, or a URL with its headers), or an
entry pasted from a client's documentation to fill it in. A value marked *secret* never
reaches servers.json: it goes to the OS keyring and the file gets a ``keyring:`` reference
(values that look like secrets are marked so on their own). Fields the form does not show
(``autoApprove``, ``disabled``...) are kept as they were. What the form makes is checked
by the same parser a hand edit meets, when the app writes it
(:mod:`proxy.config.servers_edit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from proxy.config.secrets import KEYRING_PREFIX, secret_name
from proxy.config.servers import SERVER_NAME_RULE, valid_server_name
from proxy.config.servers_edit import (
    UNNAMED,
    keyring_name_for,
    parse_pasted_entry,
    secret_like_values,
)
from proxy.errors import LockgateError

__all__ = ["ServerEdit", "ServerEditor"]

_NAME, _VALUE, _SECRET = range(3)
_KEPT = "(kept in the keyring)"
_FORM_FIELDS = ("command", "args", "env", "cwd", "url", "headers", "type", "transport")


@dataclass(frozen=True)
class ServerEdit:
    """What Save asks for: the entry to write, and the secrets to store first."""

    name: str
    entry: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)  # keyring name -> value
    replace: bool = False  # an existing server's settings are replaced


class ServerEditor(QWidget):
    """The form, as a window of its own (never modal: the app goes on meanwhile)."""

    def __init__(
        self, on_save: Callable[[ServerEdit], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("serverEditor")
        self.resize(640, 560)
        self._on_save = on_save
        self._original: dict[str, Any] = {}
        self._editing = False
        self._pasted: dict[str, dict[str, Any]] = {}

        self.paste = QPlainTextEdit()
        self.paste.setPlaceholderText(
            'Paste a server entry from a client\'s docs, e.g. {"mcpServers": {"github": '
            '{"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]}}}'
        )
        self.paste.setMaximumHeight(90)
        self.fill = QPushButton("Fill in from the paste")
        self.fill.clicked.connect(self._fill_from_paste)
        self.choice = QComboBox()  # which server of a paste that holds several
        self.choice.hide()
        self.choice.currentTextChanged.connect(self._show_pasted)

        self.name = QLineEdit()
        self.name.setPlaceholderText("letters, digits, . _ - (it appears in URLs and rules)")
        self.kind = QComboBox()
        self.kind.addItem("a command Lockgate starts (stdio)", "stdio")
        self.kind.addItem("a remote server at a URL (HTTP)", "http")
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.command = QLineEdit()
        self.command.setPlaceholderText("npx, uvx, /path/to/server...")
        self.args = QPlainTextEdit()
        self.args.setPlaceholderText("one argument per line")
        self.args.setMaximumHeight(80)
        self.cwd = QLineEdit()
        self.cwd.setPlaceholderText("(optional) the folder it runs in")
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://example.com/mcp")
        self.values_label = QLabel()
        self.values = QTableWidget(0, 3)
        self.values.setHorizontalHeaderLabels(["Name", "Value", "Secret"])
        self.values.verticalHeader().setVisible(False)
        self.values.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.values.horizontalHeader()
        header.setSectionResizeMode(_NAME, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(_VALUE, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(_SECRET, QHeaderView.ResizeMode.ResizeToContents)
        self.add_value = QPushButton("Add")
        self.add_value.clicked.connect(lambda: self._add_row("", "", secret=False))
        self.remove_value = QPushButton("Remove")
        self.remove_value.clicked.connect(self._remove_row)

        self.form = QFormLayout()
        self.form.addRow("Name:", self.name)
        self.form.addRow("Runs:", self.kind)
        self.form.addRow("Command:", self.command)
        self.form.addRow("Arguments:", self.args)
        self.form.addRow("Working folder:", self.cwd)
        self.form.addRow("URL:", self.url)

        self.save = QPushButton("Save")
        self.save.setObjectName("saveServer")
        self.save.setDefault(True)
        self.save.clicked.connect(self._save)
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.close)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        note = QLabel(
            "A value marked Secret is stored in the OS keyring; servers.json gets only a "
            "<code>keyring:</code> reference to it."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #555;")

        paste_row = QHBoxLayout()
        paste_row.addWidget(self.fill)
        paste_row.addWidget(self.choice, 1)
        value_buttons = QHBoxLayout()
        value_buttons.addWidget(self.add_value)
        value_buttons.addWidget(self.remove_value)
        value_buttons.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.cancel)
        bottom.addWidget(self.save)
        layout = QVBoxLayout(self)
        layout.addWidget(self.paste)
        layout.addLayout(paste_row)
        layout.addLayout(self.form)
        layout.addWidget(self.values_label)
        layout.addWidget(self.values, 1)
        layout.addLayout(value_buttons)
        layout.addWidget(note)
        layout.addLayout(bottom)
        self._kind_changed()

    # -- opening ------------------------------------------------------------------------

    def start_new(self) -> None:
        self.setWindowTitle("Lockgate: add a server")
        self._editing = False
        self._original = {}
        self.name.setReadOnly(False)
        self.name.clear()
        self.paste.clear()
        self._show_entry({"command": ""})
        self.say(None)
        self._present()

    def start_edit(self, name: str, entry: Mapping[str, Any]) -> None:
        """Edit ``name``'s settings as servers.json has them now."""
        self.setWindowTitle(f"Lockgate: change {name}")
        self._editing = True
        self._original = dict(entry)
        self.name.setText(name)
        self.name.setReadOnly(True)  # a new name is a new server: rules name the old one
        self.paste.clear()
        self._show_entry(entry)
        self.say(None)
        self._present()

    def _present(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    def say(self, text: str | None, *, failed: bool = False) -> None:
        self.status.setText(text or "")
        self.status.setStyleSheet("color: #c62828;" if failed else "")

    # -- the form -------------------------------------------------------------------------

    def _kind_changed(self) -> None:
        stdio = self.kind.currentData() == "stdio"
        for widget, shown in (
            (self.command, stdio),
            (self.args, stdio),
            (self.cwd, stdio),
            (self.url, not stdio),
        ):
            self.form.setRowVisible(widget, shown)
        self.values_label.setText("Environment variables:" if stdio else "HTTP headers:")

    def _show_entry(self, entry: Mapping[str, Any]) -> None:
        stdio = "url" not in entry and "serverUrl" not in entry
        self.kind.setCurrentIndex(0 if stdio else 1)
        self.command.setText(str(entry.get("command", "")))
        args = entry.get("args", [])
        self.args.setPlainText("\n".join(str(a) for a in args) if isinstance(args, list) else "")
        self.cwd.setText(str(entry.get("cwd") or ""))
        self.url.setText(str(entry.get("url", "")))
        section = "env" if stdio else "headers"
        values = entry.get(section, {})
        looks_secret = {name for where, name in secret_like_values(entry) if where == section}
        self.values.setRowCount(0)
        if isinstance(values, dict):
            for key, value in values.items():
                reference = secret_name(str(value)) is not None
                self._add_row(
                    key, str(value), secret=reference or key in looks_secret, kept=reference
                )
        self._kind_changed()

    def _add_row(self, key: str, value: str, *, secret: bool, kept: bool = False) -> None:
        row = self.values.rowCount()
        self.values.insertRow(row)
        self.values.setItem(row, _NAME, QTableWidgetItem(key))
        shown = QTableWidgetItem(_KEPT if kept else value)
        if kept:  # the reference stays unless the person types a new value
            shown.setData(Qt.ItemDataRole.UserRole, value)
            shown.setForeground(QColor("#777"))
        self.values.setItem(row, _VALUE, shown)
        box = QTableWidgetItem()
        box.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        box.setCheckState(Qt.CheckState.Checked if secret else Qt.CheckState.Unchecked)
        self.values.setItem(row, _SECRET, box)

    def _remove_row(self) -> None:
        for index in sorted({i.row() for i in self.values.selectedIndexes()}, reverse=True):
            self.values.removeRow(index)

    def _fill_from_paste(self) -> None:
        try:
            self._pasted = parse_pasted_entry(self.paste.toPlainText())
        except LockgateError as exc:
            self.say(exc.told(), failed=True)
            return
        self.choice.blockSignals(True)
        self.choice.clear()
        self.choice.addItems(list(self._pasted))
        self.choice.blockSignals(False)
        self.choice.setVisible(len(self._pasted) > 1)
        first = next(iter(self._pasted))
        self._show_pasted(first)
        many = len(self._pasted)
        self.say(
            f"{many} servers in the paste: pick one above; each is added on its own."
            if many > 1
            else "Filled in; check it, then Save."
        )

    def _show_pasted(self, name: str) -> None:
        entry = self._pasted.get(name)
        if entry is None:
            return
        if name != UNNAMED and not self._editing:
            self.name.setText(name)
        self._original = {k: v for k, v in entry.items() if k not in _FORM_FIELDS}
        if "type" in entry or "transport" in entry:
            self._original["type"] = entry.get("type", entry.get("transport"))
        self._show_entry(entry)

    # -- saving ---------------------------------------------------------------------------

    def edit(self) -> ServerEdit:
        """What the form says, as an entry and the secrets to store.

        Raises:
            ValueError: the form is not complete; the message says what is missing.
        """
        name = self.name.text().strip()
        if not valid_server_name(name):
            raise ValueError(f"Name: {SERVER_NAME_RULE}")
        entry = {k: v for k, v in self._original.items() if k not in _FORM_FIELDS}
        stdio = self.kind.currentData() == "stdio"
        if stdio:
            if not self.command.text().strip():
                raise ValueError("Command: the program to start, e.g. npx or uvx")
            entry["command"] = self.command.text().strip()
            args = [line for line in self.args.toPlainText().splitlines() if line.strip()]
            if args:
                entry["args"] = args
            if self.cwd.text().strip():
                entry["cwd"] = self.cwd.text().strip()
        else:
            if not self.url.text().strip():
                raise ValueError("URL: where the server is, http:// or https://")
            entry["url"] = self.url.text().strip()
            kind = self._original.get("type", self._original.get("transport"))
            if kind is not None:
                entry["type"] = kind
        section = "env" if stdio else "headers"
        values, secrets = self._values(name, section)
        if values:
            entry[section] = values
        return ServerEdit(name, entry, secrets, replace=self._editing)

    def _values(self, server: str, section: str) -> tuple[dict[str, str], dict[str, str]]:
        values: dict[str, str] = {}
        secrets: dict[str, str] = {}
        for row in range(self.values.rowCount()):
            key = self._cell(row, _NAME).text().strip()
            item = self._cell(row, _VALUE)
            text = item.text()
            if not key:
                if text.strip():
                    raise ValueError(f"row {row + 1}: a value needs its name")
                continue
            if key in values:
                raise ValueError(f"{key!r} is there twice")
            reference = item.data(Qt.ItemDataRole.UserRole)
            secret = self._cell(row, _SECRET).checkState() == Qt.CheckState.Checked
            if isinstance(reference, str) and text == _KEPT:
                values[key] = reference  # as it was
            elif secret:
                keyring_name = keyring_name_for(
                    server, "env" if section == "env" else "headers", key
                )
                secrets[keyring_name] = text
                values[key] = KEYRING_PREFIX + keyring_name
            else:
                values[key] = text
        return values, secrets

    def _cell(self, row: int, column: int) -> QTableWidgetItem:
        item = self.values.item(row, column)
        if item is None:  # a cell the person emptied
            item = QTableWidgetItem("")
            self.values.setItem(row, column, item)
        return item

    def _save(self) -> None:
        try:
            edit = self.edit()
        except ValueError as exc:
            self.say(str(exc), failed=True)
            return
        self.say("Saving…")
        self.save.setEnabled(False)
        self._on_save(edit)

    def saved(self, error: str | None) -> None:
        """The app's answer to Save: closed when it worked, the reason shown when not."""
        self.save.setEnabled(True)
        if error is None:
            self.close()
        else:
            self.say(error, failed=True)
