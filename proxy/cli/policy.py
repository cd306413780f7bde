"""``lockgate policy check|explain|replay|reload|schema``, ``lockgate risk`` and ``lockgate init``:
the policy, from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from proxy.audit.log import AuditReader
from proxy.bridge.control import (
    ControlError,
    GatewayNotRunning,
    control,
)
from proxy.cli.common import UsageError, moment
from proxy.config.atomic import write_atomic
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from proxy.config.servers import load_servers, open_server_log
from proxy.config.settings import SettingsError, load_settings
from proxy.policy.decide import Decision, ToolCall, agent_message, decide
from proxy.policy.limits import Counters
from proxy.policy.model import (
    DEFAULT_APPROVAL_TIMEOUT,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    team_layer,
)
from proxy.policy.replay import replay, replay_history
from proxy.policy.risk import classify_many, tools_from_json
from proxy.policy.starter import policy_text, starting_policy
from proxy.policy.store import restore_last_good, team_unreadable


def policy_in_force(explicit: Path | None, paths: Paths) -> tuple[Policy, str]:
    """The policy a command should use, and a note on where it came from.

    Raises:
        PolicyError: the file exists (or was named) and is not a valid policy.
    """
    if explicit is not None:
        return load_policy(explicit), str(explicit)
    if paths.policy_file.exists():
        return load_policy(paths.policy_file), str(paths.policy_file)
    return default_policy(), f"built-in default (no file at {paths.policy_file})"


def under_the_team(policy: Policy, paths: Paths) -> tuple[Policy, str | None]:
    """``policy`` under the team's layer, if the ``team_policy`` setting names one, as a
    gateway would have it in force: the file, else the copy of it the gateway kept, else
    a layer that refuses every call; and a note on which (None: no team layer).

    Raises:
        SettingsError: settings.json is broken.
    """
    named = load_settings(paths).team_policy
    if not named:
        return policy, None
    for source in (Path(named), paths.last_good_team_policy):
        try:
            return policy.with_team(team_layer(load_policy(source))), f"team policy {source}"
        except PolicyError:
            continue
    unreadable = team_unreadable(Path(named))
    return policy.with_team(unreadable), f"team policy {named} (cannot be read: refuses every call)"


def check(file: Path | None, paths: Paths, as_json: bool, out: TextIO) -> int:
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


def reload(paths: Paths, out: TextIO) -> int:
    """Put policy.json in force in the running gateway now (it also does so by itself a
    moment after the file changes)."""
    try:
        answer = control(paths, "reload-policy")
    except ControlError as exc:
        print(f"policy.json not applied, the last good policy stays in force:\n{exc}", file=out)
        return 1
    where = answer["source"] or "the built-in default policy"
    print(f"in force: {where} ({answer['rules']} rules, default {answer['default']})", file=out)
    return 0


def restore(paths: Paths, out: TextIO) -> int:
    """Put the last policy in force back as policy.json (after it was deleted)."""
    try:
        restore_last_good(paths.policy_file, paths.last_good_policy)
    except OSError as exc:
        print(f"lockgate: policy.json not restored: {exc}", file=sys.stderr)
        return 1
    print(f"restored {paths.policy_file}: the last policy in force", file=out)
    return 0


def _parse_arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise UsageError('--args must be a JSON object, like \'{"path": "/tmp/x"}\'')
    return value


def explain(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
    call = ToolCall(args.server, args.tool, _parse_arguments(args.args), args.client)
    try:
        policy, origin = policy_in_force(args.policy, paths)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        print(
            "the policy is invalid; a running Lockgate keeps its last good policy", file=sys.stderr
        )
        return 1
    try:  # the timeout of an ask whose rule sets none: the gateway's, from settings.json
        timeout: float = load_settings(paths).approval_timeout_seconds
    except SettingsError as exc:  # no gateway starts with it; the decision is still shown
        print(f"lockgate: {exc}; the default approval timeout is shown", file=sys.stderr)
        timeout = DEFAULT_APPROVAL_TIMEOUT
    try:
        policy, team = under_the_team(policy, paths)
    except SettingsError:
        team = None  # (said above)
    if team is not None:
        origin += f", under the {team}"
    now = time.monotonic()
    decision = decide(policy, call, Counters(), now, default_approval_timeout=timeout)
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
    layer = policy.team if decision.layer == "team" and policy.team is not None else policy
    rule_text = f'"{decision.rule}"' if decision.rule else f"(none: default {layer.default})"
    if decision.layer == "team":
        rule_text = "the team's " + rule_text
    if decision.rule:
        rule = layer.rule_for(call.server, call.tool)
        if rule is not None:
            rule_text += f"  ({rule.pattern.specificity.name.lower().replace('_', ' ')})"
        if decision.case is not None:
            rule_text += f", its when[{decision.case}]"
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


def risk(file: str, as_json: bool, out: TextIO) -> int:
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


def init(paths: Paths, yes: bool, stdin: TextIO, out: TextIO) -> int:
    if paths.policy_file.exists():
        out.write(f"{paths.policy_file} already exists; nothing written.\n")
        return 1
    every = load_servers(paths.servers_file) if paths.servers_file.exists() else {}
    servers = {name: spec for name, spec in every.items() if not spec.disabled}
    turned_off = sorted(every.keys() - servers.keys())
    if not servers:
        where = f"No servers in {paths.servers_file}"
        if turned_off:
            where = f"Every server of {paths.servers_file} is turned off ({', '.join(turned_off)})"
        out.write(f"{where}: the built-in policy stays in force.\n")
        return 1
    out.write(f"Asking {len(servers)} server(s) for their tools...\n")
    for name in turned_off:  # not started: turned off means Lockgate runs nothing of it
        out.write(f"  {name}: turned off in Lockgate, not asked; its tools will ask\n")
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


def replay_command(
    args: argparse.Namespace, paths: Paths, out: TextIO, clock: Any = time.time
) -> int:
    """``lockgate policy replay``: exit 0 when the candidate decides every call as the
    policy in force does, 1 when it does not."""
    now = clock()
    start = moment(args.since, now, "--since")
    end = now if args.until is None else moment(args.until, now, "--until")
    mine, source = policy_in_force(args.policy, paths)
    in_force, team = under_the_team(mine, paths)  # the team's layer stays as it is
    candidate, _ = under_the_team(load_policy(args.candidate), paths)
    if team is not None:
        source += f", under the {team}"
    if not paths.audit_db.exists():
        report = replay((), candidate, in_force, start=start, end=end)
    else:
        report = replay_history(AuditReader(paths.audit_db), candidate, in_force, start, end)
    period = (
        f"the last {args.since}" if args.since[-1:].isalpha() else f"the period since {args.since}"
    )
    if args.json:
        data = report.as_dict()
        data["summary"] = report.summary(period)
        data["in_force"] = source
        json.dump(data, out, indent=2)
        out.write("\n")
        return 1 if report.changed else 0
    print(report.summary(period), file=out)
    print(
        f"(against {source}; {report.skipped:,} calls refused by Lockgate itself, not by a "
        "policy, are left out)",
        file=out,
    )
    if report.drifted:
        print(
            f"Note: {report.drifted:,} of the calls this change may touch were decided "
            "otherwise when they were made: the policy in force changed during the period.",
            file=out,
        )
    if report.changed:
        print("\nper tool:", file=out)
        for (change, tool), count in report.by_tool.most_common():
            print(f"  {count:>8,}  {change:<8} {tool}", file=out)
        print("per client:", file=out)
        for (change, client), count in report.by_client.most_common():
            print(f"  {count:>8,}  {change:<8} {client}", file=out)
        print("examples:", file=out)
        for kept in report.examples.values():
            for example in kept:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(example.call.time))
                mark = "  (uncertain: its arguments are redacted in the log)" * example.uncertain
                print(
                    f"  {when}  {example.call.client}  {example.call.server}/"
                    f"{example.call.tool}  {example.was} -> {example.now}: {example.reason}"
                    f"  [{example.call.id}]{mark}",
                    file=out,
                )
    return 1 if report.changed else 0
