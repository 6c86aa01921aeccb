"""FiBiNET (Huang et al. 2019) over fields ``[B, m, d]``, m = F + 1: SENET + bilinear + DNN.

SENET: z = mean over d of each field ``[B, m]``, a = ReLU(W2 ReLU(W1 z)) with W1 ``[m / r, m]``
(reduction ``reduction`` r), V = E * a. Bilinear ("field-all": one W ``[d, d]``):
p_ij = (e_i W) * e_j for i < j, computed on E and on V. The 2 m (m - 1) / 2 interaction vectors
feed a DNN (DeepCTR default 400-400-400); a linear term on the flattened E is added.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, hidden
from dlrs_bench.models.options import FiBiNETOptions


class FiBiNET(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: FiBiNETOptions) -> None:
        super().__init__()
        self.m, self.d = num_sparse + 1, options.dim
        squeezed = max(1, self.m // options.reduction)
        self.embeddings = embeddings
        self.inputs = FieldInputs(num_dense, num_sparse, options.bottom())
        self.senet = nn.Sequential(nn.Linear(self.m, squeezed, bias=False), nn.ReLU(),
                                   nn.Linear(squeezed, self.m, bias=False), nn.ReLU())
        self.bilinear = nn.Linear(self.d, self.d, bias=False)
        self.register_buffer("pairs", torch.triu_indices(self.m, self.m, offset=1))
        self.linear = nn.Linear(self.m * self.d, 1)
        self.dnn = Head(2 * self.pairs.shape[1] * self.d, hidden(options.widths(options.dnn, over_arch=True)))

    def interactions(self, x: torch.Tensor) -> torch.Tensor:
        """p_ij = (x_i W) * x_j for i < j: ``[B, m, d]`` → ``[B, m (m - 1) / 2 * d]``."""
        left = self.bilinear(x)[:, self.pairs[0]]
        return (left * x[:, self.pairs[1]]).flatten(1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        e = self.inputs(dense, self.embeddings(sparse))
        v = e * self.senet(e.mean(2)).unsqueeze(2)
        both = torch.cat([self.interactions(e), self.interactions(v)], dim=1)
        return self.linear(e.flatten(1)).squeeze(-1) + self.dnn(both)

    def flops_per_sample(self) -> int:
        squeezed = self.senet[0].out_features
        return (self.inputs.flops() + 2 * 2 * self.m * squeezed + 2 * 2 * self.m * self.d * self.d
                + 2 * self.linear.in_features + self.dnn.flops())


class FiBiNETBuilder:
    Options = FiBiNETOptions

    @staticmethod
    def build(options: FiBiNETOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> FiBiNET:
        return FiBiNET(num_dense, len(features), embeddings, options)
