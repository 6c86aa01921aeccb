"""``qr``: quotient-remainder embeddings (Shi et al. KDD'20), with k-level mixed-radix digits.

With ``levels`` k and radix c, id x has digits x mod c, (x // c) mod c, ..., x // c^(k-1);
level i < k is a table of c rows, the last level a table of ceil(n / c^(k-1)) rows. Every id
gets a distinct digit tuple. The digit vectors are fused by ``mult`` (elementwise product,
default), ``add`` or ``concat`` (each level d / k wide). Params: ((k-1) c + ceil(n / c^(k-1))) d
(d / k per level for concat). k = 2 is classic QR; k > 2 is the hierarchic / coarse-to-fine
decomposition. The ratio chooses c (and the smallest k that reaches it when ``levels`` is unset).
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

FUSIONS = {
    "mult": lambda parts: math.prod(parts[1:], start=parts[0]),
    "add": lambda parts: sum(parts[1:], start=parts[0]),
    "concat": lambda parts: torch.cat(parts, dim=1),
}


class QROptions(CompressorOptions):
    kind: Literal["qr"] = "qr"
    ratio: float = Field(gt=1.0, description="requested ratio n / rows-equivalent per compressed table")
    fusion: Literal["mult", "add", "concat"] = "mult"
    levels: int | None = Field(
        None, ge=2, le=16, description="digits per id; default: the fewest that reach ratio (2 for concat)"
    )

    def check_dim(self, dim: int) -> None:
        if self.fusion == "concat" and dim % (self.levels or 2):
            raise ValueError(f"qr fusion concat needs embedding_dim divisible by levels ({self.levels or 2}), "
                             f"got {dim}")


def qr_rows(n: int, radix: int, levels: int) -> list[int]:
    """Rows of each level's table for ``n`` ids: radix for the first k-1 digits, the quotient last."""
    return [radix] * (levels - 1) + [math.ceil(n / radix ** (levels - 1))]


def qr_plan(n: int, dim: int, options: QROptions, where: str) -> tuple[int, int]:
    """(radix, levels) whose parameter count is closest to n d / ratio."""
    if options.levels or options.fusion == "concat":
        level_choices = [options.levels or 2]
    else:
        level_choices = list(range(2, max(3, math.ceil(math.log2(n))) + 1))
    errors = []
    for levels in level_choices:
        width = dim // levels if options.fusion == "concat" else dim
        top = max(2, math.ceil(n ** (1 / levels)) + 1)
        candidates = [(sum(qr_rows(n, c, levels)) * width, (c, levels)) for c in range(2, top + 1)]
        try:
            return closest_config(candidates, n * dim, options.ratio, f"{where} with {levels} levels")
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(errors[-1] if len(level_choices) == 1 else f"no number of levels reaches ratio "
                     f"{options.ratio:g}; the most levels give: {errors[-1]}")


class QREncoder(nn.Module):
    """k-level QR vectors of one table's ids (int64 ``[nnz]`` → ``[nnz, d]``)."""

    def __init__(self, n: int, dim: int, radix: int, levels: int, fusion: str, device: torch.device) -> None:
        super().__init__()
        width = dim // levels if fusion == "concat" else dim
        rows = qr_rows(n, radix, levels)
        # DLRM's QR init: every level U(±sqrt(1 / n)) (n = rows of the full table)
        self.levels = nn.ParameterList(nn.Parameter(uniform((r, width), math.sqrt(1 / n), device)) for r in rows)
        self.radix, self.fuse = radix, FUSIONS[fusion]
        self.detail = {"radix": radix, "levels": levels, "rows": rows, "fusion": fusion}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        parts = []
        for table in self.levels[:-1]:
            parts.append(table[ids % self.radix])
            ids = ids // self.radix
        parts.append(self.levels[-1][ids])
        return self.fuse(parts)


class QR:
    Options = QROptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: QROptions, device: torch.device) -> PerTableEmbedding:
        def encoder(f: SparseFeature) -> QREncoder:
            radix, levels = qr_plan(f.cardinality, dim, options, f"qr on table {f.name} ({f.cardinality:,} rows)")
            return QREncoder(f.cardinality, dim, radix, levels, options.fusion, device)

        return per_table(features, dim, options, device, encoder)
