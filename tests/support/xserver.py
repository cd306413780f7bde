"""A real X server (Xvfb) of a test's own, whatever DISPLAY the suite runs under."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
from collections.abc import Iterator

__all__ = ["own_display"]


@contextlib.contextmanager
def own_display(timeout: float = 10) -> Iterator[str]:
    """Start Xvfb at 1280x800 on a display number it picks itself (``-displayfd``: two
    test processes never race for one), and yield it as ``":N"``; stopped afterwards."""
    assert shutil.which("Xvfb"), "Xvfb is missing: ./dev test installs it (apt)"
    read, write = os.pipe()
    try:
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write,),
        )
    finally:
        os.close(write)
    try:
        with os.fdopen(read) as told:
            ready, _, _ = select.select([told], [], [], timeout)
            assert ready, "Xvfb did not start"
            number = told.readline().strip()  # written once it accepts connections
        assert number.isdigit(), "Xvfb did not say its display"
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)
