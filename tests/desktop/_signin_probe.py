"""Run the real app on an X display with a tray, route a client whose only server is a
remote one that signs in with OAuth, sign in by clicking, and report each step, one line
per fact.

    python _signin_probe.py CONFIG_DIR DATA_DIR HOME LOCKGATE_COMMAND SHOTS_DIR

The client is Cursor (HOME/.cursor/mcp.json, written by the test). Prints "routed: ARGS"
(the entry Cursor now launches), "offered: TEXT" (the Connect tab's sign-in button),
"before: TEXT" (what the agent was told before the sign-in), "tray: TOOLTIP", "tray
menu: ENTRY", "icon: NAME", then after the click "browser: STATUS", "button: TEXT", "after:
TEXT" (the agent's call), "tray after: TOOLTIP", "tray menu after: ENTRIES", and after a restart of the app
"restarted: TEXT". Saves connect-needs-sign-in.png and connect-signed-in.png (the window at
1280x800) to SHOTS_DIR. The "browser" is QDesktopServices' URL handler, which follows the
authorization page as a person's browser does when they click Allow. Used by
test_signin_x11.py, which owns the X server, the tray (trayer), the authorization server
and the keyring (GNOME Keyring on a private bus, reached through DBUS_SESSION_BUS_ADDRESS).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from keyring.backends.SecretService import Keyring
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.app import LockgateApp
from desktop.tray import state_icon_name
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from tests.desktop.conftest import spin_until
from tests.support.oauth import follow_authorization


class Browser(QObject):
    """The system browser: follows each URL the app opens on a thread of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[int] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        text = url.toString()
        threading.Thread(
            target=lambda: self.answers.append(follow_authorization(text)), daemon=True
        ).start()


def call(entry: dict[str, Any], message: str) -> str:
    """Launch the routed entry as Cursor would and call echo; the text the agent gets, or
    the error it was given."""

    async def run() -> str:
        params = StdioServerParameters(command=entry["command"], args=entry["args"])
        async with Client(params, mode="legacy") as client:
            result = await client.call_tool("echo", {"message": message})
        return "".join(getattr(b, "text", "") for b in result.content)

    try:
        return asyncio.run(run())
    except BaseException as exc:  # a refused session: the client raises what it was told
        return " ".join(_messages(exc))


def _messages(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [m for inner in exc.exceptions for m in _messages(inner)]
    return [str(exc)]


def start(paths: Paths, home: Path, lockgate: str) -> LockgateApp:
    app = LockgateApp(paths, port=0, secrets=SecretStore(Keyring()), home=home, launcher=[lockgate])
    app.start()
    spin_until(lambda: app.state.running, "the gateway")
    return app


def shot(app: LockgateApp, path: Path) -> None:
    app.window.resize(1280, 800)
    app.window.grab().save(str(path))


def main() -> int:
    config, data, home, lockgate, shots = sys.argv[1:6]
    qt = QApplication(sys.argv[:1])
    qt.setQuitOnLastWindowClosed(False)
    browser = Browser()
    QDesktopServices.setUrlHandler("http", browser, "open")  # type: ignore[arg-type]
    paths = Paths(Path(config), Path(data))
    cursor = Path(home) / ".cursor" / "mcp.json"
    app = start(paths, Path(home), lockgate)
    spin_until(lambda: app.tray.available, "the tray")
    try:
        view = app.connect_view
        app.window.show_tab("Connect your agents")
        app.window.present()
        QTest.mouseClick(view.rescan, Qt.MouseButton.LeftButton)
        spin_until(lambda: view.table.rowCount() == 1, "Cursor's file")
        view.table.selectRow(0)
        spin_until(view.route_button.isEnabled, "the route button")
        QTest.mouseClick(view.route_button, Qt.MouseButton.LeftButton)
        spin_until(lambda: "now go through Lockgate" in view.result.text(), "the routing")
        entry = next(iter(json.loads(cursor.read_text())["mcpServers"].values()))
        print(f"routed: {' '.join(entry['args'])}", flush=True)
        spin_until(lambda: bool(view.sign_in_buttons), "the sign-in button")
        button = next(iter(view.sign_in_buttons.values()))
        print(f"offered: {button.text()}", flush=True)

        print(f"before: {call(entry, 'hi')}", flush=True)
        spin_until(lambda: bool(app.state.needs_sign_in), "the needs-sign-in state")
        assert app.tray.icon is not None
        print(f"tray: {app.tray.icon.toolTip()}", flush=True)
        for text in app.tray.sign_in_entries():
            print(f"tray menu: {text}", flush=True)
        print(f"icon: {state_icon_name(app.state)}", flush=True)
        shot(app, Path(shots) / "connect-needs-sign-in.png")

        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        spin_until(lambda: not button.isEnabled(), "the sign-in")
        print(f"browser: {browser.answers}", flush=True)
        print(f"button: {button.text()}", flush=True)
        print(f"after: {call(entry, 'hi')}", flush=True)
        spin_until(lambda: not app.state.needs_sign_in, "the tray's state")
        print(f"tray after: {app.tray.icon.toolTip()}", flush=True)
        print(f"tray menu after: {app.tray.sign_in_entries()}", flush=True)
        shot(app, Path(shots) / "connect-signed-in.png")
    finally:
        app.close()
    app = start(paths, Path(home), lockgate)
    try:
        print(f"restarted: {call(entry, 'again')}", flush=True)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
