"""Changing one server of servers.json the way a careful person would by hand.

The window adds, replaces, removes and turns off servers in the same file a person edits,
so a change touches only the one entry: its text is spliced in (or cut out) and every
other byte stays as it was: key order, indentation, line endings, a BOM, fields of other
clients, servers Lockgate knows nothing about. Routing (:mod:`proxy.clients.route`) adds
its servers through the same reading and writing.

A change is made only to a file that is valid now (a broken one is in the middle of a
person's edit), and the result is checked by the same parser the gateway's watcher uses
(:func:`~proxy.config.servers.parse_servers_bytes`) before it is written, atomically
(mode 0600) and only if the file still holds what was read: a file changed meanwhile is
never overwritten. The caller then has the gateway read it at once
(:meth:`GatewayControl.reload_servers <proxy.gateway.control.GatewayControl.reload_servers>`).

Secrets never go into the file: an entry carries ``keyring:NAME`` references, the values
are in the OS keyring (:class:`~proxy.config.secrets.SecretStore`).
:func:`secret_like_values` names the values of an entry that look like a literal secret,
and :func:`move_to_keyring` turns them into references, so that the window can offer to
move them before it writes the entry.

Blocking (file I/O): call it from a worker thread.
"""

from __future__ import annotations

import codecs
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxy.audit.redact import REDACTED, redact, scrub_text, storable
from proxy.clients import _jsonc
from proxy.config.atomic import write_atomic
from proxy.config.jsontext import (
    locate,
    render_at,
    span,
    splice,
    value_end,
    with_member,
    without_member,
)
from proxy.config.secrets import KEYRING_PREFIX, secret_name
from proxy.config.servers import (
    SERVER_NAME_RULE,
    ServersError,
    parse_servers_bytes,
    valid_server_name,
)
from proxy.errors import LockgateError

__all__ = [
    "EMPTY_SERVERS",
    "UNNAMED",
    "PasteError",
    "Section",
    "ServersEditError",
    "ServersText",
    "keyring_name_for",
    "move_to_keyring",
    "parse_pasted_entry",
    "put_server",
    "read_servers_text",
    "remove_server",
    "secret_like_values",
    "servers_with",
    "set_server_disabled",
    "write_servers_text",
]

EMPTY_SERVERS = '{\n  "mcpServers": {}\n}\n'  # what a missing servers.json starts as
UNNAMED = ""  # the name parse_pasted_entry gives a single entry pasted without one

Section = Literal["env", "headers"]

# The compare of what is on disk and the rename over it, one at a time in this process
# (the window's worker threads); across processes the compare is what protects.
_WRITING = threading.Lock()


class ServersEditError(LockgateError):
    """The change was not made; the message says why, for a person."""

    title = "servers.json was not changed"


class PasteError(ServersEditError):
    """The pasted text is not a server entry Lockgate can take."""

    title = "That is not a server entry"


# -- reading and writing the file ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServersText:
    """servers.json as read for a change: its exact bytes, its text and what it says."""

    path: Path
    raw: bytes | None  # as on disk; None: there is no file
    text: str  # without a BOM; a missing file's is EMPTY_SERVERS
    document: dict[str, Any]

    @property
    def bom(self) -> bool:
        return self.raw is not None and self.raw.startswith(codecs.BOM_UTF8)

    @property
    def key(self) -> str:
        """The table of servers: ``mcpServers``, or VS Code's ``servers``."""
        return "mcpServers" if "mcpServers" in self.document else "servers"

    @property
    def entries(self) -> dict[str, Any]:
        table: dict[str, Any] = self.document[self.key]
        return table

    def encoded(self, text: str) -> bytes:
        """``text`` as the file's bytes would be (its BOM kept)."""
        return (codecs.BOM_UTF8 if self.bom else b"") + text.encode("utf-8")


