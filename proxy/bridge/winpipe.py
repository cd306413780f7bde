"""The local door on Windows, the client's end: the gateway's named pipe as a blocking byte
stream, and what both ends of the pipe share.

CPython on Windows has neither Unix sockets nor descriptor passing, so there the gateway
listens on a named pipe (:mod:`proxy.doors.winpipe`) and ``lockgate connect`` always
relays. What the Unix door checks with a private folder and the peer's uid, the pipe
checks with its access list (this user only) and with the user of the process at the
other end, on both ends: the gateway asks who the client is
(``GetNamedPipeClientProcessId``, then that process's token), and the client asks who the
server is (``GetNamedPipeServerProcessId``): the gateway's own process, as the run file
names it, running as this user. packaging/README.md says which Microsoft documents this
follows and what could not be tried on Windows.

Kept light like the rest of :mod:`proxy.bridge` (``lockgate connect`` starts for every
server): the standard library's ``_winapi`` and ``ctypes``, nothing else. The decisions
(the pipe's name, whether the other end is ours) are pure functions, tested everywhere;
everything that calls Windows is behind ``sys.platform == "win32"``.
"""

from __future__ import annotations

import hashlib
import ntpath
import sys

from proxy.errors import LockgateError

__all__ = [
    "CONNECT_SECONDS",
    "PIPE_PREFIX",
    "PipeRefused",
    "named_pipe_is",
    "pipe_name_for",
    "same_user",
    "server_identity_problem",
]

PIPE_PREFIX = "\\\\.\\pipe\\"  # \\.\pipe\: this machine's pipes, never another's
CONNECT_SECONDS = 10.0  # how long a client waits for a free instance of a busy pipe


class PipeRefused(LockgateError, OSError):
    """The pipe is not one to talk to (its server is not ours, or it stayed busy); the
    message says why, in words for a person. An ``OSError`` too: a connection that
    failed, for what catches those."""

    title = "Lockgate's pipe cannot be used"


def pipe_name_for(user_sid: str, folder: str, name: str = "gateway.sock") -> str:
    """The pipe the gateway of ``user_sid`` listens on for the run folder ``folder`` (its
    real path: both ends resolve it the same way), for what ``name`` is for
    (``gateway.sock``: the local door).

    Both ends derive it, so the client does not take a pipe's name from a file: one per
    user and data folder, as the Unix socket is. The user and the folder are hashed, not
    spelled out: any process may list the pipes' names. Windows paths and SIDs are
    compared without case, and so are they here.
    """
    stem = name.removesuffix(".sock")
    key = "\n".join((user_sid.upper(), ntpath.normcase(folder), stem.lower()))
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"{PIPE_PREFIX}lockgate-{stem}-{digest}"


def named_pipe_is(named: str, expected: str) -> bool:
    """Whether the pipe a run file names is the one this user's gateway listens on (pipe
    names do not differ by case)."""
    return named.casefold() == expected.casefold()


def same_user(peer_sid: str | None, our_sid: str) -> bool:
    """Whether the process at the other end runs as us; a peer whose user could not be
    read is not (fail closed: the access list let it in, but nothing says who it is)."""
    return peer_sid is not None and peer_sid.upper() == our_sid.upper()


def server_identity_problem(
    *, server_pid: int | None, server_sid: str | None, gateway_pid: int, our_sid: str
) -> str | None:
    """Why the process serving the pipe is not the gateway to talk to, or None if it is.

    It must be the process the run file names (the gateway made the pipe itself) and run
    as this user. Either one alone could be had by someone else: a process of another user
    that took the pipe's name first, or a process of ours that is not the gateway.
    """
    if server_pid is None or server_sid is None:
        return "cannot tell which process serves the pipe; not connecting"
    if not same_user(server_sid, our_sid):
        return "the pipe is served by another user; not connecting"
    if server_pid != gateway_pid:
        return (
            f"the pipe is served by process {server_pid}, not by the gateway "
            f"(process {gateway_pid}); not connecting"
        )
    return None


