"""settings.json: defaults, one setting written without touching the rest, and every
mistake told with where it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT
from proxy.config.settings import (
    Settings,
    SettingsError,
    gateway_port,
    load_settings,
    save_setting,
    settings_file,
)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")


def test_no_file_is_every_default_and_a_saved_setting_is_read_back(paths: Paths) -> None:
    assert load_settings(paths) == Settings(port=DEFAULT_PORT)
    assert save_setting(paths, "port", 6001) == Settings(port=6001)
    assert load_settings(paths).port == 6001
    assert json.loads(settings_file(paths).read_text()) == {"port": 6001}
    assert gateway_port(paths) == 6001  # no gateway runs: the setting


@pytest.mark.parametrize(
    ("text", "told"),
    [
        ('{"port": 6000,}', r"settings.json:1:15: not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"prot": 6000}', "unknown setting .prot.; the settings are: max_message_bytes, port"),
        ('{"port": "6000"}', r'"port" must be a whole number from 1 to 65535, not \'6000\''),
        ('{"port": true}', r"not True"),
        ('{"port": 0}', r"not 0"),
        ('{"port": 70000}', r"not 70000"),
    ],
)
def test_a_wrong_file_is_refused_with_where_and_why(paths: Paths, text: str, told: str) -> None:
    paths.config_dir.mkdir(parents=True)
    settings_file(paths).write_text(text)
    with pytest.raises(SettingsError, match=told) as refused:
        load_settings(paths)
    assert refused.value.told().startswith("settings.json has an error: ")
    with pytest.raises(SettingsError):
        save_setting(paths, "port", 6001)  # never written over what the person must fix
    assert settings_file(paths).read_text() == text


def test_a_wrong_value_is_refused_and_the_file_keeps_what_it_had(paths: Paths) -> None:
    save_setting(paths, "port", 6001)
    with pytest.raises(SettingsError, match="from 1 to 65535"):
        save_setting(paths, "port", 99999)
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        save_setting(paths, "colour", "red")
    assert load_settings(paths).port == 6001
