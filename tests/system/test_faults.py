"""End to end, when things go wrong: `lockgate serve` (HTTP) under bad input and failing parts.

The bad input is sent as raw HTTP (httpx2), because the SDK's client cannot produce it;
what goes right is checked with the SDK's own Client. What the upstream received is read
from tests/servers/tee.py's record, what the gateway recorded from `lockgate log`.

Most tests share one gateway (starting one costs seconds); the tests that change the
policy or kill the gateway get their own (``live_gateway``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.live import LiveGateway, servers_json
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PROTOCOL = "2025-06-18"  # a handshake-era version, so the session is a stateful one
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
UPSTREAM_DOWN = -32000
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One real `lockgate serve` (everything, time, misbehaving; default allow) for the
    tests that neither change its policy nor kill it."""
    root = tmp_path_factory.mktemp("faults")
    config, data = root / "live-config", root / "live-data"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, root / "upstream-received.jsonl")
    (config / "servers.json").write_text(json.dumps(servers_json(gateway.tee_log)))
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


# raw sessions a test opened, ended when it is done (each holds an upstream process)
_opened: dict[httpx2.AsyncClient, list[tuple[str, str, str]]] = {}


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        _opened[client] = []
        try:
            yield client
        finally:
            for url, token, session_id in _opened.pop(client):
                with contextlib.suppress(httpx2.HTTPError):  # the gateway may be gone
                    await client.delete(url, headers=headers(token, session_id))


def headers(token: str | None, session_id: str | None = None) -> dict[str, str]:
    """What a valid streamable HTTP POST carries (no Authorization when ``token`` is None)."""
    out = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    if session_id is not None:
        out["mcp-session-id"] = session_id
        out["mcp-protocol-version"] = PROTOCOL
    return out


def answer_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message that answers a POST: the JSON body, or the response on the
    POST's SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
            if data:
                message = json.loads(data)
                if "result" in message or "error" in message:
                    return message
        raise AssertionError(f"no answer on the SSE stream: {response.text!r}")
    return response.json()


def error_of(response: httpx2.Response) -> dict[str, Any]:
    answer = answer_of(response)
    assert "error" in answer, f"expected a JSON-RPC error, got {answer}"
    assert set(answer["error"]) >= {"code", "message"}
    return answer["error"]


async def open_session(http: httpx2.AsyncClient, url: str, token: str) -> str:
    """Initialize a session over raw HTTP; returns its id."""
    response = await http.post(url, json=INITIALIZE, headers=headers(token))
    assert response.status_code == 200, response.text
    assert "result" in answer_of(response)
    session_id = response.headers["mcp-session-id"]
    done = await http.post(url, json=INITIALIZED, headers=headers(token, session_id))
    assert done.status_code == 202, done.text
    _opened[http].append((url, token, session_id))
    return session_id


_ids = itertools.count(100)


async def rpc(
    http: httpx2.AsyncClient,
    url: str,
    token: str,
    session_id: str,
    method: str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSON-RPC request on a session; returns the answer (result or error)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(_ids), "method": method}
    if params is not None:
        message["params"] = params
    response = await http.post(url, json=message, headers=headers(token, session_id))
    assert response.status_code == 200, response.text
    answer = answer_of(response)
    assert answer["id"] == message["id"]
    return answer


async def echo_works(http: httpx2.AsyncClient, url: str, token: str, session_id: str) -> None:
    """server-everything's echo answers on this session."""
    answer = await rpc(
        http, url, token, session_id, "tools/call", {"name": "echo", "arguments": {"message": "ok"}}
    )
    assert answer.get("result", {}).get("content") == [{"type": "text", "text": "Echo: ok"}], answer


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def result_text(answer: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in answer["result"]["content"])


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def audit(gateway: LiveGateway, *filters: str) -> list[dict[str, Any]]:
    """The audit log as `lockgate log --json` shows it."""
    result = gateway.lockgate("log", "--json", "--limit", "100000", *filters)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def misbehaving_still_works(gateway: LiveGateway) -> None:
    """A fresh SDK session on the same gateway is served."""
    async with gateway.client("misbehaving") as other:
        assert text_of(await other.call_tool("echo", {})) == "echo done"


# -- 1. the front door ------------------------------------------------------------------

