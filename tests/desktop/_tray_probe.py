"""Run the real app on an X display and report what its tray did, one line per fact.

    python _tray_probe.py CONFIG_DIR DATA_DIR

Prints "tray available", "window visible", "tray geometry X Y W H", and "adopted" when a
tray that appeared later was taken up; exits after "adopted" or 20 s. Used by
test_tray.py, which owns the X server and the tray host (trayer).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop
from PySide6.QtWidgets import QApplication

from desktop.app import LockgateApp
from proxy.config.paths import Paths


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def main() -> int:
    qt = QApplication(sys.argv[:1])
    qt.setQuitOnLastWindowClosed(False)
    started = time.monotonic()
    app = LockgateApp(Paths(Path(sys.argv[1]), Path(sys.argv[2])), port=0, tray_poll_ms=200)
    app.start()
    print(f"tray available {app.tray.available}", flush=True)
    while not app.state.running and time.monotonic() - started < 20:
        spin(0.05)
    print(f"running after {time.monotonic() - started:.2f} s", flush=True)
    spin(0.5)
    print(f"window visible {app.window.isVisible()}", flush=True)
    was_available = app.tray.available
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spin(0.1)
        if app.tray.available and app.tray.icon is not None:
            geometry = app.tray.icon.geometry()
            if geometry.width() > 0:
                print(
                    f"tray geometry {geometry.x()} {geometry.y()} {geometry.width()} "
                    f"{geometry.height()}",
                    flush=True,
                )
                print("tooltip " + app.tray.icon.toolTip(), flush=True)
                if not was_available:
                    print("adopted", flush=True)
                break
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
