"""Wukong (Zhang et al. ICML'24; seed 000): stacked factorization machines.

Inputs X0 ``[B, n, d]``: the dense fields, then the F pooled embeddings. ``dense_features: mlp`` (the
paper) makes ``dense_embeddings`` vectors from the dense features by an MLP, n = F + dense_embeddings;
``per_feature`` makes dense feature k its own field e_k = v_k x_k (:class:`FieldInputs`, FuxiCTR's
numeric embedding), n = F + num_dense. Each of ``num_layers`` layers computes
X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + R(X_i)) with

- FMB(X) = reshape(σ(MLP(LN(flatten(X (X^T Y))))), (n_F, d)), Y ``[n_i, k]`` learnable (optimized FM of
  rank k) drawn from N(0, 1/n_i) (``y_init_std: one``: N(0, 1)); σ the identity (``fmb_activation``;
  relu: FuxiCTR's);
- LCB(X) = W_L X, W_L ``[n_L, n_i]``;
- R = identity when n_i = n_F + n_L, else a linear map along the embedding axis ``[n_F + n_L, n_i]``
  (with a bias under ``residual_bias``);
- LN over each embedding (size d).

The head is an MLP on flatten(X_l) to one logit (``top_batchnorm``: BatchNorm1d after every hidden
Linear, before its ReLU). ``init`` initialises every dense Linear (:func:`init_weights`); Y keeps its
draw. FuxiCTR's field order (categorical first) is a permutation of this one, which every layer
absorbs in its weights: the same function class and the same initial distribution.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.base import linear_flops
from dlrs_bench.models.layers import FieldInputs, Head, fields, hidden, init_weights, mlp
from dlrs_bench.models.options import WukongOptions


class WukongLayer(nn.Module):
    """One interaction layer: ``[B, n_in, d]`` → ``[B, n_f + n_l, d]``.

    Args:
        n_in, dim, n_f, n_l, k: n_i, d, n_F, n_L and the rank of Y.
        fmb_hidden: the FMB MLP's hidden widths.
        fmb_relu: a ReLU after the FMB MLP's output layer.
        y_scale: Y is ``randn(n_in, k) / y_scale``.
        residual_bias: a bias in the residual projection (when there is one).
    """

    def __init__(self, n_in: int, dim: int, n_f: int, n_l: int, k: int, fmb_hidden: list[int],
                 fmb_relu: bool = False, y_scale: float | None = None, residual_bias: bool = False) -> None:
        super().__init__()
        self.n_in, self.dim, self.n_f, self.n_l, self.k, self.fmb_hidden = n_in, dim, n_f, n_l, k, fmb_hidden
        self.projection = nn.Parameter(torch.randn(n_in, k) / (n_in**0.5 if y_scale is None else y_scale))  # Y
        self.fmb_norm = nn.LayerNorm(n_in * k)
        self.fmb_mlp = nn.Sequential(
            mlp(n_in * k, fmb_hidden), nn.Linear(fmb_hidden[-1] if fmb_hidden else n_in * k, n_f * dim),
            *([nn.ReLU()] if fmb_relu else [])
        )
        self.lcb = nn.Linear(n_in, n_l, bias=False)  # W_L, applied along the embedding axis
        n_out = n_f + n_l
        self.residual = nn.Identity() if n_in == n_out else nn.Linear(n_in, n_out, bias=residual_bias)
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


class BatchNormHead(nn.Module):
    """FuxiCTR's ``MLP_Block`` with ``batch_norm``: Linear → BatchNorm1d → ReLU per hidden width, then a
    Linear to one logit: ``[B, in_features]`` → ``[B]``. FLOPs as :class:`Head` (the norms are
    elementwise, not counted, like the LayerNorms)."""

    def __init__(self, in_features: int, hidden: list[int]) -> None:
        super().__init__()
        self.sizes = [in_features, *hidden, 1]
        layers: list[nn.Module] = []
        for a, b in zip(self.sizes, hidden):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(self.sizes[-2], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x)).squeeze(-1)

    def flops(self) -> int:
        return linear_flops(self.sizes)


class Wukong(nn.Module):
    """Wukong over ``embeddings``; ``forward(dense [B, num_dense], KJT) -> logits [B]``."""

    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: WukongOptions) -> None:
        super().__init__()
        d = options.dim
        self.num_dense, self.num_sparse, self.d = num_dense, num_sparse, d
        self.embeddings = embeddings
        if options.dense_features == "per_feature":
            self.inputs: FieldInputs | None = FieldInputs(num_dense, num_sparse, [d], "per_feature")
            self.n_dense = num_dense
        else:
            if num_dense < 1:
                raise ValueError("Wukong with dense_features: mlp needs at least one dense feature")
            self.inputs, self.n_dense = None, options.dense_embeddings
            self.bottom = [*options.widths(options.bottom_mlp), self.n_dense * d]
            self.dense_arch = nn.Sequential(mlp(num_dense, self.bottom[:-1]),
                                            nn.Linear(([num_dense] + self.bottom)[-2], self.bottom[-1]))
        fmb_hidden = options.widths(options.fmb_mlp)
        n_in, layers = num_sparse + self.n_dense, []
        for _ in range(options.num_layers):
            layers.append(WukongLayer(n_in, d, options.n_f, options.n_l, options.k, fmb_hidden,
                                      fmb_relu=options.fmb_activation == "relu",
                                      y_scale=1.0 if options.y_init_std == "one" else None,
                                      residual_bias=options.residual_bias))
            n_in = options.n_f + options.n_l
        self.layers = nn.Sequential(*layers)
        top = hidden(options.widths(options.top_mlp, over_arch=True))
        self.head = BatchNormHead(n_in * d, top) if options.top_batchnorm else Head(n_in * d, top)
        init_weights(self, options.init, skip=embeddings)

    def dense_fields(self, dense: torch.Tensor) -> torch.Tensor:
        """``[B, num_dense]`` → the dense fields ``[B, n_dense, d]``."""
        if self.inputs is not None:
            return self.inputs.dense_fields(dense)
        return self.dense_arch(dense).view(-1, self.n_dense, self.d)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = torch.cat([self.dense_fields(dense), fields(self.embeddings(sparse), self.num_sparse, self.d)], dim=1)
        return self.head(self.layers(x).flatten(1))

    def flops_per_sample(self) -> int:
        dense = self.inputs.flops() if self.inputs is not None else linear_flops([self.num_dense, *self.bottom])
        return dense + sum(layer.flops() for layer in self.layers) + self.head.flops()


class WukongBuilder:
    Options = WukongOptions

    @staticmethod
    def build(options: WukongOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> Wukong:
        return Wukong(num_dense, len(features), embeddings, options)
