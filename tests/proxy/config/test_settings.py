"""settings.json: defaults, one setting written without touching the rest, and every
mistake told with where it is."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT
from proxy.config.settings import (
    NOTIFICATION_STYLES,
    Settings,
    SettingsError,
    describe,
    gateway_port,
    load_settings,
    parse_setting,
    save_setting,
    save_settings,
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
        (
            '{"prot": 6000}',
            "unknown setting .prot.; the settings are: approval_timeout_seconds, "
            "audit_max_megabytes, audit_retention_days, max_message_bytes, notifications, "
            "otlp_endpoint, port, team_policy",
        ),
        ('{"start_at_login": true}', "unknown setting .start_at_login."),  # the login entry
        ('{"port": "6000"}', r'"port" must be a whole number from 1 to 65535, not \'6000\''),
        ('{"port": true}', r"not True"),
        ('{"port": 0}', r"not 0"),
        ('{"port": 70000}', r"not 70000"),
        (
            '{"audit_retention_days": -1}',
            r'"audit_retention_days" must be a whole number of days from 1 to 3650, or 0 to '
            r"keep every call, not -1",
        ),
        ('{"audit_retention_days": 3651}', r"from 1 to 3650, or 0 to keep every call, not 3651"),
        ('{"audit_retention_days": 30.5}', r"not 30.5"),
        ('{"audit_retention_days": "90"}', r"not '90'"),
        ('{"audit_retention_days": false}', r"not False"),
        ('{"audit_max_megabytes": 5}', r"from 10 to 1000000, or 0 for no bound, not 5"),
        ('{"audit_max_megabytes": -1}', r"audit_max_megabytes.* not -1"),
        ('{"team_policy": "team.json"}', r"absolute path of a policy file.*not 'team.json'"),
        ('{"team_policy": 1}', r"team_policy.*not 1"),
        (
            '{"approval_timeout_seconds": 4}',
            r'"approval_timeout_seconds" must be a whole number of seconds from 5 to 3600, not 4',
        ),
        ('{"approval_timeout_seconds": 3601}', r"from 5 to 3600, not 3601"),
        ('{"approval_timeout_seconds": 60.0}', r"not 60.0"),
        (
            '{"notifications": "loud"}',
            r'"notifications" must be one of "actions", "plain", "off", not \'loud\'',
        ),
        ('{"notifications": null}', r"not None"),
        ('{"notifications": "Plain"}', r"not 'Plain'"),
        ('{"otlp_endpoint": 4318}', r'"otlp_endpoint" must be text, not 4318'),
        ('{"otlp_endpoint": "127.0.0.1:4318"}', r"must be an http or https URL"),
        ('{"otlp_endpoint": "https://otel.example.com:x"}', r"must be an http or https URL"),
        ('{"otlp_endpoint": "https://otel.example.com/?k=v"}', r"without a query or fragment"),
        ('{"otlp_endpoint": "https://a b.example.com"}', r"without a query or fragment"),
        (
            '{"otlp_endpoint": "http://10.1.2.3:4318"}',
            r"must use https unless it is this computer .* not 'http://10.1.2.3:4318'",
        ),
        (
            '{"otlp_endpoint": "https://me:pw@otel.example.com"}',
            r"a user or password.*not that URL",
        ),
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


def test_the_new_settings_have_their_defaults_and_every_allowed_value_is_kept(
    paths: Paths,
) -> None:
    defaults = load_settings(paths)
    assert (
        defaults.audit_retention_days,
        defaults.approval_timeout_seconds,
        defaults.notifications,
    ) == (90, 120, "actions")
    for days in (0, 1, 3650):
        assert save_setting(paths, "audit_retention_days", days).audit_retention_days == days
    for seconds in (5, 3600):
        saved = save_setting(paths, "approval_timeout_seconds", seconds)
        assert saved.approval_timeout_seconds == seconds
    for style in NOTIFICATION_STYLES:
        assert save_setting(paths, "notifications", style).notifications == style
    assert load_settings(paths) == Settings(
        audit_retention_days=3650, approval_timeout_seconds=3600, notifications="off"
    )
    assert json.loads(settings_file(paths).read_text()) == {  # only what was set
        "audit_retention_days": 3650,
        "approval_timeout_seconds": 3600,
        "notifications": "off",
    }


def test_the_otlp_endpoint_is_off_by_default_and_takes_https_anywhere_http_only_here(
    paths: Paths,
) -> None:
    assert load_settings(paths).otlp_endpoint == ""
    for url in (
        "https://otel.example.com:4318",
        "https://otel.example.com/otlp/",
        "http://127.0.0.1:4318",
        "http://127.8.9.10:4318",
        "http://localhost:4318",
        "http://[::1]:4318",
        "https://[2001:db8::1]:4318",
        "",
    ):
        assert save_setting(paths, "otlp_endpoint", url).otlp_endpoint == url
    assert parse_setting("otlp_endpoint", "http://127.0.0.1:4318") == "http://127.0.0.1:4318"
    assert "otlp-headers" in describe("otlp_endpoint")


def test_every_setting_is_described_and_the_login_entry_is_not_one() -> None:
    names = {field.name for field in fields(Settings)}
    assert "start_at_login" not in names  # the login entry itself says (config/autostart)
    for name in names:
        assert describe(name)
    assert "0 to keep every call for ever" in describe("audit_retention_days")
    assert '"plain"' in describe("notifications")


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("port", "6000", 6000),
        ("port", "abc", "abc"),  # left for the check to refuse with what a port is
        ("notifications", "plain", "plain"),
        ("notifications", '"plain"', "plain"),
        ("notifications", "123", "123"),  # a text setting takes the text as it is typed
        ("notifications", "true", "true"),
        ("audit_retention_days", "0", 0),
        ("approval_timeout_seconds", "30.5", 30.5),
    ],
)
def test_a_value_typed_on_the_command_line_is_parsed_for_its_setting(
    name: str, text: str, value: object
) -> None:
    parsed = parse_setting(name, text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_a_parsed_value_that_is_wrong_is_refused_when_it_is_saved(paths: Paths) -> None:
    with pytest.raises(SettingsError, match="unknown setting 'colour'; the settings are: port"):
        parse_setting("colour", "red")
    with pytest.raises(SettingsError, match=r'"notifications" must be one of .*not \'123\''):
        save_setting(paths, "notifications", parse_setting("notifications", "123"))
    with pytest.raises(SettingsError, match=r"whole number of seconds .* not 30.5"):
        save_setting(
            paths, "approval_timeout_seconds", parse_setting("approval_timeout_seconds", "30.5")
        )
    assert not settings_file(paths).exists()


def test_settings_saved_together_are_all_or_none(paths: Paths) -> None:
    save_setting(paths, "port", 7001)
    with pytest.raises(SettingsError, match='"team_policy" must be the absolute path'):
        save_settings(paths, {"audit_max_megabytes": 50, "team_policy": "relative.json"})
    assert json.loads(settings_file(paths).read_text()) == {"port": 7001}
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        save_settings(paths, {"audit_max_megabytes": 50, "colour": "red"})
    saved = save_settings(paths, {"audit_max_megabytes": 50, "notifications": "plain"})
    assert (saved.port, saved.audit_max_megabytes, saved.notifications) == (7001, 50, "plain")
    assert json.loads(settings_file(paths).read_text()) == {
        "port": 7001,
        "audit_max_megabytes": 50,
        "notifications": "plain",
    }
