"""One Lockgate per user: the instance lock, its holder's word, and a crash that frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.instance import (
    AlreadyRunning,
    Holder,
    InstanceLock,
    bring_to_front,
    running_holder,
)
from proxy.config.paths import Paths

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")


def test_the_second_to_ask_is_told_who_holds_it_and_gets_it_once_released(paths: Paths) -> None:
    first = InstanceLock(paths).acquire("app")
    first.announce_window("/run/window.sock")
    assert running_holder(paths) == Holder(os.getpid(), "app", "/run/window.sock")
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock(paths).acquire("serve")
    assert refused.value.holder == Holder(os.getpid(), "app", "/run/window.sock")
    assert refused.value.told() == (
        f"Lockgate is already running: the Lockgate app runs (pid {os.getpid()}); it is the "
        "gateway for this user"
    )
    first.release()
    assert running_holder(paths) is None
    with InstanceLock(paths).acquire("serve") as second:
        assert second.held
        assert running_holder(paths) == Holder(os.getpid(), "serve")
    assert (paths.run_dir / "lockgate.lock").stat().st_mode & 0o777 == 0o600
    assert paths.run_dir.stat().st_mode & 0o777 == 0o700


HOLD = """
import sys, time
from pathlib import Path
from proxy.config.instance import InstanceLock
from proxy.config.paths import Paths
held = InstanceLock(Paths(Path(sys.argv[1]), Path(sys.argv[2]))).acquire("serve")
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_frees_the_lock(paths: Paths) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(paths.config_dir), str(paths.data_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AlreadyRunning, match=rf"`lockgate serve` runs \(pid {holder.pid}\)"):
            InstanceLock(paths).acquire("app")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert running_holder(paths) is None  # its word is left in the file; its pid is gone
    InstanceLock(paths).acquire("app").release()


def test_a_holder_that_has_not_said_who_it_is_yet_is_starting(paths: Paths) -> None:
    import fcntl

    paths.run_dir.mkdir(parents=True)
    with (paths.run_dir / "lockgate.lock").open("w") as raw:
        fcntl.flock(raw.fileno(), fcntl.LOCK_EX)  # locked, nothing written yet
        with pytest.raises(AlreadyRunning, match="starting up right now") as refused:
            InstanceLock(paths).acquire("app")
        assert refused.value.holder is None


def test_bringing_a_window_nobody_shows_to_the_front_fails_quietly(tmp_path: Path) -> None:
    assert bring_to_front(str(tmp_path / "nobody.sock"), timeout=1) is False
