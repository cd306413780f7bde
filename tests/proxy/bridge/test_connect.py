"""`lockgate connect` is launched by MCP clients for every server, at every client start:
it runs on a light path of its own (proxy.bridge.connect), and behaves as the full command
line's `connect` does. The bridging itself is tested end to end in test_local.py and
test_route.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proxy.bridge.connect import command_of
from tests.support.live import lockgate_command

HEAVY = (
    "mcp",
    "mcp_types",
    "uvicorn",
    "jsonschema",
    "PySide6",
    "proxy.cli.main",
    "proxy.gateway.core",
)
SDK = ("mcp", "mcp_types", "uvicorn", "PySide6", "httpx2", "anyio")


def run_launcher(*argv: str) -> tuple[int, list[str], str]:
    code = (
        "import json, sys\n"
        "from desktop import launcher\n"
        f"rc = launcher.main({list(argv)!r})\n"
        "print(json.dumps([rc, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    rc, modules = json.loads(result.stdout.splitlines()[-1])
    return rc, modules, result.stderr


def test_connect_imports_none_of_the_heavy_parts(tmp_path):
    rc, modules, err = run_launcher("--data-dir", str(tmp_path), "connect", "time")
    assert rc == 1
    assert "Lockgate is not running" in err
    loaded = [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY]
    assert loaded == []
    assert "proxy.bridge.connect" in modules


def test_the_full_command_line_still_knows_connect(tmp_path):
    # The same options through the full parser (what `lockgate --help` documents).
    from proxy.cli.main import main

    assert main(["connect", "time", "--data-dir", str(tmp_path)]) == 1
    with pytest.raises(SystemExit) as bad:
        main(["connect", "time", "--client", "bad name"])
    assert bad.value.code == 2


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["connect", "x"], "connect"),
        (["--config-dir", "connect", "serve"], "serve"),
        (["--data-dir", "/d", "connect", "x", "--client", "c"], "connect"),
        (["--port", "1", "--version"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_after_global_options(argv, command):
    assert command_of(argv) == command


def test_a_bad_client_name_is_a_usage_error(tmp_path):
    rc, _modules, err = run_launcher("connect", "x", "--client", "bad name")
    assert rc == 2
    assert "'bad name' is not a valid client name" in err


def test_the_command_line_loads_the_mcp_sdk_only_for_commands_that_need_it():
    # `lockgate status`, `log`, `policy check`... start in a quarter of a second; the SDK
    # (0.6 s to import) is loaded by `serve`, `init` and the app, when they run.
    code = (
        "import sys, proxy.cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code % (SDK,)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_stdout_to_a_file_is_told_plainly_and_the_gateway_logs_no_traceback(live_gateway, tmp_path):
    out_file = tmp_path / "out.jsonl"
    with out_file.open("wb") as out:
        result = subprocess.run(
            [lockgate_command(), "connect", "everything"],
            env=live_gateway.env,
            stdout=out,
            stderr=subprocess.PIPE,
            input=b"",
            timeout=60,
            check=False,
        )
    told = result.stderr.decode()
    assert result.returncode != 0
    assert "its stdout is a file here" in told, told
    assert "ValueError" not in live_gateway.serve_log()
