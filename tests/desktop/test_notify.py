"""Approvals answered from a desktop notification, with a real notification daemon: Debian's
dunst on a private D-Bus session bus, drawing on Xvfb. The person's click is dunst's own
context menu (``dunstctl context``), which hands the notification's actions to the menu
program its config names; ours picks the line with the word a test writes into a file,
as a person would pick it. The app runs offscreen in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import DBusAddress, new_signal
from jeepney.io.blocking import open_dbus_connection

from desktop.app import LockgateApp
from desktop.approvals import PendingApprovals
from desktop.notify import ApprovalNotices, NotificationService, approval_text
from proxy.gateway.events import ApprovalPending
from tests.desktop.conftest import ask_policy, set_policy, text_of, wait_result

pytestmark = pytest.mark.slow


def private_bus(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """A session bus of the test's own that starts no service on demand (no service
    folders in its config): on a machine with dunst installed, a session bus would start
    one on the first call to its name, on whatever display its environment names, before
    the test's own had claimed it."""
    config = folder / "bus.conf"
    config.write_text(
        "<busconfig><type>session</type><listen>unix:tmpdir=/tmp</listen>"
        "<auth>EXTERNAL</auth>"
        '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
        '<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>'
    )
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bus.stdout is not None
    return bus, bus.stdout.readline().strip()


class Dunst:
    """The daemon, and what a person does with its notifications."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def displayed(self) -> int:
        out = subprocess.run(
            ["dunstctl", "count", "displayed"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(out.stdout.strip())

    def pick(self, word: str) -> None:
        """Open the newest notification's menu of actions and pick the one saying ``word``."""
        (self.folder / "choice").write_text(word)
        subprocess.run(["dunstctl", "context"], env=self.env, timeout=10, check=True)

    def menu(self) -> str:
        """The actions the last menu offered."""
        return (self.folder / "menu").read_text()


@pytest.fixture
def dunst(display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dunst]:
    for tool in ("dunst", "dunstctl", "dbus-daemon"):
        assert shutil.which(tool), f"{tool} is missing: ./dev test installs it (apt)"
    folder = tmp_path / "dunst"
    folder.mkdir()
    menu = folder / "menu.sh"
    menu.write_text(
        "#!/bin/sh\n"
        f'cat > "{folder}/menu"\n'
        f'grep -m1 -F "$(cat "{folder}/choice")" "{folder}/menu"\n'
    )
    menu.chmod(0o755)
    (folder / "dunstrc").write_text(f"[global]\n    dmenu = {menu}\n")
    bus, address = private_bus(tmp_path)
    env = {**os.environ, "DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": address}
    daemon = subprocess.Popen(
        ["dunst", "-config", str(folder / "dunstrc")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    helper = Dunst(folder, env)
    deadline = time.monotonic() + 20
    while True:  # until dunst owns the bus name
        try:
            helper.displayed()
            break
        except subprocess.CalledProcessError:
            assert time.monotonic() < deadline, "dunst did not start"
            time.sleep(0.05)
    try:
        yield helper
    finally:
        for proc in (daemon, bus):
            proc.terminate()
            proc.wait(10)
        if bus.stdout is not None:
            bus.stdout.close()


@pytest.fixture
def app_with_dunst(dunst: Dunst, running_app: LockgateApp, qtbot: Any) -> LockgateApp:
    # running_app started after the bus address was set, so it found dunst
    qtbot.waitUntil(lambda: running_app.notifications.available, timeout=10_000)
    assert running_app.notifications.actions
    return running_app


def test_deny_from_the_notification_refuses_the_call(qtbot, app_with_dunst, agent, dunst):
    set_policy(app_with_dunst, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "rm -rf ~"})
    qtbot.waitUntil(lambda: dunst.displayed() == 1, timeout=10_000)
    qtbot.waitUntil(lambda: bool(app_with_dunst.notices._ids), timeout=10_000)
    dunst.pick("Deny")
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "a person refused this call" in text_of(result)
    assert "Allow once" in dunst.menu()
    assert "Review" in dunst.menu()
    qtbot.waitUntil(lambda: dunst.displayed() == 0, timeout=10_000)  # and it went away


def test_allow_once_from_the_notification_releases_the_call(qtbot, app_with_dunst, agent, dunst):
    set_policy(app_with_dunst, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "may I?"})
    qtbot.waitUntil(lambda: bool(app_with_dunst.notices._ids), timeout=10_000)
    dunst.pick("Allow once")
    assert text_of(wait_result(qtbot, waiting)) == "Echo: may I?"
    qtbot.waitUntil(lambda: app_with_dunst.calls.rowCount() > 0)


