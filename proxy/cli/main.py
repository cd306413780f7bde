"""``lockgate``: the command line.

Exit codes: 0 success (``policy check``: the policy is valid); 1 the thing checked or read
is invalid (its errors are printed on stderr); 2 the command line itself is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from proxy.audit.log import AuditError, AuditLog, CallDecision, CallRecord
from proxy.bridge import connect as connectcmd
from proxy.bridge.control import (
    ControlError,
    GatewayNotRunning,
    control,
    watch,
)
from proxy.clients import CLIENTS, find_clients
from proxy.clients.route import RouteError, route, unroute
from proxy.config.atomic import write_atomic
from proxy.config.autostart import autostart_enabled, autostart_path, set_autostart
from proxy.config.paths import Paths, lockgate_command, resolve_paths
from proxy.config.runinfo import DEFAULT_PORT
from proxy.config.secrets import SecretError, SecretStore
from proxy.config.servers import ServersError, load_servers, open_server_log
from proxy.config.tokens import TokenError, TokenStore, valid_client_name
from proxy.policy.decide import Decision, ToolCall, agent_message, decide
from proxy.policy.limits import Counters
from proxy.policy.model import Policy, PolicyError, default_policy, load_policy, policy_schema
from proxy.policy.risk import classify_many, tools_from_json
from proxy.policy.starter import policy_text, starting_policy

__all__ = ["main"]


class UsageError(Exception):
    """The command line asks for something that cannot be done as written (exit 2)."""


def _version() -> str:
    try:
        return version("lockgate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


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
    parser.add_argument("--version", action="version", version=f"lockgate {_version()}")
    parser.add_argument(
        "--port",
        dest="app_port",
        metavar="PORT",
        type=int,
        default=DEFAULT_PORT,
        help=f"with no command: the app's gateway port on 127.0.0.1 (default {DEFAULT_PORT})",
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
    policy_commands.add_parser(
        "schema", parents=[common], help="print the JSON Schema of policy.json"
    )
    policy_commands.add_parser(
        "reload",
        parents=[common],
        help="have the running gateway load policy.json now (exit 0 once it is in force)",
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
        "--port", type=int, default=DEFAULT_PORT, help="with --via http: the gateway's port"
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
    log_cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    log_cmd.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing calls as they are logged (Ctrl-C stops)",
    )
    log_cmd.add_argument(
        "--limit", "-n", type=int, default=50, help="how many of the latest calls (default 50)"
    )
    log_cmd.add_argument("--server")
    log_cmd.add_argument("--tool")
    log_cmd.add_argument("--client")
    log_cmd.add_argument("--decision", choices=[d.value for d in CallDecision])

    serve = commands.add_parser(
        "serve", parents=[common], help="run the gateway without the app (loopback only)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
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
    return parser


def main(
    argv: Sequence[str] | None = None, *, app: Callable[[Paths, int], int] | None = None
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
                return _policy_check(args.file, paths, args.json, sys.stdout)
            if args.policy_command == "explain":
                return _policy_explain(args, paths, sys.stdout)
            if args.policy_command == "reload":
                return _policy_reload(paths, sys.stdout)
            json.dump(policy_schema(), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if args.command == "risk":
            return _risk(args.file, args.json, sys.stdout)
        if args.command == "connect":
            return _connect(args, paths)
        if args.command in ("status", "pause", "resume", "approvals"):
            return _control(args, paths, sys.stdout)
        if args.command == "log":
            return _log(args, paths, sys.stdout)
        if args.command == "serve":
            return _serve(args, paths)
        if args.command == "token":
            return _token(args, paths, sys.stdout)
        if args.command == "secret":
            return _secret(args, sys.stdout)
        if args.command == "autostart":
            return _autostart(args.state, sys.stdout)
        if args.command == "init":
            return _init(paths, args.yes, sys.stdin, sys.stdout)
        if args.command == "clients":
            if args.clients_command in ("route", "unroute"):
                return _route(args, paths, sys.stdout)
            return _clients(args.project, args.json, sys.stdout)
        if args.command == "paths":
            _print_paths(paths, sys.stdout)
            return 0
        return _status(paths, sys.stdout)
    except UsageError as exc:
        parser.exit(2, f"lockgate: error: {exc}\n")
    except BrokenPipeError:  # e.g. piped into head
        return 0


def _policy_in_force(explicit: Path | None, paths: Paths) -> tuple[Policy, str]:
    """The policy a command should use, and a note on where it came from.

    Raises:
        PolicyError: the file exists (or was named) and is not a valid policy.
    """
    if explicit is not None:
        return load_policy(explicit), str(explicit)
    if paths.policy_file.exists():
        return load_policy(paths.policy_file), str(paths.policy_file)
    return default_policy(), f"built-in default (no file at {paths.policy_file})"


def _policy_check(file: Path | None, paths: Paths, as_json: bool, out: TextIO) -> int:
    target = file or paths.policy_file
    if file is None and not target.exists():
        message = f"no policy file at {target}: the built-in default policy applies"
        if as_json:
            json.dump(
                {"valid": True, "file": str(target), "exists": False, "message": message}, out
            )
            out.write("\n")
        else:
            print(message, file=sys.stderr)
        return 0
    try:
        policy = load_policy(target)
    except PolicyError as exc:
        if as_json:
            json.dump(
                {
                    "valid": False,
                    "file": str(target),
                    "errors": [
                        {
                            "line": i.line,
                            "column": i.column,
                            "path": list(i.path),
                            "message": i.message,
                            "text": i.render(exc.source),
                        }
                        for i in exc.issues
                    ],
                },
                out,
            )
            out.write("\n")
        else:
            print(exc, file=sys.stderr)
            count = len(exc.issues)
            print(
                f"{target}: invalid ({count} problem{'s' if count != 1 else ''})", file=sys.stderr
            )
        return 1
    rules = len(policy.rules)
    if as_json:
        json.dump(
            {
                "valid": True,
                "file": str(target),
                "exists": True,
                "rules": rules,
                "default": policy.default.value,
            },
            out,
        )
        out.write("\n")
    else:
        print(
            f"{target}: valid ({rules} rule{'s' if rules != 1 else ''}, "
            f"default {policy.default.value})",
            file=out,
        )
    return 0


def _policy_reload(paths: Paths, out: TextIO) -> int:
    """Put policy.json in force in the running gateway now (it also does so by itself a
    moment after the file changes)."""
    try:
        answer = control(paths, "reload-policy")
    except GatewayNotRunning as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    except ControlError as exc:
        print(f"policy.json not applied, the last good policy stays in force:\n{exc}", file=out)
        return 1
    where = answer["source"] or "the built-in default policy"
    print(f"in force: {where} ({answer['rules']} rules, default {answer['default']})", file=out)
    return 0


def _parse_arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise UsageError('--args must be a JSON object, like \'{"path": "/tmp/x"}\'')
    return value


def _policy_explain(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    call = ToolCall(args.server, args.tool, _parse_arguments(args.args), args.client)
    try:
        policy, origin = _policy_in_force(args.policy, paths)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        print(
            "the policy is invalid; a running Lockgate keeps its last good policy", file=sys.stderr
        )
        return 1
    now = time.monotonic()
    decision = decide(policy, call, Counters(), now)
    others = [
        r.pattern.text
        for r in policy.candidates(call.server, call.tool)
        if r.pattern.text != decision.rule
    ]
    if args.json:
        data = decision.as_dict()
        data.pop("retry_at")  # relative to this process's clock; meaningless outside it
        data.update(
            policy=origin,
            call={
                "server": call.server,
                "tool": call.tool,
                "arguments": call.arguments,
                "client": call.client,
            },
            also_matching=others,
            agent_message=agent_message(call, decision, now) if decision.blocked else None,
        )
        json.dump(data, out, indent=2)
        out.write("\n")
        return 0
    _print_explanation(call, decision, policy, origin=origin, others=others, now=now, out=out)
    return 0


def _print_explanation(
    call: ToolCall,
    decision: Decision,
    policy: Policy,
    *,
    origin: str,
    others: list[str],
    now: float,
    out: TextIO,
) -> None:
    rule_text = f'"{decision.rule}"' if decision.rule else f"(none: default {policy.default})"
    if decision.rule:
        rule = policy.rule_for(call.server, call.tool)
        if rule is not None:
            rule_text += f"  ({rule.pattern.specificity.name.lower().replace('_', ' ')})"
    lines = [
        f"decision: {decision.verdict}",
        f"rule:     {rule_text}",
        f"reason:   {decision.reason}",
        f"policy:   {origin}",
    ]
    if decision.hidden:
        lines.append("hidden:   yes: the tool is left out of tools/list")
    if decision.approval_timeout is not None:
        lines.append(f"approval: denied if nobody answers within {decision.approval_timeout:g} s")
    if decision.charges:
        lines.append(
            "limits:   counted against empty counters here; a running gateway may "
            "have used some budget already"
        )
    if others:
        lines.append("also matching, less specific: " + ", ".join(f'"{o}"' for o in others))
    if decision.blocked:
        lines.append(f"the agent is told: {agent_message(call, decision, now)}")
    print("\n".join(lines), file=out)


def _risk(file: str, as_json: bool, out: TextIO) -> int:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        print(f"{file}: not UTF-8 text (byte {exc.start} cannot be decoded)", file=sys.stderr)
        return 1
    try:
        # A byte-order mark, as some Windows editors write, is not part of the JSON.
        tools = tools_from_json(json.loads(text.removeprefix("\ufeff")))
    except json.JSONDecodeError as exc:
        print(f"{file}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{file}: {exc}", file=sys.stderr)
        return 1
    risks = classify_many(tools)
    if as_json:
        json.dump([r.as_dict() for r in risks], out, indent=2)
        out.write("\n")
        return 0
    width = max(len(r.name) for r in risks)
    for r in risks:
        print(
            f"{r.name:<{width}}  {r.category.value:<11}  {r.level.value:<6}  "
            + "; ".join(str(s) for s in r.signals),
            file=out,
        )
    return 0


def _connect(args: argparse.Namespace, paths: Paths) -> int:
    if args.client is not None and not valid_client_name(args.client):
        raise UsageError(f"{args.client!r} is not a valid client name")
    return connectcmd.run(paths, args.server, args.client)


def _control(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    try:
        if args.command == "status":
            _print_status(control(paths, "status"), out)
        elif args.command in ("pause", "resume"):
            control(paths, args.command)
            print(
                "paused: every tool call is denied until `lockgate resume`"
                if args.command == "pause"
                else "resumed",
                file=out,
            )
        elif args.approval_command in (None, "list"):
            pending = control(paths, "approvals")["pending"]
            for item in pending:
                print(_approval_text(item), file=out)
            if not pending:
                print("no calls are waiting for approval", file=sys.stderr)
        elif args.approval_command in ("allow", "deny"):
            pending = {p["id"]: p for p in control(paths, "approvals")["pending"]}
            if args.id not in pending:
                raise ControlError(
                    "no such pending approval (answered, timed out, or a "
                    "wrong id); `lockgate approvals list` shows them"
                )
            control(
                paths,
                "answer",
                id=args.id,
                approve=args.approval_command == "allow",
                reason=getattr(args, "reason", None),
                remember="session" if getattr(args, "session", False) else "once",
                digest=pending[args.id]["digest"],
            )
            print(
                f"{'approved' if args.approval_command == 'allow' else 'refused'} {args.id}",
                file=out,
            )
        else:
            return _watch_approvals(paths, out)
    except (GatewayNotRunning, ControlError) as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(status: dict[str, Any], out: TextIO) -> None:
    policy = status["policy"]
    lines = [
        f"gateway:   {'PAUSED' if status['paused'] else 'running'}",
        f"servers:   {', '.join(status['servers']) or 'none'}",
        f"policy:    {policy['source'] or 'built-in default'} ({policy['rules']} rules, "
        f"default {policy['default']})",
        f"approvers: {status['approvers']} attached, {status['pending']} calls waiting",
    ]
    if policy["error"]:
        lines.append(f"policy error (the last good policy stays in force):\n{policy['error']}")
    if status.get("audit_error"):
        lines.append(
            "audit log: cannot be written, so no call is sent to a server until it can:\n"
            f"  {status['audit_error']}"
        )
    for session in status["sessions"]:
        state = "up" if session["up"] else "down"
        lines.append(f"session:   {session['client']} -> {session['server']} ({state})")
    print("\n".join(lines), file=out)


def _approval_text(item: dict[str, Any]) -> str:
    left = max(0.0, float(item["deadline"]) - time.time())
    arguments = json.dumps(item["arguments"], ensure_ascii=False, indent=2)
    return (
        f"{item['id']}  {item['client']} -> {item['server']}/{item['tool']}  "
        f"({left:.0f} s left)\n  why asked: {item['reason']}\n  arguments: {arguments}"
    )


def _watch_approvals(paths: Paths, out: TextIO) -> int:
    print(
        "watching for calls that need approval (Ctrl-C stops; calls then wait for the app "
        "or time out)",
        file=sys.stderr,
    )
    try:
        events = watch(paths)
        first = next(events)
        queue = list(first.get("pending", []))
        for event in events:
            if event.get("event") == "pending":
                queue.append(event["approval"])
            while queue:
                item = queue.pop(0)
                print(_approval_text(item), file=out, flush=True)
                answer = input("allow [o]nce, allow for this [s]ession, or [d]eny? ").strip()
                if answer[:1].lower() in ("o", "s"):
                    remember = "session" if answer[:1].lower() == "s" else "once"
                    outcome = _answer(paths, item, True, None, remember)
                else:
                    reason = input("reason for the agent (optional): ").strip() or None
                    outcome = _answer(paths, item, False, reason, "once")
                print(outcome, file=out, flush=True)
    except (KeyboardInterrupt, EOFError):
        return 0
    return 0


def _answer(
    paths: Paths, item: dict[str, Any], approve: bool, reason: str | None, remember: str
) -> str:
    try:
        control(
            paths,
            "answer",
            id=item["id"],
            approve=approve,
            reason=reason,
            remember=remember,
            digest=item.get("digest"),
        )
    except ControlError as exc:
        return f"not answered: {exc}"
    return "approved" if approve else "refused"


def _log(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if not paths.audit_db.exists():
        print(f"no calls logged yet ({paths.audit_db} does not exist)", file=sys.stderr)
        if not args.follow:
            return 0
    audit = AuditLog(paths.audit_db)
    filters = {
        "server": args.server,
        "tool": args.tool,
        "client": args.client,
        "decision": args.decision,
    }

    def show(record: CallRecord) -> None:
        if any(v is not None and getattr(record, k) != v for k, v in filters.items()):
            return
        if args.json:
            print(json.dumps(record.as_dict(), ensure_ascii=False), file=out, flush=True)
        else:
            print(_log_line(record), file=out, flush=True)

    try:
        last = audit.latest_rowid()
        for record in reversed(audit.query(limit=args.limit, **filters)):
            show(record)
        while args.follow:
            time.sleep(0.25)
            for rowid, record in audit.since(last):
                last = rowid
                show(record)
    except KeyboardInterrupt:
        pass
    except AuditError as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    finally:
        audit.close()
    return 0


def _log_line(r: CallRecord) -> str:
    when = datetime.fromtimestamp(r.time).strftime("%Y-%m-%d %H:%M:%S")
    decided = r.decision.value + (f" ({r.basis})" if r.basis else "")
    duration = f"{r.duration_ms:.1f} ms" if r.duration_ms is not None else "-"
    rule = f'rule "{r.rule}"' if r.rule else "default"
    line = (
        f"{when}  {r.client}  {r.server}/{r.tool}  {decided}  {r.outcome.value}  {rule}  {duration}"
    )
    if r.outcome.value != "ok":
        line += f"  {r.error or r.reason}"
    return line


def _serve(args: argparse.Namespace, paths: Paths) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The gateway's imports (the MCP SDK, uvicorn) take a second; only `serve` needs them,
    # and `lockgate connect` is launched for every client session.
    from proxy.doors.serve import serve  # noqa: PLC0415

    try:
        asyncio.run(serve(paths, port=args.port))
    except (ServersError, AuditError, OSError) as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _token(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    store = TokenStore(paths.clients_file)
    try:
        if args.token_command == "create":
            token = store.create(args.client, replace=args.replace)
            print(token, file=out)  # alone on stdout, so it can be piped into a client config
            print(f"token for {args.client!r} created; it is shown only this once", file=sys.stderr)
        elif args.token_command == "revoke":
            store.revoke(args.client)
            print(f"token of {args.client!r} revoked", file=sys.stderr)
        else:
            clients = store.clients()
            for client in clients:
                print(f"{client.name}\tcreated {client.created}", file=out)
            if not clients:
                print(
                    "no client has a token; create one with: lockgate token create NAME",
                    file=sys.stderr,
                )
    except TokenError as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    return 0


def _secret(args: argparse.Namespace, out: TextIO) -> int:
    store = SecretStore()
    try:
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
    except SecretError as exc:
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_paths(paths: Paths, out: TextIO) -> None:
    print(f"config dir: {paths.config_dir}", file=out)
    print(f"policy:     {paths.policy_file}", file=out)
    print(f"servers:    {paths.servers_file}", file=out)
    print(f"clients:    {paths.clients_file}", file=out)
    print(f"data dir:   {paths.data_dir}", file=out)
    print(f"audit log:  {paths.audit_db}", file=out)


def _status(paths: Paths, out: TextIO) -> int:
    print(f"Lockgate {_version()}", file=out)
    try:
        policy, origin = _policy_in_force(None, paths)
    except PolicyError as exc:
        print(f"policy: INVALID, {paths.policy_file}\n{exc}", file=out)
        code = 1
    else:
        print(f"policy: {origin}: {len(policy.rules)} rules, default {policy.default}", file=out)
        code = 0
    print(
        "\nThe tray app starts with `lockgate` alone; `lockgate serve` runs the gateway "
        "without it. See `lockgate --help`.",
        file=out,
    )
    return code


def _clients(project: Path | None, as_json: bool, out: TextIO) -> int:
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


def _route(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    project = args.project.resolve() if args.project else None
    found = [f for f in find_clients(project=project) if f.client.name == args.client]
    if not found:
        print(f"lockgate clients: no configuration of {args.client} found", file=sys.stderr)
        return 1
    store, failed, changed = SecretStore(), False, False
    for client_file in found:
        try:
            if args.clients_command == "route":
                done = route(client_file, paths, store=store, via=args.via, port=args.port)
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
                if undone.revoked_token:
                    out.write(f"  revoked the token of {undone.revoked_token}\n")
        except RouteError as exc:
            print(f"lockgate clients: {exc}", file=sys.stderr)
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


def _init(paths: Paths, yes: bool, stdin: TextIO, out: TextIO) -> int:
    if paths.policy_file.exists():
        out.write(f"{paths.policy_file} already exists; nothing written.\n")
        return 1
    servers = load_servers(paths.servers_file) if paths.servers_file.exists() else {}
    if not servers:
        out.write(f"No servers in {paths.servers_file}: the built-in policy stays in force.\n")
        return 1
    out.write(f"Asking {len(servers)} server(s) for their tools...\n")
    with contextlib.ExitStack() as logs:

        def errlog(name: str) -> TextIO:  # the same private files the gateway writes
            return logs.enter_context(open_server_log(paths.log_dir, name))

        from proxy.upstream.catalog import list_all_tools  # noqa: PLC0415 (the MCP SDK: 0.6 s to import)

        listing = asyncio.run(list_all_tools(servers, SecretStore(), errlog))
    document = starting_policy(listing)
    text = policy_text(document)
    for server, found in listing.items():
        if found.error:
            out.write(f"  {server}: could not list its tools ({found.error}); they will ask\n")
    for pattern, rule in document["tools"].items():
        out.write(f"  {rule['action']:<6} {pattern:<40} {rule['description']}\n")
    out.write(f"  ask    everything else (the default)\n\n{text}\n")
    if not yes:
        if not stdin.isatty():
            out.write("Not written: run `lockgate init --yes` to write it.\n")
            return 0
        out.write(f"Write this to {paths.policy_file}? [y/N] ")
        out.flush()
        if stdin.readline().strip().lower() not in ("y", "yes"):
            out.write("Not written.\n")
            return 0
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.policy_file, text.encode())
    out.write(f"Written to {paths.policy_file}.\n")
    with contextlib.suppress(GatewayNotRunning, ControlError):
        control(paths, "reload-policy")
        out.write("It is in force in the running gateway.\n")
    return 0


def _autostart(state: str | None, out: TextIO) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
