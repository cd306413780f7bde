"""A client message over the size limit, at either door: read to its end (so the next
message is found), never parsed whole, answered with a JSON-RPC error that gives the
limit, and, for a ``tools/call``, recorded in the audit log like any refused call.

Only the message's start and end are kept; its id, method and tool name are looked for
there (JSON serializers write them before or after the large ``params``).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

__all__ = ["KEPT", "Oversized", "read_message", "size_text", "too_large"]

KEPT = 64 * 1024  # of an oversized message's start, and of its end

_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')
_METHOD = re.compile(rb'"method"\s*:\s*"([^"\\]{1,100})"')
_NAME = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message of ``size`` bytes, too large to take; its first and last bytes."""

    size: int
    head: bytes
    tail: bytes

    def _find(self, pattern: re.Pattern[bytes]) -> bytes | None:
        found = pattern.search(self.head) or pattern.search(self.tail)
        return found.group(1) if found else None

    @property
    def request_id(self) -> int | str | None:
        raw = self._find(_ID)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, int | str) and not isinstance(value, bool) else None

    @property
    def method(self) -> str | None:
        raw = self._find(_METHOD)
        return None if raw is None else raw.decode("utf-8", "replace")

    @property
    def tool(self) -> str:
        """The tool a ``tools/call`` names (in ``params``, at the start of most clients' text)."""
        found = _NAME.search(self.head)
        if found is None:
            return ""
        try:
            name = json.loads(b'"' + found.group(1) + b'"')
        except ValueError:
            return ""
        return name if isinstance(name, str) else ""


def size_text(size: int) -> str:
    """``5.2 MB``, ``512 KB``: a size as a person reads it."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.0f} KB"


def too_large(size: int, limit: int) -> str:
    """What the agent is told."""
    return (
        f"the message is {size_text(size)}, over Lockgate's limit of {size_text(limit)} per "
        "message (the setting max_message_bytes); the server was not sent it"
    )


async def read_message(reader: asyncio.StreamReader) -> bytes | Oversized:
    """The next line from ``reader`` (b"" at its end), or an :class:`Oversized` for a line
    longer than ``reader``'s limit, read to its newline and dropped."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as end:
        return end.partial
    except asyncio.LimitOverrunError as over:
        head = await reader.readexactly(over.consumed)
    size, tail = len(head), head[-KEPT:]
    while True:
        try:
            rest = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            rest = end.partial
        except asyncio.LimitOverrunError as over:
            chunk = await reader.readexactly(over.consumed)
            size += len(chunk)
            tail = (tail + chunk)[-KEPT:]
            continue
        size += len(rest)
        tail = (tail + rest)[-KEPT:]
        return Oversized(size, head[:KEPT], tail)