if sys.platform == "win32":  # pragma: no cover (Windows: tests/proxy/doors/test_winpipe.py there)
    import _winapi
    import contextlib
    import ctypes
    import errno
    import functools
    import io
    import threading
    import time
    from collections.abc import Callable
    from ctypes import wintypes
    from typing import Any, Literal

    __all__ += ["PipeStream", "connect", "current_user_sid", "process_user_sid", "win_function"]

    # winbase.h: the impersonation level a client grants the server it opens (CreateFile)
    SECURITY_SQOS_PRESENT = 0x00100000
    SECURITY_IDENTIFICATION = 0x00010000  # SecurityIdentification << 16
    PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    TOKEN_QUERY = 0x0008
    TOKEN_USER = 1  # TOKEN_INFORMATION_CLASS: TokenUser
    _SHUT_WR, _SHUT_RDWR = 1, 2  # socket.SHUT_WR, socket.SHUT_RDWR
    # a read that ends so: the server closed its end (ERROR_BROKEN_PIPE), or disconnected
    # it (ERROR_PIPE_NOT_CONNECTED); either is the end of what it sends
    _ENDED = (_winapi.ERROR_BROKEN_PIPE, 233)

    def win_function(dll: ctypes.WinDLL, name: str, restype: Any, *argtypes: Any) -> Any:
        """``dll.name`` with its C signature declared (a handle is 64 bits: the default
        ``int`` result would cut it)."""
        function = getattr(dll, name)
        function.restype = restype
        function.argtypes = argtypes
        return function

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _OpenProcess = win_function(
        _kernel32, "OpenProcess", wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL, wintypes.DWORD
    )
    _GetCurrentProcess = win_function(_kernel32, "GetCurrentProcess", wintypes.HANDLE)
    _CloseHandle = win_function(_kernel32, "CloseHandle", wintypes.BOOL, wintypes.HANDLE)
    _LocalFree = win_function(_kernel32, "LocalFree", ctypes.c_void_p, ctypes.c_void_p)
    _GetNamedPipeServerProcessId = win_function(
        _kernel32,
        "GetNamedPipeServerProcessId",
        wintypes.BOOL,
        wintypes.HANDLE,
        ctypes.POINTER(wintypes.ULONG),
    )
    _OpenProcessToken = win_function(
        _advapi32,
        "OpenProcessToken",
        wintypes.BOOL,
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.HANDLE),
    )
    _GetTokenInformation = win_function(
        _advapi32,
        "GetTokenInformation",
        wintypes.BOOL,
        wintypes.HANDLE,
        ctypes.c_int,
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
    )
    _ConvertSidToStringSidW = win_function(
        _advapi32,
        "ConvertSidToStringSidW",
        wintypes.BOOL,
        ctypes.c_void_p,
        ctypes.POINTER(wintypes.LPWSTR),
    )

    def _token_user_sid(process: int) -> str | None:
        """The user SID (``S-1-5-21-...``) of ``process``'s token, or None if it cannot
        be read (the caller decides what that means: never "the same user")."""
        token = wintypes.HANDLE()
        if not _OpenProcessToken(process, TOKEN_QUERY, ctypes.byref(token)):
            return None
        try:
            size = wintypes.DWORD()
            _GetTokenInformation(token, TOKEN_USER, None, 0, ctypes.byref(size))
            if not size.value:
                return None
            buffer = ctypes.create_string_buffer(size.value)
            if not _GetTokenInformation(token, TOKEN_USER, buffer, size, ctypes.byref(size)):
                return None
            # TOKEN_USER is a SID_AND_ATTRIBUTES whose first field is the SID's address
            sid = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_void_p)).contents.value
            text = wintypes.LPWSTR()
            if not sid or not _ConvertSidToStringSidW(sid, ctypes.byref(text)):
                return None
            try:
                return str(text.value) if text.value else None
            finally:
                _LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            _CloseHandle(token)

    @functools.cache
    def current_user_sid() -> str:
        """The SID of the user this process runs as.

        Raises:
            OSError: this process's own token cannot be read.
        """
        sid = _token_user_sid(_GetCurrentProcess())  # a pseudo handle: nothing to close
        if sid is None:
            raise ctypes.WinError(ctypes.get_last_error())
        return sid

    def process_user_sid(pid: int) -> str | None:
        """The SID of the user process ``pid`` runs as, or None if it cannot be told (gone,
        or not open to us: a process of another user, an elevated one)."""
        process = _OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not process:
            return None
        try:
            return _token_user_sid(process)
        finally:
            _CloseHandle(process)

    def _server_pid(handle: int) -> int | None:
        pid = wintypes.ULONG()
        if not _GetNamedPipeServerProcessId(handle, ctypes.byref(pid)):
            return None
        return int(pid.value)

    def connect(name: str, *, gateway_pid: int, timeout: float = CONNECT_SECONDS) -> PipeStream:
        """Open the client end of the pipe ``name`` and check who serves it.

        The handle grants the server only ``SecurityIdentification`` (it may ask who we
        are, not act as us), and is opened for overlapped I/O (see :class:`PipeStream`).
        A busy pipe (every instance taken) is waited for, up to ``timeout``.

        Raises:
            FileNotFoundError: no such pipe: no gateway listens.
            PipeRefused: the pipe stayed busy, is not open to this user, or is served by
                a process other than the gateway ``gateway_pid`` running as us.
            OSError: the pipe could not be opened for another reason.
        """
        our_sid = current_user_sid()
        deadline = time.monotonic() + timeout
        while True:
            try:
                handle = _winapi.CreateFile(
                    name,
                    _winapi.GENERIC_READ | _winapi.GENERIC_WRITE,
                    0,
                    _winapi.NULL,
                    _winapi.OPEN_EXISTING,
                    _winapi.FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                    _winapi.NULL,
                )
                break
            except PermissionError:
                raise PipeRefused(
                    errno.EACCES, "the pipe is not open to this user; not connecting"
                ) from None
            except OSError as exc:
                if exc.winerror != _winapi.ERROR_PIPE_BUSY:
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise PipeRefused(errno.EBUSY, "the gateway's pipe stayed busy; try again")
            with contextlib.suppress(OSError):  # timed out, or gone: CreateFile says which
                _winapi.WaitNamedPipe(name, max(1, int(left * 1000)))
        stream = PipeStream(handle)
        try:
            server_pid = _server_pid(handle)
            problem = server_identity_problem(
                server_pid=server_pid,
                server_sid=None if server_pid is None else process_user_sid(server_pid),
                gateway_pid=gateway_pid,
                our_sid=our_sid,
            )
            if problem is not None:
                raise PipeRefused(errno.EPERM, problem)
        except BaseException:
            stream.close()
            raise
        return stream

    class PipeStream:
        """The client end of one connection to the gateway's pipe, used as the bridge
        uses a connected socket: ``recv``, ``recv_into``, ``sendall``, ``shutdown``,
        ``close``, ``makefile("rwb")``.

        The handle is overlapped and each call waits for its own operation: the relay
        reads on one thread while another writes, which a handle opened for synchronous
        I/O would serialise (a read waiting for the gateway would hold up every write).

        A pipe has no half close; the gateway's pipe is a message pipe, and
        ``shutdown(SHUT_WR)`` writes the one empty message, which the gateway reads as
        the end of what the client sends (asyncio hands its stream an end of file, its
        writing side still open), just as a socket's half close. Every other write is
        of at least one byte, so only that one is empty.

        Closing while another thread waits on an operation cancels it; the handle itself
        is closed when no operation uses it any more, so no thread ever uses a handle
        value that Windows could have given to something else.
        """

        def __init__(self, handle: int) -> None:
            self._handle = handle
            self._lock = threading.Lock()
            self._pending: list[_winapi.Overlapped] = []
            self._closed = False
            self._ended_writing = False

        def _transfer(
            self, start: Callable[[int], tuple[_winapi.Overlapped, int]]
        ) -> tuple[_winapi.Overlapped, int]:
            """Start one overlapped operation and wait for it; it, and the bytes it moved."""
            with self._lock:  # started under the lock: close() cannot come in between
                if self._closed:
                    raise OSError(errno.EBADF, "the connection to the gateway is closed")
                operation, error = start(self._handle)
                self._pending.append(operation)
            try:
                if error == _winapi.ERROR_IO_PENDING:
                    try:
                        _winapi.WaitForMultipleObjects([operation.event], False, _winapi.INFINITE)
                    except BaseException:  # Ctrl-C: cancel, and let the cancel land
                        operation.cancel()
                        with contextlib.suppress(OSError):
                            operation.GetOverlappedResult(True)
                        raise
                moved, _error = operation.GetOverlappedResult(True)
                return operation, moved
            finally:
                self._finished(operation)

        def _finished(self, operation: _winapi.Overlapped) -> None:
            with self._lock:
                self._pending.remove(operation)
                if self._closed and not self._pending:  # the last one out closes
                    self._release()

        def recv_into(self, buffer: bytearray | memoryview, /) -> int:
            """Read what is there (at most ``len(buffer)`` bytes); 0 at the end (the
            gateway closed its end, or went)."""
            size = len(buffer)
            if not size:
                return 0
            try:
                operation, _moved = self._transfer(
                    lambda h: _winapi.ReadFile(h, size, overlapped=True)
                )
            except OSError as exc:
                if exc.winerror in _ENDED:
                    return 0
                raise
            data = operation.getbuffer() or b""
            buffer[: len(data)] = data
            return len(data)

        def recv(self, bufsize: int, /) -> bytes:
            buffer = bytearray(bufsize)
            return bytes(buffer[: self.recv_into(buffer)])

        def sendall(self, data: bytes | bytearray | memoryview, /) -> None:
            """Write every byte (a blocking pipe's write completes when all of it is in
            the pipe). Nothing to write writes nothing, as on a socket."""
            view = memoryview(data).cast("B")
            while view:
                moved = self._write(view)
                if not moved:  # only a cancelled write moves nothing
                    raise OSError(errno.EPIPE, "the write to the gateway was cancelled")
                view = view[moved:]

        def _write(self, data: bytes | memoryview) -> int:
            _operation, moved = self._transfer(
                lambda h: _winapi.WriteFile(h, data, overlapped=True)
            )
            return moved

        def shutdown(self, how: int, /) -> None:
            """``SHUT_WR`` (and ``SHUT_RDWR``): the empty message that ends what the
            client sends. A pipe cannot stop reading without closing: close() does."""
            if how not in (_SHUT_WR, _SHUT_RDWR):
                return
            with self._lock:
                if self._ended_writing:
                    return
                self._ended_writing = True
            self._write(b"")

        def close(self) -> None:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                for operation in self._pending:
                    with contextlib.suppress(OSError):
                        operation.cancel()
                if not self._pending:
                    self._release()

        def _release(self) -> None:
            with contextlib.suppress(OSError):
                _winapi.CloseHandle(self._handle)

        def makefile(self, mode: Literal["rwb"]) -> io.BufferedRWPair:
            """A buffered reader and writer over the connection, as a socket's."""
            raw = _PipeIO(self)
            return io.BufferedRWPair(raw, raw)

        def __enter__(self) -> PipeStream:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.close()

    class _PipeIO(io.RawIOBase):
        """What ``makefile`` buffers: reads and writes go to the stream (closing it
        leaves the stream open, as a socket's file does)."""

        def __init__(self, stream: PipeStream) -> None:
            super().__init__()
            self._stream = stream

        def readable(self) -> bool:
            return True

        def writable(self) -> bool:
            return True

        def readinto(self, buffer: Any, /) -> int:
            return self._stream.recv_into(memoryview(buffer).cast("B"))

        def write(self, data: Any, /) -> int:
            view = memoryview(data).cast("B")
            self._stream.sendall(view)
            return view.nbytes
