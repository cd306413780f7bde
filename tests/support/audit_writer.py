"""Writes audit records for ever, printing each record's id only after its write returned.

tests/proxy/audit/test_log.py kills this process with SIGKILL and then checks that every id it
printed is in the database: an acknowledged write must survive a kill.

Usage: python _audit_writer.py DATABASE [TASKS]
"""

from __future__ import annotations

import asyncio
import sys
import time

from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome


async def write_forever(log: AuditLog, task: int) -> None:
    for n in range(sys.maxsize):
        record = CallRecord(
            time=time.time(),
            client="kill-test",
            server="files",
            tool=f"write_{task}",
            arguments={"task": task, "n": n},
            decision=CallDecision.ALLOWED,
            reason="allowed by the policy",
            outcome=Outcome.OK,
        )
        await log.write(record)
        sys.stdout.write(record.id + "\n")
        sys.stdout.flush()


async def main() -> None:
    log = AuditLog(sys.argv[1])
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    await asyncio.gather(*(write_forever(log, task) for task in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main())
