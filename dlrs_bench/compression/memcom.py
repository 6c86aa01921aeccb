"""``memcom``: MEmCom (Pansare et al. MLSys'22), e(x) = U[x mod m] * w[x].

U is an m x d table shared by the ids that collide modulo m; w holds one trainable scalar per
id (initialised to 1), which lets colliding ids drift apart. Params m d + n, so the ratio
n d / (m d + n) stays below d. The ratio chooses m = n (1 / ratio - 1 / d).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrs_bench.compression.options import MEmComOptions
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table, uniform
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable


class MEmComEncoder(nn.Module):
    """MEmCom vectors of one table's ids (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, dim: int, buckets: int, device: torch.device) -> None:
        super().__init__()
        self.shared = nn.Parameter(uniform((buckets, dim), math.sqrt(1 / n), device))
        self.scale = nn.Parameter(torch.ones(n, 1, device=device))
        self.buckets = buckets
        self.detail = {"buckets": buckets}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.shared[ids % self.buckets] * self.scale[ids]

    def init_tables(self, name: str) -> list[InitTable]:
        """The shared table [m, d] for ``model.embedding_init``; the per-id scales keep MEmCom's 1."""
        return [InitTable(f"t_{name}/shared", self.shared, ids_are_rows=False)]


class MEmCom:
    Options = MEmComOptions

    @staticmethod
    def build(
        features: list[SparseFeature], dim: int, options: MEmComOptions, device: torch.device
    ) -> PerTableEmbedding:
        return per_table(features, dim, options, device,
                         lambda f, buckets: MEmComEncoder(f.cardinality, dim, buckets, device))
