"""The Settings tab: settings.json shown and saved with its checks, by clicking."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from proxy.config.settings import settings_file
from tests.desktop.conftest import set_policy, wait_result


def test_the_settings_tab_saves_what_changed_and_says_when_it_applies(qtbot, running_app):
    view = running_app.settings_view
    running_app.window.show_tab("Settings")
    qtbot.waitUntil(lambda: "settings.json" in view.where.text(), timeout=10_000)
    assert view.port.value() == 5625  # nothing set: the default
    assert view.max_message.value() == 16
    qtbot.waitUntil(lambda: view.audit_size.text().endswith("audit.db)"), timeout=10_000)
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    assert view.status.text() == "Nothing changed."
    view.port.setValue(6123)
    view.max_message.setValue(32)
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.status.text().startswith("Saved"), timeout=10_000)
    assert "from its next start" in view.status.text()
    written = json.loads(settings_file(running_app.paths).read_text())
    assert written == {"port": 6123, "max_message_bytes": 32 * 1024 * 1024}


def test_a_broken_settings_file_is_shown_and_never_saved_over(qtbot, running_app):
    path = settings_file(running_app.paths)
    path.write_text('{"port": "six"}')
    running_app.window.show_tab("Settings")  # opening the tab reads the file again
    view = running_app.settings_view
    qtbot.waitUntil(lambda: "settings.json has an error" in view.status.text(), timeout=10_000)
    assert not view.save.isEnabled()
    assert path.read_text() == '{"port": "six"}'


def test_approval_time_notifications_and_retention_are_in_force_once_saved(
    qtbot, running_app, agent
):
    view = running_app.settings_view
    running_app.window.show_tab("Settings")
    qtbot.waitUntil(lambda: "settings.json" in view.where.text(), timeout=10_000)
    assert view.approval_timeout.value() == 120
    assert view.retention.value() == 90
    assert view.notifications.currentData() == "actions"
    view.approval_timeout.setValue(40)
    view.retention.setValue(0)
    assert view.retention.text() == "forever"
    view.notifications.setCurrentIndex(view.notifications.findData("plain"))
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.status.text().startswith("Saved"), timeout=10_000)
    assert "in force now" in view.status.text()
    written = json.loads(settings_file(running_app.paths).read_text())
    assert written == {
        "approval_timeout_seconds": 40,
        "audit_retention_days": 0,
        "notifications": "plain",
    }
    qtbot.waitUntil(lambda: running_app.notices.style == "plain", timeout=10_000)
    # a rule that asks without saying how long: the person now has 40 s, not 120
    set_policy(
        running_app,
        qtbot,
        {"version": "1", "default": "allow", "tools": {"echo": {"action": "ask"}}},
    )
    waiting = agent.call("echo", {"message": "how long?"})
    qtbot.waitUntil(lambda: len(running_app.approvals_tab.cards) == 1, timeout=10_000)
    card = next(iter(running_app.approvals_tab.cards.values()))
    assert card.countdown.text() in ("denied in 0:40", "denied in 0:39")
    card.deny.click()
    assert wait_result(qtbot, waiting).is_error


def test_the_logs_size_bound_team_policy_and_export_are_saved_and_checked(
    qtbot, running_app, tmp_path
):
    view = running_app.settings_view
    view.where.setText("")
    view.audit_size.setText("")
    running_app.window.show_tab("Settings")  # the tab reads the file again: wait for it
    qtbot.waitUntil(lambda: view.audit_size.text().endswith("audit.db)"), timeout=10_000)
    assert view.max_size.text() == "no limit"
    assert (view.team_policy.text(), view.otlp_endpoint.text()) == ("", "")
    view.max_size.setValue(5)  # under the least bound: refused, in the setting's words
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "audit_max_megabytes" in view.status.text(), timeout=10_000)
    assert "from 10 to" in view.status.text()
    assert not settings_file(running_app.paths).exists()
    view.max_size.setValue(50)
    view.team_policy.setText("team.json")  # not absolute: refused, nothing else lost
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "team_policy" in view.status.text(), timeout=10_000)
    assert not settings_file(running_app.paths).exists()  # all or none: 50 MB not written
    team = tmp_path / "team.json"
    view.team_policy.setText(str(team))
    view.otlp_endpoint.setText("http://127.0.0.1:4318")
    qtbot.mouseClick(view.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.status.text().startswith("Saved"), timeout=10_000)
    text = view.status.text()
    assert "team_policy, otlp_endpoint from the gateway's next start" in text, text
    written = json.loads(settings_file(running_app.paths).read_text())
    assert written == {
        "audit_max_megabytes": 50,
        "team_policy": str(team),
        "otlp_endpoint": "http://127.0.0.1:4318",
    }
    # the size bound is in force at once
    qtbot.waitUntil(
        lambda: running_app.host.call(lambda c: c.audit_max_megabytes).result(10) == 50,
        timeout=10_000,
    )
