"""The "Policy file" view: where policy.json is, opening it, and what is wrong with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["PolicyView"]

_BROKEN_TITLE = (
    "<b>policy.json has errors.</b> The last good policy stays in force until they are fixed:"
)


class PolicyView(QWidget):
    def __init__(
        self,
        path: Path,
        on_create: Callable[[], None],
        on_suggest: Callable[[], None],
        on_write_suggestion: Callable[[str], None],
        *,
        on_restore: Callable[[], None],
        on_replay_file: Callable[[Path, Callable[[str], None]], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.path = path
        self._on_replay_file = on_replay_file
        # where the file to replay is picked (tests give one of their own)
        self.choose_file: Callable[[], Path | None] = self._choose_file
        self.where = QLabel()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where.setWordWrap(True)
        self.in_force = QLabel("Loading the policy…")
        self.in_force.setWordWrap(True)
        self.error_title = QLabel(_BROKEN_TITLE)
        self.error_title.setStyleSheet("color: #c62828;")
        self.error = QPlainTextEdit(readOnly=True)
        self.error.setObjectName("policyError")
        font = self.error.font()
        font.setFamily("monospace")
        self.error.setFont(font)
        self.error.setStyleSheet("color: #c62828;")
        self.error.setMaximumHeight(220)
        self.open = QPushButton("Open in editor")
        self.open.clicked.connect(self._open)
        self.folder = QPushButton("Show folder")
        self.folder.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path.parent)))
        )
        self.restore_button = QPushButton("Restore the last policy in force")
        self.restore_button.setObjectName("restorePolicy")
        self.restore_button.setToolTip("policy.json was deleted: put back the one Lockgate kept")
        self.restore_button.clicked.connect(on_restore)
        self.restore_button.setVisible(False)
        self.create_button = QPushButton("Create policy.json from the built-in policy")
        self.create_button.clicked.connect(on_create)
        self.suggest_button = QPushButton("Suggest a policy from your servers' tools…")
        self.suggest_button.setToolTip(
            "Read-only tools allowed, every other tool asks you first; shown before it is written"
        )
        self.suggest_button.clicked.connect(on_suggest)
        self.suggestion_title = QLabel(
            "<b>Suggested policy</b> (read-only tools are allowed; write, network, execute "
            "and destructive tools ask you first, and so do tools not listed):"
        )
        self.suggestion_title.setWordWrap(True)
        self.suggestion = QPlainTextEdit(readOnly=True)
        self.suggestion.setObjectName("suggestion")
        self.suggestion.setFont(font)
        self.write_suggestion = QPushButton("Write this policy")
        self.write_suggestion.clicked.connect(
            lambda: on_write_suggestion(self.suggestion.toPlainText())
        )
        self.replay_button = QPushButton("Replay a candidate file…")
        self.replay_button.setToolTip(
            "A policy file you are writing (a copy of policy.json, changed): what it would "
            "have done to the calls of the last 7 days, before you put it in place"
        )
        self.replay_button.clicked.connect(self._replay_file)
        self.replay_button.setVisible(on_replay_file is not None)
        self.replay_result = QLabel()
        self.replay_result.setObjectName("replayResult")
        self.replay_result.setWordWrap(True)
        self.replay_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.replay_result.setVisible(False)
        self.discard_suggestion = QPushButton("Discard")
        self.discard_suggestion.clicked.connect(lambda: self.show_suggestion(None))
        self.help = QLabel(
            "Edit policy.json by hand or with the rule controls in this app: a saved change "
            "is in force for the next call. `lockgate policy explain SERVER TOOL` says which "
            "rule decides a call."
        )
        self.help.setWordWrap(True)
        self.help.setStyleSheet("color: #555;")
        buttons = QHBoxLayout()
        buttons.addWidget(self.open)
        buttons.addWidget(self.folder)
        buttons.addWidget(self.restore_button)
        buttons.addWidget(self.create_button)
        buttons.addWidget(self.suggest_button)
        buttons.addWidget(self.replay_button)
        buttons.addStretch(1)
        suggestion_buttons = QHBoxLayout()
        suggestion_buttons.addWidget(self.write_suggestion)
        suggestion_buttons.addWidget(self.discard_suggestion)
        suggestion_buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.where)
        layout.addWidget(self.in_force)
        layout.addLayout(buttons)
        layout.addWidget(self.replay_result)
        layout.addWidget(self.error_title)
        layout.addWidget(self.error)
        layout.addWidget(self.suggestion_title)
        layout.addWidget(self.suggestion, 10)
        layout.addLayout(suggestion_buttons)
        layout.addWidget(self.help)
        layout.addStretch(1)
        self._suggestion_parts = (
            self.suggestion_title,
            self.suggestion,
            self.write_suggestion,
            self.discard_suggestion,
        )
        self.show_suggestion(None)
        self.show_state(None, None, exists=path.exists())

    def show_suggestion(self, text: str | None) -> None:
        """The starting policy, to read before writing it (None: hide it)."""
        for part in self._suggestion_parts:
            part.setVisible(text is not None)
        self.suggestion.setPlainText(text or "")

    def show_state(
        self, in_force: str | None, error: str | None, *, exists: bool, deleted: bool = False
    ) -> None:
        """``deleted``: policy.json is gone and the last policy in force stays."""
        missing = (
            " <i>(deleted: the last policy in force stays until you restore it or write a "
            "new one)</i>"
            if deleted
            else " <i>(not created yet: the built-in policy applies)</i>"
        )
        self.where.setText(f"Policy file: <code>{self.path}</code>" + ("" if exists else missing))
        self.restore_button.setVisible(deleted)
        self.error_title.setText(
            "<b>policy.json was deleted.</b> The last policy in force stays until you "
            "restore it or write a new one:"
            if deleted
            else _BROKEN_TITLE
        )
        if in_force is not None:
            self.in_force.setText(f"In force: {in_force}")
        self.error_title.setVisible(bool(error))
        self.error.setVisible(bool(error))
        self.error.setPlainText(error or "")
        self.open.setEnabled(exists)
        self.create_button.setVisible(not exists)
        self.suggest_button.setVisible(not exists)
        if exists:
            self.show_suggestion(None)

    def _replay_file(self) -> None:
        chosen = self.choose_file()
        if chosen is None or self._on_replay_file is None:
            return
        self.replay_result.setVisible(True)
        self.replay_result.setText(f"Replaying {chosen.name} over the last 7 days…")

        def answer(line: str) -> None:
            self.replay_result.setText(f"{chosen.name}: {line}")

        self._on_replay_file(chosen, answer)

    def _choose_file(self) -> Path | None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Replay a candidate policy", str(self.path.parent), "Policy files (*.json)"
        )
        return Path(name) if name else None

    def _open(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path)))
