"""``lockgate log``: the audit log, filtered, once or followed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import TextIO

from proxy.audit.log import AuditLog
from proxy.audit.records import CallRecord
from proxy.cli.common import UsageError
from proxy.config.paths import Paths


def log_command(args: argparse.Namespace, paths: Paths, out: TextIO) -> int:
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
    line = (
        f"{when}  {r.client}  {r.server}/{r.tool}  {decided}  {r.outcome.value}  {rule}  {duration}"
    )
    if r.outcome.value != "ok":
        line += f"  {r.error or r.reason}"
    if r.secrets is not None:  # what the result held (kinds and places, never a value)
        found = ", ".join(f"{f.get('kind')} in {f.get('where')}" for f in r.findings)
        line += f"  secrets {r.secrets}" + (f": {found}" if found else "")
    return line
