"""The local front door: a Unix socket for ``lockgate connect`` and the control commands
(on Windows a named pipe: :mod:`proxy.doors.winpipe`).

Only the person running Lockgate can use it: the socket lives in a folder only they can
enter (0700), and the gateway checks that the connecting process runs as the same user
(``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` on macOS). On Windows the pipe's access list
holds only that user, and the gateway checks the user of the connecting process's token.
That is how a stdio client launched by Claude Desktop or Cursor authenticates as the local
user without anyone copying a token.

A connection starts with one JSON line saying what it is for:

- ``{"lockgate": 1, "mode": "connect", "server": NAME, "client": NAME}``: then the
  connection carries one MCP session exactly as stdio does (one JSON-RPC message per
  line), served by the same gateway and policy as HTTP sessions
  (:mod:`proxy.doors.connect`).
- ``{"lockgate": 1, "mode": "control"}``: then JSON requests and answers, one per line
  (:mod:`proxy.doors.control`).

The gateway answers the first line with ``{"ok": true}`` or ``{"ok": false, "error": ...}``.
Everything after the hello is the same code on both systems (:meth:`LocalServer._serve`):
a Unix connection's hello is read by hand (descriptors ride along with it), a pipe's by
:class:`proxy.doors.winpipe.HelloFirst`, and from there both are a stream reader and writer.

No pile of idle connections can lock anyone out. Connections still saying hello, connect
sessions and control connections each have a budget of their own:

- a peer has :data:`HELLO_SECONDS` to send its hello; when :data:`MAX_HELLOS` are still
  saying hello, the oldest of them is dropped to make room for a new connection;
- a connect session has :data:`INIT_SECONDS` to complete ``initialize`` (an
  ``initialize`` still in flight then gets :data:`INIT_GRACE_SECONDS` more: a server may
  take a while to start), or it is closed; when :data:`MAX_SESSIONS` are open, the oldest
  one that has not initialised is closed to make room, and if every one has, the new one
  is refused with an error line;
- when :data:`MAX_CONTROLS` control connections are open, the oldest one that is not
  watching approvals or signing in (else the oldest of those) is closed to make room, so
  ``lockgate pause``, the approvals and a person's sign-in always get through.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config.runinfo import peer_is_us
from proxy.doors import winpipe
from proxy.doors.connect import ConnectDoor
from proxy.doors.control import ControlDoor
from proxy.doors.jsonlines import send_json
from proxy.gateway.control import GatewayControl
from proxy.gateway.core import Gateway

if sys.platform == "win32":  # pragma: no cover (Windows)
    from proxy.bridge.winpipe import current_user_sid, pipe_name_for

__all__ = ["LocalServer", "socket_path_for"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 100
HELLO_SECONDS = 5.0  # a peer has this long to say what it wants
# A connect session has this long to complete initialize: a real client sends it the
# moment it starts; one that never does only holds a place.
INIT_SECONDS = 30.0
# ...and an initialize still in flight at that point this much longer: more than the
# gateway gives a server to answer it (60 s, twice when it falls back to SSE), so a
# server slow to start (npx fetching a package) is not cut off.
INIT_GRACE_SECONDS = 150.0
# Connections still saying hello. A real peer's hello is in the socket the moment it
# connects and is read within a few turns of the loop, so only a flood of silent
# connections fills this; it is larger than the listen backlog (64), so a burst of
# connections accepted together cannot push out one whose hello is there.
MAX_HELLOS = 128
MAX_SESSIONS = 256  # connect sessions (each one a server process once initialised)
MAX_CONTROLS = 64  # control connections: CLI commands (one each) and approval watchers
_EVICTION_LOG_SECONDS = 10.0
CLOSE_SECONDS = 5.0  # what a closed connection may take to flush what is still unsent
# how a connection ends when its peer goes: nothing to report
_PEER_WENT = (ConnectionError, asyncio.IncompleteReadError, TimeoutError)
_NOT_YOURS = b'{"ok": false, "error": "only the user running Lockgate may connect"}\n'


def socket_path_for(run_dir: Path, name: str = "gateway.sock") -> Path:
    """Where the socket goes: in the private run folder, or, when that path is too long
    for a Unix socket (about 104 bytes), in a new private folder under the temp dir. A
    fresh ``mkdtemp`` folder each time: a fixed name in a shared /tmp could be taken
    by someone else first. Clients find the socket through the run file either way.

    On Windows, the named pipe for this user and run folder
    (:func:`proxy.bridge.winpipe.pipe_name_for`, which the client derives too)."""
    if sys.platform == "win32":  # pragma: no cover (Windows)
        path = Path(pipe_name_for(current_user_sid(), os.path.realpath(run_dir), name))
    else:
        preferred = run_dir / name
        fits = len(os.fsencode(preferred)) <= _SUN_PATH_MAX
        path = (
            preferred if fits else Path(tempfile.mkdtemp(prefix=f"lockgate-{os.getuid()}-")) / name
        )
    return path


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """How a connection's end is told, whichever door it came by: its peer going is
    nothing to report; anything else is logged, and the connection closed."""
    try:
        yield
    except _PEER_WENT:
        pass
    except BaseExceptionGroup as group:  # a session's task group: the peer went?
        if group.split(_PEER_WENT)[1] is not None:
            log.exception("local connection failed")
    except Exception:
        log.exception("local connection failed")


async def _closed(writer: asyncio.StreamWriter) -> None:
    """Close a connection. What is still unsent goes if the peer does not read it soon:
    a peer that stops reading must not hold the connection (nor a shutdown)."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_SECONDS)
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except TimeoutError:
        writer.transport.abort()
    except Exception:  # noqa: S110 - closing a connection that failed already
        pass


