"""The gateway inside the app: its own asyncio loop on a worker thread, and the one
crossing between that loop and the GUI.

Everything the GUI hears comes through one deque: the gateway's events (appended by a bus
subscriber on the loop thread), the answers to what the GUI asked of the gateway, and the
host's own news (ready, failed, stopped). :class:`EventPump` drains it on the GUI thread
every 50 ms (150 ms under heavy traffic) and hands it on in batches. Measured with
bench/bench_gui.py: a deque drained by a ~50 ms timer absorbed 55,000 rows/s with the GUI
heartbeat late by 34 ms at p99, where one queued signal per event froze the GUI for over
a minute.

The GUI asks the gateway for things with :meth:`GatewayHost.call` (a function run on the
loop thread), :meth:`GatewayHost.run` (a coroutine on the loop) and
:meth:`GatewayHost.blocking` (file I/O on a worker thread); each answer comes back
through the deque to a callback on the GUI thread. Nothing on the GUI thread waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from PySide6.QtCore import QObject, QTimer, Signal

from proxy.config.instance import InstanceLock
from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT, RunInfo
from proxy.config.secrets import SecretStore
from proxy.doors.serve import serve
from proxy.errors import LockgateError
from proxy.gateway.control import GatewayControl
from proxy.gateway.core import Gateway
from proxy.gateway.events import EventBus

__all__ = ["EventPump", "GatewayHost", "HostFailed", "HostReady", "HostStopped"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class HostReady:
    """The gateway serves: where to reach it."""

    info: RunInfo


@dataclass(frozen=True)
class HostFailed:
    """The gateway could not start or stopped with an error; the message is for a person."""

    message: str


@dataclass(frozen=True)
class HostStopped:
    """The gateway's loop has ended."""


@dataclass(frozen=True)
class _Answer:
    callback: Callable[[concurrent.futures.Future[Any]], None]
    future: concurrent.futures.Future[Any]