HOW_TO_GET_A_TOKEN = "lockgate token create"


@pytest.mark.parametrize(
    ("path", "change", "status", "says"),
    [
        pytest.param(
            "/mcp/everything",
            {"Authorization": None},
            401,
            "Lockgate needs an access token",
            id="no-token",
        ),
        pytest.param(
            "/mcp/everything",
            {"Authorization": "Basic dXNlcjpwYXNz"},
            401,
            "Lockgate needs an access token",
            id="not-bearer",
        ),
        pytest.param(
            "/mcp/everything",
            {"Authorization": "Bearer lg_not-a-real-token"},
            401,
            "this access token is not valid",
            id="wrong-token",
        ),
        pytest.param(
            "/mcp/everything",
            {"Host": "evil.example:{port}"},
            403,
            "Host 'evil.example:{port}' is not this computer",
            id="foreign-host",
        ),
        pytest.param(
            "/mcp/everything",
            {"Origin": "http://evil.example"},
            403,
            "Origin 'http://evil.example' may not use Lockgate",
            id="foreign-origin",
        ),
        pytest.param(
            "/mcp/everything",
            {"Origin": "http://localhost.evil.example:{port}"},
            403,
            "may not use Lockgate",
            id="lookalike-origin",
        ),
        pytest.param(
            "/mcp/nope",
            {},
            404,
            "Lockgate has no server named 'nope'; known: everything, misbehaving, time",
            id="unknown-server",
        ),
        pytest.param("/other", {}, 404, "Lockgate serves MCP at /mcp/SERVER", id="outside-mcp"),
        pytest.param("/mcp/", {}, 404, "Lockgate serves MCP at /mcp/SERVER", id="no-server"),
        pytest.param(
            "/mcp/everything/more", {}, 404, "Lockgate serves MCP at /mcp/SERVER", id="below-server"
        ),
    ],
)
async def test_the_front_door_refuses_with_a_json_rpc_error_that_says_why(
    shared_gateway, http, path, change, status, says
):
    port = shared_gateway.port
    sent = headers(shared_gateway.token())
    for name, value in change.items():
        sent.pop(name, None)
        if value is not None:
            sent[name] = value.format(port=port)
    response = await http.post(f"http://127.0.0.1:{port}{path}", json=INITIALIZE, headers=sent)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "mcp-session-id" not in response.headers
    body = response.json()
    assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", None, INVALID_REQUEST)
    assert says.format(port=port) in body["error"]["message"]
    if status == 401:
        assert HOW_TO_GET_A_TOKEN in body["error"]["message"]
        assert response.headers["www-authenticate"] == 'Bearer realm="lockgate"'
    await misbehaving_still_works(shared_gateway)


@pytest.mark.parametrize(
    "local",
    [{"Origin": "http://localhost:{port}"}, {"Host": "localhost:{port}"}],
    ids=["origin-localhost", "host-localhost"],
)
async def test_a_local_host_and_origin_are_let_in(shared_gateway, http, local):
    port, token = shared_gateway.port, shared_gateway.token()
    url = shared_gateway.base_url + "everything"
    sent = {**headers(token), **{k: v.format(port=port) for k, v in local.items()}}

    response = await http.post(url, json=INITIALIZE, headers=sent)

    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    _opened[http].append((url, token, session_id))
    assert answer_of(response)["result"]["serverInfo"]["name"] == "mcp-servers/everything"


async def test_a_revoked_token_is_refused_at_once_even_on_its_open_session(shared_gateway, http):
    token = shared_gateway.token("soon-revoked")
    url = shared_gateway.base_url + "misbehaving"
    session_id = await open_session(http, url, token)
    assert "result" in await rpc(http, url, token, session_id, "tools/list")

    revoked = shared_gateway.lockgate("token", "revoke", "soon-revoked")
    assert revoked.returncode == 0, revoked.stderr

    response = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
        headers=headers(token, session_id),
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="lockgate"'
    message = response.json()["error"]["message"]
    assert "this access token is not valid (revoked?)" in message
    assert HOW_TO_GET_A_TOKEN in message

    # What a person using an MCP client sees: the same message, as the client's error.
    async def list_tools_with_the_revoked_token() -> None:
        with anyio.fail_after(10):
            async with shared_gateway.client("misbehaving", token=token) as client:
                await client.list_tools()

    with pytest.raises(Exception) as info:  # noqa: PT011 - the SDK wraps it in groups
        await list_tools_with_the_revoked_token()
    errors = [e for e in leaves(info.value) if isinstance(e, MCPError)]
    assert errors, info.value
    assert HOW_TO_GET_A_TOKEN in errors[0].message
    await misbehaving_still_works(shared_gateway)