def read_servers_text(path: Path) -> ServersText:
    """servers.json, to be changed; a missing file reads as :data:`EMPTY_SERVERS`.

    Raises:
        ServersEditError: the file cannot be read, or is not valid now ("fix servers.json
            first", with its problems).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ServersText(path, None, EMPTY_SERVERS, json.loads(EMPTY_SERVERS))
    except OSError as exc:
        raise ServersEditError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        parse_servers_bytes(raw, str(path))
    except ServersError as exc:
        raise ServersEditError(f"fix servers.json first:\n{exc}") from None
    text = raw.decode("utf-8-sig")
    document: dict[str, Any] = json.loads(text)
    return ServersText(path, raw, text, document)


def write_servers_text(was: ServersText, text: str) -> ServersText:
    """Write ``text`` (with ``was``'s BOM, if it had one) over servers.json, if it is a
    valid servers.json and the file still holds what ``was`` read. Returns what is on
    disk now.

    Raises:
        ServersEditError: ``text`` is not valid (the file is left as it was), the file
            changed meanwhile, or it cannot be written.
    """
    data = was.encoded(text)
    path = was.path
    try:
        parse_servers_bytes(data, str(path))
    except ServersError as exc:
        raise ServersEditError(f"that change would make servers.json invalid:\n{exc}") from None
    with _WRITING:
        try:
            now: bytes | None = path.read_bytes()
        except FileNotFoundError:
            now = None
        except OSError as exc:
            raise ServersEditError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        if now != was.raw:
            raise ServersEditError(f"{path}: changed meanwhile; try again")
        try:
            write_atomic(path, data, mode=0o600)
        except OSError as exc:
            raise ServersEditError(f"{path}: cannot write it: {exc.strerror or exc}") from None
    return ServersText(path, data, text, json.loads(text))


# -- changing one server -------------------------------------------------------------------


def put_server(path: Path, name: str, entry: Mapping[str, Any], *, replace: bool) -> bytes:
    """Add server ``name`` with ``entry`` as its settings, or, with ``replace``, put
    ``entry`` in place of its settings (added if there is none). Returns the bytes written.

    Raises:
        ServersEditError: ``name`` is not a valid server name, or is taken and not
            ``replace``; the file is broken now, the entry is not valid, the file changed
            meanwhile or cannot be written (nothing was written).
    """
    if not valid_server_name(name):
        raise ServersEditError(f"{name!r}: {SERVER_NAME_RULE}")
    was = _read_for_change(path)
    value = dict(entry)
    if name in was.entries:
        if not replace:
            raise ServersEditError(
                f"servers.json already has a server named {name!r}; choose another name"
            )
        start, end = _span(was, name)
        old = was.text[start:end]
        new = (
            json.dumps(value, ensure_ascii=False)
            if "\n" not in old
            else render_at(value, was.text, start, _newline(was.text))
        )
        text = splice(was.text, [(start, end, new)])
    else:
        text = servers_with(was.text, was.key, {name: value})
    return _written(was, text)


def remove_server(path: Path, name: str) -> bytes:
    """Remove server ``name`` (its key, its settings and one comma). Returns the bytes
    written.

    Raises:
        ServersEditError: there is no such server, or as :func:`put_server`.
    """
    was = _read_for_change(path)
    _known(was, name)
    return _written(was, without_member(was.text, (was.key, name)))


def set_server_disabled(path: Path, name: str, disabled: bool) -> bytes:
    """Turn server ``name`` off (``"disabled": true`` in its entry) or on again (the
    field removed); only that field of that entry changes. Returns the file's bytes
    (unwritten when it already says so).

    Raises:
        ServersEditError: there is no such server, or as :func:`put_server`.
    """
    was = _read_for_change(path)
    _known(was, name)
    where = (was.key, name)
    now = was.entries[name].get("disabled", False)
    if now is disabled:
        assert was.raw is not None  # a missing file has no server
        return was.raw
    if not disabled:  # "disabled": true goes
        return _written(was, without_member(was.text, (*where, "disabled")))
    found = span(was.text, (*where, "disabled"))
    if found is not None:  # "disabled": false becomes true
        return _written(was, splice(was.text, [(*found, "true")]))
    return _written(was, with_member(was.text, where, "disabled", True))


def servers_with(text: str, key: str, new: Mapping[str, Mapping[str, Any]]) -> str:
    """servers.json's ``text`` with the ``new`` servers added at the end of its ``key``
    table, each in the table's style (the rest of the text as it was)."""
    for name, entry in new.items():
        text = with_member(text, (key,), name, dict(entry))
    return text


def _read_for_change(path: Path) -> ServersText:
    was = read_servers_text(path)
    table = (was.key,)
    for where, offset in locate(was.text).duplicates:
        if where[:1] == table:
            line, column = locate(was.text).offset_to_line_col(offset)
            raise ServersEditError(
                f"{path}:{line}:{column}: {where[-1]!r} appears twice here and only the "
                "last one counts; remove the other first"
            )
    return was


def _known(was: ServersText, name: str) -> None:
    if name not in was.entries:
        raise ServersEditError(f"servers.json has no server named {name!r}")


def _span(was: ServersText, name: str) -> tuple[int, int]:
    start = locate(was.text).values[(was.key, name)]
    return start, value_end(was.text, start)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _written(was: ServersText, text: str) -> bytes:
    now = write_servers_text(was, text)
    assert now.raw is not None
    return now.raw


# -- what a person pastes --------------------------------------------------------------


def parse_pasted_entry(text: str) -> dict[str, dict[str, Any]]:
    """The servers in what a person pasted from a client's documentation: a whole
    ``{"mcpServers": {...}}`` (or VS Code's ``{"servers": {...}}``, or its settings'
    ``{"mcp": {"servers": {...}}}``), a bare ``{"name": {"command": ...}}`` mapping, or
    one entry ``{"command": ..., "args": [...]}``, which comes back under
    :data:`UNNAMED` (the caller asks for its name). Comments and trailing commas (JSONC)
    are allowed, and so are the outer braces left off (``"name": {...}``). Windsurf's
    ``serverUrl`` becomes ``url``. The entries are not checked further: :func:`put_server`
    does that.

    Raises:
        PasteError: the text is not JSON, or not one of those shapes.
    """
    document = _pasted_json(text)
    if not isinstance(document, dict):
        raise PasteError(
            'expected an object, like {"command": "...", "args": [...]} or '
            '{"mcpServers": {"NAME": {...}}}'
        )
    if _is_entry(document):
        return {UNNAMED: _as_entry(document)}
    table: Any = document
    vscode = document.get("mcp")
    if isinstance(vscode, dict) and isinstance(vscode.get("servers"), dict):
        table = vscode["servers"]
    for key in ("mcpServers", "servers"):
        if isinstance(document.get(key), dict) and not _is_entry(document[key]):
            table = document[key]
            break
    if not table:
        raise PasteError("the pasted text holds no server")
    servers: dict[str, dict[str, Any]] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict) or not _is_entry(entry):
            raise PasteError(
                f'{name!r} is not a server entry: expected an object with "command" (a '
                'program to start) or "url" (a remote server)'
            )
        servers[name] = _as_entry(entry)
    return servers


