"""``md``: mixed-dimension embeddings (Ginart et al. 2021).

Compressed table t gets dimension d_t = 2^round(log2(λ n_t^-α)) clamped to [1, d] (larger
tables get smaller vectors), and a Linear d_t → d (no bias) projects it back; params
n_t d_t + d_t d (no projection when d_t = d). The ratio is met over all compressed tables
together by choosing λ; ``alpha`` (default 0.3) sets how fast dimension falls with size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlrs_bench.compression.base import closest_config
from dlrs_bench.compression.pooled import FullTable, PerTableEmbedding, uniform
from dlrs_bench.config.schema import CompressorOptions
from dlrs_bench.data.base import SparseFeature


class MDOptions(CompressorOptions):
    kind: Literal["md"] = "md"
    ratio: float = Field(gt=1.0, description="sum of n d over compressed tables / their parameters")
    alpha: float = Field(0.3, ge=0.0, description="d_t ∝ n_t^-alpha")

    def check_dim(self, dim: int) -> None:
        if self.ratio >= dim:
            raise ValueError(f"md cannot reach ratio {self.ratio:g} at embedding_dim {dim}: at 1 float per row "
                             f"(plus the projection) its ratio stays below d")


def md_dims(rows: list[int], dim: int, scale: float, alpha: float) -> list[int]:
    """Power-of-two dimensions 2^round(log2(scale n^-alpha)), clamped to [1, dim]."""
    return [min(dim, max(1, 2 ** round(math.log2(max(scale * n**-alpha, 1e-12))))) for n in rows]


def md_params(rows: list[int], dims: list[int], dim: int) -> int:
    return sum(n * k + (k * dim if k < dim else 0) for n, k in zip(rows, dims))


class MDEncoder(nn.Module):
    """A table of n x d_t projected to d (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, small_dim: int, dim: int, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(uniform((n, small_dim), math.sqrt(1 / n), device))
        self.project = nn.Linear(small_dim, dim, bias=False, device=device) if small_dim < dim else nn.Identity()
        self.detail = {"dim": small_dim}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.weight[ids])


class MD:
    Options = MDOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: MDOptions, device: torch.device) -> PerTableEmbedding:
        big = [f for f in features if f.cardinality > options.threshold]
        rows = [f.cardinality for f in big]
        # every scale at which some table changes dimension, plus the extremes
        boundaries = [2 ** (i + 0.5) for i in range(-1, int(math.log2(dim)) + 1)]
        scales = {k * n**options.alpha for n in rows for k in boundaries}
        candidates = [(md_params(rows, md_dims(rows, dim, s, options.alpha), dim), s) for s in sorted(scales)]
        where = f"md over {len(big)} table(s) with more than {options.threshold} rows"
        scale = closest_config(candidates, sum(rows) * dim, options.ratio, where)
        dims = dict(zip((f.name for f in big), md_dims(rows, dim, scale, options.alpha)))
        encoders = [
            MDEncoder(f.cardinality, dims[f.name], dim, device) if f.name in dims
            else FullTable(f.cardinality, dim, device)
            for f in features
        ]
        return PerTableEmbedding(features, dim, options.pooling, encoders)
