"""The Settings tab: settings.json shown and saved with its checks, by clicking."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from desktop.window import TABS
from proxy.config.settings import settings_file


def test_the_settings_tab_saves_what_changed_and_says_when_it_applies(qtbot, running_app):
    view = running_app.settings_view
    running_app.window.show_tab(TABS[6])
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
    running_app.window.show_tab(TABS[6])  # opening the tab reads the file again
    view = running_app.settings_view
    qtbot.waitUntil(lambda: "settings.json has an error" in view.status.text(), timeout=10_000)
    assert not view.save.isEnabled()
    assert path.read_text() == '{"port": "six"}'
