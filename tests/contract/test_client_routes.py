"""One contract, both routes a ``tools/call`` takes, on both doors: the fast lane (a plain
call: :mod:`proxy.doors.fastlane` on the local door, :mod:`proxy.doors.httplane` on the
HTTP door) and the SDK's server (a call with a progress token, which only the SDK's token
remapping can serve).

Both reach :meth:`ToolCallPipeline.run <proxy.gateway.pipeline.ToolCallPipeline.run>`; what
is around it (parsing, writing the answer, errors) is each route's own. Every case sends
the same call both ways and asserts the answers are the same (but for the id), that the
audit log recorded the two alike, and what the answer must be. A spy on the SDK route
proves each call went the way it was meant to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest

from proxy.gateway.core import Gateway
from tests.support.harness import (
    PROTOCOL,
    Harness,
    HttpSession,
    LocalClient,
    answer_of,
    running,
)

pytestmark = pytest.mark.slow

POLICY = {
    "default": "allow",
    "tools": {
        "write_file": {"action": "deny", "reason": "nothing is written today"},
        "hidden": {"action": "deny", "hide": True},
        "limited": {
            "action": "allow",
            "limits": [{"counter": "lim", "window": 3600, "max": 1, "scope": "global"}],
        },
        "checked": {
            "action": "allow",
            "arguments": {
                "type": "object",
                "properties": {"path": {"type": "string", "pattern": "^/tmp/"}},
            },
        },
        "ask_me": {"action": "ask"},
    },
}


def without_id(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "id"}


class Routes:
    """A session on one door (a local one, or HTTP's when ``http`` is given), and each
    call sent once on each route."""

    def __init__(
        self,
        harness: Harness,
        gateway: Gateway,
        client: LocalClient | None,
        http: HttpSession | None = None,
    ) -> None:
        self.harness = harness
        self.gateway = gateway
        self.client = client
        self.http = http
        self.sdk_calls = 0
        self._ids = iter(range(1000, 100000))

    async def both(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``params`` as a tools/call on the fast lane, then on the SDK route."""
        fast = await self.send(params, sdk=False)
        sdk = await self.send(params, sdk=True)
        return fast, sdk

    async def send(self, params: dict[str, Any], *, sdk: bool) -> dict[str, Any]:
        request_id = next(self._ids)
        if sdk:
            meta = {**params.get("_meta", {}), "progressToken": f"p{request_id}"}
            params = {**params, "_meta": meta}
        before = self.sdk_calls
        message = {"id": request_id, "method": "tools/call", "params": params}
        if self.http is not None:
            response = await self.http.post(message)
            assert response.status_code == 200, response.text
            answer = answer_of(response)
        else:
            assert self.client is not None
            self.client.send(message)
            answer = await self.client.answer(request_id)
        assert self.sdk_calls - before == (1 if sdk else 0), "the call took the other route"
        return answer

    def records(self, tool: str) -> list[tuple[str, str | None, str, str | None]]:
        rows = self.gateway.audit.query(limit=100, tool=tool)
        return [(r.decision.value, r.basis, r.outcome.value, r.reason) for r in reversed(rows)]


# the HTTP door's two ways of answering: one JSON body, and (2025-11-25 on) an event
# stream that a client can resume
@pytest.fixture(params=["local", "http", "http-2025-11-25"])
async def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> Any:
    """Yields an async context manager, entered by the test's own task."""
    original = Gateway._tool_call

    @contextlib.asynccontextmanager
    async def on_door(harness: Harness, gateway: Gateway) -> Any:
        if request.param == "local":
            async with LocalClient.open(harness) as client:
                await client.handshake(gateway)
                yield Routes(harness, gateway, client)
            return
        async with httpx2.AsyncClient(timeout=30) as http:
            protocol = request.param.removeprefix("http-") if "-" in request.param else PROTOCOL
            session = HttpSession(
                http, harness.http_url + "rec", harness.token("agent"), protocol=protocol
            )
            await session.open()
            try:
                yield Routes(harness, gateway, None, session)
            finally:
                await session.close()

    @contextlib.asynccontextmanager
    async def open_routes() -> Any:
        harness = Harness(tmp_path)
        harness.write_policy(POLICY)
        async with running(harness) as gateway, on_door(harness, gateway) as spied:
            assert gateway.policy_store.error is None, gateway.policy_store.error

            async def spy(self: Gateway, *args: Any, **kwargs: Any) -> Any:
                spied.sdk_calls += 1
                return await original(self, *args, **kwargs)

            monkeypatch.setattr(Gateway, "_tool_call", spy)
            yield spied

    return open_routes


async def test_an_allowed_call_is_answered_alike(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "echo", "arguments": {"a": 1}})
        assert without_id(fast) == without_id(sdk)
        assert fast["result"] == {"content": [{"type": "text", "text": "ran echo"}]}
        assert r.harness.recorded_names() == ["echo", "echo"]
        assert r.records("echo") == [("allowed", "default", "ok", r.records("echo")[0][3])] * 2


