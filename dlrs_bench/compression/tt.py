"""``tt``: TT-Rec tensor-train embeddings (Yin et al. MLSys'21), three cores.

The table n x d is a tensor train: n ≤ p1 p2 p3, d = q1 q2 q3, cores G_k of shape
[r_{k-1}, p_k, q_k, r_k] with r_0 = r_3 = 1 and r_1 = r_2 = r. Row x (digits i1, i2, i3 in
radix p) is G1[i1] G2[i2] G3[i3] flattened to d. Params r p1 q1 + r^2 p2 q2 + r p3 q3
(e.g. n = 1e6, d = 64, p = [120, 90, 110], q = [4, 4, 4], r = 12/14 → 72,400 in the paper).
The ratio chooses r.
"""

from __future__ import annotations

import torch
from torch import nn

from dlrs_bench.compression.options import TTOptions, init_refusal
from dlrs_bench.compression.pooled import PerTableEmbedding, per_table
from dlrs_bench.data.base import SparseFeature


class TTEncoder(nn.Module):
    """TT-Rec vectors of one table's ids (int64 ``[nnz]`` → ``[nnz, d]``).

    Cores are drawn from N(0, s^2) with s chosen so a row has the variance of TorchRec's
    U(±sqrt(1 / n)) init: r^2 s^6 = 1 / (3 n).
    """

    def __init__(self, n: int, dim: int, p: list[int], q: list[int], rank: int, device: torch.device) -> None:
        super().__init__()
        std = (1 / (3 * n) / rank**2) ** (1 / 6)
        self.p, self.q, self.rank = p, q, rank
        self.core1 = nn.Parameter(torch.randn(p[0], q[0] * rank, device=device) * std)
        self.core2 = nn.Parameter(torch.randn(p[1], rank * q[1] * rank, device=device) * std)
        self.core3 = nn.Parameter(torch.randn(p[2], rank * q[2], device=device) * std)
        self.detail = {"p": p, "q": q, "rank": rank}

    def init_tables(self, name: str) -> list:
        """None: TT cores are not rows of a table (``model.embedding_init`` is refused at validate)."""
        raise ValueError(init_refusal("tt", "other than uniform"))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        (_, p2, p3), (q1, q2, q3), r = self.p, self.q, self.rank
        a = self.core1[ids // (p2 * p3)].view(-1, q1, r)
        b = self.core2[(ids // p3) % p2].view(-1, r, q2, r)
        c = self.core3[ids % p3].view(-1, r, q3)
        return torch.einsum("nar,nrbs,nsc->nabc", a, b, c).reshape(len(ids), q1 * q2 * q3)


class TT:
    Options = TTOptions

    @staticmethod
    def build(features: list[SparseFeature], dim: int, options: TTOptions, device: torch.device) -> PerTableEmbedding:
        return per_table(features, dim, options, device,
                         lambda f, plan: TTEncoder(f.cardinality, dim, *plan, device))
