"""Calls waiting for a person: one card each, with a countdown and the answers.

The pending list lives in :class:`PendingApprovals` (fed by the gateway's events); any
number of :class:`ApprovalsPanel` show it (the main window's tab, and the small
always-on-top :class:`ApprovalPrompt` that appears without taking the keyboard focus).
Answers go to the gateway through the host; nothing here blocks or opens a modal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QMouseEvent, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from proxy.gateway.approvals import Remember, call_digest
from proxy.gateway.events import ApprovalAnswered, ApprovalPending
from proxy.policy.decide import ToolCall
from proxy.policy.edit import MAX_EXACT_ARGUMENTS_BYTES
from proxy.policy.risk import Risk

__all__ = ["AlwaysFor", "Answer", "ApprovalPrompt", "ApprovalsPanel", "PendingApprovals"]


AlwaysFor = Literal["tool", "client", "arguments"]


@dataclass(frozen=True)
class Answer:
    """What a person said about one pending call."""

    approval_id: str
    digest: str
    approve: bool
    remember: Remember = Remember.ONCE
    reason: str | None = None
    # what an "always" answer's rule covers: the tool, the tool for this client only,
    # or exactly these arguments
    always: AlwaysFor = "tool"


class PendingApprovals(QObject):
    """The calls waiting for a person now, oldest first."""

    changed = Signal()
    replayed = Signal(str)  # the approval whose "always" replays said something new
    # a call stopped waiting because what it was asked under changed (the policy, the
    # servers, a pause): what to tell the person, in a sentence
    withdrawn = Signal(str)

    def __init__(
        self, risk_of: Callable[[str, str], Risk | None], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._risk_of = risk_of
        self.items: dict[str, ApprovalPending] = {}
        # what each "always" answer of a pending call would have done to the recorded
        # calls, in a line (a replay runs apart: the call never waits for it)
        self.replays: dict[str, dict[AlwaysFor, str]] = {}

    def apply(self, events: Iterable[object]) -> None:
        changed = False
        for event in events:
            if isinstance(event, ApprovalPending):
                self.items[event.approval_id] = event
                changed = True
            elif isinstance(event, ApprovalAnswered):
                gone = self.items.pop(event.approval_id, None)
                self.replays.pop(event.approval_id, None)
                changed |= gone is not None
                if gone is not None and event.answer == "withdrawn":
                    self.withdrawn.emit(
                        f"{gone.server}/{gone.tool} no longer waits for you: "
                        f"{event.reason or 'it was withdrawn'}"
                    )
        if changed:
            self.changed.emit()

    def reset(self) -> None:
        self.replays.clear()
        if self.items:
            self.items.clear()
            self.changed.emit()

    def set_replay(self, approval_id: str, always: AlwaysFor, said: str) -> None:
        """What the "always" answer ``always`` of a pending call would have done, in a
        line; dropped if the call no longer waits."""
        if approval_id in self.items:
            self.replays.setdefault(approval_id, {})[always] = said
            self.replayed.emit(approval_id)

    def risk(self, pending: ApprovalPending) -> Risk | None:
        return self._risk_of(pending.server, pending.tool)

    def __len__(self) -> int:
        return len(self.items)


def digest_of(pending: ApprovalPending) -> str:
    """The digest the gateway bound this approval to (server, tool, exact arguments)."""
    return call_digest(ToolCall(pending.server, pending.tool, pending.arguments, pending.client))


class ApprovalCard(QFrame):
    """One pending call: who asks for what, the full arguments, a countdown, answers."""

    def __init__(
        self,
        pending: ApprovalPending,
        risk: Risk | None,
        on_answer: Callable[[Answer], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.pending = pending
        # a question about a result (the call ran; its result holds a secret): only "once"
        # means anything, and no rule may come of the answer
        self.about_result = pending.about == "result"
        self._on_answer = on_answer
        self._digest = digest_of(pending)
        self.setObjectName("approvalCard")
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # a click in it: its keys answer it
        self.setFrameShape(QFrame.Shape.StyledPanel)
        border, background = ("#e0a050", "#fffaf2") if self.about_result else ("#b39ddb", "#faf7ff")
        self.setStyleSheet(
            f"#approvalCard {{ border: 1px solid {border}; border-radius: 6px;"
            f" background: {background}; }}"
        )
        subject = f"<b>{_esc(pending.server)}/{_esc(pending.tool)}</b>"
        if self.about_result:
            subject = f"The result of {subject} holds a secret"
        title = QLabel(subject)
        title.setObjectName("cardTitle")
        title.setTextFormat(Qt.TextFormat.RichText)
        who = QLabel(
            f"called by <b>{_esc(pending.client)}</b>; may the result reach it?"
            if self.about_result
            else f"asked by <b>{_esc(pending.client)}</b>"
        )
        badge = QLabel(_risk_text(risk))
        badge.setStyleSheet(_risk_style(risk))
        badge.setToolTip(_risk_tooltip(risk))
        self.countdown = QLabel()
        self.countdown.setObjectName("countdown")
        header = QHBoxLayout()
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(self.countdown)
        second = QHBoxLayout()
        second.addWidget(who)
        second.addWidget(badge)
        second.addStretch(1)

        why = QLabel(
            _esc(pending.reason) + (f" (rule {_esc(pending.rule)})" if pending.rule else "")
        )
        why.setObjectName("why")
        why.setWordWrap(True)
        why.setStyleSheet("color: #8a4b00;" if self.about_result else "color: #555;")
        arguments = QPlainTextEdit(readOnly=True)
        arguments.setObjectName("arguments")
        arguments.setPlainText(
            json.dumps(pending.arguments, indent=2, ensure_ascii=False, default=str)
        )
        arguments.setMaximumHeight(120)
        font = arguments.font()
        font.setFamily("monospace")
        arguments.setFont(font)
        self.reason = QLineEdit(
            placeholderText="Reason (Enter withholds the result)"
            if self.about_result
            else "Reason for the agent (Enter denies with it)"
        )
        self.reason.returnPressed.connect(lambda: self._answer(False, Remember.ONCE))

        self.allow_once = QPushButton("Allow once")
        self.allow_session = QPushButton("Allow for this session")
        self.allow_always = QPushButton("Always allow")
        self.allow_client = QPushButton(f"Always, for {pending.client} only")
        self.allow_exact = QPushButton("Always, these exact arguments")
        self.deny = QPushButton("Deny")
        self.deny.setStyleSheet("color: #c62828;")
        answers = (
            (self.allow_once, True, Remember.ONCE, "Alt+A, or Enter outside the reason box"),
            (self.allow_session, True, Remember.SESSION, "Alt+S"),
            (self.allow_always, True, Remember.ALWAYS, "Alt+W"),
            (self.deny, False, Remember.ONCE, "Alt+D, or Escape"),
        )
        for button, approve, remember, keys in answers:
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Enter is ours, not a button's
            button.clicked.connect(lambda _=False, a=approve, r=remember: self._answer(a, r))
            button.setToolTip(keys)
        self.allow_always.setToolTip(
            f"Writes an allow rule for {pending.server}/{pending.tool} (Alt+W)"
        )
        for button, always in ((self.allow_client, "client"), (self.allow_exact, "arguments")):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(
                lambda _=False, w=always: self._answer(True, Remember.ALWAYS, always=w)
            )
        self.allow_client.setToolTip(
            f"Writes a rule: {pending.server}/{pending.tool} is allowed for "
            f"{pending.client}; other clients are decided as now (Alt+C)"
        )
        exact = len(json.dumps(pending.arguments, ensure_ascii=False).encode()) <= (
            MAX_EXACT_ARGUMENTS_BYTES
        )
        self.allow_exact.setEnabled(exact)
        self.allow_exact.setToolTip(
            f"Writes a rule: {pending.server}/{pending.tool} is allowed with exactly these "
            "arguments, for any client; other arguments are decided as now (Alt+E)"
            if exact
            else f"These arguments are too long for a rule a person can read "
            f"(over {MAX_EXACT_ARGUMENTS_BYTES} bytes)"
        )
        self._always_tips: dict[AlwaysFor, tuple[QPushButton, str]] = {
            "tool": (self.allow_always, self.allow_always.toolTip()),
            "client": (self.allow_client, self.allow_client.toolTip()),
            "arguments": (self.allow_exact, self.allow_exact.toolTip()),
        }
        # what "Always allow" would have done to the last 7 days' calls (the other
        # "always" answers say theirs in their tooltips)
        self.replay = QLabel()
        self.replay.setObjectName("alwaysReplay")
        self.replay.setWordWrap(True)
        self.replay.setStyleSheet("color: #37474f; font-style: italic;")
        self.replay.hide()
        # Keys act on the card that has the keyboard: the popup never takes it on its own,
        # so only a person who clicked into it can answer by key. Enter and Escape are
        # keyPressEvent's (the reason box has its own Enter), the letters shortcuts.
        shortcuts = [("Alt+A", self.allow_once), ("Alt+D", self.deny)]
        if not self.about_result:
            shortcuts += [
                ("Alt+S", self.allow_session),
                ("Alt+W", self.allow_always),
                ("Alt+C", self.allow_client),
                ("Alt+E", self.allow_exact),
            ]
        for key, button in shortcuts:
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(button.click)
        buttons = QGridLayout()
        if self.about_result:
            self.allow_once.setToolTip(
                "The agent gets the result as it is, secret and all (Alt+A, or Enter "
                "outside the reason box)"
            )
            self.deny.setText("Deny (withhold the result)")
            self.deny.setToolTip("The agent gets an error instead of the result (Alt+D, or Escape)")
            for button in self._remembering():
                button.setEnabled(False)
                button.hide()
            buttons.addWidget(self.allow_once, 0, 0)
            buttons.addWidget(self.reason, 1, 0, 1, 2)
            buttons.addWidget(self.deny, 1, 2)
        else:
            buttons.addWidget(self.allow_once, 0, 0)
            buttons.addWidget(self.allow_session, 0, 1)
            buttons.addWidget(self.allow_always, 0, 2)
            buttons.addWidget(self.allow_client, 1, 1)
            buttons.addWidget(self.allow_exact, 1, 2)
            buttons.addWidget(self.reason, 2, 0, 1, 2)
            buttons.addWidget(self.deny, 2, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addLayout(second)
        layout.addWidget(why)
        layout.addWidget(arguments)
        layout.addLayout(buttons)
        layout.addWidget(self.replay)
        self.tick()

    def show_replays(self, replays: Mapping[AlwaysFor, str]) -> None:
        """What each "always" answer would have done to the recorded calls: "Always
        allow"'s under the buttons, each one's in its tooltip."""
        if self.about_result:
            return  # no rule comes of a result's answer
        for always, (button, tip) in self._always_tips.items():
            said = replays.get(always)
            button.setToolTip(tip if said is None else f"{tip}\n\n{said}")
        said = replays.get("tool")
        self.replay.setText("" if said is None else f"If you always allow it: {said}")
        self.replay.setVisible(said is not None)

    def _remembering(self) -> tuple[QPushButton, ...]:
        """The answers that outlive this one call (a session, a rule)."""
        return (self.allow_session, self.allow_always, self.allow_client, self.allow_exact)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Enter allows once, Escape denies; Enter in the reason box denies with the reason
        (the box answered already: its Enter comes here too, unaccepted)."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if not self.reason.hasFocus():
                self.allow_once.click()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.deny.click()
            return
        super().keyPressEvent(event)

    def tick(self) -> None:
        left = max(0.0, self.pending.deadline - time.time())
        what = "withheld" if self.about_result else "denied"
        self.countdown.setText(f"{what} in {int(left) // 60}:{int(left) % 60:02d}")
        self.countdown.setStyleSheet("color: #c62828; font-weight: bold;" if left < 15 else "")

    def _answer(self, approve: bool, remember: Remember, always: AlwaysFor = "tool") -> None:
        if not self.deny.isEnabled():
            return  # answered already (a key and a click, say)
        if self.about_result and remember is not Remember.ONCE:
            return  # a result is answered once: the next one holds another secret
        for button in (
            self.allow_once,
            self.allow_session,
            self.allow_always,
            self.allow_client,
            self.allow_exact,
            self.deny,
        ):
            button.setEnabled(False)  # answered; the card goes when the gateway says so
        reason = self.reason.text().strip() or None
        self._on_answer(
            Answer(
                self.pending.approval_id,
                self._digest,
                approve,
                remember,
                None if approve else reason,
                always,
            )
        )


