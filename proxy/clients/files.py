"""The files routing changes, read and written all or nothing.

A client's file is kept as its exact text beside the parse of it (comments blanked at the
same offsets), so that routing can splice new text into just the entries it changes. Every
write goes to a temporary file renamed over the old one, and only if the file still holds
what was read: a file changed meanwhile is never overwritten.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.clients import ClientFormat, _jsonc, server_tables
from proxy.config.atomic import write_atomic
from proxy.config.jsontext import JsonPath, locate, span
from proxy.config.paths import Paths
from proxy.config.servers_edit import (
    ServersEditError,
    ServersText,
    read_servers_text,
    write_servers_text,
)
from proxy.errors import LockgateError

__all__ = [
    "ClientDocument",
    "RecordNotUpdated",
    "RouteError",
    "check_writable",
    "no_duplicate_keys",
    "read_client_file",
    "read_servers",
    "write_client_file",
    "write_servers",
]


class RouteError(LockgateError):
    """Routing or unrouting cannot be done; nothing was written."""

    title = "Nothing changed"


class RecordNotUpdated(RouteError):
    """Unrouting put the entries back, but its record still lists them."""

    title = "The entries are back, but their record was not updated"


# -- reading a client file --------------------------------------------------------------


@dataclass
class ClientDocument:
    path: Path  # the real file (symlinks followed: a dotfile manager's link stays a link)
    raw: bytes
    text: str  # as in the file
    parse_text: str  # the same offsets, comments blanked, for the JSON parser and locator
    doc: dict[str, Any]
    newline: str

    def span(self, where: JsonPath) -> tuple[int, int] | None:
        return span(self.parse_text, where)


def read_client_file(client: ClientFormat, path: Path) -> ClientDocument:
    real = path.resolve()
    try:
        raw = real.read_bytes()
    except FileNotFoundError:
        raise RouteError(f"{path}: no such file") from None
    except OSError as exc:
        raise RouteError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RouteError(f"{path}: not UTF-8 text ({exc})") from None
    parse_text = " " + text[1:] if text.startswith("\ufeff") else text
    if client.jsonc:
        parse_text = _jsonc.strip(parse_text)
    try:
        doc = json.loads(parse_text)
    except json.JSONDecodeError as exc:
        raise RouteError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise RouteError(f"{path}: not a JSON object")
    return ClientDocument(real, raw, text, parse_text, doc, "\r\n" if "\r\n" in text else "\n")


def check_writable(doc: ClientDocument, shown: Path) -> None:
    mode = doc.path.stat().st_mode
    # By its mode bits, not os.access: root may write anything, but a file made
    # read-only says its owner does not want it changed.
    if not mode & 0o222 or not os.access(doc.path, os.W_OK):
        raise RouteError(f"{shown}: the file is read-only")


def write_client_file(doc: ClientDocument, shown: Path, new_text: str) -> None:
    """Write ``new_text`` over the file, all or nothing, if it still holds what was read."""
    try:
        if doc.path.read_bytes() != doc.raw:
            raise RouteError(f"{shown}: changed while Lockgate was working on it; try again")
        mode = stat.S_IMODE(doc.path.stat().st_mode)
        write_atomic(doc.path, new_text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise RouteError(f"{shown}: cannot write it: {exc.strerror or exc}") from None


def no_duplicate_keys(doc: ClientDocument, client: ClientFormat, scope: str, shown: Path) -> None:
    """Refuse a file with a key twice in a server table or entry: the JSON parser (and the
    client) keep the last, the text has both, and routing must not guess."""
    tables = server_tables(client, scope, doc.doc)
    for where, offset in locate(doc.parse_text).duplicates:
        if any(where[: len(t)] == t for t in tables):
            line, column = locate(doc.parse_text).offset_to_line_col(offset)
            raise RouteError(
                f"{shown}:{line}:{column}: {where[-1]!r} appears twice here; the client uses "
                "the last one. Remove the other first"
            )


# -- servers.json -----------------------------------------------------------------------
#
# Read and written as the window changes it (proxy.config.servers_edit), with routing's
# own words for what went wrong.


def read_servers(paths: Paths) -> ServersText:
    """servers.json, to add servers to (a missing file reads as an empty table).

    Raises:
        RouteError: it cannot be read or is broken now.
    """
    try:
        return read_servers_text(paths.servers_file)
    except ServersEditError as exc:
        raise RouteError(exc.message) from None


def write_servers(was: ServersText, text: str) -> ServersText:
    """Write ``text`` over servers.json if it is valid and the file still holds ``was``.

    Raises:
        RouteError: it is not valid, changed meanwhile, or cannot be written.
    """
    try:
        return write_servers_text(was, text)
    except ServersEditError as exc:
        raise RouteError(exc.message) from None
