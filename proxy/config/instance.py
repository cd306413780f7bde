"""One Lockgate per user: the app or ``lockgate serve``, never both, never two.

The process that serves holds an exclusive lock on ``run/lockgate.lock`` in the data
folder for as long as it runs, and only that process writes the run file and the socket.
A second launch finds the lock taken and reads from the file who holds it (its pid, whether
it is the app or ``lockgate serve``, and where the app listens to be brought to the
front). The operating system drops the lock when its holder exits, however it exits, so a
crash never leaves Lockgate unable to start.

Kept free of heavy imports: the app checks it before it loads Qt's widgets.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from typing import IO, Literal

from proxy.config.paths import Paths
from proxy.config.runinfo import process_alive
from proxy.errors import LockgateError

__all__ = [
    "PRESENT",
    "PRESENTED",
    "AlreadyRunning",
    "Holder",
    "InstanceLock",
    "Kind",
    "bring_to_front",
    "running_holder",
]

Kind = Literal["app", "serve"]
PRESENT = b"present\n"  # a second launch to the app: show your window
PRESENTED = b"ok\n"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds the lock."""

    pid: int
    kind: Kind
    window: str | None = None  # the app's "bring me to the front" socket


class AlreadyRunning(LockgateError):
    """Another Lockgate serves this user already; this one must not start a gateway."""

    title = "Lockgate is already running"

    def __init__(self, holder: Holder | None) -> None:
        self.holder = holder
        if holder is None:
            told = "another Lockgate is starting up right now"
        elif holder.kind == "app":
            told = f"the Lockgate app runs (pid {holder.pid}); it is the gateway for this user"
        else:
            told = (
                f"`lockgate serve` runs (pid {holder.pid}); stop it first to use the app, "
                "or keep using it headless"
            )
        super().__init__(told)


class InstanceLock:
    """The lock at ``paths.run_dir / "lockgate.lock"``; :meth:`acquire` takes it."""

    def __init__(self, paths: Paths) -> None:
        self.path = paths.run_dir / "lockgate.lock"
        self._file: IO[str] | None = None
        self._holder: Holder | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, kind: Kind) -> InstanceLock:
        """Take the lock as ``kind``, or raise :class:`AlreadyRunning`.

        Raises:
            AlreadyRunning: another process holds it (the error says which).
            OSError: the run folder cannot be made or the file opened.
        """
        if self._file is not None:
            raise RuntimeError("the instance lock is held already")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        if not _try_lock(handle):
            holder = _read_holder(handle)
            handle.close()
            raise AlreadyRunning(holder)
        self._file = handle
        self._write(Holder(os.getpid(), kind))
        return self

    def announce_window(self, window: str) -> None:
        """Say where the app listens to be brought to the front."""
        if self._holder is not None:
            self._write(Holder(self._holder.pid, self._holder.kind, window))

    def release(self) -> None:
        """Give the lock up (what exiting does too)."""
        handle, self._file, self._holder = self._file, None, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.truncate(0)  # a reader between now and the close sees nobody
            handle.close()

    def _write(self, holder: Holder) -> None:
        assert self._file is not None
        self._holder = holder
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(asdict(holder)))
        self._file.flush()

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover (Windows: issue 15's bridge)
        import msvcrt  # noqa: PLC0415

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # noqa: PLC0415

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(handle: IO[str]) -> Holder | None:
    """Who holds the lock, from its file; None while the holder has not written it yet."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        handle.seek(0)
        data = json.loads(handle.read())
        window = data.get("window")
        kind = data["kind"]
        if kind in ("app", "serve"):
            return Holder(int(data["pid"]), kind, str(window) if window else None)
    return None


def bring_to_front(path: str, timeout: float = 5.0) -> bool:
    """Ask the app listening at ``path`` to show its window; False if nobody answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            sock.connect(path)
            sock.sendall(PRESENT)
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 16:
                chunk = sock.recv(16)
                if not chunk:
                    break
                answer += chunk
            return answer == PRESENTED
    return False


def running_holder(paths: Paths) -> Holder | None:
    """Who runs Lockgate for these folders, read without taking the lock: the lock file's
    word, if its process is alive (a released lock's file is empty)."""
    with contextlib.suppress(OSError):
        with (paths.run_dir / "lockgate.lock").open("r+", encoding="utf-8") as handle:
            holder = _read_holder(handle)
        if holder is not None:
            return holder if process_alive(holder.pid) else None
    return None
