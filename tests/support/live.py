"""A real `lockgate serve` with real upstream servers, for end-to-end tests.

Nothing here is a double: the gateway is the installed command in a subprocess, the
upstreams are server-everything (npm, run with the machine's node), mcp-server-time
(PyPI) and a deliberately misbehaving server; clients are the mcp SDK's own Client.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.waiting import eventually_sync

REPO = Path(__file__).resolve().parents[2]
SERVERS = REPO / "tests" / "servers"
EVERYTHING_JS = (
    SERVERS / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
BIN = Path(sys.executable).parent


def stop_process(proc: subprocess.Popen[Any], *, grace: float) -> None:
    """Stop ``proc``: asked to (SIGTERM), killed if it has not ended within ``grace`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lockgate_command() -> str:
    found = shutil.which("lockgate", path=str(BIN))
    assert found, "the lockgate command is not installed in this venv (./dev test installs it)"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def servers_json(tee_log: Path, http_url: str | None = None) -> dict[str, Any]:
    if not EVERYTHING_JS.exists():
        raise RuntimeError(
            "server-everything is not installed: run ./dev test (npm ci in tests/servers)"
        )
    servers: dict[str, Any] = {
        "everything": {
            "command": sys.executable,
            "args": [str(SERVERS / "tee.py"), str(tee_log), "node", str(EVERYTHING_JS), "stdio"],
        },
        "time": {"command": str(BIN / "mcp-server-time")},
        "misbehaving": {"command": sys.executable, "args": [str(SERVERS / "misbehaving.py")]},
    }
    if http_url is not None:
        servers["remote"] = {"url": http_url}
    return {"mcpServers": servers}


@dataclass
class LiveGateway:
    """A running `lockgate serve` and what a test needs to talk to it."""

    config_dir: Path
    data_dir: Path
    tee_log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LOCKGATE_CONFIG_DIR": str(self.config_dir),
            "LOCKGATE_DATA_DIR": str(self.data_dir),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp/"

    def lockgate(
        self, *args: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [lockgate_command(), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def token(self, client: str = "test-client") -> str:
        if client not in self.tokens:
            result = self.lockgate("token", "create", client)
            assert result.returncode == 0, result.stderr
            self.tokens[client] = result.stdout.strip()
        return self.tokens[client]

    def write_policy(self, policy: dict[str, Any]) -> None:
        path = self.config_dir / "policy.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(policy))
        os.replace(tmp, path)

    def start(self, port: int | None = 0) -> None:
        """Start ``lockgate serve`` on ``port`` (0: a free one; None: the port setting)."""
        run_file = self.data_dir / "run" / "gateway.json"
        with contextlib.suppress(FileNotFoundError):
            run_file.unlink()
        log = open(self.data_dir.parent / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [lockgate_command(), "serve", *([] if port is None else ["--port", str(port)])],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"lockgate serve exited with {self.proc.returncode}: " + self.serve_log()
                )
            try:
                info = json.loads(run_file.read_text())
            except (OSError, ValueError):
                return False
            return bool(info.get("pid") == self.proc.pid)

        eventually_sync(ready, "lockgate serve to start", timeout=30)
        self.port = int(json.loads(run_file.read_text())["port"])

    def serve_log(self) -> str:
        path = self.data_dir.parent / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def upstream_saw(self) -> list[dict[str, Any]]:
        """Every JSON-RPC message server-everything received, in order."""
        if not self.tee_log.exists():
            return []
        return [json.loads(line) for line in self.tee_log.read_text().splitlines() if line]

    @contextlib.asynccontextmanager
    async def client(
        self,
        server: str = "everything",
        *,
        client: str = "test-client",
        token: str | None = None,
        **options: Any,
    ) -> AsyncIterator[Client]:
        """The mcp SDK's own Client, connected over HTTP with a token of its own."""
        headers = {"Authorization": f"Bearer {token or self.token(client)}"}
        options.setdefault("mode", "legacy")
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(self.base_url + server, http_client=http)
            async with Client(transport, **options) as mcp_client:
                yield mcp_client


@contextlib.contextmanager
def everything_over_http(mode: str = "streamableHttp") -> Iterator[str]:
    """server-everything serving streamable HTTP (or, with mode "sse", the older SSE
    transport) on a free loopback port: a remote upstream."""
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(EVERYTHING_JS), mode],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        eventually_sync(listening, "server-everything over HTTP", timeout=30)
        yield f"http://127.0.0.1:{port}/" + ("sse" if mode == "sse" else "mcp")
    finally:
        stop_process(proc, grace=10)
