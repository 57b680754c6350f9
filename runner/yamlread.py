"""Safe, strict YAML reading with a position for every value.

PyYAML resolves plain scalars by YAML 1.1 rules, which silently turn `NO` into false,
`1:30` into 90 and `0755` into 493. We read the parser's events (from the C parser where it
is available) and build plain values from them ourselves, resolving scalars by YAML 1.2
core rules and refusing the YAML 1.1 forms outright so an author is told instead of
surprised. Building from events skips PyYAML's node tree and resolver, which cost more than
the parsing itself on large job sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - pure-Python fallback
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_ALIAS_EXPANSION = 100_000
MAX_VALUES = 250_000
"""Values per file, aliases counted as expanded: each costs a few hundred bytes to hold with
its position, so this bounds the memory one file can take (some 16,000 jobs fit)."""

Path = tuple[str | int, ...]
Positions = dict[Path, tuple[int, int]]

_PLAIN = "tag:runner.invalid,2026:plain"
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(Exception):
    """A reason the file cannot be read, with a 1-based line and column."""

    def __init__(self, message: str, line: int, column: int, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.path = path


_Loader = _BaseLoader
"""Only its parser is used: `get_event`, never its composer, constructor or resolver."""

MAX_DEPTH = 100
"""Nesting deeper than this is refused (a job file needs a handful of levels)."""
MAX_PROBLEMS = 100
"""Problems reported per file before reading stops: enough to fix in one go, and bounded."""

_ScalarEvent = yaml.ScalarEvent
_AliasEvent = yaml.AliasEvent
_SequenceStart = yaml.SequenceStartEvent
_SequenceEnd = yaml.SequenceEndEvent
_MappingStart = yaml.MappingStartEvent
_MappingEnd = yaml.MappingEndEvent


_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_YAML11_BOOL = frozenset({"y", "yes", "n", "no", "on", "off"})
_NUMBER_START = frozenset("0123456789+-.")
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
    if text[0] not in _NUMBER_START:  # every number form starts with a digit, sign or dot
        if text.lower() in _YAML11_BOOL:
            return _ambiguous(text, "a YAML 1.1 boolean", "write true or false")
        return text
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


@dataclass(frozen=True, slots=True)
class _Anchor:
    value: object
    size: int
    """How many values building it made, aliases inside it included."""
    positions: list[tuple[Path, tuple[int, int]]]
    """Positions recorded while building it, relative to the anchored node's path."""
    key: tuple[str, str] | None
    """(tag, text) when the anchored node is a scalar, so an alias can serve as a key."""


def _mark(event: Any) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1)


def _problem(event: Any, message: str, path: Path) -> YamlProblem:
    line, column = _mark(event)
    return YamlProblem(message, line, column, path)


def _scalar_tag(event: Any) -> str:
    tag: str | None = event.tag
    if tag is None or tag == "!":
        return _PLAIN if event.implicit[0] else _STR
    return tag


