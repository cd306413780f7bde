"""An export file: private as the audit log is, and whole or absent."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.audit.export import ExportFormat, export_to_file
from proxy.audit.records import CallRecord
from tests.support.records import make_record as make


def test_an_export_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "calls.csv"
    (tmp_path / "calls.csv.part").write_text("left by an older try")
    (tmp_path / "calls.csv.part").chmod(0o644)
    old = os.umask(0o022)
    try:
        assert export_to_file([make(), make()], target, ExportFormat.CSV) == 2
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes().count(b"\r\n") == 3  # the header and two calls
    assert not (tmp_path / "calls.csv.part").exists()


def test_an_export_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "calls.jsonl"

    def records() -> Iterator[CallRecord]:
        yield make()
        raise OSError("the disk is full")

    with pytest.raises(OSError, match="the disk is full"):
        export_to_file(records(), target, ExportFormat.JSONL)
    assert list(tmp_path.iterdir()) == []
