"""The local door on Windows: a named pipe only this user can open (proxy/doors/winpipe.py,
the server; proxy/bridge/winpipe.py, the client and what both ends share).

Here, on every system: the decisions as the pure functions they are (the pipe's name, its
security descriptor, whether the other end is ours), and the part of the door that is not
Windows' own: :class:`HelloFirst` and ``LocalServer.take``, the streams a pipe client is
served through, driven over real sockets and a real gateway (the harness's) instead of a
pipe. Nothing of Windows is imitated.

On Windows only (the other-platforms workflow runs them; no machine here can): the pipe
itself, its access list read back from Windows, the first-instance rule against a name
taken before the gateway's, the client's check of who serves the pipe, and the control
commands and ``lockgate connect`` over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.bridge.winpipe import (
    PIPE_PREFIX,
    named_pipe_is,
    pipe_name_for,
    same_user,
    server_identity_problem,
)
from proxy.doors.local import LocalServer
from proxy.doors.winpipe import HELLO_LIMIT, Accepted, HelloFirst, pipe_sddl
from tests.support.harness import Harness, running
from tests.support.waiting import eventually

SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
OTHER_SID = "S-1-5-21-1004336348-1177238915-682003330-1002"
RUN = r"C:\Users\Ada\AppData\Local\lockgate\run"


# -- the pipe's name ---------------------------------------------------------------------


def test_the_pipe_is_named_for_the_user_and_the_folder_and_is_on_this_machine():
    name = pipe_name_for(SID, RUN)
    assert re.fullmatch(r"\\\\\.\\pipe\\lockgate-gateway-[0-9a-f]{32}", name), name
    assert name.startswith(PIPE_PREFIX)  # \\.\pipe\: never a pipe on another machine
    assert len(name) <= 256  # CreateNamedPipe's limit
    assert pipe_name_for(SID, RUN) == name  # both ends derive the same one
    assert pipe_name_for(OTHER_SID, RUN) != name  # another user's gateway: another pipe
    assert pipe_name_for(SID, RUN + "2") != name  # another data folder: another pipe
    assert pipe_name_for(SID, RUN, "window.sock").startswith(PIPE_PREFIX + "lockgate-window-")


def test_the_name_tells_nobody_whose_it_is():
    # Any process may list the pipes: neither the user nor the folder is spelled out.
    name = pipe_name_for(SID, RUN).lower()
    assert "1001" not in name
    assert "ada" not in name
    assert "appdata" not in name


def test_the_name_ignores_what_windows_ignores():
    name = pipe_name_for(SID, RUN)
    assert pipe_name_for(SID.lower(), RUN) == name  # SIDs: no case
    assert pipe_name_for(SID, RUN.upper()) == name  # paths: no case
    assert pipe_name_for(SID, RUN.replace("\\", "/")) == name  # either slash


def test_a_run_file_must_name_the_pipe_the_client_derives():
    ours = pipe_name_for(SID, RUN)
    assert named_pipe_is(ours.upper(), ours)  # pipe names do not differ by case
    assert not named_pipe_is(pipe_name_for(OTHER_SID, RUN), ours)
    assert not named_pipe_is(PIPE_PREFIX + "someone-elses", ours)


# -- the pipe's security descriptor ----------------------------------------------------------


def aces(sddl: str) -> list[list[str]]:
    """The ACEs of an SDDL string's DACL, each as its six fields."""
    dacl = sddl.split("D:", 1)[1]
    return [ace.split(";") for ace in re.findall(r"\(([^)]*)\)", dacl)]


def test_the_access_list_holds_this_user_and_nobody_else():
    sddl = pipe_sddl(SID)
    assert sddl == f"D:P(A;;GA;;;{SID})"
    assert sddl.startswith("D:P")  # protected: nothing inherited
    assert [ace[5] for ace in aces(sddl)] == [SID]
    assert [ace[0] for ace in aces(sddl)] == ["A"]  # an allow ACE: nothing else is allowed
    for anyone in ("WD", "AN", "AU", "BU", "NU", "SY", "BA", "S-1-1-0", "S-1-5-7"):
        assert anyone not in [ace[5] for ace in aces(sddl)]  # Everyone, Anonymous, ...


@pytest.mark.parametrize(
    "not_a_sid",
    [
        "WD",  # an SDDL alias (Everyone), not a SID
        f"{SID})(A;;GA;;;WD",  # an ACE smuggled in after it
        "",
        "S-1-5-",
    ],
)
def test_only_a_sid_goes_into_the_descriptor(not_a_sid):
    with pytest.raises(ValueError, match="not a SID"):
        pipe_sddl(not_a_sid)


