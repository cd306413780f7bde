"""``lockgate status`` against a running ``lockgate serve``: who serves, and what is wrong
with its files, servers.json as policy.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveGateway, free_port, servers_json
from tests.support.waiting import eventually_sync


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveGateway]:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    (config / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def test_status_names_who_serves_and_a_broken_servers_json_until_it_is_valid_again(
    live: LiveGateway,
) -> None:
    status = live.lockgate("status")
    assert status.returncode == 0, status.stderr
    assert live.proc is not None
    assert status.stdout.splitlines()[0] == (
        f"gateway:   running in `lockgate serve` (pid {live.proc.pid}) on {live.base_url}"
    )
    assert "servers.json error" not in status.stdout

    servers_file = live.config_dir / "servers.json"
    in_force = servers_file.read_text()
    servers_file.write_text(in_force.replace('"time"', '"bad name!"', 1))
    eventually_sync(
        lambda: "servers.json error" in live.lockgate("status").stdout,
        "status to report the broken servers.json",
    )
    told = live.lockgate("status").stdout
    assert "servers.json error (the servers in force stay):" in told
    assert "a server name is" in told

    servers_file.write_text(in_force)  # back to exactly what is in force
    eventually_sync(
        lambda: "servers.json error" not in live.lockgate("status").stdout,
        "the error to clear once the file is valid again",
    )


def test_serve_listens_on_the_port_setting(tmp_path: Path) -> None:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    port = free_port()
    assert gateway.lockgate("settings", "port", str(port)).returncode == 0
    assert gateway.lockgate("settings").stdout.startswith(f"port       {port} ")
    gateway.start(port=None)  # no --port
    try:
        assert gateway.port == port
    finally:
        gateway.stop()
