"""The frozen app's entry point: the same ``lockgate`` command the wheel installs.

PyInstaller needs a script to start from; this one does what the console script
``lockgate = desktop.launcher:main`` does, so the bundled ``lockgate`` is the tray app with
no command and the command line with one (``serve``, ``connect NAME``, ...).
"""

from __future__ import annotations

import sys

from desktop.launcher import main  # noqa: TID251 (the app is the entry point)

if __name__ == "__main__":
    sys.exit(main())
