"""The "Settings" view: Lockgate's settings.json, edited with the same checks as
``lockgate settings``, and how big the audit log has grown."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from proxy.config.settings import (
    APPROVAL_TIMEOUT_SECONDS,
    AUDIT_MAX_MEGABYTES,
    AUDIT_RETENTION_DAYS,
    Settings,
)

__all__ = ["SettingsView"]

_MB = 1024 * 1024
_STYLES = (
    ("actions", "With Allow / Deny buttons, where the desktop shows them"),
    ("plain", "A message only"),
    ("off", "None (the popup and the tray still show waiting calls)"),
)


class SettingsView(QWidget):
    """Shows the settings in the file; Save hands the changed ones to ``on_save``."""

    def __init__(
        self,
        on_save: Callable[[dict[str, int | str]], None],
        on_autostart: Callable[[bool], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._on_save = on_save
        self._on_autostart = on_autostart
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
        self.approval_timeout = QSpinBox()
        self.approval_timeout.setRange(*APPROVAL_TIMEOUT_SECONDS)
        self.approval_timeout.setSuffix(" s")
        self.approval_timeout.setToolTip(
            "How long a person has to answer a call that asks, when its rule does not say "
            "(unanswered: denied)"
        )
        self.retention = QSpinBox()
        self.retention.setRange(0, AUDIT_RETENTION_DAYS[1])
        self.retention.setSuffix(" days")
        self.retention.setSpecialValueText("forever")  # 0
        self.retention.setToolTip("Calls older than this are deleted from the audit log")
        self.max_size = QSpinBox()
        self.max_size.setRange(0, AUDIT_MAX_MEGABYTES[1])
        self.max_size.setSuffix(" MB")
        self.max_size.setSpecialValueText("no limit")  # 0
        self.max_size.setToolTip(
            f"Past this the oldest calls are deleted first (at least {AUDIT_MAX_MEGABYTES[0]} "
            "MB; checked once a minute)"
        )
        self.team_policy = QLineEdit()
        self.team_policy.setObjectName("settingsTeamPolicy")
        self.team_policy.setPlaceholderText("none: policy.json alone decides")
        self.team_policy.setToolTip(
            "A policy file your team keeps current (by configuration management or a git "
            "checkout). Its denials, hidden tools, limits and asks stand whatever policy.json "
            "says; while it cannot be read, every call is refused."
        )
        self.choose_team_policy = QPushButton("Choose…")
        self.choose_team_policy.clicked.connect(self._choose_team_policy)
        team_row = QHBoxLayout()
        team_row.addWidget(self.team_policy, 1)
        team_row.addWidget(self.choose_team_policy)
        self.otlp_endpoint = QLineEdit()
        self.otlp_endpoint.setObjectName("settingsOtlpEndpoint")
        self.otlp_endpoint.setPlaceholderText("off: nothing leaves this computer")
        self.otlp_endpoint.setToolTip(
            "An OpenTelemetry collector's base URL (OTLP over HTTP) that receives every call "
            "of the audit log, redacted as the log is; its headers (API keys) are the "
            "keyring secret otlp-headers"
        )
        for line in (self.team_policy, self.otlp_endpoint):
            line.setMinimumWidth(420)  # a path or a URL, read whole
        self.notifications = QComboBox()
        for style, label in _STYLES:
            self.notifications.addItem(label, style)
        self.autostart = QCheckBox("Start Lockgate when I log in")
        self.autostart.setObjectName("settingsAutostart")
        self.autostart.toggled.connect(self._autostart_toggled)
        self._autostart_shown = False
        self.audit_size = QLabel("…")
        self.audit_size.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for box in (
            self.port,
            self.max_message,
            self.approval_timeout,
            self.retention,
            self.max_size,
        ):
            box.setMaximumWidth(160)  # a number, not a line of text
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Gateway port:", self.port)
        form.addRow("Largest message a client may send:", self.max_message)
        form.addRow("Time to answer an approval:", self.approval_timeout)
        form.addRow("Notifications of waiting calls:", self.notifications)
        form.addRow("Keep calls in the audit log for:", self.retention)
        form.addRow("Keep the audit log under:", self.max_size)
        form.addRow("Team policy file:", team_row)
        form.addRow("Export calls to OpenTelemetry at:", self.otlp_endpoint)
        form.addRow("Audit log:", self.audit_size)
        form.addRow("", self.autostart)
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
            "routing read them. A new port, message limit, team policy file or export is used "
            "from the gateway's next start; the others at once."
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
            self.approval_timeout.setValue(settings.approval_timeout_seconds)
            self.retention.setValue(settings.audit_retention_days)
            self.max_size.setValue(settings.audit_max_megabytes)
            self.team_policy.setText(settings.team_policy)
            self.otlp_endpoint.setText(settings.otlp_endpoint)
            index = self.notifications.findData(settings.notifications)
            self.notifications.setCurrentIndex(max(0, index))
        self.save.setEnabled(settings is not None)
        self.say(error, failed=error is not None)

    def show_audit_size(self, text: str) -> None:
        self.audit_size.setText(text)

    def show_autostart(self, on: bool) -> None:
        self._autostart_shown = on
        self.autostart.blockSignals(True)  # what is, not a click
        self.autostart.setChecked(on)
        self.autostart.blockSignals(False)

    def _autostart_toggled(self, on: bool) -> None:
        if on != self._autostart_shown:
            self._on_autostart(on)

    def say(self, text: str | None, *, failed: bool = False) -> None:
        self.status.setText(text or "")
        self.status.setStyleSheet("color: #c62828;" if failed else "")

    def _choose_team_policy(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "The team's policy file", self.team_policy.text(), "Policy files (*.json)"
        )
        if path:
            self.team_policy.setText(path)

    def _save(self) -> None:
        shown = self._shown
        changes: dict[str, int | str] = {}
        if self.port.value() != shown.port:
            changes["port"] = self.port.value()
        if self.max_message.value() != max(1, shown.max_message_bytes // _MB):
            changes["max_message_bytes"] = self.max_message.value() * _MB
        if self.approval_timeout.value() != shown.approval_timeout_seconds:
            changes["approval_timeout_seconds"] = self.approval_timeout.value()
        if self.retention.value() != shown.audit_retention_days:
            changes["audit_retention_days"] = self.retention.value()
        if self.max_size.value() != shown.audit_max_megabytes:
            changes["audit_max_megabytes"] = self.max_size.value()
        if self.team_policy.text().strip() != shown.team_policy:
            changes["team_policy"] = self.team_policy.text().strip()
        if self.otlp_endpoint.text().strip() != shown.otlp_endpoint:
            changes["otlp_endpoint"] = self.otlp_endpoint.text().strip()
        style = self.notifications.currentData()
        if style != shown.notifications:
            changes["notifications"] = style
        if not changes:
            self.say("Nothing changed.")
            return
        self._on_save(changes)