if sys.platform != "win32":  # pragma: no branch (the Unix socket's own; Windows: winpipe)

    def _private_folder(folder: Path) -> None:
        """Create ``folder`` 0700, or check that an existing one is ours and private.

        Raises:
            OSError: it exists but belongs to someone else or others may enter it.
        """
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise OSError(f"{folder} must belong to you and be private (mode 0700)")

    def _wake(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    async def _read_hello(conn: socket.socket) -> tuple[bytes, bytes, list[int]]:
        """The first line, what came after it, and any file descriptors sent with it.

        On the event loop (no worker thread a slow peer could hold): wait until the
        socket is readable, then take what is there with ``recvmsg``, fds included. The
        caller bounds the whole read with a deadline.
        """
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        data = b""
        fds: list[int] = []
        try:
            while b"\n" not in data and len(data) <= winpipe.HELLO_LIMIT:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(conn.fileno(), _wake, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(conn.fileno())
                try:
                    chunk, new_fds, _flags, _addr = socket.recv_fds(conn, 65536, 2)
                except (BlockingIOError, InterruptedError):
                    continue
                fds.extend(new_fds)
                if not chunk:
                    break
                data += chunk
        except BaseException:
            _close_fds(fds)
            raise
        line, _, rest = data.partition(b"\n")
        return line, rest, fds


_HELLO, _CONNECT, _CONTROL = "hello", "connect", "control"


@dataclass(eq=False)
class _Conn:
    """One local connection, as far as its budget cares."""

    task: asyncio.Task[None] | None = None
    phase: str = _HELLO
    initialized: bool = False  # connect: its initialize succeeded
    lasting: bool = False  # control: a person waits on it (an approver, a sign-in)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class LocalServer:
    """The local door's server (a Unix socket; on Windows a named pipe). Start and stop it
    on the gateway's loop.

    The deadlines and budgets default to the module's constants; tests pass small ones.
    """

    def __init__(
        self,
        gateway: Gateway,
        path: Path,
        *,
        hello_seconds: float = HELLO_SECONDS,
        init_seconds: float = INIT_SECONDS,
        init_grace_seconds: float = INIT_GRACE_SECONDS,
        max_hellos: int = MAX_HELLOS,
        max_sessions: int = MAX_SESSIONS,
        max_controls: int = MAX_CONTROLS,
    ) -> None:
        self._gateway = gateway
        self.path = path
        self._hello_seconds = hello_seconds
        self._connect_door = ConnectDoor(
            gateway, init_seconds=init_seconds, init_grace_seconds=init_grace_seconds
        )
        self._control_door = ControlDoor(GatewayControl(gateway))
        self._budgets = {_HELLO: max_hellos, _CONNECT: max_sessions, _CONTROL: max_controls}
        self._listener: socket.socket | None = None
        self._pipes: winpipe.Listener | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # per phase, oldest first (dicts keep insertion order; entering a phase appends)
        self._phases: dict[str, dict[_Conn, None]] = {phase: {} for phase in self._budgets}
        self._evicted = dict.fromkeys(self._budgets, 0)
        self._eviction_logged: dict[str, float] = {}

    def counts(self) -> dict[str, int]:
        """How many connections are in each phase: ``hello``, ``connect``, ``control``."""
        return {phase: len(members) for phase, members in self._phases.items()}

    def _enter(self, conn: _Conn, phase: str) -> bool:
        """Move ``conn`` into ``phase``, closing the oldest evictable member if the phase
        is full; False (and ``conn`` stays where it was) if nothing can make room."""
        members = self._phases[phase]
        if len(members) >= self._budgets[phase]:
            victim = self._victim(phase)
            if victim is None:
                return False
            self._report_eviction(phase)
            self._leave(victim)
            victim.close()
        self._leave(conn)
        conn.phase = phase
        members[conn] = None
        return True

    def _report_eviction(self, phase: str) -> None:
        """Log evictions, at most once every :data:`_EVICTION_LOG_SECONDS` per phase (a
        flood would otherwise write a line per connection)."""
        self._evicted[phase] += 1
        now = time.monotonic()
        if now - self._eviction_logged.get(phase, -_EVICTION_LOG_SECONDS) < _EVICTION_LOG_SECONDS:
            return
        log.warning(
            "local socket: %d %s connections open, the most allowed; closed the oldest "
            "one%s to make room (%d so far)",
            self._budgets[phase],
            phase,
            " that had not initialised" if phase == _CONNECT else "",
            self._evicted[phase],
        )
        self._eviction_logged[phase] = now

    def _victim(self, phase: str) -> _Conn | None:
        members = self._phases[phase]
        if phase == _CONNECT:
            return next((c for c in members if not c.initialized), None)
        if phase == _CONTROL:
            return next((c for c in members if not c.lasting), next(iter(members), None))
        return next(iter(members), None)

    def _leave(self, conn: _Conn) -> None:
        self._phases[conn.phase].pop(conn, None)

    def _ended(self, conn: _Conn, _task: asyncio.Task[None]) -> None:
        self._leave(conn)

    def _track(self, serve: Callable[[_Conn], Coroutine[Any, Any, None]]) -> None:
        """Serve one new connection in a task of its own, counted in the hello phase
        (always room: the oldest silent one goes)."""
        record = _Conn()
        self._enter(record, _HELLO)
        task = asyncio.create_task(serve(record))
        record.task = task
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        task.add_done_callback(functools.partial(self._ended, record))

    async def start(self) -> None:
        """Listen. A stale socket from a crashed run is replaced.

        Raises:
            OSError: the folder is not private, or the socket cannot be made (on
                Windows: the pipe's name is taken, :class:`~proxy.doors.winpipe.PipeNameTaken`).
        """
        if sys.platform == "win32":  # pragma: no cover (Windows)
            pipes = winpipe.listen(str(self.path), limit=self._gateway.max_message_bytes)
            self._pipes = pipes
            self._acceptor = asyncio.create_task(self._accept_pipes(pipes))
        else:
            _private_folder(self.path.parent)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            listener.listen(64)
            listener.setblocking(False)
            self._listener = listener
            self._acceptor = asyncio.create_task(self._accept_loop(listener))

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        if self._pipes is not None:  # pragma: no cover (Windows)
            self._pipes.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if sys.platform != "win32":  # pragma: no branch (a pipe goes with its last handle)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            if self.path.parent.name.startswith(f"lockgate-{os.getuid()}-"):
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()  # the temp folder socket_path_for made

    def take(self, accepted: winpipe.Accepted) -> None:
        """Serve one connection that came as streams (a client of Windows' named pipe),
        with the hello, budgets and doors of every local connection."""
        self._track(functools.partial(self._serve_stream, accepted))

    async def _accept_pipes(self, pipes: winpipe.Listener) -> None:  # pragma: no cover (Windows)
        while True:
            try:
                accepted = await pipes.accept()
            except OSError as exc:  # out of resources, say: wait, then go on
                log.warning("local pipe: cannot accept a connection now: %s", exc)
                await asyncio.sleep(0.2)
                continue
            self.take(accepted)
            await asyncio.sleep(0)  # as on the socket: the hellos here first

    async def _serve_stream(self, accepted: winpipe.Accepted, record: _Conn) -> None:
        try:
            with _reported():
                if not accepted.same_user:
                    accepted.writer.write(_NOT_YOURS)
                    return
                hello = await asyncio.wait_for(accepted.hello, self._hello_seconds)
                await self._serve(record, hello, accepted.reader, accepted.writer, [])
        finally:
            await _closed(accepted.writer)

    async def _serve(
        self,
        record: _Conn,
        hello_bytes: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fds: list[int],
    ) -> None:
        """One connection after its hello, whichever door it came by: the mode, the
        budgets, the connect or control door. Owns ``fds``: what the connect door does
        not take is closed."""
        try:
            try:
                hello = json.loads(hello_bytes)
                mode = hello["mode"]
            except (ValueError, KeyError, TypeError):
                await send_json(writer, {"ok": False, "error": "expected a hello line"})
                return
            if mode == "connect":
                passed, fds = fds, []  # the connect door owns them now, and closes them
                if not self._enter(record, _CONNECT):
                    _close_fds(passed)
                    log.warning(
                        "local socket: %d sessions open; refusing one", self._budgets[_CONNECT]
                    )
                    await send_json(
                        writer,
                        {
                            "ok": False,
                            "error": f"Lockgate has {self._budgets[_CONNECT]} local sessions "
                            "open, the most it allows; close some",
                        },
                    )
                    return

                def initialized() -> None:
                    record.initialized = True

                await self._connect_door.serve(hello, reader, writer, passed, initialized)
            elif mode == "control":
                self._enter(record, _CONTROL)  # always room: the oldest idle one goes
                await send_json(writer, {"ok": True})

                def lasting() -> None:
                    record.lasting = True

                await self._control_door.serve(reader, writer, lasting)
            else:
                await send_json(writer, {"ok": False, "error": f"unknown mode {mode!r}"})
        finally:
            _close_fds(fds)

    if sys.platform != "win32":  # pragma: no branch (the Unix socket's; Windows: _accept_pipes)

        async def _accept_loop(self, listener: socket.socket) -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    conn, _ = await loop.sock_accept(listener)
                except OSError as exc:  # out of file descriptors, say: wait, then go on
                    log.warning("local socket: cannot accept a connection now: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                self._track(functools.partial(self._accept, conn))
                # Let the connections already here read their hellos before the next
                # accept: a burst of connections waiting in the backlog is otherwise
                # accepted in one go.
                await asyncio.sleep(0)

        async def _accept(self, conn: socket.socket, record: _Conn) -> None:
            fds: list[int] = []
            writer: asyncio.StreamWriter | None = None
            try:
                with _reported():
                    if not peer_is_us(conn):
                        conn.sendall(_NOT_YOURS)
                        return
                    # The hello line is read by hand: file descriptors ride along with
                    # its bytes, and asyncio's transport would read the bytes and drop
                    # the descriptors.
                    hello, rest, fds = await asyncio.wait_for(
                        _read_hello(conn), self._hello_seconds
                    )
                    # A line over the limit is an Oversized message, read to its end and
                    # refused.
                    reader = asyncio.StreamReader(limit=self._gateway.max_message_bytes)
                    reader.feed_data(rest)
                    loop = asyncio.get_running_loop()
                    transport, protocol = await loop.connect_accepted_socket(
                        lambda: asyncio.StreamReaderProtocol(reader), conn
                    )
                    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                    passed, fds = fds, []  # _serve owns them now
                    await self._serve(record, hello, reader, writer, passed)
            finally:
                _close_fds(fds)
                if writer is not None:
                    await _closed(writer)
                else:
                    conn.close()
