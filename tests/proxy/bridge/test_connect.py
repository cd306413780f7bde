"""`lockgate connect` is launched by MCP clients for every server, at every client start:
it runs on a light path of its own (proxy.bridge.connect), and behaves as the full command
line's `connect` does, whichever way it bridges (``LOCKGATE_BRIDGE``: the client's pipes
passed to the gateway, or relayed). The bridging itself is tested end to end in
test_local.py and test_route.py, in both ways; here what the two must share for a client:
the identity checks, a message of any length, and a clean end whichever side ends."""

from __future__ import annotations

import array
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from proxy.bridge.connect import command_of
from proxy.config.paths import Paths
from proxy.config.runinfo import LINE_LIMIT
from tests.proxy.bridge import modes
from tests.proxy.bridge.test_control import write_run_file
from tests.support.live import lockgate_command
from tests.support.waiting import eventually_sync

bridge_mode = modes.bridge_mode

# The tests below that start `lockgate serve` (live_gateway) or hold a Unix socket of their
# own; Windows has them over its named pipe in tests/proxy/doors/test_winpipe.py.
needs_unix = pytest.mark.skipif(
    sys.platform == "win32",
    reason="`lockgate serve` and Unix sockets: not on Windows (its pipe: test_winpipe.py)",
)

HEAVY = (
    "mcp",
    "mcp_types",
    "uvicorn",
    "jsonschema",
    "PySide6",
    "proxy.cli.main",
    "proxy.gateway.core",
)
SDK = ("mcp", "mcp_types", "uvicorn", "PySide6", "httpx2", "anyio")


# What a system without fd passing looks like to the bridge (a double of the OS: every
# Unix this suite runs on has socket.send_fds; Windows has none to take away).
NO_FD_PASSING = "import socket\nif hasattr(socket, 'send_fds'):\n    del socket.send_fds\n"


def launcher_code(argv: list[str], before: str = "") -> str:
    """`lockgate ARGV` in a Python of its own, printing its exit code and every module
    it loaded as the last line of its stdout."""
    return (
        f"{before}import json, sys\n"
        "from desktop import launcher\n"
        f"rc = launcher.main({argv!r})\n"
        "print(json.dumps([rc, sorted(sys.modules)]), flush=True)\n"
    )


