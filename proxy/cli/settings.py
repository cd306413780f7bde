"""``lockgate settings [NAME [VALUE]]``: Lockgate's settings.json, shown or set with the
same checks the app's Settings tab uses."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TextIO

from proxy.cli.common import UsageError
from proxy.config.paths import Paths
from proxy.config.settings import (
    describe,
    load_settings,
    parse_setting,
    save_setting,
    settings_file,
)

__all__ = ["settings_command"]

# When a setting changed here is used: a gateway that runs does not read the file again
# (the app's Settings tab applies what it can at once).
_NEXT_START = "the app and `lockgate serve` use it from their next start"
_WHEN = {"notifications": "the app uses it from its next start"}


def settings_command(name: str | None, value: str | None, paths: Paths, out: TextIO) -> int:
    """Every setting, one, or one set.

    Raises:
        UsageError: ``name`` is not a setting.
        proxy.config.settings.SettingsError: settings.json is broken, or the value is wrong
            for the setting (then the file is left as it was).
    """
    current = asdict(load_settings(paths))
    if name is not None and name not in current:
        raise UsageError(f"no setting {name!r}; the settings are: {', '.join(current)}")
    if name is not None and value is not None:
        saved = asdict(save_setting(paths, name, parse_setting(name, value)))[name]
        print(f"{name} = {json.dumps(saved)} (in {settings_file(paths)})", file=out)
        print(_WHEN.get(name, _NEXT_START), file=out)
        return 0
    if name is not None:
        print(json.dumps(current[name]), file=out)
        return 0
    width = max(map(len, current))
    for key, setting in current.items():
        print(f"{key:<{width}}  {json.dumps(setting):<12} {describe(key)}", file=out)
    return 0
