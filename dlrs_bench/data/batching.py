"""Turning a :class:`CTRSplit` into TorchRec ``Batch`` objects (dense, KJT, labels)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import CTRSplit


def make_batch(split: CTRSplit, rows: torch.Tensor, keys: list[str]) -> Batch:
    """The rows ``rows`` of ``split`` as one TorchRec batch.

    Returns a ``Batch`` with ``dense_features`` ``[B, num_dense]``, ``sparse_features`` a
    ``KeyedJaggedTensor`` over ``keys`` (lengths ``[len(keys) * B]``) and ``labels`` ``[B]``.
    """
    values, lengths = [], []
    for key in keys:
        jagged = split.sparse[key]
        if jagged.is_single:
            values.append(jagged.values[rows])
            lengths.append(torch.ones(len(rows), dtype=torch.int32))
        else:
            part = jagged.take(rows)
            values.append(part.values)
            lengths.append((part.offsets[1:] - part.offsets[:-1]).to(torch.int32))
    kjt = KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))
    return Batch(dense_features=split.dense[rows], sparse_features=kjt, labels=split.labels[rows])


def iter_batches(
    split: CTRSplit,
    batch_size: int,
    keys: list[str],
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches over one pass of ``split``: shuffled when ``generator`` is given, else in order.

    The last batch may be smaller than ``batch_size``.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for begin in range(0, n, batch_size):
        yield make_batch(split, order[begin : begin + batch_size], keys)
