"""The local socket's ``connect`` door: one MCP session per connection, for a stdio client.

``lockgate connect SERVER`` (:mod:`proxy.bridge.connect`) says hello and, where it can,
passes the client's own pipes along (``SCM_RIGHTS``): the session then runs on them with
no extra hop, and the bridge only waits. Otherwise the session runs line by line over the
socket. Either way it is the gateway's SDK server that serves it, with the same policy
and log as HTTP sessions, and plain ``tools/call`` lines take the fast lane
(:mod:`proxy.doors.fastlane`).

What the SDK's loop would drop unanswered is answered here: a line that is not JSON-RPC
(-32700 or -32600), a request whose id is not a string or an integer (-32600). A message
for the client that cannot be written as JSON (nested too deeply for the SDK's models) is
answered with an error for its request instead, and the session goes on. A session has
``init_seconds`` to complete ``initialize`` or, in the 2026-07-28 era (which the client's
first request chooses for the connection), to have a request answered (one still in
flight then gets ``init_grace_seconds`` more: a server may take a while to start), or it
is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.server.runner import serve_dual_era_loop
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY

from proxy.config.tokens import valid_client_name
from proxy.doors.fastlane import FastLane
from proxy.doors.jsonlines import send_json
from proxy.doors.oversize import Oversized, read_message, size_text, too_large
from proxy.gateway.core import Gateway
from proxy.gateway.pipeline import AtTheDoor
from proxy.gateway.session import Session

__all__ = ["ConnectDoor"]

log = logging.getLogger(__name__)


class ConnectDoor:
    """Serves ``connect`` connections on the gateway's loop."""

    def __init__(self, gateway: Gateway, *, init_seconds: float, init_grace_seconds: float) -> None:
        self._gateway = gateway
        self._init_seconds = init_seconds
        self._init_grace_seconds = init_grace_seconds

    async def serve(
        self,
        hello: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fds: list[int],
        on_initialized: Callable[[], None],
    ) -> None:
        """One MCP session, on the client's own pipes when the bridge passed them (no
        extra hop: the bridge then only waits), else line by line over this socket.

        Owns ``fds``: they are closed when this returns, whatever happens, so a refused
        or finished client sees its pipes close.
        """
        try:
            await self._serve_owning(hello, reader, writer, fds, on_initialized)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _serve_owning(
        self,
        hello: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fds: list[int],
        on_initialized: Callable[[], None],
    ) -> None:
        server, client = hello.get("server"), hello.get("client")
        if not isinstance(server, str):
            await send_json(writer, {"ok": False, "error": "the hello names no server"})
            return
        if (why := self._gateway.not_served(server)) is not None:  # none, or turned off
            await send_json(writer, {"ok": False, "error": why})
            return
        if not isinstance(client, str) or not valid_client_name(client):
            await send_json(
                writer, {"ok": False, "error": f"{client!r} is not a valid client name"}
            )
            return
        if fds and len(fds) != 2:
            await send_json(writer, {"ok": False, "error": "expected two descriptors: in and out"})
            return
        if fds and (unfit := _not_a_stream(fds)) is not None:
            await send_json(writer, {"ok": False, "error": unfit})
            return
        if fds:
            loop = asyncio.get_running_loop()
            pipe_in = asyncio.StreamReader(limit=self._gateway.max_message_bytes)
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
        await send_json(writer, {"ok": True})
        try:
            await self._mcp_session(
                server,
                client,
                session_in,
                session_out,
                on_initialized=on_initialized,
                bridge=reader if fds else None,
            )
        finally:
            if fds:
                session_out.close()

    async def _too_large(
        self, oversized: Oversized, lane: FastLane, server: str, client: str
    ) -> bytes:
        """The answer to a message over the size limit; a ``tools/call`` is logged and
        shown as a refused call (the session lives on)."""
        reason = too_large(oversized.size, self._gateway.max_message_bytes)
        log.warning("local socket: %s sent %s; refused", client, size_text(oversized.size))
        if oversized.method == "tools/call":
            caller = lane.session or AtTheDoor(server, client)
            try:
                await self._gateway.tool_calls.refuse_too_large(
                    caller, oversized.tool, oversized.size, reason
                )
            except MCPError as exc:  # not recorded: the agent is told that instead
                reason = exc.error.message
        if (oversized.method or "").startswith("notifications/"):
            return b""  # nothing answers a notification
        return _error_line(oversized.request_id, types.INVALID_REQUEST, reason)

    async def _mcp_session(
        self,
        server: str,
        client: str,
        incoming: asyncio.StreamReader,
        outgoing: asyncio.StreamWriter,
        *,
        on_initialized: Callable[[], None],
        bridge: asyncio.StreamReader | None,
    ) -> None:
        lane = FastLane(self._gateway, outgoing)
        initialized = anyio.Event()
        handshake = _Handshake()

        def on_session(session: Session) -> None:  # the session's initialize succeeded
            if not session.modern_upstream:  # else each call is translated on the SDK route
                lane.attach(session)
            on_initialized()
            initialized.set()

        def on_modern() -> None:  # a 2026-07-28 request was answered: no handshake comes
            if not initialized.is_set():
                on_initialized()
                initialized.set()

        sdk_server = self._gateway.build_server(
            server=server, client=client, on_session=on_session, on_modern=on_modern
        )
        to_session, from_client = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_client, from_session = anyio.create_memory_object_stream[SessionMessage](64)

        era = _Era()  # the SDK's loop chooses it by the first request it is given

        async def probed(message: types.JSONRPCRequest) -> bytes:
            try:
                result = await self._gateway.discover(state, server, client, message.params)
            except MCPError as exc:
                return _error_line(message.id, exc.error.code, exc.error.message)
            on_modern()
            answer = {"jsonrpc": "2.0", "id": message.id, "result": result}
            return json.dumps(answer).encode() + b"\n"

        # the client's requests the SDK route is serving, by type and value: its
        # dispatcher reads a cancellation's id with int(), so "7" would cancel call 7
        sdk_calls: set[tuple[type, object]] = set()

        async def client_to_session() -> None:
            async with to_session:
                while line := await read_message(incoming):
                    if isinstance(line, Oversized):
                        outgoing.write(await self._too_large(line, lane, server, client))
                        await outgoing.drain()
                        continue
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
                        if not era.chosen and _probes_2026(message):
                            # answered here: in the SDK's loop it would choose 2026-07-28
                            # for good, and a client probing a server of the handshake
                            # era could not fall back to it
                            outgoing.write(await probed(message))
                            await outgoing.drain()
                            continue
                        era.chosen = True
                        sdk_calls.add(_id_key(message.id))
                        if message.method == "initialize" or (
                            not initialized.is_set() and _opens_2026(message.params)
                        ):
                            handshake.asked(message.id)  # its server may be slow to start
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
                # the client's first request says which era it speaks (2026-07-28: its
                # envelope; else the handshake), for the whole connection
                await serve_dual_era_loop(sdk_server, from_client, to_client, lifespan_state=state)
            finally:
                with anyio.CancelScope(shield=True):
                    await lane.aclose()  # before the session's task group goes
            tg.cancel_scope.cancel()


