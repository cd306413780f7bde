"""Where Lockgate keeps its files: an option beats the environment, which beats the
platform's folder; every file has one place."""

from __future__ import annotations

from pathlib import Path

from proxy.config.paths import Paths, resolve_paths


def test_an_option_beats_the_environment_which_beats_the_platform(tmp_path: Path) -> None:
    env = {"LOCKGATE_CONFIG_DIR": str(tmp_path / "env-c"), "LOCKGATE_DATA_DIR": "~/env-d"}
    chosen = resolve_paths(tmp_path / "opt-c", None, environ=env)
    assert chosen.config_dir == tmp_path / "opt-c"
    assert chosen.data_dir == Path("~/env-d").expanduser()
    platform = resolve_paths(environ={})
    assert platform.config_dir.name == "lockgate"
    assert platform.data_dir.name == "lockgate"


def test_every_file_has_its_place(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "c", tmp_path / "d")
    assert paths.policy_file == tmp_path / "c" / "policy.json"
    assert paths.servers_file == tmp_path / "c" / "servers.json"
    assert paths.clients_file == tmp_path / "c" / "clients.json"
    assert paths.audit_db == tmp_path / "d" / "audit.db"
    assert paths.run_dir == tmp_path / "d" / "run"
    assert paths.log_dir == tmp_path / "d" / "logs"
    assert paths.last_good_policy == tmp_path / "d" / "policy.last-good.json"
    assert not (tmp_path / "c").exists()  # nothing here creates a folder
