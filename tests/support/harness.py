"""A real gateway in the test's own event loop, with the recording upstream, and clients
for both front doors: the tests of Lockgate's guarantee use it.

Nothing here is a double. The gateway is ``proxy.doors.serve.serve`` (HTTP on a free loopback
port, the local socket, the audit log in SQLite, policy.json and servers.json watched);
the upstream is tests/servers/recorder.py, a real stdio MCP server that writes down every
``tools/call`` it receives; the clients speak the wire protocols themselves: newline
JSON-RPC on the local socket (as ``lockgate connect`` does, without the process) and
streamable HTTP with a bearer token (httpx2).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from proxy.config.paths import Paths
from proxy.config.runinfo import RunInfo
from proxy.config.secrets import SecretStore
from proxy.config.tokens import TokenStore
from proxy.doors.serve import serve
from proxy.gateway.core import Gateway
from proxy.gateway.events import Event, EventBus
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "tests" / "servers" / "recorder.py"
PROTOCOL = "2025-06-18"
INITIALIZE_PARAMS = {
    "protocolVersion": PROTOCOL,
    "capabilities": {},
    "clientInfo": {"name": "harness", "version": "1"},
}


def recorder_servers(record: Path, **extra: dict[str, Any]) -> dict[str, Any]:
    """servers.json with the recorder as ``rec`` (and ``extra`` entries)."""
    servers = {"rec": {"command": sys.executable, "args": [str(RECORDER), str(record)]}}
    return {"mcpServers": {**servers, **extra}}


def write_json(path: Path, document: Any) -> None:
    """Replace ``path`` atomically, as an editor saves."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


@dataclass
class Harness:
    """Lockgate's folders, the recorder's record, and the gateway while it runs."""

    root: Path
    secrets: SecretStore | None = None
    clock: Callable[[], float] | None = None
    paths: Paths = field(init=False)
    record: Path = field(init=False)
    gateway: Gateway | None = None
    info: RunInfo | None = None
    events: list[Event] = field(default_factory=list)
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.paths = Paths(config_dir=self.root / "config", data_dir=self.root / "data")
        self.paths.config_dir.mkdir(parents=True, exist_ok=True)
        self.record = self.root / "recorded.jsonl"
        if not self.paths.servers_file.exists():
            write_json(self.paths.servers_file, recorder_servers(self.record))

    def write_policy(self, policy: dict[str, Any]) -> None:
        write_json(self.paths.policy_file, {"version": "1", **policy})

    def recorded(self) -> list[dict[str, Any]]:
        """Every tools/call the recorder received, in order."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def recorded_names(self) -> list[str]:
        return [entry["name"] for entry in self.recorded()]

    def token(self, client: str) -> str:
        return TokenStore(self.paths.clients_file).create(client, replace=True)

    async def start(self) -> Gateway:
        bus = EventBus()
        bus.subscribe(self.events.append)
        ready: asyncio.Future[tuple[Gateway, RunInfo]] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        options: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        self._task = asyncio.create_task(
            serve(
                self.paths,
                port=0,
                bus=bus,
                secrets=self.secrets,
                on_ready=lambda g, i: ready.set_result((g, i)),
                stop=self._stop,
                handle_signals=False,
                **options,
            )
        )
        waiting: set[asyncio.Future[Any]] = {ready, self._task}
        done, _ = await asyncio.wait(waiting, timeout=30, return_when="FIRST_COMPLETED")
        if self._task in done:
            await self._task  # raises what went wrong
        self.gateway, self.info = ready.result()
        return self.gateway

    async def stop(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 30)
        self.gateway, self._task, self._stop = None, None, None

    @property
    def http_url(self) -> str:
        assert self.info is not None
        return f"http://127.0.0.1:{self.info.port}/mcp/"


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Gateway]:
    gateway = await harness.start()
    try:
        yield gateway
    finally:
        await harness.stop()


class LocalClient:
    """One MCP session on the local socket, spoken in JSON-RPC lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.answers: dict[tuple[type, Any], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []  # server-to-client requests
        self._ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, harness: Harness, server: str = "rec", client: str = "local-agent"
    ) -> AsyncIterator[LocalClient]:
        assert harness.info is not None
        reader, writer = await asyncio.open_unix_connection(harness.info.socket, limit=1 << 24)
        hello = {"lockgate": 1, "mode": "connect", "server": server, "client": client}
        writer.write(json.dumps(hello).encode() + b"\n")
        ok = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert ok.get("ok") is True, ok
        local = cls(reader, writer)
        local._pump = asyncio.create_task(local._read())
        try:
            yield local
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            local._pump.cancel()
            with contextlib.suppress(BaseException):
                await local._pump

    async def _read(self) -> None:
        while line := await self.reader.readline():
            message = json.loads(line)
            if "id" in message and "method" not in message:
                self.answers[(type(message["id"]), message["id"])] = message
            elif "method" in message and "id" in message:
                self.requests.append(message)
            self._arrived.set()

    def send_line(self, line: bytes) -> None:
        self.writer.write(line.rstrip(b"\n") + b"\n")

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps({"jsonrpc": "2.0", **message}).encode())

    async def answer(self, request_id: Any, timeout: float = 30) -> dict[str, Any]:
        key = (type(request_id), request_id)
        async with asyncio.timeout(timeout):
            while key not in self.answers:
                self._arrived.clear()
                await self._arrived.wait()
        return self.answers.pop(key)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        self.send({"id": request_id, "method": method, **({"params": params} if params else {})})
        return await self.answer(request_id)

    def start_call(self, name: str, arguments: dict[str, Any] | None = None) -> int:
        """Send a tools/call without waiting; returns its id (see :meth:`answer`)."""
        request_id = next(self._ids)
        params = {"name": name, "arguments": arguments or {}}
        self.send({"id": request_id, "method": "tools/call", "params": params})
        return request_id

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.answer(self.start_call(name, arguments))

    async def handshake(self, gateway: Gateway) -> None:
        answer = await self.request("initialize", INITIALIZE_PARAMS)
        assert "result" in answer, answer
        self.send({"method": "notifications/initialized"})
        # the fast lane opens once this is on its way
        await eventually(
            lambda: all(s.initialized for s in gateway.sessions.values()), "the session to open"
        )


