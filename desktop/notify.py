"""Desktop notifications that can answer an approval.

Linux desktops show notifications through one D-Bus service, ``org.freedesktop.
Notifications`` (GNOME Shell, KDE Plasma, dunst, mako, xfce4-notifyd...); most of them
draw buttons for a notification's *actions* and say which was clicked with the
``ActionInvoked`` signal. Qt's tray balloon cannot carry buttons, so Lockgate speaks to
that service itself, with jeepney (pure Python; the keyring already uses it), on threads
of its own: the GUI thread never waits for the bus.

A call waiting for a person gets one notification (so does a result that holds a secret:
its title says so): "Allow once" and "Deny" where the arguments fit in it (a person may
allow only what they were shown; longer arguments get only "Deny" and "Review…"), and
"Review…" opens the Approvals tab. The notification goes
away when the call stops waiting, however it was answered. Where there is no such
service, or the style setting says "plain", the tray's own message is shown instead;
"off" shows nothing (the popup and the tray still do).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from jeepney import DBusAddress, MatchRule, MessageType, message_bus, new_method_call
from jeepney.io.threading import DBusRouter, open_dbus_connection
from jeepney.low_level import HeaderFields
from PySide6.QtCore import QObject, Signal

from desktop.approvals import Answer, PendingApprovals, digest_of
from proxy.gateway.events import ApprovalPending

__all__ = ["ApprovalNotices", "NotificationService", "NotificationStyle", "approval_text"]

log = logging.getLogger(__name__)

NotificationStyle = Literal["actions", "plain", "off"]

_PATH = "/org/freedesktop/Notifications"
_NAME = "org.freedesktop.Notifications"
_SHOWN_ARGUMENTS = 300  # characters of arguments a notification shows; longer: review them
_CALL_TIMEOUT = 5.0  # seconds for one D-Bus call; a notification service that hangs is none


class NotificationService(QObject):
    """The desktop's notification service, if the session has one (``ready`` says).

    Signals come from the bus threads; Qt queues them to the GUI thread.
    """

    ready = Signal(bool, bool)  # there is a service; it shows actions
    shown = Signal(str, int)  # our key for it, the service's notification id
    invoked = Signal(int, str)  # notification id, action key
    closed = Signal(int)  # notification id

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="notify")
        self._router: Any = None
        self._signals: queue.Queue[Any] = queue.Queue(maxsize=256)
        self._filter: Any = None
        self._listener: threading.Thread | None = None
        self._owner: str | None = None  # the service's unique bus name
        self.available = False
        self.actions = False
        self.markup = False

    def start(self) -> None:
        """Connect to the session bus off the GUI thread; ``ready`` tells the outcome."""
        self._calls.submit(self._connect)

    def _connect(self) -> None:
        router = None
        try:
            router = DBusRouter(open_dbus_connection(bus="SESSION"))
            address = DBusAddress(_PATH, bus_name=_NAME, interface=_NAME)
            reply = router.send_and_get_reply(
                new_method_call(address, "GetCapabilities"), timeout=_CALL_TIMEOUT
            )
            if reply.header.message_type is MessageType.error:
                raise RuntimeError(f"{_NAME}: {reply.body[0] if reply.body else 'no answer'}")
            capabilities = set(reply.body[0]) if reply.body else set()
            owner = router.send_and_get_reply(
                message_bus.GetNameOwner(_NAME), timeout=_CALL_TIMEOUT
            ).body[0]
            # Only the service's own signals: any program of this user can send a signal
            # named ActionInvoked, and only a click in the real service is the person's.
            rule = MatchRule(type="signal", interface=_NAME, path=_PATH, sender=owner)
            self._filter = router.filter(rule, queue=self._signals)
            router.send_and_get_reply(message_bus.AddMatch(rule), timeout=_CALL_TIMEOUT)
        except Exception as exc:  # no bus, no service, a service that does not answer
            log.info("no desktop notification service (%s); the tray's messages are used", exc)
            if router is not None:
                router.close()
                router.conn.close()
            self.ready.emit(False, False)
            return
        self._router, self._address, self._owner = router, address, owner
        self.available = True
        self.actions = "actions" in capabilities
        self.markup = "body-markup" in capabilities
        self._listener = threading.Thread(target=self._listen, name="notify-signals", daemon=True)
        self._listener.start()
        self.ready.emit(True, self.actions)

    def _listen(self) -> None:
        while True:
            message = self._signals.get()
            if message is None:
                return
            fields = message.header.fields
            if fields.get(HeaderFields.sender) != self._owner:
                continue  # not from the service (the bus delivers what the rule matched)
            member = fields.get(HeaderFields.member)
            body = message.body
            if member == "ActionInvoked" and len(body) == 2:
                self.invoked.emit(int(body[0]), str(body[1]))
            elif member == "NotificationClosed" and body:
                self.closed.emit(int(body[0]))

    def show(
        self,
        key: str,
        summary: str,
        body: str,
        actions: Sequence[tuple[str, str]],
        timeout_ms: int,
    ) -> None:
        """Show a notification; ``shown`` then gives its id under ``key``."""
        if not self.available:
            return
        flat = [part for action in actions for part in action] if self.actions else []
        text = _markup_escaped(body) if self.markup else body
        hints = {"urgency": ("y", 2), "category": ("s", "im.received")}

        def notify() -> None:
            message = new_method_call(
                self._address,
                "Notify",
                "susssasa{sv}i",
                ("Lockgate", 0, "dialog-warning", summary, text, flat, hints, timeout_ms),
            )
            reply = self._router.send_and_get_reply(message, timeout=_CALL_TIMEOUT)
            if reply.body:
                self.shown.emit(key, int(reply.body[0]))

        self._calls.submit(_logged(notify))

    def close_notification(self, notification_id: int) -> None:
        if not self.available:
            return

        def close() -> None:
            message = new_method_call(self._address, "CloseNotification", "u", (notification_id,))
            self._router.send_and_get_reply(message, timeout=_CALL_TIMEOUT)

        self._calls.submit(_logged(close))

    def stop(self) -> None:
        """Close the bus connection; notifications already shown stay up to the desktop."""
        self.available = False
        with contextlib.suppress(queue.Full):
            self._signals.put_nowait(None)

        def shut() -> None:
            if self._filter is not None:
                self._filter.close()
            if self._router is not None:
                self._router.close()
                self._router.conn.close()

        self._calls.submit(_logged(shut))
        self._calls.shutdown(wait=True)  # at most a D-Bus call timeout


def _markup_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _logged(work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception:
            log.warning("a desktop notification failed", exc_info=True)

    return run


def approval_text(pending: ApprovalPending) -> tuple[str, str, bool]:
    """The notification's title and body for a waiting call, and whether the body shows
    its whole arguments (only then may the notification allow it). For a question about
    a result (the call ran, its result holds a secret) the title says so, and the body
    starts with what was found."""
    if pending.about == "result":
        summary = f"Lockgate: the result of {pending.server}/{pending.tool} holds a secret"
    else:
        summary = f"Lockgate: {pending.client} wants {pending.server}/{pending.tool}"
    arguments = json.dumps(pending.arguments, ensure_ascii=False, sort_keys=True)
    whole = len(arguments) <= _SHOWN_ARGUMENTS
    if whole:
        shown = f"Arguments: {arguments}"
    else:
        shown = (
            f"Arguments: {arguments[:_SHOWN_ARGUMENTS]}… ({len(arguments)} characters: "
            "review them in Lockgate before allowing)"
        )
    if pending.about == "result":
        body = f"{pending.reason}\nCalled by {pending.client}. {shown}"
        return summary, body, whole
    return summary, f"{shown}\n{pending.reason}", whole


class ApprovalNotices(QObject):
    """One notification per call waiting for a person, gone once the call stops waiting."""

    def __init__(
        self,
        service: NotificationService,
        pending: PendingApprovals,
        *,
        on_answer: Callable[[Answer], None],
        on_review: Callable[[], None],
        tray_message: Callable[[str, str], None],
        clock: Callable[[], float] = time.time,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.style: NotificationStyle = "actions"
        self._service = service
        self._pending = pending
        self._on_answer = on_answer
        self._on_review = on_review
        self._tray_message = tray_message
        self._clock = clock
        self._ids: dict[str, int] = {}  # approval id -> notification id
        self._approvals: dict[int, tuple[str, str, bool]] = {}  # id -> approval, digest, whole
        self._being_shown: dict[str, tuple[str, bool]] = {}  # sent, no id back yet
        service.shown.connect(self._shown)
        service.invoked.connect(self._invoked)
        service.closed.connect(self._closed)
        pending.changed.connect(self._withdraw_answered)

    def announce(self, event: ApprovalPending) -> None:
        """Tell the person a call waits for them, the way the style setting says."""
        if self.style == "off":
            return
        summary, body, whole = approval_text(event)
        if self.style == "plain" or not self._service.available:
            self._tray_message(summary, body)
            return
        actions = [("default", "Review…")]
        if whole:
            actions.append(("allow", "Allow once"))
        actions.append(("deny", "Deny"))
        timeout_ms = max(1000, int((event.deadline - self._clock()) * 1000))
        self._service.show(event.approval_id, summary, body, actions, timeout_ms)
        self._being_shown[event.approval_id] = (digest_of(event), whole)

    def _shown(self, approval_id: str, notification_id: int) -> None:
        digest, whole = self._being_shown.pop(approval_id, ("", False))
        if approval_id not in self._pending.items:  # answered while it was being shown
            self._service.close_notification(notification_id)
            return
        self._ids[approval_id] = notification_id
        self._approvals[notification_id] = (approval_id, digest, whole)

    def _invoked(self, notification_id: int, action: str) -> None:
        known = self._approvals.get(notification_id)
        if known is None:
            return  # another program's notification, or one already answered
        approval_id, digest, whole = known
        if action == "allow" and whole:
            self._on_answer(Answer(approval_id, digest, approve=True))
        elif action == "deny":
            self._on_answer(Answer(approval_id, digest, approve=False))
        else:  # "default" (a click on the notification itself) or anything unknown
            self._on_review()
            return
        self._forget(notification_id)
        self._service.close_notification(notification_id)

    def _closed(self, notification_id: int) -> None:
        self._forget(notification_id)

    def _withdraw_answered(self) -> None:
        for approval_id, notification_id in list(self._ids.items()):
            if approval_id not in self._pending.items:
                self._forget(notification_id)
                self._service.close_notification(notification_id)

    def _forget(self, notification_id: int) -> None:
        known = self._approvals.pop(notification_id, None)
        if known is not None:
            self._ids.pop(known[0], None)
