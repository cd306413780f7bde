"""The Qt runtime Lockgate runs on survives long use.

PySide6 6.12.0 on Python 3.11 leaks a reference to ``None`` on every Python override that
Qt calls (paintEvent, event, timerEvent) and aborts the process after some thousands of
calls ("Fatal Python error: none_dealloc"). pyproject.toml picks PySide6 by environment
marker to avoid it; this test keeps that choice honest on whatever interpreter runs it: a
bad pairing crashes the test process instead of passing.
"""

from __future__ import annotations

import sys

from PySide6 import __version__ as pyside_version
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget

REPAINTS = 100_000


class CountingWidget(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.paints = 0

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paints += 1
        painter = QPainter(self)
        painter.fillRect(event.rect(), self.palette().window())
        painter.end()


def test_repaint_100000_times_through_a_python_override(qtbot):
    widget = CountingWidget()
    qtbot.addWidget(widget)
    widget.resize(16, 16)
    widget.show()
    qtbot.waitUntil(lambda: widget.paints > 0)  # exposed and painted once
    before = widget.paints
    refs_before = sys.getrefcount(None)
    for _ in range(REPAINTS):
        widget.repaint()
    assert widget.paints - before == REPAINTS
    # The leak shows as None's refcount falling by one per call, long before the abort.
    assert sys.getrefcount(None) > refs_before - REPAINTS // 2


def test_pyside_version_matches_the_interpreter():
    major_minor = tuple(int(p) for p in pyside_version.split(".")[:2])
    if sys.version_info < (3, 12):
        assert major_minor == (6, 11), "PySide6 6.12 aborts on Python 3.11 (none_dealloc)"
    else:
        assert major_minor >= (6, 12)
