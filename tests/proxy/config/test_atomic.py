"""Writing a file whole: readers see the old bytes or the new, a secret-bearing file is
never readable by others, and a failed write leaves the old file and no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proxy.config.atomic import write_atomic


def test_the_new_bytes_replace_the_old_whole_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "private" / "clients.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new", mode=0o640)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # the folder made private
    assert os.listdir(path.parent) == ["clients.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(b"old")
    (tmp_path / "policy.json.d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "policy.json.d", b"new")  # a folder cannot be replaced
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["policy.json", "policy.json.d"]
