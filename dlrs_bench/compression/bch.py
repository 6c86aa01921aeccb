"""``bch``: binary code based hashing (Yan et al. CIKM'21).

Id x < n is written with L = ceil(log2 n) bits; the bits are cut into blocks of at most t bits,
either consecutive (``blocks: succession``) or strided (``blocks: skip``: block b takes bits
b, b + B, b + 2B, ...). Each block's value indexes its own table of 2^len rows; the block
vectors are summed (``fusion: sum``) or concatenated (``concat``, each d / B wide). Distinct ids
have distinct codes. Params sum_b 2^len_b d (d / B per block for concat). The ratio chooses t.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrs_bench.compression.options import BCHOptions
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table, uniform
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable


class BCHEncoder(nn.Module):
    """BCH vectors of one table's ids (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, dim: int, blocks: list[list[int]], fusion: str, device: torch.device) -> None:
        super().__init__()
        width = dim // len(blocks) if fusion == "concat" else dim
        self.tables = nn.ParameterList(
            nn.Parameter(uniform((2 ** len(b), width), math.sqrt(1 / n), device)) for b in blocks
        )
        for i, b in enumerate(blocks):  # shifts[i][j]: where bit j of block i sits in the id
            self.register_buffer(f"shifts{i}", torch.tensor(b, dtype=torch.int64, device=device))
        self.concat = fusion == "concat"
        self.detail = {"blocks": [len(b) for b in blocks], "rows": [2 ** len(b) for b in blocks], "fusion": fusion}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, table in enumerate(self.tables):
            shifts = getattr(self, f"shifts{i}")
            bits = (ids.unsqueeze(1) >> shifts) & 1
            code = (bits << torch.arange(len(shifts), device=ids.device)).sum(1)
            parts.append(table[code])
        return torch.cat(parts, dim=1) if self.concat else sum(parts[1:], start=parts[0])

    def init_tables(self, name: str) -> list[InitTable]:
        """Each block's code table [2^|b|, width] (rows shared by ids) for ``model.embedding_init``."""
        return [InitTable(f"t_{name}/block{i}", table, ids_are_rows=False) for i, table in enumerate(self.tables)]


class BCH:
    Options = BCHOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: BCHOptions, device: torch.device) -> PerTableEmbedding:
        return per_table(features, dim, options, device,
                         lambda f, blocks: BCHEncoder(f.cardinality, dim, blocks, options.fusion, device))
