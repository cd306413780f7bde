"""Lockgate's own settings: ``settings.json`` in the config folder, one file that the app,
``lockgate serve``, routing and the login entry all read, so that they agree.

Only what is set is written; everything else has its default. A running gateway's real
port wins over the file's wherever a client is pointed at it (routing reads the run
file), so a gateway started with ``--port`` for one run is still found.

Kept free of heavy imports: every command reads it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.atomic import write_atomic
from proxy.config.paths import Paths
from proxy.config.runinfo import DEFAULT_PORT, read_run_info
from proxy.errors import LockgateError

__all__ = [
    "APPROVAL_TIMEOUT_SECONDS",
    "AUDIT_MAX_MEGABYTES",
    "AUDIT_RETENTION_DAYS",
    "DEFAULT_APPROVAL_TIMEOUT_SECONDS",
    "DEFAULT_AUDIT_RETENTION_DAYS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "NOTIFICATION_STYLES",
    "Settings",
    "SettingsError",
    "check_otlp_endpoint",
    "describe",
    "endpoint_is_loopback",
    "gateway_port",
    "load_settings",
    "parse_setting",
    "save_setting",
    "save_settings",
    "settings_file",
]


class SettingsError(LockgateError):
    """settings.json cannot be read or holds a value Lockgate cannot use."""

    title = "settings.json has an error"


DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MESSAGE_BYTES = (64 * 1024, 1024 * 1024 * 1024)
DEFAULT_AUDIT_RETENTION_DAYS = 90
AUDIT_RETENTION_DAYS = (1, 3650)  # or 0: keep every call for ever
AUDIT_MAX_MEGABYTES = (10, 1_000_000)  # or 0: no bound on the log's size
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 120
APPROVAL_TIMEOUT_SECONDS = (5, 3600)
# "actions": with Allow/Deny buttons where the desktop's notifications have them;
# "plain": a message only; "off": none.
NOTIFICATION_STYLES = ("actions", "plain", "off")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting and its default."""

    port: int = DEFAULT_PORT  # the gateway's TCP port on 127.0.0.1
    # The largest message a client may send, at either door; a larger one is refused
    # (answered with the limit, and logged), never sent to a server.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # How many days the audit log keeps a call; 0 keeps every call for ever.
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    # The most room the audit log's calls may take, in MB; the oldest go first. 0: none.
    audit_max_megabytes: int = 0
    # How long a person has to answer an approval whose policy rule sets no timeout.
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    notifications: str = "actions"  # one of NOTIFICATION_STYLES
    # A team's policy file (an absolute path that configuration management or a git
    # checkout keeps current): a layer above policy.json that it cannot loosen. "": none.
    team_policy: str = ""
    # Where the audit log is exported over OpenTelemetry (OTLP over HTTP): the collector's
    # base URL; "" exports nothing. Its headers (API keys) are the keyring's secret
    # "otlp-headers", never in this file (proxy/telemetry).
    otlp_endpoint: str = ""


_HELP = {
    "port": f"the gateway's port on 127.0.0.1, 1-65535 (default {DEFAULT_PORT})",
    "max_message_bytes": "the largest message a client may send, in bytes, 65536 to "
    f"1073741824 (default {DEFAULT_MAX_MESSAGE_BYTES}: 16 MB); larger ones are refused",
    "audit_retention_days": "how many days the audit log keeps each call, 1-3650, or 0 to "
    f"keep every call for ever (default {DEFAULT_AUDIT_RETENTION_DAYS})",
    "audit_max_megabytes": "the most room the audit log may take, in MB, 10-1000000, or 0 for "
    "no bound (default 0); past it the oldest calls are pruned first, checked once a minute",
    "approval_timeout_seconds": "how long a person has to answer an approval when the "
    "policy's rule sets no timeout, in seconds, 5-3600 (default "
    f"{DEFAULT_APPROVAL_TIMEOUT_SECONDS}); unanswered, the call is denied",
    "notifications": '"actions" (with Allow and Deny buttons where the desktop has them), '
    '"plain" (a message only) or "off" (default "actions")',
    "team_policy": 'a team\'s policy file, an absolute path (default "": none): read only, '
    "watched like policy.json; its denials, hidden tools, limits and asks stand whatever "
    "policy.json says; while it cannot be read (and no copy of it is kept) every call is refused",
    "otlp_endpoint": "export every call of the audit log to this OpenTelemetry collector "
    '(OTLP over HTTP, its base URL: "https://otel.example.com:4318"; http only to this '
    'computer, "http://127.0.0.1:4318"), its headers from the keyring secret otlp-headers '
    '("key=value,key2=value2"); default "": nothing leaves this computer',
}

# a host name or IP literal in a URL; no user, password, query or fragment
_URL_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


def endpoint_is_loopback(url: str) -> bool:
    """Whether ``url`` (a checked ``otlp_endpoint``) names this computer: ``localhost``
    or a loopback address (127.0.0.0/8, ::1), where plain http never crosses a network."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as an ``otlp_endpoint``; None: nothing."""
    if not isinstance(value, str):
        return "must be text"
    if value == "":
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return "must be an http or https URL"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return 'must be an http or https URL such as "https://otel.example.com:4318"'
    if "@" in parts.netloc:
        return (
            "must not hold a user or password; put credentials in the keyring secret otlp-headers"
        )
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if not _URL_HOST.fullmatch(host) or parts.query or parts.fragment or " " in value:
        return "must be a collector's base URL, without a query or fragment"
    if parts.scheme == "http" and not endpoint_is_loopback(value):
        return (
            "must use https unless it is this computer (localhost, 127.0.0.1, ::1): the "
            "calls must not cross a network in clear text"
        )
    return None


