"""Fixtures for the tests that need real outside parts (loaded by tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def config_dir(lockgate_dirs: tuple[Path, Path]) -> Path:
    return lockgate_dirs[0]


@pytest.fixture(scope="session")
def remote_everything() -> Iterator[str]:
    """server-everything over streamable HTTP: the remote upstream of the live gateway."""
    from tests.support.live import everything_over_http

    with everything_over_http() as url:
        yield url


@pytest.fixture
def live_gateway(tmp_path: Path, remote_everything: str) -> Iterator[object]:
    """A real `lockgate serve` (subprocess) with real upstream servers; see tests/support/live.py."""
    from tests.support.live import LiveGateway, servers_json

    config, data = tmp_path / "live-config", tmp_path / "live-data"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "upstream-received.jsonl")
    (config / "servers.json").write_text(
        json.dumps(servers_json(gateway.tee_log, remote_everything))
    )
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()
