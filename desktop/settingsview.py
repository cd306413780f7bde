"""The "Settings" view: Lockgate's settings.json, edited with the same checks as
``lockgate settings``, and how big the audit log has grown."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from proxy.config.settings import Settings

__all__ = ["SettingsView"]

_MB = 1024 * 1024


class SettingsView(QWidget):
    """Shows the settings in the file; Save hands the changed ones to ``on_save``."""

    def __init__(
        self, on_save: Callable[[dict[str, int]], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._on_save = on_save
        self._shown = Settings()
        self.where = QLabel()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setToolTip("The gateway's TCP port on 127.0.0.1 (HTTP clients use it)")
        self.max_message = QSpinBox()
        self.max_message.setRange(1, 1024)
        self.max_message.setSuffix(" MB")
        self.max_message.setToolTip(
            "A larger message from a client is refused with this limit (and logged), "
            "never sent to a server"
        )
        self.audit_size = QLabel("…")
        self.audit_size.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for box in (self.port, self.max_message):
            box.setMaximumWidth(160)  # a number, not a line of text
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Gateway port:", self.port)
        form.addRow("Largest message a client may send:", self.max_message)
        form.addRow("Audit log:", self.audit_size)
        self.save = QPushButton("Save")
        self.save.setObjectName("saveSettings")
        self.save.clicked.connect(self._save)
        self.status = QLabel()
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save)
        buttons.addWidget(self.status, 1)
        note = QLabel(
            "These settings live in settings.json; the app, <code>lockgate serve</code> and "
            "routing read them. A new port or limit is used from the gateway's next start."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #555;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.where)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(note)
        layout.addStretch(1)

    def show_settings(self, settings: Settings | None, where: str, error: str | None) -> None:
        """The file's settings (None with ``error``: it is broken, and Save is off)."""
        self.where.setText(f"Settings file: <code>{where}</code>")
        if settings is not None:
            self._shown = settings
            self.port.setValue(settings.port)
            self.max_message.setValue(max(1, settings.max_message_bytes // _MB))
        self.save.setEnabled(settings is not None)
        self.say(error, failed=error is not None)

    def show_audit_size(self, text: str) -> None:
        self.audit_size.setText(text)

    def say(self, text: str | None, *, failed: bool = False) -> None:
        self.status.setText(text or "")
        self.status.setStyleSheet("color: #c62828;" if failed else "")

    def _save(self) -> None:
        changes: dict[str, int] = {}
        if self.port.value() != self._shown.port:
            changes["port"] = self.port.value()
        if self.max_message.value() != max(1, self._shown.max_message_bytes // _MB):
            changes["max_message_bytes"] = self.max_message.value() * _MB
        if not changes:
            self.say("Nothing changed.")
            return
        self._on_save(changes)