class GatewayHost:
    """Runs ``lockgate serve``'s gateway on a worker thread, attached as an approver."""

    def __init__(
        self,
        paths: Paths,
        *,
        port: int = DEFAULT_PORT,
        secrets: SecretStore | None = None,
        instance: InstanceLock | None = None,
    ) -> None:
        """``instance`` is the one-per-user lock the app holds; without it, the host
        takes it (as the app) for as long as its gateway runs."""
        self.paths = paths
        self.port = port
        self._secrets = secrets
        self._instance = instance
        self._inbox: deque[object] = deque()
        self.bus = EventBus()
        self.bus.subscribe(self._inbox.append)
        self._gateway: Gateway | None = None  # for tests that reach past the façade
        self.control: GatewayControl | None = None
        self.info: RunInfo | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._scopes: set[anyio.CancelScope] = set()  # work from run(), on the loop
        self._thread = threading.Thread(target=self._main, name="lockgate-gateway", daemon=True)
        self._workers = concurrent.futures.ThreadPoolExecutor(2, "lockgate-io")
        self.ready = threading.Event()

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the gateway (in-flight calls answered or cancelled, the audit log closed);
        False if it had not stopped within ``timeout``."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._workers.shutdown(wait=False, cancel_futures=True)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self.control is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # the GUI must hear of it; the thread ends anyway
            log.exception("the gateway failed")
            self._inbox.append(HostFailed(_describe(exc)))
        finally:
            self.control = self._gateway = None
            self._inbox.append(HostStopped())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        own = self._instance is None
        instance = self._instance or InstanceLock(self.paths).acquire("app")
        try:
            await serve(
                self.paths,
                port=self.port,
                bus=self.bus,
                secrets=self._secrets,
                on_ready=self._on_ready,
                stop=self._stop,
                handle_signals=False,
                instance=instance,
            )
        finally:
            # Work asked of the gateway (tool listings) is still running: cancel it the
            # anyio way and let it clean up, within reason.
            for scope in list(self._scopes):
                scope.cancel()
            with anyio.move_on_after(10, shield=True):
                while self._scopes:
                    await anyio.sleep(0.01)
            if own:
                instance.release()

    def _on_ready(self, gateway: Gateway, info: RunInfo) -> None:
        self._gateway = gateway
        self.control = GatewayControl(gateway)
        self.info = info
        self.control.attach_approver()  # the app answers approvals for as long as it runs
        self._inbox.append(HostReady(info))
        self.ready.set()

    # -- asking the gateway -----------------------------------------------------------

    def call(
        self,
        fn: Callable[[GatewayControl], T],
        on_done: Callable[[concurrent.futures.Future[T]], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(control)`` on the gateway's loop; ``on_done`` gets the future on the
        GUI thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                control = self.control
                if control is None:
                    raise RuntimeError("the gateway is not running")
                future.set_result(fn(control))
            except BaseException as exc:
                future.set_exception(exc)

        self._on_loop(run, future)
        return self._answered(future, on_done)

    def run(
        self,
        make: Callable[[GatewayControl], Coroutine[Any, Any, T]],
        on_done: Callable[[concurrent.futures.Future[T]], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Run the coroutine ``make(control)`` on the gateway's loop."""
        loop, control = self._loop, self.control
        if loop is None or control is None or loop.is_closed():
            failed: concurrent.futures.Future[T] = concurrent.futures.Future()
            failed.set_exception(RuntimeError("the gateway is not running"))
            return self._answered(failed, on_done)
        future = asyncio.run_coroutine_threadsafe(self._stoppable(make(control)), loop)
        return self._answered(future, on_done)

    async def _stoppable(self, work: Coroutine[Any, Any, T]) -> T:
        """``work`` in a cancel scope that stopping the host cancels, so that its cleanup
        (stopping the server processes it started) runs to the end. Left to asyncio.run's
        own end, it would be cancelled natively, which cuts through anyio's shields and
        leaves those processes running."""
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await work
            finally:
                self._scopes.discard(scope)
        raise asyncio.CancelledError  # the host stopped: the caller's future is cancelled

    def blocking(
        self,
        fn: Callable[[], T],
        on_done: Callable[[concurrent.futures.Future[T]], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Run ``fn()`` (file I/O) on a worker thread, never the GUI's. Once the host has
        stopped, nothing runs: the future comes back cancelled."""
        try:
            future = self._workers.submit(fn)
        except RuntimeError:  # shut down: an answer that arrived while quitting asked more
            future = concurrent.futures.Future()
            future.cancel()
        return self._answered(future, on_done)

    def _on_loop(self, run: Callable[[], None], future: concurrent.futures.Future[Any]) -> None:
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("the gateway is not running")
            loop.call_soon_threadsafe(run)
        except RuntimeError as exc:
            future.set_exception(RuntimeError("the gateway is not running"))
            log.debug("call on a stopped gateway: %s", exc)

    def _answered(
        self,
        future: concurrent.futures.Future[T],
        on_done: Callable[[concurrent.futures.Future[T]], None] | None,
    ) -> concurrent.futures.Future[T]:
        if on_done is not None:
            future.add_done_callback(lambda done: self._inbox.append(_Answer(on_done, done)))
        return future

    # -- the crossing -----------------------------------------------------------------

    def drain(self) -> list[object]:
        """Everything that arrived since the last drain, oldest first (GUI thread)."""
        inbox = self._inbox
        batch: list[object] = []
        append = batch.append
        try:
            for _ in range(len(inbox)):
                append(inbox.popleft())
        except IndexError:
            pass
        return batch


class EventPump(QObject):
    """Drains the host on the GUI thread every ``interval_ms`` and emits what it drained
    in batches.

    Answers to the GUI's own requests are delivered to their callbacks here, in order with
    the events around them.

    The GUI thread never spends much more than ``budget_ms`` at a time here: past it, the
    rest waits for the next turn of the event loop, so painting, input and timers get
    theirs. Under a flood (more than the GUI can show) the backlog is worked off that way,
    in order, with the window staying responsive. While more than ``HEAVY`` events arrive
    per interval, it drains three times less often: every batch repaints the table.
    """

    batch = Signal(object)  # list of events (proxy.gateway.events and the Host* records)

    CHUNK = 300  # events between looks at the clock (about 100 calls)
    HEAVY = 150  # events in one interval (about 1,000 calls/s at 50 ms) that slow the pump

    def __init__(
        self,
        host: GatewayHost,
        interval_ms: int = 50,
        budget_ms: float = 12.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._host = host
        self._budget = budget_ms / 1000
        self._interval = interval_ms
        self._pending: deque[object] = deque()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._more = QTimer(self, singleShot=True, interval=0)  # the rest of a backlog
        self._more.timeout.connect(self._work)

    @property
    def interval_ms(self) -> int:
        """How often it drains now (longer while traffic is heavy)."""
        return self._timer.interval()

    @property
    def backlog(self) -> int:
        """Items drained but not yet handed on."""
        return len(self._pending)

    def pump(self) -> None:
        """Hand on everything that has arrived, however long it takes."""
        self._pending.extend(self._host.drain())
        self._work(unlimited=True)

    def _tick(self) -> None:
        drained = self._host.drain()
        self._pending.extend(drained)
        # Under heavy traffic, fewer and larger batches: each batch repaints the table,
        # and at 20 a second that alone was a third of the GUI thread's time.
        heavy = len(drained) > self.HEAVY
        self._timer.setInterval(self._interval * 3 if heavy else self._interval)
        if not self._more.isActive():
            self._work()

    def _work(self, unlimited: bool = False) -> None:
        deadline = None if unlimited else time.perf_counter() + self._budget
        pending, popleft = self._pending, self._pending.popleft
        events: list[object] = []
        while pending:
            item = popleft()
            if isinstance(item, _Answer):
                if events:
                    self.batch.emit(events)
                    events = []
                item.callback(item.future)
            else:
                events.append(item)
                if len(events) < self.CHUNK:
                    continue
                self.batch.emit(events)
                events = []
            if deadline is not None and time.perf_counter() > deadline:
                break
        if events:
            self.batch.emit(events)
        if pending:
            self._more.start()

    def stop(self) -> None:
        self._timer.stop()
        self._more.stop()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LockgateError):
        return exc.told()
    if isinstance(exc, OSError) and exc.errno == 98:
        return f"the gateway's port is taken: {exc.strerror} (is another Lockgate running?)"
    return f"{type(exc).__name__}: {exc}"