# -- who is at the other end ---------------------------------------------------------------


def test_a_client_is_ours_only_when_its_user_is_known_and_is_ours():
    assert same_user(SID, SID)
    assert same_user(SID.lower(), SID)
    assert not same_user(OTHER_SID, SID)
    assert not same_user(None, SID)  # could not tell: not ours (fail closed)


@pytest.mark.parametrize(
    ("server_pid", "server_sid", "problem"),
    [
        (4242, SID, None),
        (4242, SID.lower(), None),
        (4242, OTHER_SID, "the pipe is served by another user; not connecting"),
        (None, SID, "cannot tell which process serves the pipe; not connecting"),
        (4242, None, "cannot tell which process serves the pipe; not connecting"),
        (
            777,
            SID,
            "the pipe is served by process 777, not by the gateway (process 4242); not connecting",
        ),
    ],
    ids=["the-gateway", "sid-case", "another-user", "no-pid", "no-sid", "not-the-gateway"],
)
def test_the_client_talks_only_to_the_gateway_of_the_run_file_running_as_us(
    server_pid, server_sid, problem
):
    found = server_identity_problem(
        server_pid=server_pid, server_sid=server_sid, gateway_pid=4242, our_sid=SID
    )
    assert found == problem


# -- the streams a pipe's client is served through (over real sockets here) -------------------


