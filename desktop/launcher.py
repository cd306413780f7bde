"""The ``lockgate`` command: the tray app when run alone, else the command line.

Nothing here imports Qt until the app is wanted, so ``lockgate serve`` and the other
commands start as fast as they did and run where no display (or no Qt) exists.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from proxy.bridge.connect import command_of, fast_main
from proxy.config.paths import Paths

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if command_of(args) == "connect":  # launched by MCP clients, many at once: kept light
        return fast_main(args)
    from proxy.cli.main import main as cli_main  # noqa: PLC0415 (the whole command line)

    return cli_main(args, app=_app)


def _app(paths: Paths, port: int | None) -> int:
    from desktop.main import run_app  # noqa: PLC0415 (Qt only when the app is wanted)

    return run_app(paths, port)


if __name__ == "__main__":
    sys.exit(main())
