"""The app end to end, by clicking its real widgets: the gateway is real (in the app, on
its worker thread), the servers are real (server-everything, mcp-server-time, the
misbehaving server) and the agents are the mcp SDK's Client over HTTP."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLineEdit, QMessageBox

from desktop.app import LockgateApp
from desktop.calls import DECISION, CallRow
from desktop.main import install_crash_handler
from desktop.tray import Tray
from proxy.audit.log import AuditLog
from proxy.policy.model import load_policy
from tests.desktop.conftest import ask_policy, set_policy, text_of, wait_result


def rows(app: Any) -> list[CallRow]:
    return [app.calls.row(i) for i in range(app.calls.rowCount())]


def test_calls_appear_live_with_their_decisions(qtbot, running_app, agent):
    ok = wait_result(qtbot, agent.call("echo", {"message": "hi"}))
    denied = wait_result(qtbot, agent.call("get-sum", {"a": 1, "b": 2}))
    assert text_of(ok) == "Echo: hi"
    assert denied.is_error
    qtbot.waitUntil(lambda: len(rows(running_app)) >= 2 and bool(rows(running_app)[-1].outcome))
    echo, get_sum = rows(running_app)[-2:]
    assert (echo.tool, echo.decision, echo.outcome, echo.client) == (
        "echo",
        "allowed",
        "ok",
        "claude-test",
    )
    assert (get_sum.tool, get_sum.decision, get_sum.rule) == ("get-sum", "denied", "get-sum")
    # the details pane says why
    view = running_app.live
    view.table.selectRow(view.proxy.rowCount() - 1)
    assert "no sums today" in view.details.toPlainText()
    assert '"a": 1' in view.details.toPlainText()
    assert view.table.model().index(view.proxy.rowCount() - 1, DECISION).data() == "✕ denied"


def test_a_rule_control_writes_policy_json_and_the_next_call_is_blocked(qtbot, running_app, agent):
    assert not wait_result(qtbot, agent.call("echo", {"message": "before"})).is_error
    tools = running_app.tools_view
    running_app.window.show_tab("Tools & rules")
    assert tools.select("everything", "echo")
    editor = tools.editor
    editor.action.setCurrentIndex(editor.action.findData("deny"))
    qtbot.keyClicks(editor.reason, "not now")
    qtbot.mouseClick(editor.apply, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "deny · rule everything/echo" in _rule_text(running_app, "echo"))
    written = json.loads(running_app.paths.policy_file.read_text())
    assert written["tools"]["everything/echo"] == {"action": "deny", "reason": "not now"}
    assert written["tools"]["get-sum"] == {"action": "deny", "reason": "no sums today"}
    blocked = wait_result(qtbot, agent.call("echo", {"message": "after"}))
    assert blocked.is_error
    assert "not now" in text_of(blocked)


def test_a_rule_is_in_force_when_the_app_says_so(qtbot, running_app, agent):
    """The app says "in force" only once the gateway has the new policy, and then the very
    next call meets it, however late the file watcher would have noticed (here: never)."""
    gateway = running_app.host._gateway  # past the façade: the watcher made silent
    running_app.host.call(lambda _: setattr(gateway.watcher, "_debounce", 3600)).result(5)
    assert not wait_result(qtbot, agent.call("echo", {"message": "before"})).is_error
    running_app.set_rule("everything", "echo", {"action": "deny", "reason": "clicked"})
    status = running_app.tools_view.editor.status
    qtbot.waitUntil(lambda: "in force" in status.text(), timeout=10_000)
    assert status.text() == "Saved the rule for everything/echo; it is in force for the next call."
    blocked = wait_result(qtbot, agent.call("echo", {"message": "after"}))
    assert blocked.is_error
    assert "clicked" in text_of(blocked)


def test_blocking_a_tool_withdraws_its_waiting_call_with_the_reason(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "may I?"})
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1, timeout=10_000)
    card = next(iter(running_app.prompt.panel.cards.values()))
    assert card.allow_once.isEnabled()
    running_app.set_rule("everything", "echo", {"action": "deny", "reason": "not today"})
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "not today" in text_of(result)
    qtbot.waitUntil(lambda: not running_app.prompt.panel.cards)
    notice = running_app.approvals_tab.notice
    assert notice.isVisibleTo(running_app.approvals_tab)
    assert notice.text() == (
        "everything/echo no longer waits for you: the policy changed: not today"
    )
    del card  # deleted with the prompt: nothing is left to click "Allow" on


def _rule_text(app: Any, tool: str) -> str:
    model = app.tools
    for row in range(model.rowCount()):
        if model.rows[row].name == tool:
            return str(model.index(row, 3).data())
    return ""


def test_block_this_tool_from_the_live_calls_menu(qtbot, running_app, agent):
    wait_result(qtbot, agent.call("echo", {"message": "x"}))
    qtbot.waitUntil(lambda: any(r.tool == "echo" for r in rows(running_app)))
    row = next(r for r in rows(running_app) if r.tool == "echo")
    menu = running_app.live.rule_menu(row)
    block = next(a for a in menu.actions() if a.text() == "Block this tool")
    block.trigger()
    menu.close()
    qtbot.waitUntil(lambda: _rule_text(running_app, "echo").startswith("deny"))
    assert wait_result(qtbot, agent.call("echo", {"message": "y"})).is_error


def test_an_approval_answered_in_the_prompt_releases_the_call(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "may I?"})
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1, timeout=10_000)
    assert running_app.prompt.isVisible()
    card = next(iter(running_app.prompt.panel.cards.values()))
    assert (
        '"message": "may I?"'
        in card.findChild(type(running_app.live.details), "arguments").toPlainText()
    )
    assert card.countdown.text().startswith("denied in 1:5") or card.countdown.text().startswith(
        "denied in 2:00"
    )
    assert not waiting.done()  # the call really waits for the person
    qtbot.mouseClick(card.allow_once, Qt.MouseButton.LeftButton)
    assert text_of(wait_result(qtbot, waiting)) == "Echo: may I?"
    qtbot.waitUntil(lambda: not running_app.prompt.isVisible())
    qtbot.waitUntil(lambda: rows(running_app)[-1].decision == "approved")


def test_deny_with_a_reason_reaches_the_agent(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "rm -rf"})
    qtbot.waitUntil(lambda: len(running_app.approvals_tab.cards) == 1, timeout=10_000)
    card = next(iter(running_app.approvals_tab.cards.values()))  # the main window's tab
    qtbot.keyClicks(card.reason, "looks dangerous")
    qtbot.mouseClick(card.deny, Qt.MouseButton.LeftButton)
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "looks dangerous" in text_of(result)


def test_the_popup_takes_typing_once_clicked_and_enter_in_the_reason_denies_with_it(
    qtbot, running_app, agent
):
    # That it appears without taking the keyboard is test_approvals_x11's: this platform
    # (offscreen) activates every window it shows.
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "rm -rf"})
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1, timeout=10_000)
    qtbot.waitUntil(running_app.prompt.isVisible)
    running_app.window.present()  # the person is elsewhere
    qtbot.waitUntil(lambda: QApplication.activeWindow() is running_app.window)
    card = next(iter(running_app.prompt.panel.cards.values()))
    qtbot.mouseClick(card.reason, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: QApplication.activeWindow() is running_app.prompt)
    qtbot.waitUntil(card.reason.hasFocus)
    # Typed as a person types: into whatever has the keyboard.
    typing_into = QApplication.focusWidget()
    assert isinstance(typing_into, QLineEdit)
    assert typing_into is card.reason
    QTest.keyClicks(typing_into, "looks dangerous")
    assert typing_into.text() == "looks dangerous"
    QTest.keyClick(typing_into, Qt.Key.Key_Return)  # Enter in it denies
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "looks dangerous" in text_of(result)


@pytest.mark.parametrize(
    ("key", "modifier", "allowed"),
    [
        (Qt.Key.Key_Return, Qt.KeyboardModifier.NoModifier, True),
        (Qt.Key.Key_Escape, Qt.KeyboardModifier.NoModifier, False),
        (Qt.Key.Key_A, Qt.KeyboardModifier.AltModifier, True),
        (Qt.Key.Key_D, Qt.KeyboardModifier.AltModifier, False),
    ],
    ids=["enter-allows-once", "escape-denies", "alt-a-allows-once", "alt-d-denies"],
)
def test_the_keys_answer_the_card_that_has_the_keyboard(
    qtbot, running_app, agent, key, modifier, allowed
):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "by key"})
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1, timeout=10_000)
    card = next(iter(running_app.prompt.panel.cards.values()))
    qtbot.mouseClick(card.countdown, Qt.MouseButton.LeftButton)  # into the card, not its box
    qtbot.waitUntil(lambda: QApplication.activeWindow() is running_app.prompt)
    qtbot.waitUntil(card.hasFocus)
    focused = QApplication.focusWidget()
    assert focused is card
    QTest.keyClick(focused, key, modifier)
    result = wait_result(qtbot, waiting)
    assert result.is_error is not allowed
    assert (text_of(result) == "Echo: by key") is allowed


def test_an_unanswered_approval_times_out_as_denied(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy(timeout=1))
    waiting = agent.call("echo", {"message": "anyone?"})
    qtbot.waitUntil(lambda: len(running_app.pending) == 1, timeout=10_000)
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "nobody approved this call within 1 s" in text_of(result)
    qtbot.waitUntil(lambda: len(running_app.pending) == 0)
    assert not running_app.prompt.panel.cards


def test_always_allow_writes_the_rule_and_allow_for_session_remembers(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "one"})
    qtbot.waitUntil(lambda: len(running_app.pending) == 1, timeout=10_000)
    card = next(iter(running_app.prompt.panel.cards.values()))
    qtbot.mouseClick(card.allow_always, Qt.MouseButton.LeftButton)
    assert not wait_result(qtbot, waiting).is_error
    qtbot.waitUntil(lambda: "everything/echo" in running_app.paths.policy_file.read_text())
    rule = json.loads(running_app.paths.policy_file.read_text())["tools"]["everything/echo"]
    assert rule == {"action": "allow"}
    qtbot.waitUntil(lambda: _rule_text(running_app, "echo").startswith("allow"))
    assert not wait_result(qtbot, agent.call("echo", {"message": "two"})).is_error
    assert len(running_app.pending) == 0  # nobody was asked the second time


def test_several_approvals_pending_at_once(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    first = agent.call("echo", {"message": "1"})
    second = agent.call("echo", {"message": "2"}, client="cursor-test")
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 2, timeout=10_000)
    cards = list(running_app.prompt.panel.cards.values())
    by_client = {c.pending.client: c for c in cards}
    qtbot.mouseClick(by_client["cursor-test"].deny, Qt.MouseButton.LeftButton)
    assert wait_result(qtbot, second).is_error
    assert not first.done()
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1)
    qtbot.mouseClick(by_client["claude-test"].allow_once, Qt.MouseButton.LeftButton)
    assert not wait_result(qtbot, first).is_error


def test_pause_denies_everything_until_resumed(qtbot, running_app, agent):
    qtbot.mouseClick(running_app.window.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: running_app.state.paused)
    assert running_app.window.banner.isVisible()
    assert running_app.window.pause_button.text() == "Resume tool calls"
    paused = wait_result(qtbot, agent.call("echo", {"message": "x"}))
    assert paused.is_error
    assert "paused" in text_of(paused)
    qtbot.mouseClick(running_app.window.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not running_app.state.paused)
    assert not wait_result(qtbot, agent.call("echo", {"message": "y"})).is_error


def test_a_broken_policy_is_shown_and_the_last_good_one_stays(qtbot, running_app, agent):
    path = running_app.paths.policy_file
    path.write_text('{"version": "1", "default": "allow", "tools": {"echo": {"action": "nope"}}}')
    qtbot.waitUntil(lambda: running_app.state.policy_error is not None, timeout=10_000)
    view = running_app.policy_view
    assert view.error.isVisible() is False or view.error.toPlainText()
    assert 'tools."echo".action' in view.error.toPlainText()
    assert "policy.json:1:" in view.error.toPlainText()
    assert "policy.json has errors" in running_app.window.banner.text()
    # the last good policy (get-sum denied) is still in force
    assert wait_result(qtbot, agent.call("get-sum", {"a": 1, "b": 1})).is_error
    # and the rule controls refuse to write over a file the person is editing
    running_app.set_rule("everything", "echo", {"action": "deny"})
    qtbot.waitUntil(lambda: "fix them" in running_app.tools_view.editor.status.text())
    assert '"nope"' in path.read_text()


def test_a_crashed_server_is_reported_and_restartable(qtbot, running_app, agent):
    assert not wait_result(qtbot, agent.call("echo", {}, server="misbehaving")).is_error
    with pytest.raises(Exception, match="went down"):
        wait_result(qtbot, agent.call("exit", {}, server="misbehaving"))
    qtbot.waitUntil(lambda: running_app.servers.down_count() == 1, timeout=10_000)
    assert running_app.state.servers_down == 1
    servers = running_app.servers_view
    servers.select("misbehaving")
    qtbot.mouseClick(servers.restart, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: running_app.servers.down_count() == 0, timeout=10_000)
    assert "misbehaving" in servers.status.text()


def test_the_tools_view_lists_every_server_with_risks(qtbot, running_app):
    model = running_app.tools
    names = {(r.server, r.name) for r in model.rows}
    assert ("everything", "echo") in names
    assert ("time", "get_current_time") in names
    assert ("misbehaving", "garbage") in names
    assert model.tool_count("time") == 2
    assert all(r.risk is not None for r in model.rows)


@pytest.mark.qt_no_exception_capture
def test_an_error_in_a_slot_opens_a_dialog_and_is_logged_while_the_gateway_serves(
    qtbot, running_app, agent, tmp_path
):
    log_dir = tmp_path / "logs"
    install_crash_handler(log_dir, lambda: running_app.window)

    def boom() -> None:
        raise ValueError("a bug in a slot")

    QTimer.singleShot(0, boom)
    qtbot.waitUntil(lambda: _error_box() is not None)
    box = _error_box()
    assert box is not None
    assert "ValueError: a bug in a slot" in box.text()
    assert not box.isModal()
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "ValueError: a bug in a slot" in (log_dir / "desktop.log").read_text()
    assert not wait_result(qtbot, agent.call("echo", {"message": "still here"})).is_error
    box.close()


def _error_box() -> QMessageBox | None:
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QMessageBox) and widget.isVisible():
            return widget
    return None


def test_quit_answers_the_waiting_calls_and_completes_the_audit_log(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    for i in range(3):
        assert not wait_result(qtbot, agent.call("get-env", {})).is_error or i < 0
    waiting = agent.call("echo", {"message": "pending at quit"})
    qtbot.waitUntil(lambda: len(running_app.pending) == 1, timeout=10_000)
    started = time.monotonic()
    running_app.close()
    assert time.monotonic() - started < 15
    result = wait_result(qtbot, waiting)
    assert result.is_error
    assert "shutting down" in text_of(result)
    with AuditLog(running_app.paths.audit_db) as audit:
        records = audit.query(limit=10)
    assert [r.tool for r in records][:4] == ["echo", "get-env", "get-env", "get-env"]
    assert records[0].decision.value == "refused"


def test_first_run_suggests_a_policy_from_the_tools_and_writes_it_when_asked(qtbot, app_paths):
    app_paths.policy_file.unlink()  # a first run: no policy.json yet
    app = LockgateApp(app_paths, port=0)
    app.start()
    try:
        qtbot.waitUntil(lambda: app.state.running, timeout=30_000)
        view = app.policy_view
        app.window.tabs.setCurrentWidget(view)
        assert view.suggest_button.isVisible()
        assert not view.suggestion.isVisible()
        qtbot.mouseClick(view.suggest_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(view.suggestion.isVisible, timeout=60_000)
        shown = json.loads(view.suggestion.toPlainText())
        assert shown["default"] == "ask"
        assert shown["tools"]["time/get_current_time"]["action"] == "allow"
        assert not app_paths.policy_file.exists()  # shown, not written
        qtbot.mouseClick(view.write_suggestion, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not view.suggest_button.isVisible(), timeout=10_000)
        assert json.loads(app_paths.policy_file.read_text()) == shown
        assert load_policy(app_paths.policy_file).default.value == "ask"
        qtbot.waitUntil(lambda: app.policy is not None and app.policy.default.value == "ask")
    finally:
        app.close()
        app.prompt.close()
        app.window.hide()
        app.window.deleteLater()


def _children() -> list[str]:
    """The command lines of this test process's child processes (Linux /proc)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid():
                with open(f"/proc/{pid}/cmdline") as cmdline:
                    found.append(cmdline.read().replace("\0", " "))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_quitting_while_tools_are_listed_leaves_no_server_running(qtbot, app_paths):
    # Listing starts every server; quitting in the middle must stop them all. They were
    # left running when asyncio's own shutdown cancelled the listing: a server that does
    # not exit when its stdin closes (this one sleeps) was never sent SIGTERM.
    servers = json.loads(app_paths.servers_file.read_text())
    sleepy = "import time; time.sleep(120)  # lockgate-test-sleepy"
    servers["mcpServers"]["sleepy"] = {"command": sys.executable, "args": ["-c", sleepy]}
    app_paths.servers_file.write_text(json.dumps(servers))
    app = LockgateApp(app_paths, port=0)
    app.start()
    qtbot.waitUntil(lambda: app.state.running, timeout=30_000)
    qtbot.waitUntil(lambda: any("lockgate-test-sleepy" in c for c in _children()), timeout=10_000)
    app.close()
    app.prompt.close()
    app.window.hide()
    app.window.deleteLater()
    assert [c for c in _children() if "lockgate-test-sleepy" in c] == []


