"""``lockgate token`` and ``lockgate secret``: the HTTP door's client tokens, the keyring's
secrets."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from proxy.bridge.control import ControlError, end_sessions_of
from proxy.config.paths import Paths
from proxy.config.secrets import SecretError, SecretStore, sign_in_entry
from proxy.config.servers import load_servers, secret_references
from proxy.config.tokens import TokenStore


def token(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    store = TokenStore(paths.clients_file)
    if args.token_command == "create":
        token = store.create(args.client, replace=args.replace)
        print(token, file=out)  # alone on stdout, so it can be piped into a client config
        print(f"token for {args.client!r} created; it is shown only this once", file=sys.stderr)
    elif args.token_command == "revoke":
        store.revoke(args.client)
        print(f"token of {args.client!r} revoked", file=sys.stderr)
        try:
            ended = end_sessions_of(paths, args.client)
        except ControlError as exc:
            print(f"lockgate: its open sessions stay until they idle out: {exc}", file=sys.stderr)
            return 1
        if ended:
            print(f"ended its {ended} open session(s) in the running gateway", file=sys.stderr)
    else:
        clients = store.clients()
        for client in clients:
            print(f"{client.name}\tcreated {client.created}", file=out)
        if not clients:
            print(
                "no client has a token; create one with: lockgate token create NAME",
                file=sys.stderr,
            )
    return 0


def secret(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    store = SecretStore()
    if args.secret_command == "list":
        return _list_secrets(paths, store, out)
    if sign_in_entry(args.name):
        print(
            f"lockgate: {args.name!r} is where Lockgate keeps a server's sign-in; use "
            "lockgate auth login or lockgate auth logout for it",
            file=sys.stderr,
        )
        return 1
    if args.secret_command == "set":
        if args.stdin:
            value = sys.stdin.read().rstrip("\r\n")
        else:
            value = getpass.getpass(f"value for secret {args.name!r} (not shown): ")
        if not value:
            print("lockgate: an empty secret was not stored", file=sys.stderr)
            return 1
        store.set(args.name, value)
        print(
            f"secret {args.name!r} stored in the keyring; refer to it as "
            f'"keyring:{args.name}" in servers.json',
            file=sys.stderr,
        )
    else:
        store.delete(args.name)
        print(f"secret {args.name!r} removed", file=sys.stderr)
    return 0


def _list_secrets(paths: Paths, store: SecretStore, out: TextIO) -> int:
    """Every keyring name servers.json refers to, the servers that use it, and whether it
    is in the keyring: names only, never a value (the keyring cannot list its own)."""
    users: dict[str, list[str]] = {}
    for name, spec in load_servers(paths.servers_file).items():
        for reference in secret_references(spec):  # env, headers, an OAuth client secret
            users.setdefault(reference, []).append(name)
    if not users:
        print("servers.json refers to no secret (keyring:NAME values)", file=sys.stderr)
        return 0
    missing = 0
    for reference in sorted(users):
        try:
            store.get(reference)
            state = "stored"
        except SecretError as exc:
            state, missing = f"MISSING ({exc})", missing + 1
        print(f"{reference}\tused by {', '.join(sorted(users[reference]))}\t{state}", file=out)
    return 1 if missing else 0
