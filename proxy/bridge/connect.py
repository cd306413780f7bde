"""``lockgate connect SERVER``: the stdio bridge an MCP client launches, kept light.

A client starts one bridge per server every time it starts, often a dozen at once, so
this command must not pay for importing the rest of Lockgate (the MCP SDK, the policy
engine, the audit log): :func:`fast_main` runs it with only this module, the control
socket and the paths, in a tenth of the time of the full command line. The full command
line builds its ``connect`` from the same pieces (:func:`add_arguments`, :func:`run`).

How it bridges (``LOCKGATE_BRIDGE``): ``fd`` hands the client's pipes to the gateway
(``SCM_RIGHTS``, no hop of its own), ``relay`` copies them to and from the socket, and
``auto`` (or unset, or empty) passes them where the system can (``socket.send_fds``) and
relays elsewhere. Any other value is a usage error (exit 2), never a guess; so is ``fd``
where the system cannot pass descriptors. Windows cannot (its local door is a named pipe:
:mod:`proxy.bridge.winpipe`), so there ``auto`` always relays.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from proxy.bridge.control import (
    ControlError,
    GatewayNotRunning,
    bridge_passing_pipes,
    bridge_relaying,
    default_client_name,
)
from proxy.config.paths import Paths, resolve_paths
from proxy.config.tokens import valid_client_name

__all__ = [
    "BRIDGE_MODES",
    "BRIDGE_VARIABLE",
    "HELP",
    "add_arguments",
    "command_of",
    "fast_main",
    "run",
]

HELP = "stdio bridge to a running gateway: what an MCP client launches for SERVER"
# the global options that take a value, which may come before the command
_VALUED = ("--config-dir", "--data-dir", "--port")
BRIDGE_VARIABLE = "LOCKGATE_BRIDGE"
BRIDGE_MODES = ("auto", "fd", "relay")
_EPILOG = (
    f"{BRIDGE_VARIABLE}=fd|relay|auto chooses how: fd hands the client's pipes to the "
    "gateway, relay copies them to and from its socket, auto (the default) passes them "
    "where the system can."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.add_argument("server", help="the server name, as in servers.json")
    parser.add_argument(
        "--client",
        metavar="NAME",
        help="the client's name in the log and for per-client limits "
        "(default: the launching program's name)",
    )


def _command_index(argv: Sequence[str]) -> int | None:
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return i
    return None


def command_of(argv: Sequence[str]) -> str | None:
    """The command word in ``argv`` (after any global options), or None."""
    i = _command_index(argv)
    return None if i is None else argv[i]


def run(paths: Paths, server: str, client: str | None) -> int:
    """Bridge this process's stdio to the gateway's session for ``server``, the way
    ``LOCKGATE_BRIDGE`` says (see the module); the exit code (2: a usage error)."""
    client = client or default_client_name()
    if not valid_client_name(client):
        print(f"lockgate connect: {client!r} is not a valid client name", file=sys.stderr)
        return 2
    mode = os.environ.get(BRIDGE_VARIABLE) or "auto"
    if mode not in BRIDGE_MODES:
        print(
            f"lockgate connect: {BRIDGE_VARIABLE}={mode!r} is not a way to bridge; "
            "use fd, relay or auto (or leave it unset)",
            file=sys.stderr,
        )
        return 2
    can_pass = hasattr(socket, "send_fds")
    if mode == "fd" and not can_pass:
        print(
            f"lockgate connect: {BRIDGE_VARIABLE}=fd, but this system cannot pass file "
            "descriptors over a socket (no socket.send_fds); use relay or auto",
            file=sys.stderr,
        )
        return 2
    try:
        if mode == "relay" or not can_pass:
            return bridge_relaying(paths, server, client)
        return bridge_passing_pipes(paths, server, client)
    except (GatewayNotRunning, ControlError) as exc:
        # The MCP client shows this (its server "failed to start") in its logs.
        print(f"lockgate connect: {exc.told()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def fast_main(argv: Sequence[str]) -> int:
    """``lockgate [global options] connect SERVER [options]``, parsed here alone."""
    parser = argparse.ArgumentParser(prog="lockgate connect", description=HELP)
    parser.add_argument("--config-dir", metavar="DIR")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument("--port", help=argparse.SUPPRESS)  # the app's option; unused here
    add_arguments(parser)
    args = list(argv)
    i = _command_index(args)
    if i is None or args[i] != "connect":
        raise ValueError("not a connect command line")
    del args[i]
    parsed = parser.parse_args(args)
    return run(resolve_paths(parsed.config_dir, parsed.data_dir), parsed.server, parsed.client)
