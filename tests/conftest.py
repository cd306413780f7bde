"""Shared test set-up: every test gets its own Lockgate folders, and Qt runs offscreen
unless a test asks for the real (Xvfb) display."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports Qt. Tests that need a real X display (tray, screenshots) set
# QT_QPA_PLATFORM=xcb themselves; `./dev test` runs the suite under xvfb-run for them.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def lockgate_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point Lockgate at fresh folders, never at the real user's config or data."""
    config = tmp_path / "config"
    data = tmp_path / "data"
    monkeypatch.setenv("LOCKGATE_CONFIG_DIR", str(config))
    monkeypatch.setenv("LOCKGATE_DATA_DIR", str(data))
    return config, data
