"""``lockgate``: the command line.

Exit codes: 0 success (``policy check``: the policy is valid); 1 the thing checked or read
is invalid (its errors are printed on stderr); 2 the command line itself is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from proxy.audit.records import CallDecision, Outcome
from proxy.bridge import connect as connectcmd
from proxy.cli import auth, clients, credentials, gateway, log, policy, settings, tools
from proxy.cli.common import UsageError, version
from proxy.clients import CLIENTS
from proxy.config.paths import Paths, resolve_paths
from proxy.config.runinfo import DEFAULT_PORT
from proxy.errors import LockgateError
from proxy.policy.model import policy_schema

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="folder of policy.json and servers.json (env LOCKGATE_CONFIG_DIR)",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="folder of the audit log (env LOCKGATE_DATA_DIR)",
    )
    parser = argparse.ArgumentParser(
        prog="lockgate",
        description="Lockgate puts a person between AI agents and the MCP servers they call.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"lockgate {version()}")
    parser.add_argument(
        "--port",
        dest="app_port",
        metavar="PORT",
        type=int,
        default=None,
        help="with no command: the app's gateway port on 127.0.0.1, for this run "
        f"(default: the port setting, {DEFAULT_PORT} unless set)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    policy = commands.add_parser("policy", help="check and explain policy.json", parents=[common])
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = policy_commands.add_parser(
        "check", parents=[common], help="validate a policy file (exit 0 valid, 1 invalid)"
    )
    check.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="the file to check (default: policy.json in the config folder)",
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    explain = policy_commands.add_parser(
        "explain", parents=[common], help="how the policy decides one tool call, and why"
    )
    explain.add_argument("server", help="the server name, as in servers.json")
    explain.add_argument("tool", help="the tool name")
    explain.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="policy file (default: policy.json in the config folder)",
    )
    explain.add_argument(
        "--args", metavar="JSON", default="{}", help="the call's arguments as a JSON object"
    )
    explain.add_argument(
        "--client",
        default="local",
        metavar="NAME",
        help="the calling client (its grant, for per-client limits)",
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    replay = policy_commands.add_parser(
        "replay",
        parents=[common],
        help="what a candidate policy would have done to the calls recorded lately, against "
        "the policy in force (exit 0 the same, 1 different)",
    )
    replay.add_argument("candidate", type=Path, help="the candidate policy file")
    replay.add_argument(
        "--since", default="7d", help="from when: an age (24h, 7d, 2w) or a date (default 7d)"
    )
    replay.add_argument("--until", help="to when, as for --since (default: now)")
    replay.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the policy to compare with (default: policy.json in the config folder)",
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    policy_commands.add_parser(
        "schema", parents=[common], help="print the JSON Schema of policy.json"
    )
    policy_commands.add_parser(
        "reload",
        parents=[common],
        help="have the running gateway load policy.json now (exit 0 once it is in force)",
    )
    policy_commands.add_parser(
        "restore",
        parents=[common],
        help="put back a deleted policy.json: the last policy in force, which Lockgate keeps",
    )

    risk = commands.add_parser(
        "risk", parents=[common], help="assess the risk of tools from a tools/list result"
    )
    risk.add_argument(
        "file",
        help="JSON file with a tool, a list of tools or a tools/list "
        "result; - reads standard input",
    )
    risk.add_argument("--json", action="store_true", help="print a JSON list")

    commands.add_parser("paths", parents=[common], help="print where Lockgate keeps its files")

    autostart = commands.add_parser(
        "autostart", parents=[common], help="start the Lockgate app at login (on, off, or show)"
    )
    autostart.add_argument("state", nargs="?", choices=("on", "off"), help="omit to show it")

    init = commands.add_parser(
        "init",
        parents=[common],
        help="a starting policy.json from your servers' tools (shown before it is written)",
    )
    init.add_argument("--yes", action="store_true", help="write it without asking")

    clients = commands.add_parser(
        "clients",
        parents=[common],
        help="the MCP clients on this machine, their servers, and which go through Lockgate",
    )
    clients.add_argument(
        "--project",
        metavar="DIR",
        type=Path,
        help="also read this project's files (.mcp.json, .cursor/mcp.json, .vscode/mcp.json)",
    )
    clients.add_argument("--json", action="store_true", help="print JSON")
    client_commands = clients.add_subparsers(dest="clients_command", metavar="ACTION")
    route_cmd = client_commands.add_parser(
        "route",
        parents=[common],
        help="make a client's servers go through Lockgate (imported into servers.json, "
        "env and header values into the keyring; a record of each change is kept)",
    )
    unroute_cmd = client_commands.add_parser(
        "unroute",
        parents=[common],
        help="put a client's servers back as they were before `route`",
    )
    for action in (route_cmd, unroute_cmd):
        action.add_argument("client", choices=[c.name for c in CLIENTS], metavar="CLIENT")
        action.add_argument(
            "--project",
            metavar="DIR",
            type=Path,
            help="also the client's file in this project",
        )
    route_cmd.add_argument(
        "--via",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio: the client launches `lockgate connect NAME` (default; every client); "
        "http: the gateway's URL with a token of the client's own (not Claude Desktop)",
    )
    route_cmd.add_argument(
        "--port",
        type=int,
        default=None,
        help="with --via http: the gateway's port (default: the running gateway's, else the "
        "port setting)",
    )

    connect = commands.add_parser("connect", parents=[common], help=connectcmd.HELP)
    connectcmd.add_arguments(connect)
    commands.add_parser("status", parents=[common], help="what the running gateway is doing")
    commands.add_parser(
        "pause", parents=[common], help="deny every tool call until `lockgate resume`"
    )
    commands.add_parser("resume", parents=[common], help="end a pause")
    approvals = commands.add_parser(
        "approvals",
        parents=[common],
        help="calls waiting for a person: list, allow, deny, or watch and answer them",
    )
    approval_commands = approvals.add_subparsers(dest="approval_command", metavar="ACTION")
    approval_commands.add_parser("list", parents=[common], help="the calls waiting now")
    allow = approval_commands.add_parser("allow", parents=[common], help="approve a call")
    allow.add_argument("id")
    allow.add_argument(
        "--session",
        action="store_true",
        help="also allow this tool for the rest of that client's session",
    )
    deny = approval_commands.add_parser("deny", parents=[common], help="refuse a call")
    deny.add_argument("id")
    deny.add_argument("--reason", help="told to the agent")
    approval_commands.add_parser(
        "watch",
        parents=[common],
        help="be the approver: ask here about each call as it comes (Ctrl-C stops)",
    )

    log_cmd = commands.add_parser(
        "log", parents=[common], help="tool calls and decisions from the audit log"
    )
    log_cmd.add_argument(
        "--format",
        choices=("text", "jsonl", "csv"),
        default=None,
        help="text (default); jsonl: one JSON object per line; csv: a spreadsheet's rows. "
        "jsonl and csv export every call that matches unless --limit is given",
    )
    log_cmd.add_argument("--json", action="store_true", help="the same as --format jsonl")
    log_cmd.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing calls as they are logged (Ctrl-C stops)",
    )
    log_cmd.add_argument(
        "--limit",
        "-n",
        type=int,
        default=None,
        help="how many of the latest calls (default: 50 as text, every one as jsonl or csv)",
    )
    log_cmd.add_argument(
        "--since", help="calls from then on: an age (30m, 24h, 7d, 2w) or a date (2026-11-30)"
    )
    log_cmd.add_argument("--until", help="calls before then, as for --since")
    log_cmd.add_argument(
        "--search",
        help="words each call must hold, in its tool, server, client, arguments, reason or "
        'error ("a phrase" in quotes)',
    )
    log_cmd.add_argument("--server")
    log_cmd.add_argument("--tool")
    log_cmd.add_argument("--client")
    log_cmd.add_argument("--decision", choices=[d.value for d in CallDecision])
    log_cmd.add_argument("--outcome", choices=[o.value for o in Outcome])

    serve = commands.add_parser(
        "serve", parents=[common], help="run the gateway without the app (loopback only)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"TCP port on 127.0.0.1 (default: the port setting, {DEFAULT_PORT} unless set; "
        "0 picks a free one)",
    )
    serve.add_argument("--verbose", "-v", action="store_true", help="log every event")

    token = commands.add_parser("token", parents=[common], help="access tokens for MCP clients")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create", parents=[common], help="make a token for a client; prints it once, alone"
    )
    create.add_argument("client", help="the client's name, e.g. claude-desktop")
    create.add_argument(
        "--replace",
        action="store_true",
        help="replace the client's existing token (the old one stops working)",
    )
    token_commands.add_parser("list", parents=[common], help="the clients that hold a token")
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke a client's token")
    revoke.add_argument("client")

    secret = commands.add_parser(
        "secret", parents=[common], help="secrets in the OS keyring, for keyring:NAME values"
    )
    secret_commands = secret.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    secret_set = secret_commands.add_parser(
        "set", parents=[common], help="store a secret (asks for it without echo; or --stdin)"
    )
    secret_set.add_argument("name")
    secret_set.add_argument(
        "--stdin", action="store_true", help="read the value from standard input instead of asking"
    )
    secret_delete = secret_commands.add_parser("delete", parents=[common], help="remove a secret")
    secret_delete.add_argument("name")
    secret_commands.add_parser(
        "list",
        parents=[common],
        help="the secrets servers.json refers to, who uses each, whether it is stored (no values)",
    )

    auth_parser = commands.add_parser(
        "auth",
        parents=[common],
        help="sign in to remote servers that ask for it (OAuth): login, status, logout",
    )
    auth_commands = auth_parser.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    login = auth_commands.add_parser(
        "login",
        parents=[common],
        help="sign in to a remote server in your browser (through the running gateway, "
        "or here if none runs)",
    )
    login.add_argument("server", help="the server's name, as in servers.json")
    login.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser: only print the address to open",
    )
    auth_status = auth_commands.add_parser(
        "status",
        parents=[common],
        help="each remote server's sign-in: signed in (until when) or not; never a token",
    )
    auth_status.add_argument("--json", action="store_true", help="print a JSON list")
    logout = auth_commands.add_parser(
        "logout",
        parents=[common],
        help="forget a server's sign-in (revoked at its authorization server if it can be)",
    )
    logout.add_argument("server", help="the server's name, as in servers.json")

    tools_parser = commands.add_parser(
        "tools",
        parents=[common],
        help="tools held because their definition changed, or is new or looks poisoned",
    )
    tools_commands = tools_parser.add_subparsers(
        dest="tools_command", metavar="ACTION", required=True
    )
    tools_changes = tools_commands.add_parser(
        "changes",
        parents=[common],
        help="every held tool: what changed (a diff) and what looks poisoned; exits 1 if any",
    )
    tools_changes.add_argument("--json", action="store_true", help="print JSON")
    tools_accept = tools_commands.add_parser(
        "accept",
        parents=[common],
        help="accept a held tool's definition as it is now (its calls are decided again)",
    )
    tools_accept.add_argument("server", help="the server's name, as in servers.json")
    tools_accept.add_argument("tool", nargs="?", help="the tool's name")
    tools_accept.add_argument(
        "--instructions", action="store_true", help="accept the server's instructions instead"
    )
    tools_accept.add_argument(
        "--fingerprint",
        help="accept only if the definition is still this one (as `tools changes` shows it)",
    )

    settings_parser = commands.add_parser(
        "settings", parents=[common], help="Lockgate's settings (settings.json): show or set one"
    )
    settings_parser.add_argument("name", nargs="?", help="a setting; alone: show its value")
    settings_parser.add_argument(
        "value", nargs="?", help="the new value: a number (6000) or a word (plain)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, *, app: Callable[[Paths, int | None], int] | None = None
) -> int:
    """Run the command line; returns the exit code.

    ``app`` runs the tray app when no command is given (``desktop.launcher`` passes it:
    this module never imports the GUI); without it, no command prints the status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None and app is not None:
        paths = resolve_paths(getattr(args, "config_dir", None), getattr(args, "data_dir", None))
        return app(paths, args.app_port)
    paths = resolve_paths(getattr(args, "config_dir", None), getattr(args, "data_dir", None))
    try:
        if args.command == "policy":
            if args.policy_command == "check":
                return policy.check(args.file, paths, args.json, sys.stdout)
            if args.policy_command == "explain":
                return policy.explain(args, paths, sys.stdout)
            if args.policy_command == "replay":
                return policy.replay_command(args, paths, sys.stdout)
            if args.policy_command == "reload":
                return policy.reload(paths, sys.stdout)
            if args.policy_command == "restore":
                return policy.restore(paths, sys.stdout)
            json.dump(policy_schema(), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if args.command == "risk":
            return policy.risk(args.file, args.json, sys.stdout)
        if args.command == "connect":
            return gateway.connect(args, paths)
        if args.command in ("status", "pause", "resume", "approvals"):
            return gateway.control_command(args, paths, sys.stdout)
        if args.command == "log":
            return log.log_command(args, paths, sys.stdout)
        if args.command == "serve":
            return gateway.serve(args, paths)
        if args.command == "token":
            return credentials.token(args, paths, sys.stdout)
        if args.command == "secret":
            return credentials.secret(args, paths, sys.stdout)
        if args.command == "autostart":
            return clients.autostart(args.state, sys.stdout)
        if args.command == "init":
            return policy.init(paths, args.yes, sys.stdin, sys.stdout)
        if args.command == "clients":
            if args.clients_command in ("route", "unroute"):
                return clients.route_command(args, paths, sys.stdout)
            return clients.clients(args.project, args.json, sys.stdout)
        if args.command == "auth":
            return auth.auth_command(args, paths, sys.stdout)
        if args.command == "tools":
            if args.tools_command == "changes":
                return tools.changes(paths, as_json=args.json, out=sys.stdout)
            if (args.tool is None) != args.instructions:
                raise UsageError("name a tool, or give --instructions (not both)")
            return tools.accept(paths, args.server, args.tool, sys.stdout, args.fingerprint)
        if args.command == "settings":
            return settings.settings_command(args.name, args.value, paths, sys.stdout)
        if args.command == "paths":
            gateway.print_paths(paths, sys.stdout)
            return 0
        return gateway.status(paths, sys.stdout)
    except UsageError as exc:
        parser.exit(2, f"lockgate: error: {exc}\n")
    except LockgateError as exc:  # every error a person is told of: its title and message
        print(f"lockgate: {exc.told()}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        return 0


if __name__ == "__main__":
    sys.exit(main())
