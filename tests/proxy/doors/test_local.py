"""The local socket: `lockgate connect` as MCP clients launch it, and the control commands.

Windows has a named pipe instead, and these run as `lockgate serve`, which does not run
there yet: its pipe is tested end to end in test_winpipe.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from proxy.bridge.control import control, watch
from proxy.config.paths import Paths
from proxy.config.servers_edit import set_server_disabled
from tests.proxy.bridge import modes
from tests.support.live import lockgate_command
from tests.support.waiting import eventually, eventually_sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="`lockgate serve` and a Unix socket"),
]
bridge_mode = modes.bridge_mode  # the tests that start `lockgate connect` run in both ways


def paths_of(gateway) -> Paths:
    return Paths(gateway.config_dir, gateway.data_dir)


def bridge(gateway, server="everything", client="claude-test") -> StdioServerParameters:
    """Exactly what an MCP client config says to launch."""
    return StdioServerParameters(
        command=lockgate_command(),
        args=["connect", server, "--client", client],
        env={
            "LOCKGATE_CONFIG_DIR": str(gateway.config_dir),
            "LOCKGATE_DATA_DIR": str(gateway.data_dir),
            **modes.bridge_env(),
        },
    )


def text_of(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.usefixtures("bridge_mode")
async def test_a_stdio_client_reaches_its_server_through_the_bridge(live_gateway):
    live_gateway.write_policy(
        {"version": "1", "default": "allow", "tools": {"get-tiny-image": {"action": "deny"}}}
    )
    async with Client(bridge(live_gateway), mode="auto") as client:
        assert "echo" in [t.name for t in (await client.list_tools()).tools]
        assert text_of(await client.call_tool("echo", {"message": "bridged"})) == "Echo: bridged"

        async def denied() -> bool:
            return (await client.call_tool("get-tiny-image", {})).is_error

        await eventually(denied, "the deny rule to be in force", timeout=5, interval=0.05)
    logged = [
        json.loads(line)
        for line in live_gateway.lockgate(
            "log", "--json", "--client", "claude-test"
        ).stdout.splitlines()
    ]
    assert {r["tool"] for r in logged} >= {"echo", "get-tiny-image"}
    assert all(r["client"] == "claude-test" for r in logged)


@pytest.mark.usefixtures("bridge_mode")
async def test_closing_the_client_ends_the_session_and_its_server(live_gateway):
    async with Client(bridge(live_gateway, "time"), mode="legacy") as client:
        await client.list_tools()
        sessions = control(paths_of(live_gateway), "status")["sessions"]
        assert [(s["server"], s["client"], s["up"]) for s in sessions] == [
            ("time", "claude-test", True)
        ]
    eventually_sync(
        lambda: control(paths_of(live_gateway), "status")["sessions"] == [],
        "the session to end",
        timeout=10,
    )


@pytest.mark.usefixtures("bridge_mode")
def test_connect_refuses_clearly(live_gateway, tmp_path):
    result = subprocess.run(
        [lockgate_command(), "connect", "nope"],
        env=live_gateway.env,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "no server named 'nope'; known: everything, misbehaving, remote, time" in result.stderr
    env = {**live_gateway.env, "LOCKGATE_DATA_DIR": str(tmp_path / "nothing-runs-here")}
    result = subprocess.run(
        [lockgate_command(), "connect", "everything"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "Lockgate is not running" in result.stderr


@pytest.mark.usefixtures("bridge_mode")
async def test_a_server_turned_off_is_refused_to_its_session_and_to_connect(live_gateway):
    paths = paths_of(live_gateway)
    async with Client(bridge(live_gateway, "time"), mode="legacy") as client:
        arguments = {"timezone": "UTC"}
        assert not (await client.call_tool("get_current_time", arguments)).is_error
        await anyio.to_thread.run_sync(set_server_disabled, paths.servers_file, "time", True)
        reloaded = control(paths, "reload-servers")
        assert reloaded["servers"] == ["everything", "misbehaving", "remote"]
        refused = await client.call_tool("get_current_time", arguments)
        assert refused.is_error
        assert "server 'time' is turned off in Lockgate" in text_of(refused)
    result = subprocess.run(
        [lockgate_command(), "connect", "time"],
        env=live_gateway.env,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert (
        "server 'time' is turned off in Lockgate; a person can turn it on in Lockgate's "
        'Servers tab (or remove its "disabled": true from servers.json)'
    ) in result.stderr
    logged = [
        json.loads(line)
        for line in live_gateway.lockgate("log", "--json", "--server", "time").stdout.splitlines()
    ]
    assert [(r["decision"], r["basis"]) for r in logged] == [
        ("allowed", "default"),
        ("denied", "server_disabled"),
    ]


def test_the_socket_is_private(live_gateway):
    info = json.loads((live_gateway.data_dir / "run" / "gateway.json").read_text())
    sock = Path(info["socket"])
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


async def test_pause_denies_everything_until_resume(live_gateway):
    async with live_gateway.client() as client:
        assert live_gateway.lockgate("pause").returncode == 0
        paused = await client.call_tool("echo", {"message": "x"})
        assert paused.is_error
        assert "Lockgate is paused" in text_of(paused)
        assert "PAUSED" in live_gateway.lockgate("status").stdout
        assert live_gateway.lockgate("resume").returncode == 0
        assert not (await client.call_tool("echo", {"message": "x"})).is_error
    echoes = [m for m in live_gateway.upstream_saw() if m.get("method") == "tools/call"]
    assert len(echoes) == 1  # the paused call never reached the server


class Approver:
    """A person at a terminal: attached through the control socket, answering as told."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.pending: list[dict] = []
        self.ready = threading.Event()
        self._stream = watch(paths)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        for event in self._stream:
            if "pending" in event and event.get("ok"):
                self.ready.set()
            elif event.get("event") == "pending":
                self.pending.append(event["approval"])

    def next_pending(self, timeout: float = 10) -> dict:
        eventually_sync(lambda: self.pending, "a call to wait for approval", timeout=timeout)
        return self.pending.pop(0)


