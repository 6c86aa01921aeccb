"""The order in which training reads a split: the shuffle protocols, in bounded memory.

- ``permutation``: a uniformly random permutation of the split every epoch (``torch.randperm``;
  8 bytes of index per row, so only for splits up to :data:`PERMUTATION_MAX_ROWS` rows).
- ``blocks``: a bounded-memory read-time shuffle: the split is cut into blocks of ``block_rows``
  consecutive rows, the blocks are visited in a random order, and the rows of each window of
  ``window_rows`` (whole blocks) are permuted together. Memory: one entry per block plus one
  window, whatever the split size.
- ``none``: in order, every epoch the same (MLPerf: the data were shuffled once when prepared).
- ``auto`` (the default) picks ``none`` for a cache shuffled when prepared, ``permutation`` up to
  :data:`AUTO_PERMUTATION_ROWS` rows, else ``blocks``.

Each order yields the positions of one global batch after another: a ``slice`` where they are
consecutive (read with one contiguous read per file), else an int64 array.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from dlrs_bench.config.schema import Shuffle
from dlrs_bench.data.rows import Rows
from dlrs_bench.errors import UserInputError

#: A permutation index above this many rows (2 GiB of int64) is refused.
PERMUTATION_MAX_ROWS = 1 << 28
#: ``auto`` uses a full permutation up to this many train rows (64 MiB of index).
AUTO_PERMUTATION_ROWS = 1 << 23


@dataclass(frozen=True)
class ReadOrder:
    """A resolved shuffle protocol, recorded with results as :meth:`describe`."""

    protocol: Literal["permutation", "blocks", "none"]
    block_rows: int = 4096
    window_rows: int = 1 << 20

    @classmethod
    def resolve(cls, shuffle: Shuffle, rows: int, shuffled_when_prepared: bool, block_rows: int,
                window_rows: int) -> ReadOrder:
        """The protocol for a split of ``rows`` rows (``auto`` decided here)."""
        if shuffle == "auto":
            shuffle = ("none" if shuffled_when_prepared else
                       "permutation" if rows <= AUTO_PERMUTATION_ROWS else "blocks")
        if shuffle == "permutation" and rows > PERMUTATION_MAX_ROWS:
            raise UserInputError(
                f"shuffle 'permutation' of {rows:,} train rows needs a {8 * rows / 2**30:.1f} GiB index (at most "
                f"{PERMUTATION_MAX_ROWS:,} rows); use shuffle 'blocks', or a cache shuffled when prepared "
                "(`dlrs-bench data prepare ... --shuffle-seed S`) with shuffle 'none'")
        return cls(shuffle, block_rows, max(block_rows, window_rows // block_rows * block_rows))

    def describe(self) -> dict[str, object]:
        if self.protocol == "blocks":
            return {"protocol": "blocks", "block_rows": self.block_rows, "window_rows": self.window_rows}
        return {"protocol": self.protocol}

    def batches(self, n: int, batch_size: int, seed: int | None) -> Iterator[Rows]:
        """Positions of each global batch of one pass over ``n`` rows: in order when ``seed`` is None
        (evaluation), else shuffled by this protocol with ``seed``."""
        if seed is None or self.protocol == "none":
            for lo in range(0, n, batch_size):
                yield slice(lo, min(lo + batch_size, n))
        elif self.protocol == "permutation":
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
            for lo in range(0, n, batch_size):
                yield order[lo : lo + batch_size]
        else:
            yield from _rebatch(self._windows(n, seed), batch_size)

    def _windows(self, n: int, seed: int) -> Iterator[np.ndarray]:
        """Shuffled windows: blocks in a random order, rows permuted within each window."""
        rng = np.random.default_rng([seed, 0xB10C])
        blocks = rng.permutation(-(-n // self.block_rows))
        per_window = self.window_rows // self.block_rows
        offsets = np.arange(self.block_rows, dtype=np.int64)
        for lo in range(0, len(blocks), per_window):
            starts = blocks[lo : lo + per_window].astype(np.int64) * self.block_rows
            rows = (starts[:, None] + offsets).reshape(-1)
            rows = rows[rows < n]  # the last block may be short
            yield rows[rng.permutation(len(rows))]


def _rebatch(chunks: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """``chunks`` of positions regrouped into batches of ``batch_size`` (the last may be smaller)."""
    pending: list[np.ndarray] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held < batch_size:
            continue
        joined = np.concatenate(pending)
        full = len(joined) // batch_size * batch_size
        for lo in range(0, full, batch_size):
            yield joined[lo : lo + batch_size]
        pending, held = [joined[full:]], len(joined) - full
    if held:
        yield np.concatenate(pending)
