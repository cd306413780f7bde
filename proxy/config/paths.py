"""Where Lockgate keeps its files.

Per platform conventions (platformdirs) unless overridden: a command-line option wins over
an environment variable (``LOCKGATE_CONFIG_DIR``, ``LOCKGATE_DATA_DIR``), which wins over
the platform folder. Nothing here creates a folder; writers create what they write to.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["APP_NAME", "Paths", "lockgate_command", "resolve_paths"]

APP_NAME = "lockgate"


@dataclass(frozen=True, slots=True)
class Paths:
    """Lockgate's folders and the files in them."""

    config_dir: Path
    data_dir: Path

    @property
    def policy_file(self) -> Path:
        return self.config_dir / "policy.json"

    @property
    def servers_file(self) -> Path:
        return self.config_dir / "servers.json"

    @property
    def clients_file(self) -> Path:
        """The clients and their token hashes."""
        return self.config_dir / "clients.json"

    @property
    def run_dir(self) -> Path:
        """Where a running gateway says how to reach it (port, socket); private (0700)."""
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def audit_db(self) -> Path:
        return self.data_dir / "audit.db"

    @property
    def tool_pins(self) -> Path:
        """What each server said its tools are, and what a person accepted (tool pinning)."""
        return self.data_dir / "tool-pins.json"

    @property
    def last_good_policy(self) -> Path:
        """A copy of the last policy.json the gateway put in force: a gateway that starts
        while policy.json is broken uses it, rather than forget the person's rules."""
        return self.data_dir / "policy.last-good.json"

    @property
    def last_good_team_policy(self) -> Path:
        """A copy of the last team policy put in force, for when its file is broken or gone
        (a team's rules must not be lost to a failed checkout)."""
        return self.data_dir / "team-policy.last-good.json"


def resolve_paths(
    config_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Paths:
    """The folders in force: explicit arguments, then the environment, then the platform's."""
    env = os.environ if environ is None else environ
    config = (
        config_dir
        or env.get("LOCKGATE_CONFIG_DIR")
        or platformdirs.user_config_dir(APP_NAME, appauthor=False)
    )
    data = (
        data_dir
        or env.get("LOCKGATE_DATA_DIR")
        or platformdirs.user_data_dir(APP_NAME, appauthor=False)
    )
    return Paths(Path(config).expanduser(), Path(data).expanduser())


def lockgate_command(*, gui: bool = False) -> str | None:
    """The absolute path of the ``lockgate`` command running now (or else on PATH), for
    what others start later: an MCP client (``lockgate connect``), the login session
    (start at login, ``gui``). They start it with a PATH of their own, so a bare name may
    not be found. None when there is no such command (a source tree never installed)."""
    if getattr(sys, "frozen", False):  # a bundle: its executable is lockgate itself
        exe = Path(sys.executable)
        if sys.platform == "win32":  # the Windows bundle has a console and a windowed exe
            sibling = exe.with_name("lockgatew.exe" if gui else "lockgate.exe")
            return str(sibling if sibling.is_file() else exe)
        return str(exe)
    argv0 = Path(sys.argv[0])
    if argv0.name.lower().removesuffix(".exe") == "lockgate" and argv0.is_file():
        return str(argv0.absolute())
    found = shutil.which("lockgate")
    return str(Path(found).absolute()) if found else None
