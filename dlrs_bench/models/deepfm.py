"""DeepFM (Guo et al. 2017) over fields: dense field + F pooled embeddings ``[B, m, d]``, m = F + 1.

logit = first order + FM second order + DNN, with
- first order: a Linear over the flattened field embeddings (so it works with any compressor,
  which only provides d-wide vectors; DeepCTR uses separate 1-wide tables instead);
- FM: 1/2 sum_d[(sum_f e_f)^2 - sum_f e_f^2];
- DNN: MLP on the flattened fields (DeepCTR default 400-400-400, dropout 0.5).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, hidden
from dlrs_bench.models.options import DeepFMOptions


class DeepFM(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DeepFMOptions) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.inputs = FieldInputs(num_dense, num_sparse, options.bottom())
        width = (num_sparse + 1) * options.dim
        self.first_order = nn.Linear(width, 1)
        self.dropout = nn.Dropout(options.dropout)
        self.dnn = Head(width, hidden(options.widths(options.dnn, over_arch=True)))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, self.embeddings(sparse))  # [B, m, d]
        flat = x.flatten(1)
        fm = 0.5 * (x.sum(1).pow(2) - x.pow(2).sum(1)).sum(1)
        return self.first_order(flat).squeeze(-1) + fm + self.dnn(self.dropout(flat))

    def flops_per_sample(self) -> int:
        return self.inputs.flops() + 2 * self.first_order.in_features + self.dnn.flops()


class DeepFMBuilder:
    Options = DeepFMOptions

    @staticmethod
    def build(options: DeepFMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DeepFM:
        return DeepFM(num_dense, len(features), embeddings, options)
