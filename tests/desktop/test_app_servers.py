"""Servers managed from the window, clicked as a person would, through the real app: its
gateway takes each change at once, an agent reaches (or is refused) the server, and a
secret typed in the editor lands in the real keyring (GNOME Keyring on a private bus),
never in servers.json."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices

from desktop.app import LockgateApp
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from proxy.config.tokens import TokenStore
from tests.desktop.conftest import Agent, started_app, text_of, wait_result
from tests.support.live import BIN, EVERYTHING_JS
from tests.support.oauth import follow_authorization

SECRET = "sk-typed-in-the-editor-77"


@pytest.fixture
def app(qtbot: Any, app_paths: Paths, os_keyring: Any) -> Iterator[LockgateApp]:
    with started_app(qtbot, app_paths, secrets=SecretStore(os_keyring)) as app:
        yield app


@pytest.fixture
def agent(app: LockgateApp, app_paths: Paths) -> Iterator[Agent]:
    tokens = {"claude-test": TokenStore(app_paths.clients_file).create("claude-test")}
    assert app.host.info is not None
    agent = Agent(app.host.info.url, tokens)
    try:
        yield agent
    finally:
        agent.close()


def _refusal(qtbot: Any, future: Any) -> str:
    """What the agent was told when refused: a tool error, or a protocol error (the
    session's server is gone)."""
    try:
        result = wait_result(qtbot, future)
    except MCPError as exc:
        return str(exc)
    except BaseExceptionGroup as group:  # refused while the session was being set up
        matched, _ = group.split(MCPError)
        if matched is None:
            raise
        return "; ".join(str(e) for e in _leaves(matched))
    assert result.is_error
    return text_of(result)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _state(app: LockgateApp, server: str) -> Any:
    return next(s for s in app.servers.servers if s.spec.name == server)


def _names(app: LockgateApp) -> dict[str, str]:
    return {s.spec.name: s.state for s in app.servers.servers}


def _on_disk(app: LockgateApp) -> dict[str, Any]:
    servers: dict[str, Any] = json.loads(app.paths.servers_file.read_text())["mcpServers"]
    return servers


def test_add_a_server_by_paste_with_its_key_in_the_keyring(qtbot, app, agent, os_keyring):
    app.window.show_tab("Servers")
    view, editor = app.servers_view, app.server_editor
    qtbot.mouseClick(view.add, Qt.MouseButton.LeftButton)
    assert editor.isVisible()
    editor.paste.setPlainText(
        json.dumps(
            {
                "mcpServers": {
                    "keyed": {
                        "command": "node",
                        "args": [str(EVERYTHING_JS), "stdio"],
                        "env": {"EVERYTHING_API_KEY": SECRET},
                    }
                }
            }
        )
    )
    qtbot.mouseClick(editor.fill, Qt.MouseButton.LeftButton)
    assert editor.values.item(0, 2).checkState() == Qt.CheckState.Checked  # looks secret
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not editor.isVisible(), timeout=10_000)
    qtbot.waitUntil(lambda: "keyed" in _names(app), timeout=10_000)
    assert SECRET not in app.paths.servers_file.read_text()
    assert _on_disk(app)["keyed"]["env"] == {
        "EVERYTHING_API_KEY": "keyring:keyed.env.EVERYTHING_API_KEY"
    }
    assert os_keyring.get_password("lockgate", "keyed.env.EVERYTHING_API_KEY") == SECRET
    # the agent reaches it at once, and the server got the key from the keyring
    result = wait_result(qtbot, agent.call("get-env", {}, server="keyed"), timeout=60_000)
    assert SECRET in text_of(result)


