"""Routing a client's MCP servers through Lockgate, and putting them back exactly.

``route`` imports each of a client file's server entries into ``servers.json`` and rewrites
the entry to reach the server through Lockgate: ``lockgate connect NAME`` (every client can
launch a command), or the gateway's HTTP endpoint with a token of the client's own.

Every value in an entry's ``env`` and ``headers`` goes into the OS keyring and is written
as a ``keyring:NAME`` reference: Lockgate cannot tell a token from a setting, so it treats
them all as secrets.

Files are changed by splicing: only the text of each routed entry's value is replaced, so
comments, formatting and every other setting stay as they were, byte for byte. Before the
client's file is written, a record of each replaced entry (its original text, with the
secret values cut out and named by their keyring references) goes to Lockgate's data
folder. ``unroute`` splices the originals back, but only into entries that still say what
routing wrote (compared as JSON, so a reformatted file still counts): where nothing else
changed, the file is the original byte for byte; where the person edited it since, their
edits stay.

Every write is all or nothing: a temporary file renamed over the old one, after checking
that the file did not change meanwhile. A file that is missing, broken or read-only is
reported and never touched. Those files are read and written by :mod:`.files`; the record
is :mod:`.record`; this module decides what changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from proxy.clients import ClientFile, ClientFormat, _at, _jsonc, _servers, server_tables
from proxy.clients.files import (
    ClientDocument,
    RecordNotUpdated,
    RouteError,
    check_writable,
    no_duplicate_keys,
    read_client_file,
    read_servers,
    write_client_file,
    write_servers,
)
from proxy.clients.record import (
    RECORD_VERSION,
    cut_secrets,
    file_id,
    fill_secrets,
    load_imported,
    load_record,
    other_records,
    record_path,
    save_imported,
    save_record,
    slug,
)
from proxy.config.atomic import write_atomic
from proxy.config.jsontext import JsonPath, render_at, splice, without_member
from proxy.config.paths import Paths, lockgate_command, resolve_paths
from proxy.config.runinfo import DEFAULT_PORT
from proxy.config.secrets import KEYRING_PREFIX, SecretError, SecretStore, secret_name
from proxy.config.servers import sets_authorization, valid_server_name
from proxy.config.servers_edit import Section, keyring_name_for, servers_with
from proxy.config.tokens import TokenError, TokenStore

__all__ = [
    "HTTP_CLIENTS",
    "RouteError",
    "RouteResult",
    "UnrouteResult",
    "default_launcher",
    "record_path",
    "route",
    "token_client",
    "unroute",
]

Via = Literal["stdio", "http"]

# The fields that say what an entry runs or reaches; routing replaces them. Any other
# field (disabled, autoApprove, timeout...) belongs to the client and is kept.
_UPSTREAM_FIELDS = frozenset(
    {"command", "args", "env", "cwd", "url", "serverUrl", "headers", "type", "transport"}
)
# Clients whose files can point at a remote server with headers of our choosing.
HTTP_CLIENTS = frozenset({"claude-code", "cursor", "vscode", "windsurf"})
_VARIABLE = re.compile(r"\$\{[^}]*\}")


# Routing reads and rewrites servers.json; two at once (the app's worker threads) would
# each write their own version. One at a time in this process; across processes, a write
# first checks that the file is still what was read.
_LOCK = threading.Lock()


@dataclass
class RouteResult:
    path: Path
    routed: list[tuple[str, str]] = field(default_factory=list)  # (entry, Lockgate server)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, why)
    imported: list[str] = field(default_factory=list)  # servers added to servers.json
    secrets: list[str] = field(default_factory=list)  # keyring names stored
    record: Path | None = None
    notes: list[str] = field(default_factory=list)  # what the person should know
    # imported remote servers with no Authorization header: those that sign in (OAuth)
    # want the person to, once, in Lockgate (the client's own sign-in stays the client's)
    sign_in: list[str] = field(default_factory=list)


@dataclass
class UnrouteResult:
    path: Path
    restored: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (entry, why it was left)
    byte_exact: bool = False  # the file is now what it was before routing
    revoked_token: str | None = None
    removed_servers: list[str] = field(default_factory=list)  # from servers.json, unused
    removed_secrets: list[str] = field(default_factory=list)  # their keyring entries
    notes: list[str] = field(default_factory=list)


def token_client(client_file: ClientFile) -> str:
    """The name the token of a routed file's HTTP entries is issued to (its grant in the
    policy, and its name in the log): ``cursor@user``; a project's file adds its own id."""
    name = f"{client_file.client.name}@{slug(client_file.scope)}"
    if client_file.scope == "project":
        name += "-" + file_id(client_file)[:6]
    return name


