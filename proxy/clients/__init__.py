"""The MCP clients installed on this machine, their MCP server entries, and whether each
entry goes through Lockgate.

Each client's file locations and format live in one small table (:data:`CLIENTS`): where
the file is on each OS, the key that holds the servers, and the field a remote server's
address is in. Reading never changes a file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.clients import _jsonc
from proxy.config.jsontext import JsonPath

__all__ = [
    "CLIENTS",
    "ClientFile",
    "ClientFormat",
    "ServerEntry",
    "find_clients",
    "read_file",
    "server_tables",
]


@dataclass(frozen=True)
class ClientFormat:
    """How one client keeps its MCP servers."""

    name: str  # what `lockgate clients` calls it
    label: str
    key: str  # the object that maps server names to entries
    url_fields: tuple[str, ...] = ("url",)  # where a remote server's address is
    jsonc: bool = False  # comments and trailing commas allowed


@dataclass(frozen=True)
class ServerEntry:
    name: str
    transport: str  # "stdio", "http" or "sse"
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None
    env_names: tuple[str, ...] = ()  # names only: values may be secrets
    header_names: tuple[str, ...] = ()

    @property
    def through_lockgate(self) -> bool:
        """Launched as ``lockgate connect NAME``, or pointed at a local gateway's
        ``/mcp/NAME``."""
        if self.command is not None:
            program = Path(self.command).name.lower().removesuffix(".exe")
            return program == "lockgate" and self.args[:1] == ("connect",)
        if self.url is not None:
            parts = urlsplit(self.url)
            local = parts.hostname in ("127.0.0.1", "localhost", "::1")
            return local and parts.path.startswith("/mcp/")
        return False

    def target(self) -> str:
        """What it runs or where it goes, for a person (no env or header values)."""
        if self.command is not None:
            return " ".join([self.command, *self.args])
        return self.url or "?"


@dataclass
class ClientFile:
    """One client's config file as found (``error`` set when it could not be read)."""

    client: ClientFormat
    scope: str  # "user", "project", ...
    path: Path
    servers: list[ServerEntry] = field(default_factory=list)
    error: str | None = None


CLIENTS: tuple[ClientFormat, ...] = (
    ClientFormat("claude-desktop", "Claude Desktop", "mcpServers"),
    ClientFormat("claude-code", "Claude Code", "mcpServers"),
    ClientFormat("cursor", "Cursor", "mcpServers"),
    ClientFormat("vscode", "VS Code", "servers", jsonc=True),  # settings.json: mcp.servers
    ClientFormat("windsurf", "Windsurf", "mcpServers", url_fields=("serverUrl", "url")),
)
_BY_NAME = {c.name: c for c in CLIENTS}


def _locations(
    home: Path, system: str, environ: Mapping[str, str], project: Path | None
) -> Iterator[tuple[str, str, Path]]:
    """(client name, scope, path) for every file a client may keep its servers in."""
    appdata = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    if system == "darwin":
        app_support = home / "Library" / "Application Support"
        yield "claude-desktop", "user", app_support / "Claude" / "claude_desktop_config.json"
    elif system == "win32":
        yield "claude-desktop", "user", appdata / "Claude" / "claude_desktop_config.json"
    else:  # Linux and other XDG systems (Claude Desktop has no official Linux build)
        yield "claude-desktop", "user", xdg / "Claude" / "claude_desktop_config.json"
    code_user = {
        "darwin": home / "Library" / "Application Support" / "Code" / "User",
        "win32": appdata / "Code" / "User",
    }.get(system, xdg / "Code" / "User")
    yield "vscode", "user", code_user / "mcp.json"
    # Before mcp.json, VS Code kept servers under "mcp" in settings.json; each profile
    # other than the default has a folder of its own.
    yield "vscode", "settings", code_user / "settings.json"
    for profile in sorted(code_user.glob("profiles/*/mcp.json")):
        yield "vscode", f"profile {profile.parent.name}", profile
    yield "claude-code", "user", home / ".claude.json"
    yield "cursor", "user", home / ".cursor" / "mcp.json"
    yield "windsurf", "user", home / ".codeium" / "windsurf" / "mcp_config.json"
    if project is not None:
        yield "claude-code", "project", project / ".mcp.json"
        yield "cursor", "project", project / ".cursor" / "mcp.json"
        yield "vscode", "project", project / ".vscode" / "mcp.json"


def find_clients(
    home: Path | None = None,
    *,
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
    project: Path | None = None,
) -> list[ClientFile]:
    """Every client config file that exists, read (a file that can't be read has its
    ``error`` set instead of servers)."""
    home = Path.home() if home is None else home
    env = os.environ if environ is None else environ
    found = []
    for name, scope, path in _locations(home, system or sys.platform, env, project):
        if path.is_file():
            entry = read_file(_BY_NAME[name], scope, path)
            if scope != "settings" or entry.servers or entry.error:
                found.append(entry)  # settings.json only when it has MCP servers
    return found


def read_file(client: ClientFormat, scope: str, path: Path) -> ClientFile:
    entry = ClientFile(client, scope, path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is allowed (Windows editors)
        doc = _jsonc.loads(text) if client.jsonc else json.loads(text)
    except OSError as exc:
        entry.error = f"cannot read it: {exc.strerror or exc}"
        return entry
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        entry.error = f"not valid JSON: {exc}"
        return entry
    if not isinstance(doc, dict):
        entry.error = "not a JSON object"
        return entry
    for table in server_tables(client, scope, doc):
        entry.servers += _servers(client, _at(doc, table))
    return entry


def server_tables(client: ClientFormat, scope: str, doc: dict[str, Any]) -> list[JsonPath]:
    """The JSON paths of the objects in ``doc`` that map server names to entries."""
    candidates: list[JsonPath] = [(client.key,)]
    if scope == "settings":  # VS Code's settings.json
        candidates = [("mcp", "servers")]
    if client.name == "claude-code" and scope == "user":
        # ~/.claude.json also keeps servers per project ("local" scope)
        projects = doc.get("projects")
        if isinstance(projects, dict):
            candidates += [("projects", p, client.key) for p in projects]
    return [t for t in candidates if isinstance(_at(doc, t), dict)]


def _at(doc: Any, where: JsonPath) -> Any:
    """The value at ``where``, or None."""
    for part in where:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _servers(client: ClientFormat, table: Any) -> Iterator[ServerEntry]:
    if not isinstance(table, dict):
        return
    for name, raw in table.items():
        if not isinstance(raw, dict):
            continue
        url = next((raw[f] for f in client.url_fields if isinstance(raw.get(f), str)), None)
        command = raw.get("command") if isinstance(raw.get("command"), str) else None
        kind = raw.get("type") if isinstance(raw.get("type"), str) else None
        transport = kind or ("stdio" if command is not None else "http")
        if transport == "streamable-http":
            transport = "http"
        args, env, headers = raw.get("args"), raw.get("env"), raw.get("headers")
        yield ServerEntry(
            name=str(name),
            transport=transport,
            command=command,
            args=tuple(str(a) for a in args) if isinstance(args, list) else (),
            url=url if command is None else None,
            env_names=tuple(sorted(env)) if isinstance(env, dict) else (),
            header_names=tuple(sorted(headers)) if isinstance(headers, dict) else (),
        )
