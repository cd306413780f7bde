"""One error vocabulary: every error a person is told of is a LockgateError with a title
of its own and a message, and the command line prints it the same way for all of them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import proxy
from proxy.cli.main import main
from proxy.errors import LockgateError


def every_error_type() -> list[type[LockgateError]]:
    for module in pkgutil.walk_packages(proxy.__path__, "proxy."):
        importlib.import_module(module.name)
    found: list[type[LockgateError]] = []
    pending = [LockgateError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_type_derives_from_lockgate_error_and_has_its_own_title():
    types = every_error_type()
    assert len(types) >= 14  # UpstreamUnavailable, SecretError, PolicyError, AuditError, ...
    titles = [cls.title for cls in types if cls is not LockgateError]
    assert all(title and not title.endswith(".") for title in titles)  # a heading
    assert len(set(titles)) == len(titles), "two error types say the same title"


def test_no_exception_class_in_proxy_stands_outside_the_vocabulary():
    every_error_type()  # imports every module
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _all_subclasses(Exception)
        if cls.__module__.startswith("proxy.") and not issubclass(cls, LockgateError)
    ]
    assert outside == []


def _all_subclasses(cls: type[BaseException]) -> list[type[BaseException]]:
    out: list[type[BaseException]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def test_the_command_line_prints_any_lockgate_error_by_its_title_and_message(capsys):
    code = main(["token", "revoke", "nobody-has-this-name"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("lockgate: The token was not changed: ")  # the title, then why
    assert "nobody-has-this-name" in err
    assert "Traceback" not in err


def test_told_puts_the_title_first_and_what_it_was_about():
    from proxy.policy.edit import PolicyEditError

    error = PolicyEditError("policy.json has errors; fix them first")
    assert error.told() == "The rule was not changed: policy.json has errors; fix them first"
    assert error.told("echo").startswith("The rule was not changed (echo): ")


@pytest.mark.parametrize("message", ["the policy is broken", "Lockgate is not running"])
def test_message_is_the_text(message):
    error = LockgateError(message)
    assert error.message == str(error) == message
