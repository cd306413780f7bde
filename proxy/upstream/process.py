"""A stdio server's process: started with its pipes, stopped with its whole tree.

It does what the SDK's ``stdio_client`` does around the process: the SDK's default
environment plus the server's own, the child in its own process group, and on close:
stdin closed, then SIGTERM, then SIGKILL, to the whole group (``npx`` servers are a tree
of processes). It yields the raw pipes; :class:`proxy.upstream.pipelink.PipeLink` speaks JSON-RPC
on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from typing import TextIO

import anyio
from mcp.client.stdio import get_default_environment

from proxy.config.runinfo import LINE_LIMIT
from proxy.config.servers import StdioServer

__all__ = ["stdio_pipes"]

_GRACE = 2.0  # seconds a server has to exit after each step of the shutdown


@contextlib.asynccontextmanager
async def stdio_pipes(
    spec: StdioServer, errlog: TextIO
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Start ``spec`` and yield its stdout and stdin.

    Raises:
        OSError: the server cannot be started.
    """
    command = shutil.which(spec.command) or spec.command
    # Shielded: cancelled between the spawn and the `try`, the process would be left
    # running, never waited for.
    with anyio.CancelScope(shield=True):
        proc = await asyncio.create_subprocess_exec(
            command,
            *spec.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
            env={**get_default_environment(), **spec.env},
            cwd=spec.cwd,
            limit=LINE_LIMIT,
            start_new_session=True,
        )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        yield proc.stdout, proc.stdin
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Close stdin, then SIGTERM, then SIGKILL the server's process group."""
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), _GRACE)
            break
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the tree still alive
