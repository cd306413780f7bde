"""Start Lockgate at login, per each OS's convention.

- Linux and other XDG desktops: ``$XDG_CONFIG_HOME/autostart/lockgate.desktop`` (the XDG
  Autostart spec; GNOME, KDE, Xfce and others honour it).
- macOS: a LaunchAgent, ``~/Library/LaunchAgents/dev.lockgate.app.plist``, loaded at login
  (``RunAtLoad``), not kept alive: quitting the app stays quit.
- Windows: the current user's ``Run`` key in the registry, ``Lockgate``.

Turning it off removes exactly what turning it on wrote.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import sys
from collections.abc import Mapping
from pathlib import Path

from proxy.config.atomic import write_atomic

__all__ = ["LABEL", "autostart_enabled", "autostart_path", "set_autostart"]

LABEL = "dev.lockgate.app"
_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def autostart_path(
    system: str | None = None, home: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The file that starts Lockgate at login (None on Windows: the registry holds it)."""
    system = system or sys.platform
    home = Path.home() if home is None else home
    env = os.environ if environ is None else environ
    if system == "win32":
        return None
    if system == "darwin":
        return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "autostart" / "lockgate.desktop"


def autostart_enabled(
    system: str | None = None, home: Path | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    path = autostart_path(system, home, environ)
    if path is None:
        return _windows_value() is not None
    return path.is_file()


def set_autostart(
    on: bool,
    command: str,
    system: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Start ``command`` (the absolute path of ``lockgate``) at login, or stop doing so."""
    system = system or sys.platform
    path = autostart_path(system, home, environ)
    if path is None:
        _windows_set(command if on else None)
        return
    if not on:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if system == "darwin":
        data = plistlib.dumps(
            {
                "Label": LABEL,
                "ProgramArguments": [command],
                "RunAtLoad": True,
                "ProcessType": "Interactive",
            }
        )
    else:
        data = _desktop_entry(command).encode()
    write_atomic(path, data, mode=0o644)


def _desktop_entry(command: str) -> str:
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=Lockgate\n"
        "Comment=Watch and control what your AI agents do through MCP\n"
        f"Exec={_exec_quote(command)}\n"
        "Icon=lockgate\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def _exec_quote(command: str) -> str:
    """An Exec= argument per the Desktop Entry spec: quoted when it must be."""
    if not any(c in command for c in " \t\n\"'\\><~|&;$*?#()`%="):
        return command
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in command)
    return f'"{escaped}"'.replace("%", "%%")


if sys.platform == "win32":  # pragma: no cover - Windows only; not testable here
    import winreg

    def _windows_value() -> str | None:
        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY) as key:
                value, _kind = winreg.QueryValueEx(key, "Lockgate")
                return str(value)
        except OSError:
            return None

    def _windows_set(command: str | None) -> None:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            if command is None:
                with contextlib.suppress(FileNotFoundError):
                    winreg.DeleteValue(key, "Lockgate")
            else:
                winreg.SetValueEx(key, "Lockgate", 0, winreg.REG_SZ, f'"{command}"')

else:

    def _windows_value() -> str | None:
        raise OSError("the Windows registry exists only on Windows")

    def _windows_set(command: str | None) -> None:
        raise OSError("the Windows registry exists only on Windows")