def _pasted_json(text: str) -> Any:
    if not text.strip():
        raise PasteError("nothing was pasted")
    fragment = not text.lstrip().startswith(("{", "["))
    if fragment:  # "name": {...} or "mcpServers": {...}, copied without the braces
        text = "{\n" + text.rstrip().rstrip(",") + "\n}"
    try:
        return json.loads(_jsonc.strip(text))
    except json.JSONDecodeError as exc:
        line = exc.lineno - 1 if fragment else exc.lineno
        raise PasteError(
            f"the pasted text is not JSON (line {line}, column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PasteError(f"the pasted text is not JSON ({exc})") from None


def _is_entry(value: Mapping[str, Any]) -> bool:
    return any(isinstance(value.get(k), str) for k in ("command", "url", "serverUrl"))


def _as_entry(entry: dict[str, Any]) -> dict[str, Any]:
    if "url" not in entry and isinstance(entry.get("serverUrl"), str):
        return {("url" if k == "serverUrl" else k): v for k, v in entry.items()}
    return dict(entry)


# -- secrets -------------------------------------------------------------------------------


def secret_like_values(entry: Mapping[str, Any]) -> list[tuple[Section, str]]:
    """The ``env`` and ``headers`` values of ``entry`` that look like a secret written
    out, as (section, name): not a ``keyring:`` reference, and under a name the audit log
    would hide (TOKEN, SECRET, PASSWORD, API_KEY, Authorization, Cookie...; see
    :func:`proxy.audit.redact.redact`), a name with the word KEY, or a value that looks
    like a credential (``ghp_...``, ``sk-...``, ``Bearer ...``)."""
    found: list[tuple[Section, str]] = []
    sections: tuple[Section, ...] = ("env", "headers")
    for section in sections:
        values = entry.get(section)
        if not isinstance(values, Mapping):
            continue
        for name, value in values.items():
            if (
                isinstance(name, str)
                and isinstance(value, str)
                and value
                and secret_name(value) is None
                and (_secret_looking_name(name) or scrub_text(value) != storable(value))
            ):
                found.append((section, name))
    return found


def _secret_looking_name(name: str) -> bool:
    if "key" in name.lower().replace("-", "_").split("_"):
        return True  # API_KEY, STRIPE_KEY, KEY: in an environment, a key is a credential
    hidden = redact({name: 0}, max_bytes=256 + 8 * len(name))
    return list(hidden.values()) == [REDACTED]


def keyring_name_for(server: str, section: Section, name: str) -> str:
    """The keyring name Lockgate stores ``server``'s ``env`` or ``headers`` value ``name``
    under: ``github.env.GITHUB_TOKEN``, ``docs.header.Authorization``."""
    return f"{server}.{'env' if section == 'env' else 'header'}.{name}"


def move_to_keyring(
    server: str, entry: Mapping[str, Any], which: Iterable[tuple[Section, str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``entry`` with each value ``which`` names replaced by a ``keyring:`` reference, and
    the values to store under those keyring names (the caller stores them, with
    :meth:`SecretStore.set <proxy.config.secrets.SecretStore.set>`, before it writes the
    entry). ``entry`` itself is not changed."""
    moved = dict(entry)
    secrets: dict[str, str] = {}
    for section, name in which:
        values = dict(moved[section])
        keyring_name = keyring_name_for(server, section, name)
        secrets[keyring_name] = values[name]
        values[name] = KEYRING_PREFIX + keyring_name
        moved[section] = values
    return moved, secrets
