"""One app per user, launched twice for real: the app in a subprocess on Xvfb with a tray
host, a second ``lockgate`` and a ``lockgate serve`` beside it, then SIGTERM."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.desktop.conftest import BASE_POLICY, start_trayer
from tests.support.live import free_port, servers_json
from tests.support.waiting import eventually_sync

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, str]:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    (config / "policy.json").write_text(json.dumps(BASE_POLICY))
    return {"LOCKGATE_CONFIG_DIR": str(config), "LOCKGATE_DATA_DIR": str(data)}


def run_dir(folders: dict[str, str]) -> Path:
    return Path(folders["LOCKGATE_DATA_DIR"]) / "run"


def read_json(path: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


@pytest.fixture
def first_app(display: str, folders: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    tray = start_trayer(display)
    env = {**os.environ, **folders, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    port = free_port()  # as settings.json says: what a login entry's launch reads too
    subprocess.run([LOCKGATE, "settings", "port", str(port)], env=env, check=True, timeout=60)
    app = subprocess.Popen(
        [LOCKGATE],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            holder = read_json(run_dir(folders) / "lockgate.lock")
            return (
                bool(holder and holder.get("window"))
                and (run_dir(folders) / "gateway.json").exists()
            )

        eventually_sync(ready, "the app's gateway and window socket", timeout=60)
        assert (read_json(run_dir(folders) / "gateway.json") or {}).get("port") == port
        yield app
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)
        tray.terminate()
        tray.wait(10)


def main_window_shown(display: str) -> bool:
    """Whether the app's main window (not its 22-pixel tray icon, also "Lockgate") is on
    screen, by asking the X server."""

    def xwininfo(*args: str) -> str:
        return subprocess.run(
            ["xwininfo", "-display", display, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    for line in xwininfo("-root", "-tree").splitlines():
        parts = line.split()
        if '"Lockgate":' in line and parts and parts[0].startswith("0x"):
            size = next((p for p in parts if "x" in p and "+" in p and p[0].isdigit()), "0x0")
            if int(size.split("x")[0]) >= 400 and "IsViewable" in xwininfo("-id", parts[0]):
                return True
    return False


def test_a_second_launch_brings_the_first_window_to_the_front_and_starts_nothing(
    display: str, folders: dict[str, str], first_app: subprocess.Popen[bytes]
) -> None:
    before = read_json(run_dir(folders) / "gateway.json")
    assert before is not None
    assert not main_window_shown(display)  # it started in the tray
    other_port = free_port()
    env = {**os.environ, **folders, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    second = subprocess.run(
        [LOCKGATE, "--port", str(other_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "already running; its window is in front now" in second.stderr
    eventually_sync(lambda: main_window_shown(display), "the first app's window")
    # The first app's run file and socket are its own still, and nothing took the port.
    assert read_json(run_dir(folders) / "gateway.json") == before
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", other_port)) != 0
    status = subprocess.run(
        [LOCKGATE, "status"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (
        f"gateway:   running in the app (pid {first_app.pid}) on {before['url']}" in status.stdout
    )

    serve = subprocess.run(
        [LOCKGATE, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 1
    assert serve.stderr.strip() == (
        f"lockgate: Lockgate is already running: the Lockgate app runs (pid {first_app.pid}); "
        "it is the gateway for this user"
    )
    assert read_json(run_dir(folders) / "gateway.json") == before

    first_app.send_signal(signal.SIGTERM)  # as a logout or `kill` does: as Quit does
    assert first_app.wait(30) == 0
    assert not (run_dir(folders) / "gateway.json").exists()
    assert not (run_dir(folders) / "gateway.sock").exists()
    assert not (run_dir(folders) / "window.sock").exists()


def test_the_app_launched_while_lockgate_serve_runs_says_so_and_exits(
    folders: dict[str, str],
) -> None:
    env = {**os.environ, **folders}
    serve = subprocess.Popen(
        [LOCKGATE, "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually_sync((run_dir(folders) / "gateway.json").exists, "lockgate serve", timeout=60)
        before = read_json(run_dir(folders) / "gateway.json")
        # From a terminal (stderr a tty): told there; a launch from a menu gets a dialog.
        controller, terminal = pty.openpty()
        try:
            app = subprocess.run(
                [LOCKGATE],
                env={**env, "QT_QPA_PLATFORM": "offscreen"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=terminal,
                timeout=60,
                check=False,
            )
            told = os.read(controller, 4096).decode()
        finally:
            os.close(terminal)
            os.close(controller)
        assert app.returncode == 1
        assert f"`lockgate serve` runs (pid {serve.pid}); stop it first" in told
        assert read_json(run_dir(folders) / "gateway.json") == before
        assert serve.poll() is None
    finally:
        serve.terminate()
        serve.wait(30)
