"""``memcom``: MEmCom (Pansare et al. MLSys'22), e(x) = U[x mod m] * w[x].

U is an m x d table shared by the ids that collide modulo m; w holds one trainable scalar per
id (initialised to 1), which lets colliding ids drift apart. Params m d + n, so the ratio
n d / (m d + n) stays below d. The ratio chooses m = n (1 / ratio - 1 / d).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlrs_bench.compression.base import closest_config
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table, uniform
from dlrs_bench.config.schema import CompressorOptions
from dlrs_bench.data.base import SparseFeature


class MEmComOptions(CompressorOptions):
    kind: Literal["memcom"] = "memcom"
    ratio: float = Field(gt=1.0, description="requested ratio per compressed table; must be below embedding_dim")

    def check_dim(self, dim: int) -> None:
        if self.ratio >= dim:
            raise ValueError(
                f"memcom cannot reach ratio {self.ratio:g} at embedding_dim {dim}: with one scalar per id "
                f"its ratio n*d / (m*d + n) is always below d"
            )


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


class MEmCom:
    Options = MEmComOptions

    @staticmethod
    def build(
        features: list[SparseFeature], dim: int, options: MEmComOptions, device: torch.device
    ) -> PerTableEmbedding:
        def encoder(f: SparseFeature) -> MEmComEncoder:
            n = f.cardinality
            guess = max(1, round(n * (1 / options.ratio - 1 / dim)))
            candidates = [(m * dim + n, m) for m in {max(1, guess - 1), guess, min(n, guess + 1)}]
            buckets = closest_config(candidates, n * dim, options.ratio, f"memcom on table {f.name} ({n:,} rows)")
            return MEmComEncoder(n, dim, buckets, device)

        return per_table(features, dim, options, device, encoder)
