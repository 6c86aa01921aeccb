"""YAML loading that remembers the line of every key and value.

``load_yaml(path)`` returns the document as plain Python data plus a map from each
path (tuple of keys and list indexes) to its 1-based line number. Duplicate keys,
which PyYAML would silently collapse, are errors. Whatever the file holds, loading ends in
the document or a ``file:line`` error, within limits: :data:`MAX_BYTES` of UTF-8 text,
:data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` values once aliases are expanded
(so an alias bomb or a self-referencing alias is refused, not expanded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dlrs_bench.errors import UserInputError

Path_ = tuple[str | int, ...]
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


def load_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse ``path``; raise :class:`UserInputError` with ``file:line`` on syntax errors."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserInputError(f"{path}: {size:,} bytes; a YAML file here may hold at most {MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise UserInputError(f"{path}:1: the file is empty")
        lines: dict[Path_, int] = {(): node.start_mark.line + 1}
        _walk(node, (), lines, path, [0])  # before constructing: refuses alias bombs and cycles
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        context = f" ({e.context} on line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise UserInputError(f"{path}:{line}: YAML syntax error: {e.problem or e}{context}") from None
    except yaml.YAMLError as e:  # the reader's errors (control characters) carry no mark
        raise UserInputError(f"{path}: YAML error: {e}") from None
    except RecursionError:
        raise UserInputError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _walk(node: yaml.Node, at: Path_, lines: dict[Path_, int], path: Path, visited: list[int]) -> None:
    """Record the line of every key and item under ``node`` (``visited[0]`` counts the values seen,
    aliases expanded), refusing duplicate keys and documents past the depth or size limits."""
    visited[0] += 1
    line = node.start_mark.line + 1
    if len(at) > MAX_DEPTH:
        raise UserInputError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels (or an alias that contains itself)")
    if visited[0] > MAX_NODES:
        raise UserInputError(f"{path}:{line}: the document expands to more than {MAX_NODES:,} values "
                             "(YAML aliases repeated inside one another?)")
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserInputError(
                    f"{path}:{line}: {'.'.join(map(str, (*at, key)))}: duplicate key "
                    f"(first defined on line {seen[key]})"
                )
            seen[key] = line
            lines[(*at, key)] = line
            _walk(value_node, (*at, key), lines, path, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*at, i)] = item.start_mark.line + 1
            _walk(item, (*at, i), lines, path, visited)


def line_of(lines: dict[Path_, int], at: Path_) -> int:
    """The line of ``at``, or of its nearest enclosing path that the document has."""
    while at not in lines:
        at = at[:-1]
    return lines[at]
