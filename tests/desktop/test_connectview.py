"""The "Connect your agents" view, clicked as a person would: a fake home with real-format
client files, the real keyring (GNOME Keyring on a private bus), the app's own gateway,
and a routed entry launched exactly as the client would launch it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from PySide6.QtCore import Qt

from desktop.app import LockgateApp
from desktop.tray import state_icon_name
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from tests.desktop.conftest import started_app
from tests.support.live import BIN, EVERYTHING_JS, lockgate_command

SECRET = "sk-live-gui-5d1e"


def cursor_file(home: Path) -> tuple[Path, str]:
    path = home / ".cursor" / "mcp.json"
    text = json.dumps(
        {
            "mcpServers": {
                "time": {"command": str(BIN / "mcp-server-time")},
                "everything": {
                    "command": "node",
                    "args": [str(EVERYTHING_JS), "stdio"],
                    "env": {"EVERYTHING_API_KEY": SECRET},
                },
            }
        },
        indent=2,
    )
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path, text


@pytest.fixture
def app(qtbot: Any, app_paths: Paths, os_keyring: Any, tmp_path: Path) -> Any:
    home = tmp_path / "home"
    (home / ".config" / "Claude").mkdir(parents=True)
    (home / ".config" / "Claude" / "claude_desktop_config.json").write_text("{not json")
    with started_app(
        qtbot, app_paths, secrets=SecretStore(os_keyring), home=home, launcher=[lockgate_command()]
    ) as app:
        yield app


def test_route_and_put_back_from_the_window(qtbot, app, app_paths):
    path, original = cursor_file(app.home)
    view = app.connect_view
    app.window.show_tab("Connect your agents")
    qtbot.mouseClick(view.rescan, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.table.rowCount() == 2, timeout=10_000)
    rows = {view.table.item(r, 0).text(): r for r in range(2)}
    # A broken file is shown as such, and cannot be routed.
    view.table.selectRow(rows["Claude Desktop"])
    assert view.table.item(rows["Claude Desktop"], 3).text() == "cannot read"
    assert "not valid JSON" in view.details.text()
    assert not view.route_button.isEnabled()
    assert not view.via.model().item(1).isEnabled()  # Claude Desktop: commands only
    assert "Claude Desktop starts its servers as commands only" in view.via.toolTip()
    assert "commands only" in view.via.model().item(1).toolTip()  # said where it is greyed

    view.table.selectRow(rows["Cursor"])
    assert view.table.item(rows["Cursor"], 3).text() == "0 of 2"
    assert view.route_button.isEnabled()
    assert not view.unroute_button.isEnabled()  # nothing of it is routed yet
    assert "commands only" not in view.via.toolTip()
    qtbot.mouseClick(view.route_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "now go through Lockgate" in view.result.text(), timeout=20_000)
    assert "EVERYTHING_API_KEY" in view.result.text()
    qtbot.waitUntil(lambda: view.table.item(rows["Cursor"], 3).text() == "all", timeout=10_000)
    assert SECRET not in path.read_text()

    # The gateway took the new server without a restart, and the Servers view shows it.
    names = lambda: {s.spec.name for s in app.servers.servers}  # noqa: E731
    qtbot.waitUntil(lambda: "everything-cursor" in names(), timeout=10_000)

    # The entry works as Cursor would start it: through the app's gateway, the key
    # coming from the keyring.
    entry = json.loads(path.read_text())["mcpServers"]["everything"]
    assert entry["args"][:2] == ["connect", "everything-cursor"]

    async def call() -> str:
        params = StdioServerParameters(command=entry["command"], args=entry["args"])
        async with Client(params, mode="legacy") as client:
            result = await client.call_tool("get-env", {})
        return "".join(getattr(b, "text", "") for b in result.content)

    assert SECRET in asyncio.run(call())
    qtbot.waitUntil(
        lambda: any(
            app.calls.text(r, 2) == "everything-cursor" for r in range(app.calls.rowCount())
        ),
        timeout=10_000,
    )

    qtbot.waitUntil(view.unroute_button.isEnabled, timeout=10_000)
    qtbot.mouseClick(view.unroute_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "put back 2 server(s)" in view.result.text(), timeout=20_000)
    assert "byte for byte" in view.result.text()
    assert path.read_text() == original


def test_a_failure_is_shown_and_nothing_is_written(qtbot, app):
    path, original = cursor_file(app.home)
    path.chmod(0o444)
    view = app.connect_view
    app.scan_clients()
    qtbot.waitUntil(lambda: view.table.rowCount() == 2, timeout=10_000)
    row = next(r for r in range(2) if view.table.item(r, 0).text() == "Cursor")
    view.table.selectRow(row)
    qtbot.mouseClick(view.route_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "read-only" in view.result.text(), timeout=20_000)
    assert "#c62828" in view.result.text()
    assert path.read_text() == original


def test_start_at_login_checkbox(qtbot, app):
    view = app.connect_view
    entry = app.home / ".config" / "autostart" / "lockgate.desktop"
    qtbot.waitUntil(lambda: str(entry) in view.autostart_where.text(), timeout=10_000)
    assert not view.autostart.isChecked()
    view.autostart.click()
    qtbot.waitUntil(entry.exists, timeout=10_000)
    assert f"Exec={lockgate_command()}" in entry.read_text()
    view.autostart.click()
    qtbot.waitUntil(lambda: not entry.exists(), timeout=10_000)
    assert not view.autostart.isChecked()


def test_a_broken_servers_json_is_shown_and_the_servers_in_force_stay(qtbot, app, app_paths):
    servers_file = app_paths.servers_file
    text = servers_file.read_text()
    qtbot.waitUntil(lambda: len(app.servers.servers) == 3, timeout=10_000)
    servers_file.write_text(text.replace('"time"', '"bad name!"', 1))
    qtbot.waitUntil(lambda: app.state.servers_error is not None, timeout=10_000)
    assert "servers.json has errors; the servers in force stay" in app.window.banner.text()
    assert "a server name is" in app.servers_view.status.text()
    assert len(app.servers.servers) == 3
    servers_file.write_text(text.replace('"time"', '"clock"', 1))
    qtbot.waitUntil(lambda: app.state.servers_error is None, timeout=10_000)
    qtbot.waitUntil(
        lambda: (
            {s.spec.name for s in app.servers.servers} == {"clock", "everything", "misbehaving"}
        ),
        timeout=10_000,
    )
    assert "servers.json" not in app.window.banner.text()


def test_a_servers_json_restored_to_exactly_what_is_in_force_clears_the_error(
    qtbot, app, app_paths
):
    servers_file = app_paths.servers_file
    in_force = servers_file.read_text()
    qtbot.waitUntil(lambda: len(app.servers.servers) == 3, timeout=10_000)
    servers_file.write_text(in_force.replace('"time"', '"bad name!"', 1))
    qtbot.waitUntil(lambda: app.state.servers_error is not None, timeout=10_000)
    assert state_icon_name(app.state) == "lockgate-error.svg"  # the red tray icon
    servers_file.write_text(in_force)  # the very bytes in force: valid again, nothing new
    qtbot.waitUntil(lambda: app.state.servers_error is None, timeout=10_000)
    assert "servers.json" not in app.window.banner.text()
    assert app.servers_view.status.text() == "servers.json in force: no server changed"
    assert len(app.servers.servers) == 3


def test_a_first_run_opens_on_connect_your_agents(qtbot, app_paths, tmp_path):
    app_paths.servers_file.unlink()  # nothing configured yet
    app = LockgateApp(app_paths, port=0, home=tmp_path / "home", launcher=[lockgate_command()])
    app.start()
    try:
        qtbot.waitUntil(lambda: app.state.running, timeout=30_000)
        assert app.window.isVisible()
        assert app.window.tabs.currentWidget() is app.connect_view
    finally:
        app.close()
        app.prompt.close()
        app.window.hide()
        app.window.deleteLater()


def test_start_at_login_from_the_settings_tab_is_the_same_login_entry(qtbot, app):
    view = app.settings_view
    qtbot.waitUntil(lambda: "settings.json" in view.where.text(), timeout=10_000)
    assert not view.autostart.isChecked()
    view.autostart.click()
    qtbot.waitUntil(app.connect_view.autostart.isChecked, timeout=10_000)
    assert view.autostart.isChecked()
    view.autostart.click()
    qtbot.waitUntil(lambda: not app.connect_view.autostart.isChecked(), timeout=10_000)
