"""Wukong (Zhang et al. ICML'24; seed 000): stacked factorization machines.

Inputs: the F pooled embeddings plus ``dense_embeddings`` vectors made from the dense features
by an MLP: X0 ``[B, n, d]``, n = F + dense_embeddings. Each of ``num_layers`` layers computes
X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + R(X_i)) with

- FMB(X) = reshape(MLP(LN(flatten(X (X^T Y)))), (n_F, d)), Y ``[n_i, k]`` learnable (optimized FM of rank k);
- LCB(X) = W_L X, W_L ``[n_L, n_i]``;
- R = identity when n_i = n_F + n_L, else a linear map along the embedding axis ``[n_F + n_L, n_i]``;
- LN over each embedding (size d).

The head is an MLP on flatten(X_l) to one logit.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops
from dlrs_bench.models.layers import Head, fields, hidden, mlp
from dlrs_bench.models.options import WukongOptions


class WukongLayer(nn.Module):
    """One interaction layer: ``[B, n_in, d]`` → ``[B, n_f + n_l, d]``."""

    def __init__(self, n_in: int, dim: int, n_f: int, n_l: int, k: int, fmb_hidden: list[int]) -> None:
        super().__init__()
        self.n_in, self.dim, self.n_f, self.n_l, self.k, self.fmb_hidden = n_in, dim, n_f, n_l, k, fmb_hidden
        self.projection = nn.Parameter(torch.randn(n_in, k) / n_in**0.5)  # Y
        self.fmb_norm = nn.LayerNorm(n_in * k)
        self.fmb_mlp = nn.Sequential(
            mlp(n_in * k, fmb_hidden), nn.Linear(fmb_hidden[-1] if fmb_hidden else n_in * k, n_f * dim)
        )
        self.lcb = nn.Linear(n_in, n_l, bias=False)  # W_L, applied along the embedding axis
        n_out = n_f + n_l
        self.residual = nn.Identity() if n_in == n_out else nn.Linear(n_in, n_out, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        xy = torch.matmul(x.transpose(1, 2), self.projection)  # X^T Y: [B, d, k]
        fm = torch.bmm(x, xy).flatten(1)  # X (X^T Y): [B, n_in * k]
        fmb = self.fmb_mlp(self.fmb_norm(fm)).view(batch, self.n_f, self.dim)
        lcb = self.lcb(x.transpose(1, 2)).transpose(1, 2)  # [B, n_l, d]
        residual = self.residual(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(torch.cat([fmb, lcb], dim=1) + residual)

    def flops(self) -> int:
        n, d, k, n_out = self.n_in, self.dim, self.k, self.n_f + self.n_l
        return (
            4 * n * d * k  # X^T Y and X (X^T Y)
            + linear_flops([n * k, *self.fmb_hidden, self.n_f * d])
            + 2 * self.n_l * n * d
            + (0 if n == n_out else 2 * n_out * n * d)
        )


class Wukong(nn.Module):
    """Wukong over ``embeddings``; ``forward(dense [B, num_dense], KJT) -> logits [B]``."""

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: WukongOptions) -> None:
        super().__init__()
        if num_dense < 1:
            raise ValueError("Wukong needs at least one dense feature")
        d = options.dim
        self.num_dense, self.num_sparse, self.d = num_dense, num_sparse, d
        self.n_dense = options.dense_embeddings
        self.embeddings = embeddings
        self.bottom = [*options.widths(options.bottom_mlp), self.n_dense * d]
        self.dense_arch = nn.Sequential(mlp(num_dense, self.bottom[:-1]),
                                        nn.Linear(([num_dense] + self.bottom)[-2], self.bottom[-1]))
        fmb_hidden = options.widths(options.fmb_mlp)
        n_in, layers = num_sparse + self.n_dense, []
        for _ in range(options.num_layers):
            layers.append(WukongLayer(n_in, d, options.n_f, options.n_l, options.k, fmb_hidden))
            n_in = options.n_f + options.n_l
        self.layers = nn.Sequential(*layers)
        self.head = Head(n_in * d, hidden(options.widths(options.top_mlp, over_arch=True)))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        dense_fields = self.dense_arch(dense).view(-1, self.n_dense, self.d)
        x = torch.cat([dense_fields, fields(self.embeddings(sparse), self.num_sparse, self.d)], dim=1)
        return self.head(self.layers(x).flatten(1))

    def flops_per_sample(self) -> int:
        return (linear_flops([self.num_dense, *self.bottom]) + sum(layer.flops() for layer in self.layers)
                + self.head.flops())


class WukongBuilder:
    Options = WukongOptions

    @staticmethod
    def build(options: WukongOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> Wukong:
        return Wukong(num_dense, len(features), embeddings, options)
