"""``lockgate status`` against a running ``lockgate serve``: who serves, and what is wrong
with its files, servers.json as policy.json."""

from __future__ import annotations

from pathlib import Path

from proxy.bridge.control import control
from proxy.config.paths import Paths
from proxy.config.servers_edit import set_server_disabled
from tests.support.live import LiveGateway, free_port
from tests.support.waiting import eventually_sync


def test_status_names_who_serves_and_a_broken_servers_json_until_it_is_valid_again(
    live_gateway: LiveGateway,
) -> None:
    status = live_gateway.lockgate("status")
    assert status.returncode == 0, status.stderr
    assert live_gateway.proc is not None
    assert status.stdout.splitlines()[0] == (
        f"gateway:   running in `lockgate serve` (pid {live_gateway.proc.pid}) on {live_gateway.base_url}"
    )
    assert "servers.json error" not in status.stdout

    servers_file = live_gateway.config_dir / "servers.json"
    in_force = servers_file.read_text()
    servers_file.write_text(in_force.replace('"time"', '"bad name!"', 1))
    eventually_sync(
        lambda: "servers.json error" in live_gateway.lockgate("status").stdout,
        "status to report the broken servers.json",
    )
    told = live_gateway.lockgate("status").stdout
    assert "servers.json error (the servers in force stay):" in told
    assert "a server name is" in told

    servers_file.write_text(in_force)  # back to exactly what is in force
    eventually_sync(
        lambda: "servers.json error" not in live_gateway.lockgate("status").stdout,
        "the error to clear once the file is valid again",
    )


def test_serve_listens_on_the_port_setting(tmp_path: Path) -> None:
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    port = free_port()
    assert gateway.lockgate("settings", "port", str(port)).returncode == 0
    assert gateway.lockgate("settings").stdout.split()[:2] == ["port", str(port)]
    gateway.start(port=None)  # no --port
    try:
        assert gateway.port == port
    finally:
        gateway.stop()


def test_status_names_the_servers_turned_off(live_gateway: LiveGateway) -> None:
    paths = Paths(live_gateway.config_dir, live_gateway.data_dir)
    set_server_disabled(paths.servers_file, "misbehaving", True)
    assert control(paths, "reload-servers")["servers"] == ["everything", "remote", "time"]
    status = live_gateway.lockgate("status")
    assert status.returncode == 0, status.stderr
    assert "servers:   everything, remote, time (turned off: misbehaving)" in (
        status.stdout.splitlines()
    )
