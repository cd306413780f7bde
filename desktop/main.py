"""Starting the tray app: the Qt application, its icon, the crash handler, and the
:class:`LockgateApp` that is everything else."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from desktop.app import LockgateApp
from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT

__all__ = ["install_crash_handler", "run_app"]


def install_crash_handler(log_dir: Path, parent: Callable[[], QWidget | None]) -> None:
    """An exception in a slot opens an error dialog (never modal-blocking) and goes to
    desktop.log in the log folder; the gateway, on its own thread, keeps serving."""
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = log_dir / "desktop.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    dialogs: list[QMessageBox] = []

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        logging.getLogger("lockgate.crash").error("unexpected error in the app:\n%s", text)
        box = QMessageBox(parent())
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("Lockgate: something went wrong")
        box.setText(f"{kind.__name__}: {value}")
        box.setInformativeText(
            f"The gateway keeps running. The details are in {path}; please include them "
            "in a bug report."
        )
        box.setDetailedText(text)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _=0, b=box: dialogs.remove(b) if b in dialogs else None)
        dialogs.append(box)
        box.show()

    sys.excepthook = hook


def run_app(paths: Paths, port: int = DEFAULT_PORT) -> int:
    """``lockgate`` with no command: the tray app."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("QT_QPA_PLATFORM")
    ):
        print(
            "Lockgate's app needs a desktop session (no DISPLAY or WAYLAND_DISPLAY here). "
            "Run the gateway alone with `lockgate serve`.",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    qt = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt, QApplication)
    qt.setApplicationName("Lockgate")
    qt.setQuitOnLastWindowClosed(False)  # the tray keeps it alive
    icon = resources.files("lockgate_resources").joinpath("lockgate.svg").read_bytes()
    pixmap = QPixmap()
    pixmap.loadFromData(icon)
    qt.setWindowIcon(QIcon(pixmap))
    app = LockgateApp(paths, port=port)
    install_crash_handler(paths.log_dir, lambda: app.window)
    app.start()
    code = qt.exec()
    app.quit()
    return int(code)
