"""Talking to a running gateway over its local socket: the stdio bridge and control.

``lockgate connect SERVER`` is what an MCP client launches instead of the server itself.
It hands the client's stdin and stdout to the gateway (:func:`bridge_passing_pipes`), or,
where file descriptors cannot be passed, copies them to and from the gateway's socket
byte for byte, without looking inside (:func:`bridge_relaying`); it exits when the
session ends (the client closed its side, or the gateway went away).

On Windows the local door is a named pipe, and all of this goes over it the same way
(:func:`_connect` is the one place that differs: :mod:`proxy.bridge.winpipe`); there the
bridge always relays.

Every other command asks the gateway's control door (:mod:`proxy.doors.control`): one
request and its answer (:func:`control`), or a request answered in parts (:func:`watch`,
:func:`sign_in`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from proxy.config.paths import Paths
from proxy.config.runinfo import peer_is_us, read_run_info
from proxy.config.tokens import valid_client_name
from proxy.errors import LockgateError

if sys.platform == "win32":  # pragma: no cover (Windows)
    from proxy.bridge import winpipe

__all__ = [
    "ControlError",
    "GatewayNotRunning",
    "bridge_passing_pipes",
    "bridge_relaying",
    "control",
    "default_client_name",
    "end_sessions_of",
    "sign_in",
    "watch",
]

_CHUNK = 64 * 1024  # one read or write of the bridge (below malloc's mmap threshold)


class GatewayNotRunning(LockgateError):
    """No gateway is running for these folders."""

    title = "Lockgate is not running"

    def __init__(self, paths: Paths) -> None:
        super().__init__(f"no gateway for {paths.data_dir}; start the app or `lockgate serve`")


class ControlError(LockgateError):
    """The gateway refused a request; the message is its answer."""

    title = "The gateway refused"


class _Link(Protocol):
    """A connection to the gateway's local door, as the bridge uses it: a Unix socket, or
    on Windows the pipe's client end (:class:`proxy.bridge.winpipe.PipeStream`)."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def recv_into(self, buffer: bytearray, /) -> int: ...
    def sendall(self, data: bytes | memoryview, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...
    def makefile(self, mode: Literal["rwb"]) -> io.BufferedRWPair: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc_info: object) -> None: ...


