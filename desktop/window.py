"""The main window: a banner for what needs attention, the gateway's status and the pause
button, then one tab per view. Closing it hides it while the tray is there to bring it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.tray import AppState, icon_for

if TYPE_CHECKING:
    from desktop.app import LockgateApp

__all__ = ["TABS", "MainWindow"]

TABS = (
    "Live calls",
    "History",
    "Activity",
    "Approvals",
    "Tools & rules",
    "Servers",
    "Policy",
    "Connect your agents",
    "Settings",
)


class MainWindow(QMainWindow):
    """The window: a banner for what needs attention, then one tab per view."""

    def __init__(self, app: LockgateApp) -> None:
        super().__init__()
        self._app = app
        self.setWindowTitle("Lockgate")
        self.setWindowIcon(icon_for(AppState(running=True)))
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        # Its room is kept when it is hidden: a problem that comes or goes must not move
        # the tabs (and the buttons in them) under the person's pointer.
        policy = self.banner.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.banner.setSizePolicy(policy)
        two_lines = 2 * self.banner.fontMetrics().lineSpacing() + 14  # and the padding
        self.banner.setFixedHeight(two_lines)
        self.banner.setAlignment(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft)
        self.banner.setVisible(False)
        self.pause_button = QPushButton("Pause all tool calls")
        self.pause_button.setObjectName("pause")
        self.pause_button.clicked.connect(app.toggle_pause)
        self.status_text = QLabel("Starting the gateway…")
        self.status_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(self.status_text, 1)
        top.addWidget(self.pause_button)
        self.tabs = QTabWidget()
        views: dict[str, QWidget] = {
            "Live calls": app.live,
            "History": app.history,
            "Activity": app.activity,
            "Approvals": app.approvals_tab,
            "Tools & rules": app.tools_view,
            "Servers": app.servers_view,
            "Policy": app.policy_view,
            "Connect your agents": app.connect_view,
            "Settings": app.settings_view,
        }
        for name in TABS:
            self.tabs.addTab(views[name], name.replace("&", "&&"))
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.resize(1180, 720)

    def show_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex(TABS.index(name))
        self.present()

    def present(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def show_state(self, state: AppState, url: str | None) -> None:
        self.pause_button.setText("Resume tool calls" if state.paused else "Pause all tool calls")
        self.pause_button.setEnabled(state.running)
        approvals = TABS.index("Approvals")
        self.tabs.setTabText(
            approvals, f"Approvals ({state.pending})" if state.pending else TABS[approvals]
        )
        if state.running and url:
            self.status_text.setText(
                f"Gateway on <code>{url}SERVER</code> (HTTP) and <code>lockgate connect "
                "SERVER</code> (stdio)"
            )
        problems = []
        style = "background: #fdecea; color: #8e0000;"
        if state.failure:
            problems.append(f"The gateway is not running: {state.failure}")
        elif state.paused:
            problems.append("Paused: every tool call is denied until you resume.")
            style = "background: #eceff1; color: #37474f;"
        if state.policy_error and "policy.json was deleted" in state.policy_error:
            problems.append(
                "policy.json was deleted; the last policy in force stays (restore it in the "
                "Policy tab)."
            )
        elif state.policy_error:
            problems.append(
                "policy.json has errors; the last good policy is in force (see the Policy tab)."
            )
        if state.team_policy_error:
            problems.append(
                "The team's policy has errors; its last good copy stays in force, or, if "
                "there is none, every call is refused (see the Tools & rules tab)."
            )
        if state.servers_down:
            problems.append(f"{state.servers_down} server(s) down (see the Servers tab).")
        if state.servers_error:
            problems.append(
                "servers.json has errors; the servers in force stay (see the Servers tab)."
            )
        self.banner.setText("  ".join(problems))
        self.banner.setStyleSheet(f"QLabel#banner {{ {style} padding: 6px; border-radius: 4px; }}")
        self.banner.setVisible(bool(problems))

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._app.tray.available:
            event.ignore()
            self.hide()  # the app lives on in the tray
        else:
            event.accept()
            self._app.quit()
