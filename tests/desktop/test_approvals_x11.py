"""The approval popup and the keyboard, on a real X server (Xvfb) with a real window
manager (openbox): it appears without taking the keyboard, takes it when clicked, and
the reason typed there reaches the agent. The app runs in a subprocess on that display."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.desktop.conftest import BASE_POLICY, run_probe
from tests.support.live import servers_json

PROBE = Path(__file__).with_name("_popup_probe.py")


def test_the_popup_waits_for_a_click_then_takes_the_reason_typed(display, tmp_path):
    assert shutil.which("openbox"), "openbox is missing: ./dev test installs it (apt)"
    window_manager = subprocess.Popen(
        ["openbox"],
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    (config / "policy.json").write_text(json.dumps(BASE_POLICY))
    shot = tmp_path / "popup.png"
    try:
        out = run_probe(PROBE, [str(config), str(data), str(shot)], display, timeout=120)
    finally:
        window_manager.terminate()
        window_manager.wait(10)
    assert "main active" in out
    assert "after the popup: main" in out  # the person's window kept the keyboard
    assert "after a click: popup" in out
    assert "typed: looks dangerous" in out
    told = next(line for line in out if line.startswith("agent got:"))
    assert "a person refused this call: looks dangerous" in told  # Enter there denied
    assert shot.stat().st_size > 10_000