def test_answered_in_the_window_the_notification_goes_away(qtbot, app_with_dunst, agent, dunst):
    set_policy(app_with_dunst, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "hello"})
    qtbot.waitUntil(lambda: len(app_with_dunst.approvals_tab.cards) == 1, timeout=10_000)
    qtbot.waitUntil(lambda: bool(app_with_dunst.notices._ids), timeout=10_000)
    assert dunst.displayed() == 1
    card = next(iter(app_with_dunst.approvals_tab.cards.values()))
    card.allow_once.click()
    assert text_of(wait_result(qtbot, waiting)) == "Echo: hello"
    qtbot.waitUntil(lambda: dunst.displayed() == 0, timeout=10_000)


def test_arguments_too_long_to_show_cannot_be_allowed_from_the_notification(
    qtbot, app_with_dunst, agent, dunst
):
    set_policy(app_with_dunst, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "x" * 2000})
    qtbot.waitUntil(lambda: bool(app_with_dunst.notices._ids), timeout=10_000)
    dunst.pick("Review")
    qtbot.waitUntil(
        lambda: app_with_dunst.window.tabs.tabText(
            app_with_dunst.window.tabs.currentIndex()
        ).startswith("Approvals")
    )
    assert "Allow once" not in dunst.menu()  # only what the person could read is allowable
    assert "Deny" in dunst.menu()
    assert not waiting.done()  # Review answers nothing
    next(iter(app_with_dunst.approvals_tab.cards.values())).deny.click()
    assert wait_result(qtbot, waiting).is_error


def test_without_a_notification_service_the_tray_message_is_used(qtbot, monkeypatch, tmp_path):
    # A bus with no notification service on it, and none to start on demand.
    bus, address = private_bus(tmp_path)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    service = NotificationService()
    told: list[tuple[str, str]] = []
    pending = PendingApprovals(lambda server, tool: None)
    notices = ApprovalNotices(
        service,
        pending,
        on_answer=lambda answer: pytest.fail("nothing was answered"),
        on_review=lambda: None,
        tray_message=lambda title, text: told.append((title, text)),
    )
    try:
        with qtbot.waitSignal(service.ready, timeout=10_000) as ready:
            service.start()
        assert ready.args == [False, False]
        event = _pending({"branch": "main"})
        pending.apply([event])
        notices.announce(event)
        assert told == [approval_text(event)[:2]]
        notices.style = "off"
        notices.announce(event)
        assert len(told) == 1
    finally:
        service.stop()
        bus.terminate()
        bus.wait(10)
        if bus.stdout is not None:
            bus.stdout.close()


def _pending(arguments: dict[str, Any]) -> ApprovalPending:
    return ApprovalPending(
        "a1", "c1", 0.0, 120.0, "cursor", "git", "push", arguments, "git/*", "needs a person"
    )


def test_the_notification_shows_the_whole_arguments_or_says_they_were_cut():
    summary, body, whole = approval_text(_pending({"branch": "main"}))
    assert summary == "Lockgate: cursor wants git/push"
    assert json.dumps({"branch": "main"}) in body
    assert whole
    _, body, whole = approval_text(_pending({"patch": "y" * 1000}))
    assert not whole
    assert "review them in Lockgate" in body


def test_a_click_forged_by_another_program_on_the_bus_answers_nothing(
    qtbot, app_with_dunst, agent, dunst
):
    set_policy(app_with_dunst, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "forge me"})
    qtbot.waitUntil(lambda: bool(app_with_dunst.notices._ids), timeout=10_000)
    [notification_id] = app_with_dunst.notices._ids.values()
    # Any program of this user can put a signal named ActionInvoked on the bus...
    forger = open_dbus_connection(bus="SESSION")
    try:
        forged = new_signal(
            DBusAddress(
                "/org/freedesktop/Notifications", interface="org.freedesktop.Notifications"
            ),
            "ActionInvoked",
            "us",
            (notification_id, "allow"),
        )
        forger.send(forged)
    finally:
        forger.close()
    # ...but only the notification service's own clicks count: the person's Deny, sent
    # after the forgery, is what the agent gets.
    dunst.pick("Deny")
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "a person refused this call" in text_of(result)
