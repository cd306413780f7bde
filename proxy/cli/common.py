"""What every command module of the command line shares."""

from __future__ import annotations

import re
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from proxy.errors import LockgateError

__all__ = ["UsageError", "moment", "version"]

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


class UsageError(LockgateError):
    """The command line asks for something that cannot be done as written (exit 2)."""

    title = "The command line is not right"


def version() -> str:
    try:
        return _installed_version("lockgate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def moment(text: str, now: float, option: str) -> float:
    """The time ``--since``/``--until`` name, as epoch seconds: an age ("30m", "24h",
    "7d", "2w": that long before ``now``), or a date or date and time in ISO 8601
    ("2026-11-30", "2026-11-30 14:00", with a zone or else local time).

    Raises:
        UsageError: the text is neither.
    """
    ago = _AGO.fullmatch(text.strip().lower())
    if ago:
        return now - float(ago[1]) * _SECONDS[ago[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a time: give an age such as 30m, 24h, 7d or 2w, "
            "or a date such as 2026-11-30 or 2026-11-30T14:00"
        ) from None
    return when.timestamp()  # a naive time is local time