# -- 2. malformed input -----------------------------------------------------------------

OVER_THE_LIMIT = "x" * (17 * 1024 * 1024)  # the default max_message_bytes is 16 MiB


@pytest.mark.parametrize(
    ("body", "sent_on", "status", "code", "says"),
    [
        pytest.param(
            b"{this is not json", "its session", 400, PARSE_ERROR, "Parse error", id="not-json"
        ),
        pytest.param(b"", "its session", 400, PARSE_ERROR, "Parse error", id="empty-body"),
        pytest.param(b"\xff\xfe{", "its session", 400, PARSE_ERROR, "Parse error", id="not-utf8"),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2},
            "its session",
            400,
            INVALID_PARAMS,
            "Validation error",
            id="no-method",
        ),
        pytest.param(
            {"jsonrpc": "1.0", "id": 2, "method": "tools/list"},
            "its session",
            400,
            INVALID_PARAMS,
            "Validation error",
            id="jsonrpc-1.0",
        ),
        pytest.param(
            [{"jsonrpc": "2.0", "id": 2, "method": "tools/list"}],
            "its session",
            400,
            INVALID_PARAMS,
            "Validation error",
            id="batch-array",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": ["echo"]},
            "its session",
            400,
            INVALID_PARAMS,
            "Validation error",
            id="params-not-an-object",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": 5}},
            "its session",
            200,
            INVALID_PARAMS,
            "tools/call needs a tool name",
            id="tool-name-not-a-string",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call"},
            "its session",
            200,
            INVALID_PARAMS,
            "tools/call needs a tool name",
            id="tools-call-without-params",
        ),
        pytest.param(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": ["hello"]},
            },
            "its session",
            200,
            None,  # no rule applies, so it goes upstream; server-everything refuses it
            "arguments",
            id="arguments-not-an-object",
        ),
        pytest.param(
            INITIALIZE,
            "its session",
            200,
            INVALID_REQUEST,
            "already initialized",
            id="initialize-twice",
        ),
        pytest.param(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": OVER_THE_LIMIT}},
            },
            "its session",
            413,
            -32600,
            "over Lockgate's limit of 16.0 MB per message",
            id="over-16-MiB",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            "an unknown session",
            404,
            INVALID_REQUEST,
            "Session not found",
            id="unknown-session-id",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            "no session",
            400,
            INVALID_REQUEST,
            "Missing session ID",
            id="no-session-id-and-not-initialize",
        ),
    ],
)
async def test_malformed_input_is_answered_with_an_error_and_everything_keeps_working(
    shared_gateway, http, body, sent_on, status, code, says
):
    token = shared_gateway.token()
    url = shared_gateway.base_url + "everything"
    async with shared_gateway.client("misbehaving") as witness:
        assert text_of(await witness.call_tool("echo", {})) == "echo done"
        session_id = await open_session(http, url, token) if sent_on == "its session" else None
        sent = headers(token, "0" * 32 if sent_on == "an unknown session" else session_id)
        if isinstance(body, bytes):
            response = await http.post(url, content=body, headers=sent)
        else:
            response = await http.post(url, json=body, headers=sent)

        assert response.status_code == status, response.text[:500]
        if status == 413:
            assert says in response.text
        else:
            error = error_of(response)
            if code is not None:
                assert error["code"] == code, error
            assert says in error["message"], error

        # The session that got the bad request, other sessions and new ones: all served.
        if session_id is not None:
            await echo_works(http, url, token, session_id)
        assert text_of(await witness.call_tool("echo", {})) == "echo done"
    await misbehaving_still_works(shared_gateway)


# -- 3. a session belongs to the client that opened it ------------------------------------


