"""Shared test set-up: every test gets its own Lockgate folders, and Qt runs offscreen
unless a test asks for the real (Xvfb) display."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend

from tests.support.live import stop_process

# Before anything imports Qt. Tests that need a real X display (tray, screenshots) set
# QT_QPA_PLATFORM=xcb themselves; `./dev test` runs the suite under xvfb-run for them.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent

# the fixtures with real outside parts (a live gateway, a remote upstream), for every folder
pytest_plugins = ["tests.support.fixtures", "tests.support.oauth"]


@pytest.fixture(autouse=True)
def lockgate_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point Lockgate at fresh folders, never at the real user's config or data."""
    config = tmp_path / "config"
    data = tmp_path / "data"
    monkeypatch.setenv("LOCKGATE_CONFIG_DIR", str(config))
    monkeypatch.setenv("LOCKGATE_DATA_DIR", str(data))
    return config, data


def _wait_for_unlocked_login(deadline: float) -> None:
    """Wait until the daemon has made its login collection and unlocked it.

    Writing earlier makes keyring ask for the collection to be created or unlocked,
    a prompt nobody answers here (it waited 300 s in CI once); these reads never prompt.
    """
    import secretstorage
    from jeepney.wrappers import DBusErrorResponse
    from secretstorage.exceptions import SecretStorageException

    while True:
        try:
            connection = secretstorage.dbus_init()
            try:
                if not secretstorage.Collection(connection).is_locked():
                    return
            finally:
                connection.close()
        except (SecretStorageException, DBusErrorResponse, OSError):
            pass  # the daemon has not claimed its name or made its collection yet
        if time.monotonic() > deadline:
            raise TimeoutError("gnome-keyring-daemon did not unlock its login collection in 20 s")
        time.sleep(0.05)


def _start_keyring_daemon(env: dict[str, str]) -> subprocess.Popen[str]:
    """gnome-keyring-daemon on the private bus, told its login password on stdin."""
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
    return daemon


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
    daemon = _start_keyring_daemon(env)
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    try:
        from keyring.backends.SecretService import Keyring

        for attempt in range(3):  # a loaded machine once left a start unfinished in 20 s
            try:
                _wait_for_unlocked_login(deadline=time.monotonic() + 20)
                break
            except TimeoutError:
                stop_process(daemon, grace=5)
                if attempt == 2:
                    raise
                daemon = _start_keyring_daemon(env)
        backend = Keyring()
        backend.set_password("lockgate-probe", "probe", "ok")
        yield backend
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        for proc in (daemon, bus):
            stop_process(proc, grace=5)
        if bus.stdout is not None:
            bus.stdout.close()
