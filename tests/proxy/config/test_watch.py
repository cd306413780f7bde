"""Reading a file again the moment it changes, and never applying an older read over a
newer one (the watcher's reloads and a click's explicit reload race otherwise)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from proxy.config.watch import FileWatcher
from tests.support.waiting import eventually


def save(path: Path, text: str) -> None:
    """As editors save: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_a_change_is_read_and_applied_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "servers.json"
    path.parent.mkdir()
    path.write_text("one")
    applied: list[str] = []
    loop_thread: list[bool] = []

    def apply(text: str) -> None:
        loop_thread.append(threading.current_thread() is threading.main_thread())
        applied.append(text)

    watcher = FileWatcher(path, Path.read_text, apply, debounce=0.01)
    await watcher.start()
    try:
        assert applied == ["one"]
        save(path, "two")
        await eventually(lambda: applied[-1] == "two", "the change to be applied")
        assert all(loop_thread)  # apply runs where the proxy's state lives
    finally:
        await watcher.stop()


async def test_a_slow_read_of_the_old_content_never_undoes_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("old")
    release = threading.Event()
    reading = threading.Event()
    applied: list[str] = []

    def read(p: Path) -> str:
        text = p.read_text()
        if text == "old":
            reading.set()
            release.wait(10)  # held until the newer read has been applied
        return text

    watcher = FileWatcher(path, read, applied.append)
    slow = asyncio.create_task(watcher.reload_now())
    await eventually(reading.is_set, "the slow read to start")
    path.write_text("new")
    assert await watcher.reload_now() == "new"
    release.set()
    assert await slow == "old"  # it read the old content...
    assert applied == ["new"]  # ...and did not apply it over the newer
