"""YAML loading that remembers the line of every key and value.

``load_yaml(path)`` returns the document as plain Python data plus a map from each
path (tuple of keys and list indexes) to its 1-based line number. Duplicate keys,
which PyYAML would silently collapse, are errors, and so is a list or a mapping as a key (``? [a, b]``);
with ``text_keys`` (suite files) every key must be text: ``true:``, ``3:`` or ``~:`` is an error at its
line, not a key that no field can match. Whatever the file holds, loading ends in
the document or a ``file:line`` error, within limits: :data:`MAX_BYTES` of UTF-8 text,
:data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` values once aliases are expanded
(so an alias bomb or a self-referencing alias is refused, not expanded), and integers that fit
in 64 bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from dlrs_bench.errors import UserInputError

Path_ = tuple[str | int, ...]
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000

_TAG = "tag:yaml.org,2002:"
#: What a key of each YAML type is, in messages.
_KINDS = {"seq": "a list", "map": "a mapping", "set": "a set", "omap": "an ordered mapping", "pairs": "a list of pairs",
          "bool": "a boolean", "int": "a number", "float": "a number", "null": "null", "timestamp": "a date",
          "binary": "binary data"}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader; a value that its constructors cannot make (a 13th month, ``0x_``) is a
    YAML error at the value's line instead of a bare ``ValueError``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as e:
            tag = node.tag.removeprefix(_TAG)
            shown = repr(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} is not a valid {tag} ({e})", node.start_mark) from None


def load_yaml(path: Path, text_keys: bool = False) -> tuple[Any, dict[Path_, int]]:
    """Parse ``path``; raise :class:`UserInputError` with ``file:line`` on syntax errors, and on a key that
    is not text where ``text_keys``."""
    text = _read_text(path)
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise UserInputError(f"{path}:1: the file is empty")
        lines: dict[Path_, int] = {(): node.start_mark.line + 1}
        _Walk(path, loader, text_keys, lines).node(node, ())  # before constructing: refuses alias bombs and cycles
        data = loader.construct_document(node)
        _check_integers(data, (), lines, path)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        context = f" ({e.context} on line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise UserInputError(f"{path}:{line}: YAML syntax error: {e.problem or e}{context}") from None
    except yaml.reader.ReaderError as e:  # control characters: the reader gives a character position
        line = text.count("\n", 0, e.position) + 1
        raise UserInputError(f"{path}:{line}: character #x{e.character:04x} is not allowed in YAML "
                             f"({e.reason})") from None
    except RecursionError:  # nesting too deep for the parser itself: where its reader had got to
        line = loader.line + 1 if loader is not None else 1
        raise UserInputError(f"{path}:{line}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``, at most :data:`MAX_BYTES`; errors name the line where it goes wrong."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        line = raw.count(b"\n", 0, MAX_BYTES) + 1
        raise UserInputError(f"{path}:{line}: the file passes {MAX_BYTES:,} bytes on this line; a suite file may "
                             f"hold at most {MAX_BYTES:,} ({path.stat().st_size:,} here)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserInputError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {e.reason})") from None


class _Walk:
    """One pass over the composed document (before it is constructed): the line of every key and
    item, ``visited`` counting the values seen with aliases expanded."""

    def __init__(self, path: Path, loader: _Loader, text_keys: bool, lines: dict[Path_, int]) -> None:
        self.path, self.loader, self.text_keys, self.lines = path, loader, text_keys, lines
        self.visited = 0

    def node(self, node: yaml.Node, at: Path_) -> None:
        """Record the lines under ``node``, refusing duplicate or bad keys and documents past the
        depth or size limits."""
        self.visited += 1
        line = node.start_mark.line + 1
        if len(at) > MAX_DEPTH:
            raise UserInputError(f"{self.path}:{line}: nested deeper than {MAX_DEPTH} levels (or an alias that "
                                 "contains itself)")
        if self.visited > MAX_NODES:
            raise UserInputError(f"{self.path}:{line}: the document expands to more than {MAX_NODES:,} values "
                                 "(YAML aliases repeated inside one another?)")
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = self.key(key_node, at)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise UserInputError(f"{self.path}:{line}: {'.'.join(map(str, (*at, key)))}: duplicate key "
                                         f"(first defined on line {seen[key]})")
                seen[key] = line
                self.lines[(*at, key)] = line
                self.node(value_node, (*at, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*at, i)] = item.start_mark.line + 1
                self.node(item, (*at, i))

    def key(self, node: yaml.Node, at: Path_) -> Any:
        """The key ``node`` as the constructed mapping holds it. A list or a mapping (no mapping can hold
        one as a key), or with ``text_keys`` anything but text, is an error at the key's line."""
        tag = node.tag.removeprefix(_TAG)
        if tag in ("str", "merge"):  # merge: the ``<<`` of a YAML merge key
            return node.value
        if isinstance(node, yaml.ScalarNode) and not self.text_keys:
            return self.loader.construct_object(node)
        written = " ".join(self.loader.buffer[node.start_mark.index:node.end_mark.index].split())
        written = written if len(written) <= 40 else written[:37] + "..."
        what = _KINDS.get(tag, f"tagged {node.tag}")
        hint = f' (quote it to mean the text: "{written}":)' if isinstance(node, yaml.ScalarNode) else ""
        must = "text" if self.text_keys else "a single value"
        raise UserInputError(f"{self.path}:{node.start_mark.line + 1}: {'.'.join(map(str, at)) or '(top)'}: "
                             f"the key {written} is {what}; a key must be {must}{hint}")


def _check_integers(data: Any, at: Path_, lines: dict[Path_, int], path: Path) -> None:
    """Refuse integers that no 64-bit field can hold (|x| >= 2^63), every one of them, with its line."""
    found = [f"{path}:{line_of(lines, where)}: {'.'.join(map(str, where)) or '(top)'}: {value} does not fit in 64 "
             "bits" for where, value in _integers(data, at) if abs(value) >= 2**63]
    if found:
        raise UserInputError(found[0], found)


def _integers(data: Any, at: Path_) -> Iterator[tuple[Path_, int]]:
    """(path, value) of every integer (not bool) in ``data``."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _integers(value, (*at, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _integers(value, (*at, i))
    elif isinstance(data, int) and not isinstance(data, bool):
        yield at, data


def line_of(lines: dict[Path_, int], at: Path_) -> int:
    """The line of ``at``, or of its nearest enclosing path that the document has."""
    while at not in lines:
        at = at[:-1]
    return lines[at]
