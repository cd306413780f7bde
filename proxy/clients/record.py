"""The record of a routing: each replaced entry's original text, its secrets cut out.

A record keeps an entry's original text with each secret literal removed and named by its
keyring reference, so that the file in Lockgate's data folder holds no secret and
``unroute`` can still give back the very same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from proxy.clients import ClientFile
from proxy.clients.files import RouteError
from proxy.config.atomic import write_atomic
from proxy.config.paths import Paths
from proxy.config.secrets import SecretError, SecretStore

__all__ = [
    "RECORD_VERSION",
    "cut_secrets",
    "file_id",
    "fill_secrets",
    "load_imported",
    "load_record",
    "other_records",
    "record_path",
    "save_imported",
    "save_record",
    "slug",
]

RECORD_VERSION = 1


def record_path(paths: Paths, client_file: ClientFile) -> Path:
    """Where the record of one client file's routing is kept."""
    name = f"{client_file.client.name}-{slug(client_file.scope)}-{file_id(client_file)}.json"
    return paths.data_dir / "routes" / name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def file_id(client_file: ClientFile) -> str:
    return hashlib.sha256(str(client_file.path.absolute()).encode()).hexdigest()[:16]


# -- secrets cut out of recorded text ---------------------------------------------------
#
# A record keeps an entry's original text with each secret literal removed; a hole is
# (offset, keyring name, form), where form says how the literal was written, so that
# filling the hole gives back the very same bytes.


def _literal_form(literal: str, value: str) -> str | None:
    if literal == json.dumps(value, ensure_ascii=False):
        return "utf8"
    if literal == json.dumps(value):
        return "ascii"
    return None  # unusual escapes: the literal itself is kept in the keyring


def cut_secrets(
    text: str, cuts: list[tuple[int, int, str, str]]
) -> tuple[str, list[list[Any]], dict[str, str]]:
    """``text`` without the literals at ``cuts`` (start, end, keyring name, value).

    Returns the holed text, its holes, and extra keyring entries (literals that can't be
    rebuilt from their value)."""
    holes: list[list[Any]] = []
    extra: dict[str, str] = {}
    out, last = [], 0
    removed = 0
    for start, end, name, value in sorted(cuts):
        literal = text[start:end]
        form = _literal_form(literal, value)
        if form is None:
            form = "literal"
            extra[name + ".literal"] = literal
        out.append(text[last:start])
        holes.append([start - removed, name, form])
        removed += end - start
        last = end
    out.append(text[last:])
    return "".join(out), holes, extra


def fill_secrets(text: str, holes: list[list[Any]], store: SecretStore) -> str:
    """The text :func:`cut_secrets` was given.

    Raises:
        RouteError: a secret is no longer in the keyring, or the keyring cannot be used.
    """
    parts, last = [], 0
    for offset, name, form in holes:
        try:
            if form == "literal":
                literal = store.get(name + ".literal")
            else:
                literal = json.dumps(store.get(name), ensure_ascii=form == "ascii")
        except SecretError as exc:
            raise RouteError(f"cannot put the original back: {exc}") from None
        parts += [text[last:offset], literal]
        last = offset
    parts.append(text[last:])
    return "".join(parts)


# -- the record -------------------------------------------------------------------------


def load_record(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RouteError(f"{path}: the routing record cannot be read ({exc})") from None
    if record.get("version") != RECORD_VERSION:
        raise RouteError(f"{path}: a routing record of an unknown version")
    return record


def save_record(path: Path, record: dict[str, Any]) -> None:
    try:
        write_atomic(path, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())
    except OSError as exc:
        raise RouteError(f"{path}: cannot write the routing record: {exc}") from None


# -- servers routing added to servers.json ----------------------------------------------
#
# One registry for every client file: a server one client's routing added may be shared
# by the next client's (the same command, or URL, and settings), and goes only when the
# last client that uses it is put back.


def _imported_path(paths: Paths) -> Path:
    return paths.data_dir / "routes" / "imported.json"


def load_imported(paths: Paths) -> dict[str, Any]:
    """The servers routing added to servers.json, with the spec it wrote for each.

    Raises:
        RouteError: the registry cannot be read.
    """
    path = _imported_path(paths)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RouteError(f"{path}: cannot be read ({exc})") from None
    return data if isinstance(data, dict) else {}


def save_imported(paths: Paths, imported: dict[str, Any]) -> None:
    """Write the registry (none at all once it is empty).

    Raises:
        RouteError: it cannot be written.
    """
    path = _imported_path(paths)
    if imported:
        save_record(path, imported)
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise RouteError(f"{path}: cannot remove it: {exc}") from None


def other_records(paths: Paths, but: Path) -> list[dict[str, Any]]:
    """Every routing record except ``but``'s.

    Raises:
        RouteError: one cannot be read (then nobody can say a server is unused).
    """
    folder = paths.data_dir / "routes"
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path == but or path == _imported_path(paths):
            continue
        record = load_record(path)
        if record is not None:
            records.append(record)
    return records
