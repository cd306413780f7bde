"""``python -m proxy.cli``: the command line, as ``lockgate`` runs it."""

from proxy.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
