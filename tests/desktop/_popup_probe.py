"""Run the real app on an X display with a window manager, ask it for an approval, and
report what the popup did with the keyboard, one line per fact.

    python _popup_probe.py CONFIG_DIR DATA_DIR SCREENSHOT

Prints "main active", then "after the popup: WHO" (the window the window manager made
active once the popup was on screen), "after a click: WHO", "typed: TEXT", and "agent
got: TEXT" once Enter in the reason box denied the call; saves the screen (1280x800) to
SCREENSHOT while the typed reason shows. Used by test_approvals_x11.py, which owns the X
server and the window manager (openbox); the offscreen platform activates every window it
shows, so only a real X server can tell whether the popup takes the keyboard.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget

from desktop.app import LockgateApp
from proxy.config.paths import Paths
from proxy.config.tokens import TokenStore
from tests.desktop.conftest import Agent, spin_until, text_of


def main() -> int:
    qt = QApplication(sys.argv[:1])
    qt.setQuitOnLastWindowClosed(False)
    paths = Paths(Path(sys.argv[1]), Path(sys.argv[2]))
    app = LockgateApp(paths, port=0)
    app.start()
    spin_until(lambda: app.state.running and app.tools.rowCount() > 0, "the gateway")

    def active() -> str:
        window: QWidget | None = QApplication.activeWindow()
        return {id(app.window): "main", id(app.prompt): "popup"}.get(id(window), repr(window))

    app.window.present()
    spin_until(lambda: active() == "main", "the main window to be active")
    print("main active", flush=True)
    policy = {"version": "1", "default": "allow", "tools": {"echo": {"action": "ask"}}}
    before = app.policy
    paths.policy_file.write_text(json.dumps(policy))
    spin_until(lambda: app.policy is not before, "the policy")
    tokens = {"claude-test": TokenStore(paths.clients_file).create("claude-test")}
    assert app.host.info is not None
    agent = Agent(app.host.info.url, tokens)
    try:
        waiting = agent.call("echo", {"message": "rm -rf"})
        spin_until(lambda: bool(app.prompt.panel.cards), "the popup's card")
        handle = app.prompt.windowHandle()
        spin_until(lambda: handle is not None and handle.isExposed(), "the popup on screen")
        # A round trip to the X server: whatever the window manager did on the map is done.
        subprocess.run(["xprop", "-root", "_NET_ACTIVE_WINDOW"], capture_output=True, check=True)
        QCoreApplication.processEvents()
        print(f"after the popup: {active()}", flush=True)

        card = next(iter(app.prompt.panel.cards.values()))
        QTest.mouseClick(card.reason, Qt.MouseButton.LeftButton)
        with contextlib.suppress(TimeoutError):  # reported below either way
            spin_until(lambda: active() == "popup", "the popup to take the keyboard", 5)
        print(f"after a click: {active()}", flush=True)
        focused = QApplication.focusWidget()
        if focused is not None:
            QTest.keyClicks(focused, "looks dangerous")
        print(f"typed: {card.reason.text()}", flush=True)
        app.prompt.grab()  # laid out and painted before the screen is taken
        QCoreApplication.processEvents()
        screen = qt.primaryScreen()
        screen.grabWindow(0).save(sys.argv[3])
        if focused is not None:
            QTest.keyClick(focused, Qt.Key.Key_Return)
        spin_until(waiting.done, "the agent's answer", 10)
        print(f"agent got: {text_of(waiting.result())}", flush=True)
    finally:
        agent.close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