def test_add_by_form_turn_off_turn_on_and_remove(qtbot, app, agent):
    view, editor = app.servers_view, app.server_editor
    qtbot.mouseClick(view.add, Qt.MouseButton.LeftButton)
    editor.name.setText("clock")
    editor.command.setText(str(BIN / "mcp-server-time"))
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "clock" in _names(app), timeout=10_000)
    assert _on_disk(app)["clock"] == {"command": str(BIN / "mcp-server-time")}
    call = {"timezone": "UTC"}
    assert not wait_result(qtbot, agent.call("get_current_time", call, server="clock")).is_error

    view.select("clock")
    assert view.toggle.text() == "Turn off"
    qtbot.mouseClick(view.toggle, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _names(app).get("clock") == "turned off", timeout=10_000)
    assert _on_disk(app)["clock"]["disabled"] is True
    assert "turned off" in _refusal(qtbot, agent.call("get_current_time", call, server="clock"))

    view.select("clock")
    assert view.toggle.text() == "Turn on"
    qtbot.mouseClick(view.toggle, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _names(app).get("clock") not in (None, "turned off"), timeout=10_000)
    assert "disabled" not in _on_disk(app)["clock"]

    view.select("clock")
    qtbot.mouseClick(view.remove, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(view.confirm_yes, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "clock" not in _names(app), timeout=10_000)
    assert "clock" not in _on_disk(app)
    assert set(_on_disk(app)) == {"everything", "time", "misbehaving"}  # the rest as it was


def test_change_a_server_keeps_the_rest_of_the_file_byte_for_byte(qtbot, app):
    before = app.paths.servers_file.read_text()
    view, editor = app.servers_view, app.server_editor
    qtbot.waitUntil(lambda: "time" in _names(app), timeout=10_000)
    view.select("time")
    qtbot.mouseClick(view.edit, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(editor.isVisible, timeout=10_000)
    assert editor.name.text() == "time"
    editor.args.setPlainText("--local-timezone\nUTC")
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not editor.isVisible(), timeout=10_000)
    after = app.paths.servers_file.read_text()
    assert json.loads(after)["mcpServers"]["time"]["args"] == ["--local-timezone", "UTC"]
    everything = json.dumps(json.loads(before)["mcpServers"]["everything"])
    assert everything == json.dumps(json.loads(after)["mcpServers"]["everything"])
    qtbot.waitUntil(lambda: "time" in view.status.text(), timeout=10_000)


def test_a_change_that_makes_servers_json_invalid_is_refused_and_nothing_written(qtbot, app):
    before = app.paths.servers_file.read_bytes()
    view, editor = app.servers_view, app.server_editor
    qtbot.mouseClick(view.add, Qt.MouseButton.LeftButton)
    editor.name.setText("time")  # taken
    editor.command.setText("x")
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(editor.save.isEnabled, timeout=10_000)
    assert editor.isVisible()
    assert "time" in editor.status.text()
    assert app.paths.servers_file.read_bytes() == before


class Browser(QObject):
    """What opens a URL for Qt's QDesktopServices while the test runs: it does what the
    person's browser does when they click Allow (follows the page to Lockgate's callback),
    on a thread of its own, as a browser is a process of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []
        self.answers: list[int] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.opened.append(url.toString())
        worker = threading.Thread(
            target=lambda: self.answers.append(follow_authorization(url.toString())),
            daemon=True,
        )
        worker.start()


@pytest.fixture
def browser() -> Iterator[Browser]:
    opener = Browser()
    # the stub says bytes; PySide6 6.11 takes only the slot's name as text
    QDesktopServices.setUrlHandler("http", opener, "open")  # type: ignore[arg-type]
    try:
        yield opener
    finally:
        QDesktopServices.unsetUrlHandler("http")


@pytest.mark.slow
def test_sign_in_to_a_remote_server_from_the_servers_tab(
    qtbot, app_paths, os_keyring, oauth_server, browser
):
    servers = json.loads(app_paths.servers_file.read_text())
    servers["mcpServers"]["tracker"] = {"url": oauth_server.mcp_url}
    app_paths.servers_file.write_text(json.dumps(servers))
    tokens = {"claude-test": TokenStore(app_paths.clients_file).create("claude-test")}
    with started_app(qtbot, app_paths, secrets=SecretStore(os_keyring)) as app:
        assert app.host.info is not None
        agent = Agent(app.host.info.url, tokens)
        try:
            # the first call meets the server's 401: it needs a sign-in, and says so
            told = _refusal(qtbot, agent.call("echo", {"message": "hi"}, server="tracker"))
            assert "needs sign-in" in told
            assert "lockgate auth login tracker" in told
            qtbot.waitUntil(lambda: _names(app).get("tracker") == "needs sign-in", timeout=10_000)
            view = app.servers_view
            view.select("tracker")
            assert view.sign_in.isEnabled()
            qtbot.mouseClick(view.sign_in, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: "Signed in to tracker" in view.status.text(), timeout=60_000)
            assert browser.answers == [200]
            assert browser.opened[0].startswith(oauth_server.issuer + "/authorize")
            assert oauth_server.stats()["last_authorize"]["code_challenge_method"] == "S256"
            qtbot.waitUntil(lambda: _names(app).get("tracker") != "needs sign-in", timeout=10_000)
            view.select("tracker")
            assert view.sign_in.text() == "Sign in again…"
            result = wait_result(qtbot, agent.call("echo", {"message": "hi"}, server="tracker"))
            assert text_of(result) == "Echo: hi"
            # its tools are listed now, and the error from before the sign-in is gone
            qtbot.waitUntil(lambda: _state(app, "tracker").tools == 2, timeout=20_000)
            assert _state(app, "tracker").last_error is None
            assert _names(app)["tracker"] != "failed to start"
        finally:
            agent.close()
    # nothing Lockgate wrote holds a token
    secrets = [v for v in (SecretStore(os_keyring).find("tracker.oauth.tokens") or "",) if v]
    assert secrets, "the sign-in is in the keyring"
    access = json.loads(secrets[0])["access_token"]
    for folder in (app_paths.config_dir, app_paths.data_dir):
        for file in folder.rglob("*"):
            if file.is_file():
                assert access.encode() not in file.read_bytes(), file
