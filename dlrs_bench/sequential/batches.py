"""Retrieval batches of a sequence split: padded item/time matrices read with vectorised gathers.

Each batch reads exactly the events it needs from the memory-mapped cache (:func:`read_rows`): short
rows with one position array built from the samples' (start, length) pairs (``arange`` + ``repeat``),
one ``np.take`` per column and one masked scatter into the padded matrix; long rows (S in the
thousands) with one contiguous slice copy per row, which beats any gather there (measured). Never a
Python loop over events. Padding is 0 (item 0 is the padding row); sequences are left-aligned, S is the
longest in the batch (<= ``max_len``).

Training (SASRec/HSTU): one sample per user prefix; its last ``max_len + 1`` events give the inputs
(all but the last) and ``targets`` (the next item at every input position). Evaluation: the last
``max_len`` history events are the inputs, ``target`` is the held-out item, ``seen`` the whole
history's items (for excluding seen items when ranking the full catalogue; it holds the target
itself where a user repeats an item).

Order and sharding: with ``shuffle`` the samples are permuted by ``seed``; global batches of
``batch_size`` samples are cut in that order and rank r of ``world`` takes samples r, r + world, ...
of each. A training global batch with fewer samples than ``world`` is dropped (every rank needs one);
evaluation keeps every sample (a rank's share of the last batch may be empty).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from dlrs_bench.sequential.splits import SequenceSplit

#: Mean events per row from which rows are copied one by one instead of gathered (measured crossover).
ROW_COPY_EVENTS = 256


@dataclass
class SeqBatch:
    """B samples padded to S positions: ``items``, ``timestamps`` int64 [B, S] (0 past ``lengths``),
    ``lengths`` int64 [B], ``users`` int64 [B] (user rows), ``next_time`` int64 [B] (the time of the item
    the last position predicts: the last target in training, the held-out target in evaluation);
    training: ``targets`` int64 [B, S] (0 where none); evaluation: ``target`` int64 [B] and
    ``seen_values`` / ``seen_offsets`` (jagged history items, int64 [total] / [B + 1])."""

    items: torch.Tensor
    timestamps: torch.Tensor
    lengths: torch.Tensor
    users: torch.Tensor
    next_time: torch.Tensor
    targets: torch.Tensor | None = None
    target: torch.Tensor | None = None
    seen_values: torch.Tensor | None = None
    seen_offsets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def _map(self, fn) -> SeqBatch:
        return replace(self, **{f.name: fn(v) for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SeqBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SeqBatch:
        return self._map(lambda t: t.pin_memory())


def sample_order(n: int, seed: int, shuffle: bool) -> np.ndarray:
    """The order in which the ``n`` samples of a split are read: a permutation by ``seed``, or in order."""
    return np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)


def rank_batches(n: int, batch_size: int, seed: int, rank: int, world: int, shuffle: bool,
                 training: bool) -> Iterator[np.ndarray]:
    """Rank ``rank``'s sample indexes of each global batch (see the module docstring)."""
    order = sample_order(n, seed, shuffle)
    for lo in range(0, n, batch_size):
        batch = order[lo : lo + batch_size]
        if training and len(batch) < world:
            return
        yield batch[rank::world]


def iter_retrieval_batches(split: SequenceSplit, batch_size: int, max_len: int, seed: int, rank: int = 0,
                           world: int = 1, shuffle: bool = True) -> Iterator[SeqBatch]:
    """One pass over ``split`` as :class:`SeqBatch` es (training or evaluation by ``split.training``)."""
    if not 0 <= rank < world or batch_size < 1 or max_len < 1:
        raise ValueError(f"need 0 <= rank < world, batch_size >= 1, max_len >= 1; got rank {rank}, world {world}, "
                         f"batch_size {batch_size}, max_len {max_len}")
    make = train_batch if split.training else eval_batch
    for samples in rank_batches(len(split), batch_size, seed, rank, world, shuffle, split.training):
        yield make(split, samples, max_len)


def read_rows(columns: list[tuple[np.ndarray, int]], starts: np.ndarray, lengths: np.ndarray,
              width: int) -> list[np.ndarray]:
    """For each (column, shift): ``column[starts[b] + shift : starts[b] + shift + lengths[b]]`` of every sample
    b, left-aligned in a zero-padded int64 matrix ``[B, width]`` (``lengths <= width``).

    Short rows are gathered at once (one position array, one ``np.take`` and one masked scatter per
    column); rows of :data:`ROW_COPY_EVENTS` events or more on average are copied row by row (one slice
    copy per row and column: a memcpy, faster than any gather once rows are long; see
    benchmarks/test_seq_batches.py)."""
    outs = [np.zeros((len(starts), width), np.int64) for _ in columns]
    if len(starts) and lengths.mean() >= ROW_COPY_EVENTS:
        firsts = [(starts + shift).tolist() for _, shift in columns]
        for row, n in enumerate(lengths.tolist()):  # row by row: a row's events are read while in cache
            for out, (column, _), first in zip(outs, columns, firsts):
                out[row, :n] = column[first[row] : first[row] + n]
        return outs
    positions = jagged_positions(starts, lengths)
    filled = np.arange(width) < lengths[:, None]
    for out, (column, shift) in zip(outs, columns):
        out[filled] = np.take(column, positions + shift if shift else positions)
    return outs


def jagged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions ``starts[b] .. starts[b] + lengths[b] - 1`` of every sample b, concatenated (int64)."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)


def read_jagged(column: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``column[starts[b] : starts[b] + lengths[b]]`` of every sample b, concatenated (int64); row by row
    for long rows, as :func:`read_rows`."""
    if len(starts) and lengths.mean() >= ROW_COPY_EVENTS:
        return np.concatenate([column[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist())]).astype(np.int64)
    return np.take(column, jagged_positions(starts, lengths)).astype(np.int64)


def _tensors(**arrays: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in arrays.items()}


def train_batch(split: SequenceSplit, samples: np.ndarray, max_len: int) -> SeqBatch:
    """Training samples ``samples``: the last ``max_len + 1`` events of each prefix, inputs and targets."""
    cache, stops = split.cache, split.positions[samples]
    begins = np.maximum(split.starts(samples), stops - (max_len + 1))
    lengths = stops - begins - 1  # >= 1: inputs are all events but the last, targets all but the first
    width = int(lengths.max()) if len(lengths) else 0
    inputs, times, targets = read_rows([(cache.items, 0), (cache.timestamps, 0), (cache.items, 1)], begins, lengths,
                                       width)
    return SeqBatch(**_tensors(items=inputs, timestamps=times, lengths=lengths, users=split.users[samples],
                               next_time=np.take(cache.timestamps, stops - 1), targets=targets))


def eval_batch(split: SequenceSplit, samples: np.ndarray, max_len: int) -> SeqBatch:
    """Evaluation samples ``samples``: the last ``max_len`` history events, the target and every seen item."""
    cache, targets = split.cache, split.positions[samples]
    starts = split.starts(samples)
    begins = np.maximum(starts, targets - max_len)
    lengths = targets - begins
    items, times = read_rows([(cache.items, 0), (cache.timestamps, 0)], begins, lengths,
                             int(lengths.max()) if len(lengths) else 0)
    seen = targets - starts
    return SeqBatch(**_tensors(
        items=items, timestamps=times, lengths=lengths, users=split.users[samples],
        next_time=np.take(cache.timestamps, targets), target=np.take(cache.items, targets),
        seen_values=read_jagged(cache.items, starts, seen),
        seen_offsets=np.concatenate([[0], np.cumsum(seen)])))
