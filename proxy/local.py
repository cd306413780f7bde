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
  ``status``, ``pause``, ``resume``, ``approvals``, ``answer``; and ``watch``, which makes
  the connection an approver until it closes and streams pending approvals to it.

The gateway answers the first line with ``{"ok": true}`` or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.runner import serve_loop
from mcp.shared.message import SessionMessage

from proxy.approvals import PendingApproval, Remember
from proxy.events import ApprovalAnswered, ApprovalPending, Event
from proxy.fastlane import FastLane
from proxy.gateway import Gateway
from proxy.runinfo import LINE_LIMIT
from proxy.servers import ServersError
from proxy.tokens import valid_client_name

__all__ = ["LocalServer", "socket_path_for"]

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 100
MAX_CONNECTIONS = 256  # local bridges and control connections at once
HELLO_SECONDS = 5.0  # a peer has this long to say what it wants


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


class LocalServer:
    """The Unix socket server. Start and stop it on the gateway's loop."""

    def __init__(self, gateway: Gateway, path: Path) -> None:
        self._gateway = gateway
        self.path = path
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

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
            if len(self._connections) >= MAX_CONNECTIONS:
                log.warning("local socket: %d connections already; refusing one", MAX_CONNECTIONS)
                conn.close()
                continue
            task = asyncio.create_task(self._accept(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _accept(self, conn: socket.socket) -> None:
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
            hello_bytes, rest, fds = await asyncio.wait_for(_read_hello(conn), HELLO_SECONDS)
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
                await self._connect(hello, reader, writer, passed)
            elif mode == "control":
                await _send(writer, {"ok": True})
                await self._control(reader, writer)
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
    ) -> None:
        """One MCP session, on the client's own pipes when the bridge passed them (no
        extra hop: the bridge then only waits), else line by line over this socket.

        Owns ``fds``: they are closed when this returns, whatever happens, so a refused
        or finished client sees its pipes close.
        """
        try:
            await self._connect_owning(hello, reader, writer, fds)
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
                server, client, session_in, session_out, bridge=reader if fds else None
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
        bridge: asyncio.StreamReader | None,
    ) -> None:
        lane = FastLane(self._gateway, outgoing)
        sdk_server = self._gateway.build_server(
            server=server, client=client, on_session=lane.attach
        )
        to_session, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_client, from_session = anyio.create_memory_object_stream[SessionMessage](64)

        async def client_to_session() -> None:
            async with to_session:
                while line := await incoming.readline():
                    if not line.strip() or lane.take(line):
                        continue
                    try:
                        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except Exception as exc:  # the session answers it with a parse error
                        await to_session.send(exc)
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
                    outgoing.write(b"".join(_line(m) for m in batch))
                    await outgoing.drain()

        async with sdk_server.lifespan(sdk_server) as state, anyio.create_task_group() as tg:
            tg.start_soon(client_to_session)
            tg.start_soon(session_to_client)
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

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                await _send(writer, {"ok": False, "error": 'expected {"op": ...}'})
                continue
            if op == "watch":
                await self._watch(reader, writer)
                return
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
                    "source": store.policy.source,
                    "rules": len(store.policy.rules),
                    "default": store.policy.default.value,
                    "error": str(store.error) if store.error else None,
                },
                "approvers": gateway.approvals.approvers,
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


def _line(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


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
