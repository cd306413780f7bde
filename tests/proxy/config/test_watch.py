"""Reading a file again the moment it changes, and never applying an older read over a
newer one (the watcher's reloads and a click's explicit reload race otherwise)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

from proxy.config.watch import FileWatcher, watch_points
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


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


async def watched(path: Path, swap: Any, expect: str) -> None:
    """Start watching ``path`` (it reads "one"), ``swap()``, and see ``expect`` applied."""
    applied: list[str | None] = []
    watcher = FileWatcher(path, read_or_none, applied.append, debounce=0.01)
    await watcher.start()
    try:
        assert applied == ["one"]
        swap()
        await eventually(lambda: applied[-1] == expect, f"{expect!r} applied")
    finally:
        await watcher.stop()


def relink(link: Path, target: str) -> None:
    """As a deploy swaps a link: a new one renamed over the old, atomically."""
    fresh = link.with_name(link.name + ".new")
    fresh.symlink_to(target)
    os.replace(fresh, link)


async def test_a_swapped_link_to_the_folder_is_followed(tmp_path: Path) -> None:
    """team -> v1, then team -> v2: the change is in team's folder, which the path
    names only through the link."""
    for version, text in (("v1", "one"), ("v2", "two")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "policy.json").write_text(text)
    (tmp_path / "team").symlink_to("v1")
    path = tmp_path / "team" / "policy.json"
    await watched(path, lambda: relink(tmp_path / "team", "v2"), "two")


async def test_a_configmaps_swapped_data_folder_is_followed_and_watched_after(
    tmp_path: Path,
) -> None:
    """The Kubernetes ConfigMap layout: policy.json -> ..data/policy.json, ..data ->
    ..v1, swapped to ..v2; then a change inside ..v2 is seen too (watched anew)."""
    folder = tmp_path / "team"
    for version, text in (("..v1", "one"), ("..v2", "two")):
        (folder / version).mkdir(parents=True)
        (folder / version / "policy.json").write_text(text)
    (folder / "..data").symlink_to("..v1")
    path = folder / "policy.json"
    path.symlink_to("..data/policy.json")
    assert watch_points(path) == {
        folder: frozenset({"policy.json", "..data"}),
        folder / "..data": frozenset({"policy.json"}),  # the link's own way in
        folder / "..v1": frozenset({"policy.json"}),
    }

    def swap_then_edit() -> None:
        relink(folder / "..data", "..v2")

    await watched(path, swap_then_edit, "two")
    applied: list[str | None] = []
    watcher = FileWatcher(path, read_or_none, applied.append, debounce=0.01)
    await watcher.start()
    try:
        save(folder / "..v2" / "policy.json", "three")
        await eventually(lambda: applied[-1] == "three", "the edit inside ..v2")
    finally:
        await watcher.stop()


def test_a_link_loop_ends(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    points = watch_points(tmp_path / "a" / "policy.json")
    assert points[tmp_path] == frozenset({"a", "b"})
