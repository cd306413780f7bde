"""The local front door: a Unix socket for `lockgate connect` and the control commands.

Only the person running Lockgate can use it: the socket lives in a folder only they can
enter (0700), and the gateway checks that the connecting process runs as the same user
(``SO_PEERCRED`` on Linux). That is how a stdio client launched by Claude Desktop or
Cursor authenticates as the local user without anyone copying a token.

A connection starts with one JSON line saying what it is for:

- ``{"lockgate": 1, "mode": "connect", "server": NAME, "client": NAME}``: then the
  connection carries one MCP session exactly as stdio does (one JSON-RPC message per
  line), served by the same gateway and policy as HTTP sessions.
- ``{"lockgate": 1, "mode": "control"}``: then JSON requests and answers, one per line:
  ``status``, ``pause``, ``resume``, ``approvals``, ``answer``, ``reload-servers``,
  ``reload-policy`` (read policy.json now; answered once it is in force, or with its
  error); and ``watch``, which makes the connection an approver until it closes and
  streams pending approvals to it.

The gateway answers the first line with ``{"ok": true}`` or ``{"ok": false, "error": ...}``.

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
  watching approvals (else the oldest watcher) is closed to make room, so ``lockgate
  pause`` and the approvals always get through.

A message for the client that cannot be written as JSON (nested too deeply for the SDK's
models) is answered with an error for its request instead, and the session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.runner import serve_loop
from mcp.shared.message import SessionMessage

from proxy.config.runinfo import LINE_LIMIT
from proxy.config.servers import ServersError
from proxy.config.tokens import valid_client_name
from proxy.doors.fastlane import FastLane
from proxy.gateway.approvals import PendingApproval, Remember
from proxy.gateway.core import Gateway
from proxy.gateway.events import ApprovalAnswered, ApprovalPending, Event
from proxy.gateway.session import Session
from proxy.policy.store import PolicyStore

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


def socket_path_for(run_dir: Path) -> Path:
    """Where the socket goes: in the private run folder, or, when that path is too long
    for a Unix socket (about 104 bytes), in a new private folder under the temp dir. A
    fresh ``mkdtemp`` folder each time: a fixed name in a shared /tmp could be taken
    by someone else first. Clients find the socket through the run file either way."""
    preferred = run_dir / "gateway.sock"
    if len(os.fsencode(preferred)) <= _SUN_PATH_MAX:
        return preferred
    return Path(tempfile.mkdtemp(prefix=f"lockgate-{os.getuid()}-")) / "gateway.sock"


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

    On the event loop (no worker thread a slow peer could hold): wait until the socket
    is readable, then take what is there with ``recvmsg``, fds included. The caller
    bounds the whole read with a deadline.
    """
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    data = b""
    fds: list[int] = []
    try:
        while b"\n" not in data and len(data) <= 65536:
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
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    line, _, rest = data.partition(b"\n")
    return line, rest, fds


def _peer_uid(sock: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)  # Linux
    if option is None:
        return None  # elsewhere the private folder is the check
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


_HELLO, _CONNECT, _CONTROL = "hello", "connect", "control"


