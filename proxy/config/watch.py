"""Reading a file again the moment it changes (policy.json, servers.json).

Watching follows maestral's lesson: the watchdog callback (on watchdog's thread) only
hands a poke to the event loop. The loop debounces (editors save in bursts: truncate,
write, rename), reads the file on a worker thread, and applies what it read on the loop,
which owns all proxy state. The folder is watched, not the file, because editors save by
writing a new file and renaming it over the old one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

__all__ = ["DEBOUNCE_SECONDS", "FileWatcher"]

R = TypeVar("R")

DEBOUNCE_SECONDS = 0.2


_MAX_LINKS = 40  # symbolic links followed from the path, as the system's own bound


def watch_points(path: Path) -> dict[Path, frozenset[str]]:
    """Each folder whose entries decide what ``path`` reads, with the names in it that do:
    the file's own name in its folder, and every symbolic link on the way to the file
    (a folder of the path, the file itself, or a folder a link points through), followed
    to where it points. A deploy that swaps a link (``team -> v2``, or a Kubernetes
    ConfigMap's ``..data``) changes an entry of a folder the path itself never names."""
    points: dict[Path, set[str]] = {}
    pending = [Path(os.path.abspath(path))]
    followed = 0
    while pending and followed <= _MAX_LINKS:
        here = pending.pop()
        points.setdefault(here.parent, set()).add(here.name)
        walked = Path(here.anchor)
        for part in here.parts[1:]:
            walked = walked / part
            if walked.is_symlink():
                followed += 1
                points.setdefault(walked.parent, set()).add(walked.name)
                try:
                    target = Path(os.readlink(walked))
                except OSError:
                    break
                rest = here.relative_to(walked)
                pending.append(Path(os.path.abspath(walked.parent / target / rest)))
                break
    return {folder: frozenset(names) for folder, names in points.items()}


def _existing_watch_points(path: Path) -> dict[Path, frozenset[str]]:
    return {folder: names for folder, names in watch_points(path).items() if folder.is_dir()}


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: Path, names: frozenset[str], poke: Callable[[], None]) -> None:
        self._folder = folder
        self._names = names
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = (event.src_path, getattr(event, "dest_path", ""))
        for changed in (Path(os.fsdecode(p)) for p in paths if p):
            if changed.name in self._names and changed.parent == self._folder:
                self._poke()
                return


class FileWatcher(Generic[R]):
    """Reads a file again when it changes, and applies what was read, on the loop: ``read``
    runs on a worker thread, ``apply`` on the event loop. Start and stop on the loop.

    Reads are numbered when they start, and a read is applied only if no read that
    started after it has been applied already: a slow read of the old content can never
    undo a newer one (:meth:`reload_now` and the watcher's own reloads race otherwise).
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[Path], R],
        apply: Callable[[R], object],
        debounce: float = DEBOUNCE_SECONDS,
    ) -> None:
        self._path = path
        self._read = read
        self._apply = apply
        self._debounce = debounce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._reads = 0  # reads started so far
        self._applied = 0  # the number of the newest read applied
        self._points: dict[Path, frozenset[str]] = {}  # what is watched

    @property
    def path(self) -> Path:
        return self._path

    async def start(self, *, load: bool = True) -> None:
        """Read the file once (unless not ``load``), then watch its folder (created if
        missing)."""
        self._loop = asyncio.get_running_loop()
        folder = self._path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if load:
            await self.reload_now()
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        await self._watch()

    async def _watch(self) -> None:
        """Watch the folders :func:`watch_points` names now, those that exist (again after
        each read: a swapped link points somewhere else). They are found on a worker
        thread, as the file is read: it takes a look at each folder of the path."""
        points = await asyncio.to_thread(_existing_watch_points, self._path)
        if points == self._points or self._observer is None:
            return
        observer = self._observer
        observer.unschedule_all()
        for folder, names in points.items():
            handler = _Handler(folder, names, self._poke_threadsafe)
            try:
                observer.schedule(handler, str(folder))
            except OSError:  # gone meanwhile: the next change of its parent tells
                continue
        self._points = points

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _poke_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self._debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._again = True  # a read is running; read once more when it ends
            return
        assert self._loop is not None
        self._task = self._loop.create_task(self._reload())

    async def reload_now(self) -> R:
        """Read the file now and apply it (unless a newer read was applied meanwhile);
        returns what this read found."""
        number = self._start_read()
        result = await asyncio.to_thread(self._read, self._path)
        self._finish_read(number, result)
        return result

    def reload_now_blocking(self) -> R:
        """:meth:`reload_now`, reading on the calling thread (the event loop's): for a
        small file, when the caller cannot await."""
        number = self._start_read()
        result = self._read(self._path)
        self._finish_read(number, result)
        return result

    def _start_read(self) -> int:
        self._reads += 1
        return self._reads

    def _finish_read(self, number: int, result: R) -> None:
        if number > self._applied:
            self._applied = number
            self._apply(result)

    async def _reload(self) -> None:
        while True:
            self._again = False
            await self.reload_now()
            await self._watch()
            if not self._again:
                return
