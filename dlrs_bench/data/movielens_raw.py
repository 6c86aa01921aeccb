"""MovieLens ratings as a raw format for the streaming pipeline (ml-1m, ml-20m, ml-25m, ml-latest).

``ml-1m``: ``ratings.dat``, lines ``UserID::MovieID::Rating::Timestamp``, no header.
``ml-20m`` / ``ml-25m`` / ``ml-latest``: ``ratings.csv`` with header ``userId,movieId,rating,timestamp``.
Label: ``rating >= label_threshold`` (4.0 by default; recorded in the manifest). Sparse features:
``user``, ``movie`` (the raw ids, renumbered by the pipeline); no dense features. Rows keep file order.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from dlrs_bench.data.prepare import ParsedChunk
from dlrs_bench.data.textrows import row, split_columns

Variant = Literal["ml-1m", "ml-20m", "ml-25m", "ml-latest"]
CSV_HEADER = "userId,movieId,rating,timestamp"
FIELD_NAMES = ["user", "movie", "rating", "timestamp"]
MAX_RATING = 5.0  # the MovieLens scale: 0.5-5 stars (ml-1m: whole stars 1-5)


class MovieLensFormat:
    """MovieLens ratings: label = rating >= threshold, sparse [user, movie], no dense features."""

    dataset = "movielens"
    default_split = "random"
    dense_names: list[str] = []
    sparse_names = ["user", "movie"]

    def __init__(self, variant: Variant, label_threshold: float = 4.0) -> None:
        if variant not in ("ml-1m", "ml-20m", "ml-25m", "ml-latest"):
            raise ValueError(f"unknown MovieLens variant {variant!r}")
        self.variant = variant
        self.label_threshold = label_threshold
        self.header = variant != "ml-1m"
        self.separator = "::" if variant == "ml-1m" else ","

    def check_header(self, first_line: str) -> str | None:
        """Problem with a file's first line, or None (ml-1m has no header: its first line is data)."""
        if not self.header:
            return None
        got = first_line.rstrip("\r\n").lstrip("\ufeff")
        return None if got == CSV_HEADER else f"expected the ratings.csv header {CSV_HEADER!r}, got {got[:80]!r}"

    def parse(self, lines: list[str], first_line: int) -> ParsedChunk:
        """Lines → labels [n] u8, dense [n, 0] f32, sparse [n, 2] int64 (user, movie); bad lines left out."""
        columns, numbers, bad = split_columns(lines, self.separator, 4, first_line)
        parsed = _columns(columns)
        if parsed is None:  # some value is malformed: check row by row
            keep = []
            for i, line_no in enumerate(numbers):
                problem = _row_problem(row(columns, i))
                (bad.append((line_no, problem)) if problem else keep.append(i))
            bad.sort()
            parsed = _columns([[c[i] for i in keep] for c in columns])
            assert parsed is not None
        sparse, rating = parsed
        labels = (rating >= self.label_threshold).astype(np.uint8)
        return ParsedChunk(labels, np.zeros((len(labels), 0), np.float32), sparse, bad)

    def finish_dense(self, dense: np.ndarray) -> dict[str, Any]:
        """No dense features (``dense`` is [N, 0]); records the variant and the label rule."""
        return {"variant": self.variant, "label": f"rating >= {self.label_threshold:g}",
                "label_threshold": self.label_threshold}


def _columns(columns: list[list[str]]) -> tuple[np.ndarray, np.ndarray] | None:
    """4 columns of n strings → (sparse [n, 2] int64, rating [n] f64), or None if any value is malformed."""
    user, movie, rating, stamp = columns
    try:
        sparse = np.array([user, movie], dtype=np.int64).T.copy()
        ratings = np.array(rating, dtype=np.float64)
        np.array(stamp, dtype=np.int64)
    except (ValueError, OverflowError):
        return None
    if not ((ratings >= 0) & (ratings <= MAX_RATING)).all():  # also rejects nan
        return None
    return sparse, ratings


def _row_problem(parts: list[str]) -> str | None:
    """What is wrong with one 4-field row, or None."""
    for name, v in zip(FIELD_NAMES, parts):
        try:
            if name == "rating":
                if not 0 <= float(v) <= MAX_RATING:
                    return f"rating must be a number from 0 to {MAX_RATING:g}, got {v!r}"
            elif not -(1 << 63) <= int(v) < (1 << 63):
                return f"{name} is out of the int64 range: {v!r}"
        except ValueError:
            return f"{name} must be {'a number' if name == 'rating' else 'an integer'}, got {v!r}"
    return None
