"""YAML loading that remembers the line of every key and value.

``load_yaml(path)`` returns the document as plain Python data plus a map from each
path (tuple of keys and list indexes) to its 1-based line number. Duplicate keys,
which PyYAML would silently collapse, are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dlrs_bench.errors import UserInputError

Path_ = tuple[str | int, ...]


def load_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse ``path``; raise :class:`UserInputError` with ``file:line`` on syntax errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read: {e.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise UserInputError(f"{path}:1: the file is empty")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        context = f" ({e.context} on line {e.context_mark.line + 1})" if e.context and e.context_mark else ""
        raise UserInputError(f"{path}:{line}: YAML syntax error: {e.problem or e}{context}") from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {(): node.start_mark.line + 1}
    _walk(node, (), lines, path)
    return data, lines


def _walk(node: yaml.Node, at: Path_, lines: dict[Path_, int], path: Path) -> None:
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
            _walk(value_node, (*at, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*at, i)] = item.start_mark.line + 1
            _walk(item, (*at, i), lines, path)


def line_of(lines: dict[Path_, int], at: Path_) -> int:
    """The line of ``at``, or of its nearest enclosing path that the document has."""
    while at not in lines:
        at = at[:-1]
    return lines[at]
