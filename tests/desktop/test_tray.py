"""The tray icon on a real X server (Xvfb) with a real tray host (Debian's trayer).

The app runs in a subprocess on that display (this test process is offscreen)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from desktop.tray import AppState, Tray, state_icon_name
from tests.desktop.conftest import BASE_POLICY, REPO, start_trayer
from tests.support.live import servers_json

PROBE = Path(__file__).with_name("_tray_probe.py")


def probe(display: str, tmp_path: Path) -> subprocess.Popen[str]:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir(exist_ok=True)
    (config / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    (config / "policy.json").write_text(json.dumps(BASE_POLICY))
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(PROBE), str(config), str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    rest = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(30) == 0, rest


def lines_until(proc: subprocess.Popen[str], last: str, timeout: float = 40) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.strip())
        if line.startswith(last):
            break
    return seen


def test_with_a_tray_the_app_lives_there_and_shows_no_window(display, tmp_path):
    trayer = start_trayer(display)
    try:
        app = probe(display, tmp_path)
        out = lines_until(app, "tooltip")
        finish(app)
    finally:
        trayer.terminate()
        trayer.wait(10)
    assert "tray available True" in out, out
    assert "window visible False" in out, out
    geometry = next(line for line in out if line.startswith("tray geometry")).split()[2:]
    x, y, width, height = map(int, geometry)
    assert width > 0
    assert height > 0
    assert x > 1000, geometry  # in trayer, top right
    assert y < 40, geometry
    assert next(line for line in out if line.startswith("tooltip")).startswith(
        "tooltip Lockgate: watching tool calls"
    )
    running = next(line for line in out if line.startswith("running after"))
    assert float(running.split()[2]) < 2.0, running  # start to serving (and tray) under 2 s


def test_without_a_tray_the_window_opens_and_a_tray_that_appears_is_adopted(display, tmp_path):
    app = probe(display, tmp_path)
    out = lines_until(app, "window visible")
    assert "tray available False" in out, out
    assert "window visible True" in out, out
    trayer = start_trayer(display)
    try:
        out += lines_until(app, "adopted")
        finish(app)
    finally:
        trayer.terminate()
        trayer.wait(10)
    assert "adopted" in out, out


def test_the_menu_offers_a_sign_in_for_each_server_that_needs_one(qtbot):
    tray = Tray(poll_ms=60_000)  # offscreen: no tray host, the menu is the same
    asked: list[str] = []
    tray.sign_in.connect(asked.append)
    waiting = AppState(running=True, needs_sign_in=("docs", "tracker"))
    tray.update(waiting)
    assert tray.sign_in_entries() == ["Sign in to docs…", "Sign in to tracker…"]
    assert waiting.summary() == "Lockgate: watching tool calls; 2 servers need sign-in"
    assert state_icon_name(waiting) == "lockgate-attention.svg"
    entries = [a.text() for a in tray.menu.actions()]
    assert entries.index("Sign in to tracker…") < entries.index("Quit Lockgate")
    tray.trigger_sign_in("tracker")
    assert asked == ["tracker"]

    one = AppState(running=True, needs_sign_in=("docs",))
    tray.update(one)
    assert tray.sign_in_entries() == ["Sign in to docs…"]
    assert "sign in to docs (its calls are refused)" in one.summary()
    tray.update(AppState(running=True))
    assert tray.sign_in_entries() == []
    assert not [a for a in tray.menu.actions() if a.text().startswith("Sign in")]
    assert state_icon_name(AppState(running=True)) == "lockgate.svg"


def test_a_broken_team_policy_is_said_as_the_teams_not_policy_jsons() -> None:
    state = AppState(running=True, team_policy_error="team.json:1:1: not JSON")
    assert state.summary() == (
        "Lockgate: watching tool calls; the team's policy has errors (its last good copy "
        "is in force)"
    )
    assert "policy.json" not in state.summary()
    assert state_icon_name(state) == "lockgate-error.svg"  # as a broken policy.json