def test_a_deleted_policy_is_said_loudly_keeps_its_rules_and_is_restored_by_a_click(
    qtbot, running_app, agent
):
    policy_file = running_app.paths.policy_file
    original = policy_file.read_bytes()
    policy_file.unlink()
    qtbot.waitUntil(lambda: bool(running_app.state.policy_error), timeout=10_000)
    assert "policy.json was deleted; the last policy in force stays" in (
        running_app.window.banner.text()
    )
    assert "policy.json was deleted" in running_app.state.summary()  # the tray's tooltip
    qtbot.waitUntil(lambda: not running_app.policy_view.restore_button.isHidden())
    denied = wait_result(qtbot, agent.call("get-sum", {"a": 1, "b": 2}))
    assert "no sums today" in text_of(denied)  # the blocked tool stays blocked
    qtbot.mouseClick(running_app.policy_view.restore_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(policy_file.exists, timeout=10_000)
    assert policy_file.read_bytes() == original
    qtbot.waitUntil(lambda: running_app.state.policy_error is None, timeout=10_000)
    assert "policy.json" not in running_app.window.banner.text()
    qtbot.waitUntil(
        lambda: not running_app.policy_view.restore_button.isVisibleTo(running_app.window)
    )


def test_a_problem_coming_and_going_does_not_move_the_tabs(qtbot, running_app):
    window = running_app.window
    window.present()
    qtbot.waitUntil(window.isVisible)
    top = window.tabs.mapTo(window, window.tabs.rect().topLeft()).y()
    window.show_state(replace(running_app.state, paused=True, servers_error="x"), None)
    qtbot.waitUntil(window.banner.isVisible)
    assert window.tabs.mapTo(window, window.tabs.rect().topLeft()).y() == top
    window.show_state(replace(running_app.state, paused=False, servers_error=None), None)
    qtbot.waitUntil(lambda: not window.banner.isVisible())
    assert window.tabs.mapTo(window, window.tabs.rect().topLeft()).y() == top


def test_the_recently_blocked_menu_says_when_nothing_was_blocked(qtbot):
    tray = Tray(poll_ms=60_000)
    (placeholder,) = tray._blocked.actions()
    assert placeholder.text() == "Nothing was blocked since Lockgate started"
    assert not placeholder.isEnabled()
    picked: list[str] = []
    tray.blocked(["files/rm: denied by the rule rm"], picked.append)
    (entry,) = tray._blocked.actions()
    assert entry.isEnabled()
    entry.trigger()
    assert picked == ["files/rm: denied by the rule rm"]


def test_the_tray_menu_has_an_entry_per_call_waiting_for_the_person(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "from the tray"})
    menu = running_app.tray._approvals
    qtbot.waitUntil(lambda: len(menu.actions()) == 1, timeout=10_000)
    (entry,) = menu.actions()
    assert entry.text() == "claude-test → everything/echo"
    qtbot.waitUntil(lambda: menu.title() == "Pending approvals (1)")
    assert menu.isEnabled()
    entry.trigger()
    assert running_app.window.tabs.currentWidget() is running_app.approvals_tab
    card = next(iter(running_app.approvals_tab.cards.values()))
    qtbot.mouseClick(card.allow_once, Qt.MouseButton.LeftButton)
    assert not wait_result(qtbot, waiting).is_error
    qtbot.waitUntil(lambda: not menu.actions(), timeout=10_000)
    qtbot.waitUntil(lambda: menu.title() == "No pending approvals")
    assert not menu.isEnabled()


