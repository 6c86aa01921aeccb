"""Criteo Kaggle (``train.txt``) and Terabyte (``day_0`` … ``day_23``) raw format.

Row: ``label \\t I1..I13 \\t C1..C26`` — 40 tab-separated fields; I = integer counts (may be
negative), C = 32-bit hashes as 8 hex digits; an empty field is missing. Missing values become 0
(DLRM); categorical hashes are parsed as unsigned 32-bit values into int64.

Dense transforms: ``dlrm`` = log(max(x, 0) + 1) per value; ``torchrec`` = log(x - m + 2) with m
the minimum dense value of the whole input (TorchRec's ``criteo.py``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from dlrs_bench.data.prepare import ParsedChunk
from dlrs_bench.data.textrows import row, split_columns

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]
FIELDS = 1 + len(DENSE) + len(SPARSE)
INTEGER = re.compile(r"-?[0-9]+")

class CriteoFormat:
    """The Criteo TSV layout (Kaggle and Terabyte share it)."""

    dense_names = DENSE
    sparse_names = SPARSE
    header = False

    def __init__(self, dataset: str, dense_transform: Literal["dlrm", "torchrec"] = "dlrm") -> None:
        self.dataset = dataset
        self.default_split = "dlrm-7day" if dataset == "criteo-kaggle" else "last-day"
        self.dense_transform = dense_transform

    def parse(self, lines: list[str], first_line: int) -> ParsedChunk:
        columns, numbers, bad = split_columns(lines, "\t", FIELDS, first_line)
        labels, dense, sparse = _columns(columns)
        if labels is None:  # some value did not parse: find the offending rows one by one
            keep = []
            for i, number in enumerate(numbers):
                problem = _row_problem(row(columns, i))
                (bad.append((number, problem)) if problem else keep.append(i))
            bad.sort()
            labels, dense, sparse = _columns([[c[i] for i in keep] for c in columns])
        if self.dense_transform == "dlrm":
            np.log1p(np.maximum(dense, 0), out=dense)
        return ParsedChunk(labels, dense, sparse, bad)

    def finish_dense(self, dense: np.ndarray) -> dict[str, Any]:
        if self.dense_transform == "dlrm":
            return {"dense_transform": "dlrm: log(max(x, 0) + 1), missing = 0"}
        low = float(min(dense[lo : lo + (1 << 20)].min() for lo in range(0, len(dense), 1 << 20)))
        for lo in range(0, len(dense), 1 << 20):
            block = dense[lo : lo + (1 << 20)]
            block -= low - 2
            np.log(block, out=block)
        return {"dense_transform": "torchrec: log(x - min + 2), missing = 0", "dense_min": low}


def _columns(columns: list[list[str]]) -> tuple[Any, Any, Any]:
    """Vectorised parse of the 40 columns of well-formed rows; (None, None, None) if any value is
    malformed."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros((0, len(DENSE)), np.float32), np.zeros((0, len(SPARSE)), np.int64)
    try:
        labels = np.array(columns[0], dtype=np.int64)
        dense = np.array([[v or "0" for v in col] for col in columns[1 : 1 + len(DENSE)]], dtype=np.int64).T
        hashes = [[v or "00000000" for v in col] for col in columns[1 + len(DENSE) :]]
        if any(set(map(len, col)) != {8} for col in hashes):
            return None, None, None
        raw = bytes.fromhex("".join("".join(col) for col in hashes))
        sparse = np.frombuffer(raw, dtype=">u4").reshape(len(SPARSE), n).T.astype(np.int64)
    except (ValueError, OverflowError):
        return None, None, None
    if ((labels != 0) & (labels != 1)).any():
        return None, None, None
    return labels.astype(np.uint8), dense.astype(np.float32), sparse


def _row_problem(parts: list[str]) -> str | None:
    """What is wrong with one 40-field row, or None."""
    if parts[0] not in ("0", "1"):
        return f"label must be 0 or 1, got {parts[0]!r}"
    for name, v in zip(DENSE, parts[1 : 1 + len(DENSE)]):
        if v and (not INTEGER.fullmatch(v) or not -(2**63) <= int(v) < 2**63):
            return f"{name} must be a 64-bit integer, got {v!r}"
    for name, v in zip(SPARSE, parts[1 + len(DENSE) :]):
        if v and (len(v) != 8 or any(c not in "0123456789abcdefABCDEF" for c in v)):
            return f"{name} must be 8 hex digits, got {v!r}"
    return None
