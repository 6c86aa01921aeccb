"""Row scaling (seed 003's V scheme): tables sized at a multiple of the vocabulary, ids hashed in."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlrs_bench.compression.base import TableAccount
from dlrs_bench.compression.hashing import IdHasher
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable

ROW_HASH_SEED = 1_000_003


def scaled_features(features: list[SparseFeature], rows: float) -> list[SparseFeature]:
    """The features with ``ceil(rows * n)`` rows each."""
    return [SparseFeature(f.name, max(1, math.ceil(f.cardinality * rows)), f.multi_hot) for f in features]


class RowScaledEmbedding(nn.Module):
    """Universal-hashes every id into tables of ``rows x`` the vocabulary, then runs ``inner``
    (any compressor built over the scaled tables); collisions fall as ``rows`` grows.

    Args:
        inner: embedding module over ``scaled`` features.
        scaled: the features with their scaled row counts.
    """

    def __init__(self, inner: nn.Module, scaled: list[SparseFeature], device: torch.device) -> None:
        super().__init__()
        self.inner = inner
        keys = [f.name for f in scaled]
        self.hasher = IdHasher(keys, [f.cardinality for f in scaled], True, ROW_HASH_SEED,
                               [False] * len(scaled), device)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.inner(self.hasher(features))

    def table_accounts(self) -> list[TableAccount]:
        return self.inner.table_accounts()

    def init_tables(self) -> list[InitTable]:
        """The inner module's tables, whose rows are hashed ids (no padding row)."""
        return [replace(t, ids_are_rows=False) for t in self.inner.init_tables()]

    def sparse_parameters(self) -> list[nn.Parameter]:
        fn = getattr(self.inner, "sparse_parameters", None)
        return list(fn()) if fn else []
