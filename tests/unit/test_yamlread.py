"""Strict YAML reading: YAML 1.2 scalars, YAML 1.1 forms refused, positions, bounds."""

from __future__ import annotations

import math

import pytest

from runner import yamlread
from runner.yamlread import YamlProblem, read_yaml


def value_of(text: str) -> object:
    document, _ = read_yaml(f"a: {text}\n".encode())
    assert isinstance(document, dict)
    return document["a"]


def problem(data: str | bytes) -> YamlProblem:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(YamlProblem) as caught:
        read_yaml(raw)
    return caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("FALSE", False),
        ("null", None),
        ("Null", None),
        ("~", None),
        ("", None),
        ("0", 0),
        ("-0", 0),
        ("+12", 12),
        ("42", 42),
        ("0x1F", 31),
        ("0o17", 15),
        ("1.5", 1.5),
        ("1.", 1.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("0.5e-3", 0.0005),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        ("+.Inf", math.inf),
        # Not special in YAML 1.2's core schema: these stay strings.
        ("tRue", "tRue"),
        ("2024-01-01", "2024-01-01"),
        ("2030-01-01T09:00:00+01:00", "2030-01-01T09:00:00+01:00"),
        ("0 9 * * mon-fri", "0 9 * * mon-fri"),
        ("ops@example.com", "ops@example.com"),
        # Quoted or explicitly tagged strings are always strings.
        ("'yes'", "yes"),
        ('"0755"', "0755"),
        ("'1:30'", "1:30"),
        ("!!str 123", "123"),
    ],
)
def test_yaml_1_2_core_scalars(text: str, expected: object) -> None:
    value = value_of(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("yes", "a YAML 1.1 boolean"),
        ("No", "a YAML 1.1 boolean"),
        ("ON", "a YAML 1.1 boolean"),
        ("off", "a YAML 1.1 boolean"),
        ("y", "a YAML 1.1 boolean"),
        ("N", "a YAML 1.1 boolean"),
        ("0755", "a YAML 1.1 octal number"),
        ("08", "a YAML 1.1 octal number"),
        ("1:30", "a YAML 1.1 base-60 number"),
        ("190:20:30", "a YAML 1.1 base-60 number"),
        ("1_000", "a YAML 1.1 number with underscores"),
    ],
)
def test_yaml_1_1_forms_are_refused_with_a_fix(text: str, what: str) -> None:
    found = problem(f"a: {text}\n")
    assert found.message.startswith(f"{text!r} is ambiguous ({what}); quote it for a string")
    assert (found.line, found.column) == (1, 4)
    assert found.path == ("a",)


def test_octal_suggestion_names_both_readings() -> None:
    assert "write 493 or 0o755" in problem("a: 0755").message


def test_nan_is_refused() -> None:
    assert problem("a: .nan").message == "NaN is not allowed"


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['true']",
        "!!python/name:os.system ''",
        "!!binary aGk=",
        "!!int 5",
        "!custom x",
        "!!set {a, b}",
        "!!omap [a: 1]",
    ],
)
def test_tags_other_than_str_are_refused(text: str) -> None:
    found = problem(f"a: {text}\n")
    assert "is not allowed" in found.message
    assert (found.line, found.column) == (1, 4)


def test_duplicate_keys_are_errors_at_the_second_key() -> None:
    found = problem("jobs:\n  - id: a\n    target: x:y\n    target: x:z\n")
    assert found.message == "duplicate key 'target'"
    assert (found.line, found.column) == (4, 5)


def test_positions_are_1_based_and_point_at_keys() -> None:
    data = b"jobs:\n  - id: a\n    trigger:\n      interval: 5m\n    kwargs: {x: 1}\n"
    document, positions = read_yaml(data)
    assert document == {"jobs": [{"id": "a", "trigger": {"interval": "5m"}, "kwargs": {"x": 1}}]}
    assert positions[()] == (1, 1)
    assert positions[("jobs",)] == (1, 1)
    assert positions[("jobs", 0)] == (2, 5)  # the item
    assert positions[("jobs", 0, "id")] == (2, 5)
    # A block mapping value starts on the next line; the position is the key's.
    assert positions[("jobs", 0, "trigger")] == (3, 5)
    assert positions[("jobs", 0, "trigger", "interval")] == (4, 7)
    assert positions[("jobs", 0, "kwargs", "x")] == (5, 14)


def test_merge_keys() -> None:
    data = b"""\
base: &base
  x: 1
  y: 2
more: &more
  y: 20
  z: 30
one:
  <<: *base
  y: 3
many:
  x: 9
  <<: [*base, *more]
"""
    document, positions = read_yaml(data)
    assert isinstance(document, dict)
    assert document["one"] == {"x": 1, "y": 3}  # explicit keys win over merged ones
    # Explicit keys win wherever they stand; earlier merged mappings win over later ones.
    assert document["many"] == {"x": 9, "y": 2, "z": 30}
    # A merged value is located where it was written.
    assert positions[("one", "x")] == (2, 3)
    assert positions[("one", "y")] == (9, 3)
    assert positions[("many", "z")] == (6, 3)


