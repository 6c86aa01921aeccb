"""``qr``: quotient-remainder embeddings (Shi et al. KDD'20), with k-level mixed-radix digits.

With ``levels`` k and radix c, id x has digits x mod c, (x // c) mod c, ..., x // c^(k-1);
level i < k is a table of c rows, the last level a table of ceil(n / c^(k-1)) rows. Every id
gets a distinct digit tuple. The digit vectors are fused by ``mult`` (elementwise product,
default), ``add``, ``concat`` (each level d / k wide) or ``fc`` (the d-wide vectors concatenated and
mapped by a Linear(k d, d) of the table, PyTorch's default init: the fully connected fusion that seed
000 finds worse than ``mult``). Params: ((k-1) c + ceil(n / c^(k-1))) d (d / k per level for concat),
plus k d² + d for fc. k = 2 is classic QR; k > 2 is the hierarchic / coarse-to-fine
decomposition. The ratio chooses c (and the smallest k that reaches it when ``levels`` is unset).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrs_bench.compression.options import QROptions, qr_rows
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table, uniform
from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.init import InitTable

FUSIONS = {
    "mult": lambda parts: math.prod(parts[1:], start=parts[0]),
    "add": lambda parts: sum(parts[1:], start=parts[0]),
    "concat": lambda parts: torch.cat(parts, dim=1),
    "fc": lambda parts: torch.cat(parts, dim=1),  # then the table's Linear(k d, d)
}


class QREncoder(nn.Module):
    """k-level QR vectors of one table's ids (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, dim: int, radix: int, levels: int, fusion: str, device: torch.device) -> None:
        super().__init__()
        width = dim // levels if fusion == "concat" else dim
        rows = qr_rows(n, radix, levels)
        # DLRM's QR init: every level U(±sqrt(1 / n)) (n = rows of the full table)
        self.levels = nn.ParameterList(nn.Parameter(uniform((r, width), math.sqrt(1 / n), device)) for r in rows)
        self.radix, self.fuse = radix, FUSIONS[fusion]
        self.mix = nn.Linear(levels * dim, dim, device=device) if fusion == "fc" else nn.Identity()
        self.detail = {"radix": radix, "levels": levels, "rows": rows, "fusion": fusion}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = []
        for table in self.levels[:-1]:
            parts.append(table[ids % self.radix])
            ids = ids // self.radix
        parts.append(self.levels[-1][ids])
        return self.mix(self.fuse(parts))

    def init_tables(self, name: str) -> list[InitTable]:
        """Each level's table [rows_i, width] (rows shared by ids) for ``model.embedding_init``; the fc
        fusion's Linear keeps PyTorch's default."""
        return [InitTable(f"t_{name}/level{i}", level, ids_are_rows=False) for i, level in enumerate(self.levels)]


class QR:
    Options = QROptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: QROptions, device: torch.device) -> PerTableEmbedding:
        return per_table(features, dim, options, device,
                         lambda f, plan: QREncoder(f.cardinality, dim, *plan, options.fusion, device))
