"""Read a YAML document as a tree of nodes and convert each value to the type its setting expects.

PyYAML's implicit typing (YAML 1.1) reads ``001234567000`` as the octal number 175304192, ``no``
as false and ``2024-01-02`` as a date. ``crawler.config.loader`` therefore never lets PyYAML construct
objects: it composes the node tree (which keeps the text as written and a line for every node)
and converts each scalar with a converter chosen by the setting, so every problem comes with a
line and a key path.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import date
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DOCUMENT_CHARACTERS = 1024 * 1024
MAX_DEPTH = 32
#: Aliases (``*name``) let a small document stand for a huge one ("billion laughs"): cap the expanded size.
MAX_EXPANDED_NODES = 100_000
NULLS = frozenset({"", "~", "null", "Null", "NULL"})
BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_TEXT_STYLES = frozenset({"'", '"', "|", ">"})
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_INTEGER = re.compile(r"[-+]?[0-9]+(?:_[0-9]+)*")
_NUMBER = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LONGEST_NUMBER = 40

#: Converts the node at a key path to a setting's value, or raises :class:`NodeError`.
Converter = Callable[[Node, str, "Reader"], Any]


class NodeError(Exception):
    """A problem at ``line`` (1-based) of the document, at ``key`` (a key path; empty for the document)."""

    def __init__(self, line: int, key: str, problem: str) -> None:
        super().__init__(problem)
        self.line, self.key, self.problem = line, key, problem


def child(path: str, key: str) -> str:
    """The key path of ``key`` inside the mapping at ``path``."""
    return f"{path}.{key}" if path else key


def line_of(node: Node) -> int:
    """The 1-based line where ``node`` starts."""
    return node.start_mark.line + 1


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader's composer that refuses explicit tags (``!!python/object``) and deep nesting."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose one node, refusing tags and nesting deeper than :data:`MAX_DEPTH`."""
        event = self.peek_event()
        line = event.start_mark.line + 1
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            raise NodeError(line, "", f"YAML tags such as '{shown}' are not allowed; write the plain value")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise NodeError(line, "", f"the document is nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def compose_document(text: str) -> Node | None:
    """The node tree of ``text`` (None when empty); any YAML problem raises :class:`NodeError`."""
    if len(text) > MAX_DOCUMENT_CHARACTERS:
        raise NodeError(1, "", f"the document is larger than {MAX_DOCUMENT_CHARACTERS // 1024} KiB")
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else 1
        context = f" ({error.context})" if error.context else ""
        raise NodeError(line, "", f"YAML syntax error: {error.problem}{context}") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise NodeError(line, "", f"character U+{code:04X} is not allowed in YAML") from None
    except (yaml.YAMLError, ValueError, OverflowError) as error:
        line = loader.get_mark().line + 1 if loader is not None else 1
        raise NodeError(line, "", f"YAML syntax error: cannot read this value ({error})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is not None:
        _check_expanded_size(root)
    return root


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, SequenceNode) else []


def _check_expanded_size(root: Node) -> None:
    """Refuse recursive aliases and documents that expand to more than :data:`MAX_EXPANDED_NODES` nodes."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    pending: list[tuple[Node, bool]] = [(root, False)]
    while pending:  # iterative post-order walk: chains of aliases may be far deeper than the recursion limit
        node, children_done = pending.pop()
        if children_done:
            ancestors.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(part)] for part in _children(node)), MAX_EXPANDED_NODES + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in ancestors:
            raise NodeError(line_of(node), "", "an alias (*name) refers to a node that contains it")
        ancestors.add(id(node))
        pending.append((node, True))
        pending.extend((part, False) for part in _children(node) if id(part) not in sizes)
    if sizes[id(root)] > MAX_EXPANDED_NODES:
        raise NodeError(1, "", f"the document has more than {MAX_EXPANDED_NODES} values once its aliases are expanded")


@dataclass(frozen=True)
class Scalar:
    """A scalar's text after ``${VAR}`` interpolation, the text as written, and whether it was quoted."""

    text: str
    written: str
    quoted: bool

    @property
    def is_null(self) -> bool:
        """True for an unquoted ``null``, ``~`` or empty value."""
        return not self.quoted and self.text in NULLS


@dataclass
class Reader:
    """Walks the node tree: interpolates scalars, checks mappings and remembers the line of every key."""

    environ: Mapping[str, str]
    lines: dict[str, int] = field(default_factory=dict)

    def fail(self, node: Node, path: str, problem: str) -> NodeError:
        """An error at ``path``, on the line of its key when it has one, else on the node's line."""
        return NodeError(self.lines.get(path, line_of(node)), path, problem)

    def wrong(self, node: Node, path: str, expected: str, hint: str = "") -> NodeError:
        """An error saying what was expected and what the node holds."""
        return self.fail(node, path, f"expected {expected}, got {self.given(node, path)}{hint}")

    def conflict(self, paths: Sequence[str], problem: str) -> NodeError:
        """An error on the first of ``paths`` written in the document (else its nearest written parent)."""
        for path in paths:
            if path in self.lines:
                return NodeError(self.lines[path], path, problem)
        parent = paths[0]
        while "." in parent and parent not in self.lines:
            parent = parent.rsplit(".", 1)[0]
        return NodeError(self.lines.get(parent, 1), paths[0], problem)

    def scalar(self, node: Node, path: str, expected: str) -> Scalar:
        """The interpolated scalar at ``path``; a list or mapping there is an error."""
        if not isinstance(node, ScalarNode):
            raise self.wrong(node, path, expected)
        return Scalar(self.interpolate(node, path), node.value, node.style in _TEXT_STYLES)

    def plain(self, node: Node, path: str, expected: str) -> Scalar:
        """Like :meth:`scalar` for a non-text setting, where a quoted value is an error."""
        scalar = self.scalar(node, path, expected)
        if scalar.quoted:
            raise self.wrong(node, path, expected, "; quoted values are text: remove the quotes")
        return scalar

    def is_null(self, node: Node, path: str) -> bool:
        """True when the node is an unquoted null (``null``, ``~`` or nothing)."""
        return isinstance(node, ScalarNode) and self.scalar(node, path, "").is_null

    def given(self, node: Node, path: str) -> str:
        """What the node holds, for an error message."""
        if not isinstance(node, ScalarNode):
            return "a mapping" if isinstance(node, MappingNode) else "a list"
        scalar = self.scalar(node, path, "")
        shown = "null" if scalar.is_null else _shorten(repr(scalar.text))
        if scalar.quoted:
            shown = f"the quoted text {shown}"
        return shown if scalar.written == scalar.text else f"{shown} (from {_shorten(repr(scalar.written))})"

    def interpolate(self, node: ScalarNode, path: str) -> str:
        """The scalar's text with ``${NAME}``/``${NAME:-default}`` replaced and ``$${`` made ``${``."""
        return _REFERENCE.sub(lambda match: self._substitute(match, node, path), node.value)

    def _substitute(self, match: re.Match[str], node: Node, path: str) -> str:
        if match.group(0) == "$${":
            return "${"
        variable = _VARIABLE.fullmatch(match.group(1) or "")
        if variable is None:
            raise self.fail(node, path, f"bad variable reference {_shorten(repr(match.group(0)))}: write "
                                        "${NAME} or ${NAME:-default}, and $${ for a literal ${")
        name, default = variable.groups()
        value = self.environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise self.fail(node, path, f"environment variable {name} is not set "
                                        f"(write ${{{name}:-default}} to give a default)")
        return value

    def pairs(self, node: Node, path: str, expected: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of the mapping at ``path``; keys must be unique text."""
        if not isinstance(node, MappingNode):
            raise self.wrong(node, path, expected)
        first_lines: dict[str, int] = {}
        result: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise NodeError(line_of(key_node), path, f"a key must be text, got {self.given(key_node, path)}")
            key, key_path, line = key_node.value, child(path, key_node.value), line_of(key_node)
            if key == "<<" and key_node.style is None:
                raise NodeError(line, key_path, "YAML merge keys (<<) are not supported: write the keys out")
            if key in first_lines:
                raise NodeError(line, key_path, f"duplicate key '{key}' (first at line {first_lines[key]})")
            first_lines[key] = self.lines[key_path] = line
            result.append((key, key_node, value_node))
        return result

    def section(self, node: Node, path: str, valid: Sequence[str]) -> list[tuple[str, Node]]:
        """(key, value node) of the mapping at ``path``, whose keys must be among ``valid``."""
        expected = f"a mapping {'of sections ' if not path else ''}with the keys {', '.join(valid)}"
        pairs = self.pairs(node, path, expected)
        for key, key_node, _ in pairs:
            if key not in valid:
                raise self.fail(key_node, child(path, key), unknown_key_problem(key, valid))
        return [(key, value) for key, _, value in pairs]

    def items(self, node: Node, path: str, expected: str) -> list[tuple[str, Node]]:
        """(path, node) of each item of the list at ``path``; null is empty, a lone scalar one item."""
        if isinstance(node, MappingNode):
            raise self.wrong(node, path, expected)
        if isinstance(node, ScalarNode):
            return [] if self.is_null(node, path) else [(path, node)]
        items = [(f"{path}[{index}]", item) for index, item in enumerate(node.value)]
        self.lines.update((item_path, line_of(item)) for item_path, item in items)
        return items


def unknown_key_problem(key: str, valid: Sequence[str]) -> str:
    """'unknown key' with the closest valid key, if any, and the list of valid keys."""
    close = difflib.get_close_matches(key, valid, n=1) or difflib.get_close_matches(key.lower(), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}'{hint} (valid keys: {', '.join(valid)})"


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bounds(minimum: float, maximum: float | None) -> str:
    if maximum is None:
        return f"of at least {minimum:g}"
    return f"from {minimum:g} to {maximum:g}"


def boolean() -> Converter:
    """true/false, yes/no or on/off, in any case."""
    expected = "true or false"

    def convert(node: Node, path: str, reader: Reader) -> bool:
        word = reader.plain(node, path, expected).text.lower()
        if word not in BOOLEANS:
            raise reader.wrong(node, path, expected)
        return BOOLEANS[word]
    return convert


def integer(minimum: int, maximum: int | None = None) -> Converter:
    """A decimal integer from ``minimum`` to ``maximum`` (no upper limit when None); ``1_000`` allowed."""
    expected = f"an integer {_bounds(minimum, maximum)}"

    def convert(node: Node, path: str, reader: Reader) -> int:
        text = reader.plain(node, path, expected).text
        if len(text) > _LONGEST_NUMBER or not _INTEGER.fullmatch(text):
            raise reader.wrong(node, path, expected)
        value = int(text.replace("_", ""))
        if value < minimum or (maximum is not None and value > maximum):
            raise reader.wrong(node, path, expected)
        return value
    return convert


def positive_number(maximum: float | None = None) -> Converter:
    """A number (integer or decimal) greater than 0 and at most ``maximum``, as a float."""
    expected = "a number greater than 0" + (f" and at most {maximum:g}" if maximum is not None else "")

    def convert(node: Node, path: str, reader: Reader) -> float:
        text = reader.plain(node, path, expected).text
        if len(text) > _LONGEST_NUMBER or not _NUMBER.fullmatch(text):
            raise reader.wrong(node, path, expected)
        value = float(text.replace("_", ""))
        if not math.isfinite(value) or value <= 0 or (maximum is not None and value > maximum):
            raise reader.wrong(node, path, expected)
        return value
    return convert


def string(pattern: str | None = None, expected: str = "text", *, allow_empty: bool = False) -> Converter:
    """Text as written (quoted or not), optionally matching ``pattern`` (ASCII classes) in full."""
    compiled = re.compile(pattern, re.ASCII) if pattern else None

    def convert(node: Node, path: str, reader: Reader) -> str:
        scalar = reader.scalar(node, path, expected)
        if scalar.is_null and not (allow_empty and scalar.text == ""):
            raise reader.wrong(node, path, expected)
        if not scalar.text and not allow_empty:
            raise reader.wrong(node, path, expected, " (it must not be empty)")
        if compiled is not None and not compiled.fullmatch(scalar.text):
            raise reader.wrong(node, path, expected)
        return scalar.text
    return convert


def choice(options: Sequence[str]) -> Converter:
    """One of ``options``, matched without regard to case and stored as spelled in ``options``."""
    expected = "one of " + ", ".join(options)
    by_folded = {option.casefold(): option for option in options}

    def convert(node: Node, path: str, reader: Reader) -> str:
        scalar = reader.scalar(node, path, expected)
        option = by_folded.get(scalar.text.casefold())
        if option is None or scalar.is_null:
            close = difflib.get_close_matches(scalar.text.casefold(), list(by_folded), n=1)
            raise reader.wrong(node, path, expected, f"; did you mean '{by_folded[close[0]]}'?" if close else "")
        return option
    return convert


def iso_date() -> Converter:
    """A calendar date written YYYY-MM-DD (quoted or not)."""
    expected = "a date written YYYY-MM-DD"

    def convert(node: Node, path: str, reader: Reader) -> date:
        value = reader.scalar(node, path, expected).text
        try:
            if _DATE.fullmatch(value):
                return date.fromisoformat(value)
        except ValueError as error:
            raise reader.wrong(node, path, expected, f" ({error})") from None
        raise reader.wrong(node, path, expected)
    return convert


def optional(converter: Converter) -> Converter:
    """``converter``, except that null gives None."""
    def convert(node: Node, path: str, reader: Reader) -> Any:
        return None if reader.is_null(node, path) else converter(node, path, reader)
    return convert


def listing(item: Converter, what: str, *, non_empty: bool = False,
            unique_by: Callable[[Any], Any] | None = None) -> Converter:
    """A list of ``what`` as a tuple (a lone value is a list of one; null is empty); optionally unique."""
    expected = f"a list of {what}"

    def convert(node: Node, path: str, reader: Reader) -> tuple[Any, ...]:
        values: list[Any] = []
        first_lines: dict[Any, int] = {}
        for item_path, item_node in reader.items(node, path, expected):
            value = item(item_node, item_path, reader)
            if unique_by is not None:
                key = unique_by(value)
                if key in first_lines:
                    problem = f"{key!r} is listed twice (first at line {first_lines[key]})"
                    raise reader.fail(item_node, item_path, problem)
                first_lines[key] = line_of(item_node)
            values.append(value)
        if non_empty and not values:
            raise reader.fail(node, path, f"expected {expected}, with at least one")
        return tuple(values)
    return convert


def section(settings_class: type, converters: Mapping[str, Converter], ignored: Sequence[str] = ()) -> Converter:
    """A mapping whose keys are the fields of ``settings_class`` (except ``ignored``), built into an instance."""
    names = [item.name for item in fields(settings_class) if item.name not in ignored]
    if list(converters) != names:
        raise RuntimeError(f"{settings_class.__name__}: converters {list(converters)} do not match fields {names}")
    required = [item.name for item in fields(settings_class)
                if item.default is MISSING and item.default_factory is MISSING]

    def convert(node: Node, path: str, reader: Reader) -> Any:
        if reader.is_null(node, path) and not required:
            return settings_class()
        pairs = reader.section(node, path, names)
        values = {key: converters[key](value, child(path, key), reader) for key, value in pairs}
        for name in required:
            if name not in values:
                raise reader.fail(node, path, f"missing key '{name}'")
        return settings_class(**values)
    return convert
