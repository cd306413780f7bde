"""Fixtures for the proxy tests that need real outside parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend


@pytest.fixture(scope="session")
def os_keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyringBackend]:
    """The real Linux OS keyring: GNOME Keyring over the Secret Service D-Bus API, on a
    private session bus, unlocked with a throwaway password. Not a test double: the same
    daemon and protocol a GNOME laptop uses (`./dev test` installs gnome-keyring and dbus).
    """
    for tool in ("dbus-daemon", "gnome-keyring-daemon"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run the suite through ./dev test, which installs it")
    home = tmp_path_factory.mktemp("keyring-home")
    runtime = tmp_path_factory.mktemp("keyring-run")
    runtime.chmod(0o700)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_RUNTIME_DIR": str(runtime),
    }
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1", "--nopidfile"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    daemon = subprocess.Popen(
        ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert daemon.stdin is not None
    daemon.stdin.write("throwaway-test-password")
    daemon.stdin.close()
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    try:
        from keyring.backends.SecretService import Keyring

        backend = Keyring()
        deadline = time.monotonic() + 20
        while True:  # wait until the daemon has claimed its bus name and unlocked
            try:
                backend.set_password("lockgate-probe", "probe", "ok")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield backend
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        for proc in (daemon, bus):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if bus.stdout is not None:
            bus.stdout.close()


@pytest.fixture
def config_dir(lockgate_dirs: tuple[Path, Path]) -> Path:
    return lockgate_dirs[0]


@pytest.fixture(scope="session")
def remote_everything() -> Iterator[str]:
    """server-everything over streamable HTTP: the remote upstream of the live gateway."""
    from tests.proxy._live import everything_over_http

    with everything_over_http() as url:
        yield url


@pytest.fixture
def live_gateway(tmp_path: Path, remote_everything: str) -> Iterator[object]:
    """A real `lockgate serve` (subprocess) with real upstream servers; see tests/proxy/_live.py."""
    from tests.proxy._live import LiveGateway, servers_json

    config, data = tmp_path / "live-config", tmp_path / "live-data"
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "upstream-received.jsonl")
    (config / "servers.json").write_text(
        json.dumps(servers_json(gateway.tee_log, remote_everything))
    )
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()
