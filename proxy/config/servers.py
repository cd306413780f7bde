"""servers.json: the upstream MCP servers, in the ``mcpServers`` shape clients already use.

.. code-block:: json

    {"mcpServers": {
        "git": {"command": "uvx", "args": ["mcp-server-git"], "env": {"TOKEN": "keyring:git"}},
        "docs": {"url": "https://example.test/mcp", "headers": {"Authorization": "keyring:docs"}}
    }}

A server with ``command`` is started as a child process and spoken to over stdio; one with
``url`` is reached over streamable HTTP, or over SSE when ``"type": "sse"`` says so or,
with no ``type``, when the server refuses streamable HTTP (the spec's fallback) (VS
Code's ``servers`` key and its ``type`` field are accepted too, so a config can be pasted
in as it is). Fields Lockgate does not use (``autoApprove``, ``timeout``...) are kept and
ignored, since they belong to the client the config came from.

``"disabled": true`` (a boolean; anything else is an error) turns a server off in
Lockgate: it is parsed and listed (the window shows it and can turn it on again, by
removing the field), but the gateway does not serve it: a client that asks for it is told
it is turned off and how to turn it on, and its open sessions are refused as a removed
server's are. ``"disabled": false`` is the same as no field.

A value written ``"keyring:NAME"`` in ``env`` or ``headers`` is a reference: it is looked
up in the OS keyring only when the server starts (:func:`resolve_secrets`), and the
resolved spec is never written anywhere or logged. ``args`` may not hold one: a process's
command line is readable by every local user (``ps``, ``/proc/PID/cmdline``), so a secret
there would leave the keyring for everyone to see. A server that wants a secret on its
command line gets it through ``env`` instead (most accept an environment variable).

A ``url`` server may say how Lockgate signs in to it with OAuth (the MCP authorization
spec), when it answers 401 with a Bearer challenge:

.. code-block:: json

    "docs": {"url": "https://docs.example.test/mcp",
             "oauth": {"client_id": "lockgate", "client_secret": "keyring:docs-client",
                       "scopes": ["read", "write"]}}

Every field of ``oauth`` may be left out: without ``client_id`` Lockgate registers itself
with the authorization server (dynamic client registration), and a server with no
``oauth`` at all that asks for a sign-in gets the same. ``client_secret`` must be a
``keyring:`` reference (a literal is refused). ``oauth`` goes only with ``url``, and not
with an ``Authorization`` header (Lockgate puts the OAuth token there). The tokens
themselves are kept in the keyring (:mod:`proxy.config.oauth_store`), never here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from proxy.config.jsontext import format_path, locate
from proxy.config.secrets import SecretError, SecretStore, secret_name, sign_in_entry
from proxy.errors import LockgateError

__all__ = [
    "MAX_SERVERS_BYTES",
    "SERVER_NAME_RULE",
    "HttpServer",
    "OAuthSettings",
    "ServerSpec",
    "ServersError",
    "ServersRead",
    "StdioServer",
    "load_servers",
    "oauth_applies",
    "parse_servers",
    "parse_servers_bytes",
    "read_servers_file",
    "resolve_secrets",
    "secret_references",
    "secret_values",
    "sets_authorization",
    "valid_server_name",
]

KEYRING_IN_ARGS_REFUSED = (
    "a keyring: secret cannot go in args: every local user can read a command line "
    '(ps, /proc). Pass it in env instead, e.g. "env": {"API_KEY": "keyring:NAME"}, '
    "if the server reads it from there"
)
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVER_NAME_RULE = (
    "a server name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
    "digit (it appears in URLs and tool patterns)"
)
MAX_SERVERS_BYTES = 1024 * 1024


def valid_server_name(name: str) -> bool:
    """Server names appear in URLs (``/mcp/NAME``) and tool patterns (``NAME/tool``)."""
    return _SERVER_NAME.fullmatch(name) is not None


class ServersError(LockgateError):
    """servers.json cannot be used; the message names the file, line and JSON path."""

    title = "servers.json cannot be used"


@dataclass(frozen=True, slots=True)
class StdioServer:
    """A server Lockgate starts as a child process and speaks to over stdio."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    disabled: bool = field(default=False, kw_only=True)  # "disabled": true: not served

    @property
    def transport(self) -> Literal["stdio"]:
        return "stdio"


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """How Lockgate signs in to a remote server with OAuth: a client registered by hand
    (``client_id``, and ``client_secret`` as a ``keyring:`` reference for a confidential
    one) or, without ``client_id``, one Lockgate registers itself; ``scopes`` to ask for
    (empty: what the server's challenge or metadata says)."""

    client_id: str | None = None
    client_secret: str | None = None  # "keyring:NAME" in servers.json; resolved in memory
    scopes: tuple[str, ...] = ()
    # the authorization server the client secret is for; without it, the first one
    # signed in with (a server's metadata must not send the secret elsewhere)
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class HttpServer:
    """A remote server reached over streamable HTTP (or SSE)."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    sse: bool | None = None  # None: streamable HTTP first, SSE if the server refuses it
    oauth: OAuthSettings | None = None  # how to sign in, if said; see oauth_applies
    disabled: bool = field(default=False, kw_only=True)  # "disabled": true: not served

    @property
    def transport(self) -> Literal["http", "sse"]:
        return "sse" if self.sse else "http"


ServerSpec = StdioServer | HttpServer
_Report = Callable[[tuple[str | int, ...], str], None]


def oauth_applies(spec: ServerSpec) -> bool:
    """Whether Lockgate may be ``spec``'s OAuth client: a remote server whose
    Authorization header servers.json does not set (one that does signs in its own way)."""
    return isinstance(spec, HttpServer) and not sets_authorization(spec.headers)


def sets_authorization(headers: Iterable[str]) -> bool:
    """Whether the header names ``headers`` include Authorization (in any case): such a
    remote server signs in its own way, with a value from the keyring."""
    return any(name.lower() == "authorization" for name in headers)


def load_servers(path: Path) -> dict[str, ServerSpec]:
    """The servers in ``path``; a missing file means no servers.

    Raises:
        ServersError: the file cannot be read or is not a valid servers.json.
    """
    result = read_servers_file(path)
    if result.error is not None:
        raise ServersError(result.error)
    return dict(result.servers)


def parse_servers(text: str, source: str = "servers.json") -> dict[str, ServerSpec]:
    """Parse the text of a servers.json.

    Raises:
        ServersError: every problem, one per line, with line numbers and JSON paths.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServersError(
            f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ServersError(f"{source}: not valid JSON: {exc}") from None
    locs = locate(text)
    problems: list[str] = []

    def problem(path: tuple[str | int, ...], message: str) -> None:
        where = locs.line_col(path)
        prefix = f"{source}:{where[0]}:{where[1]}" if where else source
        problems.append(f"{prefix}: {format_path(path)}: {message}")

    if not isinstance(document, dict):
        raise ServersError(f'{source}: expected an object like {{"mcpServers": {{...}}}}')
    key = "mcpServers" if "mcpServers" in document else "servers" if "servers" in document else None
    if key is None:
        raise ServersError(f'{source}: no "mcpServers" object (the shape MCP clients use)')
    entries = document[key]
    if not isinstance(entries, dict):
        problem((key,), "must be an object mapping server names to their settings")
        raise ServersError("\n".join(problems))
    servers: dict[str, ServerSpec] = {}
    for name, spec in entries.items():
        here: tuple[str | int, ...] = (key, name)
        if not valid_server_name(name):
            problem(here, SERVER_NAME_RULE)
            continue
        if not isinstance(spec, dict):
            problem(here, 'must be an object with "command" or "url"')
            continue
        typos = [(key, hint) for key in spec if (hint := _meant(key)) is not None]
        for key, hint in typos:
            problem((*here, key), f"unknown field (did you mean {hint!r}?)")
        disabled = spec.get("disabled", False)
        if not isinstance(disabled, bool):
            problem(
                (*here, "disabled"),
                "must be true or false (true turns the server off in Lockgate)",
            )
        parsed = _one_server(name, spec, here, problem)
        if parsed is not None and not typos and isinstance(disabled, bool):
            servers[name] = replace(parsed, disabled=True) if disabled else parsed
    if problems:
        raise ServersError("\n".join(problems))
    return servers


_FIELDS = ("command", "args", "env", "cwd", "url", "headers", "type", "transport", "oauth")
_OAUTH_FIELDS = ("client_id", "client_secret", "scopes", "issuer")
OAUTH_LITERAL_REFUSED = (
    "must be a keyring: reference, not the secret itself: store it with "
    '"lockgate secret set NAME", then write "client_secret": "keyring:NAME"'
)


def _meant(key: str) -> str | None:
    """The field ``key`` is a slip for ("comand": "command"), or None. Other unknown
    fields are a client's own (disabled, autoApprove...) and stay allowed; a slip must
    not be, or a server would start without the env or args the person wrote."""
    if key in _FIELDS:
        return None
    close = difflib.get_close_matches(key, _FIELDS, n=1, cutoff=0.65)
    return close[0] if close else None


def _one_server(
    name: str, spec: dict[str, Any], here: tuple[str | int, ...], problem: Any
) -> ServerSpec | None:
    kind = spec.get("type", spec.get("transport"))
    if "command" in spec and "url" in spec:
        problem(here, 'has both "command" and "url"; a server is one or the other')
        return None
    if "oauth" in spec and "url" not in spec:
        problem(
            (*here, "oauth"),
            'goes only with a "url" server (a remote one); a "command" server is not signed in to',
        )
        return None
    if "command" in spec:
        if kind not in (None, "stdio"):
            problem((*here, "type"), f'{kind!r} does not go with "command" (use "stdio")')
            return None
        command, args, env, cwd = (
            spec["command"],
            spec.get("args", []),
            spec.get("env", {}),
            spec.get("cwd"),
        )
        ok = True
        if not isinstance(command, str) or not command:
            problem((*here, "command"), "must be a non-empty string")
            ok = False
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            problem((*here, "args"), "must be a list of strings")
            ok = False
        else:
            for index, arg in enumerate(args):
                if secret_name(arg) is not None:
                    problem((*here, "args", index), KEYRING_IN_ARGS_REFUSED)
                    ok = False
        if not _string_map(env):
            problem((*here, "env"), "must be an object of string values")
            ok = False
        if cwd is not None and not isinstance(cwd, str):
            problem((*here, "cwd"), "must be a string")
            ok = False
        return StdioServer(name, command, tuple(args), dict(env), cwd) if ok else None
    if "url" in spec:
        url, headers = spec["url"], spec.get("headers", {})
        ok = True
        if not isinstance(url, str) or not re.match(r"https?://", url):
            problem((*here, "url"), "must be an http:// or https:// URL")
            ok = False
        if not _string_map(headers):
            problem((*here, "headers"), "must be an object of string values")
            ok = False
        if kind not in (None, "http", "streamable-http", "streamableHttp", "sse"):
            problem((*here, "type"), f'{kind!r} is not "http" or "sse"')
            ok = False
        sse = None if kind is None else kind == "sse"
        oauth: OAuthSettings | None = None
        if "oauth" in spec:
            oauth = _oauth_settings(spec["oauth"], (*here, "oauth"), problem)
            if oauth is None:
                ok = False
            elif isinstance(headers, dict) and any(
                isinstance(k, str) and k.lower() == "authorization" for k in headers
            ):
                problem(
                    (*here, "oauth"),
                    'cannot go with an "Authorization" header: Lockgate puts the OAuth token '
                    "there (remove one of the two)",
                )
                ok = False
        return HttpServer(name, url, dict(headers), sse=sse, oauth=oauth) if ok else None
    problem(here, 'needs "command" (a program to start) or "url" (a remote server)')
    return None


def _oauth_settings(
    value: Any, here: tuple[str | int, ...], problem: _Report
) -> OAuthSettings | None:
    """The ``oauth`` object of a url server, or None after reporting what is wrong."""
    if not isinstance(value, dict):
        problem(here, 'must be an object, e.g. {"client_id": "...", "scopes": ["..."]} or {}')
        return None
    ok = True
    for key in value:
        if key not in _OAUTH_FIELDS:
            close = difflib.get_close_matches(key, _OAUTH_FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problem((*here, key), f"unknown field{hint}; known: {', '.join(_OAUTH_FIELDS)}")
            ok = False
    client_id, secret, scopes = (
        value.get("client_id"),
        value.get("client_secret"),
        value.get("scopes", []),
    )
    if client_id is not None and (not isinstance(client_id, str) or not client_id.strip()):
        problem((*here, "client_id"), "must be a non-empty string")
        ok = False
    if secret is not None:
        if not isinstance(secret, str):
            problem((*here, "client_secret"), "must be a string")
            ok = False
        elif not secret_name(secret):
            problem((*here, "client_secret"), OAUTH_LITERAL_REFUSED)
            ok = False
        elif client_id is None:
            problem((*here, "client_secret"), 'needs the "client_id" it belongs to')
            ok = False
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and s and not any(c.isspace() for c in s) for s in scopes
    ):
        problem((*here, "scopes"), 'must be a list of scope names without spaces, e.g. ["read"]')
        ok = False
    issuer = value.get("issuer")
    if issuer is not None and (
        not isinstance(issuer, str) or urlsplit(issuer).scheme not in ("https", "http")
    ):
        problem((*here, "issuer"), "must be the authorization server's URL, e.g. https://...")
        ok = False
    if not ok:
        return None
    return OAuthSettings(client_id, secret, tuple(scopes), issuer)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


@dataclass(frozen=True, slots=True)
class ServersRead:
    """What reading servers.json found: the servers, or the error; and the content's hash."""

    digest: str
    source: str
    servers: Mapping[str, ServerSpec] = field(default_factory=dict)
    error: str | None = None


def read_servers_file(path: Path) -> ServersRead:
    """Read and parse ``path`` (blocking: call it off the event loop); never raises. A
    missing file means no servers; one too large is refused before it is read."""
    try:
        stat = path.stat()
        if stat.st_size > MAX_SERVERS_BYTES:
            return ServersRead(
                f"large:{stat.st_size}:{stat.st_mtime_ns}",
                str(path),
                error=f"{path}: larger than {MAX_SERVERS_BYTES} bytes",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        return ServersRead("missing", str(path))
    except OSError as exc:
        return ServersRead(f"unreadable:{exc}", str(path), error=f"{path}: cannot read: {exc}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        return ServersRead(digest, str(path), parse_servers_bytes(data, str(path)))
    except ServersError as exc:
        return ServersRead(digest, str(path), error=str(exc))


def parse_servers_bytes(data: bytes, source: str = "servers.json") -> dict[str, ServerSpec]:
    """Parse the bytes of a servers.json as the gateway reads the file: at most
    ``MAX_SERVERS_BYTES``, UTF-8 (a BOM allowed), then :func:`parse_servers`.

    Raises:
        ServersError: the bytes are not a valid servers.json.
    """
    if len(data) > MAX_SERVERS_BYTES:
        raise ServersError(f"{source}: larger than {MAX_SERVERS_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ServersError(f"{source}: cannot read: {exc}") from None
    return parse_servers(text, source)


def resolve_secrets(spec: ServerSpec, store: SecretStore) -> ServerSpec:
    """``spec`` with every ``keyring:NAME`` value replaced by the secret. Keep the result
    in memory only.

    Raises:
        proxy.config.secrets.SecretError: a referenced secret is missing or the keyring is unusable.
    """

    def value(v: str) -> str:
        name = secret_name(v)
        if name is not None and sign_in_entry(name):
            raise SecretError(
                f"server {spec.name!r}: keyring:{name} is where Lockgate keeps a server's "
                "sign-in; servers.json may not hand it to a server"
            )
        return v if name is None else store.get(name)

    if isinstance(spec, StdioServer):
        if any(secret_name(a) is not None for a in spec.args):  # parse_servers refuses it
            raise SecretError(f"server {spec.name!r}: {KEYRING_IN_ARGS_REFUSED}")
        return replace(spec, env={k: value(v) for k, v in spec.env.items()})
    oauth = spec.oauth
    if oauth is not None and oauth.client_secret is not None:
        oauth = replace(oauth, client_secret=value(oauth.client_secret))
    return replace(spec, headers={k: value(v) for k, v in spec.headers.items()}, oauth=oauth)


def secret_values(spec: ServerSpec, resolved: ServerSpec) -> list[str]:
    """The values ``resolve_secrets`` put in place of ``keyring:`` references (to keep
    them out of error messages)."""
    if isinstance(spec, StdioServer) and isinstance(resolved, StdioServer):
        pairs = [(spec.env[k], resolved.env[k]) for k in spec.env]
    elif isinstance(spec, HttpServer) and isinstance(resolved, HttpServer):
        pairs = [(spec.headers[k], resolved.headers[k]) for k in spec.headers]
        if spec.oauth is not None and resolved.oauth is not None:
            pairs.append((spec.oauth.client_secret or "", resolved.oauth.client_secret or ""))
    else:
        return []
    return [new for old, new in pairs if secret_name(old) is not None]


def secret_references(spec: ServerSpec) -> list[str]:
    """The names of the keyring secrets ``spec`` refers to (for display; never values)."""
    if isinstance(spec, StdioServer):
        values = list(spec.env.values())
    else:
        values = list(spec.headers.values())
        if spec.oauth is not None and spec.oauth.client_secret is not None:
            values.append(spec.oauth.client_secret)
    return [n for v in values if (n := secret_name(v)) is not None]


def server_log_path(log_dir: Path, server: str) -> Path:
    """The file a stdio server's stderr goes to."""
    return log_dir / f"server-{server}.log"


def open_server_log(log_dir: Path, server: str) -> TextIO:
    """Where a stdio server's stderr goes: a private log file per server (the folder
    0700, the file 0600: a server may print its secrets there)."""
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = server_log_path(log_dir, server)
    errlog = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
    path.chmod(0o600)
    return errlog
