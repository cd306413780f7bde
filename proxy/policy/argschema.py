"""The ``arguments`` JSON Schemas of policy rules: checked hard at load, safe at decide time.

A rule's ``arguments`` schema is a security control, so the ordinary leniency of JSON
Schema is wrong here. Compared with plain ``jsonschema``:

- **No network.** Only local references (``#/$defs/x``, ``#anchor``) are allowed, and all
  must resolve when the policy loads; ``$id``, ``$dynamicRef`` and remote ``$ref`` are
  refused. Validation uses an empty registry, so nothing is ever fetched.
- **No silent typos.** A keyword outside draft 2020-12 (``patern``, ``requried``) is an
  error, not an ignored annotation. So is a ``$schema`` naming another dialect, which would
  switch keywords off (draft-04 has no ``const``). Names starting ``x-`` are allowed for
  people's own notes.
- **Formats are assertions.** Every ``format`` must be one this installation can check.
- **Patterns mean what JSON Schema says.** Regexes are ECMA-262, so they are compiled and
  matched by an ECMA-262 engine (``regress``, the Rust crate), never by Python's ``re``:
  ``pattern``, the keys of ``patternProperties`` (and so which properties
  ``additionalProperties`` and ``unevaluatedProperties`` see as left over),
  ``propertyNames`` with a ``pattern``, ``format: "regex"`` and the meta-schema's own
  patterns. Python's ``re`` differs where it matters to a security rule: its ``$`` also
  matches before a final newline (``^ls$`` would pass ``"ls\\n"``) and its ``.``, ``\\s``,
  ``\\d`` and ``\\w`` are not ECMA's.

  Every regex gets the ``u`` flag, as ``new RegExp(pattern, "u")`` in JavaScript: the
  JSON Schema spec recommends Unicode-aware patterns and its test suite expects them
  (``\\p{Letter}`` works). What that means, all as in Node:

  - ``.`` is any one code point except the line terminators ``\\n``, ``\\r``, U+2028 and
    U+2029, so ``^git status.*$`` does not pass ``"git status\\rrm -rf ~"``; an astral
    character (an emoji) is one code point, so ``^.$`` matches it.
  - ``$`` is the end of the string only (there is no multiline flag).
  - ``\\d`` is ``[0-9]`` and ``\\w``/``\\b`` are ASCII only; ``\\s`` is Unicode white space
    and line terminators (U+00A0, U+3000, U+FEFF...), so ``\\S`` refuses those.
  - ``\\p{...}``/``\\P{...}`` are Unicode properties; lookbehind and named groups work.
  - The grammar is the strict one of Unicode mode: an escape that means nothing (``\\a``,
    ``\\-`` outside a class), a lone ``{``, ``}`` or ``]``, and inline flags such as
    ``(?i)`` are errors when the policy loads, with the engine's reason and the path.
    (The engine follows ECMAScript 2025, so the scoped ``(?i:x)`` and one name for groups
    in different alternatives are accepted; Node before 23 refuses both.)
  - A string holding a lone surrogate (JSON allows ``"\\ud800"``) cannot be matched and
    raises :class:`UnmatchableStringError`, so the call is denied.

  The engine backtracks, as JavaScript's and Python's do: a pattern such as ``^(a+)+$``
  takes exponential time on ``"aaa...ab"``, holding the GIL. Write patterns without
  nested quantifiers over the same characters.
- **Loops are caught.** A schema that refers to itself without end is refused at load; any
  error while validating makes the decision a denial (see :mod:`proxy.policy.decide`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Final

import jsonschema
import regress
from jsonschema import validators
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from proxy.config.jsontext import JsonPath
from proxy.errors import LockgateError

__all__ = [
    "ArgumentSchemaError",
    "ArgumentValidator",
    "UnmatchableStringError",
    "compile_arguments_schema",
    "ecma_regex",
    "ecma_search",
    "keys_read",
]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_FLAGS: Final = "u"  # ECMA-262 Unicode mode; why: the module notes

_KEYWORDS: Final = frozenset(
    """$schema $ref $anchor $defs $comment $vocabulary
    prefixItems items contains additionalProperties properties patternProperties
    dependentSchemas propertyNames if then else allOf anyOf oneOf not
    unevaluatedItems unevaluatedProperties
    type const enum multipleOf maximum exclusiveMaximum minimum exclusiveMinimum maxLength
    minLength pattern maxItems minItems uniqueItems maxContains minContains maxProperties
    minProperties required dependentRequired
    title description default deprecated readOnly writeOnly examples
    format contentEncoding contentMediaType contentSchema""".split()
)
_REFUSED: Final = {
    "$id": "is not supported in an arguments schema (references stay inside the rule)",
    "$dynamicRef": "is not supported in an arguments schema",
    "$dynamicAnchor": "is not supported in an arguments schema",
    "$recursiveRef": "is from draft 2019-09; use $ref",
    "$recursiveAnchor": "is from draft 2019-09",
    "definitions": "is from older drafts; use $defs",
    "dependencies": "is from older drafts; use dependentRequired or dependentSchemas",
}
_ONE_SCHEMA: Final = frozenset(
    """items contains additionalProperties propertyNames if then else not unevaluatedItems
    unevaluatedProperties contentSchema""".split()
)
_SCHEMA_MAPS: Final = frozenset("properties patternProperties $defs dependentSchemas".split())
_SCHEMA_LISTS: Final = frozenset("prefixItems allOf anyOf oneOf".split())


class ArgumentSchemaError(LockgateError, ValueError):
    """Problems with one rule's ``arguments`` schema: (path inside it, message) pairs."""

    title = "An argument schema cannot be used"

    def __init__(self, problems: list[tuple[JsonPath, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


class UnmatchableStringError(LockgateError, ValueError):
    """A string the regex engine cannot read: it holds a lone UTF-16 surrogate."""

    title = "Text the pattern engine cannot read"


@lru_cache(maxsize=1024)
def ecma_regex(pattern: str) -> regress.Regex:
    """``pattern`` compiled as an ECMA-262 regex with the ``u`` flag (see the module notes).

    Raises:
        regress.RegressError: ``pattern`` is not a valid ECMA-262 ``u``-mode regex; the
            message says why (``Invalid quantifier``, ``Invalid group modifier``...).
    """
    return regress.Regex(pattern, _FLAGS)


def ecma_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text``, as JSON Schema's ``pattern`` asks
    (unanchored: the pattern's own ``^`` and ``$`` anchor it).

    Raises:
        regress.RegressError: ``pattern`` does not compile.
        UnmatchableStringError: ``text`` holds a lone surrogate (which JSON allows, as
            ``"\\ud800"``, but the engine cannot read); a caller deciding must deny.
    """
    regex = ecma_regex(pattern)
    try:
        return regex.find(text) is not None
    except UnicodeEncodeError as exc:
        raise UnmatchableStringError(
            f"a string with a lone surrogate (at index {exc.start}) cannot be matched "
            "against a pattern"
        ) from None


def _extras(names: list[str]) -> str:
    """``'a', 'b' were`` / ``'a' was``: how jsonschema lists unexpected properties."""
    return ", ".join(repr(name) for name in names) + (" was" if len(names) == 1 else " were")


def _is_valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if ecma_search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_names(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The property names of ``instance`` that neither ``properties`` nor any of the
    ``patternProperties`` regexes of ``schema`` cover, in the instance's order."""
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        name
        for name in instance
        if name not in properties and not any(ecma_search(p, name) for p in patterns)
    ]


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional_names(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(name) for name in sorted(extras))
            regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            yield ValidationError(
                f"Additional properties are not allowed ({_extras(sorted(extras))} unexpected)"
            )


def _evaluated_names(validator: Any, instance: Mapping[str, Any], schema: Any) -> set[str]:
    """The property names of ``instance`` that ``schema`` evaluates successfully, for
    ``unevaluatedProperties``: the same walk as jsonschema's (``$ref``, ``properties``,
    ``additionalProperties``, ``unevaluatedProperties``, ``patternProperties``,
    ``dependentSchemas``, the valid branches of ``allOf``/``anyOf``/``oneOf``, and
    ``if``/``then``/``else``), with ``patternProperties`` matched by the ECMA engine."""
    if not isinstance(schema, Mapping):
        return set()  # true / false evaluate nothing
    names: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            names |= _evaluated_names(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        names.update(name for name in instance if name in properties)
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            names.update(
                name
                for name, value in instance.items()
                if _is_valid(validator.descend(value, subschema))
            )
    if "patternProperties" in schema:
        patterns = list(schema["patternProperties"])
        names.update(name for name in instance if any(ecma_search(p, name) for p in patterns))
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            names |= _evaluated_names(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                names |= _evaluated_names(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            names |= _evaluated_names(validator, instance, schema["if"])
            if "then" in schema:
                names |= _evaluated_names(validator, instance, schema["then"])
        elif "else" in schema:
            names |= _evaluated_names(validator, instance, schema["else"])
    return names


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_names(validator, instance, schema)
    failing = [
        name
        for name in instance
        if name not in evaluated
        and not _is_valid(
            validator.descend(instance[name], unevaluated, path=name, schema_path=name)
        )
    ]
    if not failing:
        return
    if unevaluated is False:
        yield ValidationError(
            f"Unevaluated properties are not allowed ({_extras(sorted(failing))} unexpected)"
        )
    else:
        yield ValidationError(
            "Unevaluated properties are not valid under the given schema "
            f"({_extras(failing)} unevaluated and invalid)"
        )


def _is_regex(instance: object) -> bool:
    """``format: "regex"``: an ECMA-262 regex, by the same engine and flags as ``pattern``."""
    if isinstance(instance, str):
        ecma_regex(instance)
    return True


def _format_checker() -> jsonschema.FormatChecker:
    """Draft 2020-12's format checks, with ``regex`` judged by the ECMA engine."""
    checker = jsonschema.FormatChecker(formats=())
    for name, (check, raises) in jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers.items():
        checker.checks(name, raises)(check)
    checker.checks("regex", raises=regress.RegressError)(_is_regex)
    return checker


ArgumentValidator: Final[Any] = validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
    },
)
_plain_evolve: Final = ArgumentValidator.evolve


def _evolve(self: Any, **changes: Any) -> Any:
    """``evolve`` that stays an :data:`ArgumentValidator`.

    jsonschema picks the class for each subschema it descends into by that subschema's
    ``$schema``: a ``$ref`` to a root that names draft 2020-12 (``"$ref": "#"``), or a
    meta-schema vocabulary, would be validated by the plain ``Draft202012Validator``, with
    Python's regexes. ``$schema`` can only be draft 2020-12 here (see :func:`_walk`), so
    leaving it out of the schema the class is picked by changes nothing else.
    """
    schema = changes.get("schema", self.schema)
    if isinstance(schema, Mapping) and "$schema" in schema:
        changes["schema"] = {key: value for key, value in schema.items() if key != "$schema"}
    return _plain_evolve(self, **changes)


ArgumentValidator.evolve = _evolve
_FORMATS: Final = _format_checker()
# Schemas are checked against the draft 2020-12 meta-schema by the same validator, so the
# meta-schema's own patterns (for $anchor) and its format "regex" are ECMA too.
_META: Final[Any] = ArgumentValidator(ArgumentValidator.META_SCHEMA, format_checker=_FORMATS)


def compile_arguments_schema(schema: Mapping[str, Any] | bool) -> Any:
    """A validator for ``schema``, after every check above.

    Raises:
        ArgumentSchemaError: every problem found, each with its path inside the schema.
    """
    problems: list[tuple[JsonPath, str]] = []
    bad_regexes: list[ValidationError] = []
    for error in _META.iter_errors(schema):
        if error.validator == "format" and error.validator_value == "regex":
            bad_regexes.append(error)  # _walk names these better: the key, the reason
            continue
        problems.append(
            (tuple(error.path), f"not a valid JSON Schema (draft 2020-12): {error.message}")
        )
        raise ArgumentSchemaError(problems)
    refs: list[tuple[JsonPath, str]] = []
    _walk(schema, (), problems, refs, root=True)
    if not problems:  # a regex _walk did not reach is still refused
        problems.extend(
            (tuple(error.path), f"not a valid regex (ECMA-262): {error.cause}")
            for error in bad_regexes
        )
    if not problems:
        resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
        for path, ref in refs:
            try:
                resolver.lookup(ref)
            except Unresolvable:
                problems.append((path, f"$ref {ref!r} points at nothing in this schema"))
    if problems:
        raise ArgumentSchemaError(problems)
    validator = ArgumentValidator(schema, registry=Registry(), format_checker=_FORMATS)
    try:
        probes: tuple[Any, ...] = ({}, [], "", 0, None)
        for probe in probes:
            for _ in validator.iter_errors(probe):
                pass
    except RecursionError:
        raise ArgumentSchemaError(
            [((), "the schema refers to itself without end ($ref loop)")]
        ) from None
    return validator


# Root keywords under which a schema's verdict on an object, and every error it gives,
# hang on the named properties alone: those, their presence, and annotations.
_PROJECTABLE: Final = frozenset(
    """$schema $anchor $defs $comment properties required type
    title description default deprecated readOnly writeOnly examples""".split()
)


def keys_read(schema: Mapping[str, Any] | bool) -> frozenset[str] | None:
    """The top-level properties of an object that a valid ``schema``'s verdict (and its
    errors) hang on, if they are all it looks at; None if it may look at more (the
    object's other keys, their number, a ``$ref`` at its root...).

    A replay decides calls whose arguments agree on these keys once (agents repeat a
    path with a different comment): an answer the schema cannot tell from the full one.
    """
    if isinstance(schema, bool):
        return frozenset()
    if not all(key in _PROJECTABLE or key.startswith("x-") for key in schema):
        return None
    if schema.get("type", "object") != "object":
        return None
    # a schema checked by compile_arguments_schema: an object, and an array of names
    return frozenset(schema.get("properties", ())) | frozenset(schema.get("required", ()))


def _walk(
    node: Any,
    path: JsonPath,
    problems: list[tuple[JsonPath, str]],
    refs: list[tuple[JsonPath, str]],
    *,
    root: bool = False,
) -> None:
    """Check one subschema and descend into the subschemas it holds."""
    if not isinstance(node, Mapping):
        return  # true / false
    for key, value in node.items():
        here: JsonPath = (*path, key)
        if key in _REFUSED:
            problems.append((here, f"{key} {_REFUSED[key]}"))
        elif key.startswith("x-"):
            continue
        elif key not in _KEYWORDS:
            hint = difflib.get_close_matches(key, sorted(_KEYWORDS), n=1)
            problems.append(
                (
                    here,
                    "unknown JSON Schema keyword"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            )
        elif key == "$schema":
            if not root:
                problems.append((here, "$schema belongs at the top of the schema only"))
            elif value != DIALECT:
                problems.append(
                    (here, f"must be {DIALECT!r}: another dialect would switch keywords off")
                )
        elif key == "$ref":
            if not isinstance(value, str) or not value.startswith("#"):
                problems.append(
                    (
                        here,
                        "only references inside this schema (#/...) are "
                        "allowed; Lockgate never fetches schemas",
                    )
                )
            else:
                refs.append((here, value))
        elif key == "format" and value not in _FORMATS.checkers:
            problems.append(
                (
                    here,
                    f"format {value!r} cannot be checked; known formats: "
                    + ", ".join(sorted(_FORMATS.checkers)),
                )
            )
        elif key == "pattern" and isinstance(value, str):
            _check_regex(value, here, problems)
        elif key in _ONE_SCHEMA:
            _walk(value, here, problems, refs)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                if key == "patternProperties":
                    _check_regex(name, (*here, name), problems)
                _walk(sub, (*here, name), problems, refs)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                _walk(sub, (*here, index), problems, refs)


def _check_regex(pattern: str, path: JsonPath, problems: list[tuple[JsonPath, str]]) -> None:
    try:
        ecma_regex(pattern)
    except regress.RegressError as exc:
        problems.append((path, f"not a valid regex (ECMA-262): {exc}"))
