"""The wheel that `pipx install .`, `uv tool install .` and `pip install .` build holds every
module of the app. An editable install (what the tests otherwise run) reads the source
tree and would hide a package left out of pyproject.toml; a wheel does not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_resource(tmp_path):
    # From a copy: setuptools reuses a build/ folder it finds, which may hold modules from
    # an earlier build that this pyproject.toml would leave out.
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "setup.py", "README.md", "proxy", "desktop", "resources"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__py*"))
        else:
            shutil.copy(REPO / part, source / part)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("lockgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("proxy", "desktop"):
        for module in (REPO / package).rglob("*.py"):
            assert module.relative_to(REPO).as_posix() in names, f"{module} is not in the wheel"
    for resource in (REPO / "resources").iterdir():
        if resource.suffix in (".json", ".svg"):
            assert f"lockgate_resources/{resource.name}" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "lockgate = desktop.launcher:main" in text
