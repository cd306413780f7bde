"""Export of the audit log's calls as CSV or JSON Lines: ``lockgate log --format`` and the
window's History view write the same files, through :func:`export_calls`.

What is written is what the log holds, so it is redacted exactly as the log is (the
arguments as stored, findings as kind and place, never a value). A CSV cell that a
spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage
return first) is written with a ``'`` before it: an exported call must never run
anything in the program that opens it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TextIO

from proxy.audit.records import CallRecord

__all__ = ["CSV_FIELDS", "ExportFormat", "export_calls", "export_to_file", "pages"]

# the columns of a CSV export, in order (as_dict's keys; JSON Lines keeps them all)
CSV_FIELDS: Final = (
    "time id client client_info server tool decision basis layer rule case reason outcome "
    "duration_ms waited_ms result_size error secrets findings arguments protocol"
).split()
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
PAGE: Final = 2000  # calls read from the log at a time


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def pages(
    read: Callable[[int | None], list[tuple[int, CallRecord]]],
) -> Iterator[CallRecord]:
    """Every record ``read`` gives, a page at a time: ``read(after)`` returns the next
    page of (rowid, record) oldest first, after the rowid given (None: from the start),
    and an empty page at the end. Memory stays one page, whatever the log holds."""
    after: int | None = None
    while True:
        page = read(after)
        if not page:
            return
        for _, record in page:
            yield record
        after = page[-1][0]


def export_calls(records: Iterable[CallRecord], out: TextIO, form: ExportFormat) -> int:
    """Write ``records`` to ``out`` as ``form``; returns how many were written."""
    count = 0
    if form is ExportFormat.JSONL:
        for record in records:
            out.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
            count += 1
        return count
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_FIELDS)
    for record in records:
        values = record.as_dict()
        writer.writerow([_cell(values[name]) for name in CSV_FIELDS])
        count += 1
    return count


def export_to_file(records: Iterable[CallRecord], path: Path, form: ExportFormat) -> int:
    """Write ``records`` to the file ``path`` as ``form``; how many were written. The
    file is private (0600, as the audit log is: it holds the calls' history) and appears
    whole or not at all: it is written beside, as ``NAME.part``, then renamed.

    Raises:
        OSError: it cannot be written (nothing is left behind).
    """
    part = path.with_name(path.name + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            os.fchmod(out.fileno(), 0o600)  # an older .part of the same name kept its mode
            written = export_calls(records, out, form)
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
