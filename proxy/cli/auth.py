"""``lockgate auth login|status|logout``: a remote server's OAuth sign-in, from a terminal.

With a gateway running, each asks it (the control door's ``auth-*`` requests): its
sessions use a new sign-in from their next request, and ``logout`` refuses their calls at
once. With none running, the command does the same here, with the keyring
(:mod:`proxy.config.oauth_store`), and says so: a person on a machine without the app
can sign in before starting ``lockgate serve``, which finds the sign-in there. Only then
is the MCP SDK loaded (the rest of the command line starts without it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from proxy.bridge.control import ControlError, GatewayNotRunning, control, sign_in
from proxy.config.oauth_store import OAuthStore
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from proxy.config.servers import HttpServer, ServerSpec, load_servers, oauth_applies
from proxy.errors import LockgateError

__all__ = ["NoSignIn", "SignInNotDone", "UnknownServer", "auth_command"]


class UnknownServer(LockgateError):
    """servers.json has no server of that name (and the keyring no sign-in of it)."""

    title = "No such server"


class NoSignIn(LockgateError):
    """A server Lockgate does not sign in to: a command server, a remote server whose
    servers.json sets its own Authorization header, or one turned off."""

    title = "Lockgate does not sign in to that server"


class SignInNotDone(LockgateError):
    """The running gateway's sign-in did not work (its words); nothing was changed."""

    title = "The gateway could not sign in"


