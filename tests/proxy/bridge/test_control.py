"""The control client every command uses: what it says when no gateway runs, when the
run file is stale, and when the socket is not in a private folder of this user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from proxy.bridge.control import ControlError, GatewayNotRunning, control
from proxy.config.paths import Paths
from proxy.config.runinfo import run_file


def write_run_file(paths: Paths, **fields: object) -> None:
    path = run_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "port": 1, "url": "http://127.0.0.1:1/mcp/", "started": 0.0}
    path.write_text(json.dumps({**info, **fields}))


def test_no_gateway_says_how_to_start_one(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    with pytest.raises(GatewayNotRunning, match="start the app or `lockgate serve`"):
        control(paths, "status")


def test_a_run_file_left_by_a_dead_gateway_is_not_a_gateway(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    write_run_file(paths, socket=str(folder / "gateway.sock"))  # this process: alive
    with pytest.raises(GatewayNotRunning):
        control(paths, "status")  # but nothing listens on the socket
    write_run_file(paths, pid=2**22 + 12345, socket=str(folder / "gateway.sock"))
    with pytest.raises(GatewayNotRunning):
        control(paths, "status")  # no such process


def test_a_socket_in_a_folder_others_can_enter_is_not_used(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    write_run_file(paths, socket=str(shared / "gateway.sock"))
    with pytest.raises(ControlError, match="is not a private folder of yours"):
        control(paths, "status")
