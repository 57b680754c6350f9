"""Safe, strict YAML reading with a position for every value.

PyYAML resolves plain scalars by YAML 1.1 rules, which silently turn `NO` into false,
`1:30` into 90 and `0755` into 493. We compose the node tree with the C parser where it is
available, resolve scalars ourselves by YAML 1.2 core rules, and refuse the YAML 1.1 forms
outright so an author is told instead of surprised.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - pure-Python fallback
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_ALIAS_EXPANSION = 100_000

Path = tuple[str | int, ...]
Positions = dict[Path, tuple[int, int]]

_PLAIN = "tag:runner.invalid,2026:plain"
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class YamlProblem(Exception):
    """A reason the file cannot be read, with a 1-based line and column."""

    def __init__(self, message: str, line: int, column: int, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.path = path


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type,unused-ignore]
    """Tags every untagged plain scalar so we can resolve it ourselves."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


_Loader.add_implicit_resolver(_PLAIN, re.compile(r"(?s).*"), None)

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_YAML11_BOOL = frozenset({"y", "yes", "n", "no", "on", "off"})
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_HEX_OCT = re.compile(r"0x[0-9a-fA-F]+|0o[0-7]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf")}
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_UNDERSCORED = re.compile(r"[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?")


def _resolve_plain(text: str) -> object:
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _HEX_OCT.fullmatch(text):
        return int(text, 0)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.lower() in _SPECIAL_FLOAT:
        return _SPECIAL_FLOAT[text.lower()]
    if text.lower() == ".nan":
        raise ValueError("NaN is not allowed")
    lowered = text.lower()
    if lowered in _YAML11_BOOL:
        return _ambiguous(text, "a YAML 1.1 boolean", "write true or false")
    if _LEADING_ZERO.fullmatch(text):
        digits = text.lstrip("+-0") or "0"
        octal = f"{int(digits, 8)} or 0o{digits}" if set(digits) <= set("01234567") else digits
        return _ambiguous(text, "a YAML 1.1 octal number", f"write {octal}")
    if _SEXAGESIMAL.fullmatch(text):
        return _ambiguous(text, "a YAML 1.1 base-60 number", "write the value you mean")
    if _UNDERSCORED.fullmatch(text):
        return _ambiguous(text, "a YAML 1.1 number with underscores", "write it without _")
    return text


def _ambiguous(text: str, what: str, fix: str) -> object:
    raise ValueError(f"{text!r} is ambiguous ({what}); quote it for a string, or {fix}")


class _Builder:
    """Turns composed nodes into plain Python values, recording where each came from."""

    def __init__(self) -> None:
        self.positions: Positions = {}
        self._seen: set[int] = set()
        self._expanded = 0

    def build(self, node: yaml.Node, path: Path) -> object:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if id(node) in self._seen:
            self._expanded += 1
            if self._expanded > MAX_ALIAS_EXPANSION:
                line, column = self.positions.get(path[:1], (1, 1))
                raise YamlProblem(
                    f"aliases expand into more than {MAX_ALIAS_EXPANSION} values",
                    line,
                    column,
                    path,
                )
        else:
            self._seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self._problem(node, f"tag {node.tag} is not allowed", path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self._problem(node, f"tag {node.tag} is not allowed", path)
            return self._mapping(node, path)
        raise self._problem(node, "unsupported YAML node", path)  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> object:
        if node.tag == _STR:
            return node.value
        if node.tag != _PLAIN:
            raise self._problem(node, f"tag {node.tag} is not allowed", path)
        try:
            return _resolve_plain(node.value)
        except ValueError as exc:
            raise self._problem(node, str(exc), path) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        result: dict[str, object] = {}
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.value == "<<"
                and (key_node.tag == _PLAIN or key_node.tag == "tag:yaml.org,2002:merge")
            ):
                self._merge(value_node, result, explicit, path)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._problem(key_node, "mapping keys must be plain strings", path)
            if key_node.tag not in (_PLAIN, _STR):
                raise self._problem(key_node, f"tag {key_node.tag} is not allowed", path)
            key = key_node.value
            if key in explicit:
                raise self._problem(key_node, f"duplicate key {key!r}", (*path, key))
            explicit.add(key)
            result[key] = self.build(value_node, (*path, key))
            # Point at the key: for block values the value starts on a later line.
            self.positions[(*path, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
        return result

    def _merge(
        self, node: yaml.Node, into: dict[str, object], explicit: set[str], path: Path
    ) -> None:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            merged = self.build(source, (*path, "<<"))
            if not isinstance(merged, dict):
                raise self._problem(source, "<< must merge a mapping", path)
            for key, value in merged.items():
                if key not in explicit and key not in into:
                    into[key] = value
                    self.positions[(*path, key)] = self.positions[(*path, "<<", key)]

    @staticmethod
    def _problem(node: yaml.Node, message: str, path: Path) -> YamlProblem:
        return YamlProblem(message, node.start_mark.line + 1, node.start_mark.column + 1, path)


def read_yaml(data: bytes) -> tuple[object, Positions]:
    """Parse one document; raise YamlProblem with a position for anything unacceptable."""
    if len(data) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", 1, 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblem(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", line, column) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        if (mark is not None and "\t" in text[mark.index : mark.index + 1]) or "\\t" in reason:
            reason = "tab character; indent with spaces"
        raise YamlProblem(f"YAML syntax: {reason}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML syntax: {exc}", 1, 1) from None
    finally:
        loader.dispose()
    if node is None:
        return None, {}
    builder = _Builder()
    value = builder.build(node, ())
    return value, builder.positions