def _connect(paths: Paths) -> _Link:
    """A connection to the running gateway's local door, after checking who serves it.

    Unix: the socket the run file names must be in a private folder of ours (0700), and
    the process serving it must run as us, where the system can say
    (:func:`~proxy.config.runinfo.peer_is_us`). Windows: the pipe the run file names must
    be the one named for this user and data folder, and the process serving it the
    gateway the run file names, running as us (:func:`proxy.bridge.winpipe.connect`).

    Raises:
        GatewayNotRunning: no gateway runs, or nothing listens where it says.
        ControlError: the socket (or pipe) is not one of ours.
    """
    info = read_run_info(paths)
    if info is None or not info.socket:
        raise GatewayNotRunning(paths)
    if sys.platform == "win32":  # pragma: no cover (Windows: tests/proxy/doors/test_winpipe.py)
        ours = winpipe.pipe_name_for(
            winpipe.current_user_sid(), os.path.realpath(paths.run_dir), "gateway.sock"
        )
        if not winpipe.named_pipe_is(info.socket, ours):
            raise ControlError(
                f"the run file names the pipe {info.socket}, not this user's; not connecting"
            )
        try:
            return winpipe.connect(ours, gateway_pid=info.pid)
        except FileNotFoundError:
            raise GatewayNotRunning(paths) from None
        except winpipe.PipeRefused as exc:
            raise ControlError(exc.strerror or str(exc)) from None
        except OSError as exc:
            raise ControlError(f"cannot open the gateway's pipe ({exc}); try again") from None
    else:
        path = Path(info.socket)
        try:
            folder = path.parent.lstat()
        except OSError:
            raise GatewayNotRunning(paths) from None
        if folder.st_uid != os.getuid() or folder.st_mode & 0o077:
            raise ControlError(f"{path.parent} is not a private folder of yours; not connecting")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.connect(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise GatewayNotRunning(paths) from None
            if not peer_is_us(sock):
                raise ControlError("the socket is served by another user; not connecting")
        except BaseException:
            sock.close()
            raise
        return sock


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
def _connected(paths: Paths, hello: dict[str, Any]) -> Iterator[tuple[_Link, io.BufferedRWPair]]:
    sock = _connect(paths)
    try:
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


def _open_session(
    paths: Paths, server: str, client: str, *, pass_pipes: bool
) -> tuple[_Link, bytes]:
    """A connection to the gateway's MCP session for ``server``, its hello said and
    accepted; and what the gateway sent after its answer (the session's first bytes).

    Both ways of bridging open it here, so both check the same: the socket's folder is
    ours and private, the process serving it runs as us, the gateway says yes. With
    ``pass_pipes`` the hello carries this process's stdin and stdout (``SCM_RIGHTS``).

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the gateway refused (unknown server, bad client name), or the
            socket is not one of ours.
    """
    sock = _connect(paths)
    try:
        hello = {"lockgate": 1, "mode": "connect", "server": server, "client": client}
        line = json.dumps(hello).encode() + b"\n"
        try:
            if pass_pipes:
                _send_with_pipes(sock, line)
            else:
                sock.sendall(line)
            answer, rest = _answer(sock)
        except OSError as exc:
            raise ControlError(f"the connection to the gateway failed ({exc}); try again") from None
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error", "the gateway closed the connection")))
    except BaseException:
        sock.close()
        raise
    return sock, rest


def _send_with_pipes(sock: _Link, line: bytes) -> None:
    """``line``, and with it this process's stdin and stdout (``SCM_RIGHTS``)."""
    if sys.platform != "win32":  # pragma: no branch
        assert isinstance(sock, socket.socket)  # a Unix socket: _connect made it
        socket.send_fds(sock, [line], [0, 1])
    else:  # pragma: no cover (connect.run never asks for it there)
        raise ControlError("Windows cannot pass file descriptors; relay instead")


def _answer(sock: _Link) -> tuple[dict[str, Any], bytes]:
    """The gateway's answer to the hello, and whatever came after it in the same reads
    (not through a buffered file: the relay must hand every byte on)."""
    data = b""
    while b"\n" not in data and len(data) < _CHUNK:
        chunk = sock.recv(_CHUNK)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    try:
        answer = json.loads(line or b"{}")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ControlError("the gateway's answer made no sense")
    return answer, rest


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
    sock, _rest = _open_session(paths, server, client, pass_pipes=True)
    with sock:
        # Let go of our own copies, so the client sees the gateway close its stdout.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        with contextlib.suppress(OSError):  # a reset is the session's end too
            while sock.recv(_CHUNK):  # nothing comes; this returns when the session ends
                pass
    return 0


def bridge_relaying(paths: Paths, server: str, client: str) -> int:
    """Copy stdin to the gateway's session for ``server`` and the session to stdout, byte
    for byte, until either side ends; the exit code. The way for systems that cannot
    pass file descriptors, and what ``LOCKGATE_BRIDGE=relay`` asks for.

    To the client it is the same session as with the pipes passed: the gateway reads
    the lines and finds their ends (a message over its limit is refused, however long),
    the client closing stdin ends the session, and the gateway ending it closes stdout,
    after every byte it sent before is written. A client that closes stdout ends the
    session, as the gateway's write would. Each direction is one blocking copy (a
    thread for stdin): nothing is held beyond the chunk being written, so a client
    that reads slowly slows the gateway's writes, as its own pipe would.

    Raises:
        GatewayNotRunning: no gateway is running.
        ControlError: the gateway refused (unknown server, bad client name).
    """
    sock, first = _open_session(paths, server, client, pass_pipes=False)
    with sock:
        upward = threading.Thread(
            target=_client_to_gateway, args=(sock,), name="lockgate-relay-stdin", daemon=True
        )
        upward.start()
        _gateway_to_client(sock, first)
        # The client closed stdout, or the session is over: either way the gateway ends
        # it now; the thread on stdin is left to the process's exit.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return 0


def _client_to_gateway(sock: _Link) -> None:
    """Copy stdin to the session until the client closes it (or it breaks, or the
    gateway has gone); then say so, and the gateway ends the session."""
    with contextlib.suppress(OSError):
        while chunk := _read_some(0):
            sock.sendall(chunk)
    with contextlib.suppress(OSError):  # fails only when the gateway has gone already
        sock.shutdown(socket.SHUT_WR)


def _gateway_to_client(sock: _Link, first: bytes) -> None:
    """Copy the session to stdout until the gateway ends it (its end, or a reset: it went
    with our last bytes unread) or stdout cannot be written (the client closed it)."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        _write_all(1, first)
        while received := sock.recv_into(buffer):
            _write_all(1, view[:received])
    except OSError:
        return


def _read_some(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, _CHUNK)
        except BlockingIOError:  # the client's pipe is non-blocking: wait for bytes
            select.select([fd], [], [])


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # the client's pipe is non-blocking: wait for room
            select.select([], [fd], [])
