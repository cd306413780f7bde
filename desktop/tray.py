"""The tray icon: its look tells the state, its menu does the common things.

States, most urgent first: a policy error or a server down (red "!"), calls waiting for
a person or a remote server that needs a sign-in (amber "?", with the count of calls),
paused (grey bars), running (blue lock). Where
the desktop has no system tray (GNOME without AppIndicator), the app shows its window
instead and checks now and then whether a tray has appeared, and adopts it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from PySide6.QtCore import QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QSystemTrayIcon, QWidget, QWidgetAction

__all__ = ["AppState", "Tray", "icon_for", "state_icon_name"]


@dataclass(frozen=True)
class AppState:
    running: bool = False
    paused: bool = False
    pending: int = 0
    servers_down: int = 0
    policy_error: str | None = None
    team_policy_error: str | None = None  # the team's file cannot be used (see settings)
    servers_error: str | None = None  # servers.json is broken; the servers in force stay
    failure: str | None = None  # the gateway itself is not running
    needs_sign_in: tuple[str, ...] = ()  # remote servers whose calls wait for a sign-in

    def summary(self) -> str:
        if self.failure:
            return f"Lockgate is not running: {self.failure}"
        if not self.running:
            return "Lockgate is starting…"
        parts = ["paused: every tool call is denied" if self.paused else "watching tool calls"]
        if self.pending:
            parts.append(f"{self.pending} waiting for you")
        if self.servers_down:
            parts.append(f"{self.servers_down} server{'s' if self.servers_down > 1 else ''} down")
        if len(self.needs_sign_in) == 1:
            parts.append(f"sign in to {self.needs_sign_in[0]} (its calls are refused)")
        elif self.needs_sign_in:
            parts.append(f"{len(self.needs_sign_in)} servers need sign-in")
        if self.policy_error and "policy.json was deleted" in self.policy_error:
            parts.append("policy.json was deleted (the last policy in force stays)")
        elif self.policy_error:
            parts.append("policy.json has errors (the last good policy is in force)")
        if self.team_policy_error:
            parts.append("the team's policy has errors (its last good copy is in force)")
        if self.servers_error:
            parts.append("servers.json has errors (the servers in force stay)")
        return "Lockgate: " + "; ".join(parts)


def state_icon_name(state: AppState) -> str:
    if (
        state.failure
        or state.policy_error
        or state.team_policy_error
        or state.servers_error
        or state.servers_down
    ):
        return "lockgate-error.svg"
    if state.pending or state.needs_sign_in:
        return "lockgate-attention.svg"
    if state.paused or not state.running:
        return "lockgate-paused.svg"
    return "lockgate.svg"


def icon_for(state: AppState, size: int = 64) -> QIcon:
    """The icon for ``state``, with the pending count drawn on it."""
    data = resources.files("lockgate_resources").joinpath(state_icon_name(state)).read_bytes()
    renderer = QSvgRenderer(data)
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    if state.pending:
        badge = QRectF(size * 0.5, size * 0.5, size * 0.5, size * 0.5)
        painter.setBrush(QColor("#c62828"))
        painter.setPen(QColor("#ffffff"))
        painter.drawEllipse(badge)
        font = QFont()
        font.setBold(True)
        font.setPixelSize(int(size * 0.3))
        painter.setFont(font)
        text = str(state.pending) if state.pending < 100 else "99+"
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return QIcon(pixmap)


class Tray(QObject):
    """The tray icon and its menu (or nothing, while the desktop has no tray)."""

    open_window = Signal()
    open_approvals = Signal()
    toggle_pause = Signal()
    sign_in = Signal(str)  # a server's name: sign in to it in the browser
    quit = Signal()

    def __init__(self, parent: QObject | None = None, poll_ms: int = 5000) -> None:
        super().__init__(parent)
        self.state = AppState()
        self.recently_blocked: deque[str] = deque(maxlen=8)
        self.icon: QSystemTrayIcon | None = None
        self.menu = QMenu()
        self._open = self.menu.addAction("Open Lockgate")
        self._open.triggered.connect(self.open_window)
        # The last hour's calls, a bar a minute: a widget in the menu, so that it shows at
        # its own size and in colour (an icon would be squeezed to a square and greyed).
        self._activity = QWidgetAction(self.menu)
        self.sparkline = QLabel()
        self.activity_text = QLabel()
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(8, 4, 8, 4)
        line.addWidget(self.sparkline)
        line.addWidget(self.activity_text, 1)
        self._activity.setDefaultWidget(row)
        self._activity.setVisible(False)  # until the first count
        self.menu.addAction(self._activity)
        self._pause = self.menu.addAction("Pause all tool calls")
        self._pause.triggered.connect(self.toggle_pause)
        # One entry per call waiting for the person: who wants what, one click to it.
        self._approvals = self.menu.addMenu("No pending approvals")
        self._approvals.setEnabled(False)
        self._blocked = self.menu.addMenu("Recently blocked")
        self._fill_blocked(lambda _entry: None)
        self._sign_in_actions: dict[str, QAction] = {}  # one per server needing a sign-in
        self._sign_in_end = self.menu.addSeparator()
        self._quit = self.menu.addAction("Quit Lockgate")
        self._quit.triggered.connect(self.quit)
        self._poll = QTimer(self)
        self._poll.setInterval(poll_ms)
        self._poll.timeout.connect(self.adopt)
        self._shown_key: tuple[str, int] | None = None
        self._message_clicked: Callable[[], None] | None = None
        self.adopt()
        if self.icon is None:
            self._poll.start()

    @property
    def available(self) -> bool:
        return self.icon is not None

    def adopt(self) -> bool:
        """Show the tray icon if the desktop has a tray now; True once it has one."""
        if self.icon is not None:
            return True
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return False
        icon = QSystemTrayIcon(self)
        icon.setContextMenu(self.menu)
        icon.activated.connect(self._activated)
        icon.messageClicked.connect(self.message_clicked)
        self.icon = icon
        self._poll.stop()
        self._shown_key = None
        self.update(self.state)
        icon.show()
        return True

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.open_window.emit()

    def update(self, state: AppState) -> None:
        self.state = state
        self._pause.setText("Resume tool calls" if state.paused else "Pause all tool calls")
        self._pause.setEnabled(state.running)
        self._approvals.setTitle(
            f"Pending approvals ({state.pending})" if state.pending else "No pending approvals"
        )
        self._approvals.setEnabled(bool(state.pending))
        self._fill_sign_in(state.needs_sign_in)
        if self.icon is None:
            return
        key = (state_icon_name(state), state.pending)
        if key != self._shown_key:  # re-render only when the look changes
            self._shown_key = key
            self.icon.setIcon(icon_for(state))
        self.icon.setToolTip(self.tooltip())

    def tooltip(self) -> str:
        activity = self._activity.text()
        return self.state.summary() + (f"\n{activity}" if activity else "")

    def show_activity(self, sparkline: QPixmap, text: str) -> None:
        """The last hour in the menu (a sparkline and ``text``) and in the tooltip."""
        self.sparkline.setPixmap(sparkline)
        self.activity_text.setText(text)
        self._activity.setText(text)  # what a menu that cannot hold a widget shows
        self._activity.setVisible(True)
        if self.icon is not None:
            self.icon.setToolTip(self.tooltip())

    def blocked(self, entries: list[str], on_pick: Callable[[str], None]) -> None:
        """Add to the "Recently blocked" menu (server/tool: reason), newest first."""
        for entry in entries:
            self.recently_blocked.appendleft(entry)
        self._fill_blocked(on_pick)

    def waiting(self, calls: list[str]) -> None:
        """The calls waiting for the person (``client → server/tool``), one entry each;
        picking one opens the Approvals tab (``open_approvals``)."""
        self._approvals.clear()
        for call in calls:
            action = self._approvals.addAction(call)
            action.triggered.connect(self.open_approvals)

    def sign_in_entries(self) -> list[str]:
        """The menu's "Sign in to SERVER…" entries, in their order."""
        return [action.text() for action in self._sign_in_actions.values()]

    def trigger_sign_in(self, server: str) -> None:
        """What a click on "Sign in to SERVER…" does (tests, and the menu itself)."""
        self._sign_in_actions[server].trigger()

    def _fill_sign_in(self, servers: tuple[str, ...]) -> None:
        if tuple(self._sign_in_actions) == servers:
            return
        for action in self._sign_in_actions.values():
            self.menu.removeAction(action)
        self._sign_in_actions = {}
        for server in servers:
            action = QAction(f"Sign in to {server}…", self.menu)
            action.triggered.connect(lambda _=False, s=server: self.sign_in.emit(s))
            self.menu.insertAction(self._sign_in_end, action)
            self._sign_in_actions[server] = action

    def _fill_blocked(self, on_pick: Callable[[str], None]) -> None:
        self._blocked.clear()
        for entry in self.recently_blocked:
            action = QAction(entry, self._blocked)
            action.triggered.connect(lambda _=False, e=entry: on_pick(e))
            self._blocked.addAction(action)
        if not self.recently_blocked:  # an empty submenu opens on nothing: say so
            placeholder = self._blocked.addAction("Nothing was blocked since Lockgate started")
            placeholder.setEnabled(False)

    def notify(
        self, title: str, message: str, *, on_click: Callable[[], None] | None = None
    ) -> None:
        """A desktop notification from the tray; it never takes the keyboard focus.
        ``on_click``: what a click on it does (a later message replaces it)."""
        self._message_clicked = on_click
        if self.icon is not None and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 8000)

    def message_clicked(self) -> None:
        """The person clicked the last message (Qt says which only by its being last)."""
        clicked, self._message_clicked = self._message_clicked, None
        if clicked is not None:
            clicked()

    def hide(self) -> None:
        self._poll.stop()
        if self.icon is not None:
            self.icon.hide()
