"""``lockgate token revoke`` against a running gateway: the client's HTTP sessions end
then, and their servers with them, instead of idling on for 15 minutes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.bridge.control import control
from proxy.config.paths import Paths
from tests.support.live import LiveGateway, servers_json
from tests.support.waiting import eventually


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


async def test_revoking_a_token_ends_the_clients_open_sessions(live: LiveGateway) -> None:
    paths = Paths(live.config_dir, live.data_dir)

    def sessions_of(client: str) -> list[object]:
        return [s for s in control(paths, "status")["sessions"] if s["client"] == client]

    async with live.client(client="leaving") as leaving, live.client(client="staying") as staying:
        assert not (await leaving.call_tool("echo", {"message": "hi"})).is_error
        assert not (await staying.call_tool("echo", {"message": "hi"})).is_error
        assert len(sessions_of("leaving")) == 1
        revoked = await asyncio.to_thread(live.lockgate, "token", "revoke", "leaving")
        assert revoked.returncode == 0, revoked.stderr
        assert "ended its 1 open session(s) in the running gateway" in revoked.stderr
        await eventually(lambda: not sessions_of("leaving"), "its session to end")
        assert len(sessions_of("staying")) == 1  # another client's are left alone
        assert not (await staying.call_tool("echo", {"message": "still"})).is_error