def _not_a_stream(fds: list[int]) -> str | None:
    """Why the client's stdin or stdout cannot carry a session (a regular file: asyncio's
    pipes take only pipes, sockets and terminals), or None."""
    for fd, name in zip(fds, ("stdin", "stdout"), strict=True):
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            return f"cannot use the client's {name}: {exc.strerror}"
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            return (
                f"lockgate connect speaks MCP over pipes, as an MCP client starts it; its "
                f"{name} is a file here (redirect it through a pipe: | cat > file)"
            )
    return None


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
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        code, message = types.PARSE_ERROR, f"Parse error: {first}"
    else:
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            code, message = types.PARSE_ERROR, "Parse error: a lone surrogate escape is not text"
    return _error_line(document.get("id") if isinstance(document, dict) else None, code, message)


def _error_line(request_id: object, code: int, message: str) -> bytes:
    """A JSON-RPC error line, with ``request_id`` if it is one an id may be."""
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        request_id = None
    error = {"code": code, "message": message}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode() + b"\n"


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
    error = {
        "code": types.INVALID_REQUEST,
        "message": "Invalid request: an id must be a string or an integer",
    }
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


class _Era:
    """Whether the connection's era is chosen (a request reached the SDK's loop)."""

    chosen = False


def _probes_2026(message: types.JSONRPCRequest) -> bool:
    """Whether a request is the 2026-07-28 era's probe, ``server/discover``."""
    return message.method == "server/discover" and _opens_2026(message.params)


def _opens_2026(params: object) -> bool:
    """Whether a request carries the 2026-07-28 envelope (it then opens the connection
    in that era, and stands for the handshake the era does not have)."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


class _Handshake:
    """The client's opening requests (an initialize, or a 2026 client's first requests)
    still waiting for their answers."""

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