@contextlib.asynccontextmanager
async def streams(
    *, limit: int = 1 << 24, same: bool = True
) -> AsyncIterator[tuple[Accepted, asyncio.StreamReader, asyncio.StreamWriter]]:
    """An :class:`Accepted` as the pipe listener makes one (a stream reader behind
    :class:`HelloFirst`, a writer on the same transport), over a socket pair instead of a
    pipe instance; and the client's end."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    protocol = HelloFirst(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    client_reader, client_writer = await asyncio.open_connection(sock=theirs)
    try:
        yield Accepted(reader, writer, protocol.hello, same), client_reader, client_writer
    finally:
        client_writer.close()
        writer.close()


async def hello_of(accepted: Accepted) -> bytes:
    return await asyncio.wait_for(accepted.hello, 10)


async def test_the_first_line_is_the_hello_and_the_reader_gets_every_byte_after_it():
    async with streams() as (accepted, _, client):
        client.write(b'{"lockgate": 1}\nfirst')
        assert await hello_of(accepted) == b'{"lockgate": 1}'
        client.write(b" line\nsecond\n")
        assert await accepted.reader.readline() == b"first line\n"
        assert await accepted.reader.readline() == b"second\n"


async def test_a_hello_in_pieces_is_put_together():
    async with streams() as (accepted, _, client):
        for piece in (b'{"lock', b'gate": 1, "mode"', b': "control"}', b"\nrest\n"):
            client.write(piece)
            await client.drain()
            await asyncio.sleep(0.01)  # each piece its own read
        assert json.loads(await hello_of(accepted)) == {"lockgate": 1, "mode": "control"}
        assert await accepted.reader.readline() == b"rest\n"


async def test_a_line_too_long_to_be_a_hello_is_not_held_for_ever():
    # No newline in 64 KiB: what came is the hello, refused as a bad one; the reader (whose
    # limit is for messages, 16 MB) never held it.
    async with streams() as (accepted, _, client):
        client.write(b"x" * (HELLO_LIMIT + 1024))
        await client.drain()
        hello = await hello_of(accepted)
        client.write_eof()
        assert len(hello) > HELLO_LIMIT
        assert set(hello) == {ord("x")}
        assert await accepted.reader.read() == b""  # nothing of it reached the reader


async def test_an_end_before_the_newline_is_the_hello_and_the_end_of_the_stream():
    async with streams() as (accepted, _, client):
        client.write(b'{"lockgate": 1}')
        client.write_eof()
        assert await hello_of(accepted) == b'{"lockgate": 1}'
        assert await accepted.reader.read() == b""


async def test_the_client_ending_what_it_sends_still_gets_the_answers():
    # What a pipe client's empty message is (PipeStream.shutdown): the end of the stream
    # for the reader, while the writer still writes, as a socket's half close.
    async with streams() as (accepted, client_reader, client):
        client.write(b'{"lockgate": 1}\nquestion\n')
        client.write_eof()
        assert await hello_of(accepted) == b'{"lockgate": 1}'
        assert await accepted.reader.readline() == b"question\n"
        assert await accepted.reader.readline() == b""  # the end
        accepted.writer.write(b"answer\n")
        await accepted.writer.drain()
        assert await asyncio.wait_for(client_reader.readline(), 10) == b"answer\n"


# -- LocalServer.take: a pipe's client, served as every local connection ---------------------


@contextlib.asynccontextmanager
async def door(tmp_path: Path, **options: Any) -> AsyncIterator[LocalServer]:
    """A LocalServer of the harness's real gateway, never listening: its connections come
    through ``take``, as the pipe listener hands them over."""
    harness = Harness(tmp_path)
    async with running(harness) as gateway:
        local = LocalServer(gateway, tmp_path / "not-listening.sock", **options)
        try:
            yield local
        finally:
            await local.stop()


async def line(reader: asyncio.StreamReader) -> dict:
    return dict(json.loads(await asyncio.wait_for(reader.readline(), 10)))


async def test_a_control_connection_through_take_is_answered_as_on_the_socket(tmp_path):
    async with door(tmp_path) as local, streams() as (accepted, reader, writer):
        local.take(accepted)
        writer.write(b'{"lockgate": 1, "mode": "control"}\n')
        assert await line(reader) == {"ok": True}
        assert local.counts()["control"] == 1
        writer.write(b'{"op": "status"}\n')
        status = await line(reader)
        assert status["ok"] is True
        assert status["servers"] == ["rec"]


async def test_a_connect_session_through_take_ends_when_the_client_ends_what_it_sends(tmp_path):
    async with door(tmp_path) as local, streams() as (accepted, reader, writer):
        local.take(accepted)
        hello = {"lockgate": 1, "mode": "connect", "server": "rec", "client": "pipe-test"}
        writer.write(json.dumps(hello).encode() + b"\nnot json\n")
        assert await line(reader) == {"ok": True}
        assert (await line(reader))["error"]["code"] == -32700  # the session answers
        writer.write_eof()  # the client's stdin closed: the session ends
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await eventually(lambda: local.counts()["connect"] == 0, "the session to end", timeout=10)


async def test_a_client_of_another_user_is_refused_before_its_hello(tmp_path):
    async with door(tmp_path) as local, streams(same=False) as (accepted, reader, _):
        local.take(accepted)
        assert await line(reader) == {
            "ok": False,
            "error": "only the user running Lockgate may connect",
        }
        assert await asyncio.wait_for(reader.read(), 10) == b""


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        (b"not a hello\n", "expected a hello line"),
        (b'{"lockgate": 1, "mode": "dance"}\n', "unknown mode 'dance'"),
        (
            b'{"lockgate": 1, "mode": "connect", "server": "nope", "client": "pipe-test"}\n',
            "no server named 'nope'",
        ),
    ],
)
async def test_a_bad_hello_through_take_is_refused_in_words(tmp_path, sent, error):
    async with door(tmp_path) as local, streams() as (accepted, reader, writer):
        local.take(accepted)
        writer.write(sent)
        answer = await line(reader)
        assert answer["ok"] is False
        assert error in answer["error"]


async def test_a_silent_client_through_take_is_closed_at_the_hello_deadline(tmp_path):
    async with door(tmp_path, hello_seconds=0.2) as local, streams() as (accepted, reader, _):
        local.take(accepted)
        assert local.counts()["hello"] == 1
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await eventually(lambda: local.counts()["hello"] == 0, "the hello to go", timeout=10)


# -- Windows itself ---------------------------------------------------------------------------

if sys.platform == "win32":
    import _winapi
    import ctypes
    import os
    from ctypes import wintypes

    from proxy.bridge import winpipe as client_side
    from proxy.bridge.control import ControlError, control
    from proxy.doors import winpipe as server_side
    from tests.support.live import lockgate_command

    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _GetSecurityInfo = client_side.win_function(
        _advapi32,
        "GetSecurityInfo",
        wintypes.DWORD,
        wintypes.HANDLE,
        ctypes.c_int,
        wintypes.DWORD,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
    )
    _ToString = client_side.win_function(
        _advapi32,
        "ConvertSecurityDescriptorToStringSecurityDescriptorW",
        wintypes.BOOL,
        ctypes.c_void_p,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.LPWSTR),
        ctypes.c_void_p,
    )
    _LocalFree = client_side.win_function(_kernel32, "LocalFree", ctypes.c_void_p, ctypes.c_void_p)
    SE_KERNEL_OBJECT = 6
    DACL_SECURITY_INFORMATION = 4

    def dacl_of(handle: int) -> str:
        """The DACL of the object behind ``handle``, in SDDL, as Windows holds it."""
        descriptor = ctypes.c_void_p()
        error = _GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION,
            None,
            None,
            None,
            None,
            ctypes.byref(descriptor),
        )
        assert error == 0, ctypes.WinError(error)
        text = wintypes.LPWSTR()
        try:
            assert _ToString(descriptor, 1, DACL_SECURITY_INFORMATION, ctypes.byref(text), None)
            return str(text.value)
        finally:
            _LocalFree(ctypes.cast(text, ctypes.c_void_p))
            _LocalFree(descriptor)

    def test_this_process_runs_as_the_user_its_token_names():
        sid = client_side.current_user_sid()
        assert re.fullmatch(r"S-1-5-21(-\d+)+", sid), sid
        assert client_side.process_user_sid(os.getpid()) == sid

    async def test_the_pipe_admits_this_user_only_and_its_name_cannot_be_taken_twice(tmp_path):
        name = pipe_name_for(client_side.current_user_sid(), str(tmp_path))
        listener = server_side.listen(name, limit=1 << 20)
        try:
            client = await asyncio.to_thread(client_side.connect, name, gateway_pid=os.getpid())
            try:
                accepted = await asyncio.wait_for(listener.accept(), 10)
                assert accepted.same_user  # the client is this process: this user
                dacl = dacl_of(client._handle)  # the handle Windows checked
                trustees = [ace[5] for ace in aces(dacl)]
                assert trustees == [client_side.current_user_sid()], dacl
                assert dacl.startswith("D:P"), dacl
                accepted.writer.close()
            finally:
                client.close()
            with pytest.raises(server_side.PipeNameTaken, match="exists already"):
                server_side.listen(name, limit=1 << 20)  # FILE_FLAG_FIRST_PIPE_INSTANCE
        finally:
            listener.close()

    def test_a_name_taken_before_the_gateway_is_not_served_on(tmp_path):
        name = pipe_name_for(client_side.current_user_sid(), str(tmp_path))
        squatter = _winapi.CreateNamedPipe(  # the default descriptor: Everyone may read
            name,
            _winapi.PIPE_ACCESS_DUPLEX,
            _winapi.PIPE_TYPE_MESSAGE | _winapi.PIPE_READMODE_MESSAGE | _winapi.PIPE_WAIT,
            _winapi.PIPE_UNLIMITED_INSTANCES,
            4096,
            4096,
            0,
            _winapi.NULL,
        )
        try:

            async def start() -> None:
                server_side.listen(name, limit=1 << 20)

            with pytest.raises(server_side.PipeNameTaken):
                asyncio.run(start())
        finally:
            _winapi.CloseHandle(squatter)

    async def test_a_pipe_not_served_by_the_gateway_of_the_run_file_is_not_used(tmp_path):
        name = pipe_name_for(client_side.current_user_sid(), str(tmp_path))
        listener = server_side.listen(name, limit=1 << 20)
        try:
            accepting = asyncio.ensure_future(listener.accept())
            with pytest.raises(client_side.PipeRefused, match="not by the gateway"):
                await asyncio.to_thread(client_side.connect, name, gateway_pid=os.getpid() + 4)
            accepted = await asyncio.wait_for(accepting, 10)  # it did connect, then left
            assert accepted.same_user
            accepted.writer.close()
        finally:
            listener.close()

    async def test_the_control_commands_and_the_bridge_go_over_the_pipe(tmp_path):
        harness = Harness(tmp_path)
        async with running(harness):
            assert harness.info is not None
            assert named_pipe_is(
                str(harness.info.socket),
                pipe_name_for(
                    client_side.current_user_sid(), os.path.realpath(harness.paths.run_dir)
                ),
            )
            status = await asyncio.to_thread(control, harness.paths, "status")
            assert status["servers"] == ["rec"]
            with pytest.raises(ControlError, match="unknown op"):
                await asyncio.to_thread(control, harness.paths, "make-coffee")
            env = {
                **os.environ,
                "LOCKGATE_CONFIG_DIR": str(harness.paths.config_dir),
                "LOCKGATE_DATA_DIR": str(harness.paths.data_dir),
            }
            env.pop("LOCKGATE_BRIDGE", None)
            proc = await asyncio.create_subprocess_exec(
                lockgate_command(),
                "connect",
                "rec",
                "--client",
                "pipe-test",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            # Answered by the gateway itself; then stdin's end ends the session (the
            # bridge's empty message), and every answer is out before the bridge exits.
            out, err = await asyncio.wait_for(proc.communicate(b"not json\n" * 3), 60)
            assert proc.returncode == 0, err.decode()
            assert [json.loads(a)["error"]["code"] for a in out.splitlines()] == [-32700] * 3

else:

    @pytest.mark.skip(
        reason="Windows only: the named pipe itself (.github/workflows/other-platforms.yml)"
    )
    def test_the_named_pipe_on_windows():
        """The pipe's access list read back, the first-instance rule, the client's check
        of who serves the pipe, and the control commands and `lockgate connect` over it."""