async def test_a_session_refuses_another_clients_token_and_another_server(shared_gateway, http):
    url = shared_gateway.base_url + "everything"
    a, b = shared_gateway.token("client-a"), shared_gateway.token("client-b")
    session_id = await open_session(http, url, a)

    # Another client's session is, to client B, a session that does not exist.
    for method, params in (
        ("tools/list", None),
        ("tools/call", {"name": "echo", "arguments": {"message": "b"}}),
    ):
        message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
        stolen = await http.post(url, json=message, headers=headers(b, session_id))
        assert stolen.status_code == 404, stolen.text
        assert stolen.json()["error"]["message"] == "Session not found"
    elsewhere = await rpc(http, shared_gateway.base_url + "time", a, session_id, "tools/list")
    assert "this session belongs to another" in elsewhere["error"]["message"]

    mine = await rpc(http, url, a, session_id, "tools/list")
    assert "echo" in [tool["name"] for tool in mine["result"]["tools"]]
    await echo_works(http, url, a, session_id)
    # client B's call never reached the server
    assert not [
        m
        for m in shared_gateway.upstream_saw()
        if m.get("method") == "tools/call" and m["params"].get("arguments") == {"message": "b"}
    ]


async def test_another_client_cannot_end_a_session(shared_gateway, http):
    url = shared_gateway.base_url + "misbehaving"
    a, b = shared_gateway.token("client-a"), shared_gateway.token("client-b")
    session_id = await open_session(http, url, a)

    response = await http.delete(url, headers=headers(b, session_id))

    assert response.status_code >= 400, "client B ended client A's session"
    assert "result" in await rpc(http, url, a, session_id, "tools/list")


# -- 4 and 5. upstreams that misbehave ----------------------------------------------------


async def test_an_upstream_that_writes_garbage_still_answers(shared_gateway):
    async with shared_gateway.client("misbehaving") as client:
        with anyio.fail_after(10):
            result = await client.call_tool("garbage", {})
        # The SDK's stdio reader drops the line that is not JSON; the answer follows it.
        assert (text_of(result), result.is_error) == ("garbage done", False)
        assert text_of(await client.call_tool("echo", {})) == "echo done"
        assert text_of(await client.call_tool("garbage", {})) == "garbage done"
        await misbehaving_still_works(shared_gateway)
        assert text_of(await client.call_tool("echo", {})) == "echo done"


async def crash_misbehaving(client) -> MCPError:
    """Call the tool that makes the server exit mid-call; returns what the client got."""
    with anyio.fail_after(10), pytest.raises(MCPError) as info:
        await client.call_tool("exit", {})
    return info.value


async def retry_until_served(client, timeout: float = 10) -> list[str]:
    """Call echo until it succeeds; returns the refusals seen on the way."""
    refusals: list[str] = []

    async def served() -> Any:
        try:
            return await client.call_tool("echo", {})
        except MCPError as exc:
            refusals.append(exc.message)
            return None

    result = await eventually(served, "echo to be served again", timeout=timeout, interval=0.02)
    assert text_of(result) == "echo done"
    return refusals


async def test_an_upstream_that_exits_mid_call_fails_the_call_and_restarts(shared_gateway):
    async with shared_gateway.client("misbehaving", client="exit-test") as client:
        assert text_of(await client.call_tool("echo", {})) == "echo done"
        started = time.monotonic()

        down = await crash_misbehaving(client)

        assert time.monotonic() - started < 5
        assert down.code == UPSTREAM_DOWN
        assert down.message.startswith("server 'misbehaving' went down during the call")
        assert down.message.endswith("it said: misbehaving: exiting on purpose)"), down.message

        with pytest.raises(MCPError) as early:
            await client.call_tool("echo", {})
        assert early.value.code == UPSTREAM_DOWN
        assert re.fullmatch(
            r"server 'misbehaving' went down \(.+\); Lockgate restarts it in \d+ s, "
            r"on the next request after that",
            early.value.message,
        ), early.value.message

        refusals = await retry_until_served(client)
        assert time.monotonic() - started > 0.9  # the 1 s backoff held
        assert all("Lockgate restarts it in" in r for r in refusals), refusals
        # the restarted server is a new process with the session's handshake replayed
        assert text_of(await client.call_tool("echo", {})) == "echo done"

    records = audit(shared_gateway, "--client", "exit-test", "--tool", "exit")
    assert len(records) == 1
    assert records[0]["outcome"] == "upstream_down"
    assert records[0]["decision"] == "allowed"
    assert "went down during the call" in records[0]["error"]


