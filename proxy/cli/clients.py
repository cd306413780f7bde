"""``lockgate clients [route|unroute]`` and ``lockgate autostart``: the agents installed here."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TextIO

from proxy.bridge.control import (
    ControlError,
    GatewayNotRunning,
    control,
    end_sessions_of,
)
from proxy.clients import find_clients
from proxy.clients.route import RouteError, route, unroute
from proxy.config.autostart import autostart_enabled, autostart_path, set_autostart
from proxy.config.paths import Paths, lockgate_command
from proxy.config.secrets import SecretStore
from proxy.config.settings import gateway_port


def clients(project: Path | None, as_json: bool, out: TextIO) -> int:
    found = find_clients(project=project.resolve() if project else None)
    if as_json:
        listing = [
            {
                "client": f.client.name,
                "scope": f.scope,
                "path": str(f.path),
                "error": f.error,
                "servers": [
                    {
                        "name": s.name,
                        "transport": s.transport,
                        "target": s.target(),
                        "through_lockgate": s.through_lockgate,
                    }
                    for s in f.servers
                ],
            }
            for f in found
        ]
        out.write(json.dumps(listing, indent=2) + "\n")
        return 0
    if not found:
        out.write("No MCP client configuration found (Claude Desktop, Claude Code, Cursor, ")
        out.write("VS Code, Windsurf).\n")
        return 0
    for f in found:
        out.write(f"{f.client.label} ({f.scope}): {f.path}\n")
        if f.error:
            out.write(f"  ! {f.error}\n")
        elif not f.servers:
            out.write("  (no MCP servers)\n")
        for s in f.servers:
            via = "through Lockgate" if s.through_lockgate else "direct"
            out.write(f"  {s.name:<24} {via:<17} {s.transport:<5} {s.target()}\n")
    return 0


def route_command(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    project = args.project.resolve() if args.project else None
    found = [f for f in find_clients(project=project) if f.client.name == args.client]
    if not found:
        print(f"lockgate clients: no configuration of {args.client} found", file=sys.stderr)
        return 1
    port = args.port if getattr(args, "port", None) is not None else gateway_port(paths)
    store, failed, changed = SecretStore(), False, False
    for client_file in found:
        try:
            if args.clients_command == "route":
                done = route(client_file, paths, store=store, via=args.via, port=port)
                out.write(f"{client_file.client.label} ({client_file.scope}): {done.path}\n")
                for entry, server in done.routed:
                    out.write(f"  routed   {entry} -> Lockgate server {server!r}\n")
                for entry, why in done.skipped:
                    out.write(f"  left     {entry}: {why}\n")
                if done.imported:
                    out.write(f"  added to servers.json: {', '.join(done.imported)}\n")
                if done.secrets:
                    out.write(f"  moved into the keyring: {', '.join(done.secrets)}\n")
                if done.record:
                    out.write(f"  record of the change: {done.record}\n")
                for note in done.notes:
                    out.write(f"  note: {note}\n")
                for server in done.sign_in:
                    out.write(
                        f"  sign in: {server} is a remote server; if it signs in (OAuth), "
                        f"sign in once in Lockgate: lockgate auth login {server}\n"
                    )
                changed = changed or bool(done.imported)
            else:
                undone = unroute(client_file, paths, store=store)
                out.write(f"{client_file.client.label} ({client_file.scope}): {undone.path}\n")
                for entry in undone.restored:
                    out.write(f"  restored {entry}\n")
                for entry, why in undone.kept:
                    out.write(f"  left     {entry}: {why}\n")
                if undone.byte_exact:
                    out.write("  the file is as it was before routing, byte for byte\n")
                if undone.removed_servers:
                    names = ", ".join(undone.removed_servers)
                    out.write(f"  removed from servers.json (no client uses them): {names}\n")
                    changed = True
                if undone.removed_secrets:
                    out.write(f"  removed from the keyring: {', '.join(undone.removed_secrets)}\n")
                for note in undone.notes:
                    out.write(f"  note: {note}\n")
                if undone.revoked_token:
                    out.write(f"  revoked the token of {undone.revoked_token}\n")
                    with contextlib.suppress(ControlError):  # they idle out otherwise
                        ended = end_sessions_of(paths, undone.revoked_token)
                        if ended:
                            out.write(f"  ended its {ended} open session(s)\n")
        except RouteError as exc:
            print(f"lockgate: {exc.told()}", file=sys.stderr)
            failed = True
    if changed:
        _tell_gateway_servers_changed(paths)
    return 1 if failed else 0


def _tell_gateway_servers_changed(paths: Paths) -> None:
    try:
        control(paths, "reload-servers")
    except GatewayNotRunning:
        return
    except ControlError as exc:
        print(
            f"lockgate clients: the running gateway did not take the new servers ({exc}); "
            "restart Lockgate",
            file=sys.stderr,
        )


def autostart(state: str | None, out: TextIO) -> int:
    if state is not None:
        command = lockgate_command(gui=True)
        if command is None:
            print("lockgate autostart: the lockgate command is not installed", file=sys.stderr)
            return 1
        set_autostart(state == "on", command)
    where = autostart_path() or "the Run key of the registry"
    on = autostart_enabled()
    out.write(f"Start at login: {'on' if on else 'off'} ({where})\n")
    return 0
