"""Tool patterns: parsing, matching and the specificity order of POLICY.md."""

from __future__ import annotations

import fnmatch
import string
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.patterns import PatternError, Specificity, ToolPattern


@pytest.mark.parametrize(
    ("text", "server", "tool", "specificity", "literals"),
    [
        ("python_test", None, "python_test", Specificity.EXACT_TOOL, 11),
        ("filesystem/write_file", "filesystem", "write_file", Specificity.EXACT_SCOPED, 21),
        ("devtools/git_*", "devtools", "git_*", Specificity.GLOB_SCOPED, 13),
        ("*delete*", None, "*delete*", Specificity.GLOB, 6),
        ("*/write_file", "*", "write_file", Specificity.GLOB, 11),
        ("git_?", None, "git_?", Specificity.GLOB, 4),
        ("*", None, "*", Specificity.GLOB, 0),
        ("srv/a/b", "srv", "a/b", Specificity.EXACT_SCOPED, 7),
    ],
)
def test_parse(text, server, tool, specificity, literals):
    pattern = ToolPattern.parse(text)
    assert (pattern.server, pattern.tool) == (server, tool)
    assert pattern.specificity is specificity
    assert pattern.literals == literals


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("/tool", "server part"),
        ("server/", "tool part"),
        (" tool", "spaces"),
        ("tool ", "spaces"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(PatternError, match=message):
        ToolPattern.parse(text)


@pytest.mark.parametrize(
    ("pattern", "server", "tool", "expected"),
    [
        ("python_test", "any", "python_test", True),
        ("python_test", "any", "python_tests", False),
        ("python_test", "any", "Python_test", False),  # case-sensitive
        ("fs/write_file", "fs", "write_file", True),
        ("fs/write_file", "fs2", "write_file", False),
        ("devtools/git_*", "devtools", "git_status", True),
        ("devtools/git_*", "devtools", "git_", True),
        ("devtools/git_*", "other", "git_status", False),
        ("*delete*", "x", "delete", True),
        ("*delete*", "x", "git_delete_branch", True),
        ("*delete*", "x", "deleted_items_list", True),
        ("*delete*", "x", "Delete", False),
        ("git_?", "x", "git_a", True),
        ("git_?", "x", "git_ab", False),
        ("git_?", "x", "git_", False),
        ("*/write_file", "anything", "write_file", True),
        ("fs-*/read", "fs-home", "read", True),
        ("fs-*/read", "web", "read", False),
        ("[ab]", "x", "[ab]", True),  # brackets are literal, unlike fnmatch
        ("[ab]", "x", "a", False),
        ("a.c", "x", "abc", False),  # regex metacharacters are literal
        ("*", "x", "", True),
        ("srv/a/*", "srv", "a/b", True),
        ("a*", "x", "a\nb", True),  # '*' spans any character
    ],
)
def test_matches(pattern, server, tool, expected):
    assert ToolPattern.parse(pattern).matches(server, tool) is expected


@pytest.mark.parametrize(
    ("text", "is_glob"),
    [
        ("python_test", False),
        ("filesystem/write_file", False),
        ("[ab]", False),  # brackets are literal: no glob
        ("devtools/git_*", True),
        ("*delete*", True),
        ("git_?", True),
        ("*/write_file", True),
    ],
)
def test_a_pattern_is_a_glob_when_it_has_a_wildcard(text, is_glob):
    assert ToolPattern.parse(text).is_glob is is_glob


def test_rank_orders_classes_then_literals_then_position():
    texts = [
        "*",
        "*delete*",
        "*/delete_file",
        "fs/*",
        "fs/delete_*",
        "delete_file",
        "fs/delete_file",
    ]
    patterns = [ToolPattern.parse(t) for t in texts]
    ranked = sorted(range(len(texts)), key=lambda i: patterns[i].rank(i))
    assert [texts[i] for i in ranked] == [
        "fs/delete_file",
        "delete_file",
        "fs/delete_*",
        "fs/*",
        "*/delete_file",
        "*delete*",
        "*",
    ]


def test_equal_globs_tie_goes_to_the_one_written_first():
    a, b = ToolPattern.parse("*_x"), ToolPattern.parse("x_*")
    assert a.literals == b.literals
    assert a.rank(0) < b.rank(1)
    assert b.rank(0) < a.rank(1)


# -- properties ---------------------------------------------------------------------------

name_chars = string.ascii_letters + string.digits + "_-."
names = st.text(alphabet=name_chars, min_size=1, max_size=20)
glob_text = st.text(alphabet=name_chars + "*?", min_size=1, max_size=12).filter(
    lambda s: s.strip() == s
)


@given(names)
def test_literal_pattern_matches_exactly_itself(name):
    pattern = ToolPattern.parse(name)
    assert pattern.matches("srv", name)
    assert not pattern.matches("srv", name + "x")
    assert not pattern.matches("srv", "x" + name)


@given(glob_text, names)
def test_glob_agrees_with_fnmatchcase_when_no_brackets(glob, tool):
    # fnmatch treats [] specially; our alphabet has none, so they must agree.
    assert ToolPattern.parse(glob).matches("srv", tool) == fnmatch.fnmatchcase(tool, glob)


@given(glob_text, st.data())
def test_glob_matches_any_filling_of_its_wildcards(glob, data):
    filled = "".join(
        data.draw(names)
        if c == "*" and data.draw(st.booleans())
        else ""
        if c == "*"
        else data.draw(st.sampled_from(name_chars))
        if c == "?"
        else c
        for c in glob
    )
    assert ToolPattern.parse(glob).matches("srv", filled)


@given(names, names, names)
def test_scoped_pattern_never_matches_another_server(server, other, tool):
    pattern = ToolPattern.parse(f"{server}/{tool}")
    assert pattern.matches(server, tool)
    assert pattern.matches(other, tool) is (other == server)


@given(st.lists(glob_text, min_size=1, max_size=8, unique=True))
def test_rank_is_a_total_order_consistent_with_specificity(texts):
    patterns = [ToolPattern.parse(t) for t in texts]
    ranks = [p.rank(i) for i, p in enumerate(patterns)]
    assert len(set(ranks)) == len(ranks)  # no two rules tie: exactly one applies
    for pa, ra in zip(patterns, ranks, strict=True):
        for pb, rb in zip(patterns, ranks, strict=True):
            if pa.specificity < pb.specificity:
                assert ra < rb


@pytest.mark.parametrize(
    ("glob", "name"),
    [("**********b", "a" * 40), ("*a*a*a*b", "a" * 600), ("*?*?*?*x", "y" * 2000)],
)
def test_hostile_names_cannot_make_matching_slow(glob, name):
    # Tool names come from the agent's side. A backtracking matcher took 32 s on the first.
    pattern = ToolPattern.parse(glob)
    start = time.perf_counter()
    assert not pattern.matches("srv", name)
    assert time.perf_counter() - start < 0.05
