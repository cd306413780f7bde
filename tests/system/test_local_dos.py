"""Idle local connections cannot lock anyone out (proxy/doors/local.py's budgets and deadlines).

Everything is real: the gateway is ``proxy.doors.serve.serve`` in this test's loop, with its
``LocalServer`` made with short deadlines (the one thing changed, through the
constructor's arguments); the flood is hundreds of real Unix-socket connections held
by a thread of this process; ``lockgate pause`` and ``lockgate connect`` are the real
commands in subprocesses; the upstreams are tests/servers/misbehaving.py and
tests/servers/slowinit.py. Each wait is for something to happen, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import proxy.doors.serve
from proxy.bridge.control import control
from proxy.config.paths import Paths
from proxy.doors.local import MAX_CONTROLS, MAX_HELLOS, MAX_SESSIONS, LocalServer
from proxy.doors.serve import serve
from proxy.gateway.core import Gateway
from tests.proxy.bridge import modes
from tests.support.live import SERVERS, lockgate_command
from tests.support.waiting import eventually

bridge_mode = modes.bridge_mode  # the tests that start `lockgate connect` run in both ways

FLOOD = 300  # more than any one budget
HELLO_SECONDS = 2.0  # instead of 5 s: the silent ones go sooner
INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw", "version": "1"},
}


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """Both ends of ~1000 connections live in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Running:
    def __init__(self, paths: Paths, gateway: Gateway, local: LocalServer, socket: str) -> None:
        self.paths = paths
        self.gateway = gateway
        self.local = local
        self.socket = socket

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LOCKGATE_CONFIG_DIR": str(self.paths.config_dir),
            "LOCKGATE_DATA_DIR": str(self.paths.data_dir),
        }

    async def lockgate(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            lockgate_command(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    @contextlib.asynccontextmanager
    async def session(self, server: str = "misbehaving") -> AsyncIterator[Bridge]:
        """``lockgate connect SERVER``, as a client launches it."""
        proc = await asyncio.create_subprocess_exec(
            lockgate_command(),
            "connect",
            server,
            "--client",
            "dos-test",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        try:
            yield Bridge(proc)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 20)


class Bridge:
    """A ``lockgate connect`` process, spoken to in JSON-RPC lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        async with asyncio.timeout(20):
            line = await self.proc.stdout.readline()
        assert line, "the session ended"
        answer: dict[str, Any] = json.loads(line)
        assert answer.get("id") == request_id, answer
        return answer

    async def handshake(self) -> None:
        assert "result" in await self.ask(0, "initialize", INIT)
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    async def echo(self, request_id: int) -> str:
        answer = await self.ask(request_id, "tools/call", {"name": "echo", "arguments": {}})
        return str(answer["result"]["content"][0]["text"])

    async def refusal(self) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(20):
            await self.proc.wait()
            return (await self.proc.stderr.read()).decode()


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **local_options: Any
) -> AsyncIterator[Running]:
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    paths.config_dir.mkdir()
    servers = {
        "misbehaving": {"command": sys.executable, "args": [str(SERVERS / "misbehaving.py")]},
        "slowinit": {"command": sys.executable, "args": [str(SERVERS / "slowinit.py"), "1.5"]},
    }
    (paths.config_dir / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    (paths.config_dir / "policy.json").write_text(json.dumps({"version": "1", "default": "allow"}))
    made: list[LocalServer] = []

    def local_server(gateway: Gateway, path: Path) -> LocalServer:
        local = LocalServer(gateway, path, hello_seconds=HELLO_SECONDS, **local_options)
        made.append(local)
        return local

    monkeypatch.setattr(proxy.doors.serve, "LocalServer", local_server)
    ready: asyncio.Future[tuple[Gateway, Any]] = asyncio.get_running_loop().create_future()
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
    gateway, info = await asyncio.wait_for(ready, 30)
    try:
        yield Running(paths, gateway, made[0], info.socket)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# -- the flood: real sockets, held by a thread (connect() may wait for the gateway) ------


class Flood:
    """Connections to the gateway's socket that each say ``hello`` (or nothing) and then
    never another word."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sockets: list[socket.socket] = []
        self.answers: list[bytes] = []
        self._stop = threading.Event()

    def open(self, count: int, hello: dict[str, Any] | None = None) -> None:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)  # blocking: waits while the listen backlog is full
            if hello is not None:
                sock.settimeout(20)
                sock.sendall(json.dumps(hello).encode() + b"\n")
                self.answers.append(_read_line(sock))
            sock.setblocking(False)  # for _at_eof
            self.sockets.append(sock)

    def keep_opening(self) -> None:
        """Open silent connections until :meth:`stop` (run in a thread of its own)."""
        while not self._stop.is_set():
            self.open(1)
            if len(self.sockets) > 2 * FLOOD:  # the gateway dropped these long ago
                self.sockets.pop(0).close()

    def stop(self) -> None:
        self._stop.set()

    def closed_by_gateway(self) -> int:
        return sum(1 for sock in list(self.sockets) if _at_eof(sock))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _at_eof(sock: socket.socket) -> bool:
    """Whether the gateway closed its end (what it sent before is read and dropped)."""
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def flood() -> Iterator[Callable[[str], Flood]]:
    made: list[Flood] = []

    def make(path: str) -> Flood:
        made.append(Flood(path))
        return made[-1]

    yield make
    for each in made:
        each.stop()
        each.close()


def connect_hello(server: str = "misbehaving") -> dict[str, Any]:
    return {"lockgate": 1, "mode": "connect", "server": server, "client": "idle"}


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.usefixtures("bridge_mode")
async def test_silent_connections_cannot_lock_out_pause_or_a_new_session(
    tmp_path, monkeypatch, flood
):
    async with running_gateway(tmp_path, monkeypatch) as running:
        silent = flood(running.socket)
        await asyncio.to_thread(silent.open, FLOOD)
        # the oldest silent ones made room for the newer
        await eventually(
            lambda: running.local.counts()["hello"] == MAX_HELLOS, "the hello budget to be full"
        )
        await eventually(
            lambda: silent.closed_by_gateway() >= FLOOD - MAX_HELLOS,
            "the oldest silent connections to be dropped",
        )
        # ...and while more keep coming, the real commands still get through
        more = flood(running.socket)
        opener = asyncio.create_task(asyncio.to_thread(more.keep_opening))
        try:
            assert (await running.lockgate("pause"))[0] == 0
            assert running.gateway.paused
            assert (await running.lockgate("resume"))[0] == 0
            async with running.session() as session:
                await session.handshake()
                assert await session.echo(1) == "echo done"
        finally:
            more.stop()
            await opener
        assert len(more.sockets) > MAX_HELLOS  # it did flood meanwhile
        # the rest say nothing within HELLO_SECONDS, and go
        await eventually(
            lambda: (
                silent.closed_by_gateway() == len(silent.sockets)
                and more.closed_by_gateway() == len(more.sockets)
            ),
            "every silent connection to be closed",
        )
        await eventually(lambda: not running.local.counts()["hello"], "no connection saying hello")


@pytest.mark.usefixtures("bridge_mode")
async def test_sessions_that_never_initialise_make_room_for_one_that_does(
    tmp_path, monkeypatch, flood
):
    async with running_gateway(tmp_path, monkeypatch) as running:
        idle = flood(running.socket)
        await asyncio.to_thread(idle.open, FLOOD, connect_hello())
        assert {json.loads(a)["ok"] for a in idle.answers} == {True}
        await eventually(
            lambda: running.local.counts()["connect"] == MAX_SESSIONS,
            "the session budget to be full",
        )
        await eventually(
            lambda: idle.closed_by_gateway() == FLOOD - MAX_SESSIONS,
            "the oldest idle sessions to be closed",
        )
        assert (await running.lockgate("pause"))[0] == 0
        assert (await running.lockgate("resume"))[0] == 0
        async with running.session() as session:
            await session.handshake()
            assert await session.echo(1) == "echo done"
            assert idle.closed_by_gateway() == FLOOD - MAX_SESSIONS + 1  # one more made room
            status = await asyncio.to_thread(control, running.paths, "status")
            assert [s["client"] for s in status["sessions"]] == ["dos-test"]


@pytest.mark.usefixtures("bridge_mode")
async def test_sessions_that_never_initialise_are_closed_after_the_deadline(
    tmp_path, monkeypatch, flood
):
    async with (
        running_gateway(tmp_path, monkeypatch, init_seconds=1.0) as running,
        running.session() as session,
    ):
        await session.handshake()
        started = time.monotonic()
        idle = flood(running.socket)
        await asyncio.to_thread(idle.open, FLOOD, connect_hello())
        await eventually(
            lambda: idle.closed_by_gateway() == FLOOD,
            "every session that did not initialise to be closed",
        )
        assert time.monotonic() - started >= 1.0
        # the one that initialised stays, and works
        await eventually(lambda: running.local.counts()["connect"] == 1, "one session")
        assert await session.echo(1) == "echo done"


@pytest.mark.usefixtures("bridge_mode")
async def test_an_initialize_still_in_flight_at_the_deadline_gets_its_answer(tmp_path, monkeypatch):
    # slowinit answers initialize after 1.5 s; the deadline is 0.5 s
    async with (
        running_gateway(tmp_path, monkeypatch, init_seconds=0.5) as running,
        running.session("slowinit") as session,
    ):
        started = time.monotonic()
        await session.handshake()
        assert time.monotonic() - started >= 1.5
        assert await session.echo(1) == "echo done"


@pytest.mark.usefixtures("bridge_mode")
async def test_with_every_session_initialised_a_new_one_is_refused_clearly(tmp_path, monkeypatch):
    async with (
        running_gateway(tmp_path, monkeypatch, max_sessions=2) as running,
        running.session() as first,
        running.session() as second,
    ):
        await first.handshake()
        await second.handshake()
        async with running.session() as third:
            refusal = await third.refusal()
        assert third.proc.returncode == 1
        assert "Lockgate has 2 local sessions open, the most it allows; close some" in refusal
        assert await first.echo(1) == "echo done"
        assert await second.echo(1) == "echo done"
        assert (await running.lockgate("pause"))[0] == 0


async def test_idle_control_connections_make_room_and_approvers_stay(tmp_path, monkeypatch, flood):
    async with running_gateway(tmp_path, monkeypatch) as running:
        watchers = flood(running.socket)
        await asyncio.to_thread(watchers.open, 2, {"lockgate": 1, "mode": "control"})
        for sock in watchers.sockets:
            sock.send(b'{"op": "watch"}\n')
        await eventually(lambda: running.gateway.approvals.approvers == 2, "two approvers")
        idle = flood(running.socket)
        await asyncio.to_thread(idle.open, FLOOD, {"lockgate": 1, "mode": "control"})
        assert {json.loads(a)["ok"] for a in idle.answers} == {True}
        await eventually(
            lambda: idle.closed_by_gateway() == FLOOD + 2 - MAX_CONTROLS,
            "the oldest idle control connections to be closed",
        )
        assert running.local.counts()["control"] == MAX_CONTROLS
        code, _out, _err = await running.lockgate("pause")
        assert code == 0
        assert running.gateway.paused
        status = await asyncio.to_thread(control, running.paths, "status")
        assert status["approvers"] == 2
        assert watchers.closed_by_gateway() == 0
