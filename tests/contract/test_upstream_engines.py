"""One contract, both upstream engines: :class:`~proxy.upstream.pipelink.PipeLink` (a stdio
server's pipes) and the SDK's ``JSONRPCDispatcher`` (a remote server over streamable HTTP).

Lockgate keeps its own JSON-RPC engine on stdio for speed, beside the SDK's for HTTP; the
gateway sees both through :class:`~proxy.upstream.connection.Upstream`. Every case here
runs on both, against the same real server (server-everything from npm, started as a
stdio child for PipeLink and as a streamable-HTTP server for the dispatcher), and asserts
the same thing, so neither engine can drift from the other unnoticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND, REQUEST_TIMEOUT

from proxy.config.servers import HttpServer, ServerSpec, StdioServer
from proxy.upstream.connection import Upstream, UpstreamUnavailable
from tests.support.live import EVERYTHING_JS
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ROOT = {"uri": "file:///contract/root", "name": "the contract's root"}
INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"roots": {"listChanged": False}},
    "clientInfo": {"name": "lockgate-contract", "version": "1"},
}


@dataclass
class Engine:
    """One live upstream, with what the server asked of us and told us."""

    upstream: Upstream
    requests: list[tuple[str, Mapping[str, Any] | None]] = field(default_factory=list)
    notifications: list[tuple[str, Mapping[str, Any] | None]] = field(default_factory=list)


OpenEngine = Callable[[], contextlib.AbstractAsyncContextManager[Engine]]


def spec_for(engine: str, http_url: str) -> ServerSpec:
    if engine == "pipelink":
        return StdioServer("everything", "node", (str(EVERYTHING_JS),))
    return HttpServer("everything", http_url, sse=False)


@pytest.fixture(params=["pipelink", "sdk-dispatcher"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_engine(
    kind: str, remote_everything: str, tmp_path: Path
) -> Callable[[], contextlib.AbstractAsyncContextManager[Engine]]:
    """Opens the engine in the test's own task (anyio's task groups must be left by the
    task that entered them, which an async fixture's teardown is not)."""

    @contextlib.asynccontextmanager
    async def open_it() -> AsyncIterator[Engine]:
        requests: list[tuple[str, Mapping[str, Any] | None]] = []
        notifications: list[tuple[str, Mapping[str, Any] | None]] = []

        async def on_request(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
            requests.append((method, params))
            if method == "roots/list":
                return {"roots": [ROOT]}
            raise MCPError(code=METHOD_NOT_FOUND, message=f"the contract client has no {method}")

        async def on_notify(method: str, params: Mapping[str, Any] | None) -> None:
            notifications.append((method, params))

        with (tmp_path / "server.log").open("w") as errlog:
            upstream = Upstream(
                spec_for(kind, remote_everything),
                on_request=on_request,
                on_notify=on_notify,
                errlog=errlog,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(upstream.supervise)
                try:
                    result = await upstream.request("initialize", INITIALIZE, {"timeout": 30})
                    assert result["serverInfo"]["name"]
                    await upstream.notify("notifications/initialized", None)
                    yield Engine(upstream, requests, notifications)
                finally:
                    await upstream.aclose()

    return open_it


def text_of(result: Mapping[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["content"])


async def test_a_result_comes_back_raw(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        result = await engine.upstream.request(
            "tools/call", {"name": "echo", "arguments": {"message": "hi"}}
        )
        assert result == {"content": [{"type": "text", "text": "Echo: hi"}]}


async def test_fields_the_sdk_models_do_not_know_survive(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        listed = await engine.upstream.request("tools/list", None)
        echo = next(t for t in listed["tools"] if t["name"] == "echo")
        # the whole definition as the server wrote it: schema keywords included
        assert echo["inputSchema"]["properties"]["message"]["type"] == "string"
        structured = await engine.upstream.request(
            "tools/call", {"name": "get-structured-content", "arguments": {"location": "New York"}}
        )
        assert isinstance(structured["structuredContent"], dict)


async def test_a_server_error_keeps_its_code_and_message(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        with pytest.raises(MCPError) as caught:
            await engine.upstream.request("no/such/method", {})
        assert caught.value.error.code == METHOD_NOT_FOUND


async def test_progress_reaches_the_caller_and_is_not_passed_on_raw(
    open_engine: OpenEngine,
) -> None:
    async with open_engine() as engine:
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        result = await engine.upstream.request(
            "tools/call",
            {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3}},
            {"on_progress": on_progress},
        )
        assert "completed" in text_of(result).lower()
        assert seen == [1, 2, 3]
        assert not [n for n, _ in engine.notifications if n == "notifications/progress"]


async def test_a_server_to_client_request_is_answered_by_the_gateway(
    open_engine: OpenEngine,
) -> None:
    async with open_engine() as engine:
        result = await engine.upstream.request(
            "tools/call", {"name": "get-roots-list", "arguments": {}}
        )
        assert ROOT["uri"] in text_of(result)
        assert [m for m, _ in engine.requests] == ["roots/list"]


async def test_a_timeout_fails_the_call_with_request_timeout(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        with pytest.raises(MCPError) as caught:
            await engine.upstream.request(
                "tools/call",
                {
                    "name": "trigger-long-running-operation",
                    "arguments": {"duration": 5, "steps": 5},
                },
                {"timeout": 0.3},
            )
        assert caught.value.error.code == REQUEST_TIMEOUT
        # the engine goes on
        assert await engine.upstream.request("ping", None) == {}


async def test_a_cancelled_caller_leaves_the_engine_working(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        with anyio.move_on_after(0.3):
            await engine.upstream.request(
                "tools/call",
                {
                    "name": "trigger-long-running-operation",
                    "arguments": {"duration": 5, "steps": 5},
                },
            )
        result = await engine.upstream.request(
            "tools/call", {"name": "echo", "arguments": {"message": "after"}}
        )
        assert text_of(result) == "Echo: after"


async def test_server_notifications_reach_the_gateway(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        await engine.upstream.request("logging/setLevel", {"level": "debug"})
        await engine.upstream.request(
            "tools/call", {"name": "toggle-simulated-logging", "arguments": {}}
        )
        await eventually(
            lambda: [n for n, _ in engine.notifications if n == "notifications/message"],
            "a log message from the server",
        )


async def test_a_closed_connection_is_dead_and_refuses_calls(open_engine: OpenEngine) -> None:
    async with open_engine() as engine:
        await engine.upstream.aclose()
        assert engine.upstream.dead.is_set()
        with pytest.raises(UpstreamUnavailable, match="is down"):
            await engine.upstream.request("ping", None)
