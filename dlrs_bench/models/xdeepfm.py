"""xDeepFM (Lian et al. 2018) over fields ``[B, m, d]``, m = F + 1: linear + CIN + DNN.

CIN layer k: Z = X_{k-1} ⊗ X0 (outer product along the field axes, per embedding element)
``[B, H_{k-1} m, d]``, X_k = ReLU(W_k Z) with W_k ``[H_k, H_{k-1} m]`` (DeepCTR's default
activation, without split-half); each X_k is sum-pooled over d and all pooled layers feed one
Linear. Defaults follow DeepCTR: CIN 200-200-200, DNN 400-400-400.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, hidden
from dlrs_bench.models.options import XDeepFMOptions


class CIN(nn.Module):
    """Compressed interaction network: ``[B, m, d]`` → ``[B, sum(H_k)]`` (sum-pooled over d)."""

    def __init__(self, m: int, widths: list[int]) -> None:
        super().__init__()
        self.m, self.widths = m, widths
        previous = [m, *widths[:-1]]
        self.maps = nn.ParameterList(nn.Parameter(torch.randn(h, p * m) / (p * m) ** 0.5)
                                     for h, p in zip(widths, previous))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        b, m, d = x0.shape
        x, pooled = x0, []
        for w in self.maps:
            z = (x.unsqueeze(2) * x0.unsqueeze(1)).reshape(b, -1, d)  # [B, H_{k-1} m, d]
            x = torch.relu(torch.matmul(w, z))  # [B, H_k, d]
            pooled.append(x.sum(2))
        return torch.cat(pooled, dim=1)

    def flops(self, d: int) -> int:
        previous = [self.m, *self.widths[:-1]]
        return sum(2 * h * p * self.m * d for h, p in zip(self.widths, previous))


class XDeepFM(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: XDeepFMOptions) -> None:
        super().__init__()
        m, self.d = num_sparse + 1, options.dim
        self.embeddings = embeddings
        self.inputs = FieldInputs(num_dense, num_sparse, options.bottom())
        self.linear = nn.Linear(m * self.d, 1)
        self.cin = CIN(m, options.widths(options.cin))
        self.cin_out = nn.Linear(sum(self.cin.widths), 1, bias=False)
        self.dnn = Head(m * self.d, hidden(options.widths(options.dnn, over_arch=True)))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, self.embeddings(sparse))
        flat = x.flatten(1)
        return (self.linear(flat) + self.cin_out(self.cin(x))).squeeze(-1) + self.dnn(flat)

    def flops_per_sample(self) -> int:
        return (self.inputs.flops() + 2 * self.linear.in_features + self.cin.flops(self.d)
                + 2 * self.cin_out.in_features + self.dnn.flops())


class XDeepFMBuilder:
    Options = XDeepFMOptions

    @staticmethod
    def build(options: XDeepFMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> XDeepFM:
        return XDeepFM(num_dense, len(features), embeddings, options)
