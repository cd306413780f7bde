"""The servers model on its own (qtmodeltester): up, down and crashes as the gateway
reports them."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt

from desktop.serversview import ServerActions, ServersModel, ServersView
from proxy.config.servers import HttpServer, StdioServer
from proxy.gateway.events import (
    UpstreamDown,
    UpstreamUp,
)


def test_servers_model_tracks_up_down_and_crashes(qtmodeltester):
    model = ServersModel()
    model.set_servers(
        {"a": StdioServer(name="a", command="x"), "b": StdioServer(name="b", command="y")}
    )
    qtmodeltester.check(model)
    model.apply([UpstreamUp(1.0, "a", "s1"), UpstreamUp(1.0, "a", "s2")])
    assert model.data(model.index(0, 2)) == "up (2 sessions)"
    went_down = model.apply([UpstreamDown(2.0, "a", "s1", "exited with 3")])
    assert went_down
    assert model.down_count() == 1
    assert model.data(model.index(0, 2)) == "down"
    assert model.data(model.index(0, 4)) == "exited with 3"
    model.apply([UpstreamDown(3.0, "a", "s2", None)])  # stopped on purpose: not a crash
    model.apply([UpstreamUp(4.0, "a", "s1")])  # restarted
    assert model.down_count() == 0
    assert model.data(model.index(0, 2)) == "up (1 session)"
    assert model.rowCount(model.index(0, 0)) == 0


def test_open_its_log_is_offered_for_a_command_and_names_the_server(qtbot):
    model = ServersModel()
    model.set_servers(
        {
            "files": StdioServer("files", "mcp-files"),
            "remote": HttpServer("remote", "https://example.test/mcp"),
        }
    )
    asked: list[str] = []
    view = ServersView(model, _actions(open_log=asked.append))
    qtbot.addWidget(view)
    assert not view.open_log.isEnabled()
    view.select("remote")
    assert view.restart.isEnabled()
    assert not view.open_log.isEnabled()  # a remote server's output is not here
    view.select("files")
    assert view.open_log.isEnabled()
    qtbot.mouseClick(view.open_log, Qt.MouseButton.LeftButton)
    assert asked == ["files"]


def _actions(**given: Any) -> ServerActions:
    nothing: dict[str, Any] = {
        "restart": lambda _name: None,
        "open_log": lambda _name: None,
        "add": lambda: None,
        "edit": lambda _name: None,
        "set_disabled": lambda _name, _off: None,
        "remove": lambda _name: None,
        "sign_in": lambda _name: None,
    }
    return ServerActions(**{**nothing, **given})


def test_a_turned_off_server_is_listed_greyed_and_offers_turn_on(qtbot):
    model = ServersModel()
    model.set_servers(
        {"on": StdioServer("on", "a")}, {"off": StdioServer("off", "b", disabled=True)}
    )
    asked: list[tuple[str, bool]] = []
    view = ServersView(model, _actions(set_disabled=lambda n, d: asked.append((n, d))))
    qtbot.addWidget(view)
    assert [s.spec.name for s in model.servers] == ["off", "on"]
    assert model.data(model.index(0, 2)) == "turned off"
    view.select("off")
    assert view.toggle.text() == "Turn on"
    assert not view.restart.isEnabled()  # nothing runs to restart
    qtbot.mouseClick(view.toggle, Qt.MouseButton.LeftButton)
    view.select("on")
    assert view.toggle.text() == "Turn off"
    qtbot.mouseClick(view.toggle, Qt.MouseButton.LeftButton)
    assert asked == [("off", False), ("on", True)]


def test_remove_asks_once_more_in_the_view(qtbot):
    model = ServersModel()
    model.set_servers({"files": StdioServer("files", "mcp-files")})
    removed: list[str] = []
    view = ServersView(model, _actions(remove=removed.append))
    qtbot.addWidget(view)
    view.show()
    view.select("files")
    qtbot.mouseClick(view.remove, Qt.MouseButton.LeftButton)
    assert removed == []  # not yet
    assert view.confirm.isVisible()
    assert "files" in view.confirm_text.text()
    qtbot.mouseClick(view.confirm_yes, Qt.MouseButton.LeftButton)
    assert removed == ["files"]
    assert not view.confirm.isVisible()
