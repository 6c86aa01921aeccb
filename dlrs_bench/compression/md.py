"""``md``: mixed-dimension embeddings (Ginart et al. 2021).

Compressed table t gets dimension d_t = 2^round(log2(λ n_t^-α)) clamped to [1, d] (larger
tables get smaller vectors), and a Linear d_t → d (no bias) projects it back; params
n_t d_t + d_t d (no projection when d_t = d). The ratio is met over all compressed tables
together by choosing λ; ``alpha`` (default 0.3) sets how fast dimension falls with size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrs_bench.compression.options import MDOptions
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table, uniform
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable


class MDEncoder(nn.Module):
    """A table of n x d_t projected to d (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, small_dim: int, dim: int, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(uniform((n, small_dim), math.sqrt(1 / n), device))
        self.project = nn.Linear(small_dim, dim, bias=False, device=device) if small_dim < dim else nn.Identity()
        self.detail = {"dim": small_dim}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.weight[ids])

    def init_tables(self, name: str) -> list[InitTable]:
        """The table [n, d_t] (row i: id i) for ``model.embedding_init``; the projection keeps PyTorch's
        default."""
        return [InitTable(f"t_{name}", self.weight, ids_are_rows=True)]


class MD:
    Options = MDOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: MDOptions, device: torch.device) -> PerTableEmbedding:
        return per_table(features, dim, options, device,
                         lambda f, small_dim: MDEncoder(f.cardinality, small_dim, dim, device))