class _Reader:
    """Builds plain Python values from parser events, recording where each came from.

    Runs once per event of every job file, so the common cases take the short paths. An
    alias reuses the value built for its anchor; what it would expand to counts against
    MAX_ALIAS_EXPANSION, and its positions are those recorded under the anchor.
    """

    def __init__(self, next_event: Any) -> None:
        self._next = next_event
        self.placed: list[tuple[Path, tuple[int, int]]] = []
        """(path, (line, column)) in recording order; a later entry for a path wins."""
        self._anchors: dict[str, _Anchor | None] = {}
        self._built = 0
        self._expanded = 0
        self.problems: list[YamlProblem] = []
        """Problems that leave the file readable (ambiguous scalars, duplicate keys, tags), so
        that every one is reported, not only the first."""

    def _soft(self, problem: YamlProblem) -> None:
        self.problems.append(problem)
        if len(self.problems) >= MAX_PROBLEMS:
            raise YamlProblem(
                f"more than {MAX_PROBLEMS} problems; stopped reading",
                problem.line,
                problem.column,
                problem.path,
            )

    def document(self) -> object:
        """The single document's value; None when the stream holds no document."""
        next_event = self._next
        next_event()  # stream start
        event = next_event()
        if type(event) is yaml.StreamEndEvent:
            return None
        value = self._node(next_event(), ())
        next_event()  # document end
        event = next_event()
        if type(event) is not yaml.StreamEndEvent:
            raise _problem(event, "YAML syntax: found a second document; a file holds one", ())
        return value

    def _node(self, event: Any, path: Path) -> object:
        mark = event.start_mark
        self.placed.append((path, (mark.line + 1, mark.column + 1)))
        kind = type(event)
        if kind is _AliasEvent:
            return self._alias(event, path)
        if event.anchor is not None:
            return self._anchored(event, kind, path)
        return self._value(event, kind, path)

    def _value(self, event: Any, kind: type, path: Path) -> object:
        self._built += 1
        if kind is _ScalarEvent:
            return self._scalar(event, path)
        if len(path) >= MAX_DEPTH:
            raise _problem(event, f"nested more than {MAX_DEPTH} levels deep", path)
        if kind is _MappingStart:
            if event.tag is not None and event.tag not in ("!", _MAP):
                self._soft(_problem(event, f"tag {event.tag} is not allowed", path))
            return self._mapping(path)
        if kind is _SequenceStart:
            if event.tag is not None and event.tag not in ("!", _SEQ):
                self._soft(_problem(event, f"tag {event.tag} is not allowed", path))
            return self._sequence(path)
        raise _problem(event, "unsupported YAML node", path)  # pragma: no cover

    def _scalar(self, event: Any, path: Path) -> object:
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:
                return event.value
        elif tag == _STR:
            return event.value
        else:
            self._soft(_problem(event, f"tag {tag} is not allowed", path))
            return event.value
        try:
            return _resolve_plain(event.value)
        except ValueError as exc:
            self._soft(_problem(event, str(exc), path))
            return event.value  # as text, so the rest of the file is still checked

    def _sequence(self, path: Path) -> list[object]:
        items: list[object] = []
        next_event = self._next
        event = next_event()
        while type(event) is not _SequenceEnd:
            if self._built > MAX_VALUES:
                raise self._too_many(event, path)
            items.append(self._node(event, (*path, len(items))))
            event = next_event()
        return items

    def _too_many(self, event: Any, path: Path) -> YamlProblem:
        return _problem(event, f"the file holds more than {MAX_VALUES} values", path)

    def _mapping(self, path: Path) -> dict[str, object]:
        result: dict[str, object] = {}
        explicit: set[str] = set()
        placed = self.placed
        next_event = self._next
        event = next_event()
        while type(event) is not _MappingEnd:
            if self._built > MAX_VALUES:
                raise self._too_many(event, path)
            if type(event) is _ScalarEvent and event.anchor is None:  # the usual key
                key = event.value
                tag = event.tag
                if tag is None or tag == "!":
                    tag = _PLAIN if event.implicit[0] else _STR
            else:
                key, tag = self._key(event, path)
            if key == "<<" and tag in (_PLAIN, _MERGE):
                self._merge(next_event(), result, explicit, path)
            else:
                if tag != _PLAIN and tag != _STR:
                    self._soft(_problem(event, f"tag {tag} is not allowed", path))
                child = (*path, key)
                value_event = next_event()
                if key in explicit:
                    self._soft(_problem(event, f"duplicate key {key!r}", child))
                    self._node(value_event, ("<duplicate>", *child))  # read, then drop
                    event = next_event()
                    continue
                explicit.add(key)
                if type(value_event) is _ScalarEvent and value_event.anchor is None:
                    self._built += 1
                    if value_event.tag is None and value_event.implicit[0]:  # plain
                        text = value_event.value
                        if text and text[0] not in _NUMBER_START and len(text) > 5:
                            result[key] = text  # a word no YAML 1.1 or 1.2 rule resolves
                        else:
                            result[key] = self._scalar(value_event, child)
                    else:
                        result[key] = self._scalar(value_event, child)
                else:
                    result[key] = self._node(value_event, child)
                # Point at the key: for block values the value starts on a later line.
                mark = event.start_mark
                placed.append((child, (mark.line + 1, mark.column + 1)))
            event = next_event()
        return result

    def _key(self, event: Any, path: Path) -> tuple[str, str]:
        kind = type(event)
        if kind is _ScalarEvent:
            tag = _scalar_tag(event)
            if event.anchor is not None:
                name = self._define(event, path)
                value: object
                # What an alias to it means as a value; a problem only if so used.
                known = len(self.problems)
                value = self._scalar(event, path)
                if len(self.problems) > known:
                    value = self.problems.pop()
                self._anchors[name] = _Anchor(value, 1, [((), _mark(event))], (tag, event.value))
            return event.value, tag
        if kind is _AliasEvent:
            anchor = self._anchors.get(event.anchor)
            if anchor is not None and anchor.key is not None:
                return anchor.key[1], anchor.key[0]
        raise _problem(event, "mapping keys must be plain strings", path)

    def _anchored(self, event: Any, kind: type, path: Path) -> object:
        name = self._define(event, path)
        first = len(self.placed) - 1  # this node's own position, recorded by _node
        built = self._built
        value = self._value(event, kind, path)
        depth = len(path)
        relative = [(where[depth:], mark) for where, mark in self.placed[first:]]
        key = (_scalar_tag(event), event.value) if kind is _ScalarEvent else None
        self._anchors[name] = _Anchor(value, self._built - built, relative, key)
        return value

    def _define(self, event: Any, path: Path) -> str:
        name: str = event.anchor
        if name in self._anchors:
            raise _problem(event, f"YAML syntax: anchor &{name} is defined twice", path)
        self._anchors[name] = None  # being built: an alias to it inside it is refused
        return name

    def _alias(self, event: Any, path: Path) -> object:
        name = event.anchor
        if name not in self._anchors:
            raise _problem(event, f"YAML syntax: found undefined alias *{name}", path)
        anchor = self._anchors[name]
        if anchor is None:
            raise _problem(event, f"alias *{name} refers to a node that contains it", path)
        self._expanded += anchor.size
        self._built += anchor.size
        if self._expanded > MAX_ALIAS_EXPANSION:
            line, column = self._position(path[:1])
            raise YamlProblem(
                f"aliases expand into more than {MAX_ALIAS_EXPANSION} values", line, column, path
            )
        if isinstance(anchor.value, YamlProblem):
            self._soft(anchor.value)
            return anchor.key[1] if anchor.key else None
        self.placed.extend(((*path, *suffix), mark) for suffix, mark in anchor.positions)
        return anchor.value

    def _merge(self, event: Any, into: dict[str, object], explicit: set[str], path: Path) -> None:
        base = (*path, "<<")
        first = len(self.placed)
        value = self._node(event, base)
        here = dict(self.placed[first:])
        sources: list[tuple[object, Path]] = (
            [(item, (*base, i)) for i, item in enumerate(value)]
            if isinstance(value, list)
            else [(value, base)]
        )
        for source, where in sources:
            if not isinstance(source, dict):
                line, column = here.get(where, _mark(event))
                raise YamlProblem("<< must merge a mapping", line, column, path)
            for key, item in source.items():
                if key not in explicit and key not in into:
                    into[key] = item
                    self.placed.append(((*path, key), here[(*where, key)]))

    def _position(self, path: Path) -> tuple[int, int]:
        for where, mark in reversed(self.placed):
            if where == path:
                return mark
        return (1, 1)