async def test_the_restart_countdown_never_says_0_s_while_it_still_refuses(shared_gateway):
    async with shared_gateway.client("misbehaving", client="countdown-test") as client:
        await crash_misbehaving(client)
        refusals = await retry_until_served(client)
    assert refusals
    assert not [r for r in refusals if "restarts it in 0 s" in r], refusals


async def test_a_call_refused_during_the_restart_backoff_is_audited(shared_gateway):
    async with shared_gateway.client("misbehaving", client="backoff-audit") as client:
        await crash_misbehaving(client)
        with pytest.raises(MCPError, match="Lockgate restarts it in"):
            await client.call_tool("echo", {})
        await retry_until_served(client)
    echoes = audit(shared_gateway, "--client", "backoff-audit", "--tool", "echo")
    outcomes = [r["outcome"] for r in echoes]  # `lockgate log` lists the oldest first
    # every refused try while it restarted is logged, then the one that was served
    assert outcomes[0] == "upstream_down", outcomes
    assert outcomes[-1] == "ok", outcomes
    assert set(outcomes[:-1]) == {"upstream_down"}, outcomes


# -- 6. kill -9 in the middle of a burst --------------------------------------------------


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), fields[0])
    return out


def descendants(pid: int) -> set[int]:
    processes = _processes()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, (parent, _) in processes.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    """The ones still running (a zombie nobody reaped has exited)."""
    processes = _processes()
    return {p for p in pids if p in processes and processes[p][1] != "Z"}


async def test_kill_9_during_a_burst_loses_no_answered_call(live_gateway):
    clients, per_client, kill_after = 4, 8, 200
    answered: list[str] = []
    wrong: list[str] = []
    errors_before_kill: list[BaseException] = []
    answering: set[int] = set()
    numbers = itertools.count()
    enough = anyio.Event()
    children: set[int] = set()
    killed = False

    async def worker(client, who: int) -> None:
        while True:
            message = f"burst-{next(numbers)}"
            try:
                result = await client.call_tool("echo", {"message": message})
            except Exception as exc:
                if not killed:
                    errors_before_kill.append(exc)
                return
            if text_of(result) != f"Echo: {message}":
                wrong.append(f"{message}: {text_of(result)}")
            answered.append(message)
            answering.add(who)
            if len(answered) >= kill_after and len(answering) == clients:
                enough.set()

    async def one_client(who: int) -> None:
        try:
            async with live_gateway.client() as client, anyio.create_task_group() as tg:
                for _ in range(per_client):
                    tg.start_soon(worker, client, who)
        except Exception:
            if not killed:
                raise  # only the kill may end a client

    async def kill_when_enough() -> None:
        nonlocal killed
        await enough.wait()
        children.update(descendants(live_gateway.proc.pid))
        killed = True
        assert live_gateway.stop(signal.SIGKILL) == -signal.SIGKILL

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_enough)
                for who in range(clients):
                    tg.start_soon(one_client, who)
        assert killed
        assert not errors_before_kill, errors_before_kill
        assert not wrong, wrong
        assert len(answered) >= kill_after

        # Every call a client got an answer to is in the log, as answered.
        logged = {r["arguments"].get("message"): r for r in audit(live_gateway, "--tool", "echo")}
        assert [m for m in answered if m not in logged] == []
        assert {(logged[m]["decision"], logged[m]["outcome"]) for m in answered} == {
            ("allowed", "ok")
        }

        # The upstream servers (tee.py and node, one pair per session) go with the gateway.
        assert len(children) >= clients, children
        await eventually(lambda: not running(children), "the upstream servers to exit", timeout=10)
    finally:
        for pid in running(children):  # started by this test's gateway; do not leak them
            os.kill(pid, signal.SIGKILL)

    live_gateway.start()
    async with live_gateway.client() as client:
        assert text_of(await client.call_tool("echo", {"message": "after"})) == "Echo: after"
    logged_after = {r["arguments"].get("message") for r in audit(live_gateway, "--tool", "echo")}
    assert "after" in logged_after
    assert set(answered) <= logged_after


# -- 7. a blocked call never reaches the upstream ------------------------------------------

