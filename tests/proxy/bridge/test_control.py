"""The control client every command uses: what it says when no gateway runs, when the
run file is stale, and when the socket is not in a private folder of this user (on
Windows: when the run file names a pipe that is not this user's)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from proxy.bridge.control import ControlError, GatewayNotRunning, control
from proxy.config.paths import Paths
from proxy.config.runinfo import run_file

unix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="the socket's private folder: Windows has a pipe instead"
)
windows_only = pytest.mark.skipif(
    sys.platform != "win32", reason="the pipe's name: Windows only (elsewhere a socket)"
)


def write_run_file(paths: Paths, **fields: object) -> None:
    path = run_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "port": 1, "url": "http://127.0.0.1:1/mcp/", "started": 0.0}
    path.write_text(json.dumps({**info, **fields}))


def test_no_gateway_says_how_to_start_one(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    with pytest.raises(GatewayNotRunning, match="start the app or `lockgate serve`"):
        control(paths, "status")


def local_door(paths: Paths, folder: Path) -> str:
    """Where a gateway of these folders would listen: a socket in ``folder`` (private),
    or on Windows the pipe named for this user and the run folder."""
    if sys.platform == "win32":
        from proxy.bridge.winpipe import current_user_sid, pipe_name_for

        paths.run_dir.mkdir(parents=True, exist_ok=True)
        door = pipe_name_for(current_user_sid(), os.path.realpath(paths.run_dir))
    else:
        door = str(folder / "gateway.sock")
    return door


def test_a_run_file_left_by_a_dead_gateway_is_not_a_gateway(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    write_run_file(paths, socket=local_door(paths, folder))  # this process: alive
    with pytest.raises(GatewayNotRunning):
        control(paths, "status")  # but nothing listens there
    write_run_file(paths, pid=2**22 + 12345, socket=local_door(paths, folder))
    with pytest.raises(GatewayNotRunning):
        control(paths, "status")  # no such process


@windows_only
def test_a_run_file_naming_a_pipe_not_of_this_user_is_not_used(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    write_run_file(paths, socket="\\\\.\\pipe\\someone-elses")
    with pytest.raises(ControlError, match="not this user's; not connecting"):
        control(paths, "status")


@unix_only
def test_a_socket_in_a_folder_others_can_enter_is_not_used(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    write_run_file(paths, socket=str(shared / "gateway.sock"))
    with pytest.raises(ControlError, match="is not a private folder of yours"):
        control(paths, "status")
