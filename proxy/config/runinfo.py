"""Where a running gateway listens (``run/gateway.json`` in the data folder), and what
both ends of its local socket share.

Kept free of heavy imports: ``lockgate connect`` reads it on every client launch.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config.paths import Paths

__all__ = ["DEFAULT_PORT", "LINE_LIMIT", "RunInfo", "peer_uid", "read_run_info", "run_file"]

DEFAULT_PORT = 5625  # L-O-C-K on a phone keypad
LINE_LIMIT = 32 * 1024 * 1024  # one MCP message per line on the local socket


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket, or None where the
    system cannot say (no ``SO_PEERCRED``: then the private folder is the check)."""
    option = getattr(socket, "SO_PEERCRED", None)  # Linux
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Where a running gateway listens."""

    pid: int
    port: int
    url: str
    started: float
    socket: str | None = None


def run_file(paths: Paths) -> Path:
    return paths.run_dir / "gateway.json"


def read_run_info(paths: Paths) -> RunInfo | None:
    """The running gateway's address, or None if none is running (stale files ignored)."""
    try:
        data: dict[str, Any] = json.loads(run_file(paths).read_text("utf-8"))
        info = RunInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except (ProcessLookupError, PermissionError):
        return None  # gone, or someone else's process: not our gateway
    return info
