"""A client message over the size limit (the setting max_message_bytes), at both doors: a
JSON-RPC error that gives the limit, a row in the audit log and in Live calls for a
tools/call, the server never sent it nor blamed, and the session going on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.audit.records import CallRecord
from proxy.doors.oversize import Oversized, read_message
from proxy.gateway.events import CallDecided, CallStarted
from tests.support.harness import Harness, HttpSession, LocalClient, running, write_json

LIMIT = 65536
BIG = "x" * (3 * LIMIT)  # about 192 KB of arguments


def small_limit(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    write_json(harness.paths.config_dir / "settings.json", {"max_message_bytes": LIMIT})
    harness.write_policy({"default": "allow"})
    return harness


def refused_rows(harness: Harness) -> list[CallRecord]:
    assert harness.gateway is not None
    return [r for r in harness.gateway.audit.query(tool="echo") if r.decision.value == "denied"]


async def test_over_http_the_agent_is_told_the_limit_and_the_call_is_logged(
    tmp_path: Path,
) -> None:
    harness = small_limit(tmp_path)
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        session = HttpSession(http, harness.http_url + "rec", harness.token("agent"))
        await session.open()
        response = await session.post(
            {"id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"a": BIG}}}
        )
        assert response.status_code == 413
        answer = response.json()
        assert answer["id"] == 7
        assert answer["error"]["message"] == (
            "the message is 192 KB, over Lockgate's limit of 64 KB per message (the setting "
            "max_message_bytes); the server was not sent it"
        )
        assert harness.recorded() == []  # never sent
        (row,) = refused_rows(harness)
        assert (row.client, row.server, row.outcome.value) == ("agent", "rec", "protocol_error")
        assert "over Lockgate's limit of 64 KB" in row.reason
        assert row.arguments == {
            "_lockgate": f"{len(response.request.content)} bytes: too large to read, not kept"
        }
        started = [e for e in harness.events if isinstance(e, CallStarted) and e.tool == "echo"]
        decided = [e for e in harness.events if isinstance(e, CallDecided)]
        assert [e.call_id for e in started] == [d.call_id for d in decided]  # a Live calls row
        # The session goes on, and its server was never blamed.
        assert "ran echo" in json.dumps(await session.call("echo", {"a": "small"}))


async def test_the_sdk_client_reads_the_refusal_as_an_error_it_can_show(tmp_path: Path) -> None:
    harness = small_limit(tmp_path)
    async with running(harness):
        token = harness.token("sdk-agent")
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(harness.http_url + "rec", http_client=http)) as client,
        ):
            with pytest.raises(MCPError, match="over Lockgate's limit of 64 KB"):
                await client.call_tool("echo", {"a": BIG})
            assert not (await client.call_tool("echo", {"a": "small"})).is_error


async def test_over_the_local_socket_too_and_the_session_goes_on(tmp_path: Path) -> None:
    harness = small_limit(tmp_path)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        params = {"name": "echo", "arguments": {"a": BIG}}
        client.send({"id": "big", "method": "tools/call", "params": params})
        answer = await client.answer("big")
        assert answer["error"]["code"] == -32600
        assert "over Lockgate's limit of 64 KB" in answer["error"]["message"]
        client.send({"id": 9, "method": "ping", "params": {"pad": BIG}})  # not a call
        assert "over Lockgate's limit" in (await client.answer(9))["error"]["message"]
        assert "ran echo" in json.dumps(await client.call("echo", {"a": "small"}))
        assert harness.recorded_names() == ["echo"]  # only the small one reached it
        assert len(refused_rows(harness)) == 1
        (session,) = gateway.sessions.values()
        assert session.upstream is not None
        assert not session.upstream.dead.is_set()


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT + 1, 5 * LIMIT + 3])
async def test_read_message_finds_the_next_line_whatever_the_size(size: int) -> None:
    reader = asyncio.StreamReader(limit=LIMIT)
    first = b'{"id": 1, "method": "tools/call", "params": {"name": "t", "x": "' + b"y" * size
    reader.feed_data(first + b'"}}\n{"id": 2}\n')
    reader.feed_eof()
    got = await read_message(reader)
    if size < LIMIT - 100:
        assert got == first + b'"}}\n'
    else:
        assert isinstance(got, Oversized)
        assert got.size == len(first) + 4
        assert (got.request_id, got.method, got.tool) == (1, "tools/call", "t")
    assert await read_message(reader) == b'{"id": 2}\n'
    assert await read_message(reader) == b""
