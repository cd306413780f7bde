"""``serve``: the gateway with its doors. Here, what its HTTP listener does to each
connection: Nagle's algorithm off, so a kept-alive client never waits for a delayed ACK."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from proxy.config.instance import AlreadyRunning
from proxy.doors.serve import _bind_loopback, serve
from tests.support.harness import Harness, running
from tests.support.live import SERVERS

KEEPALIVE_CLIENT = SERVERS / "keepalive_client.mjs"
# Linux holds a delayed ACK for at least 40 ms; a response that waits for one takes that.
DELAYED_ACK_S = 0.040


async def test_every_accepted_connection_has_nagle_off() -> None:
    listener = _bind_loopback(0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()


async def test_a_kept_alive_node_fetch_client_never_waits_for_a_delayed_ack(
    tmp_path: Path,
) -> None:
    # Node's fetch is what the TypeScript MCP SDK's transport uses: most clients over HTTP.
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness):
        node = await asyncio.create_subprocess_exec(
            "node",
            str(KEEPALIVE_CLIENT),
            harness.http_url + "rec",
            "40",
            harness.token("node"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()
    measured = json.loads(out)
    # Kept alive: 42 requests on at most two connections (fetch may open a second while
    # the first is being handed back after the handshake).
    assert measured["sockets"] <= 2
    # With Nagle on, a call waited a whole delayed ACK: every call against `lockgate serve`
    # (42-44 ms each, issue 13), every other one against this in-process gateway. Now
    # hardly any does, whatever the machine's load.
    waited = [ms for ms in measured["ms"] if ms / 1000 >= DELAYED_ACK_S * 0.95]
    assert len(waited) < len(measured["ms"]) / 4, measured["ms"]


async def test_a_second_gateway_on_the_same_folders_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    async with running(harness):
        run_file = harness.paths.run_dir / "gateway.json"
        before = run_file.read_bytes()
        with pytest.raises(AlreadyRunning, match=r"`lockgate serve` runs \(pid \d+\)"):
            await serve(harness.paths, port=0, handle_signals=False)
        assert run_file.read_bytes() == before