def _card(app: Any, qtbot: Any) -> Any:
    qtbot.waitUntil(lambda: len(app.approvals_tab.cards) == 1, timeout=10_000)
    return next(iter(app.approvals_tab.cards.values()))


def test_always_for_this_client_only_writes_a_case_the_other_client_still_asks(
    qtbot, running_app, agent
):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "one"}, client="cursor-test")
    card = _card(running_app, qtbot)
    assert card.allow_client.text() == "Always, for cursor-test only"
    qtbot.mouseClick(card.allow_client, Qt.MouseButton.LeftButton)
    assert text_of(wait_result(qtbot, waiting)) == "Echo: one"
    qtbot.waitUntil(lambda: _cases(running_app, "everything/echo") is not None)
    assert _cases(running_app, "everything/echo") == [
        {"clients": ["cursor-test"], "action": "allow"}
    ]
    qtbot.waitUntil(lambda: "in force" in running_app.window.statusBar().currentMessage())
    # cursor-test is allowed from now on, without a person
    assert text_of(wait_result(qtbot, agent.call("echo", {"message": "two"}, client="cursor-test")))
    # claude-test still waits for one
    other = agent.call("echo", {"message": "three"}, client="claude-test")
    card = _card(running_app, qtbot)
    assert card.pending.client == "claude-test"
    qtbot.mouseClick(card.deny, Qt.MouseButton.LeftButton)
    assert wait_result(qtbot, other).is_error


