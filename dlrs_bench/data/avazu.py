"""Avazu CTR raw format (``train.csv``, comma-separated, with a header line).

Row: ``id,click,hour,C1,banner_pos,site_id,...,C21`` (24 fields, REFERENCE §1). As in BARS x4:
``id`` is dropped, ``click`` is the label, and ``hour`` (YYMMDDHH) becomes three categorical
features: hour_of_day (0-23), weekday (0 = Monday … 6, of the date 20YY-MM-DD) and weekend (0/1).
The other 21 columns are categorical. There are no dense features.

Categorical values are mapped to int64 without shared state, as a pure function of the string
(so a value gets the same raw id in every chunk and worker; the pipeline renumbers afterwards):
exactly 8 hex digits (the hashed columns, e.g. ``site_id``) → ``int(s, 16)``, decimal integers
(the other columns, read like Python ``int``) → their value, anything else → a 63-bit BLAKE2b
hash in [2^62, 2^63) (``textrows.string_id``), so it cannot collide with the first two ranges.
Fields are split on commas (the Avazu files have no quoting).
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

from dlrs_bench.data.prepare import ParsedChunk
from dlrs_bench.data.textrows import HASH_BASE, split_columns, string_id

HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
          "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")
COLUMNS = HEADER.split(",")
FIELDS = len(COLUMNS)  # 24
CATEGORICAL = COLUMNS[3:]  # 21 columns kept as they are
HEX_COLUMNS = frozenset({"site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
                         "device_id", "device_ip", "device_model"})
SPARSE = ["hour_of_day", "weekday", "weekend", *CATEGORICAL]  # 24 features
_INT_LIMIT = HASH_BASE  # integers at or beyond ±2^62 are hashed instead
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class AvazuFormat:
    """The Avazu train CSV: label = click, 24 sparse features, no dense ones."""

    dataset = "avazu"
    default_split = "random"
    dense_names: list[str] = []
    sparse_names = SPARSE
    header = True

    def check_header(self, first_line: str) -> str | None:
        """Problem with a file's first line (the header), or None if it is the Avazu train header."""
        got = first_line.rstrip("\r\n").lstrip("\ufeff")
        if got == HEADER:
            return None
        if got.split(",")[:2] == ["id", "hour"]:
            return "this is the Avazu test file (no 'click' column); a labelled train file is needed"
        return f"expected the Avazu header {HEADER[:40]!r}…, got {got[:80]!r}"

    def parse(self, lines: list[str], first_line: int) -> ParsedChunk:
        """Lines → labels [n] u8, dense [n, 0] f32, sparse [n, 24] int64 raw values; bad lines left out."""
        columns, numbers, bad = split_columns(lines, ",", FIELDS, first_line)
        labels, hours = _labels(columns[1]), _hour_features(columns[2])
        if labels is None or hours is None:  # some label or hour is malformed: check row by row
            keep = []
            for i, line_no in enumerate(numbers):
                problem = _row_problem(columns[1][i], columns[2][i])
                (bad.append((line_no, problem)) if problem else keep.append(i))
            bad.sort()
            columns = [[c[i] for i in keep] for c in columns]
            labels, hours = _labels(columns[1]), _hour_features(columns[2])
            assert labels is not None and hours is not None
        sparse = np.empty((len(labels), len(SPARSE)), dtype=np.int64)
        sparse[:, :3] = hours
        for j, name in enumerate(CATEGORICAL):
            sparse[:, 3 + j] = _categories(columns[3 + j], hex8=name in HEX_COLUMNS)
        return ParsedChunk(labels, np.zeros((len(labels), 0), np.float32), sparse, bad)

    def finish_dense(self, dense: np.ndarray) -> dict[str, Any]:
        """No dense features (``dense`` is [N, 0]): nothing to transform, nothing to record."""
        return {}


def category_id(s: str, hex8: bool) -> int:
    """Raw int64 id of one categorical value (see the module docstring)."""
    if hex8:
        return int(s, 16) if len(s) == 8 and set(s) <= _HEX_DIGITS else string_id(s)
    try:
        v = int(s)
    except ValueError:
        return string_id(s)
    return v if -_INT_LIMIT < v < _INT_LIMIT else string_id(s)


def _categories(column: list[str], hex8: bool) -> np.ndarray:
    """One categorical column → [n] int64 raw ids; vectorised, value by value if it must be."""
    n = len(column)
    if hex8:
        joined = "".join(column)
        if len(joined) == 8 * n and joined.isascii() and (n == 0 or set(map(len, column)) == {8}):
            try:
                raw = bytes.fromhex(joined)
                if len(raw) == 4 * n:  # fromhex skips whitespace: a short result means a non-hex value
                    return np.frombuffer(raw, dtype=">u4").astype(np.int64)
            except ValueError:
                pass
    else:
        try:
            values = np.array(column, dtype=np.int64)  # parses like Python int()
            if n == 0 or (values.max() < _INT_LIMIT and values.min() > -_INT_LIMIT):
                return values
        except (ValueError, OverflowError):
            pass
    return np.array([category_id(s, hex8) for s in column], dtype=np.int64)


def _labels(column: list[str]) -> np.ndarray | None:
    """``click`` column → [n] u8, or None if any value is not 0/1."""
    raw = "".join(column).encode("utf-8")
    if len(raw) != len(column) or (column and set(map(len, column)) != {1}):
        return None
    labels = np.frombuffer(raw, dtype=np.uint8) - ord("0")
    return labels if (labels <= 1).all() else None


def _hour_features(column: list[str]) -> np.ndarray | None:
    """``hour`` (YYMMDDHH) column → [n, 3] int64 (hour_of_day, weekday, weekend), or None if any is bad."""
    n = len(column)
    joined = "".join(column)
    if n == 0:
        return np.zeros((0, 3), np.int64)
    if len(joined) != 8 * n or not (joined.isascii() and joined.isdigit()) or set(map(len, column)) != {8}:
        return None
    d = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(n, 8).astype(np.int64) - ord("0")
    yy, mm, dd, hh = (10 * d[:, k] + d[:, k + 1] for k in (0, 2, 4, 6))
    month = ((yy + 30) * 12 + mm - 1).astype("M8[M]")  # months since 1970-01, year 20YY
    day = month.astype("M8[D]") + (dd - 1)
    if ((mm < 1) | (mm > 12) | (dd < 1) | (hh > 23) | (day.astype("M8[M]") != month)).any():
        return None
    weekday = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return np.stack([hh, weekday, (weekday >= 5).astype(np.int64)], axis=1)


def _row_problem(click: str, hour: str) -> str | None:
    """What is wrong with one row's label or hour, or None."""
    if click not in ("0", "1"):
        return f"click must be 0 or 1, got {click!r}"
    if len(hour) != 8 or not (hour.isascii() and hour.isdigit()):
        return f"hour must be 8 digits YYMMDDHH, got {hour!r}"
    try:
        datetime.date(2000 + int(hour[:2]), int(hour[2:4]), int(hour[4:6]))
    except ValueError as e:
        return f"hour {hour!r} is not a valid date: {e}"
    if int(hour[6:]) > 23:
        return f"hour {hour!r}: hour of day must be 00-23"
    return None
