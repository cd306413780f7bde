"""The Linux bundle, built once per session with packaging/linux/build.sh into a temporary
folder, then run as a person and an MCP client run it: no Python, no venv, no checkout.

The bundled app starts on a real X server (Xvfb) with a real upstream (mcp-server-time from
PyPI), and the mcp SDK's own Client reaches a tool through it twice: over stdio by launching
the bundled ``lockgate connect time``, exactly as Claude Desktop would, and over streamable
HTTP with a token made by the bundled ``lockgate token create``. The headless ``lockgate
serve`` and the rest of the command line run from the bundle too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.support.waiting import eventually_sync
from tests.support.xserver import own_display

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bundle"),
]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VENV = BIN.parent
POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"convert_time": {"action": "deny", "reason": "the bundle test says no"}},
}


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle folder, built from this checkout by the real build script."""
    out = tmp_path_factory.mktemp("bundle")
    started = time.monotonic()
    result = subprocess.run(
        [
            "bash",
            str(REPO / "packaging" / "linux" / "build.sh"),
            "--dist",
            str(out / "dist"),
            "--work",
            str(out / "work"),
        ],
        cwd=REPO,
        env={**os.environ, "LOCKGATE_VENV": str(VENV)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    print(f"bundle built in {time.monotonic() - started:.0f} s")  # shown with pytest -s
    folder = out / "dist" / "lockgate"
    # The build's own folder is left out, so that nothing can come from it at run time.
    shutil.rmtree(out / "work")
    return folder


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Fresh Lockgate folders, a home and a runtime folder; servers.json names a real
    upstream by absolute path (a venv script the bundle knows nothing about)."""
    places = {name: tmp_path / name for name in ("config", "data", "home", "run")}
    for path in places.values():
        path.mkdir()
    places["run"].chmod(0o700)
    (places["config"] / "servers.json").write_text(
        json.dumps({"mcpServers": {"time": {"command": str(BIN / "mcp-server-time")}}})
    )
    (places["config"] / "policy.json").write_text(json.dumps(POLICY))
    return places


def clean_env(world: dict[str, Path], **extra: str) -> dict[str, str]:
    """What a desktop session gives a program: no PYTHONPATH, no venv, no Qt settings."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(world["home"]),
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(world["run"]),
        "LOCKGATE_CONFIG_DIR": str(world["config"]),
        "LOCKGATE_DATA_DIR": str(world["data"]),
        **extra,
    }


def run(bundle: Path, world: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bundle / "lockgate"), *args],
        env=clean_env(world),
        cwd=world["home"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name may hold spaces and parentheses: the ppid follows the last ")"
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A bundled process in a session of its own, stopped with SIGTERM, its group killed."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=env["HOME"], stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def gateway_of(proc: subprocess.Popen[bytes], world: dict[str, Path], log: Path) -> dict[str, Any]:
    """run/gateway.json once this process serves (and says so), failing if it died first."""
    run_file = world["data"] / "run" / "gateway.json"

    def ready() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise AssertionError(
                f"exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        with contextlib.suppress(OSError, ValueError):
            info: dict[str, Any] = json.loads(run_file.read_text())
            if info.get("pid") == proc.pid:
                return info
        return None

    return eventually_sync(ready, "the bundled gateway to serve", timeout=60)


@pytest.fixture
def display() -> Iterator[str]:
    """A real X server of this test's own, whatever DISPLAY the suite runs under."""
    with own_display() as name:
        yield name


async def test_the_bundled_app_starts_under_xvfb_and_serves_tool_calls(
    bundle, world, display, tmp_path
):
    log = tmp_path / "app.log"
    app_env = clean_env(world, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    with running([str(bundle / "lockgate")], app_env, log) as app:
        gateway = gateway_of(app, world, log)

        # Over stdio: the MCP client launches the bundled bridge with its own small env.
        bridge = StdioServerParameters(
            command=str(bundle / "lockgate"),
            args=["connect", "time", "--client", "bundle-stdio"],
            env=clean_env(world),
            cwd=world["home"],
        )
        async with Client(bridge, mode="legacy") as client:
            assert {"get_current_time", "convert_time"} <= {
                t.name for t in (await client.list_tools()).tools
            }
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert not result.is_error, text_of(result)
            assert json.loads(text_of(result))["timezone"] == "UTC"
            denied = await client.call_tool(
                "convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
            )
            assert denied.is_error
            assert "the bundle test says no" in text_of(denied)

            # The upstream runs outside the bundle: not on the bundle's private library
            # path, which would load its libssl and libstdc++ into node, python, ...
            upstreams = [
                pid
                for pid in children(app.pid)
                if b"mcp-server-time" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            assert upstreams, "the app started no mcp-server-time"
            for pid in upstreams:
                env = environ_of(pid)
                assert str(bundle) not in env.get("LD_LIBRARY_PATH", ""), env
                assert not any(name.startswith("_PYI") for name in env), env

        # Over streamable HTTP, with a token from the bundled command line.
        made = run(bundle, world, "token", "create", "bundle-http")
        assert made.returncode == 0, made.stderr
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(
                streamable_http_client(gateway["url"] + "time", http_client=http), mode="legacy"
            ) as client,
        ):
            result = await client.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            assert json.loads(text_of(result))["timezone"] == "Europe/Paris"

        logged = run(bundle, world, "log", "--json")
        assert logged.returncode == 0, logged.stderr
        calls = [json.loads(line) for line in logged.stdout.splitlines()]
        assert sorted((c["client"], c["tool"], c["decision"]) for c in calls) == [
            ("bundle-http", "get_current_time", "allowed"),
            ("bundle-stdio", "convert_time", "denied"),
            ("bundle-stdio", "get_current_time", "allowed"),
        ]
        assert app.poll() is None, log.read_text(errors="replace")
    for pid in upstreams:  # the stdio session ended, and its server with it
        eventually_sync(
            lambda pid=pid: not Path(f"/proc/{pid}").exists(),  # type: ignore[misc]
            "the upstream to end",
            timeout=10,
        )


async def test_the_bundled_gateway_serves_headless_and_stops_cleanly(bundle, world, tmp_path):
    log = tmp_path / "serve.log"
    with running(
        [str(bundle / "lockgate"), "serve", "--port", "0"], clean_env(world), log
    ) as serve:
        gateway_of(serve, world, log)
        bridge = StdioServerParameters(
            command=str(bundle / "lockgate"), args=["connect", "time"], env=clean_env(world)
        )
        async with Client(bridge, mode="legacy") as client:
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert json.loads(text_of(result))["timezone"] == "UTC"
        status = run(bundle, world, "status")
        assert status.returncode == 0, status.stderr
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(20) == 0, log.read_text(errors="replace")
    assert not (world["data"] / "run" / "gateway.json").exists()


def test_the_bundled_command_line_and_its_data_files(bundle, world):
    version = run(bundle, world, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "lockgate 0.1.0"

    paths = run(bundle, world, "paths")
    assert paths.returncode == 0, paths.stderr
    assert str(world["config"] / "policy.json") in paths.stdout

    # lockgate_resources travels as data: the schema, and the default policy it checks.
    schema = run(bundle, world, "policy", "schema")
    assert json.loads(schema.stdout)["$id"] == "urn:lockgate:policy-schema:1"
    shipped = bundle / "_internal" / "lockgate_resources"
    assert {p.name for p in shipped.iterdir()} >= {
        "default-policy.json",
        "policy.schema.json",
        "lockgate.svg",
        "lockgate-attention.svg",
    }
    assert (
        run(bundle, world, "policy", "check", str(shipped / "default-policy.json")).returncode == 0
    )
    (world["config"] / "policy.json").write_text('{"version": "1", "default": "maybe"}')
    broken = run(bundle, world, "policy", "check")
    assert broken.returncode == 1
    assert "maybe" in broken.stderr

    # Qt: the platforms the app needs are there, the ones that drag in GTK are not.
    plugins = bundle / "_internal" / "PySide6" / "Qt" / "plugins"
    platforms = {p.name for p in (plugins / "platforms").iterdir()}
    assert {"libqxcb.so", "libqoffscreen.so"} <= platforms
    assert "libqeglfs.so" not in platforms
    assert not (plugins / "platformthemes" / "libqgtk3.so").exists()
    assert (plugins / "imageformats" / "libqsvg.so").exists()
    assert not list((bundle / "_internal").glob("libgtk-3*"))
    assert not list((bundle / "_internal").glob("PySide6/Qt/lib/libQt6Qml*"))


def test_the_menu_entry_and_the_user_install(bundle, tmp_path, world):
    entry = bundle / "share" / "applications" / "lockgate.desktop"
    fields = dict(line.split("=", 1) for line in entry.read_text().splitlines() if "=" in line)
    assert (fields["Name"], fields["Exec"], fields["Icon"], fields["Type"]) == (
        "Lockgate",
        "lockgate",
        "lockgate",
        "Application",
    )
    assert fields["Categories"].split(";")[:2] == ["Utility", "Security"]
    if shutil.which("desktop-file-validate"):
        checked = subprocess.run(
            ["desktop-file-validate", "--no-hints", str(entry)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    icons = bundle / "share" / "icons" / "hicolor"
    assert (icons / "scalable" / "apps" / "lockgate.svg").exists()
    for size in (16, 48, 256):
        png = (icons / f"{size}x{size}" / "apps" / "lockgate.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert int.from_bytes(png[16:20], "big") == size  # the IHDR width

    prefix = tmp_path / "prefix"
    env = {**clean_env(world), "PREFIX": str(prefix)}
    done = subprocess.run(
        [str(bundle / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    installed = prefix / "bin" / "lockgate"
    assert installed.is_symlink()
    version = subprocess.run(
        [str(installed), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.stdout.strip() == "lockgate 0.1.0", version.stderr
    menu = (prefix / "share" / "applications" / "lockgate.desktop").read_text()
    assert f"Exec={prefix}/opt/lockgate/lockgate\n" in menu
    assert (prefix / "share" / "icons" / "hicolor" / "48x48" / "apps" / "lockgate.png").exists()

    removed = subprocess.run(
        [str(prefix / "opt" / "lockgate" / "install.sh"), "--uninstall"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not installed.exists()
    assert not installed.is_symlink()
    assert not (prefix / "opt" / "lockgate").exists()
    assert not (prefix / "share" / "applications" / "lockgate.desktop").exists()
