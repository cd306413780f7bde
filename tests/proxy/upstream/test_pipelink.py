"""PipeLink, the gateway's JSON-RPC engine for stdio servers, against real processes:
tests/servers/misbehaving.py (answers badly on purpose), tests/servers/deep.py (nests
deeper than parsers like, or writes lines that cannot be read) and server-everything
(npm); and, end to end, deep.py's answers through a real gateway (``proxy.doors.serve.serve``
in the test's loop) on both front doors: ``lockgate connect`` and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError

from proxy.config.paths import Paths
from proxy.config.servers import StdioServer
from proxy.config.tokens import TokenStore
from proxy.doors.serve import serve
from proxy.upstream.pipelink import MAX_NESTING, PipeLink
from proxy.upstream.process import stdio_pipes
from tests.proxy.bridge import modes
from tests.support.live import EVERYTHING_JS, SERVERS, lockgate_command
from tests.support.waiting import eventually

bridge_mode = modes.bridge_mode  # the test through the gateway runs both ways

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


async def test_a_line_with_a_byte_order_mark_is_read_and_a_lone_surrogate_made_text():
    """A BOM before the JSON (some tools write one) used to make the answer unreadable and
    the call wait for ever; a lone surrogate (valid JSON, not text) used to reach the
    SDK's writers, which could not send it. Both answers arrive, as text."""
    async with misbehaving() as link:
        bom = await link.send_raw_request("tools/call", {"name": "bom"})
        surrogate = await link.send_raw_request("tools/call", {"name": "surrogate"})
    assert bom["content"][0]["text"] == "bom done"
    assert surrogate["content"][0]["text"] == "a \ufffd b"


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
    seen: list[tuple[float, float | None]] = []
    asked: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async def on_request(_ctx: object, method: str, _params: Mapping[str, Any] | None) -> dict:
        asked.append(method)
        return {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}

    async with linked("node", str(EVERYTHING_JS), "stdio", on_request=on_request) as link:
        long = await link.send_raw_request(
            "tools/call",
            {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}},
            CallOptions(on_progress=on_progress),
        )
        sampled = await link.send_raw_request(
            "tools/call",
            {"name": "trigger-sampling-request", "arguments": {"prompt": "p", "maxTokens": 5}},
        )
    assert "content" in long
    assert seen == [(1, 2), (2, 2)]
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


# -- answers that cannot be read, or nest too deeply to pass on (tests/servers/deep.py) --


def deep(on_request: Any = None, on_notify: Any = None) -> Any:
    return linked(
        sys.executable, str(SERVERS / "deep.py"), on_request=on_request, on_notify=on_notify
    )


@pytest.mark.parametrize(
    ("name", "arguments", "why"),
    [
        ("nest", {"depth": 100_000}, "it is nested too deeply"),
        ("nest", {"depth": 100_000, "id_last": True}, "it is nested too deeply"),
        # 2 MB: scanned on a worker thread
        ("nest", {"depth": 1_000_000, "id_last": True}, "it is nested too deeply"),
        ("broken", {}, "it is not valid JSON"),
    ],
    ids=["deep", "deep-id-last", "long-deep-id-last", "not-json"],
)
async def test_an_answer_that_cannot_be_read_fails_its_call_and_nothing_else(name, arguments, why):
    async with deep() as link:
        with anyio.fail_after(20), pytest.raises(MCPError) as caught:
            await link.send_raw_request("tools/call", {"name": name, "arguments": arguments})
        echo = await link.send_raw_request("tools/call", {"name": "echo"})
    assert caught.value.error.code == -32603
    assert caught.value.error.message == f"the server's answer could not be read: {why}"
    assert echo["content"][0]["text"] == "echo done"


