"""One app per user, seen from the desktop: a second launch brings the first one's window
to the front instead of starting again.

The running app listens on a Unix socket in its private run folder (:class:`WindowBeacon`)
and says where in the instance lock's file; a second launch that finds the lock taken
sends ``present`` there (:func:`proxy.config.instance.bring_to_front`) and exits. Plain
sockets watched by the Qt loop, never blocking it (and no QtNetwork in the bundle).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSocketNotifier

from proxy.config.instance import PRESENT, PRESENTED, InstanceLock
from proxy.doors.local import socket_path_for

__all__ = ["WindowBeacon"]


class WindowBeacon(QObject):
    """Listens for ``present`` from a second launch and calls ``present`` on the GUI thread."""

    def __init__(self, instance: InstanceLock, run_dir: Path, present: Callable[[], None]) -> None:
        super().__init__()
        self._present = present
        self.path = socket_path_for(run_dir, "window.sock")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a crashed app's; the lock says this one is ours
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.setblocking(False)
        old = os.umask(0o077)  # only this user may knock (the run folder is private too)
        try:
            self._listener.bind(str(self.path))
        finally:
            os.umask(old)
        self._listener.listen(8)
        self._peers: dict[int, tuple[socket.socket, QSocketNotifier]] = {}
        self._notifier = QSocketNotifier(self._listener.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._accept)
        instance.announce_window(str(self.path))

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            peer, _ = self._listener.accept()
            peer.setblocking(False)
            notifier = QSocketNotifier(peer.fileno(), QSocketNotifier.Type.Read, self)
            notifier.activated.connect(lambda *_, p=peer: self._read(p))
            self._peers[peer.fileno()] = (peer, notifier)

    def _read(self, peer: socket.socket) -> None:
        try:
            asked = peer.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            asked = b""
        if asked.startswith(PRESENT.strip()):
            self._present()
            with contextlib.suppress(OSError):
                peer.send(PRESENTED)
        self._drop(peer)

    def _drop(self, peer: socket.socket) -> None:
        _, notifier = self._peers.pop(peer.fileno(), (peer, None))
        if notifier is not None:
            notifier.setEnabled(False)
            notifier.deleteLater()
        peer.close()

    def close(self) -> None:
        for peer, _ in list(self._peers.values()):
            self._drop(peer)
        self._notifier.setEnabled(False)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