ASK = {
    "version": "1",
    "default": "allow",
    "tools": {
        "get-sum": {"action": "ask", "approval": {"timeout": 20}},
        "echo": {"action": "ask", "approval": {"timeout": 0.5}},
    },
}


async def answered_call(client, tool, arguments, approver, answer):
    results = []

    async def call():
        results.append(await client.call_tool(tool, arguments))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        pending = await anyio.to_thread.run_sync(approver.next_pending)
        answer(pending)
    return pending, results[0]


async def test_approvals_from_a_terminal(live_gateway):
    live_gateway.write_policy(ASK)
    paths = paths_of(live_gateway)
    eventually_sync(
        lambda: control(paths, "status")["policy"]["rules"] == 2, "the policy", timeout=10
    )
    approver = Approver(paths)
    async with live_gateway.client(client="cursor") as client:
        pending, result = await answered_call(
            client,
            "get-sum",
            {"a": 2, "b": 3},
            approver,
            lambda p: control(paths, "answer", id=p["id"], approve=True, digest=p["digest"]),
        )
        assert (pending["client"], pending["server"], pending["tool"]) == (
            "cursor",
            "everything",
            "get-sum",
        )
        assert pending["arguments"] == {"a": 2, "b": 3}
        assert not result.is_error
        assert "5" in text_of(result)

        pending, result = await answered_call(
            client,
            "get-sum",
            {"a": 1, "b": 1},
            approver,
            lambda p: subprocess.run(
                [lockgate_command(), "approvals", "deny", p["id"], "--reason", "not now"],
                env=live_gateway.env,
                check=True,
                capture_output=True,
            ),
        )
        assert result.is_error
        assert "a person refused this call: not now" in text_of(result)

        timed_out = await client.call_tool("echo", {"message": "nobody answers"})
        assert timed_out.is_error
        assert "nobody approved this call within 0.5 s" in text_of(timed_out)
    approver.pending.clear()
    sums = [
        m
        for m in live_gateway.upstream_saw()
        if m.get("method") == "tools/call" and m["params"]["name"] == "get-sum"
    ]
    assert [m["params"]["arguments"] for m in sums] == [{"a": 2, "b": 3}]


def test_an_answer_must_match_what_the_approver_was_shown(live_gateway):
    result = live_gateway.lockgate("approvals", "allow", "no-such-id")
    assert result.returncode == 1
    assert "no such pending approval" in result.stderr


def test_status_shows_a_broken_policy_and_the_one_in_force(live_gateway):
    live_gateway.write_policy({"version": "1", "default": "deny"})
    paths = paths_of(live_gateway)
    eventually_sync(
        lambda: control(paths, "status")["policy"]["default"] == "deny", "the policy", timeout=10
    )
    (live_gateway.config_dir / "policy.json").write_text('{"version": "1", "default": 7}')
    eventually_sync(lambda: control(paths, "status")["policy"]["error"], "the error", timeout=10)
    out = live_gateway.lockgate("status").stdout
    assert "default deny" in out  # the last good policy stays in force
    assert "policy.json:1:29: default: must be" in out


