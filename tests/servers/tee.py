"""Run an MCP stdio server and record every line it receives.

    python tee.py LOGFILE COMMAND [ARGS...]

Not a stand-in: the real server runs unchanged behind it. The tests read LOGFILE to prove
what reached the server, above all that a call Lockgate blocked never did.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading


def main() -> int:
    log_path, command = sys.argv[1], sys.argv[2:]
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer
    )
    assert child.stdin is not None
    to_child = child.stdin

    def pump() -> None:
        with open(log_path, "ab", buffering=0) as log:
            for line in sys.stdin.buffer:
                log.write(line)
                try:
                    to_child.write(line)
                    to_child.flush()
                except BrokenPipeError:
                    break
        with contextlib.suppress(BrokenPipeError):
            to_child.close()

    threading.Thread(target=pump, daemon=True).start()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
