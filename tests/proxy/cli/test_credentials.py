"""``lockgate token revoke`` against a running gateway: the client's HTTP sessions end
then, and their servers with them, instead of idling on for 15 minutes."""

from __future__ import annotations

import asyncio

from proxy.bridge.control import control
from proxy.config.paths import Paths
from tests.support.live import LiveGateway
from tests.support.waiting import eventually


async def test_revoking_a_token_ends_the_clients_open_sessions(live_gateway: LiveGateway) -> None:
    paths = Paths(live_gateway.config_dir, live_gateway.data_dir)

    def sessions_of(client: str) -> list[object]:
        return [s for s in control(paths, "status")["sessions"] if s["client"] == client]

    async with (
        live_gateway.client(client="leaving") as leaving,
        live_gateway.client(client="staying") as staying,
    ):
        assert not (await leaving.call_tool("echo", {"message": "hi"})).is_error
        assert not (await staying.call_tool("echo", {"message": "hi"})).is_error
        assert len(sessions_of("leaving")) == 1
        revoked = await asyncio.to_thread(live_gateway.lockgate, "token", "revoke", "leaving")
        assert revoked.returncode == 0, revoked.stderr
        assert "ended its 1 open session(s) in the running gateway" in revoked.stderr
        await eventually(lambda: not sessions_of("leaving"), "its session to end")
        assert len(sessions_of("staying")) == 1  # another client's are left alone
        assert not (await staying.call_tool("echo", {"message": "still"})).is_error