def test_approvals_watch_asks_at_the_terminal(live_gateway):
    live_gateway.write_policy(ASK)
    paths = paths_of(live_gateway)
    eventually_sync(
        lambda: control(paths, "status")["policy"]["rules"] == 2, "the policy", timeout=10
    )
    watcher = subprocess.Popen(
        [lockgate_command(), "approvals", "watch"],
        env=live_gateway.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        eventually_sync(
            lambda: control(paths, "status")["approvers"] == 1, "the approver", timeout=10
        )

        async def call():
            async with live_gateway.client() as client:
                return await client.call_tool("get-sum", {"a": 20, "b": 22})

        assert watcher.stdin is not None
        watcher.stdin.write("yes please\n")  # not one of the answers: asked again
        watcher.stdin.write("y\n")  # "y": allow once (it used to deny)
        watcher.stdin.flush()
        result = anyio.run(call)
        assert not result.is_error
        assert "42" in text_of(result)
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert watcher.stdout is not None
    assert watcher.stdin is not None
    with watcher.stdout, watcher.stdin:
        shown = watcher.stdout.read()
    assert "-> everything/get-sum" in shown
    assert '"a": 20' in shown
    assert "please answer y, s, a or n" in shown
    assert "approved" in shown


def test_approvals_watch_always_writes_the_rule_and_no_denies_with_a_reason(live_gateway):
    asking = {"action": "ask", "approval": {"timeout": 20}}
    live_gateway.write_policy(
        {"version": "1", "default": "allow", "tools": {"get-sum": asking, "echo": asking}}
    )
    paths = paths_of(live_gateway)
    eventually_sync(
        lambda: control(paths, "status")["policy"]["rules"] == 2, "the policy", timeout=10
    )
    watcher = subprocess.Popen(
        [lockgate_command(), "approvals", "watch"],
        env=live_gateway.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        eventually_sync(
            lambda: control(paths, "status")["approvers"] == 1, "the approver", timeout=10
        )

        async def call(tool: str, arguments: Any):
            async with live_gateway.client() as client:
                return await client.call_tool(tool, arguments)

        assert watcher.stdin is not None
        watcher.stdin.write("a\n")  # always: a rule, and this call allowed
        watcher.stdin.flush()
        assert not anyio.run(call, "get-sum", {"a": 1, "b": 2}).is_error
        rules = json.loads((live_gateway.config_dir / "policy.json").read_text())["tools"]
        assert rules["everything/get-sum"] == {"action": "allow"}
        assert not anyio.run(call, "get-sum", {"a": 3, "b": 4}).is_error  # not asked again
        watcher.stdin.write("n\nnot today\n")  # no, with a reason for the agent
        watcher.stdin.flush()
        refused = anyio.run(call, "echo", {"message": "hi"})
        assert refused.is_error
        assert "not today" in text_of(refused)
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert watcher.stdout is not None
    assert watcher.stdin is not None
    with watcher.stdout, watcher.stdin:
        shown = watcher.stdout.read()
    assert "wrote the rule everything/get-sum: allow" in shown
    assert "refused" in shown


def test_nothing_is_left_running_after_stop(live_gateway):
    pid = live_gateway.proc.pid
    info = json.loads((live_gateway.data_dir / "run" / "gateway.json").read_text())
    assert live_gateway.stop() == 0
    assert not (live_gateway.data_dir / "run" / "gateway.json").exists()
    assert not Path(info["socket"]).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_an_answer_the_sdk_cannot_write_becomes_an_error_for_its_request():
    # The SDK's models stop writing at about 255 levels; such a message must not end the
    # session (it used to raise out of the session's writer task).
    from mcp.shared.message import SessionMessage

    from proxy.doors.connect import _line_or_error

    deep = json.loads("[" * 300 + "]" * 300)
    answer = SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=3, result={"x": deep}))
    assert json.loads(_line_or_error(answer)) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {
            "code": -32603,
            "message": "Lockgate could not pass on the answer: it cannot be written as JSON "
            "(nested too deeply?)",
        },
    }
    note = SessionMessage(
        types.JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"x": deep})
    )
    assert _line_or_error(note) == b""
    fine = SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id="a", result={}))
    assert _line_or_error(fine) == b'{"jsonrpc":"2.0","id":"a","result":{}}\n'


async def test_a_peer_that_stops_reading_does_not_hold_the_gateway_at_its_stop(
    tmp_path: Path,
) -> None:
    """A client that sends and never reads its answers leaves them unsent in the
    gateway's buffer: stopping the gateway waits a bounded time for them, then lets the
    connection go (it once waited for ever, and ``lockgate serve`` ignored SIGTERM)."""
    import socket
    import time

    from proxy.doors.local import CLOSE_SECONDS
    from tests.support.harness import INITIALIZE_PARAMS, Harness

    harness = Harness(tmp_path)
    await harness.start()
    assert harness.info is not None
    assert harness.info.socket is not None
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer.connect(harness.info.socket)
        hello = {"lockgate": 1, "mode": "connect", "server": "rec", "client": "stuck"}
        peer.sendall(json.dumps(hello).encode() + b"\n")
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS}
        pings = b"".join(  # each answer is the recorder's whole list, a kilobyte
            json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/list"}).encode() + b"\n"
            for n in range(1, 20_000)
        )
        peer.setblocking(False)
        data = json.dumps(init).encode() + b"\n" + pings
        sent = 0
        with anyio.move_on_after(10):  # as much as the gateway takes in without our reading
            while sent < len(data):
                try:
                    sent += peer.send(data[sent : sent + 65536])
                except BlockingIOError:
                    await anyio.sleep(0.01)
        started = time.monotonic()
        await harness.stop()
        assert time.monotonic() - started < CLOSE_SECONDS + 10
    finally:
        peer.close()