QUICK_DEPTH = 3
"""`read_plain` records the positions of paths this long at most: `("jobs", 3, "trigger")`."""


class _NotPlain(Exception):
    """The file holds something `read_plain` leaves to `read_yaml_all`."""


_NOT_PLAIN = _NotPlain()


class _Quick:
    """`_Reader` for plain files only: no anchor, alias, tag, merge key or duplicate key, no
    value a problem is found in, nothing beyond the bounds. It raises _NotPlain at the first
    sight of anything else (syntax errors included), and records positions only down to
    QUICK_DEPTH, with no position log to replay: what a valid job file needs, at a fraction
    of the cost. For a plain file `_Reader` records each of those paths last at the same
    place: a sequence item at its node, a mapping value at its key."""

    def __init__(self, next_event: Any) -> None:
        self._next = next_event
        self.positions: Positions = {}
        self._built = 0

    def document(self) -> object:
        next_event = self._next
        next_event()  # stream start
        if type(next_event()) is yaml.StreamEndEvent:
            return None
        event = next_event()
        mark = event.start_mark
        self.positions[()] = (mark.line + 1, mark.column + 1)
        value = self._value(event, (), 0)
        next_event()  # document end
        if type(next_event()) is not yaml.StreamEndEvent or self._built > MAX_VALUES:
            raise _NOT_PLAIN
        return value

    def _value(self, event: Any, path: Path | None, depth: int) -> object:
        if event.anchor is not None:  # an anchor, or an alias (whose anchor it names)
            raise _NOT_PLAIN
        self._built += 1
        kind = type(event)
        if kind is _ScalarEvent:
            return self._scalar(event)
        if event.tag is not None or depth >= MAX_DEPTH or self._built > MAX_VALUES:
            raise _NOT_PLAIN
        if kind is _MappingStart:
            return self._mapping(path, depth + 1)
        if kind is _SequenceStart:
            return self._sequence(path, depth + 1)
        raise _NOT_PLAIN  # pragma: no cover

    @staticmethod
    def _scalar(event: Any) -> object:
        tag = event.tag
        if tag is None:
            if not event.implicit[0]:
                return event.value
            text = event.value
            if text and text[0] not in _NUMBER_START and len(text) > 5:
                return text  # a word no YAML 1.1 or 1.2 rule resolves
            try:
                return _resolve_plain(text)
            except ValueError:
                raise _NOT_PLAIN from None
        if tag == _STR:
            return event.value
        raise _NOT_PLAIN

    def _sequence(self, path: Path | None, depth: int) -> list[object]:
        items: list[object] = []
        positions = self.positions
        next_event = self._next
        event = next_event()
        while type(event) is not _SequenceEnd:
            if path is None:
                items.append(self._value(event, None, depth))
            else:
                child = (*path, len(items))
                mark = event.start_mark
                positions[child] = (mark.line + 1, mark.column + 1)
                items.append(self._value(event, child if depth < QUICK_DEPTH else None, depth))
            event = next_event()
        return items

    def _mapping(self, path: Path | None, depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        positions = self.positions
        next_event = self._next
        event: Any = next_event()
        while type(event) is not _MappingEnd:
            if type(event) is not _ScalarEvent or event.anchor is not None or event.tag is not None:
                raise _NOT_PLAIN
            key = event.value
            if key in result or key == "<<":
                raise _NOT_PLAIN
            value_event = next_event()
            if path is None:
                result[key] = self._value(value_event, None, depth)
            else:
                child = (*path, key)
                below = child if depth < QUICK_DEPTH else None
                result[key] = self._value(value_event, below, depth)
                mark: Any = event.start_mark
                positions[child] = (mark.line + 1, mark.column + 1)
            event = next_event()
        return result


def read_plain(data: bytes) -> tuple[object, Positions] | None:
    """What `read_yaml_all` gives for a plain file (see `_Quick`) that it reads without a
    problem, with only the positions of paths up to QUICK_DEPTH long; None for any other
    file, which `read_yaml_all` must then read."""
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    loader = _Loader(text)
    reader = _Quick(loader.get_event)
    try:
        return reader.document(), reader.positions
    except (_NotPlain, yaml.YAMLError):
        return None
    finally:
        loader.dispose()


def read_yaml(data: bytes) -> tuple[object, Positions]:
    """Parse one document; raise YamlProblem with a position for anything unacceptable."""
    value, positions, problems = read_yaml_all(data)
    if problems:
        raise problems[0]
    return value, positions


class YamlProblems(YamlProblem):
    """Reading stopped at `self`; `earlier` are the problems found before it."""

    def __init__(self, stop: YamlProblem, earlier: list[YamlProblem]) -> None:
        super().__init__(stop.message, stop.line, stop.column, stop.path)
        self.earlier = earlier


def read_yaml_all(data: bytes) -> tuple[object, Positions, list[YamlProblem]]:
    """Parse one document; return it with every problem that still let it be read.

    A value with a problem is kept as its text. A problem that stops reading (syntax, size,
    aliases) raises YamlProblems, which carries the problems found before it.
    """
    if len(data) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", 1, 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblem(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", line, column) from None
    loader = _Loader(text)
    reader = _Reader(loader.get_event)
    try:
        value = reader.document()
    except YamlProblem as exc:
        raise YamlProblems(exc, reader.problems) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        if (mark is not None and "\t" in text[mark.index : mark.index + 1]) or "\\t" in reason:
            reason = "tab character; indent with spaces"
        stop = YamlProblem(f"YAML syntax: {reason}", line, column)
        raise YamlProblems(stop, reader.problems) from None
    except yaml.YAMLError as exc:
        raise YamlProblems(YamlProblem(f"YAML syntax: {exc}", 1, 1), reader.problems) from None
    finally:
        loader.dispose()
    return value, dict(reader.placed), reader.problems
