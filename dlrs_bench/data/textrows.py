"""Helpers shared by the delimited-text raw formats (Avazu, MovieLens)."""

from __future__ import annotations

import hashlib

#: Raw ids from :func:`string_id` lie in [HASH_BASE, 2^63); formats keep their other raw values below it.
HASH_BASE = 1 << 62


def split_columns(lines: list[str], sep: str, fields: int,
                  first_line: int) -> tuple[list[list[str]], list[int], list[tuple[int, str]]]:
    """Split lines into ``fields`` columns of strings (one list per field, n values each).

    Returns (columns, line numbers of the n kept rows, bad = [(line, problem)] for lines with another
    field count). One join and one split for the whole chunk: much faster than a split per line.
    """
    numbers, bad, good = [], [], []
    for i, line in enumerate(lines):
        count = line.count(sep) + 1
        if count == fields:
            good.append(line.rstrip("\r\n"))
            numbers.append(first_line + i)
        else:
            bad.append((first_line + i, f"expected {fields} {sep!r}-separated fields, got {count}"))
    flat = sep.join(good).split(sep) if good else []
    return [flat[j::fields] for j in range(fields)], numbers, bad


def row(columns: list[list[str]], i: int) -> list[str]:
    """Row ``i`` of ``columns`` (for the slow per-row checks)."""
    return [c[i] for c in columns]


def string_id(s: str) -> int:
    """A stable raw id for any string, without shared state: 62 bits of BLAKE2b + HASH_BASE."""
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 2 | HASH_BASE