def test_always_these_exact_arguments_allows_only_that_call(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "ls"})
    card = _card(running_app, qtbot)
    qtbot.mouseClick(card.allow_exact, Qt.MouseButton.LeftButton)
    assert text_of(wait_result(qtbot, waiting)) == "Echo: ls"
    qtbot.waitUntil(lambda: "in force" in running_app.window.statusBar().currentMessage())
    case = _cases(running_app, "everything/echo")[0]
    assert case["arguments"]["properties"] == {"message": {"const": "ls"}}
    assert text_of(wait_result(qtbot, agent.call("echo", {"message": "ls"}))) == "Echo: ls"
    other = agent.call("echo", {"message": "rm -rf /"})
    card = _card(running_app, qtbot)  # other arguments: a person is asked again
    assert card.pending.arguments == {"message": "rm -rf /"}
    qtbot.mouseClick(card.deny, Qt.MouseButton.LeftButton)
    assert wait_result(qtbot, other).is_error


def test_arguments_too_long_for_a_rule_cannot_be_allowed_exactly(qtbot, running_app, agent):
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "x" * 5000})
    card = _card(running_app, qtbot)
    assert not card.allow_exact.isEnabled()
    assert "too long" in card.allow_exact.toolTip()
    qtbot.mouseClick(card.deny, Qt.MouseButton.LeftButton)
    assert wait_result(qtbot, waiting).is_error


