"""PipeLink, the gateway's JSON-RPC engine for stdio servers, against real processes:
tests/servers/misbehaving.py (answers badly on purpose) and server-everything (npm)."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proxy._pipes import stdio_pipes
from proxy.pipelink import PipeLink
from proxy.servers import StdioServer
from tests.proxy._live import EVERYTHING_JS, SERVERS

INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {"sampling": {}},
    "clientInfo": {"name": "t", "version": "1"},
}


@contextlib.asynccontextmanager
async def linked(
    command: str, *args: str, on_request: Any = None, on_notify: Any = None
) -> AsyncIterator[PipeLink]:
    async def no_request(_ctx: object, method: str, _params: Any) -> dict[str, Any]:
        raise AssertionError(f"unexpected request {method}")

    async def ignore(_ctx: object, _method: str, _params: Any) -> None:
        return None

    spec = StdioServer(name="t", command=command, args=tuple(args))
    with tempfile.TemporaryFile("w") as errlog:
        async with stdio_pipes(spec, errlog) as (reader, writer):
            link = PipeLink(reader, writer)
            async with anyio.create_task_group() as tg:
                await tg.start(link.run, on_request or no_request, on_notify or ignore)
                await link.send_raw_request("initialize", INIT)
                await link.notify("notifications/initialized", None)
                yield link
                tg.cancel_scope.cancel()


def misbehaving() -> Any:
    return linked(sys.executable, str(SERVERS / "misbehaving.py"))


async def test_answers_reach_their_callers_even_with_string_ids_and_garbage_lines():
    async with misbehaving() as link:
        results = {}

        async def call(name: str) -> None:
            results[name] = await link.send_raw_request("tools/call", {"name": name})

        async with anyio.create_task_group() as tg:
            for name in ("garbage", "string-id", "echo"):
                tg.start_soon(call, name)
    assert {k: v["content"][0]["text"] for k, v in results.items()} == {
        "garbage": "garbage done",
        "string-id": "string-id done",
        "echo": "echo done",
    }


async def test_a_result_that_is_not_an_object_fails_the_call_and_nothing_else():
    async with misbehaving() as link:
        with pytest.raises(MCPError) as caught:
            await link.send_raw_request("tools/call", {"name": "not-an-object"})
        assert caught.value.error.code == -32603
        echo = await link.send_raw_request("tools/call", {"name": "echo"})
    assert echo["content"][0]["text"] == "echo done"


async def test_a_timeout_fails_the_call_with_request_timeout():
    async with misbehaving() as link:
        with pytest.raises(MCPError) as caught:
            await link.send_raw_request("tools/call", {"name": "silent"}, {"timeout": 0.3})
        assert caught.value.error.code == -32001
        assert (await link.send_raw_request("ping", None)) == {}


async def test_a_server_that_exits_mid_call_fails_every_call_in_flight():
    async with misbehaving() as link:
        errors = []

        async def call(name: str) -> None:
            try:
                await link.send_raw_request("tools/call", {"name": name})
            except MCPError as exc:
                errors.append((name, exc.error.code, exc.error.message))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "silent")
            await anyio.sleep(0.1)
            tg.start_soon(call, "exit")
        with pytest.raises(MCPError) as after:
            await link.send_raw_request("ping", None)
    assert sorted(errors) == [
        ("exit", -32000, "Connection closed"),
        ("silent", -32000, "Connection closed"),
    ]
    assert after.value.error.code == -32000


async def test_progress_comes_to_the_caller_and_server_requests_to_the_handler():
    progress: list[tuple[float, float | None]] = []
    asked: list[str] = []

    async def on_progress(value: float, total: float | None, _message: str | None) -> None:
        progress.append((value, total))

    async def on_request(_ctx: object, method: str, _params: Mapping[str, Any] | None) -> dict:
        asked.append(method)
        return {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}

    async with linked("node", str(EVERYTHING_JS), "stdio", on_request=on_request) as link:
        long = await link.send_raw_request(
            "tools/call",
            {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}},
            {"on_progress": on_progress},
        )
        sampled = await link.send_raw_request(
            "tools/call",
            {"name": "trigger-sampling-request", "arguments": {"prompt": "p", "maxTokens": 5}},
        )
    assert "content" in long
    assert progress == [(1, 2), (2, 2)]
    assert asked == ["sampling/createMessage"]
    assert "hi" in str(sampled)


async def test_a_caller_that_gives_up_cancels_upstream(tmp_path):
    tee = tmp_path / "tee.jsonl"
    async with linked(
        sys.executable, str(SERVERS / "tee.py"), str(tee), "node", str(EVERYTHING_JS), "stdio"
    ) as link:
        with anyio.move_on_after(0.5):
            await link.send_raw_request(
                "tools/call",
                {"name": "trigger-long-running-operation", "arguments": {"duration": 5}},
            )
        assert (await link.send_raw_request("ping", None)) == {}
    saw = [json.loads(line) for line in tee.read_text().splitlines()]
    call = next(m for m in saw if m.get("method") == "tools/call")
    cancels = [m for m in saw if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [call["id"]]