BLOCKING_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "everything/policy-probe": {"action": "deny", "reason": "Probe."},
        "get-tiny-image": {"action": "deny", "reason": "No images today."},
        "everything/get-env": {"action": "deny", "hide": True},
        "echo": {"arguments": {"properties": {"message": {"maxLength": 10}}}},
    },
}


async def blocking_session(gateway: LiveGateway, http: httpx2.AsyncClient) -> tuple[str, str]:
    """A raw session on everything once BLOCKING_POLICY is in force; (url, session id)."""
    gateway.write_policy(BLOCKING_POLICY)
    url, token = gateway.base_url + "everything", gateway.token()
    session_id = await open_session(http, url, token)

    async def reloaded() -> bool:  # the real reload, probed with a harmless name
        probe = await rpc(http, url, token, session_id, "tools/call", {"name": "policy-probe"})
        return bool(probe.get("result", {}).get("isError")) and "Probe." in result_text(probe)

    await eventually(reloaded, "the policy reload", timeout=10, interval=0.05)
    return url, session_id


def calls_received(gateway: LiveGateway, *tools: str) -> list[dict[str, Any]]:
    return [
        m
        for m in gateway.upstream_saw()
        if m.get("method") == "tools/call" and m.get("params", {}).get("name") in tools
    ]


async def barrier(gateway: LiveGateway, http, url: str, session_id: str) -> None:
    """An allowed call after everything else: once it is answered, the tee has recorded
    every message the gateway sent upstream before it."""
    answer = await rpc(
        http,
        url,
        gateway.token(),
        session_id,
        "tools/call",
        {"name": "echo", "arguments": {"message": "barrier"}},
    )
    assert result_text(answer) == "Echo: barrier"


BLOCKED = "Lockgate's policy blocked this call to everything/"

# (what, the tool Lockgate blocks, the raw params, what the answer says, after the tool)
BLOCKED_CALLS: list[tuple[str, str, bytes, str]] = [
    ("plain", "get-tiny-image", b'{"name":"get-tiny-image","arguments":{}}', "No images today."),
    (
        "null arguments",
        "get-tiny-image",
        b'{"name":"get-tiny-image","arguments":null}',
        "No images today.",
    ),
    ("no arguments", "get-tiny-image", b'{"name":"get-tiny-image"}', "No images today."),
    (
        "progress token and unknown fields",
        "get-tiny-image",
        b'{"name":"get-tiny-image","arguments":{},"_meta":{"progressToken":"p"},"x":{"y":1}}',
        "No images today.",
    ),
    (
        "escaped name",
        "get-tiny-image",
        b'{"name":"get\\u002dtiny\\u002dimage","arguments":{}}',
        "No images today.",
    ),
    (
        "duplicate name key (the last one wins)",
        "get-tiny-image",
        b'{"name":"echo","arguments":{"message":"hi"},"name":"get-tiny-image"}',
        "No images today.",
    ),
    (
        "an argument the rule rejects",
        "echo",
        b'{"name":"echo","arguments":{"message":"far too long a message"}}',
        "arguments rejected at $.message",
    ),
]


async def test_blocked_raw_calls_are_answered_by_lockgate_and_never_reach_the_server(
    live_gateway, http
):
    url, session_id = await blocking_session(live_gateway, http)
    sent = headers(live_gateway.token(), session_id)

    for number, (what, tool, params, says) in enumerate(BLOCKED_CALLS):
        body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}' % (number, params)
        response = await http.post(url, content=body, headers=sent)
        assert response.status_code == 200, (what, response.text)
        answer = answer_of(response)
        assert answer["id"] == number
        assert answer.get("result", {}).get("isError") is True, (what, answer)
        assert result_text(answer).startswith(f"{BLOCKED}{tool}: {says}"), (what, answer)
    hidden = await rpc(
        http, url, live_gateway.token(), session_id, "tools/call", {"name": "get-env"}
    )
    assert hidden["error"] == {"code": INVALID_PARAMS, "message": "Unknown tool: get-env"}

    await barrier(live_gateway, http, url, session_id)
    assert calls_received(live_gateway, "get-tiny-image", "get-env") == []
    assert [c["params"]["arguments"] for c in calls_received(live_gateway, "echo")] == [
        {"message": "barrier"}
    ]
    # ...and each one is in the audit log as blocked
    denied = audit(live_gateway, "--decision", "denied")
    for tool in ("get-tiny-image", "echo"):
        expected = sum(1 for call in BLOCKED_CALLS if call[1] == tool)
        outcomes = [r["outcome"] for r in denied if r["tool"] == tool]
        assert outcomes == ["blocked"] * expected, (tool, outcomes)
    assert [r["outcome"] for r in denied if r["tool"] == "get-env"] == ["blocked"]


