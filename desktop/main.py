"""Starting the tray app: the Qt application, its icon, the crash handler, and the
:class:`LockgateApp` that is everything else."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QSocketNotifier, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from proxy.config.instance import AlreadyRunning, InstanceLock, bring_to_front
from proxy.config.paths import Paths
from proxy.config.settings import SettingsError, load_settings
from proxy.errors import LockgateError

__all__ = ["install_crash_handler", "quit_on_signals", "run_app"]

log = logging.getLogger(__name__)


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


def run_app(paths: Paths, port: int | None = None) -> int:
    """``lockgate`` with no command: the tray app, once per user, on ``port`` (None: the
    port setting).

    A second launch brings the running app's window to the front and exits; with
    ``lockgate serve`` running instead, it says so and exits non-zero.
    """
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
    instance = InstanceLock(paths)
    try:
        instance.acquire("app")
    except AlreadyRunning as running:
        return _already_running(running)
    try:
        try:
            port = port if port is not None else load_settings(paths).port
        except SettingsError as broken:
            return _cannot_start(broken)
        return _run(paths, port, instance)
    finally:
        instance.release()


def _already_running(running: AlreadyRunning) -> int:
    holder = running.holder
    window = holder.window if holder is not None and holder.kind == "app" else None
    if window and bring_to_front(window):
        print("Lockgate is already running; its window is in front now.", file=sys.stderr)
        return 0
    return _cannot_start(running)


def _cannot_start(why: LockgateError) -> int:
    print(f"lockgate: {why.told()}", file=sys.stderr)
    if not sys.stderr.isatty():  # launched from a menu: nobody reads stderr, say it here
        qt = QApplication.instance() or QApplication(sys.argv[:1])
        box = QMessageBox(QMessageBox.Icon.Warning, "Lockgate", why.title)
        box.setInformativeText(why.message)
        box.exec()
        del qt
    return 1


def _run(paths: Paths, port: int, instance: InstanceLock) -> int:
    # The app itself (the gateway, every view) only once the lock is ours: a second
    # launch is answered in a fraction of the time.
    from desktop.app import LockgateApp  # noqa: PLC0415
    from desktop.instance import WindowBeacon  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    qt = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt, QApplication)
    qt.setApplicationName("Lockgate")
    qt.setQuitOnLastWindowClosed(False)  # the tray keeps it alive
    icon = resources.files("lockgate_resources").joinpath("lockgate.svg").read_bytes()
    pixmap = QPixmap()
    pixmap.loadFromData(icon)
    qt.setWindowIcon(QIcon(pixmap))
    app = LockgateApp(paths, port=port, instance=instance)
    install_crash_handler(paths.log_dir, lambda: app.window)
    beacon = WindowBeacon(instance, paths.run_dir, app.window.present)
    stop_signals = quit_on_signals(app.quit)  # as the tray's Quit: Qt's own asks windows
    app.start()
    try:
        code = qt.exec()
    finally:
        stop_signals()
        beacon.close()
        app.quit()
    return int(code)


def quit_on_signals(quit_app: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT call ``quit_app``, the app's Quit: the gateway stopped, the run
    files removed (Qt's own quit would ask the window, which hides to the tray instead).

    Qt's loop never runs Python's signal handlers on its own: the signal's byte, written
    to a socket by Python's wakeup fd, wakes it. Returns what undoes it."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read)

    def woken() -> None:
        with contextlib.suppress(OSError):
            reader.recv(64)  # Python has run the handler below by now

    def quit_now(signum: int, frame: object) -> None:
        log.info("signal %d: quitting", signum)
        quit_app()

    notifier.activated.connect(woken)
    previous_fd = signal.set_wakeup_fd(writer.fileno())
    previous = {s: signal.signal(s, quit_now) for s in (signal.SIGTERM, signal.SIGINT)}

    def undo() -> None:
        notifier.setEnabled(False)
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        reader.close()
        writer.close()

    return undo
