"""Where a running gateway listens (``run/gateway.json`` in the data folder), and what
both ends of its local socket share (on Windows, of its named pipe:
:mod:`proxy.bridge.winpipe`).

Kept free of heavy imports: ``lockgate connect`` reads it on every client launch.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config.paths import Paths

__all__ = [
    "DEFAULT_PORT",
    "LINE_LIMIT",
    "RunInfo",
    "peer_is_us",
    "peer_uid",
    "process_alive",
    "read_run_info",
    "run_file",
    "uid_from_peercred",
    "uid_from_xucred",
]

DEFAULT_PORT = 5625  # L-O-C-K on a phone keypad
LINE_LIMIT = 32 * 1024 * 1024  # one MCP message per line from a server's stdout


# Linux's struct ucred {pid_t pid; uid_t uid; gid_t gid;}, and OpenBSD's struct
# sockpeercred {uid_t uid; gid_t gid; pid_t pid;}: both are what SO_PEERCRED fills.
_UCRED = struct.Struct("@iII")
_SOCKPEERCRED = struct.Struct("@IIi")
# macOS's and FreeBSD's struct xucred, what getsockopt(SOL_LOCAL, LOCAL_PEERCRED) fills
# (sys/ucred.h, sys/un.h): u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t
# cr_groups[16] (XU_NGROUPS, NGROUPS on macOS); FreeBSD 13 and later add a union with the
# pid after it.
_XUCRED = struct.Struct("@IIh16I")
_XUCRED_HEAD = struct.Struct("@IIh")
_XUCRED_ROOM = _XUCRED.size + 16  # FreeBSD's pid, 8-byte aligned
XUCRED_VERSION = 0
SOL_LOCAL = 0
LOCAL_PEERCRED = 1
_XU_NGROUPS = 16
_HAS_LOCAL_PEERCRED = sys.platform == "darwin" or sys.platform.startswith(("freebsd", "dragonfly"))


def uid_from_peercred(creds: bytes, platform: str = sys.platform) -> int:
    """The user id in what ``SO_PEERCRED`` gave: Linux's ``struct ucred`` (pid, uid,
    gid), or on OpenBSD its ``struct sockpeercred`` (uid, gid, pid)."""
    if platform.startswith("openbsd"):
        uid, _gid, _pid = _SOCKPEERCRED.unpack_from(creds)
    else:
        _pid, uid, _gid = _UCRED.unpack_from(creds)
    return int(uid)


def uid_from_xucred(creds: bytes) -> int | None:
    """The user id in a ``struct xucred`` (macOS, FreeBSD, DragonFly: ``LOCAL_PEERCRED``),
    or None if it is not one this knows (too short, another ``cr_version``, a group
    count out of range): then the system cannot say, as where it has no call for it."""
    if len(creds) < _XUCRED.size:
        return None
    version, uid, ngroups = _XUCRED_HEAD.unpack_from(creds)
    if version != XUCRED_VERSION or not 0 <= ngroups <= _XU_NGROUPS:
        return None
    return int(uid)


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket, or None where the
    system cannot say.

    Linux and OpenBSD: ``SO_PEERCRED``. macOS, FreeBSD and DragonFly: ``LOCAL_PEERCRED``
    at level ``SOL_LOCAL`` (0), a ``struct xucred``. Elsewhere (NetBSD, whose
    ``LOCAL_PEEREID`` Python does not name; a system with neither), None, as before:
    then the socket's private folder (0700, ours) is the only check, on both ends.
    """
    if _HAS_LOCAL_PEERCRED:  # pragma: no cover (macOS, BSD; uid_from_xucred is tested here)
        level = getattr(socket, "SOL_LOCAL", SOL_LOCAL)
        option = getattr(socket, "LOCAL_PEERCRED", LOCAL_PEERCRED)
        return uid_from_xucred(sock.getsockopt(level, option, _XUCRED_ROOM))
    peercred = getattr(socket, "SO_PEERCRED", None)  # Linux, OpenBSD
    if peercred is None:  # pragma: no cover (a system with neither: none runs the tests)
        return None
    return uid_from_peercred(sock.getsockopt(socket.SOL_SOCKET, peercred, _UCRED.size))


def peer_is_us(sock: socket.socket) -> bool:
    """Whether the process at the other end of a Unix socket runs as this user, where the
    system can say (:func:`peer_uid`); where it cannot, yes: the socket's private folder
    is then the check, on both ends."""
    if sys.platform == "win32":  # pragma: no cover (no Unix sockets; winpipe asks the pipe)
        ours = False
    else:
        uid = peer_uid(sock)
        ours = uid is None or uid == os.getuid()
    return ours


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Where a running gateway listens: its HTTP port and its local door (a Unix
    socket's path; on Windows the named pipe's name)."""

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
    if not process_alive(info.pid):
        return None  # gone, or someone else's process: not our gateway
    return info


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs and is one this user may signal (so, could be ours).

    Not ``os.kill(pid, 0)`` on Windows: there signal 0 is CTRL_C_EVENT, sent to a console
    process group, and any other number terminates the process.
    """
    if sys.platform == "win32":  # pragma: no cover (Windows)
        import _winapi  # noqa: PLC0415

        try:
            process = _winapi.OpenProcess(_SYNCHRONIZE | _QUERY_LIMITED, False, pid)
        except OSError:  # no such process (ERROR_INVALID_PARAMETER), or not ours
            return False
        try:
            return _winapi.WaitForSingleObject(process, 0) == _WAIT_TIMEOUT  # not signalled
        finally:
            _winapi.CloseHandle(process)
    else:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True


# OpenProcess's rights to wait on a process and ask about it; WaitForSingleObject's answer
# when the process has not ended (winnt.h, winbase.h)
_SYNCHRONIZE = 0x00100000
_QUERY_LIMITED = 0x1000
_WAIT_TIMEOUT = 0x102