def settings_file(paths: Paths) -> Path:
    return paths.config_dir / "settings.json"


def _checked(name: str, value: Any) -> Any:
    """``value`` if it is right for setting ``name``.

    Raises:
        SettingsError: it is not.
    """
    whole = isinstance(value, int) and not isinstance(value, bool)
    if name == "port" and not (whole and 1 <= value <= 65535):
        raise SettingsError(f'"port" must be a whole number from 1 to 65535, not {value!r}')
    low, high = _MESSAGE_BYTES
    if name == "max_message_bytes" and not (whole and low <= value <= high):
        raise SettingsError(
            f'"max_message_bytes" must be a whole number from {low} to {high}, not {value!r}'
        )
    low, high = AUDIT_RETENTION_DAYS
    if name == "audit_retention_days" and not (whole and (value == 0 or low <= value <= high)):
        raise SettingsError(
            f'"audit_retention_days" must be a whole number of days from {low} to {high}, '
            f"or 0 to keep every call, not {value!r}"
        )
    low, high = AUDIT_MAX_MEGABYTES
    if name == "audit_max_megabytes" and not (whole and (value == 0 or low <= value <= high)):
        raise SettingsError(
            f'"audit_max_megabytes" must be a whole number of MB from {low} to {high}, or 0 '
            f"for no bound, not {value!r}"
        )
    low, high = APPROVAL_TIMEOUT_SECONDS
    if name == "approval_timeout_seconds" and not (whole and low <= value <= high):
        raise SettingsError(
            f'"approval_timeout_seconds" must be a whole number of seconds from {low} to '
            f"{high}, not {value!r}"
        )
    if name == "notifications" and value not in NOTIFICATION_STYLES:
        styles = ", ".join(f'"{style}"' for style in NOTIFICATION_STYLES)
        raise SettingsError(f'"notifications" must be one of {styles}, not {value!r}')
    if name == "team_policy" and not (
        isinstance(value, str) and (value == "" or Path(value).is_absolute())
    ):
        raise SettingsError(
            f'"team_policy" must be the absolute path of a policy file, or "" for none, '
            f"not {value!r}"
        )
    if name == "otlp_endpoint" and (problem := _endpoint_problem(value)) is not None:
        # a URL with a user in it may hold a password: it is never repeated
        shown = "that URL" if isinstance(value, str) and "@" in value else repr(value)
        raise SettingsError(f'"otlp_endpoint" {problem}, not {shown}')
    return value


def check_otlp_endpoint(value: Any) -> str:
    """``value`` if it will do as the ``otlp_endpoint`` setting: "" (off), or an http(s)
    base URL without a user or password, and http only to this computer.

    Raises:
        SettingsError: it will not.
    """
    return str(_checked("otlp_endpoint", value))


def load_settings(paths: Paths) -> Settings:
    """The settings in the file, defaults for the rest; defaults alone if there is none.

    Raises:
        SettingsError: the file is not valid JSON, or a setting is unknown or wrong.
    """
    path = settings_file(paths)
    try:
        text = path.read_text("utf-8-sig")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: must be a JSON object")
    known = {f.name for f in fields(Settings)}
    for name, value in data.items():
        if name not in known:
            raise SettingsError(
                f"{path}: unknown setting {name!r}; the settings are: {', '.join(sorted(known))}"
            )
        try:
            _checked(name, value)
        except SettingsError as exc:
            raise SettingsError(f"{path}: {exc}") from None
    return replace(Settings(), **data)


def save_setting(paths: Paths, name: str, value: Any) -> Settings:
    """Set one setting in the file (the others as they were), all or nothing.

    Raises:
        SettingsError: an unknown setting, a wrong value, or the file is broken already.
    """
    return save_settings(paths, {name: value})


def save_settings(paths: Paths, changes: Mapping[str, Any]) -> Settings:
    """Set the settings ``changes`` names in the file (the others as they were), all or
    nothing: one that is wrong writes none of them.

    Raises:
        SettingsError: an unknown setting, a wrong value, or the file is broken already.
    """
    current = load_settings(paths)
    known = {f.name for f in fields(Settings)}
    for name in changes:
        if name not in known:
            raise SettingsError(f"unknown setting {name!r}")
    updated = replace(current, **{name: _checked(name, value) for name, value in changes.items()})
    path = settings_file(paths)
    try:
        written = json.loads(path.read_text("utf-8-sig"))
    except FileNotFoundError:
        written = {}
    as_saved = asdict(updated)
    written.update({name: as_saved[name] for name in changes})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(written, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot write it: {exc}") from None
    return updated


def parse_setting(name: str, text: str) -> Any:
    """The value ``text`` (as typed on a command line) stands for in setting ``name``: a
    number for a number setting, the text itself for a text one (JSON's quotes allowed
    too: ``plain`` and ``"plain"`` are the same). Only parsed here; :func:`save_setting`
    checks it.

    Raises:
        SettingsError: an unknown setting.
    """
    defaults = asdict(Settings())
    if name not in defaults:
        raise SettingsError(f"unknown setting {name!r}; the settings are: {', '.join(defaults)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word; the check says what the setting wants instead
    if isinstance(defaults[name], str) and not isinstance(value, str):
        return text  # a text setting takes 123 or true as the text it is
    return value


def describe(name: str) -> str:
    """What a setting is, for ``lockgate settings``."""
    return _HELP[name]


def gateway_port(paths: Paths) -> int:
    """The port to point a client at: the running gateway's, else the port setting.

    Raises:
        SettingsError: no gateway runs and settings.json is broken.
    """
    info = read_run_info(paths)
    return info.port if info is not None else load_settings(paths).port