@dataclass(eq=False)
class _Conn:
    """One local connection, as far as its budget cares."""

    task: asyncio.Task[None] | None = None
    phase: str = _HELLO
    initialized: bool = False  # connect: its initialize succeeded
    watching: bool = False  # control: it is an approver

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class LocalServer:
    """The Unix socket server. Start and stop it on the gateway's loop.

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
        self._init_seconds = init_seconds
        self._init_grace_seconds = init_grace_seconds
        self._budgets = {_HELLO: max_hellos, _CONNECT: max_sessions, _CONTROL: max_controls}
        self._listener: socket.socket | None = None
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
            return next((c for c in members if not c.watching), next(iter(members), None))
        return next(iter(members), None)

    def _leave(self, conn: _Conn) -> None:
        self._phases[conn.phase].pop(conn, None)

    def _ended(self, conn: _Conn, _task: asyncio.Task[None]) -> None:
        self._leave(conn)

    async def start(self) -> None:
        """Listen. A stale socket from a crashed run is replaced.

        Raises:
            OSError: the folder is not private, or the socket cannot be made.
        """
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
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.path.parent.name.startswith(f"lockgate-{os.getuid()}-"):
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # the temp folder socket_path_for made

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: wait, then go on
                log.warning("local socket: cannot accept a connection now: %s", exc)
                await asyncio.sleep(0.2)
                continue
            record = _Conn()
            self._enter(record, _HELLO)  # always room: the oldest silent one goes
            task = asyncio.create_task(self._accept(conn, record))
            record.task = task
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
            task.add_done_callback(functools.partial(self._ended, record))
            # Let the connections already here read their hellos before the next accept:
            # a burst of connections waiting in the backlog is otherwise accepted in one go.
            await asyncio.sleep(0)

    async def _accept(self, conn: socket.socket, record: _Conn) -> None:
        fds: list[int] = []
        writer: asyncio.StreamWriter | None = None
        try:
            uid = _peer_uid(conn)
            if uid is not None and uid != os.getuid():
                conn.sendall(
                    b'{"ok": false, "error": "only the user running Lockgate may connect"}\n'
                )
                return
            # The hello line is read by hand: file descriptors ride along with its bytes,
            # and asyncio's transport would read the bytes and drop the descriptors.
            hello_bytes, rest, fds = await asyncio.wait_for(_read_hello(conn), self._hello_seconds)
            reader = asyncio.StreamReader(limit=LINE_LIMIT)
            reader.feed_data(rest)
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), conn
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            try:
                hello = json.loads(hello_bytes)
                mode = hello["mode"]
            except (ValueError, KeyError, TypeError):
                await _send(writer, {"ok": False, "error": "expected a hello line"})
                return
            if mode == "connect":
                passed, fds = fds, []  # _connect owns them now, and closes them
                if not self._enter(record, _CONNECT):
                    for fd in passed:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    log.warning(
                        "local socket: %d sessions open; refusing one", self._budgets[_CONNECT]
                    )
                    await _send(
                        writer,
                        {
                            "ok": False,
                            "error": f"Lockgate has {self._budgets[_CONNECT]} local sessions "
                            "open, the most it allows; close some",
                        },
                    )
                    return
                await self._connect(hello, reader, writer, passed, record)
            elif mode == "control":
                self._enter(record, _CONTROL)  # always room: the oldest idle one goes
                await _send(writer, {"ok": True})
                await self._control(reader, writer, record)
            else:
                await _send(writer, {"ok": False, "error": f"unknown mode {mode!r}"})
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("local connection failed")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            else:
                conn.close()

    # -- connect: one MCP session ------------------------------------------------------

    async def _connect(
        self,
        hello: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fds: list[int],
        record: _Conn,
    ) -> None:
        """One MCP session, on the client's own pipes when the bridge passed them (no
        extra hop: the bridge then only waits), else line by line over this socket.

        Owns ``fds``: they are closed when this returns, whatever happens, so a refused
        or finished client sees its pipes close.
        """
        try:
            await self._connect_owning(hello, reader, writer, fds, record)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _connect_owning(
        self,
        hello: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fds: list[int],
        record: _Conn,
    ) -> None:
        server, client = hello.get("server"), hello.get("client")
        if not isinstance(server, str) or server not in self._gateway.servers:
            known = ", ".join(sorted(self._gateway.servers)) or "none (add them to servers.json)"
            await _send(
                writer,
                {"ok": False, "error": f"Lockgate has no server named {server!r}; known: {known}"},
            )
            return
        if not isinstance(client, str) or not valid_client_name(client):
            await _send(writer, {"ok": False, "error": f"{client!r} is not a valid client name"})
            return
        if fds and len(fds) != 2:
            await _send(writer, {"ok": False, "error": "expected two descriptors: in and out"})
            return
        if fds:
            loop = asyncio.get_running_loop()
            pipe_in = asyncio.StreamReader(limit=LINE_LIMIT)
            # Duplicates for the transports, which close them; the originals close above.
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(pipe_in), os.fdopen(os.dup(fds[0]), "rb", 0)
            )
            out_transport, out_protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(os.dup(fds[1]), "wb", 0)
            )
            session_in = pipe_in
            session_out = asyncio.StreamWriter(out_transport, out_protocol, None, loop)
        else:
            session_in, session_out = reader, writer
        await _send(writer, {"ok": True})
        try:
            await self._mcp_session(
                server,
                client,
                session_in,
                session_out,
                record=record,
                bridge=reader if fds else None,
            )
        finally:
            if fds:
                session_out.close()

    async def _mcp_session(
        self,
        server: str,
        client: str,
        incoming: asyncio.StreamReader,
        outgoing: asyncio.StreamWriter,
        *,
        record: _Conn,
        bridge: asyncio.StreamReader | None,
    ) -> None:
        lane = FastLane(self._gateway, outgoing)
        initialized = anyio.Event()
        handshake = _Handshake()

        def on_session(session: Session) -> None:  # the session's initialize succeeded
            lane.attach(session)
            record.initialized = True
            initialized.set()

        sdk_server = self._gateway.build_server(server=server, client=client, on_session=on_session)
        to_session, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_client, from_session = anyio.create_memory_object_stream[SessionMessage](64)

        # the client's requests the SDK route is serving, by type and value: its
        # dispatcher reads a cancellation's id with int(), so "7" would cancel call 7
        sdk_calls: set[tuple[type, object]] = set()

        async def client_to_session() -> None:
            async with to_session:
                while line := await _read_line(incoming, client):
                    if not line.strip() or _taken_by(lane, line):
                        continue
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except Exception as exc:
                        # The SDK's loop drops what it cannot read, unanswered: the client
                        # would wait for its answer forever. It is answered here.
                        outgoing.write(_unreadable(line, exc))
                        await outgoing.drain()
                        continue
                    if isinstance(message, types.JSONRPCNotification) and _has_bad_id(line):
                        # read as a notification, it would go unanswered: a request whose
                        # id is not a string or an integer is refused instead
                        outgoing.write(_bad_id_answer())
                        await outgoing.drain()
                        continue
                    if isinstance(message, types.JSONRPCRequest):
                        sdk_calls.add(_id_key(message.id))
                        if message.method == "initialize":
                            handshake.asked(message.id)
                    elif _cancels_another(message, sdk_calls):
                        continue
                    await to_session.send(SessionMessage(message))
            lane.cancel_all()  # the client has gone: nobody waits for these answers

        async def session_to_client() -> None:
            async with from_session:
                async for message in from_session:
                    batch = [message]
                    while True:  # what else is ready leaves in the same write (one wake-up)
                        try:
                            batch.append(from_session.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    for m in batch:
                        handshake.answered(m.message)
                        if isinstance(m.message, types.JSONRPCResponse | types.JSONRPCError):
                            sdk_calls.discard(_id_key(m.message.id))
                    outgoing.write(b"".join(_line_or_error(m) for m in batch))
                    await outgoing.drain()

        async def initialize_in_time() -> None:
            """Close the session if its initialize has not succeeded in time."""
            with anyio.move_on_after(self._init_seconds):
                await initialized.wait()
                return
            if handshake.in_flight():
                with anyio.move_on_after(self._init_grace_seconds):
                    await handshake.settled()  # on_session ran before a success left
            if not initialized.is_set():
                log.warning(
                    "local socket: a %s session of %s did not initialise within %g s; closed",
                    server,
                    client,
                    self._init_seconds,
                )
                tg.cancel_scope.cancel()

        async with sdk_server.lifespan(sdk_server) as state, anyio.create_task_group() as tg:
            tg.start_soon(client_to_session)
            tg.start_soon(session_to_client)
            tg.start_soon(initialize_in_time)
            if bridge is not None:
                # The bridge only waits; if it dies, the session it stood for ends too.
                async def bridge_gone() -> None:
                    await bridge.read()
                    tg.cancel_scope.cancel()

                tg.start_soon(bridge_gone)
            try:
                await serve_loop(sdk_server, from_client, to_client, lifespan_state=state)
            finally:
                with anyio.CancelScope(shield=True):
                    await lane.aclose()  # before the session's task group goes
            tg.cancel_scope.cancel()

    # -- control -----------------------------------------------------------------------

    async def _control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: _Conn
    ) -> None:
        while line := await reader.readline():
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                await _send(writer, {"ok": False, "error": 'expected {"op": ...}'})
                continue
            if op == "watch":
                record.watching = True
                await self._watch(reader, writer)
                return
            if op == "reload-policy":
                store = await self._gateway.reload_policy()
                error = None if store.error is None else str(store.error)
                await _send(writer, {"ok": error is None, "error": error, **_policy_json(store)})
                continue
            await _send(writer, self._control_op(op, request))

    def _control_op(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        gateway = self._gateway
        if op == "status":
            store = gateway.policy_store
            return {
                "ok": True,
                "paused": gateway.paused,
                "servers": sorted(gateway.servers),
                "sessions": [
                    {
                        "id": s.id,
                        "server": s.server,
                        "client": s.client,
                        "started": s.started,
                        "up": s.upstream is not None and not s.upstream.dead.is_set(),
                    }
                    for s in gateway.sessions.values()
                ],
                "policy": {
                    **_policy_json(store),
                    "error": str(store.error) if store.error else None,
                },
                "approvers": gateway.approvals.approvers,
                "audit_error": gateway.tool_calls.audit_failure,
                "pending": len(gateway.approvals.pending()),
            }
        if op == "pause":
            gateway.pause()
            return {"ok": True, "paused": True}
        if op == "resume":
            gateway.resume()
            return {"ok": True, "paused": False}
        if op == "reload-servers":
            try:
                return {"ok": True, "servers": gateway.reload_servers()}
            except ServersError as exc:
                return {"ok": False, "error": str(exc)}
        if op == "approvals":
            return {"ok": True, "pending": [_pending_json(p) for p in gateway.approvals.pending()]}
        if op == "answer":
            try:
                remember = Remember(request.get("remember", "once"))
            except ValueError:
                return {"ok": False, "error": "remember must be once or session"}
            if remember is Remember.ALWAYS:
                return {"ok": False, "error": "always-allow is done by writing a rule"}
            approve, digest, reason = (
                request.get("approve"),
                request.get("digest"),
                request.get("reason"),
            )
            # Only JSON true approves ("false" is a true value in Python), and only with
            # the digest of the call the approver was shown.
            if not isinstance(approve, bool):
                return {"ok": False, "error": "approve must be true or false"}
            if not isinstance(digest, str):
                return {"ok": False, "error": "an answer must name the call's digest"}
            if reason is not None and not isinstance(reason, str):
                return {"ok": False, "error": "reason must be text"}
            done = gateway.approvals.answer(
                str(request.get("id")),
                approve,
                reason=reason,
                remember=remember,
                digest=digest,
            )
            if not done:
                return {
                    "ok": False,
                    "error": "no such pending approval (answered, timed out, "
                    "or not the call you were shown)",
                }
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Be an approver while the connection lasts; stream approval events to it."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(event: Event) -> None:
            if isinstance(event, ApprovalPending):
                queue.put_nowait(
                    {
                        "event": "pending",
                        "approval": {
                            "id": event.approval_id,
                            "call_id": event.call_id,
                            "client": event.client,
                            "server": event.server,
                            "tool": event.tool,
                            "arguments": event.arguments,
                            "rule": event.rule,
                            "reason": event.reason,
                            "deadline": event.deadline,
                            "digest": _digest_of(self._gateway, event.approval_id),
                        },
                    }
                )
            elif isinstance(event, ApprovalAnswered):
                queue.put_nowait(
                    {"event": "answered", "id": event.approval_id, "answer": event.answer}
                )

        unsubscribe = self._gateway.bus.subscribe(on_event)
        detach = self._gateway.approvals.attach()
        try:
            await _send(
                writer,
                {
                    "ok": True,
                    "pending": [_pending_json(p) for p in self._gateway.approvals.pending()],
                },
            )
            closed = asyncio.ensure_future(reader.read())  # EOF: the approver went away
            while not closed.done():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await _send(writer, getter.result())
                else:
                    getter.cancel()
        finally:
            detach()
            unsubscribe()


def _policy_json(store: PolicyStore) -> dict[str, Any]:
    """The policy in force, as ``status`` and ``reload-policy`` report it."""
    policy = store.policy
    return {"source": policy.source, "rules": len(policy.rules), "default": policy.default.value}


def _line(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def _unreadable(line: bytes, exc: Exception) -> bytes:
    """The JSON-RPC error answering a line that is not a JSON-RPC message: a parse error
    (-32700) when it is not JSON text (lone surrogates included, as the HTTP door says
    too), an invalid request (-32600) otherwise; with the line's id when one can be read,
    so the client can match it."""
    code, message = types.INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 message"
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        document = None
        code, message = -32700, f"Parse error: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    else:
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            code, message = -32700, "Parse error: a lone surrogate escape is not text"
    request_id = document.get("id") if isinstance(document, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        request_id = None
    error = {"code": code, "message": message}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode() + b"\n"


async def _read_line(incoming: asyncio.StreamReader, client: str) -> bytes:
    """The client's next line; b"" at its end, and for a line longer than
    :data:`~proxy.config.runinfo.LINE_LIMIT` (no message is that long: the session ends)."""
    try:
        return await incoming.readline()
    except ValueError:
        log.warning(
            "local socket: %s sent a line longer than %d bytes; its session ends",
            client,
            LINE_LIMIT,
        )
        return b""


def _has_bad_id(line: bytes) -> bool:
    """Whether the JSON ``line`` has a top-level ``id`` that is not a string or an integer
    (1.5, true, null, a list): JSON-RPC's "Invalid Request"."""
    if b'"id"' not in line:
        return False
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(document, dict) or "id" not in document:
        return False
    request_id = document["id"]
    return isinstance(request_id, bool) or not isinstance(request_id, int | str)


