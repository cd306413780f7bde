"""The real app for GUI tests: LockgateApp with its gateway on its worker thread, real
servers (server-everything behind tests/servers/tee.py, mcp-server-time, the misbehaving
server), and agents that are the mcp SDK's Client on a thread of their own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from PySide6.QtCore import QCoreApplication, QEventLoop
from PySide6.QtWidgets import QApplication

from desktop.app import LockgateApp
from desktop.host import EventPump, GatewayHost
from proxy.audit.log import AuditLog
from proxy.audit.records import CallRecord
from proxy.config.paths import Paths
from proxy.config.tokens import TokenStore
from tests.support.live import servers_json
from tests.support.waiting import eventually_sync
from tests.support.xserver import own_display

REPO = Path(__file__).resolve().parents[2]

BASE_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "get-sum": {"action": "deny", "reason": "no sums today"},
        # tests read the environment a server was started with (a key from the keyring),
        # which Lockgate would otherwise redact from the result
        "get-env": {"results": {"secrets": "allow"}},
    },
}


class Agent:
    """MCP clients on an event loop of their own thread, as a separate agent would be."""

    def __init__(self, base_url: str, tokens: dict[str, str]) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._clients: dict[tuple[str, str], tuple[httpx2.AsyncClient, Client]] = {}

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _client(self, server: str, client: str) -> Client:
        key = (server, client)
        if key not in self._clients:
            http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {self.tokens[client]}"}, timeout=60
            )
            mcp = Client(
                streamable_http_client(self.base_url + server, http_client=http), mode="legacy"
            )
            try:
                await mcp.__aenter__()
            except BaseException:  # refused at initialize: its connection goes too
                await http.aclose()
                raise
            self._clients[key] = (http, mcp)
        return self._clients[key][1]

    def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        server: str = "everything",
        client: str = "claude-test",
    ) -> concurrent.futures.Future[Any]:
        async def go() -> Any:
            mcp = await self._client(server, client)
            return await mcp.call_tool(tool, arguments or {})

        return self._submit(go())

    def close(self) -> None:
        async def close_all() -> None:
            for http, mcp in self._clients.values():
                try:
                    await mcp.__aexit__(None, None, None)
                finally:
                    await http.aclose()

        with contextlib.suppress(Exception):
            self._submit(close_all()).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def app_paths(tmp_path: Path) -> Paths:
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    (paths.config_dir / "servers.json").write_text(json.dumps(servers_json(tmp_path / "tee.jsonl")))
    paths.policy_file.write_text(json.dumps(BASE_POLICY, indent=2) + "\n")
    return paths


@contextlib.contextmanager
def started_app(qtbot: Any, paths: Paths, **options: Any) -> Iterator[LockgateApp]:
    """The app on ``paths`` (``options``: LockgateApp's keywords), its gateway running;
    closed afterwards with every window it opened."""
    app = LockgateApp(paths, port=0, **options)
    app.start()
    try:
        qtbot.waitUntil(lambda: app.state.running, timeout=30_000)
        yield app
    finally:
        app.close()
        app.server_editor.close()
        app.prompt.close()
        app.window.hide()  # closing it would quit the app (there is no tray offscreen)
        app.window.deleteLater()


@pytest.fixture
def running_app(qtbot: Any, app_paths: Paths) -> Iterator[LockgateApp]:
    with started_app(qtbot, app_paths) as app:
        qtbot.waitUntil(lambda: app.tools.rowCount() > 0, timeout=60_000)
        yield app


@pytest.fixture
def agent(running_app: LockgateApp, app_paths: Paths) -> Iterator[Agent]:
    store = TokenStore(app_paths.clients_file)
    tokens = {name: store.create(name) for name in ("claude-test", "cursor-test")}
    assert running_app.host.info is not None
    agent = Agent(running_app.host.info.url, tokens)
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture(autouse=True)
def no_modal_left_open() -> Iterator[None]:
    """A test that leaves a modal dialog open fails: the app must never block on one."""
    yield
    app = QApplication.instance()
    modal = app.activeModalWidget() if isinstance(app, QApplication) else None
    if modal is not None:
        modal.close()
        pytest.fail(f"a modal was left open: {modal!r} {modal.windowTitle()!r}")


def wait_result(qtbot: Any, future: concurrent.futures.Future[Any], timeout: int = 30_000) -> Any:
    qtbot.waitUntil(future.done, timeout=timeout)
    return future.result()


@pytest.fixture
def display() -> Iterator[str]:
    assert shutil.which("trayer"), "trayer is missing: ./dev test installs it (apt)"
    with own_display() as name:
        yield name


def run_probe(probe: Path, args: list[str], display: str, timeout: float = 240) -> list[str]:
    """Run an app probe (``tests/desktop/_*_probe.py``) on ``display`` with the xcb
    platform; the lines it printed. Fails with its output if it failed."""
    ran = subprocess.run(
        [sys.executable, str(probe), *args],
        env={**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout.splitlines()


def spin_until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """In a probe (no qtbot there): run Qt's events until ``done``, at most ``timeout``."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(what)
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def start_trayer(display: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["trayer", "--edge", "top", "--align", "right", "--width", "10", "--height", "28"],
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc


def set_policy(app: Any, qtbot: Any, policy: dict[str, Any]) -> None:
    """Write policy.json as a person would, and wait until the app shows it in force."""
    before = app.policy
    app.paths.policy_file.write_text(json.dumps(policy, indent=2))
    qtbot.waitUntil(lambda: app.policy is not before, timeout=10_000)


def ask_policy(timeout: float = 120) -> dict[str, Any]:
    return {
        "version": "1",
        "default": "allow",
        "tools": {"echo": {"action": "ask", "approval": {"timeout": timeout}}},
    }


def write_log(path: Path, records: Iterable[CallRecord]) -> list[CallRecord]:
    """The records committed, in order, searchable and counted by the hour (as the
    writer indexes them, a few milliseconds after the commit)."""
    written = list(records)
    with AuditLog(path) as audit:
        for record in written:
            audit.write_sync(record)
        eventually_sync(lambda: audit.search_backlog() == 0, "every call indexed")
    return written


@pytest.fixture
def host(qtbot: Any, tmp_path: Path) -> Iterator[GatewayHost]:
    """The app's workers and the crossing back to the GUI thread, without a gateway."""
    host = GatewayHost(Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data"))
    pump = EventPump(host)
    try:
        yield host
    finally:
        pump.stop()
        host.stop()