def run_launcher(*argv: str, before: str = "") -> tuple[int, list[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", launcher_code(list(argv), before)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rc, modules = json.loads(result.stdout.splitlines()[-1])
    return rc, modules, result.stderr


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY]


def test_connect_imports_none_of_the_heavy_parts(tmp_path):
    rc, modules, err = run_launcher("--data-dir", str(tmp_path), "connect", "time")
    assert rc == 1
    assert "Lockgate is not running" in err
    assert heavy(modules) == []
    assert "proxy.bridge.connect" in modules


def test_the_full_command_line_still_knows_connect(tmp_path):
    # The same options through the full parser (what `lockgate --help` documents).
    from proxy.cli.main import main

    assert main(["connect", "time", "--data-dir", str(tmp_path)]) == 1
    with pytest.raises(SystemExit) as bad:
        main(["connect", "time", "--client", "bad name"])
    assert bad.value.code == 2


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["connect", "x"], "connect"),
        (["--config-dir", "connect", "serve"], "serve"),
        (["--data-dir", "/d", "connect", "x", "--client", "c"], "connect"),
        (["--port", "1", "--version"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_after_global_options(argv, command):
    assert command_of(argv) == command


def test_a_bad_client_name_is_a_usage_error(tmp_path):
    rc, _modules, err = run_launcher("connect", "x", "--client", "bad name")
    assert rc == 2
    assert "'bad name' is not a valid client name" in err


def test_the_command_line_loads_the_mcp_sdk_only_for_commands_that_need_it():
    # `lockgate status`, `log`, `policy check`... start in a quarter of a second; the SDK
    # (0.6 s to import) is loaded by `serve`, `init` and the app, when they run.
    code = (
        "import sys, proxy.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code % (SDK,)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


@needs_unix
def test_stdout_to_a_file_is_told_plainly_and_the_gateway_logs_no_traceback(
    live_gateway, tmp_path, monkeypatch
):
    # Inherently fd passing: the gateway's pipes cannot take a file. The relay writes
    # one like any stream (test_the_relay_bridges_where_it_is_asked_for_or_needed).
    monkeypatch.setenv(modes.BRIDGE_VARIABLE, "fd")
    out_file = tmp_path / "out.jsonl"
    with out_file.open("wb") as out:
        result = subprocess.run(
            [lockgate_command(), "connect", "everything"],
            env=live_gateway.env,
            stdout=out,
            stderr=subprocess.PIPE,
            input=b"",
            timeout=60,
            check=False,
        )
    told = result.stderr.decode()
    assert result.returncode != 0
    assert "its stdout is a file here" in told, told
    assert "ValueError" not in live_gateway.serve_log()


# -- choosing the way: LOCKGATE_BRIDGE ---------------------------------------------------


@pytest.mark.parametrize("value", ["pipes", "RELAY", " fd"])
def test_an_unknown_way_to_bridge_is_a_usage_error_not_a_guess(monkeypatch, value):
    monkeypatch.setenv(modes.BRIDGE_VARIABLE, value)
    rc, _modules, err = run_launcher("connect", "time")  # no gateway: refused before that
    assert rc == 2
    assert f"LOCKGATE_BRIDGE={value!r} is not a way to bridge; use fd, relay or auto" in err


def test_fd_passing_insisted_on_where_the_system_cannot_is_told_plainly(monkeypatch):
    monkeypatch.setenv(modes.BRIDGE_VARIABLE, "fd")
    rc, _modules, err = run_launcher("connect", "time", before=NO_FD_PASSING)
    assert rc == 2
    assert "LOCKGATE_BRIDGE=fd, but this system cannot pass file descriptors" in err


@needs_unix
@pytest.mark.parametrize(
    ("variable", "before"),
    [("relay", ""), ("auto", NO_FD_PASSING), (None, NO_FD_PASSING)],
    ids=["relay-asked-for", "auto-without-fd-passing", "unset-without-fd-passing"],
)
def test_the_relay_bridges_where_it_is_asked_for_or_needed(
    live_gateway, tmp_path, monkeypatch, variable, before
):
    # The relay writes stdout like any stream, a file too (passed pipes cannot be one):
    # that the answer is in the file shows the relay bridged. It stays light as well.
    if variable is None:
        monkeypatch.delenv(modes.BRIDGE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(modes.BRIDGE_VARIABLE, variable)
    out_file = tmp_path / "out.jsonl"
    with out_file.open("wb") as out:
        result = subprocess.run(
            [sys.executable, "-c", launcher_code(["connect", "everything"], before)],
            env=live_gateway.env,
            input=b"not json\n",  # answered by the gateway, then the session ends
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    *answers, last = out_file.read_bytes().splitlines()
    rc, modules = json.loads(last)
    assert (rc, result.returncode) == (0, 0), result.stderr.decode()
    assert [json.loads(a)["error"]["code"] for a in answers] == [-32700]
    assert heavy(modules) == []
    assert "asyncio" not in modules  # the relay is two blocking copies, not an event loop


# -- the same for the client, both ways --------------------------------------------------


def connect(env: dict[str, str], server: str = "everything") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [lockgate_command(), "connect", server, "--client", "bridge-test"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def session_is_up(proc: subprocess.Popen[bytes]) -> None:
    """A line the gateway answers itself (no server started): the session works."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"not json\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["error"]["code"] == -32700


def ended_cleanly(proc: subprocess.Popen[bytes]) -> str:
    """The bridge's exit: 0, no traceback; what it said on stderr."""
    assert proc.stderr is not None
    rc = proc.wait(timeout=30)
    told = proc.stderr.read().decode()
    assert rc == 0, told
    assert "Traceback" not in told
    return told


def unread(pipe: IO[bytes]) -> int:
    """Bytes waiting in the pipe behind ``pipe`` (either end)."""
    import fcntl
    import termios

    count = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, count)
    return count[0]


@needs_unix
def test_a_socket_in_a_folder_others_can_enter_is_not_used(lockgate_dirs, tmp_path, bridge_mode):
    paths = Paths(*lockgate_dirs)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    write_run_file(paths, socket=str(shared / "gateway.sock"))
    result = subprocess.run(
        [lockgate_command(), "connect", "everything"],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "is not a private folder of yours; not connecting" in result.stderr.decode()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="a socket served by another user: only root can listen as someone else",
)
def test_a_socket_served_by_another_user_is_not_used(lockgate_dirs, tmp_path, bridge_mode):
    # A double of the gateway: a listener in our private folder that listens as
    # `nobody` (what SO_PEERCRED reports is who called listen()); no real gateway makes
    # one. It says yes to any hello, so a bridge that skipped the check would go on.
    paths = Paths(*lockgate_dirs)
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    path = folder / "gateway.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.settimeout(30)
    os.seteuid(65534)  # only around listen(): the process is root again at once
    try:
        listener.listen(1)
    finally:
        os.seteuid(0)
    heard: list[bytes] = []

    def say_yes() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                heard.append(conn.recv(65536))
                try:
                    conn.sendall(b'{"ok": true}\n')
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass

    server = threading.Thread(target=say_yes, daemon=True)
    server.start()
    write_run_file(paths, socket=str(path))
    result = subprocess.run(
        [lockgate_command(), "connect", "everything"],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    server.join(30)
    assert result.returncode == 1
    assert "the socket is served by another user; not connecting" in result.stderr.decode()
    assert heard == [b""]  # not even the hello was said


@needs_unix
async def test_a_message_longer_than_any_line_limit_is_refused_and_the_session_goes_on(
    live_gateway, bridge_mode
):
    # Over the gateway's limit (16 MB) the gateway refuses a message, however long; the
    # bridge must not have a limit of its own (the relay's lines were capped at 32 MB).
    proc = await asyncio.create_subprocess_exec(
        lockgate_command(),
        "connect",
        "everything",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=live_gateway.env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x" * (LINE_LIMIT + 1024)}},
    }
    proc.stdin.write(json.dumps(call).encode() + b"\nnot json\n")
    async with asyncio.timeout(120):
        await proc.stdin.drain()
        refused = json.loads(await proc.stdout.readline())
        unreadable = json.loads(await proc.stdout.readline())
        proc.stdin.close()
        assert await proc.wait() == 0
    assert refused["id"] == 1
    assert refused["error"]["code"] == -32600
    assert "over Lockgate's limit of 16.0 MB per message" in refused["error"]["message"]
    assert unreadable["error"]["code"] == -32700  # the next line, read as the next message


@needs_unix
def test_a_client_that_closes_its_stdout_ends_the_session_and_the_bridge_exits_cleanly(
    live_gateway, bridge_mode
):
    with connect(live_gateway.env) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        session_is_up(proc)
        proc.stdout.close()
        proc.stdin.write(b"not json\n")  # its answer has nowhere to go: the session ends
        proc.stdin.flush()
        ended_cleanly(proc)


@needs_unix
def test_when_the_gateway_goes_the_client_sees_the_end_and_the_bridge_exits_cleanly(
    live_gateway, bridge_mode
):
    gateway = live_gateway.proc
    assert gateway is not None
    with connect(live_gateway.env) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        session_is_up(proc)
        # The gateway stops, then dies with the client's last line unread: the hardest
        # way for it to go (the relay's socket is reset, not just closed).
        os.kill(gateway.pid, signal.SIGSTOP)
        proc.stdin.write(b"not json\n")
        proc.stdin.flush()
        stdin = proc.stdin
        if bridge_mode == "relay":  # the line is the gateway's once the bridge took it
            eventually_sync(lambda: unread(stdin) == 0, "the bridge to take the line")
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(timeout=30)
        assert proc.stdout.read() == b""  # the end, at once, and nothing made up
        ended_cleanly(proc)


@needs_unix
def test_a_client_whose_pipes_do_not_block_is_served_the_same(live_gateway, bridge_mode):
    # A client may hand over non-blocking pipes (the flag belongs to the pipe's end, which
    # the bridge shares with whoever made it): the bridge waits for them, never spins.
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    os.set_blocking(stdin_read, False)
    os.set_blocking(stdout_write, False)
    lines = 500  # 89 KB of answers: more than the pipe holds before the client reads
    with subprocess.Popen(
        [lockgate_command(), "connect", "everything"],
        env=live_gateway.env,
        stdin=stdin_read,
        stdout=stdout_write,
        stderr=subprocess.PIPE,
    ) as proc:
        os.close(stdin_read)
        os.close(stdout_write)
        with os.fdopen(stdin_write, "wb") as to_bridge:
            to_bridge.write(b"not json\n" * lines)
        with os.fdopen(stdout_read, "rb") as from_bridge:
            answers = from_bridge.read().splitlines()
        ended_cleanly(proc)
    assert len(answers) == lines
    assert {json.loads(a)["error"]["code"] for a in answers} == {-32700}


# -- the relay alone ---------------------------------------------------------------------

# write(2)'s number, to see in /proc/PID/task/*/syscall that a thread waits in a write
WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}.get(platform.machine())


def waits_writing_stdout(pid: int) -> bool:
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "syscall").read_text().split()
        except OSError:
            continue
        if len(fields) > 1 and fields[0] == str(WRITE_SYSCALL) and int(fields[1], 16) == 1:
            return True
    return False


@pytest.mark.skipif(
    WRITE_SYSCALL is None or not Path("/proc/self/syscall").exists(),
    reason="sees a process wait in write(2) in /proc (Linux, x86-64 or arm64)",
)
def test_the_relay_writes_every_answer_before_it_leaves_a_client_that_reads_late(
    live_gateway, monkeypatch
):
    # Inherently the relay: with the pipes passed, no answer goes through the bridge.
    import fcntl

    monkeypatch.setenv(modes.BRIDGE_VARIABLE, "relay")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 65536)
    lines = 500  # 89 KB of answers: more than the pipe holds
    proc = subprocess.Popen(
        [lockgate_command(), "connect", "everything"],
        env=live_gateway.env,
        stdin=subprocess.PIPE,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    assert proc.stdin is not None
    with proc, os.fdopen(read_end, "rb") as out:
        # Each line is answered, then the client's end ends the session; the client reads
        # nothing until the bridge has either left or waits for it to read.
        proc.stdin.write(b"not json\n" * lines)
        proc.stdin.close()
        eventually_sync(
            lambda: proc.poll() is not None or waits_writing_stdout(proc.pid),
            "the bridge to leave or to wait on its stdout",
            timeout=60,
        )
        answers = out.read().splitlines()
        ended_cleanly(proc)
    assert len(answers) == lines
    assert {json.loads(a)["error"]["code"] for a in answers} == {-32700}
