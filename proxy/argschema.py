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
- **Patterns mean what JSON Schema says.** ``pattern`` is an ECMA-262 regex: ``$`` is the
  end of the string (Python's ``$`` also matches before a final newline, so ``^ls$`` would
  pass ``"ls\\n"``) and ``\\d``/``\\w`` are ASCII only.
- **Loops are caught.** A schema that refers to itself without end is refused at load; any
  error while validating makes the decision a denial (see :mod:`proxy.decide`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Final

import jsonschema
from jsonschema import validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from proxy._jsonloc import JsonPath

__all__ = ["ArgumentSchemaError", "ArgumentValidator", "compile_arguments_schema"]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

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


class ArgumentSchemaError(ValueError):
    """Problems with one rule's ``arguments`` schema: (path inside it, message) pairs."""

    def __init__(self, problems: list[tuple[JsonPath, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


@lru_cache(maxsize=1024)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 (JSON Schema) regex with ECMA meaning for ``$`` and classes.

    Raises:
        re.error: the pattern is not a valid regex.
    """
    out: list[str] = []
    in_class = False
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(char + next(chars, ""))
        elif in_class:
            in_class = char != "]"
            out.append(char)
        elif char == "[":
            in_class = True
            out.append(char)
        elif char == "$":
            out.append(r"\Z")
        else:
            out.append(char)
    return re.compile("".join(out), re.ASCII)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and ecma_regex(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


ArgumentValidator: Final[Any] = validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, validators={"pattern": _pattern}
)
_FORMATS: Final = jsonschema.Draft202012Validator.FORMAT_CHECKER


def compile_arguments_schema(schema: Mapping[str, Any] | bool) -> Any:
    """A validator for ``schema``, after every check above.

    Raises:
        ArgumentSchemaError: every problem found, each with its path inside the schema.
    """
    problems: list[tuple[JsonPath, str]] = []
    try:
        ArgumentValidator.check_schema(schema, format_checker=_FORMATS)
    except SchemaError as exc:
        problems.append(
            (tuple(exc.path), f"not a valid JSON Schema (draft 2020-12): {exc.message}")
        )
        raise ArgumentSchemaError(problems) from None
    refs: list[tuple[JsonPath, str]] = []
    _walk(schema, (), problems, refs, root=True)
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
            try:
                ecma_regex(value)
            except re.error as exc:
                problems.append((here, f"not a valid regex: {exc}"))
        elif key in _ONE_SCHEMA:
            _walk(value, here, problems, refs)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                _walk(sub, (*here, name), problems, refs)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                _walk(sub, (*here, index), problems, refs)
