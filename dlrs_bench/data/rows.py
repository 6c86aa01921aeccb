"""Row selections over a cache: a contiguous range or an index array, nested without copying data.

A split is a :class:`RowSet` of cache rows; a subset of a split is a :class:`RowSet` of the split's
positions mapped back to cache rows. Reading code asks for positions ``[lo, hi)`` or an array of
positions and gets cache rows back as a ``slice`` (read contiguously) or an int64 array (gathered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: What a read addresses: a contiguous ``slice(start, stop)`` of cache rows or int64 row indexes.
Rows = slice | np.ndarray


@dataclass(frozen=True, eq=False)
class RowSet:
    """Cache rows ``[start, stop)`` or, when ``index`` is given, the rows ``index`` (int64, any order)."""

    start: int = 0
    stop: int = 0
    index: np.ndarray | None = None

    @classmethod
    def of(cls, rows: Rows) -> RowSet:
        if isinstance(rows, slice):
            return cls(rows.start, rows.stop)
        return cls(index=np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else self.stop - self.start

    @property
    def is_range(self) -> bool:
        return self.index is None

    def rows(self, positions: Rows) -> Rows:
        """Cache rows at ``positions`` of this set (a slice of positions keeps ranges contiguous)."""
        if isinstance(positions, slice):
            lo, hi, _ = positions.indices(len(self))
            return slice(self.start + lo, self.start + hi) if self.index is None else self.index[lo:hi]
        return self.start + positions if self.index is None else self.index[positions]

    def subset(self, positions: Rows) -> RowSet:
        """The rows at ``positions`` as a new set."""
        return RowSet.of(self.rows(positions))


class KeyedPermutation:
    """A pseudo-random bijection of ``[0, n)`` computed per position in O(1) memory.

    A 4-round Feistel network over the smallest even power of two ≥ n, keyed by ``seed``, with
    cycle walking for values ≥ n. ``values(lo, hi)`` gives the images of positions ``lo..hi-1``, so
    the first k positions of a 4.4B-row permutation cost k entries, not 4.4B.
    """

    ROUNDS = 4
    MASK64 = (1 << 64) - 1

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        bits = max(2, (max(n - 1, 1)).bit_length())
        self.half = (bits + 1) // 2
        self.half_mask = np.uint64((1 << self.half) - 1)
        keys = np.random.default_rng([seed, 0x5EED]).integers(0, 2**63, self.ROUNDS, dtype=np.uint64)
        self.keys = [np.uint64(k) for k in keys]

    def _round(self, x: np.ndarray, key: np.uint64) -> np.ndarray:
        """A keyed mix of ``x`` (uint64) into ``half`` bits (splitmix64 finaliser)."""
        z = (x + key) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & self.half_mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half)
        left, right = x >> shift, x & self.half_mask
        for key in self.keys:
            left, right = right, left ^ self._round(right, key)
        return (left << shift) | right

    def values(self, lo: int, hi: int) -> np.ndarray:
        """Images (int64) of positions ``[lo, hi)``."""
        with np.errstate(over="ignore"):
            out = self._encrypt(np.arange(lo, hi, dtype=np.uint64))
            outside = out >= np.uint64(self.n)
            while outside.any():  # cycle walking: stays a bijection of [0, n)
                out[outside] = self._encrypt(out[outside])
                outside = out >= np.uint64(self.n)
        return out.astype(np.int64)