async def test_an_answer_deeper_than_the_limit_fails_its_call_one_at_the_limit_arrives():
    # the message is level 1 and its result level 2, so "nested" may have MAX_NESTING - 2
    async with deep() as link:
        at_limit = await link.send_raw_request(
            "tools/call", {"name": "nest", "arguments": {"depth": MAX_NESTING - 2}}
        )
        requests = [
            ("tools/call", {"name": "nest", "arguments": {"depth": MAX_NESTING - 1}}),
            ("tools/call", {"name": "nest", "arguments": {"depth": 900}}),  # parses, too
            ("tools/list", {"cursor": "nest:900"}),
        ]
        failed = []
        for method, params in requests:
            with anyio.fail_after(20), pytest.raises(MCPError) as caught:
                await link.send_raw_request(method, params)
            failed.append((caught.value.error.code, caught.value.error.message))
        listed = await link.send_raw_request("tools/list", None)
    assert json.dumps(at_limit["nested"]).count("[") == MAX_NESTING - 2
    too_deep = "the server's answer nests more than 128 levels deep; Lockgate does not pass it on"
    assert failed == [(-32603, too_deep)] * 3
    assert "echo" in [t["name"] for t in listed["tools"]]


async def test_unreadable_lines_that_answer_no_call_are_skipped_and_logged(caplog):
    asked: list[str] = []
    told: list[str] = []

    async def on_request(_ctx: object, method: str, _params: Any) -> dict[str, Any]:
        asked.append(method)
        return {"roots": []}

    async def on_notify(_ctx: object, method: str, _params: Any) -> None:
        told.append(method)

    caplog.set_level("WARNING", logger="proxy.upstream.pipelink")
    async with deep(on_request, on_notify) as link:
        with anyio.fail_after(20):
            anonymous = await link.send_raw_request("tools/call", {"name": "anonymous"})
            asking = await link.send_raw_request("tools/call", {"name": "ask-deep"})
    assert anonymous["content"][0]["text"] == "anonymous done"
    assert asking["content"][0]["text"] == "ask-deep done"
    assert asked == []
    assert told == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("answers no call in flight (it is nested too deeply" in m for m in logged)
    assert any(
        "skipped a request or notification from the server that cannot be read" in m for m in logged
    )


async def test_a_server_request_nesting_too_deeply_is_answered_with_an_error_not_passed_on():
    asked: list[str] = []

    async def on_request(_ctx: object, method: str, _params: Any) -> dict[str, Any]:
        asked.append(method)
        return {"roots": []}

    async with deep(on_request) as link:
        with anyio.fail_after(20):
            result = await link.send_raw_request("tools/call", {"name": "ask-nested"})
    answer = json.loads(result["content"][0]["text"])
    assert answer["id"] == "s2"
    assert answer["error"]["code"] == -32600
    assert "nest more than 128 levels deep" in answer["error"]["message"]
    assert asked == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":' + b"[" * 5000 + b"]" * 5000 + b"}", (False, 7)),
        (b'{"result":' + b"[" * 5000 + b"]" * 5000 + b', "id" : "8" }', (False, "8")),
        # brackets and quotes inside strings, an escaped key: "\u0069d" is "id"
        (b'{"result":{"a":"x\\"}]]{["},"\\u0069d":9}', (False, 9)),
        (b'{"id":3,"result":{"content":[}', (False, 3)),
        (b'{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":{"x":[[[', (True, "s1")),
        (b'{"method":"notifications/message","params":[[[[', (True, None)),
        (b'{"id": 1.5, "x": [}', (False, None)),
        (b'{"id": ' + b"1" * 5000 + b', "x": [}', (False, None)),  # int() refuses it
        (b'{"id": true, "x": [}', (False, None)),
        (b'{"id": null, "x": [}', (False, None)),
        (b'{"result":[[[ , "id": 4', (False, None)),  # the id is inside the unclosed value
        (b'{"id":', (False, None)),
        (b'{"a\\', (False, None)),
        (b"this is not JSON {{{", None),
        (b"[1, 2", None),
    ],
)
def test_the_top_level_of_an_unparsable_line_is_read_without_recursion(line, expected):
    from proxy.upstream.pipelink import _NO_ID, _peek_top_level

    peeked = _peek_top_level(line)
    if peeked is not None:
        peeked = (peeked[0], None if peeked[1] is _NO_ID else peeked[1])
    assert peeked == expected


# -- end to end: the same answers through a real gateway, on both front doors ----------


