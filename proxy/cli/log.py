"""``lockgate log``: the audit log, filtered and searched, printed, exported or followed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from proxy.audit.database import AuditError, match_expression
from proxy.audit.export import ExportFormat, export_calls, pages
from proxy.audit.log import AuditLog
from proxy.audit.records import CallRecord
from proxy.cli.common import UsageError, moment
from proxy.config.paths import Paths

DEFAULT_LIMIT = 50  # the latest calls printed as text when --limit is not given


def log_command(
    args: argparse.Namespace, paths: Paths, out: TextIO, clock: Callable[[], float] = time.time
) -> int:
    form = "jsonl" if args.json else (args.format or "text")
    if args.json and args.format not in (None, "jsonl"):
        raise UsageError("--json is --format jsonl: give one of them")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.follow and (args.search is not None or args.until is not None):
        raise UsageError("--follow prints calls as they come: leave out --search and --until")
    if args.follow and form == "csv":
        raise UsageError("--follow cannot write CSV: use --format jsonl")
    if args.search is not None:
        try:
            match_expression(args.search)
        except AuditError as exc:
            raise UsageError(f"--search: {exc}") from None
    now = clock()
    start = None if args.since is None else moment(args.since, now, "--since")
    end = None if args.until is None else moment(args.until, now, "--until")
    if not paths.audit_db.exists():
        print(f"no calls logged yet ({paths.audit_db} does not exist)", file=sys.stderr)
        if not args.follow:
            return 0
    audit = AuditLog(paths.audit_db)
    equal = {
        "server": args.server,
        "tool": args.tool,
        "client": args.client,
        "decision": args.decision,
        "outcome": args.outcome,
    }
    chosen: dict[str, Any] = {**equal, "start": start, "end": end, "search": args.search}

    def show(record: CallRecord) -> None:
        if form == "jsonl":
            print(json.dumps(record.as_dict(), ensure_ascii=False), file=out, flush=True)
        else:
            print(_log_line(record), file=out, flush=True)

    try:
        last = audit.latest_rowid()
        if form != "text" and args.limit is None and not args.follow:
            # an export: every call that matches, oldest first, a page at a time
            export_calls(
                pages(
                    lambda after: audit.query_rows(
                        **chosen, after_seq=after, limit=2000, oldest_first=True
                    )
                ),
                out,
                ExportFormat(form),
            )
            return 0
        limit = DEFAULT_LIMIT if args.limit is None else args.limit
        latest = list(reversed(audit.query(limit=limit, **chosen)))
        if form == "csv":
            export_calls(latest, out, ExportFormat.CSV)
            return 0
        for record in latest:
            show(record)
        while args.follow:
            time.sleep(0.25)
            for rowid, record in audit.since(last):
                last = rowid
                if all(v is None or getattr(record, k) == v for k, v in equal.items()) and (
                    start is None or record.time >= start
                ):
                    show(record)
    except KeyboardInterrupt:
        pass
    finally:
        audit.close()
    return 0


def _log_line(r: CallRecord) -> str:
    when = datetime.fromtimestamp(r.time).strftime("%Y-%m-%d %H:%M:%S")
    decided = r.decision.value + (f" ({r.basis})" if r.basis else "")
    duration = f"{r.duration_ms:.1f} ms" if r.duration_ms is not None else "-"
    # No rule: the policy's default decided, or Lockgate's state (paused, a server
    # removed, a call too large), which the basis above names.
    rule = (
        f'rule "{r.rule}"' if r.rule else "default" if r.basis in (None, "default") else "no rule"
    )
    if r.rule and r.case is not None:
        rule += f" when[{r.case}]"  # the case of the rule's "when" list that decided
    if r.layer == "team":  # the team's policy decided, not policy.json
        rule = "team " + rule
    line = (
        f"{when}  {r.client}  {r.server}/{r.tool}  {decided}  {r.outcome.value}  {rule}  {duration}"
    )
    if r.outcome.value != "ok":
        line += f"  {r.error or r.reason}"
    if r.secrets is not None:  # what the result held (kinds and places, never a value)
        found = ", ".join(f"{f.get('kind')} in {f.get('where')}" for f in r.findings)
        line += f"  secrets {r.secrets}" + (f": {found}" if found else "")
    return line