def default_launcher() -> list[str]:
    """The command that starts this Lockgate, absolute (see :func:`lockgate_command`).

    Raises:
        RouteError: no lockgate command can be found.
    """
    command = lockgate_command()
    if command is None:
        raise RouteError("the lockgate command is not installed; install Lockgate first")
    return [command]


# -- routing ----------------------------------------------------------------------------


@dataclass
class _Plan:
    where: JsonPath
    entry: str
    server: str
    spec: dict[str, Any]  # for servers.json (secrets as references)
    secrets: dict[str, str]  # keyring name -> value
    cuts: list[tuple[int, int, str, str]]  # secret literals in the file's text
    new: bool  # a server to add to servers.json (False: an equal one is there)


def _why_not(entry: dict[str, Any], client: ClientFormat) -> str | None:
    """Why an entry cannot be routed, or None."""
    if "envFile" in entry:
        return "reads its environment from an envFile; add it to servers.json by hand"
    strings: list[Any] = [
        entry.get("command"),
        entry.get("cwd"),
        *(entry.get(f) for f in client.url_fields),
    ]
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return 'its "args" is not a list of strings'
    strings += args
    if any(a.startswith(KEYRING_PREFIX) for a in args):
        return (
            'passes a "keyring:" value in "args", which Lockgate refuses: a command line is '
            "readable by every local user; move the secret into env by hand"
        )
    for key in ("env", "headers"):
        value = entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return f'its "{key}" is not an object of strings'
        strings += value.values()
    for s in strings:
        if isinstance(s, str) and (variable := _VARIABLE.search(s)):
            return (
                f"uses {variable.group(0)}, which {client.label} fills in when it starts "
                "the server; add it to servers.json by hand"
            )
    kind = entry.get("type")
    if isinstance(entry.get("command"), str):
        if kind not in (None, "stdio"):
            return f"has a command and type {kind!r}"
        return None
    if any(isinstance(entry.get(f), str) for f in client.url_fields):
        if kind not in (None, "http", "streamable-http", "streamableHttp", "sse"):
            return f"has an unknown type {kind!r}"
        return None
    return "has no command and no url"


