"""DeepFM (Guo et al., IJCAI'17) over fields ``[B, m, d]`` (:class:`FieldInputs`; m = F + num_dense
with ``dense_features: per_feature``, F + 1 with ``field``).

logit = first order + FM second order + DNN, with
- first order (``first_order``): per_id, b + Σ_f w[x_f] + u · dense with w a column of the tables
  (:class:`FirstOrder`, the paper's <w, x>), or fields, a Linear over the m d field values;
- FM: 1/2 Σ_d[(Σ_f e_f)^2 - Σ_f e_f^2], the sum over pairs f < g of <e_f, e_g>;
- DNN: on the flattened fields, Linear → ReLU → Dropout(``dropout``) for every hidden layer, then a
  Linear to the logit (no dropout on the input). ``dnn`` 400-400-400 and ``dropout`` 0.5 are the
  paper's §3.1 settings; DeepCTR's own defaults are (256, 128, 64) without dropout.

Dense layers are initialised by ``init`` (:func:`init_weights`, default Xavier normal and zero biases
as FuxiCTR). Defaults and their sources: ``DeepFMOptions`` (dlrs_bench/models/options.py).
Dense parameters: inputs + first order (per_id: num_dense + 1, its F id weights are in the tables;
fields: m d + 1) + Σ Linear over [m d, *h, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrs_bench.data.base import SparseFeature
from dlrs_bench.models.layers import FieldInputs, Head, first_order_term, hidden, init_weights, multi_hot_positions
from dlrs_bench.models.options import DeepFMOptions


def fm_second_order(x: torch.Tensor) -> torch.Tensor:
    """FM's pairwise term of fields ``[B, m, d]`` → ``[B]``: 1/2 Σ_d[(Σ_f x_f)^2 - Σ_f x_f^2]."""
    return 0.5 * (x.sum(1).pow(2) - x.pow(2).sum(1)).sum(1)


class DeepFM(nn.Module):
    def __init__(self, num_dense: int, num_sparse: int, embeddings: nn.Module, options: DeepFMOptions,
                 bags: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.inputs = FieldInputs.from_options(num_dense, num_sparse, options)
        width = self.inputs.num_fields * options.dim
        self.first_order = first_order_term(options, num_dense, num_sparse, self.inputs.num_fields, bags)
        self.dnn = Head(width, hidden(options.widths(options.dnn, over_arch=True)), options.dropout)
        init_weights(self, options.init, skip=embeddings)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embeddings(sparse)
        x = self.inputs(dense, pooled)  # [B, m, d]
        return self.first_order(dense, pooled, x, sparse) + fm_second_order(x) + self.dnn(x.flatten(1))

    def flops_per_sample(self) -> int:
        return self.inputs.flops() + self.first_order.flops() + self.dnn.flops()


class DeepFMBuilder:
    Options = DeepFMOptions

    @staticmethod
    def build(options: DeepFMOptions, num_dense: int, features: list[SparseFeature], embeddings: nn.Module) -> DeepFM:
        return DeepFM(num_dense, len(features), embeddings, options, multi_hot_positions(features))
