"""The servers model on its own (qtmodeltester): up, down and crashes as the gateway
reports them."""

from __future__ import annotations

from PySide6.QtCore import Qt

from desktop.serversview import ServersModel, ServersView
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
    view = ServersView(model, lambda _: None, asked.append)
    qtbot.addWidget(view)
    assert not view.open_log.isEnabled()
    view.select("remote")
    assert view.restart.isEnabled()
    assert not view.open_log.isEnabled()  # a remote server's output is not here
    view.select("files")
    assert view.open_log.isEnabled()
    qtbot.mouseClick(view.open_log, Qt.MouseButton.LeftButton)
    assert asked == ["files"]