def _bad_id_answer() -> bytes:
    error = {"code": -32600, "message": "Invalid request: an id must be a string or an integer"}
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode() + b"\n"


def _id_key(request_id: object) -> tuple[type, object]:
    return (type(request_id), request_id)


def _cancels_another(message: object, sdk_calls: set[tuple[type, object]]) -> bool:
    """Whether ``message`` is a cancellation that names no request the SDK route serves
    (JSON-RPC ids keep their type: "7" is not 7); it is then dropped, as the fast lane
    drops one that names none of its calls."""
    if not isinstance(message, types.JSONRPCNotification):
        return False
    if message.method != "notifications/cancelled" or not isinstance(message.params, dict):
        return False
    return _id_key(message.params.get("requestId")) not in sdk_calls


def _taken_by(lane: FastLane, line: bytes) -> bool:
    """Whether the fast lane serves ``line``; if it fails on it, the SDK gets the line
    (and answers it), rather than the failure ending the session."""
    try:
        return lane.take(line)
    except Exception:
        log.exception("local socket: the fast lane failed on a line; the SDK handles it")
        return False


def _line_or_error(message: SessionMessage) -> bytes:
    """``message`` as a line; if it cannot be written as JSON (the SDK's models refuse
    about 255 levels of nesting), an error answer to its request instead, or nothing
    (and a log line) if it answers no request. Never raises: one bad message must not
    end the session."""
    try:
        return _line(message)
    except (ValueError, RecursionError):  # PydanticSerializationError is a ValueError
        inner = message.message
        if isinstance(inner, types.JSONRPCResponse | types.JSONRPCError) and inner.id is not None:
            log.warning("local socket: the answer to %r cannot be written as JSON", inner.id)
            error = {
                "code": types.INTERNAL_ERROR,
                "message": "Lockgate could not pass on the answer: it cannot be written as "
                "JSON (nested too deeply?)",
            }
            answer = {"jsonrpc": "2.0", "id": inner.id, "error": error}
            return json.dumps(answer, separators=(",", ":")).encode() + b"\n"
        log.warning("local socket: dropped a message that cannot be written as JSON")
        return b""