async def test_arguments_that_are_not_an_object_are_refused_whatever_the_policy(live_gateway, http):
    url, session_id = await blocking_session(live_gateway, http)
    sent = headers(live_gateway.token(), session_id)
    for number, tool in enumerate(("get-tiny-image", "echo", "get-sum")):  # deny, checked, allowed
        body = {
            "jsonrpc": "2.0",
            "id": 100 + number,
            "method": "tools/call",
            "params": {"name": tool, "arguments": [1, 2]},
        }
        answer = answer_of(await http.post(url, json=body, headers=sent))
        assert answer["error"] == {
            "code": INVALID_PARAMS,
            "message": "tools/call arguments must be an object",
        }, answer
    await barrier(live_gateway, http, url, session_id)
    assert calls_received(live_gateway, "get-tiny-image", "get-sum") == []
    logged = audit(live_gateway, "--decision", "denied")
    malformed = [r for r in logged if r["outcome"] == "protocol_error"]
    assert sorted(r["tool"] for r in malformed) == ["echo", "get-sum", "get-tiny-image"]


async def test_a_tools_call_without_an_id_never_reaches_the_server(live_gateway, http):
    url, session_id = await blocking_session(live_gateway, http)
    sent = headers(live_gateway.token(), session_id)
    call = {"method": "tools/call", "params": {"name": "get-tiny-image", "arguments": {}}}
    for extra in ({}, {"id": None}, {"id": 1.5}):
        response = await http.post(url, json={"jsonrpc": "2.0", **extra, **call}, headers=sent)
        assert response.status_code in (202, 200, 400), response.text

    await barrier(live_gateway, http, url, session_id)
    assert calls_received(live_gateway, "get-tiny-image") == []


async def test_a_restart_uses_servers_json_as_it_is_now(tmp_path):
    """A changed entry takes effect at the session's next restart; a removed one is not
    started again (the gateway watches servers.json)."""
    from proxy.bridge.control import control
    from proxy.config.paths import Paths
    from tests.support.live import BIN

    config, data = tmp_path / "c", tmp_path / "d"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    servers = config / "servers.json"
    flaky = servers_json(gateway.tee_log)["mcpServers"]["misbehaving"]
    servers.write_text(json.dumps({"mcpServers": {"flaky": flaky}}))
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    paths = Paths(config, data)
    try:
        async with gateway.client("flaky", client="respec-test") as client:
            assert text_of(await client.call_tool("echo", {})) == "echo done"
            down = await crash_misbehaving(client)
            assert "went down during the call" in down.message
            servers.write_text(json.dumps({"mcpServers": {}}))
            await eventually(
                lambda: control(paths, "status")["servers"] == [], "reload", timeout=10
            )

            async def refused_as_removed() -> str | None:
                try:
                    await client.call_tool("echo", {})
                except MCPError as exc:  # at first maybe the restart backoff's refusal
                    return exc.message if "has no server named 'flaky'" in exc.message else None
                raise AssertionError("a removed server's call was sent")

            await eventually(refused_as_removed, "the call refused: no such server", timeout=10)

            servers.write_text(
                json.dumps({"mcpServers": {"flaky": {"command": str(BIN / "mcp-server-time")}}})
            )
            await eventually(
                lambda: control(paths, "status")["servers"] == ["flaky"], "reload", timeout=10
            )

            async def answered() -> Any:
                try:
                    return await client.call_tool("get_current_time", {"timezone": "UTC"})
                except MCPError as exc:  # until the crash's restart backoff is over
                    if "Lockgate restarts it in" in exc.message:
                        return None
                    raise

            result = await eventually(answered, "the new entry's server to answer", timeout=10)
            assert '"timezone": "UTC"' in text_of(result)  # the new entry's server
    finally:
        gateway.stop()
