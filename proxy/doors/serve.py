"""Running the gateway: ``lockgate serve``, and the tray app's embedded gateway.

Binds loopback only, and one per user (:mod:`proxy.config.instance`). While it runs,
``run/gateway.json`` in the data folder (private, 0600) says where it listens, for
``lockgate connect`` and the control commands; only the lock's holder writes it. SIGINT and
SIGTERM stop it cleanly: the HTTP server stops taking requests and ends its sessions
(which stops their upstream servers), pending approvals are refused, and the audit log is
flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from proxy.audit.log import AuditLog
from proxy.config.atomic import write_atomic
from proxy.config.instance import AlreadyRunning, InstanceLock
from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT, RunInfo, run_file
from proxy.config.secrets import SecretStore
from proxy.config.servers import load_servers
from proxy.config.settings import Settings, load_settings
from proxy.config.tokens import TokenStore
from proxy.doors.http import build_http_app
from proxy.doors.local import LocalServer, socket_path_for
from proxy.gateway.core import Gateway
from proxy.gateway.events import Event, EventBus
from proxy.gateway.pins import ToolPins

if TYPE_CHECKING:
    from proxy.telemetry import AuditExporter

__all__ = ["DEFAULT_PORT", "AlreadyRunning", "serve"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3  # seconds
KEEP_ALIVE_SECONDS = 65


async def serve(
    paths: Paths,
    *,
    port: int = DEFAULT_PORT,
    bus: EventBus | None = None,
    secrets: SecretStore | None = None,
    on_ready: Callable[[Gateway, RunInfo], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    instance: InstanceLock | None = None,
) -> None:
    """Run the gateway until SIGINT/SIGTERM (or ``stop`` is set).

    Only one gateway serves a user's folders: ``instance`` is the lock its caller holds
    (the app takes it before its window opens); without one, ``serve`` takes it itself,
    and raises :class:`AlreadyRunning` if another Lockgate has it.

    ``handle_signals`` must be False off the main thread (the tray app runs the gateway on
    a worker thread and stops it with ``stop``). ``clock`` (wall seconds: the log's times,
    rate limits) and ``monotonic`` (durations, restart backoff) are the gateway's clocks.

    Raises:
        AlreadyRunning: another Lockgate serves these folders.
        proxy.config.servers.ServersError: servers.json is invalid.
        proxy.audit.log.AuditError: the audit log cannot be opened.
        OSError: the port is taken.
    """
    if instance is None:
        with InstanceLock(paths).acquire("serve") as held:
            await serve(
                paths,
                port=port,
                bus=bus,
                secrets=secrets,
                on_ready=on_ready,
                stop=stop,
                handle_signals=handle_signals,
                clock=clock,
                monotonic=monotonic,
                instance=held,
            )
        return
    if not instance.held:
        raise RuntimeError("serve was given an instance lock that is not held")
    servers = load_servers(paths.servers_file)
    bus = bus or EventBus()
    bus.subscribe(_log_event)
    settings = load_settings(paths)  # before the log opens: a broken file leaves nothing open
    audit = AuditLog(
        paths.audit_db,
        retention_days=settings.audit_retention_days,
        max_megabytes=settings.audit_max_megabytes,
        clock=clock,  # the records' times are the gateway's clock: the cut is on it too
        monotonic=monotonic,
    )
    gateway = Gateway(
        servers=servers,
        policy_path=paths.policy_file,
        audit=audit,
        secrets=secrets or SecretStore(),
        bus=bus,
        log_dir=paths.log_dir,
        servers_file=paths.servers_file,
        last_good_policy=paths.last_good_policy,
        team_policy=Path(settings.team_policy) if settings.team_policy else None,
        last_good_team_policy=paths.last_good_team_policy,
        clock=clock,
        monotonic=monotonic,
        max_message_bytes=settings.max_message_bytes,
        default_approval_timeout=settings.approval_timeout_seconds,
        pins=ToolPins(paths.tool_pins, clock=clock),
    )
    exporter: AuditExporter | None = None
    try:
        await gateway.start()
        exporter = await _start_export(paths, settings, gateway.secrets)
        app = build_http_app(gateway, TokenStore(paths.clients_file))
        local = LocalServer(gateway, socket_path_for(paths.run_dir))
        await local.start()
        sock = _bind_loopback(port)
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            access_log=False,
            # Calls in flight get this long to finish; then they are cancelled (and logged
            # so). Without it, an agent's open event stream would hold the exit forever.
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            # Idle keep-alive connections are closed by the client first (httpx and
            # Node drop theirs after 4-5 s): a server that closed at 5 s too raced the
            # client's next request on it, which then failed with a reset.
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        server = _Server(config, gateway)
        if handle_signals:
            _on_stop_signals(asyncio.get_running_loop(), server.request_exit)
        actual = sock.getsockname()[1]
        info = RunInfo(
            pid=os.getpid(),
            port=actual,
            url=f"http://127.0.0.1:{actual}/mcp/",
            started=time.time(),
            socket=str(local.path),
        )
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if server_task.done():
                await server_task  # raises what went wrong
                return
            await asyncio.sleep(0.01)
        write_atomic(run_file(paths), json.dumps(asdict(info)).encode("utf-8"))
        log.info(
            "Lockgate gateway on %s (servers: %s)", info.url, ", ".join(sorted(servers)) or "none"
        )
        if on_ready is not None:
            on_ready(gateway, info)
        stopper = asyncio.create_task(_stop_when(stop, server)) if stop is not None else None
        try:
            await server_task
        finally:
            if stopper is not None:
                stopper.cancel()
            with contextlib.suppress(FileNotFoundError):
                run_file(paths).unlink()
            await local.stop()
    finally:
        await gateway.stop()
        if exporter is not None:  # after the gateway: the last calls' outcomes go too
            await asyncio.to_thread(exporter.stop)
        await audit.aclose()


async def _start_export(
    paths: Paths, settings: Settings, secrets: SecretStore
) -> AuditExporter | None:
    """The audit log's OpenTelemetry export, when the ``otlp_endpoint`` setting names a
    collector. One that cannot start is logged and left off: the gateway goes on deciding
    and logging every call (the export is a copy of the log, not a part of the promise)."""
    if not settings.otlp_endpoint:
        return None
    # the OpenTelemetry SDK takes 0.3 s to import: only when the export is on
    from proxy.telemetry import TelemetryError, start_audit_export  # noqa: PLC0415

    try:
        return await asyncio.to_thread(start_audit_export, paths, settings, secrets)
    except TelemetryError as exc:
        log.error("the audit log is not exported to OpenTelemetry: %s", exc.told())
        return None


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: it re-raises a caught SIGTERM once it has
    stopped, which would kill the process before the audit log is closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self._gateway = gateway

    def request_exit(self) -> None:
        # Calls waiting for a person are answered now (refused), not left to the
        # shutdown's grace period, which would cut them off without an answer.
        self._gateway.approvals.cancel_all("Lockgate is shutting down")
        self.should_exit = True


async def _stop_when(stop: asyncio.Event, server: _Server) -> None:
    """Stop as SIGTERM would (the tray app's Quit sets ``stop``)."""
    await stop.wait()
    server.request_exit()


def _bind_loopback(port: int) -> socket.socket:
    """The HTTP door's listening socket, on 127.0.0.1 only.

    Made with ``IPPROTO_TCP`` spelled out: asyncio turns Nagle's algorithm off on each
    accepted connection only when the socket says it is TCP, and a listener made with
    protocol 0 passes that 0 on. With Nagle on, a response written in pieces (headers,
    then the event, then the end of the chunked body) waited for the client's delayed
    ACK: about 40 ms per call on a kept-alive connection.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror} "
            "(is Lockgate already running? try --port)",
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _log_event(event: Event) -> None:
    log.debug("%s", event)


def _on_stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Call ``stop`` on the loop when SIGINT or SIGTERM comes. Windows' event loop has
    no signal handlers: there Python's own handler hands it to the loop."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop)
        except NotImplementedError:  # pragma: no cover (Windows)
            signal.signal(signum, lambda _signum, _frame: loop.call_soon_threadsafe(stop))
