"""The local front door's fast lane for tools/call (proxy/doors/fastlane.py).

Everything is real: the gateway is ``proxy.doors.serve.serve`` running in this test's event loop
(so the test can see which route a call took), the client is ``lockgate connect`` in a
subprocess spoken to in raw JSON-RPC lines, and the upstream is server-everything behind
tests/servers/tee.py, which records what the server received. The one addition is a spy
on the SDK route's ``Gateway._tool_call``: it counts the calls that went that way and
passes them on unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config.paths import Paths
from proxy.doors.serve import serve
from proxy.gateway.core import Gateway
from tests.proxy.bridge import modes
from tests.support.live import lockgate_command, servers_json
from tests.support.waiting import eventually

bridge_mode = modes.bridge_mode  # every test here starts `lockgate connect`: both ways

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "get-sum": {"action": "deny", "reason": "no sums today"},
        "get-tiny-image": {"action": "deny", "hide": True},
    },
}


class RawClient:
    """``lockgate connect`` spoken to in JSON-RPC lines, as a client launches it."""

    def __init__(self, proc: asyncio.subprocess.Process, gateway: Gateway) -> None:
        self.proc = proc
        self.gateway = gateway
        self.answers: dict[Any, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if "id" in message and "method" not in message:
                self.answers[(type(message["id"]), message["id"])] = message
            else:
                self.notifications.append(message)
            self._arrived.set()

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    async def answer(self, request_id: Any, timeout: float = 20) -> dict[str, Any]:
        key = (type(request_id), request_id)
        async with asyncio.timeout(timeout):
            while key not in self.answers:
                self._arrived.clear()
                await self._arrived.wait()
        return self.answers[key]

    async def request(self, request_id: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.send({"id": request_id, "method": method, "params": params})
        return await self.answer(request_id)

    async def handshake(self) -> None:
        init = await self.request(
            0,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert "result" in init, init
        self.send({"method": "notifications/initialized"})
        # the SDK handles notifications in tasks of their own: wait until this one is on
        # its way upstream (the fast lane opens then)
        await eventually(
            lambda: all(s.initialized for s in self.gateway.sessions.values()),
            "the session to open",
        )


class Running:
    def __init__(self, paths: Paths, gateway: Gateway, sdk_route: list[str]) -> None:
        self.paths = paths
        self.gateway = gateway
        self.sdk_route = sdk_route  # tools called through the SDK's server

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[RawClient]:
        env = {
            **os.environ,
            "LOCKGATE_CONFIG_DIR": str(self.paths.config_dir),
            "LOCKGATE_DATA_DIR": str(self.paths.data_dir),
        }
        proc = await asyncio.create_subprocess_exec(
            lockgate_command(),
            "connect",
            "everything",
            "--client",
            "raw-client",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        raw = RawClient(proc, self.gateway)
        pump = asyncio.create_task(raw.pump())
        try:
            yield raw
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 20)
            await pump

    def upstream_saw(self) -> list[dict[str, Any]]:
        tee = self.paths.data_dir.parent / "tee.jsonl"
        return [json.loads(line) for line in tee.read_text().splitlines() if line]

    async def audit_outcomes(self, tool: str) -> list[str]:
        rows = self.gateway.audit.query(limit=1000, tool=tool)
        return [row.outcome.value for row in rows]


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bridge_mode: str
) -> AsyncIterator[Running]:
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    paths.config_dir.mkdir()
    (paths.config_dir / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    (paths.config_dir / "policy.json").write_text(json.dumps(POLICY))
    sdk_route: list[str] = []
    original = Gateway._tool_call

    async def spy(self: Gateway, ctx: Any, session: Any, params: Any) -> Any:
        sdk_route.append(params.get("name"))
        return await original(self, ctx, session, params)

    monkeypatch.setattr(Gateway, "_tool_call", spy)
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(
            paths,
            port=0,
            on_ready=lambda gateway, _info: ready.set_result(gateway),
            stop=stop,
            handle_signals=False,
        )
    )
    gateway = await asyncio.wait_for(ready, 30)
    try:
        yield Running(paths, gateway, sdk_route)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def text(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


async def test_concurrent_calls_take_the_fast_lane_and_each_gets_its_own_answer(running):
    async with running.client() as client:
        await client.handshake()
        ids: list[Any] = [*range(1, 17), "1", "seventeen"]  # 1 and "1" are different requests
        for request_id in ids:
            client.send(
                {
                    "id": request_id,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": f"m{request_id!r}"}},
                }
            )
        for request_id in ids:
            assert text(await client.answer(request_id)) == f"Echo: m{request_id!r}"
    assert running.sdk_route == []
    assert await running.audit_outcomes("echo") == ["ok"] * len(ids)


async def test_blocked_and_hidden_tools_never_reach_the_server(running):
    async with running.client() as client:
        await client.handshake()
        denied = await client.request(
            1, "tools/call", {"name": "get-sum", "arguments": {"a": 1, "b": 2}}
        )
        hidden = await client.request(2, "tools/call", {"name": "get-tiny-image"})
        malformed = await client.request(3, "tools/call", {"name": "echo", "arguments": [1]})
        ok = await client.request(4, "tools/call", {"name": "echo", "arguments": {"message": "x"}})
    assert denied["result"]["isError"] is True
    assert "no sums today" in text(denied)
    assert hidden["error"]["code"] == -32602
    assert hidden["error"]["message"] == "Unknown tool: get-tiny-image"
    assert malformed["error"]["code"] == -32602
    assert text(ok) == "Echo: x"
    assert running.sdk_route == []
    called = [
        m["params"]["name"] for m in running.upstream_saw() if m.get("method") == "tools/call"
    ]
    assert called == ["echo"]


async def test_a_call_before_initialized_goes_the_sdk_way_after_the_handshake(running):
    async with running.client() as client:
        init = await client.request(
            0,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert "result" in init
        early = await client.request(
            1, "tools/call", {"name": "echo", "arguments": {"message": "a"}}
        )
        client.send({"method": "notifications/initialized"})
        # the fast lane only starts once notifications/initialized is on its way upstream
        await client.request(2, "ping", {})
        later = await client.request(
            3, "tools/call", {"name": "echo", "arguments": {"message": "b"}}
        )
    assert text(early) == "Echo: a"
    assert text(later) == "Echo: b"
    assert running.sdk_route == ["echo"]
    saw = [m.get("method") for m in running.upstream_saw()]
    assert saw.index("notifications/initialized") < len(saw) - 1 - saw[::-1].index("tools/call")


async def test_a_call_with_a_progress_token_goes_the_sdk_way_and_gets_its_progress(running):
    async with running.client() as client:
        await client.handshake()
        answer = await client.request(
            5,
            "tools/call",
            {
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 1, "steps": 2},
                "_meta": {"progressToken": "mine"},
            },
        )
    assert "result" in answer
    progress = [n for n in client.notifications if n.get("method") == "notifications/progress"]
    assert [n["params"]["progressToken"] for n in progress] == ["mine", "mine"]
    assert running.sdk_route == ["trigger-long-running-operation"]


async def test_cancelling_a_fast_lane_call_cancels_it_upstream_and_answers_nothing(running):
    async with running.client() as client:
        await client.handshake()
        client.send(
            {
                "id": 7,
                "method": "tools/call",
                "params": {
                    "name": "trigger-long-running-operation",
                    "arguments": {"duration": 5, "steps": 5},
                },
            }
        )
        calls = await eventually(
            lambda: [m for m in running.upstream_saw() if m.get("method") == "tools/call"],
            "the server to have the call",
        )
        upstream_id = calls[0]["id"]
        client.send({"method": "notifications/cancelled", "params": {"requestId": 7}})
        pong = await client.request(8, "ping", {})
        assert pong["result"] == {}
        # Once the call is recorded as cancelled it has ended: an answer to it would have
        # left before the answer to a ping sent after that.
        await eventually(
            lambda: running.audit_outcomes("trigger-long-running-operation"), "the record"
        )
        assert (await client.request(9, "ping", {}))["result"] == {}
        assert (int, 7) not in client.answers
    cancels = [m for m in running.upstream_saw() if m.get("method") == "notifications/cancelled"]
    assert [c["params"]["requestId"] for c in cancels] == [upstream_id]
    assert await running.audit_outcomes("trigger-long-running-operation") == ["cancelled"]
    assert running.sdk_route == []


async def test_a_client_that_leaves_mid_call_has_the_call_recorded_as_cancelled(running):
    async with running.client() as client:
        await client.handshake()
        client.send(
            {
                "id": 1,
                "method": "tools/call",
                "params": {
                    "name": "trigger-long-running-operation",
                    "arguments": {"duration": 5, "steps": 5},
                },
            }
        )
        await eventually(
            lambda: any(m.get("method") == "tools/call" for m in running.upstream_saw()),
            "the server to have the call",
        )
    outcomes = await eventually(
        lambda: running.audit_outcomes("trigger-long-running-operation"), "the record"
    )
    assert outcomes == ["cancelled"]