async def test_a_denied_call_is_answered_alike_and_never_sent(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "write_file", "arguments": {"path": "/etc/x"}})
        assert without_id(fast) == without_id(sdk)
        assert fast["result"]["isError"] is True
        assert "nothing is written today" in fast["result"]["content"][0]["text"]
        assert r.harness.recorded_names() == []
        first, second = r.records("write_file")
        assert first == second
        assert first[:3] == ("denied", "rule", "blocked")


async def test_a_hidden_tool_is_unknown_alike(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "hidden", "arguments": {}})
        assert without_id(fast) == without_id(sdk)
        assert fast["error"]["code"] == -32602
        assert fast["error"]["message"] == "Unknown tool: hidden"
        assert r.harness.recorded_names() == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "echo", "arguments": [1, 2]}, "tools/call arguments must be an object"),
        ({"name": "echo\u0007", "arguments": {}}, "tools/call tool name holds control characters"),
        ({"arguments": {}}, "tools/call needs a tool name"),
    ],
)
async def test_a_malformed_call_is_refused_alike(routes: Any, params: Any, message: str) -> None:
    async with routes() as r:
        fast, sdk = await r.both(params)
        assert without_id(fast) == without_id(sdk)
        assert fast["error"] == {"code": -32602, "message": message}
        assert r.harness.recorded_names() == []


async def test_arguments_the_schema_refuses_are_denied_alike(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "checked", "arguments": {"path": "/etc/passwd"}})
        assert without_id(fast) == without_id(sdk)
        assert fast["result"]["isError"] is True
        assert r.harness.recorded_names() == []
        ok = await r.send({"name": "checked", "arguments": {"path": "/tmp/x"}}, sdk=True)
        assert "result" in ok
        assert r.harness.recorded_names() == ["checked"]


async def test_a_rate_limit_counts_both_routes(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "limited", "arguments": {}})
        assert fast["result"]["content"][0]["text"] == "ran limited"
        assert sdk["result"]["isError"] is True  # the fast lane's call used the one allowed
        again = await r.send({"name": "limited", "arguments": {}}, sdk=False)
        assert without_id(again) == without_id(sdk)
        assert r.harness.recorded_names() == ["limited"]


async def test_a_server_error_passes_alike(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "refuse", "arguments": {}})
        assert without_id(fast) == without_id(sdk)
        assert fast["error"] == {"code": -32602, "message": "refused: no such thing"}
        assert [rec[2] for rec in r.records("refuse")] == ["protocol_error"] * 2


async def test_paused_calls_are_denied_alike(routes: Any) -> None:
    async with routes() as r:
        r.gateway.pause()
        fast, sdk = await r.both({"name": "echo", "arguments": {}})
        assert without_id(fast) == without_id(sdk)
        assert "Lockgate is paused" in fast["result"]["content"][0]["text"]
        assert r.harness.recorded_names() == []


async def test_a_call_nobody_can_approve_is_refused_alike(routes: Any) -> None:
    async with routes() as r:
        fast, sdk = await r.both({"name": "ask_me", "arguments": {}})
        assert without_id(fast) == without_id(sdk)
        assert "no one is there to ask" in fast["result"]["content"][0]["text"]
        assert r.harness.recorded_names() == []
