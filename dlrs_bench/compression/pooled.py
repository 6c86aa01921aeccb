"""A base for compressors that compute one vector per id and pool bags themselves.

Subclasses implement :meth:`PooledEmbedding.embed` (ids of all tables → ``[nnz, d]``); this
class handles the KJT, sum / mean pooling and the KeyedTensor output, so every method
pools exactly like TorchRec's EmbeddingBagCollection. :class:`PerTableEmbedding` is the
common case of one encoder module per table (compressed, or a full table under the
``threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from dlrs_bench.compression.base import TableAccount, check_keys, tables
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable


class PooledEmbedding(nn.Module):
    """KJT with F keys in, KeyedTensor ``[B, F * d]`` out; bags pooled by ``pooling``.

    Args:
        features: the full tables' features, in KJT key order.
        dim: embedding dimension d.
        pooling: ``"sum"`` or ``"mean"`` (an empty bag pools to zeros).
    """

    def __init__(self, features: list[SparseFeature], dim: int, pooling: str) -> None:
        super().__init__()
        self.features = features
        self.keys = [f.name for f in features]
        self.dim = dim
        self.mean = pooling == "mean"

    def embed(self, values: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Per-id vectors ``[nnz, d]`` of ``values`` (int64 ``[nnz]``, table t's ids in the
        ``sizes[t]`` consecutive entries after those of tables < t)."""
        raise NotImplementedError

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        check_keys(features, self.keys)
        lengths = features.lengths().to(torch.int64)
        num_tables = len(self.keys)
        batch = lengths.numel() // num_tables
        sizes = features.length_per_key()  # cached by make_batch: no device sync
        vectors = self.embed(features.values(), sizes)
        bags = torch.repeat_interleave(torch.arange(num_tables * batch, device=lengths.device), lengths,
                                       output_size=features.values().numel())
        pooled = torch.zeros(num_tables * batch, self.dim, device=vectors.device, dtype=vectors.dtype)
        pooled = pooled.index_add(0, bags, vectors)
        if self.mean:
            pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype)
        out = pooled.view(num_tables, batch, self.dim).transpose(0, 1).reshape(batch, num_tables * self.dim)
        return KeyedTensor(keys=self.keys, length_per_key=[self.dim] * num_tables, values=out)


class FullTable(nn.Module):
    """An uncompressed table (n x d), initialised like TorchRec: U(±sqrt(1 / n))."""

    def __init__(self, rows: int, dim: int, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(uniform((rows, dim), math.sqrt(1 / rows), device))
        self.detail: dict[str, Any] = {}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids]

    def init_tables(self, name: str) -> list[InitTable]:
        """The table [n, d] of feature ``name`` (row i: id i), named like the full table ``t_<name>``."""
        return [InitTable(f"t_{name}", self.weight, ids_are_rows=True)]


class PerTableEmbedding(PooledEmbedding):
    """One encoder per table (``encoder(ids [nnz]) -> [nnz, d]``); accounting from the encoders.

    An encoder may carry a ``detail`` dict (its method parameters) for the per-table breakdown.
    """

    def __init__(self, features: list[SparseFeature], dim: int, pooling: str, encoders: list[nn.Module]) -> None:
        super().__init__(features, dim, pooling)
        self.encoders = nn.ModuleList(encoders)

    def embed(self, values: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        parts = torch.split(values, sizes)
        return torch.cat([encoder(ids) for encoder, ids in zip(self.encoders, parts)])

    def table_accounts(self) -> list[TableAccount]:
        accounts = []
        for f, e in zip(self.features, self.encoders):
            params = sum(p.numel() for p in e.parameters())
            compressed = not isinstance(e, FullTable) and params < f.cardinality * self.dim
            accounts.append(TableAccount(f.name, f.cardinality, self.dim, params, compressed, dict(e.detail)))
        return accounts

    def init_tables(self) -> list[InitTable]:
        """The tables of every encoder (``encoder.init_tables(feature name)``) for ``model.embedding_init``."""
        return [t for f, e in zip(self.features, self.encoders) for t in e.init_tables(f.name)]


def uniform(shape: tuple[int, ...], bound: float, device: torch.device) -> torch.Tensor:
    """A tensor of ``shape`` drawn from U(-bound, bound) with the global torch RNG."""
    return torch.empty(shape, device=device).uniform_(-bound, bound)


def per_table(
    features: list[SparseFeature], dim: int, options: Any, device: torch.device,
    make_encoder: Callable[[SparseFeature, Any], nn.Module],
) -> PerTableEmbedding:
    """Encoders for every table as ``options.plan`` says: ``make_encoder(feature, plan)`` for a
    compressed table, a full table where the plan is ``None``."""
    plans = options.plan(tables(features), dim)
    encoders = [FullTable(f.cardinality, dim, device) if plan is None else make_encoder(f, plan)
                for f, plan in zip(features, plans)]
    return PerTableEmbedding(features, dim, options.pooling, encoders)
