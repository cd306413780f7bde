"""``lockgate status|pause|resume|approvals|serve|connect|paths``: the running gateway, from
a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any, TextIO

from proxy.bridge import connect as connectcmd
from proxy.bridge.control import (
    ControlError,
    control,
    watch,
)
from proxy.cli.common import UsageError, version
from proxy.cli.policy import policy_in_force
from proxy.config.instance import running_holder
from proxy.config.paths import Paths
from proxy.config.runinfo import read_run_info
from proxy.config.settings import load_settings
from proxy.config.tokens import valid_client_name
from proxy.policy.edit import PolicyEditError, edit_rule
from proxy.policy.model import PolicyError


def connect(args: argparse.Namespace, paths: Paths) -> int:
    if args.client is not None and not valid_client_name(args.client):
        raise UsageError(f"{args.client!r} is not a valid client name")
    return connectcmd.run(paths, args.server, args.client)


def control_command(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    if args.command == "status":
        _print_status(control(paths, "status"), out, _who_serves(paths))
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
    return 0


def _who_serves(paths: Paths) -> str:
    """`` in the app (pid N) on URL``: which Lockgate answered, and where it listens."""
    holder, info = running_holder(paths), read_run_info(paths)
    if holder is None or info is None or info.pid != holder.pid:
        return ""
    where = "the app" if holder.kind == "app" else "`lockgate serve`"
    return f" in {where} (pid {holder.pid}) on {info.url}"


def _print_status(status: dict[str, Any], out: TextIO, who: str = "") -> None:
    policy = status["policy"]
    servers = ", ".join(status["servers"]) or "none"
    if status.get("disabled"):
        servers += f" (turned off: {', '.join(status['disabled'])})"
    lines = [
        f"gateway:   {'PAUSED' if status['paused'] else 'running'}{who}",
        f"servers:   {servers}",
        f"policy:    {policy['source'] or 'built-in default'} ({policy['rules']} rules, "
        f"default {policy['default']})",
        f"approvers: {status['approvers']} attached, {status['pending']} calls waiting",
    ]
    team = policy.get("team")
    if team is not None:
        lines.append(f"team:      {team['source']} ({team['rules']} rules, which policy.json "
                     "cannot loosen)")  # fmt: skip
        if team["error"]:
            lines.append(f"team policy error (its last good copy stays in force):\n{team['error']}")
    if policy["error"]:
        lines.append(f"policy error (the last good policy stays in force):\n{policy['error']}")
    if status.get("servers_error"):
        lines.append(f"servers.json error (the servers in force stay):\n{status['servers_error']}")
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
                # a result that holds a secret is let through once or not: no rule of it
                about_result = item.get("about") == "result"
                choice = _ask_choice(out, about_result=about_result)
                if choice == "deny":
                    reason = input("reason for the agent (optional): ").strip() or None
                    outcome = _answer(paths, item, False, reason, "once")
                elif choice == "always":
                    outcome = _always(paths, item, out)
                else:
                    outcome = _answer(paths, item, True, None, choice)
                print(outcome, file=out, flush=True)
    except (KeyboardInterrupt, EOFError):
        return 0
    return 0


_CHOICES = {"y": "once", "s": "session", "a": "always", "n": "deny"}
_QUESTION = "allow? [y] once, [s] for this session, [a]lways (writes a rule), [n] no: "
_RESULT_CHOICES = {"y": "once", "n": "deny"}
_RESULT_QUESTION = "let this result reach the agent? [y] yes, this once, [n] no: "


def _ask_choice(out: TextIO, *, about_result: bool = False) -> str:
    """once, session, always or deny (for a result: once or deny), asked again until the
    answer is one of them (a stray key must not answer a call either way)."""
    choices = _RESULT_CHOICES if about_result else _CHOICES
    while True:
        answer = input(_RESULT_QUESTION if about_result else _QUESTION).strip().lower()
        if answer in choices:
            return choices[answer]
        keys = list(choices)
        print(f"please answer {', '.join(keys[:-1])} or {keys[-1]}", file=out, flush=True)


def _always(paths: Paths, item: dict[str, Any], out: TextIO) -> str:
    """Allow the call, and write the allow rule that answers the next ones."""
    pattern = f"{item['server']}/{item['tool']}"
    try:
        edit_rule(paths.policy_file, pattern, {"action": "allow", "hide": None})
    except PolicyEditError as exc:
        print(f"lockgate: {exc.told(pattern)}; the call is allowed once", file=out)
    else:
        print(f"wrote the rule {pattern}: allow", file=out)
        with contextlib.suppress(ControlError):
            control(paths, "reload-policy")  # in force before the call is released
    return _answer(paths, item, True, None, "once")


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


def serve(args: argparse.Namespace, paths: Paths) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The gateway's imports (the MCP SDK, uvicorn) take a second; only `serve` needs them,
    # and `lockgate connect` is launched for every client session.
    from proxy.doors.serve import serve  # noqa: PLC0415

    port = args.port if args.port is not None else load_settings(paths).port
    try:
        asyncio.run(serve(paths, port=port))
    except OSError as exc:  # the port is taken, say
        print(f"lockgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def status(paths: Paths, out: TextIO) -> int:
    print(f"Lockgate {version()}", file=out)
    holder, who = running_holder(paths), _who_serves(paths)
    if who:
        print(f"gateway: running{who}", file=out)
    elif holder is not None:
        where = "the app" if holder.kind == "app" else "`lockgate serve`"
        print(
            f"gateway: not serving; {where} (pid {holder.pid}) runs without it (starting, "
            "or it failed: see its window or its log)",
            file=out,
        )
    else:
        print("gateway: not running", file=out)
    try:
        policy, origin = policy_in_force(None, paths)
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


def print_paths(paths: Paths, out: TextIO) -> None:
    print(f"config dir: {paths.config_dir}", file=out)
    print(f"policy:     {paths.policy_file}", file=out)
    print(f"servers:    {paths.servers_file}", file=out)
    print(f"clients:    {paths.clients_file}", file=out)
    print(f"data dir:   {paths.data_dir}", file=out)
    print(f"audit log:  {paths.audit_db}", file=out)
