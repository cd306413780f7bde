"""The local door on Windows: a named pipe only this user can open, served on the gateway's
asyncio loop with the same streams as the Unix socket.

CPython on Windows has no Unix sockets and cannot pass descriptors, so there the local door
(:mod:`proxy.doors.local`) listens on a named pipe instead, and ``lockgate connect``
relays bytes (:mod:`proxy.bridge.winpipe` is the client's end). Each client connection
becomes a :class:`Accepted`: a ``StreamReader`` and ``StreamWriter`` and its first line,
which :meth:`proxy.doors.local.LocalServer.take` serves exactly as a Unix connection (the
hello, the budgets, the connect and control doors are that module's, shared).

How the pipe keeps others out (packaging/README.md cites the Microsoft documents):

- its security descriptor's DACL grants this user's SID, and nobody else
  (:func:`pipe_sddl`): without one, Windows gives a pipe a default that lets Everyone and
  the anonymous account read it;
- the first instance is made with ``FILE_FLAG_FIRST_PIPE_INSTANCE``: if anyone made a pipe
  of that name first, the gateway does not start, rather than serve on a pipe someone else
  controls (:class:`PipeNameTaken`);
- ``PIPE_REJECT_REMOTE_CLIENTS``: only processes on this machine;
- each client's process must run as this user (``GetNamedPipeClientProcessId``, then its
  token's user), as the Unix door asks for the peer's uid; and the client, for its part,
  checks the server's process the same way.

It is a message pipe read as messages, so that a client can end what it sends with an
empty message and still read the answers (a pipe has no half close; see
:class:`proxy.bridge.winpipe.PipeStream`): asyncio reads an empty message as the end of
the stream, as it reads a socket's half close.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import LockgateError

__all__ = [
    "HELLO_LIMIT",
    "Accepted",
    "HelloFirst",
    "Listener",
    "PipeNameTaken",
    "pipe_sddl",
]

HELLO_LIMIT = 65536  # a hello longer than this is not one (the Unix door reads as much)
_SID = re.compile(r"S-1-\d+(-\d+)+", re.IGNORECASE)


class PipeNameTaken(LockgateError, OSError):
    """Another process made the gateway's pipe before the gateway did (an ``OSError``
    too: the door could not open)."""

    title = "Lockgate's pipe name is taken"


def pipe_sddl(user_sid: str) -> str:
    """The pipe's security descriptor, in SDDL: a protected DACL (``P``: nothing
    inherited) with one ACE, full access for ``user_sid``.

    Full access, because the same user is both ends: the gateway needs
    ``FILE_CREATE_PIPE_INSTANCE`` for each further instance, a client read and write.
    Nothing for SYSTEM or Administrators: the client check refuses their processes
    anyway (as the Unix door refuses root's), and they do not need an ACE to get in
    (they can take ownership). No owner is set: the default one (this user, or the
    Administrators group for an elevated process) gains nothing it had not.

    Raises:
        ValueError: ``user_sid`` is not a SID (it goes into the descriptor's text).
    """
    if not _SID.fullmatch(user_sid):
        raise ValueError(f"not a SID: {user_sid!r}")
    return f"D:P(A;;GA;;;{user_sid.upper()})"


class HelloFirst(asyncio.StreamReaderProtocol):
    """A stream protocol that sets the connection's first line apart, as the Unix door
    reads its hello by hand: :attr:`hello` is that line (without its newline), or what
    came before the end or before :data:`HELLO_LIMIT` bytes; the stream reader gets
    every byte after it.

    Until the hello is complete nothing reaches the reader, whose limit is for messages
    (16 MB), so a connection still saying hello holds at most a read more than 64 KiB.
    """

    def __init__(self, reader: asyncio.StreamReader, hello_limit: int = HELLO_LIMIT) -> None:
        super().__init__(reader)
        self.hello: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._hello_limit = hello_limit

    def data_received(self, data: bytes) -> None:
        if self.hello.done():  # said (or given up on: its waiter was cancelled)
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\n")
        if end < 0 and len(self._head) <= self._hello_limit:
            return
        head = bytes(self._head)
        self._head.clear()
        if end < 0:  # too long to be a hello: what there is, refused as a bad one
            self.hello.set_result(head)
            return
        self.hello.set_result(head[:end])
        if rest := head[end + 1 :]:
            super().data_received(rest)

    def _said(self) -> None:
        """The connection ended before the line did: the hello is what came."""
        if not self.hello.done():
            self.hello.set_result(bytes(self._head))
            self._head.clear()

    def eof_received(self) -> bool | None:
        self._said()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._said()
        super().connection_lost(exc)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One client of the local door as streams: what :mod:`proxy.doors.local` serves."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hello: asyncio.Future[bytes]  # the first line (HelloFirst)
    same_user: bool  # the client's process runs as the user running the gateway


class Listener(Protocol):
    """The local door's pipe while it listens (Windows: :func:`listen`)."""

    async def accept(self) -> Accepted:
        """The next client, connected. Raises OSError when none can be taken now."""
        ...

    def close(self) -> None:
        """Stop listening; connections already accepted go on."""
        ...


if sys.platform == "win32":  # pragma: no cover (Windows: tests/proxy/doors/test_winpipe.py there)
    import _winapi
    import contextlib
    import ctypes
    from asyncio import windows_utils
    from ctypes import wintypes
    from typing import Any

    from proxy.bridge.winpipe import current_user_sid, process_user_sid, same_user, win_function

    __all__ += ["listen"]

    PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
    SDDL_REVISION_1 = 1
    _BUFFER = 64 * 1024  # each instance's buffers, each way (advisory)

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _LocalFree = win_function(_kernel32, "LocalFree", ctypes.c_void_p, ctypes.c_void_p)
    _GetNamedPipeClientProcessId = win_function(
        _kernel32,
        "GetNamedPipeClientProcessId",
        wintypes.BOOL,
        wintypes.HANDLE,
        ctypes.POINTER(wintypes.ULONG),
    )
    _ConvertStringSecurityDescriptorToSecurityDescriptorW = win_function(
        _advapi32,
        "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        wintypes.BOOL,
        wintypes.LPCWSTR,
        wintypes.DWORD,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(wintypes.ULONG),
    )

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = (
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", ctypes.c_void_p),
            ("bInheritHandle", wintypes.BOOL),
        )

    class _Security:
        """The SECURITY_ATTRIBUTES every instance is made with: the descriptor of
        :func:`pipe_sddl`, and handles no child process inherits."""

        def __init__(self, sddl: str) -> None:
            descriptor = ctypes.c_void_p()
            if not _ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, SDDL_REVISION_1, ctypes.byref(descriptor), None
            ):
                raise ctypes.WinError(ctypes.get_last_error())
            self._descriptor: ctypes.c_void_p | None = descriptor
            self._attributes = _SecurityAttributes(
                ctypes.sizeof(_SecurityAttributes), descriptor, False
            )

        @property
        def address(self) -> int:
            if self._descriptor is None:
                raise OSError("the pipe's listener is closed")
            return ctypes.addressof(self._attributes)

        def free(self) -> None:
            descriptor, self._descriptor = self._descriptor, None
            if descriptor is not None:
                _LocalFree(descriptor)

    def _client_pid(handle: int) -> int | None:
        pid = wintypes.ULONG()
        if not _GetNamedPipeClientProcessId(handle, ctypes.byref(pid)):
            return None
        return int(pid.value)

    def listen(name: str, *, limit: int) -> Listener:
        """Listen on the pipe ``name`` on the running loop (asyncio's Proactor loop, the
        default on Windows); each accepted client's stream reader has ``limit``.

        Raises:
            PipeNameTaken: a pipe of that name exists already (someone else's, or
                another gateway's).
            OSError: the loop cannot serve pipes, or the pipe cannot be made.
        """
        return _PipeListener(name, limit)

    class _PipeListener:
        """One instance of the pipe waits for a client at any time; the next one is
        made the moment a client takes it, so the name never goes away while the
        gateway runs (asyncio's own pipe server works so too; it makes its instances
        without a security descriptor, which is why this one exists)."""

        def __init__(self, name: str, limit: int) -> None:
            loop = asyncio.get_running_loop()
            # asyncio's own pipe server uses these two: the loop's IOCP proactor (its
            # ConnectNamedPipe) and its pipe transport
            self._proactor: Any = getattr(loop, "_proactor", None)
            self._make_transport: Any = getattr(loop, "_make_duplex_pipe_transport", None)
            if self._proactor is None or self._make_transport is None:
                raise OSError(
                    "Lockgate's local door needs asyncio's Proactor event loop on Windows "
                    "(the default one)"
                )
            self._loop = loop
            self._name = name
            self._limit = limit
            self._our_sid = current_user_sid()
            self._security = _Security(pipe_sddl(self._our_sid))
            self._waiting: windows_utils.PipeHandle | None = None
            self._connecting: asyncio.Future[Any] | None = None
            try:
                self._waiting = self._instance(first=True)
            except BaseException:
                self._security.free()
                raise

        def _instance(self, *, first: bool) -> windows_utils.PipeHandle:
            open_mode = _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
            if first:
                open_mode |= _winapi.FILE_FLAG_FIRST_PIPE_INSTANCE
            pipe_mode = (
                _winapi.PIPE_TYPE_MESSAGE
                | _winapi.PIPE_READMODE_MESSAGE
                | _winapi.PIPE_WAIT
                | PIPE_REJECT_REMOTE_CLIENTS
            )
            try:
                handle = _winapi.CreateNamedPipe(
                    self._name,
                    open_mode,
                    pipe_mode,
                    _winapi.PIPE_UNLIMITED_INSTANCES,
                    _BUFFER,
                    _BUFFER,
                    0,
                    self._security.address,
                )
            except OSError as exc:
                # ERROR_ACCESS_DENIED: it exists (or with other modes); ERROR_PIPE_BUSY: it
                # exists and has every instance it may have
                taken = isinstance(exc, PermissionError) or exc.winerror == _winapi.ERROR_PIPE_BUSY
                if not first or not taken:
                    raise
                raise PipeNameTaken(
                    exc.errno,
                    f"the pipe {self._name} exists already: another Lockgate runs for "
                    "these folders, or another program took its name; not serving on it",
                ) from None
            return windows_utils.PipeHandle(handle)

        async def accept(self) -> Accepted:
            while True:
                if self._waiting is None:  # making the last one failed: again
                    self._waiting = self._instance(first=False)
                pipe = self._waiting
                try:
                    self._connecting = self._proactor.accept_pipe(pipe)
                    await self._connecting
                except OSError:
                    # The client went before it was taken (ConnectNamedPipe: ERROR_NO_DATA),
                    # or the instance broke: a new instance first, so the name stays, then
                    # let this one go; and let the loop run before the next.
                    self._waiting = None
                    try:
                        self._waiting = self._instance(first=False)
                    finally:
                        pipe.close()
                    await asyncio.sleep(0)
                    continue
                finally:
                    self._connecting = None
                # The next instance before this one is handed over: the name stays. If
                # it cannot be made now, the next accept() tries again (and says why).
                self._waiting = None
                with contextlib.suppress(OSError):
                    self._waiting = self._instance(first=False)
                return self._accepted(pipe)

        def _accepted(self, pipe: windows_utils.PipeHandle) -> Accepted:
            pid = _client_pid(pipe.handle)
            sid = None if pid is None else process_user_sid(pid)
            reader = asyncio.StreamReader(limit=self._limit)
            protocol = HelloFirst(reader)
            transport = self._make_transport(
                pipe, protocol, extra={"addr": self._name, "client_pid": pid}
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
            return Accepted(reader, writer, protocol.hello, same_user(sid, self._our_sid))

        def close(self) -> None:
            if self._connecting is not None:
                self._connecting.cancel()
            if self._waiting is not None:
                self._waiting.close()
                self._waiting = None
            self._security.free()
