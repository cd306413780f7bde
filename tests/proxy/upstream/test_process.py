"""A stdio server's process: started with its pipes, and stopped with its whole tree
(``npx`` servers are a tree: a server that started a helper must not leave it behind)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.config.servers import StdioServer
from proxy.upstream.process import stdio_pipes
from tests.support.waiting import eventually


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended


async def test_closing_stops_the_server_and_what_it_started(tmp_path: Path) -> None:
    # a server that starts a helper of its own, tells us its pid, then echoes stdin
    script = "sleep 120 & echo $!; exec cat"
    spec = StdioServer("tree", "sh", ("-c", script), env={"LOCKGATE_TEST": "1"})
    with (tmp_path / "server.log").open("w") as errlog:
        async with stdio_pipes(spec, errlog) as (out, into):
            helper = int((await out.readline()).strip())
            assert alive(helper)
            into.write(b"hello\n")
            await into.drain()
            assert await out.readline() == b"hello\n"
    await eventually(lambda: not alive(helper), "the helper to be stopped with the server")


async def test_a_server_that_cannot_start_says_so(tmp_path: Path) -> None:
    spec = StdioServer("missing", str(tmp_path / "no-such-server"))
    with (tmp_path / "server.log").open("w") as errlog, pytest.raises(FileNotFoundError):
        async with stdio_pipes(spec, errlog):
            pass
    assert os.listdir(tmp_path) == ["server.log"]