class _Handshake:
    """The client's initialize requests still waiting for their answers."""

    def __init__(self) -> None:
        self._waiting: set[tuple[type, int | str]] = set()
        self._changed = anyio.Event()

    def asked(self, request_id: int | str) -> None:
        self._waiting.add((type(request_id), request_id))

    def answered(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            key = (type(message.id), message.id)
            if key in self._waiting:
                self._waiting.discard(key)
                self._changed.set()
                self._changed = anyio.Event()

    def in_flight(self) -> bool:
        return bool(self._waiting)

    async def settled(self) -> None:
        """Return once no initialize is waiting for its answer."""
        while self._waiting:
            await self._changed.wait()


def _digest_of(gateway: Gateway, approval_id: str) -> str | None:
    for pending in gateway.approvals.pending():
        if pending.id == approval_id:
            return pending.digest
    return None


def _pending_json(p: PendingApproval) -> dict[str, Any]:
    return {
        "id": p.id,
        "call_id": p.call_id,
        "client": p.call.client,
        "server": p.call.server,
        "tool": p.call.tool,
        "arguments": p.call.arguments,
        "rule": p.decision.rule,
        "reason": p.decision.reason,
        "deadline": p.deadline,
        "digest": p.digest,
    }


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, default=str).encode("utf-8") + b"\n")
    await writer.drain()