class HttpSession:
    """One MCP session over streamable HTTP, in raw requests."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        url: str,
        token: str,
        *,
        protocol: str = PROTOCOL,
        capabilities: Mapping[str, Any] | None = None,
    ) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.protocol = protocol
        self.capabilities = dict(capabilities or {})
        self.session_id: str | None = None
        self._ids = itertools.count(1)

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        out = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {self.token}",
        }
        sid = session_id or self.session_id
        if sid is not None:
            out["mcp-session-id"] = sid
            out["mcp-protocol-version"] = self.protocol
        return out

    async def open(self) -> str:
        params = {
            **INITIALIZE_PARAMS,
            "protocolVersion": self.protocol,
            "capabilities": self.capabilities,
        }
        response = await self.post({"id": 0, "method": "initialize", "params": params})
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        done = await self.post({"method": "notifications/initialized"})
        assert done.status_code == 202, done.text
        return self.session_id

    async def post(
        self,
        message: dict[str, Any],
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    ) -> httpx2.Response:
        body = json.dumps({"jsonrpc": "2.0", **message})
        return await self.http.post(
            self.url, content=body, headers=headers if headers is not None else self.headers()
        )

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = {
            "id": next(self._ids),
            "method": method,
            **({"params": params} if params else {}),
        }
        return answer_of(await self.post(message))

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}})

    async def close(self) -> None:
        if self.session_id is not None:
            with contextlib.suppress(httpx2.HTTPError):
                await self.http.delete(self.url, headers=self.headers())


def answer_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message answering a POST: the JSON body, or the answer on its SSE."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and (data := line.removeprefix("data:").strip()):
                message = json.loads(data)
                if "result" in message or "error" in message:
                    return dict(message)
        raise AssertionError(f"no answer on the SSE stream: {response.text!r}")
    return dict(response.json())


def text_of(answer: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in answer["result"]["content"])
