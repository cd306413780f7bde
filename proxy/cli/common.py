"""What every command module of the command line shares."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from proxy.errors import LockgateError

__all__ = ["UsageError", "version"]


class UsageError(LockgateError):
    """The command line asks for something that cannot be done as written (exit 2)."""

    title = "The command line is not right"


def version() -> str:
    try:
        return _installed_version("lockgate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
