"""Start at login: the files each OS's convention asks for, written and removed exactly.
(Windows' registry key cannot be exercised on this Linux machine.)"""

from __future__ import annotations

import configparser
import plistlib
import subprocess
import sys
from pathlib import Path

from proxy.config.autostart import LABEL, autostart_enabled, autostart_path, set_autostart


def test_xdg_autostart_entry(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    command = "/opt/Lock Gate/bin/lockgate"
    assert not autostart_enabled("linux", tmp_path, env)
    set_autostart(True, command, "linux", tmp_path, env)
    path = tmp_path / "cfg/autostart/lockgate.desktop"
    assert autostart_path("linux", tmp_path, env) == path
    assert autostart_enabled("linux", tmp_path, env)
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read_string(path.read_text())
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Exec"] == '"/opt/Lock Gate/bin/lockgate"'  # quoted: it has a space
    assert desktop["Terminal"] == "false"
    set_autostart(False, command, "linux", tmp_path, env)
    assert not path.exists()
    assert path.parent.is_dir()  # the folder may hold other programs' entries
    set_autostart(False, command, "linux", tmp_path, env)  # off twice is fine


def test_xdg_config_home_defaults_to_dot_config(tmp_path):
    assert autostart_path("linux", tmp_path, {}) == tmp_path / ".config/autostart/lockgate.desktop"


def test_macos_launch_agent(tmp_path):
    set_autostart(True, "/Applications/Lockgate.app/Contents/MacOS/lockgate", "darwin", tmp_path)
    path = tmp_path / "Library/LaunchAgents" / f"{LABEL}.plist"
    agent = plistlib.loads(path.read_bytes())
    assert agent == {
        "Label": LABEL,
        "ProgramArguments": ["/Applications/Lockgate.app/Contents/MacOS/lockgate"],
        "RunAtLoad": True,
        "ProcessType": "Interactive",
    }
    assert autostart_enabled("darwin", tmp_path)
    set_autostart(False, "", "darwin", tmp_path)
    assert not path.exists()


def test_lockgate_autostart_command(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PATH": "/usr/bin"}
    lockgate = str(Path(sys.executable).parent / "lockgate")

    def run(*args: str) -> str:
        done = subprocess.run(
            [lockgate, "autostart", *args], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout

    assert run().startswith("Start at login: off")
    assert run("on").startswith("Start at login: on")
    text = (tmp_path / "cfg/autostart/lockgate.desktop").read_text()
    assert f"Exec={Path(lockgate).resolve()}" in text
    assert run("off").startswith("Start at login: off")