class ApprovalsPanel(QWidget):
    """Cards for every pending call, oldest first."""

    card_added = Signal(ApprovalCard)

    def __init__(
        self,
        pending: PendingApprovals,
        on_answer: Callable[[Answer], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._pending = pending
        self._on_answer = on_answer
        self.cards: dict[str, ApprovalCard] = {}
        self._empty = QLabel("No calls are waiting for you.")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setStyleSheet("color: #777; padding: 24px;")
        self.notice = QLabel()  # the last call that stopped waiting on its own, and why
        self.notice.setObjectName("withdrawnNotice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #5d4037; padding: 4px 8px;")
        self.notice.hide()
        inner = QWidget()
        self._list = QVBoxLayout(inner)
        self._list.addWidget(self._empty)
        self._list.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.notice)
        layout.addWidget(scroll)
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        pending.changed.connect(self.sync)
        pending.withdrawn.connect(self._withdrawn)
        pending.replayed.connect(self._replayed)
        self.sync()

    def _replayed(self, approval_id: str) -> None:
        card = self.cards.get(approval_id)
        if card is not None:
            card.show_replays(self._pending.replays.get(approval_id, {}))

    def _withdrawn(self, message: str) -> None:
        self.notice.setText(message)
        self.notice.show()

    def sync(self) -> None:
        items = self._pending.items
        for approval_id in [a for a in self.cards if a not in items]:
            card = self.cards.pop(approval_id)
            card.hide()
            card.deleteLater()
        for approval_id, pending in items.items():
            if approval_id not in self.cards:
                card = ApprovalCard(pending, self._pending.risk(pending), self._on_answer)
                card.show_replays(self._pending.replays.get(approval_id, {}))
                self.cards[approval_id] = card
                self._list.insertWidget(self._list.count() - 1, card)
                self.card_added.emit(card)
        self._empty.setVisible(not self.cards)
        if self.cards:
            self._timer.start()
        else:
            self._timer.stop()

    def _tick(self) -> None:
        for card in self.cards.values():
            card.tick()


class ApprovalPrompt(QWidget):
    """A small always-on-top window with the pending calls, hidden when none wait.

    It appears without taking the keyboard (the person may be typing elsewhere, and a
    stray Enter must not answer), and takes it as soon as the person clicks into it: the
    reason box then takes typing, and the keys answer (Enter, Escape, Alt+A/S/W/D).
    """

    def __init__(self, pending: PendingApprovals, on_answer: Callable[[Answer], None]) -> None:
        # Shown refusing the keyboard (every platform honours that, not all honour "show
        # without activating"); a click in it lifts the refusal (_take_keyboard).
        super().__init__(
            None,
            Qt.WindowType.Tool
            | Qt.WindowType.WindowStaysOnTopHint
            | Qt.WindowType.WindowDoesNotAcceptFocus,
        )
        self.setWindowTitle("Lockgate: approval needed")
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.panel = ApprovalsPanel(pending, on_answer, self)
        self.panel.card_added.connect(self._watch_clicks)
        self.heading = QLabel()
        self.heading.setObjectName("promptHeading")
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        self.heading.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.panel)
        self.resize(600, 420)  # a card: its arguments, three rows of answers, the replay
        self._pending = pending
        self._dismissed: set[str] = set()
        self._show_heading()
        pending.changed.connect(self._changed)

    def _watch_clicks(self, card: ApprovalCard) -> None:
        for widget in (card, *card.findChildren(QWidget)):
            widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.MouseButtonPress and not self.isActiveWindow():
            self._take_keyboard()  # a click in it is the person turning to it
        return False

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._take_keyboard()
        super().mousePressEvent(event)

    def _take_keyboard(self) -> None:
        handle = self.windowHandle()
        if handle is not None:  # on the native window: the widget's flags would re-create it
            handle.setFlag(Qt.WindowType.WindowDoesNotAcceptFocus, False)
        self.activateWindow()

    def _show_heading(self) -> None:
        """What waits, in a line: calls that need approval, results that hold a secret."""
        about = {p.about for p in self._pending.items.values()}
        if about == {"result"}:
            text = "A tool's result holds a secret: may it reach the agent?"
        elif "result" in about:
            text = "Calls and results wait for your approval"
        else:
            text = "An agent wants to use a tool that needs your approval"
        self.heading.setText(f"<b>{text}</b>")

    def _changed(self) -> None:
        self._show_heading()
        waiting = set(self._pending.items)
        self._dismissed &= waiting
        if waiting - self._dismissed:
            if not self.isVisible():
                self._place()
                handle = self.windowHandle()
                if handle is not None:  # refusing the keyboard again, until clicked
                    handle.setFlag(Qt.WindowType.WindowDoesNotAcceptFocus, True)
                self.show()  # never exec(): the GUI and the gateway go on
        elif self.isVisible():
            self.hide()

    def _place(self) -> None:
        screen = self.screen().availableGeometry()
        # the frame is not known before the first show: leave room for it
        self.move(screen.right() - self.width() - 24, screen.bottom() - self.height() - 48)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing only hides it until a new call waits; the calls stay in the tab.
        self._dismissed = set(self._pending.items)
        event.accept()


def _risk_text(risk: Risk | None) -> str:
    if risk is None:
        return " risk unknown "
    return f" {risk.level.value} · {risk.category.value} "


_RISK_COLOURS = {"low": "#2e7d32", "medium": "#b26a00", "high": "#c62828", "critical": "#8e0000"}


def _risk_style(risk: Risk | None) -> str:
    colour = _RISK_COLOURS.get(risk.level.value, "#555") if risk else "#777"
    return f"color: white; background: {colour}; border-radius: 3px; padding: 1px 4px;"


def _risk_tooltip(risk: Risk | None) -> str:
    if risk is None:
        return "Lockgate has not listed this server's tools yet"
    return "\n".join(f"{s.source}: {s.detail}" for s in risk.signals) or "no signals"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