def _server_name(entry: str, taken: Callable[[str], bool], client: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", entry).strip("-._")[:48] or "server"
    if not valid_server_name(base):
        base = "s-" + base
    for candidate in (base, f"{base}-{client}", *(f"{base}-{client}-{i}" for i in range(2, 99))):
        if not taken(candidate):
            return candidate
    raise RouteError(f"no free server name for {entry!r} in servers.json")


def _same_server(
    existing: Any, spec: dict[str, Any], values: dict[str, str], store: SecretStore
) -> bool:
    """Whether servers.json's ``existing`` entry is ``spec`` (secrets compared by value)."""
    if not isinstance(existing, dict):
        return False
    plain = {k: v for k, v in existing.items() if k not in ("env", "headers")}
    if plain != {k: v for k, v in spec.items() if k not in ("env", "headers")}:
        return False
    for key in ("env", "headers"):
        mine, theirs = spec.get(key, {}), existing.get(key, {})
        if not isinstance(theirs, dict) or set(mine) != set(theirs):
            return False
        for name, reference in mine.items():
            want = values[secret_name(reference) or ""]
            have = theirs[name]
            if (ref := secret_name(have)) is not None:
                have = _stored(store, ref)  # None (not stored) is never equal
            if have != want:
                return False
    return True


def _connect_args(paths: Paths, server: str, client: str) -> list[str]:
    args = ["connect", server, "--client", client]
    defaults = resolve_paths(environ={})
    # A client starts `lockgate connect` without Lockgate's environment variables.
    if paths.config_dir.absolute() != defaults.config_dir.absolute():
        args += ["--config-dir", str(paths.config_dir.absolute())]
    if paths.data_dir.absolute() != defaults.data_dir.absolute():
        args += ["--data-dir", str(paths.data_dir.absolute())]
    return args


def _routed_entry(
    client: ClientFormat,
    original: dict[str, Any],
    server: str,
    via: Via,
    *,
    launcher: Sequence[str],
    paths: Paths,
    url: str,
    token: str | None,
) -> dict[str, Any]:
    kept = {k: v for k, v in original.items() if k not in _UPSTREAM_FIELDS}
    typed = "type" in original or client.name in ("vscode", "claude-code")
    if via == "stdio":
        routed: dict[str, Any] = {"type": "stdio"} if typed else {}
        routed["command"] = launcher[0]
        routed["args"] = [*launcher[1:], *_connect_args(paths, server, client.name)]
        return {**routed, **kept}
    routed = {"type": "http"} if typed else {}
    routed[client.url_fields[0]] = url + server
    routed["headers"] = {"Authorization": f"Bearer {token}"}
    return {**routed, **kept}


def _token_in(entry: Any) -> str | None:
    if isinstance(entry, dict) and isinstance(entry.get("headers"), dict):
        value = entry["headers"].get("Authorization", "")
        if isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


def route(
    client_file: ClientFile,
    paths: Paths,
    *,
    store: SecretStore,
    via: Via = "stdio",
    launcher: Sequence[str] | None = None,
    port: int = DEFAULT_PORT,
) -> RouteResult:
    """Route every entry of ``client_file`` that does not go through Lockgate yet.

    Raises:
        RouteError: nothing was changed, and the message says why.
    """
    with _LOCK:
        return _route(client_file, paths, store=store, via=via, launcher=launcher, port=port)


def _route(
    client_file: ClientFile,
    paths: Paths,
    *,
    store: SecretStore,
    via: Via,
    launcher: Sequence[str] | None,
    port: int,
) -> RouteResult:
    client, shown = client_file.client, client_file.path
    if via == "http" and client_file.scope == "project":
        raise RouteError(
            f"{shown}: a project's file is often shared (committed with the project), and "
            "a token must not be: use stdio for it"
        )
    if via == "http" and client.name not in HTTP_CLIENTS:
        raise RouteError(f"{client.label} starts its servers as commands only: use stdio")
    launcher = list(launcher) if launcher is not None else default_launcher()
    result = RouteResult(shown)
    if client_file.scope == "project":
        launcher = _shareable(launcher, result)
    doc = read_client_file(client, shown)
    no_duplicate_keys(doc, client, client_file.scope, shown)
    servers_was = read_servers(paths)
    existing = servers_was.entries

    # Plan every entry first; nothing is written until all of it is known to work.
    plans: list[_Plan] = []
    planned: set[str] = set()
    for table in server_tables(client, client_file.scope, doc.doc):
        for entry_name, entry in _at(doc.doc, table).items():
            where = (*table, entry_name)
            label = f"{entry_name} ({table[1]})" if table[0] == "projects" else entry_name
            if not isinstance(entry, dict):
                result.skipped.append((label, "not an object"))
                continue
            if _goes_through_lockgate(client, entry):
                result.skipped.append((label, "already goes through Lockgate"))
                continue
            why = _why_not(entry, client)
            if why is not None:
                result.skipped.append((label, why))
                continue
            plans.append(
                _plan(
                    client,
                    doc=doc,
                    where=where,
                    entry=entry,
                    existing=existing,
                    planned=planned,
                    store=store,
                )
            )
            planned.add(plans[-1].server)
            result.routed.append((label, plans[-1].server))
    if not plans:
        return result
    check_writable(doc, shown)

    grant = token_client(client_file)
    tokens = TokenStore(paths.clients_file)
    record_file = record_path(paths, client_file)
    record = load_record(record_file) or {
        "version": RECORD_VERSION,
        "client": client.name,
        "scope": client_file.scope,
        "path": str(shown.absolute()),
        "entries": [],
        "before": hashlib.sha256(doc.raw).hexdigest(),  # the file before its first routing
    }
    token: str | None = None
    made_token = False
    if via == "http":
        token = _reuse_token(doc, client_file, tokens, grant)
    url = f"http://127.0.0.1:{port}/mcp/"

    # 1. Secrets into the keyring, and the token (an error here leaves every file as it
    # was).
    cut_entries: list[tuple[_Plan, tuple[int, int], str, list[list[Any]]]] = []
    extra_secrets: dict[str, str] = {}
    for plan in plans:
        span = doc.span(plan.where)
        assert span is not None
        cut = [(s - span[0], e - span[0], n, v) for s, e, n, v in plan.cuts]
        holed, holes, extra = cut_secrets(doc.text[span[0] : span[1]], cut)
        extra_secrets.update(extra)
        cut_entries.append((plan, span, holed, holes))
    try:
        for plan in plans:
            for name, value in plan.secrets.items():
                store.set(name, value)
        for name, value in extra_secrets.items():
            store.set(name, value)
        if via == "http" and token is None:
            token = tokens.create(grant, replace=True)
            made_token = True
    except (SecretError, TokenError) as exc:
        raise RouteError(str(exc)) from None
    if via == "http":
        record["token_client"] = grant
    edits: list[tuple[int, int, str]] = []
    entries: list[dict[str, Any]] = []
    for plan, span, holed, holes in cut_entries:
        new_entry = _routed_entry(
            client,
            _at(doc.doc, plan.where),
            plan.server,
            via,
            launcher=launcher,
            paths=paths,
            url=url,
            token=token,
        )
        routed_text = render_at(new_entry, doc.text, span[0], doc.newline)
        edits.append((span[0], span[1], routed_text))
        entries.append(
            {
                "path": list(plan.where),
                "server": plan.server,
                "original": holed,
                "holes": holes,
                "routed": routed_text,
            }
        )
    result.secrets = sorted({n for p in plans for n in p.secrets})

    # 2. servers.json, checked by the same loader the gateway uses.
    new_servers = {p.server: p.spec for p in plans if p.new}
    servers_now = servers_was
    if new_servers:
        text = servers_with(servers_was.text, servers_was.key, new_servers)
        servers_now = write_servers(servers_was, text)
        result.imported = sorted(new_servers)
        result.sign_in = sorted(
            name
            for name, spec in new_servers.items()
            if "url" in spec and not sets_authorization(spec.get("headers", {}))
        )

    def undo() -> None:
        """The client's file could not be written: take back what was done for it."""
        if new_servers:
            with contextlib.suppress(RouteError, OSError):
                if servers_was.raw is None:
                    if paths.servers_file.read_bytes() == servers_now.raw:  # still ours
                        paths.servers_file.unlink()
                else:
                    write_servers(servers_now, servers_was.text)
        if made_token:
            with contextlib.suppress(TokenError):
                tokens.revoke(grant)

    # 3. The record (the backup of every entry about to change), then the client's file.
    # An entry routed before and put back by hand is routed anew: its new record replaces
    # the old one.
    routed_now = {tuple(e["path"]) for e in entries}
    record["entries"] = [
        e for e in record["entries"] if tuple(e["path"]) not in routed_now
    ] + entries
    record["routed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    previous = record_file.read_bytes() if record_file.exists() else None
    try:
        save_record(record_file, record)
    except RouteError:
        undo()
        raise
    try:
        write_client_file(doc, shown, splice(doc.text, edits))
    except RouteError:
        undo()
        if previous is None:
            record_file.unlink()
        else:
            write_atomic(record_file, previous)
        raise
    result.record = record_file
    if new_servers:
        try:
            imported = load_imported(paths)
            save_imported(paths, {**imported, **new_servers})
        except RouteError as exc:  # routed all the same; unroute will leave the servers
            result.notes.append(f"unrouting will leave {', '.join(new_servers)} in place: {exc}")
    return result


def _shareable(launcher: list[str], result: RouteResult) -> list[str]:
    """A project's file is often committed and used by others: name the command as
    ``lockgate``, found on their PATH, when that is the very command routing would write."""
    found = shutil.which("lockgate")
    if len(launcher) == 1 and found is not None:
        with contextlib.suppress(OSError):
            if os.path.samefile(found, launcher[0]):
                return ["lockgate"]
    result.notes.append(
        f"the entries name {launcher[0]}, a path on this computer; if this file is "
        "shared (committed with the project), others need Lockgate there too"
    )
    return launcher


def _goes_through_lockgate(client: ClientFormat, entry: dict[str, Any]) -> bool:
    parsed = list(_servers(client, {"e": entry}))
    return bool(parsed) and parsed[0].through_lockgate


def _plan(
    client: ClientFormat,
    *,
    doc: ClientDocument,
    where: JsonPath,
    entry: dict[str, Any],
    existing: dict[str, Any],
    planned: set[str],
    store: SecretStore,
) -> _Plan:
    if isinstance(entry.get("command"), str):
        spec: dict[str, Any] = {"command": entry["command"]}
        if entry.get("args"):
            spec["args"] = list(entry["args"])
        if isinstance(entry.get("cwd"), str):
            spec["cwd"] = entry["cwd"]
        holder: Section = "env"
    else:
        url = next(entry[f] for f in client.url_fields if isinstance(entry.get(f), str))
        spec = {"url": url}
        if entry.get("type") == "sse":
            spec["type"] = "sse"
        holder = "headers"

    def draft(server: str) -> tuple[dict[str, Any], dict[str, str]]:
        values: dict[str, str] = {}
        refs: dict[str, str] = {}
        for name, value in (entry.get(holder) or {}).items():
            keyring_name = keyring_name_for(server, holder, name)
            refs[name] = KEYRING_PREFIX + keyring_name
            values[keyring_name] = value
        return ({**spec, holder: refs} if refs else dict(spec)), values

    def taken(name: str) -> bool:
        if name in planned:
            return True
        candidate, values = draft(name)
        if name not in existing:
            # A secret of that name left by an earlier routing (its server since removed
            # from servers.json by hand) may still be what a record puts back: keep it.
            return any(_stored(store, n) not in (None, v) for n, v in values.items())
        return not _same_server(existing[name], candidate, values, store)

    server = _server_name(str(where[-1]), taken, client.name)
    full, values = draft(server)
    cuts = []
    for keyring_name, reference in zip(values, full.get(holder, {}).items(), strict=True):
        span = doc.span((*where, holder, reference[0]))
        assert span is not None
        cuts.append((span[0], span[1], keyring_name, values[keyring_name]))
    return _Plan(where, str(where[-1]), server, full, values, cuts, server not in existing)


def _reuse_token(
    doc: ClientDocument, client_file: ClientFile, tokens: TokenStore, grant: str
) -> str | None:
    """A token this file's entries already carry, if it is still the client's: making a
    new one would lock out the entries that carry the old one."""
    for table in server_tables(client_file.client, client_file.scope, doc.doc):
        for entry in _at(doc.doc, table).values():
            token = _token_in(entry)
            try:
                if token is not None and tokens.verify(token) == grant:
                    return token
            except TokenError:
                return None
    return None


def _stored(store: SecretStore, name: str) -> str | None:
    try:
        return store.get(name)
    except SecretError:
        return None


# -- unrouting --------------------------------------------------------------------------


def _same_json(a: str, b: str) -> bool:
    try:
        return bool(_jsonc.loads(a) == _jsonc.loads(b))
    except ValueError:
        return False


def _upstream_part(entry: Any) -> dict[str, Any]:
    return (
        {k: v for k, v in entry.items() if k in _UPSTREAM_FIELDS} if isinstance(entry, dict) else {}
    )


def unroute(client_file: ClientFile, paths: Paths, *, store: SecretStore) -> UnrouteResult:
    """Put back every entry that routing changed and that still says what routing wrote.

    Raises:
        RouteError: nothing was changed, and the message says why.
    """
    with _LOCK:
        return _unroute(client_file, paths, store=store)


def _unroute(client_file: ClientFile, paths: Paths, *, store: SecretStore) -> UnrouteResult:
    client, shown = client_file.client, client_file.path
    record_file = record_path(paths, client_file)
    record = load_record(record_file)
    if record is None or not record["entries"]:
        raise RouteError(f"{shown}: Lockgate has not routed this file; nothing to put back")
    doc = read_client_file(client, shown)
    result = UnrouteResult(shown)
    edits: list[tuple[int, int, str]] = []
    left: list[dict[str, Any]] = []  # entries changed since routing: kept in the record
    by_path = {tuple(e["path"]): e for e in record["entries"]}  # the newest for each
    for where, entry in by_path.items():
        label = f"{where[-1]} ({where[1]})" if where[0] == "projects" else str(where[-1])
        span = doc.span(where)
        if span is None:
            result.kept.append((label, "removed since it was routed"))
            continue
        current_text = doc.parse_text[span[0] : span[1]]
        original = fill_secrets(entry["original"], entry["holes"], store)
        if _same_json(current_text, entry["routed"]):
            edits.append((span[0], span[1], original))  # exactly as it was
            result.restored.append(label)
            continue
        current, routed = _jsonc.loads(current_text), _jsonc.loads(entry["routed"])
        if _upstream_part(current) == _upstream_part(routed):
            # Only the client's own settings changed (disabled, autoApprove...): the
            # server comes back, and those changes stay.
            before = _jsonc.loads(original)
            merged = {
                **_upstream_part(before),
                **{k: v for k, v in current.items() if k not in _UPSTREAM_FIELDS},
            }
            edits.append((span[0], span[1], render_at(merged, doc.text, span[0], doc.newline)))
            result.restored.append(f"{label} (with your later changes to its settings)")
            continue
        result.kept.append((label, "changed since it was routed; left as you edited it"))
        left.append(entry)
    if edits:
        check_writable(doc, shown)
        new_text = splice(doc.text, edits)
        try:
            (_jsonc.loads if client.jsonc else json.loads)(new_text.removeprefix("\ufeff"))
        except ValueError as exc:  # never write what the client could not read
            raise RouteError(f"{shown}: putting it back would break the file ({exc})") from None
        write_client_file(doc, shown, new_text)
        result.byte_exact = hashlib.sha256(new_text.encode("utf-8")).hexdigest() == record.get(
            "before"
        )
    grant = record.get("token_client")
    if grant and not left:  # an entry left as edited may still use the token
        try:
            TokenStore(paths.clients_file).revoke(grant)
            result.revoked_token = grant
        except TokenError:
            pass  # revoked by hand already
    try:
        if left:
            save_record(record_file, {**record, "entries": left})
        else:
            record_file.unlink()
    except OSError as exc:
        raise RecordNotUpdated(f"{record_file}: {exc.strerror or exc}") from None
    except RouteError as exc:
        raise RecordNotUpdated(exc.message) from None
    gone = {e["server"] for e in record["entries"]} - {e["server"] for e in left}
    if gone:
        _forget_unused(paths, record_file, gone, store, result)
    return result


def _forget_unused(
    paths: Paths, record_file: Path, candidates: set[str], store: SecretStore, result: UnrouteResult
) -> None:
    """Remove from servers.json the servers routing added that no client uses any more,
    and their secrets from the keyring. A server edited since it was added, or one any
    other routing record still names, stays; so does everything when a record cannot
    be read (nobody could say what is unused)."""
    try:
        imported = load_imported(paths)
        in_use = {e["server"] for r in other_records(paths, record_file) for e in r["entries"]}
        servers = read_servers(paths)
    except RouteError as exc:
        result.notes.append(f"servers.json keeps the servers routing added: {exc}")
        return
    unused = sorted(s for s in candidates if s in imported and s not in in_use)
    if not unused or servers.raw is None:
        return
    table = servers.entries
    new_text, removed = servers.text, []
    for name in unused:
        if table.get(name) == imported[name]:
            new_text = without_member(new_text, (servers.key, name))
            removed.append(name)
        elif name in table:
            result.notes.append(f"kept server {name!r}: it was changed in servers.json since")
    try:
        if removed:
            write_servers(servers, new_text)
        save_imported(paths, {k: v for k, v in imported.items() if k not in unused})
    except RouteError as exc:
        result.notes.append(f"servers.json keeps the servers routing added: {exc}")
        return
    result.removed_servers = removed
    for name in removed:
        for section in ("env", "headers"):
            for reference in (imported[name].get(section) or {}).values():
                secret = secret_name(reference)
                if secret is None:
                    continue
                for stored in (secret, secret + ".literal"):
                    try:
                        store.delete(stored)
                    except SecretError:
                        continue  # not there (a literal is kept only when needed)
                    result.removed_secrets.append(stored)