@contextlib.asynccontextmanager
async def gateway_with_deep(tmp_path: Path) -> AsyncIterator[tuple[Paths, Any]]:
    """``proxy.doors.serve.serve`` in this loop, with deep.py as its server ``deep``."""
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    paths.config_dir.mkdir()
    servers = {"deep": {"command": sys.executable, "args": [str(SERVERS / "deep.py")]}}
    (paths.config_dir / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    (paths.config_dir / "policy.json").write_text(json.dumps({"version": "1", "default": "allow"}))
    ready: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(
            paths,
            port=0,
            on_ready=lambda gateway, info: ready.set_result((gateway, info)),
            stop=stop,
            handle_signals=False,
        )
    )
    try:
        yield paths, await asyncio.wait_for(ready, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.usefixtures("bridge_mode")
async def test_through_the_gateway_every_unusable_answer_is_an_error_on_both_front_doors(
    tmp_path,
):
    async with gateway_with_deep(tmp_path) as (paths, (gateway, info)):
        env = {
            **os.environ,
            "LOCKGATE_CONFIG_DIR": str(paths.config_dir),
            "LOCKGATE_DATA_DIR": str(paths.data_dir),
        }
        # the local front door: `lockgate connect`, spoken to in JSON-RPC lines
        proc = await asyncio.create_subprocess_exec(
            lockgate_command(),
            "connect",
            "deep",
            "--client",
            "raw",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None

        async def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            assert proc.stdin is not None
            assert proc.stdout is not None
            message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            async with asyncio.timeout(20):
                answer: dict[str, Any] = json.loads(await proc.stdout.readline())
            assert answer["id"] == request_id
            return answer

        assert "result" in await ask(0, "initialize", INIT)
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await eventually(  # until the fast lane is open for tools/call
            lambda: all(s.initialized for s in gateway.sessions.values()), "the session to open"
        )
        local = [
            # tools/list goes the SDK's way: 300 levels is more than its models write
            await ask(1, "tools/list", {"cursor": "nest:100000"}),
            await ask(2, "tools/list", {"cursor": "nest:300"}),
            # tools/call takes the fast lane
            await ask(3, "tools/call", {"name": "nest", "arguments": {"depth": 100_000}}),
            await ask(4, "tools/call", {"name": "nest", "arguments": {"depth": 900}}),
            await ask(5, "tools/call", {"name": "broken", "arguments": {}}),
        ]
        listed = await ask(6, "tools/list", {})
        echo = await ask(7, "tools/call", {"name": "echo", "arguments": {}})
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 20)

        # the HTTP front door, with the SDK's own client
        token = TokenStore(paths.clients_file).create("http-test")
        over_http = []
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            Client(
                streamable_http_client(info.url + "deep", http_client=http), mode="legacy"
            ) as client,
        ):
            for attempt in (
                lambda: client.list_tools(cursor="nest:100000", cache_mode="bypass"),
                lambda: client.list_tools(cursor="nest:300", cache_mode="bypass"),
                lambda: client.call_tool("nest", {"depth": 900}),
                lambda: client.call_tool("broken", {}),
            ):
                with anyio.fail_after(20), pytest.raises(MCPError) as caught:
                    await attempt()
                over_http.append(caught.value.error.message)
            http_listed = await client.list_tools(cache_mode="bypass")

    unreadable = "the server's answer could not be read: "
    too_deep = "the server's answer nests more than 128 levels deep; Lockgate does not pass it on"
    assert [(a["error"]["code"], a["error"]["message"]) for a in local] == [
        (-32603, unreadable + "it is nested too deeply"),
        (-32603, too_deep),
        (-32603, unreadable + "it is nested too deeply"),
        (-32603, too_deep),
        (-32603, unreadable + "it is not valid JSON"),
    ]
    assert "echo" in [t["name"] for t in listed["result"]["tools"]]
    assert echo["result"]["content"][0]["text"] == "echo done"
    assert over_http == [
        unreadable + "it is nested too deeply",
        too_deep,
        too_deep,
        unreadable + "it is not valid JSON",
    ]
    assert "echo" in [t.name for t in http_listed.tools]
