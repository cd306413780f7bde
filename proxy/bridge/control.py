"""Talking to a running gateway over its local socket: the stdio bridge and control.

``lockgate connect SERVER`` is what an MCP client launches instead of the server itself.
It pumps the client's stdin and stdout to the gateway's socket, line for line, without
looking inside, and exits when the client closes its side (or the gateway goes away).

Every other command asks the gateway's control door (:mod:`proxy.doors.control`): one
request and its answer (:func:`control`), or a request answered in parts (:func:`watch`,
:func:`sign_in`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from proxy.config.paths import Paths
from proxy.config.runinfo import LINE_LIMIT, peer_uid, read_run_info
from proxy.config.tokens import valid_client_name
from proxy.errors import LockgateError

__all__ = [
    "ControlError",
    "GatewayNotRunning",
    "bridge",
    "bridge_passing_pipes",
    "control",
    "default_client_name",
    "end_sessions_of",
    "sign_in",
    "watch",
]


class GatewayNotRunning(LockgateError):
    """No gateway is running for these folders."""

    title = "Lockgate is not running"

    def __init__(self, paths: Paths) -> None:
        super().__init__(f"no gateway for {paths.data_dir}; start the app or `lockgate serve`")


class ControlError(LockgateError):
    """The gateway refused a request; the message is its answer."""

    title = "The gateway refused"


def _socket_path(paths: Paths) -> Path:
    """The running gateway's socket, after checking that its folder is ours and private.

    Raises:
        GatewayNotRunning: no gateway runs, or the socket is not where ours would be.
    """
    info = read_run_info(paths)
    if info is None or not info.socket:
        raise GatewayNotRunning(paths)
    path = Path(info.socket)
    try:
        folder = path.parent.lstat()
    except OSError:
        raise GatewayNotRunning(paths) from None
    if folder.st_uid != os.getuid() or folder.st_mode & 0o077:
        raise ControlError(f"{path.parent} is not a private folder of yours; not connecting")
    return path


def _check_peer(sock: socket.socket) -> None:
    """The process at the other end must run as us (Linux; elsewhere the folder check).

    Raises:
        ControlError: it does not.
    """
    uid = peer_uid(sock)
    if uid is not None and uid != os.getuid():
        raise ControlError("the socket is served by another user; not connecting")


def default_client_name() -> str:
    """Who launched us, as a client name: the parent process's name (``claude``,
    ``cursor``, ``code``...), else ``local``."""
    try:
        comm = Path(f"/proc/{os.getppid()}/comm").read_text().strip()
    except OSError:
        return "local"
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", comm).strip("-.") or "local"
    return name if valid_client_name(name) else "local"


@contextlib.contextmanager
def _connected(paths: Paths, hello: dict[str, Any]) -> Iterator[tuple[socket.socket, Any]]:
    path = _socket_path(paths)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise GatewayNotRunning(paths) from None
        _check_peer(sock)
        stream = sock.makefile("rwb")
        stream.write(json.dumps(hello).encode() + b"\n")
        stream.flush()
        answer = json.loads(stream.readline() or b"{}")
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "the gateway closed the connection"))
        yield sock, stream
    finally:
        sock.close()


def end_sessions_of(paths: Paths, client: str) -> int:
    """End ``client``'s HTTP sessions in the running gateway (its token was revoked);
    how many there were, 0 if no gateway runs.

    Raises:
        ControlError: the gateway refused.
    """
    try:
        return int(control(paths, "end-sessions", client=client).get("ended", 0))
    except GatewayNotRunning:
        return 0


def control(paths: Paths, op: str, **fields: Any) -> dict[str, Any]:
    """Send one control request and return the gateway's answer.

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the gateway refused the request.
    """
    with _connected(paths, {"lockgate": 1, "mode": "control"}) as (_sock, stream):
        try:
            stream.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            stream.flush()
            answer: dict[str, Any] = json.loads(stream.readline() or b"{}")
        except (OSError, ValueError) as exc:
            raise ControlError(
                f"the gateway closed the connection before it answered ({exc}); try again"
            ) from None
    if not isinstance(answer, dict):
        raise ControlError("the gateway's answer made no sense")
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "no answer"))
    return answer


def sign_in(paths: Paths, server: str, on_open: Callable[[str], None]) -> dict[str, Any]:
    """Have the running gateway sign in to the remote ``server``: ``on_open`` is given the
    authorization page's address as soon as the gateway has it (for the person's
    browser); returns the gateway's last answer (``signed_in``, ``expires_at``) once the
    person has signed in. Closing the connection (Ctrl-C: a KeyboardInterrupt here)
    cancels the sign-in in the gateway.

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the sign-in did not work, or the gateway refused it (its words).
    """
    with _connected(paths, {"lockgate": 1, "mode": "control"}) as (_sock, stream):
        stream.write(json.dumps({"op": "auth-login", "server": server}).encode() + b"\n")
        stream.flush()
        while True:
            try:
                answer = json.loads(stream.readline() or b"null")
            except (OSError, ValueError) as exc:
                raise ControlError(
                    f"the gateway closed the connection during the sign-in ({exc}); try again"
                ) from None
            if not isinstance(answer, dict):
                raise ControlError(
                    "the gateway closed the connection before the sign-in was over; try again"
                )
            if not answer.get("ok"):
                raise ControlError(answer.get("error", "no answer"))
            if "open" not in answer:
                return answer
            on_open(str(answer["open"]))


def watch(paths: Paths) -> Iterator[dict[str, Any]]:
    """Attach as an approver and yield approval events until the gateway stops.

    The first item is ``{"ok": true, "pending": [...]}``: what is already waiting.

    Raises:
        GatewayNotRunning: no gateway is running.
    """
    with _connected(paths, {"lockgate": 1, "mode": "control"}) as (_sock, stream):
        stream.write(b'{"op": "watch"}\n')
        stream.flush()
        for line in stream:
            yield json.loads(line)


def bridge_passing_pipes(paths: Paths, server: str, client: str) -> int:
    """Hand this process's stdin and stdout to the gateway, then wait; the exit code.

    The gateway reads the client's requests from, and writes its answers to, the very
    pipes the client opened, so the bridge adds no hop; it stays alive only because the
    client launched it and watches it. It exits when the gateway ends the session (the
    client closed its side, or the gateway stopped).

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the gateway refused (unknown server, bad client name).
    """
    path = _socket_path(paths)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise GatewayNotRunning(paths) from None
        _check_peer(sock)
        hello = {"lockgate": 1, "mode": "connect", "server": server, "client": client}
        socket.send_fds(sock, [json.dumps(hello).encode() + b"\n"], [0, 1])
        stream = sock.makefile("rb")
        answer = json.loads(stream.readline() or b"{}")
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "the gateway closed the connection"))
        # Let go of our own copies, so the client sees the gateway close its stdout.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        while stream.read(65536):  # nothing comes; this returns when the session ends
            pass
    return 0


async def bridge(paths: Paths, server: str, client: str) -> int:
    """Pump stdin/stdout to the gateway's MCP session for ``server``, line by line: the way
    for systems that cannot pass file descriptors; the exit code.

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the gateway refused (unknown server, bad client name).
    """
    path = _socket_path(paths)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=LINE_LIMIT)
    except (FileNotFoundError, ConnectionRefusedError):
        raise GatewayNotRunning(paths) from None
    hello = {"lockgate": 1, "mode": "connect", "server": server, "client": client}
    writer.write(json.dumps(hello).encode() + b"\n")
    await writer.drain()
    answer = json.loads(await reader.readline() or b"{}")
    if not answer.get("ok"):
        writer.close()
        raise ControlError(answer.get("error", "the gateway closed the connection"))

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    out_transport, out_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    stdout = asyncio.StreamWriter(out_transport, out_protocol, None, loop)

    async def client_to_gateway() -> None:
        while line := await stdin.readline():
            writer.write(line)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # the client closed: the gateway ends the session

    async def gateway_to_client() -> None:
        while line := await reader.readline():
            stdout.write(line)
            await stdout.drain()

    upward = asyncio.create_task(client_to_gateway())
    try:
        await gateway_to_client()  # ends when the gateway closes the session
    finally:
        upward.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await upward
        writer.close()
    return 0
