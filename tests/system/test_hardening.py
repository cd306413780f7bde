"""Regressions for what the security review found: each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from proxy.bridge.control import ControlError, control
from proxy.config.paths import Paths
from proxy.config.servers import HttpServer, StdioServer, secret_values
from proxy.gateway.approvals import Answer, ApprovalBroker
from proxy.policy.decide import Basis, Decision, ToolCall, Verdict
from proxy.upstream.connection import Upstream
from tests.proxy.doors.test_local import Approver, answered_call
from tests.support.waiting import eventually, eventually_sync
from tests.system.test_faults import (  # noqa: F401 - http is a fixture
    answer_of,
    blocking_session,
    calls_received,
    headers,
    http,
)

pytestmark = pytest.mark.slow


def ask_for_get_sum(live_gateway) -> tuple[Paths, Approver]:
    """get-sum needs a person; the policy is in force and an approver is attached."""
    live_gateway.write_policy(
        {
            "version": "1",
            "default": "allow",
            "tools": {"get-sum": {"action": "ask", "approval": {"timeout": 20}}},
        }
    )
    paths = Paths(live_gateway.config_dir, live_gateway.data_dir)
    eventually_sync(
        lambda: control(paths, "status")["policy"]["rules"] == 1, "the policy", timeout=10
    )
    return paths, Approver(paths)


async def test_only_json_true_approves_and_only_with_the_digest(live_gateway):
    paths, approver = ask_for_get_sum(live_gateway)

    def answer_wrongly_then_refuse(pending: dict) -> None:
        for bad in (
            {"approve": "false", "digest": pending["digest"]},
            {"approve": 1, "digest": pending["digest"]},
            {"approve": True},
        ):
            with pytest.raises(ControlError):
                control(paths, "answer", id=pending["id"], **bad)
        control(paths, "answer", id=pending["id"], approve=False, digest=pending["digest"])

    async with live_gateway.client() as client:
        _, result = await answered_call(
            client, "get-sum", {"a": 1, "b": 2}, approver, answer_wrongly_then_refuse
        )
    assert result.is_error
    assert calls_received(live_gateway, "get-sum") == []


async def test_a_number_json_cannot_carry_is_refused_not_sent_as_null(live_gateway, http):  # noqa: F811
    url, session_id = await blocking_session(live_gateway, http)
    body = (
        b'{"jsonrpc":"2.0","id":41,"method":"tools/call",'
        b'"params":{"name":"get-sum","arguments":{"a":1e400,"b":1}}}'
    )
    answer = answer_of(
        await http.post(url, content=body, headers=headers(live_gateway.token(), session_id))
    )
    assert answer["error"]["code"] == -32602
    assert "infinity or NaN" in answer["error"]["message"]
    assert calls_received(live_gateway, "get-sum") == []


async def test_the_2026_era_path_starts_no_server(live_gateway, http):  # noqa: F811
    before = [m for m in live_gateway.upstream_saw() if m.get("method") == "initialize"]
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2026-07-28",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    response = await http.post(
        live_gateway.base_url + "everything",
        json=message,
        headers={**headers(live_gateway.token()), "MCP-Protocol-Version": "2026-07-28"},
    )
    assert response.status_code != 200 or "error" in answer_of(response)
    after = [m for m in live_gateway.upstream_saw() if m.get("method") == "initialize"]
    assert after == before


def test_slow_peers_cannot_starve_the_local_socket(live_gateway):
    info = json.loads((live_gateway.data_dir / "run" / "gateway.json").read_text())
    paths = Paths(live_gateway.config_dir, live_gateway.data_dir)
    slow = []
    try:
        for _ in range(12):  # more than a worker-thread pool: each sends half a hello, slowly
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(info["socket"])
            sock.sendall(b'{"lockgate"')
            slow.append(sock)
        start = time.monotonic()
        assert control(paths, "status")["paused"] is False
        assert time.monotonic() - start < 2
    finally:
        for sock in slow:
            sock.close()


async def test_pausing_refuses_the_calls_waiting_for_a_person(live_gateway):
    paths, approver = ask_for_get_sum(live_gateway)
    async with live_gateway.client() as client:
        _, result = await answered_call(
            client, "get-sum", {"a": 1, "b": 2}, approver, lambda _: control(paths, "pause")
        )
    assert result.is_error
    assert "Lockgate is paused" in result.content[0].text
    control(paths, "resume")
    assert calls_received(live_gateway, "get-sum") == []


async def test_secret_values_are_scrubbed_from_error_text():
    spec = HttpServer(
        "r", "http://127.0.0.1:1/mcp", {"Authorization": "keyring:r", "X-Plain": "visible"}
    )
    resolved = HttpServer(
        "r", spec.url, {"Authorization": "sk-live-SUPERSECRET ", "X-Plain": "visible"}
    )
    assert secret_values(spec, resolved) == ["sk-live-SUPERSECRET "]
    stdio = StdioServer("s", "srv", ("--verbose",), {"K": "keyring:t", "P": "p"})
    stdio_resolved = StdioServer("s", "srv", ("--verbose",), {"K": "tok", "P": "p"})
    assert secret_values(stdio, stdio_resolved) == ["tok"]

    async def unused(*_args):
        raise AssertionError

    upstream = Upstream(
        resolved,
        on_request=unused,
        on_notify=unused,
        errlog=None,  # type: ignore[arg-type]
        secrets=tuple(secret_values(spec, resolved)),
    )
    text = "LocalProtocolError: Illegal header value b'sk-live-SUPERSECRET '"
    assert upstream.scrub(text) == "LocalProtocolError: Illegal header value b'[secret]'"


async def test_one_session_cannot_bury_the_person_in_approvals():
    broker = ApprovalBroker(lambda event: None)
    broker.attach()
    asked = Decision(Verdict.ASK, Basis.RULE, "ask", "t", approval_timeout=30)
    waiting = [
        asyncio.create_task(broker.ask(ToolCall("s", f"t{i}"), f"c{i}", asked, group="session-1"))
        for i in range(broker.max_per_group)
    ]
    await eventually(
        lambda: len(broker.pending()) == broker.max_per_group, "a full group", interval=0
    )
    extra = await broker.ask(ToolCall("s", "more"), "c-more", asked, group="session-1")
    assert extra.answer is Answer.BUSY
    other = asyncio.create_task(broker.ask(ToolCall("s", "x"), "c-x", asked, group="session-2"))
    # another session still gets through
    await eventually(
        lambda: len(broker.pending()) == broker.max_per_group + 1, "the other session", interval=0
    )
    broker.cancel_all("done")
    await asyncio.gather(*waiting, other)
