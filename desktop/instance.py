"""One app per user, seen from the desktop: a second launch brings the first one's window
to the front instead of starting again.

The running app listens on a Unix socket in its private run folder (:class:`WindowBeacon`)
and says where in the instance lock's file; a second launch that finds the lock taken
sends ``present`` there (:func:`proxy.config.instance.bring_to_front`) and exits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from proxy.config.instance import PRESENT, PRESENTED, InstanceLock
from proxy.doors.local import socket_path_for

__all__ = ["WindowBeacon"]


class WindowBeacon(QObject):
    """Listens for ``present`` from a second launch and calls ``present`` on the GUI thread."""

    def __init__(self, instance: InstanceLock, run_dir: Path, present: Callable[[], None]) -> None:
        super().__init__()
        self._present = present
        self.path = socket_path_for(run_dir, "window.sock")
        QLocalServer.removeServer(str(self.path))  # a crashed app's; the lock says it is ours
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)
        if self._server.listen(str(self.path)):
            instance.announce_window(str(self.path))

    @property
    def listening(self) -> bool:
        return self._server.isListening()

    def _accept(self) -> None:
        while (peer := self._server.nextPendingConnection()) is not None:
            peer.readyRead.connect(lambda p=peer: self._read(p))
            peer.disconnected.connect(peer.deleteLater)

    def _read(self, peer: QLocalSocket) -> None:
        if bytes(peer.readAll().data()).startswith(PRESENT.strip()):
            self._present()
            peer.write(PRESENTED)
            peer.flush()
        peer.disconnectFromServer()

    def close(self) -> None:
        self._server.close()
