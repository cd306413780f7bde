"""An audit log in a fresh folder, for the tests of the log and its database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.audit.log import AuditLog


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "audit.db"


@pytest.fixture
def log(db: Path) -> Iterator[AuditLog]:
    audit = AuditLog(db)
    yield audit
    audit.close()