def auth_command(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    if args.auth_command == "login":
        return login(paths, args.server, browser=not args.no_browser, out=out)
    if args.auth_command == "logout":
        return logout(paths, args.server, out)
    return status(paths, as_json=args.json, out=out)


# -- login -------------------------------------------------------------------------------


def login(paths: Paths, server: str, *, browser: bool, out: TextIO) -> int:
    """Sign in to ``server`` in the person's browser: the address is printed (and opened,
    with ``browser``); 0 once signed in, 1 if Ctrl-C cancelled it.

    Raises:
        UnknownServer, NoSignIn: not a server Lockgate signs in to.
        SignInNotDone, proxy.upstream.oauth.SignInFailed: it did not work.
        proxy.config.secrets.SecretError: the keyring cannot be used (no gateway running).
        proxy.config.servers.ServersError: servers.json cannot be read.
    """
    servers = load_servers(paths.servers_file)
    if server not in servers:
        raise _unknown(server, servers)
    spec = _signs_in(servers[server])
    if spec.disabled:
        raise NoSignIn(
            f"server {server!r} is turned off in Lockgate; turn it on first, in Lockgate's "
            'Servers tab (or remove its "disabled": true from servers.json)'
        )

    def show(url: str) -> None:
        print(
            f"Open this address in your browser to sign in to {server}:\n  {url}",
            file=out,
            flush=True,
        )
        if browser:
            _open_in_browser(url)
        print("Waiting for the sign-in to finish (Ctrl-C cancels)...", file=sys.stderr, flush=True)

    try:
        try:
            sign_in(paths, server, show)
        except GatewayNotRunning:
            print(
                "Lockgate is not running: signing in from here; it uses the sign-in when "
                "it starts.",
                file=sys.stderr,
                flush=True,
            )
            asyncio.run(_sign_in_here(spec, show))
        except ControlError as exc:
            raise SignInNotDone(exc.message) from None
    except KeyboardInterrupt:
        print(
            f"lockgate: the sign-in to {server} was cancelled; nothing was changed",
            file=sys.stderr,
        )
        return 1
    print(f"Signed in to {server}.", file=out)
    return 0


def _open_in_browser(url: str) -> None:
    """Open ``url`` in the person's browser if there is one; the address is printed
    anyway, so not finding one is no error."""
    import webbrowser  # noqa: PLC0415 - only login needs it

    try:
        opened = webbrowser.open(url)
    except (webbrowser.Error, OSError):
        opened = False
    if not opened:
        print("(no browser could be opened here: open the address yourself)", file=sys.stderr)


async def _sign_in_here(spec: HttpServer, show: Callable[[str], None]) -> None:
    """Sign in in this process; the keyring holds the result for the gateway to come."""
    from proxy.upstream.oauth import sign_in as sign_in_upstream  # noqa: PLC0415 - the SDK

    async def open_url(url: str) -> None:
        # off the loop: a browser may take its time to start, and the loopback server
        # it comes back to runs on this loop
        await asyncio.to_thread(show, url)

    await sign_in_upstream(spec, OAuthStore(SecretStore()), open_url)


# -- logout ------------------------------------------------------------------------------


def logout(paths: Paths, server: str, out: TextIO) -> int:
    """Forget ``server``'s sign-in (its tokens revoked at its authorization server where
    it can be); its calls are refused until a person signs in again. A server no longer
    in servers.json can be signed out of too, if the keyring still holds its sign-in.

    Raises:
        UnknownServer, NoSignIn: not a server Lockgate signs in to.
        proxy.bridge.control.ControlError: the gateway refused.
        proxy.config.secrets.SecretError: the keyring cannot be used.
        proxy.config.servers.ServersError: servers.json cannot be read.
    """
    servers = load_servers(paths.servers_file)
    entry = servers.get(server)
    if entry is None:
        if not _kept_in_keyring(server):
            raise _unknown(server, servers)
        spec = None  # removed from servers.json, its sign-in left in the keyring
    else:
        spec = _signs_in(entry)
    try:
        control(paths, "auth-logout", server=server)
    except GatewayNotRunning:
        print("Lockgate is not running: signing out from here.", file=sys.stderr, flush=True)
        asyncio.run(_sign_out_here(server, spec))
    print(f"Signed out of {server}.", file=out)
    return 0


async def _sign_out_here(server: str, spec: HttpServer | None) -> None:
    """What the gateway does: revoke and forget the tokens (the registration stays for
    the next sign-in); for a server no longer in servers.json, forget all of it."""
    store = OAuthStore(SecretStore())
    if spec is None:
        await asyncio.to_thread(store.delete, server)
        return
    from proxy.upstream.oauth import TokenKeeper  # noqa: PLC0415 - the SDK: only here

    await TokenKeeper(spec, store).sign_out()


# -- status ------------------------------------------------------------------------------


def status(paths: Paths, *, as_json: bool, out: TextIO) -> int:
    """Each remote server's sign-in: the running gateway's, or the keyring's when none
    runs. Never a token.

    Raises:
        proxy.bridge.control.ControlError: the gateway refused.
        proxy.config.servers.ServersError: servers.json cannot be read (no gateway
            running).
    """
    try:
        states: dict[str, dict[str, Any]] = control(paths, "auth-status")["servers"]
    except GatewayNotRunning:
        print("Lockgate is not running: the sign-ins the keyring holds.", file=sys.stderr)
        states = asyncio.run(_states_here(paths))
    if as_json:
        listed = [{"server": name, **state} for name, state in sorted(states.items())]
        json.dump(listed, out, indent=2)
        out.write("\n")
        return 0
    if not states:
        print("no remote server in servers.json is one Lockgate signs in to", file=sys.stderr)
        return 0
    width = max(map(len, states))
    for name, state in sorted(states.items()):
        print(f"{name:<{width}}  {_state_text(name, state)}", file=out)
    return 0


async def _states_here(paths: Paths) -> dict[str, dict[str, Any]]:
    """What the gateway would say at its start: each keeper's reading of the keyring."""
    from proxy.upstream.oauth import TokenKeeper  # noqa: PLC0415 - the SDK: only here

    store = OAuthStore(SecretStore())
    found: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(load_servers(paths.servers_file).items()):
        if spec.disabled or not isinstance(spec, HttpServer) or not oauth_applies(spec):
            continue
        keeper = TokenKeeper(spec, store)
        await keeper.load()
        state = keeper.status()
        found[name] = {
            "state": state.state,
            "why": state.why,
            "expires_at": state.expires_at,
            "checked": state.checked,
        }
    return found


def _state_text(server: str, state: dict[str, Any]) -> str:
    why = state.get("why")
    if not state.get("checked", True):
        return "not read from the keyring yet (ask again in a moment)"
    if state.get("state") == "needs_sign_in":
        return f"needs sign-in: {why}; run: lockgate auth login {server}"
    if state.get("state") not in ("signed_in", "refreshing"):
        return "not signed in" + (f": {why}" if why else "")
    text = "signed in" + (
        ", renewing its access token now" if state["state"] == "refreshing" else ""
    )
    expires = state.get("expires_at")
    if not isinstance(expires, int | float):
        return text
    when = datetime.fromtimestamp(expires).strftime("%Y-%m-%d %H:%M:%S")
    if expires > datetime.now().timestamp():
        return f"{text} (its access token expires at {when})"
    return f"{text} (its access token expired at {when}; Lockgate renews it at the next call)"


# -- which server ------------------------------------------------------------------------


def _signs_in(spec: ServerSpec) -> HttpServer:
    """``spec``, if it is a server Lockgate signs in to.

    Raises:
        NoSignIn: it is not.
    """
    if not isinstance(spec, HttpServer):
        raise NoSignIn(
            f"{spec.name!r} is a command server, which Lockgate starts on this machine; only "
            'a remote server (one with a "url" in servers.json) asks for a sign-in'
        )
    if not oauth_applies(spec):
        raise NoSignIn(
            f"{spec.name!r} sets its own Authorization header in servers.json, so it signs "
            "in its own way; to have Lockgate sign in to it, remove that header"
        )
    return spec


def _unknown(server: str, servers: dict[str, ServerSpec]) -> UnknownServer:
    remote = sorted(name for name, spec in servers.items() if oauth_applies(spec))
    known = (
        f"the remote servers Lockgate signs in to: {', '.join(remote)}"
        if remote
        else "it has no remote server Lockgate signs in to"
    )
    return UnknownServer(f"servers.json has no server named {server!r}; {known}")


def _kept_in_keyring(server: str) -> bool:
    """Whether the keyring holds any part of a sign-in of ``server``.

    Raises:
        proxy.config.secrets.SecretError: the keyring cannot be used.
    """
    secrets = SecretStore()
    return any(
        secrets.find(OAuthStore.entry(server, kind)) is not None
        for kind in ("tokens", "client", "server")
    )