def test_merge_of_a_scalar_is_refused() -> None:
    found = problem("a: &s 5\nb:\n  <<: *s\n")
    assert found.message == "<< must merge a mapping"
    assert found.line == 1


def test_alias_expansion_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    found = problem("\n".join(lines) + "\n")
    assert found.message == (f"aliases expand into more than {yamlread.MAX_ALIAS_EXPANSION} values")
    assert found.line > 1


def test_moderate_alias_use_is_fine() -> None:
    document, _ = read_yaml(b"a: &a {x: 1}\nb: [*a, *a, *a]\n")
    assert document == {"a": {"x": 1}, "b": [{"x": 1}] * 3}


def test_size_bound() -> None:
    big = b"a: " + b"x" * yamlread.MAX_FILE_BYTES + b"\n"
    found = problem(big)
    assert found.message == "file is larger than 8 MiB"
    assert (found.line, found.column) == (1, 1)


def test_non_utf8_is_located() -> None:
    found = problem(b"jobs:\n  - id: caf\xe9\n")
    assert found.message == "not valid UTF-8 (byte 0xe9)"
    assert (found.line, found.column) == (2, 12)


def test_utf8_bom_is_accepted() -> None:
    assert read_yaml(b"\xef\xbb\xbfa: 1\n")[0] == {"a": 1}


@pytest.mark.parametrize("data", [b"", b"# only a comment\n", b"\n\n"])
def test_empty_documents_read_as_none(data: bytes) -> None:
    assert read_yaml(data) == (None, {})


def test_syntax_errors_are_located() -> None:
    found = problem("a: [1, 2\nb: 3\n")
    assert found.message.startswith("YAML syntax: ")
    assert found.line == 2


def test_tabs_get_a_plain_explanation() -> None:
    found = problem("a:\n\t- 1\n")
    assert found.message == "YAML syntax: tab character; indent with spaces"
    assert (found.line, found.column) == (2, 1)


def test_one_document_only() -> None:
    found = problem("a: 1\n---\nb: 2\n")
    assert found.message.startswith("YAML syntax:")
    assert found.line == 2


def test_keys_must_be_scalars() -> None:
    assert problem("[a, b]: 1\n").message == "mapping keys must be plain strings"


def test_keys_are_strings_not_resolved_scalars() -> None:
    document, _ = read_yaml(b"yes: 1\n1: 2\nnull: 3\n")
    assert document == {"yes": 1, "1": 2, "null": 3}


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    found = problem("a: &a [1, *a]\n")
    assert found.message == "alias *a refers to a node that contains it"
    assert (found.line, found.column) == (1, 11)


def test_undefined_and_duplicate_anchors() -> None:
    assert problem("a: *nope\n").message == "YAML syntax: found undefined alias *nope"
    twice = problem("a: &x 1\nb: &x 2\n")
    assert twice.message == "YAML syntax: anchor &x is defined twice"
    assert (twice.line, twice.column) == (2, 4)


def test_nesting_is_bounded() -> None:
    depth = yamlread.MAX_DEPTH + 5
    found = problem("a: " + "[" * depth + "]" * depth + "\n")
    assert found.message == f"nested more than {yamlread.MAX_DEPTH} levels deep"
    assert found.line == 1
    # Deep but within the bound reads fine.
    ok = yamlread.MAX_DEPTH - 2
    document, _ = read_yaml(("a: " + "[" * ok + "]" * ok + "\n").encode())
    assert isinstance(document, dict)


def test_an_alias_to_a_scalar_can_be_a_key() -> None:
    document, positions = read_yaml(b"a: &k name\n*k : 2\n")
    assert document == {"a": "name", "name": 2}
    assert positions[("name",)] == (2, 1)
    assert problem("a: &k name\n*k : 2\nname: 3\n").message == "duplicate key 'name'"


def test_merge_forms() -> None:
    data = b"""\
m: &m {x: 1}
both: &both [*m, {y: 2}]
tagged:
  !!merge <<: *both
  z: 3
"""
    document, positions = read_yaml(data)
    assert isinstance(document, dict)
    assert document["tagged"] == {"x": 1, "y": 2, "z": 3}
    assert positions[("tagged", "x")] == (1, 8)
    assert positions[("tagged", "y")] == (2, 19)
    bad = problem("m: &m {x: 1}\nd:\n  <<: [*m, 3]\n")
    assert bad.message == "<< must merge a mapping"
    assert (bad.line, bad.column) == (3, 12)


def test_an_aliased_value_is_located_at_its_anchor() -> None:
    data = b"common: &c\n  retries: 3\njob:\n  settings: *c\n"
    document, positions = read_yaml(data)
    assert document == {"common": {"retries": 3}, "job": {"settings": {"retries": 3}}}
    assert positions[("job", "settings")] == (4, 3)  # the key
    assert positions[("job", "settings", "retries")] == (2, 3)  # where it was written


def test_an_anchored_key_used_as_a_value_resolves_like_a_value() -> None:
    document, _ = read_yaml(b"&n 5: a\nb: *n\n")
    assert document == {"5": "a", "b": 5}
    assert read_yaml(b"&y yes: 1\n")[0] == {"yes": 1}  # as a key it is just text
    assert "a YAML 1.1 boolean" in problem("&y yes: 1\nb: *y\n").message