def test_allow_for_this_client_only_from_the_live_calls_menu(qtbot, running_app, agent):
    set_policy(
        running_app,
        qtbot,
        {"version": "1", "default": "allow", "tools": {"echo": {"action": "deny"}}},
    )
    assert wait_result(qtbot, agent.call("echo", {"message": "x"}, client="cursor-test")).is_error
    qtbot.waitUntil(lambda: any(r.tool == "echo" for r in rows(running_app)))
    row = next(r for r in rows(running_app) if r.tool == "echo")
    menu = running_app.live.rule_menu(row)
    only = next(a for a in menu.actions() if a.text() == "Allow for cursor-test only")
    only.trigger()
    menu.close()
    qtbot.waitUntil(lambda: "in force" in running_app.window.statusBar().currentMessage())
    written = load_policy(running_app.paths.policy_file).document["tools"]["everything/echo"]
    assert written == {"action": "deny", "when": [{"clients": ["cursor-test"], "action": "allow"}]}
    assert not wait_result(
        qtbot, agent.call("echo", {"message": "y"}, client="cursor-test")
    ).is_error
    assert wait_result(qtbot, agent.call("echo", {"message": "z"}, client="claude-test")).is_error


def _cases(app: Any, pattern: str) -> Any:
    tools = json.loads(app.paths.policy_file.read_text())["tools"]
    return tools.get(pattern, {}).get("when")
